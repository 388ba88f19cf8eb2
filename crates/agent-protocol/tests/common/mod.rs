//! One instance of every message, shared by the round-trip and snapshot tests.

use nestbox_agent_protocol::{
    ErrorCode, ErrorMessage, ExecStart, Exited, Hello, Message, PROTOCOL_VERSION, TtySize, Welcome,
};
use serde_bytes::ByteBuf;

/// `(stream, message)` for each message of the current protocol version, in `PROTOCOL.md`
/// table order, with every optional field set.
pub fn samples() -> Vec<(u32, Message)> {
    let mut samples = samples_v1();
    samples[0].1 =
        Message::Hello(Hello { min_version: 1, max_version: PROTOCOL_VERSION, client: "nestbox-test".into() });
    samples[1].1 =
        Message::Welcome(Welcome { version: 2, agent_version: "0.1.0".into(), kernel_release: "6.12.0".into() });
    samples[2].1 = Message::ExecStart(ExecStart {
        argv: vec!["sh".into()],
        env: vec![("TERM".into(), "xterm".into())],
        cwd: None,
        stdin: true,
        timeout_ms: None,
        tty: Some(TtySize { rows: 24, cols: 80 }),
        user: Some("1000:100".into()),
    });
    let signal = samples.iter().position(|(_, m)| m.name() == "exec.signal").expect("exec.signal sample");
    samples.insert(signal + 1, (1, Message::ExecResize(TtySize { rows: 50, cols: 132 })));
    samples
}

/// The messages frozen in `schema/v1.hex`, as the current types decode them.
pub fn samples_v1() -> Vec<(u32, Message)> {
    vec![
        (0, Message::Hello(Hello { min_version: 1, max_version: 1, client: "nestbox-test".into() })),
        (0, Message::Welcome(Welcome { version: 1, agent_version: "0.1.0".into(), kernel_release: "6.12.0".into() })),
        (
            1,
            Message::ExecStart(ExecStart {
                argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec![("FOO".into(), "bar".into())],
                cwd: Some("/tmp".into()),
                stdin: true,
                timeout_ms: Some(5000),
                tty: None,
                user: None,
            }),
        ),
        (1, Message::ExecStdin { data: ByteBuf::from(b"input\n".to_vec()) }),
        (1, Message::ExecStdinClose),
        (1, Message::ExecSignal { signal: 15 }),
        (0, Message::GuestPoweroff),
        (1, Message::ExecStarted { pid: 42 }),
        (1, Message::ExecStdout { data: ByteBuf::from(b"hi\n".to_vec()) }),
        (1, Message::ExecStderr { data: ByteBuf::from(vec![0, 255, 10]) }),
        (1, Message::ExecExited(Exited { code: None, signal: Some(9), timed_out: true })),
        (2, Message::Error(ErrorMessage { code: ErrorCode::UnknownStream, message: "no exec on stream 2".into() })),
    ]
}
