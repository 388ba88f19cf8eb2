//! One instance of every message, shared by the round-trip and snapshot tests.

use nestbox_agent_protocol::{ErrorCode, ErrorMessage, ExecStart, Exited, Hello, Message, PROTOCOL_VERSION, Welcome};
use serde_bytes::ByteBuf;

/// `(stream, message)` for each message of protocol version 1, in wire-name order.
pub fn samples() -> Vec<(u32, Message)> {
    vec![
        (0, Message::Hello(Hello { min_version: 1, max_version: PROTOCOL_VERSION, client: "nestbox-test".into() })),
        (0, Message::Welcome(Welcome { version: 1, agent_version: "0.1.0".into(), kernel_release: "6.12.0".into() })),
        (
            1,
            Message::ExecStart(ExecStart {
                argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec![("FOO".into(), "bar".into())],
                cwd: Some("/tmp".into()),
                stdin: true,
                timeout_ms: Some(5000),
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
