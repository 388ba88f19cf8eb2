//! Protocol version 2 over `--stdio`: `tty` execs on a pseudo-terminal, `exec.resize`, `user`,
//! and a v1 host on the same agent.

mod common;

use common::{Agent, exec, sh};
use nestbox_agent_protocol::{ErrorCode, ExecStart, Exited, Hello, Message, TtySize};
use serde_bytes::ByteBuf;

fn code(c: i32) -> Option<Exited> {
    Some(Exited { code: Some(c), signal: None, timed_out: false })
}

/// `req` on a terminal of `rows` × `cols`, with stdin.
fn on_tty(mut req: ExecStart, rows: u16, cols: u16) -> ExecStart {
    req.tty = Some(TtySize { rows, cols });
    req.stdin = true;
    req
}

fn stdin(data: &[u8]) -> Message {
    Message::ExecStdin { data: ByteBuf::from(data.to_vec()) }
}

/// Reads stream output until it holds `want`; returns everything read.
fn read_until(agent: &mut Agent, stream: u32, want: &str) -> String {
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(want) {
        match agent.recv(stream) {
            Message::ExecStarted { .. } => {}
            Message::ExecStdout { data } => seen.extend_from_slice(&data),
            other => panic!("waiting for {want:?} after {:?}: {other:?}", String::from_utf8_lossy(&seen)),
        }
    }
    String::from_utf8(seen).unwrap()
}

fn error_code(msg: &Message) -> ErrorCode {
    match msg {
        Message::Error(e) => e.code,
        other => panic!("expected error, got {other:?}"),
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn test_tty_s_is_true_only_on_a_tty() {
    let (mut agent, _) = Agent::spawn();
    assert_eq!(agent.run(1, on_tty(exec(&["tty", "-s"]), 24, 80)).exited, code(0));
    assert_eq!(agent.run(2, exec(&["tty", "-s"])).exited, code(1));
}

#[test]
fn test_tty_merges_stderr_into_stdout() {
    let (mut agent, _) = Agent::spawn();
    let out = agent.run(1, on_tty(sh("echo out; echo err >&2; exit 4"), 24, 80));
    assert_eq!(out.stdout, b"out\r\nerr\r\n", "one terminal, with its \\r\\n line ends");
    assert_eq!(out.stderr, b"");
    assert_eq!(out.exited, code(4));
}

#[test]
fn test_tty_is_the_controlling_terminal_of_a_new_session() {
    let (mut agent, _) = Agent::spawn();
    // Field 6 of stat is the session id, field 7 the controlling terminal (0 = none).
    let out = agent.run(1, on_tty(sh("set -- $(cat /proc/$$/stat); echo \"$$ $6 $7\""), 24, 80));
    let text = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "{text:?}");
    assert_eq!(fields[0], fields[1], "the process leads its session");
    assert_ne!(fields[2], "0", "it has a controlling terminal");
    assert_eq!(out.pid.map(|p| p.to_string()).as_deref(), Some(fields[0]));
}

#[test]
fn test_stty_size_follows_start_and_resize() {
    let (mut agent, _) = Agent::spawn();
    agent.send(1, &Message::ExecStart(on_tty(sh("stty size; read x; stty size"), 33, 101)));
    read_until(&mut agent, 1, "33 101");
    agent.send(1, &Message::ExecResize(TtySize { rows: 50, cols: 132 }));
    agent.send(1, &stdin(b"go\n"));
    let out = agent.collect(1);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("50 132"), "{text:?}");
    assert_eq!(out.exited, code(0));
}

#[test]
fn test_resize_reaches_the_process_as_sigwinch() {
    let (mut agent, _) = Agent::spawn();
    let script = "trap 'echo winch; stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done";
    agent.send(1, &Message::ExecStart(on_tty(sh(script), 24, 80)));
    read_until(&mut agent, 1, "ready");
    agent.send(1, &Message::ExecResize(TtySize { rows: 40, cols: 100 }));
    let out = agent.collect(1);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "winch\r\n40 100\r\n");
    assert_eq!(out.exited, code(0));
}

#[test]
fn test_stdin_is_typed_into_the_terminal() {
    let (mut agent, _) = Agent::spawn();
    agent.send(1, &Message::ExecStart(on_tty(sh("read x; echo \"got <$x>\""), 24, 80)));
    agent.send(1, &stdin(b"hello tty\n"));
    let out = agent.collect(1);
    // The terminal echoes what was typed, then the answer follows.
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "hello tty\r\ngot <hello tty>\r\n");
    assert_eq!(out.exited, code(0));
}

