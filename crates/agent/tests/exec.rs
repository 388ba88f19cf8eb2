//! The agent's exec behaviour over `--stdio`, with the blocking protocol helpers.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, exec, sh};
use nestbox_agent_protocol::{ErrorCode, Exited, Hello, Message, PROTOCOL_VERSION};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

fn code(c: i32) -> Option<Exited> {
    Some(Exited { code: Some(c), signal: None, timed_out: false })
}

#[test]
fn test_welcome_reports_version_and_kernel() {
    let (_agent, welcome) = Agent::spawn();
    assert_eq!(welcome.version, PROTOCOL_VERSION);
    assert_eq!(welcome.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(!welcome.kernel_release.is_empty());
}

#[test]
fn test_echo_output() {
    let (mut agent, _) = Agent::spawn();
    let out = agent.run(1, exec(&["echo", "hello", "world"]));
    assert!(out.pid.is_some());
    assert_eq!(out.stdout, b"hello world\n");
    assert_eq!(out.stderr, b"");
    assert_eq!(out.exited, code(0));
}

#[test]
fn test_exit_code_and_stderr() {
    let (mut agent, _) = Agent::spawn();
    let out = agent.run(1, sh("echo oops >&2; exit 3"));
    assert_eq!(out.stderr, b"oops\n");
    assert_eq!(out.exited, code(3));
}

#[test]
fn test_signal_exit() {
    let (mut agent, _) = Agent::spawn();
    let out = agent.run(1, sh("kill -TERM $$"));
    assert_eq!(out.exited, Some(Exited { code: None, signal: Some(15), timed_out: false }));
}

#[test]
fn test_missing_command_exits_127_with_message() {
    let (mut agent, _) = Agent::spawn();
    let out = agent.run(1, exec(&["nestbox-no-such-command"]));
    assert!(out.pid.is_none());
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "nestbox-agent: nestbox-no-such-command: command not found\n");
    assert_eq!(out.exited, code(127));
}

#[test]
fn test_non_executable_exits_126() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, "data").unwrap();
    let (mut agent, _) = Agent::spawn();
    let out = agent.run(1, exec(&[file.to_str().unwrap()]));
    assert_eq!(out.exited, code(126));
    assert!(String::from_utf8(out.stderr).unwrap().contains("Permission denied"));
}

#[test]
fn test_env_and_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, _) = Agent::spawn();
    let mut req = sh("echo \"$FOO|$HOME|$TERM|$PATH\"; pwd");
    req.env = vec![("FOO".into(), "bar baz".into()), ("HOME".into(), "/h".into())];
    req.cwd = Some(dir.path().to_str().unwrap().into());
    let out = agent.run(1, req);
    let want = format!(
        "bar baz|/h|linux|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n{}\n",
        dir.path().canonicalize().unwrap().display()
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    assert_eq!(out.exited, code(0));
}

#[test]
fn test_bad_cwd_exits_126_naming_the_dir() {
    let (mut agent, _) = Agent::spawn();
    let mut req = exec(&["true"]);
    req.cwd = Some("/nonexistent/nestbox".into());
    let out = agent.run(1, req);
    assert_eq!(out.exited, code(126));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "nestbox-agent: cd: /nonexistent/nestbox: No such file or directory\n"
    );
}

#[test]
fn test_stdin_passthrough() {
    let (mut agent, _) = Agent::spawn();
    let mut req = exec(&["cat"]);
    req.stdin = true;
    agent.send(1, &Message::ExecStart(req));
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for chunk in data.chunks(nestbox_agent_protocol::MAX_CHUNK) {
        agent.send(1, &Message::ExecStdin { data: ByteBuf::from(chunk.to_vec()) });
    }
    agent.send(1, &Message::ExecStdinClose);
    let out = agent.collect(1);
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data);
    assert_eq!(out.exited, code(0));
}

#[test]
fn test_stdin_is_dev_null_without_stdin_flag() {
    let (mut agent, _) = Agent::spawn();
    let out = agent.run(1, exec(&["cat"]));
    assert_eq!(out.stdout, b"");
    assert_eq!(out.exited, code(0));
}

#[test]
fn test_sixteen_concurrent_execs() {
    let (mut agent, _) = Agent::spawn();
    for i in 1..=16u32 {
        agent.send(i, &Message::ExecStart(sh(&format!("sleep 0.5; echo stream-{i}; exit {i}"))));
    }
    let started = Instant::now();
    for i in 1..=16u32 {
        let out = agent.collect(i);
        assert_eq!(out.stdout, format!("stream-{i}\n").as_bytes());
        assert_eq!(out.exited, code(i as i32));
    }
    // They ran at once, not one after another (16 × 0.5 s).
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
}

#[test]
fn test_timeout_kills_process_group() {
    let (mut agent, _) = Agent::spawn();
    let mut req = sh("sleep 30 & sleep 30; echo never");
    req.timeout_ms = Some(300);
    let started = Instant::now();
    let out = agent.run(1, req);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.stdout, b"");
    assert_eq!(out.exited, Some(Exited { code: None, signal: Some(9), timed_out: true }));
}

