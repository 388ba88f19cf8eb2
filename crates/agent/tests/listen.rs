//! The accept loop the guest runs on AF_VSOCK, exercised on the host through
//! `nestbox-agent --listen-unix`: every connection is its own session.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nestbox_agent_client::{AgentClient, ExecEvent, ExecRequest};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

const LIMIT: Duration = Duration::from_secs(60);

struct Listening {
    child: Child,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

async fn spawn_listener() -> Listening {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_nestbox-agent"))
        .arg("--listen-unix")
        .arg(&path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn agent");
    let deadline = Instant::now() + LIMIT;
    // The socket file appears at bind(), before listen(): wait until a connection is accepted.
    while UnixStream::connect(&path).await.is_err() {
        assert!(Instant::now() < deadline, "agent never listened on {}", path.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Listening { child, path, _dir: dir }
}

async fn connect(path: &Path) -> AgentClient {
    let sock = UnixStream::connect(path).await.expect("connect");
    let (client, welcome) = tokio::time::timeout(LIMIT, AgentClient::connect(sock)).await.unwrap().expect("handshake");
    assert_eq!(welcome.version, nestbox_agent_protocol::PROTOCOL_VERSION);
    client
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["sh", "-c", script])
}

/// Starts `sleep 1000` and returns its pid once the agent reports it started.
async fn start_sleeper(client: &AgentClient) -> (nestbox_agent_client::Exec, i32) {
    let mut exec = client.exec(ExecRequest::new(["sleep", "1000"])).await.unwrap();
    match tokio::time::timeout(LIMIT, exec.next_event()).await.unwrap() {
        Some(ExecEvent::Started { pid }) => (exec, pid as i32),
        other => panic!("expected started, got {other:?}"),
    }
}

fn alive(pid: i32) -> bool {
    // The agent reaps its children, so a killed exec disappears from /proc.
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn test_listen_unix_serves_concurrent_independent_sessions() {
    let agent = spawn_listener().await;
    let (a, b) = tokio::join!(connect(&agent.path), connect(&agent.path));
    let run = |client: AgentClient, word: &'static str| async move {
        client.exec(sh(&format!("sleep 0.3; echo {word}"))).await.unwrap().output().await.unwrap()
    };
    let (out_a, out_b) =
        tokio::time::timeout(LIMIT, async { tokio::join!(run(a.clone(), "alpha"), run(b.clone(), "beta")) })
            .await
            .unwrap();
    assert_eq!((out_a.stdout.as_slice(), out_a.status.success()), (&b"alpha\n"[..], true));
    assert_eq!((out_b.stdout.as_slice(), out_b.status.success()), (&b"beta\n"[..], true));
}

#[tokio::test]
async fn test_listen_unix_connection_end_kills_only_its_execs() {
    let mut agent = spawn_listener().await;
    let a = connect(&agent.path).await;
    let b = connect(&agent.path).await;
    let (exec_a, pid_a) = start_sleeper(&a).await;
    let (exec_b, pid_b) = start_sleeper(&b).await;
    assert!(alive(pid_a) && alive(pid_b));

    drop(exec_a);
    drop(a);
    let deadline = Instant::now() + LIMIT;
    while alive(pid_a) {
        assert!(Instant::now() < deadline, "exec {pid_a} outlived its connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(alive(pid_b), "the other session's exec was killed too");
    let out =
        tokio::time::timeout(LIMIT, async { b.exec(sh("echo still here")).await.unwrap().output().await.unwrap() })
            .await
            .unwrap();
    assert_eq!(out.stdout, b"still here\n");

    // The listener keeps accepting after sessions end.
    let c = connect(&agent.path).await;
    let out = tokio::time::timeout(LIMIT, async {
        c.exec(ExecRequest::new(["true"])).await.unwrap().output().await.unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());

    exec_b.signal(libc::SIGKILL).await.unwrap();
    drop(exec_b);
    c.poweroff().await.unwrap();
    let status = tokio::time::timeout(LIMIT, agent.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn test_listen_unix_session_must_start_with_hello() {
    use nestbox_agent_client::{read_frame, write_frame};
    use nestbox_agent_protocol::{ExecStart, Message};

    let agent = spawn_listener().await;
    // A raw connection that skips hello is refused, and does not disturb a greeted one.
    let mut raw = UnixStream::connect(&agent.path).await.unwrap();
    let good = connect(&agent.path).await;
    let start = ExecStart { argv: vec!["true".into()], ..ExecStart::default() };
    write_frame(&mut raw, 1, &Message::ExecStart(start)).await.unwrap();
    let (stream, msg) = tokio::time::timeout(LIMIT, read_frame(&mut raw)).await.unwrap().unwrap().unwrap();
    assert_eq!(stream, 1);
    assert!(matches!(msg, Message::Error(ref e) if e.message.contains("hello")), "{msg:?}");
    let out = good.exec(ExecRequest::new(["true"])).await.unwrap().output().await.unwrap();
    assert!(out.status.success());
}