#[test]
fn test_stdin_close_types_eof_and_ends_cat() {
    let (mut agent, _) = Agent::spawn();
    agent.send(1, &Message::ExecStart(on_tty(exec(&["cat"]), 24, 80)));
    agent.send(1, &stdin(b"line\n"));
    read_until(&mut agent, 1, "line\r\nline\r\n");
    agent.send(1, &Message::ExecStdinClose);
    assert_eq!(agent.collect(1).exited, code(0));

    // An unfinished line: the first ^D hands it to cat, the second is the end of input.
    agent.send(2, &Message::ExecStart(on_tty(exec(&["cat"]), 24, 80)));
    agent.send(2, &stdin(b"partial"));
    agent.send(2, &Message::ExecStdinClose);
    let out = agent.collect(2);
    assert_eq!(out.exited, code(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "partialpartial");
}

#[test]
fn test_ctrl_c_interrupts_the_foreground_process() {
    let (mut agent, _) = Agent::spawn();
    agent.send(1, &Message::ExecStart(on_tty(sh("echo ready; exec sleep 30"), 24, 80)));
    read_until(&mut agent, 1, "ready");
    agent.send(1, &stdin(b"\x03"));
    let out = agent.collect(1);
    assert_eq!(out.exited, Some(Exited { code: None, signal: Some(2), timed_out: false }));
}

#[test]
fn test_resize_refusals() {
    let (mut agent, _) = Agent::spawn();
    agent.send(9, &Message::ExecResize(TtySize { rows: 1, cols: 1 }));
    assert_eq!(error_code(&agent.recv(9)), ErrorCode::UnknownStream);

    let mut req = sh("read x; echo still-$x");
    req.stdin = true;
    agent.send(1, &Message::ExecStart(req));
    assert!(matches!(agent.recv(1), Message::ExecStarted { .. }));
    agent.send(1, &Message::ExecResize(TtySize { rows: 1, cols: 1 }));
    assert_eq!(error_code(&agent.recv(1)), ErrorCode::BadRequest);
    // The error refused the message, not the exec.
    agent.send(1, &stdin(b"here\n"));
    let out = agent.collect(1);
    assert_eq!((out.stdout.as_slice(), out.exited), (b"still-here\n".as_slice(), code(0)));
}

#[test]
fn test_user_numeric_ids() {
    if !is_root() {
        println!("skipped: switching users needs root");
        return;
    }
    let (mut agent, _) = Agent::spawn();
    let mut req = exec(&["id", "-u"]);
    req.user = Some("4242".into());
    let out = agent.run(1, req);
    assert_eq!((out.stdout.as_slice(), out.exited), (b"4242\n".as_slice(), code(0)));

    let mut req = sh("echo \"$(id -u) $(id -g) $(id -G)\"");
    req.user = Some("4242:77".into());
    let out = agent.run(2, req);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "4242 77 77\n", "only the one group");
}

#[test]
fn test_user_by_name_sets_home_and_user() {
    if !is_root() {
        println!("skipped: switching users needs root");
        return;
    }
    let (mut agent, _) = Agent::spawn();
    let mut req = sh("echo \"$(id -u) $USER $HOME\"");
    req.user = Some("root".into());
    let out = agent.run(1, req);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "0 root /root\n");
}

#[test]
fn test_user_on_a_tty() {
    if !is_root() {
        println!("skipped: switching users needs root");
        return;
    }
    let (mut agent, _) = Agent::spawn();
    let mut req = on_tty(sh("id -u; tty -s && echo on-tty"), 24, 80);
    req.user = Some("4242".into());
    let out = agent.run(1, req);
    assert_eq!((String::from_utf8(out.stdout).unwrap().as_str(), out.exited), ("4242\r\non-tty\r\n", code(0)));
}

#[test]
fn test_unknown_user_exits_126_naming_it() {
    let (mut agent, _) = Agent::spawn();
    let mut req = exec(&["true"]);
    req.user = Some("nestbox-no-such-user".into());
    let out = agent.run(1, req);
    assert!(out.pid.is_none());
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "nestbox-agent: user: nestbox-no-such-user: no such user\n");
    assert_eq!(out.exited, code(126));

    let mut req = exec(&["true"]);
    req.user = Some("0:nestbox-no-such-group".into());
    let out = agent.run(2, req);
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "nestbox-agent: user: nestbox-no-such-group: no such group\n");
    assert_eq!(out.exited, code(126));
}

#[test]
fn test_v1_host_gets_v1_and_no_v2_features() {
    let mut agent = Agent::spawn_raw();
    agent.send(0, &Message::Hello(Hello { min_version: 1, max_version: 1, client: "v1-host".into() }));
    match agent.recv(0) {
        Message::Welcome(w) => assert_eq!(w.version, 1),
        other => panic!("expected welcome, got {other:?}"),
    }
    assert_eq!(agent.run(1, exec(&["echo", "v1"])).stdout, b"v1\n");
    let out = agent.run(2, on_tty(exec(&["true"]), 24, 80));
    assert_eq!(out.error.as_ref().map(error_code), Some(ErrorCode::BadRequest));
    agent.send(3, &Message::ExecResize(TtySize { rows: 1, cols: 1 }));
    assert_eq!(error_code(&agent.recv(3)), ErrorCode::BadRequest);
}