#[test]
fn test_signal_message_reaches_process_group() {
    let (mut agent, _) = Agent::spawn();
    // `exec`: dash blocks signals around its fork, so a signal landing in that
    // window would wait for a forked sleep to finish.
    agent.send(1, &Message::ExecStart(sh("echo ready; exec sleep 30")));
    assert!(matches!(agent.recv(1), Message::ExecStarted { .. }));
    assert!(matches!(agent.recv(1), Message::ExecStdout { .. }));
    agent.send(1, &Message::ExecSignal { signal: 2 });
    let out = agent.collect(1);
    assert_eq!(out.exited.unwrap().signal, Some(2));
}

#[test]
fn test_background_child_holding_pipes_does_not_block_exit() {
    let (mut agent, _) = Agent::spawn();
    let started = Instant::now();
    let out = agent.run(1, sh("sleep 5 & echo done"));
    assert_eq!(out.stdout, b"done\n");
    assert_eq!(out.exited, code(0));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[test]
fn test_eight_mib_stdout_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    let script = format!("head -c 8388608 /dev/urandom > {f}; sha256sum {f} >&2; cat {f}", f = file.display());
    let (mut agent, _) = Agent::spawn();
    let out = agent.run(1, sh(&script));
    assert_eq!(out.exited, code(0));
    assert_eq!(out.stdout.len(), 8 * 1024 * 1024);
    let want = String::from_utf8(out.stderr).unwrap();
    let got = hex::encode(Sha256::digest(&out.stdout));
    assert_eq!(want.split_whitespace().next(), Some(got.as_str()));
}

#[test]
fn test_hello_version_mismatch() {
    let mut agent = Agent::spawn_raw();
    agent.send(
        0,
        &Message::Hello(Hello {
            min_version: PROTOCOL_VERSION + 1,
            max_version: PROTOCOL_VERSION + 3,
            client: "future".into(),
        }),
    );
    match agent.recv(0) {
        Message::Error(e) => assert_eq!(e.code, ErrorCode::UnsupportedVersion),
        other => panic!("expected error, got {other:?}"),
    }
    // The session still accepts a compatible hello afterwards.
    agent.send(0, &Message::Hello(Hello { min_version: 1, max_version: PROTOCOL_VERSION, client: "now".into() }));
    assert!(matches!(agent.recv(0), Message::Welcome(_)));
}

#[test]
fn test_requests_before_hello_are_refused() {
    let mut agent = Agent::spawn_raw();
    agent.send(1, &Message::ExecStart(exec(&["true"])));
    match agent.recv(1) {
        Message::Error(e) => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("expected error, got {other:?}"),
    }
}

#[test]
fn test_unknown_stream_and_bad_requests() {
    let (mut agent, _) = Agent::spawn();
    agent.send(9, &Message::ExecSignal { signal: 15 });
    match agent.recv(9) {
        Message::Error(e) => assert_eq!(e.code, ErrorCode::UnknownStream),
        other => panic!("expected error, got {other:?}"),
    }
    let out = agent.run(2, exec(&[]));
    match out.error {
        Some(Message::Error(e)) => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("expected error, got {other:?}"),
    }
    agent.send(0, &Message::ExecStart(exec(&["true"])));
    assert!(matches!(agent.recv(0), Message::Error(_)));
}

#[test]
fn test_eof_kills_running_execs_and_agent_exits() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let (mut agent, _) = Agent::spawn();
    agent.send(1, &Message::ExecStart(sh(&format!("echo up; sleep 2; touch {}", marker.display()))));
    assert!(matches!(agent.recv(1), Message::ExecStarted { .. }));
    assert!(matches!(agent.recv(1), Message::ExecStdout { .. }));
    agent.close_stdin();
    let status = agent.child.wait().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_secs(3));
    assert!(!marker.exists(), "exec survived the session");
}

#[test]
fn test_poweroff_in_stdio_mode_ends_agent() {
    let (mut agent, _) = Agent::spawn();
    agent.send(0, &Message::GuestPoweroff);
    assert!(agent.child.wait().unwrap().success());
}

#[test]
fn test_socket_mode_serves_one_session() {
    use std::os::unix::net::UnixListener;

    use nestbox_agent_protocol::{read_frame, write_frame};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut child =
        std::process::Command::new(env!("CARGO_BIN_EXE_nestbox-agent")).arg("--socket").arg(&path).spawn().unwrap();
    let (mut sock, _) = listener.accept().unwrap();
    sock.set_read_timeout(Some(common::FRAME_TIMEOUT)).unwrap();
    let hello = Hello { min_version: 1, max_version: PROTOCOL_VERSION, client: "sock".into() };
    write_frame(&mut sock, 0, &Message::Hello(hello)).unwrap();
    assert!(matches!(read_frame(&mut sock).unwrap(), Some((0, Message::Welcome(_)))));
    write_frame(&mut sock, 1, &Message::ExecStart(exec(&["echo", "via-socket"]))).unwrap();
    let mut stdout = Vec::new();
    loop {
        match read_frame(&mut sock).unwrap().expect("frame") {
            (1, Message::ExecStdout { data }) => stdout.extend_from_slice(&data),
            (1, Message::ExecExited(e)) => {
                assert_eq!(e.code, Some(0));
                break;
            }
            (1, Message::ExecStarted { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(stdout, b"via-socket\n");
    drop(sock);
    assert!(child.wait().unwrap().success());
}
