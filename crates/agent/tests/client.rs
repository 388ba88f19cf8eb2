//! `nestbox-agent-client` against the real agent binary (`--stdio`), bridged
//! with `tokio::process`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nestbox_agent_client::{AgentClient, ClientError, ErrorCode, ExecEvent, ExecRequest};
use sha2::{Digest, Sha256};
use tokio::process::{Child, Command};

const LIMIT: Duration = Duration::from_secs(120);

async fn connect() -> (AgentClient, Child) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nestbox-agent"))
        .arg("--stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn agent");
    let io = tokio::io::join(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let (client, welcome) = AgentClient::connect(io).await.expect("handshake");
    assert_eq!(welcome.version, nestbox_agent_protocol::PROTOCOL_VERSION);
    (client, child)
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["sh", "-c", script])
}

#[tokio::test]
async fn test_client_sixty_four_mib_stdout_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("blob");
    let script = format!("head -c 67108864 /dev/urandom > {f}; sha256sum {f} >&2; cat {f}", f = f.display());
    let (client, _child) = connect().await;
    let mut exec = client.exec(sh(&script)).await.unwrap();
    let mut hasher = Sha256::new();
    let mut len = 0usize;
    let mut stderr = Vec::new();
    let status = tokio::time::timeout(LIMIT, async {
        loop {
            match exec.next_event().await.expect("stream open") {
                ExecEvent::Started { .. } => {}
                ExecEvent::Stdout(b) => {
                    assert!(b.len() <= nestbox_agent_protocol::MAX_CHUNK);
                    len += b.len();
                    hasher.update(&b);
                }
                ExecEvent::Stderr(b) => stderr.extend_from_slice(&b),
                ExecEvent::Exited(s) => break s,
            }
        }
    })
    .await
    .expect("in time");
    assert!(status.success(), "{status:?}");
    assert_eq!(len, 64 * 1024 * 1024);
    let want = String::from_utf8(stderr).unwrap();
    assert_eq!(want.split_whitespace().next(), Some(hex::encode(hasher.finalize()).as_str()));
    assert_eq!(exec.next_event().await, None);
}

#[tokio::test]
async fn test_client_sixteen_concurrent_execs() {
    let (client, _child) = connect().await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let out =
                client.exec(sh(&format!("sleep 0.5; echo task-{i}; exit {i}"))).await.unwrap().output().await.unwrap();
            assert_eq!(out.stdout, format!("task-{i}\n").as_bytes());
            assert_eq!(out.status.code, Some(i));
            out.pid.unwrap()
        }));
    }
    let mut pids = Vec::new();
    for t in tasks {
        pids.push(t.await.unwrap());
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 16);
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
}

#[tokio::test]
async fn test_client_stdin_round_trip() {
    let (client, _child) = connect().await;
    let exec = client.exec(ExecRequest::new(["sha256sum"]).stdin(true)).await.unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let stdin = exec.stdin();
    stdin.write(Bytes::from(data.clone())).await.unwrap();
    stdin.close().await.unwrap();
    let out = exec.output().await.unwrap();
    assert!(out.status.success());
    let got = String::from_utf8(out.stdout).unwrap();
    assert_eq!(got.split_whitespace().next(), Some(hex::encode(Sha256::digest(&data)).as_str()));
}

#[tokio::test]
async fn test_client_signal_and_timeout() {
    let (client, _child) = connect().await;
    let mut exec = client.exec(sh("echo ready; exec sleep 30")).await.unwrap();
    assert!(matches!(exec.next_event().await, Some(ExecEvent::Started { .. })));
    assert!(matches!(exec.next_event().await, Some(ExecEvent::Stdout(_))));
    exec.signal(15).await.unwrap();
    let status = exec.output().await.unwrap().status;
    assert_eq!((status.signal, status.shell_code()), (Some(15), 143));

    let out = client
        .exec(ExecRequest::new(["sleep", "30"]).timeout(Duration::from_millis(200)))
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert!(out.status.timed_out);
    assert_eq!(out.status.shell_code(), 137);
}

