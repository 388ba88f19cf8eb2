//! A whole agent session through [`connect_hybrid_vsock`]: a test relay plays the VMM's hybrid
//! vsock socket (`CONNECT <port>\n` → `OK <n>\n`, then bytes both ways) in front of the real
//! `nestbox-agent --stdio`, as Firecracker and Cloud Hypervisor relay to the guest's listener.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nestbox_agent_client::{AgentClient, ExecRequest, TransportError, connect_hybrid_vsock};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::process::Command;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(60);
const AGENT_PORT: u32 = 1024;
/// What Firecracker reports: the host-side port of the new connection.
const HOST_PORT: u32 = 1_073_741_824;

/// Serves `connections` connections on `dir/vsock.sock`: a `CONNECT` to [`AGENT_PORT`] gets an
/// agent of its own; any other port is closed at once, as the VMMs do when nothing listens.
fn relay(dir: &Path, connections: usize) -> (PathBuf, JoinHandle<()>) {
    let path = dir.join("vsock.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let task = tokio::spawn(async move {
        for _ in 0..connections {
            let (sock, _) = listener.accept().await.unwrap();
            let (read, mut write) = sock.into_split();
            let mut read = BufReader::new(read);
            let mut line = String::new();
            read.read_line(&mut line).await.unwrap();
            if line != format!("CONNECT {AGENT_PORT}\n") {
                continue;
            }
            let mut agent = Command::new(env!("CARGO_BIN_EXE_nestbox-agent"))
                .arg("--stdio")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn agent");
            let (mut stdin, mut stdout) = (agent.stdin.take().unwrap(), agent.stdout.take().unwrap());
            write.write_all(format!("OK {HOST_PORT}\n").as_bytes()).await.unwrap();
            tokio::spawn(async move {
                let to_agent = async {
                    let _ = tokio::io::copy_buf(&mut read, &mut stdin).await;
                    drop(stdin);
                };
                let from_agent = async {
                    let _ = tokio::io::copy(&mut stdout, &mut write).await;
                    let _ = write.shutdown().await;
                };
                tokio::join!(to_agent, from_agent);
                let _ = agent.wait().await;
            });
        }
    });
    (path, task)
}

#[tokio::test]
async fn test_agent_session_over_hybrid_vsock() {
    let dir = tempfile::tempdir().unwrap();
    let (path, relay) = relay(dir.path(), 2);

    let err = connect_hybrid_vsock(&path, 52).await.unwrap_err();
    assert!(matches!(err, TransportError::NotListening { port: 52 }), "{err:?}");

    let stream = connect_hybrid_vsock(&path, AGENT_PORT).await.expect("hybrid vsock handshake");
    assert_eq!(stream.host_port(), HOST_PORT);
    let (client, welcome) = tokio::time::timeout(LIMIT, AgentClient::connect(stream)).await.unwrap().expect("hello");
    assert_eq!(welcome.version, nestbox_agent_protocol::PROTOCOL_VERSION);
    tokio::time::timeout(LIMIT, relay).await.unwrap().unwrap();

    let out = tokio::time::timeout(LIMIT, async {
        client.exec(ExecRequest::new(["sh", "-c", "echo out; echo err >&2; exit 3"])).await.unwrap().output().await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.status.code),
        (&b"out\n"[..], &b"err\n"[..], Some(3))
    );

    let exec = client.exec(ExecRequest::new(["wc", "-c"]).stdin(true)).await.unwrap();
    let stdin = exec.stdin();
    stdin.write(bytes::Bytes::from(vec![b'x'; 300_000])).await.unwrap();
    stdin.close().await.unwrap();
    let out = tokio::time::timeout(LIMIT, exec.output()).await.unwrap().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "300000");

    client.poweroff().await.unwrap();
}