#[tokio::test]
async fn test_client_missing_command_and_refused_request() {
    let (client, _child) = connect().await;
    let out = client.exec(ExecRequest::new(["nestbox-missing"])).await.unwrap().output().await.unwrap();
    assert_eq!(out.status.code, Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("command not found"));
    match client.exec(ExecRequest::default()).await {
        Err(ClientError::Agent { code, .. }) => assert_eq!(code, ErrorCode::BadRequest),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn test_client_connection_closed_mid_exec() {
    let (client, mut child) = connect().await;
    let mut exec = client.exec(sh("echo up; sleep 5")).await.unwrap();
    assert!(matches!(exec.next_event().await, Some(ExecEvent::Started { .. })));
    assert!(matches!(exec.next_event().await, Some(ExecEvent::Stdout(_))));
    child.kill().await.unwrap();
    let res = tokio::time::timeout(LIMIT, exec.try_next_event()).await.unwrap();
    assert!(matches!(res, Err(ClientError::Closed)), "{res:?}");
    assert!(matches!(client.exec(ExecRequest::new(["true"])).await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn test_client_poweroff_ends_stdio_agent() {
    let (client, mut child) = connect().await;
    client.poweroff().await.unwrap();
    let status = tokio::time::timeout(LIMIT, child.wait()).await.unwrap().unwrap();
    assert!(status.success());
}

/// Reads stdout events until they hold `want`; returns what was read.
async fn stdout_until(exec: &mut nestbox_agent_client::Exec, want: &str) -> String {
    let mut seen = Vec::new();
    tokio::time::timeout(LIMIT, async {
        while !String::from_utf8_lossy(&seen).contains(want) {
            match exec.next_event().await {
                Some(ExecEvent::Started { .. }) => {}
                Some(ExecEvent::Stdout(b)) => seen.extend_from_slice(&b),
                other => panic!("waiting for {want:?}: {other:?}"),
            }
        }
    })
    .await
    .expect("in time");
    String::from_utf8(seen).unwrap()
}

#[tokio::test]
async fn test_client_tty_resize_typing_and_eof() {
    let (client, _child) = connect().await;
    assert_eq!(client.version(), nestbox_agent_protocol::PROTOCOL_VERSION);
    let req = sh("stty size; read x; stty size; exec cat").tty(24, 80).stdin(true);
    let mut exec = client.exec(req).await.unwrap();
    stdout_until(&mut exec, "24 80\r\n").await;
    let stdin = exec.stdin();
    stdin.resize(50, 132).await.unwrap();
    stdin.write(Bytes::from_static(b"go\n")).await.unwrap();
    stdout_until(&mut exec, "50 132\r\n").await;
    stdin.write(Bytes::from_static(b"typed\n")).await.unwrap();
    stdout_until(&mut exec, "typed\r\ntyped\r\n").await;
    // ^D, not a closed pipe: cat sees the end of input and exits.
    stdin.close().await.unwrap();
    let out = tokio::time::timeout(LIMIT, exec.output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty());
}

#[tokio::test]
async fn test_client_non_tty_resize_is_refused_locally() {
    let (client, _child) = connect().await;
    let exec = client.exec(sh("exit 3")).await.unwrap();
    assert!(matches!(exec.resize(10, 10).await, Err(ClientError::NoTty)));
    assert_eq!(exec.output().await.unwrap().status.code, Some(3), "the stream is intact");
}

#[tokio::test]
async fn test_client_unknown_user_exits_126() {
    let (client, _child) = connect().await;
    let out =
        client.exec(ExecRequest::new(["true"]).user("nestbox-nobody-here")).await.unwrap().output().await.unwrap();
    assert_eq!(out.status.code, Some(126));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nestbox-nobody-here: no such user"));
}
