//! [`connect_hybrid_vsock`] against a fake VMM: a Unix listener that speaks the
//! `CONNECT <port>\n` / `OK <n>\n` handshake the way Firecracker and Cloud Hypervisor do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nestbox_agent_client::{HANDSHAKE_TIMEOUT, MAX_REPLY_LINE, TransportError, connect_hybrid_vsock};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(10);
const PORT: u32 = 1024;

/// Accepts one connection, checks the `CONNECT` line, then writes `reply` in one write and,
/// when `echo` is set, echoes what the client sends until EOF. Returns the CONNECT line.
fn fake_vmm(dir: &Path, reply: &'static [u8], echo: bool) -> (PathBuf, JoinHandle<String>) {
    let path = dir.join("vsock.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let task = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut sock = BufReader::new(sock);
        let mut line = String::new();
        sock.read_line(&mut line).await.unwrap();
        sock.get_mut().write_all(reply).await.unwrap();
        if echo {
            let mut buf = [0u8; 1024];
            loop {
                let n = sock.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                sock.get_mut().write_all(&buf[..n]).await.unwrap();
            }
        }
        line
    });
    (path, task)
}

#[tokio::test]
async fn test_payload_behind_ok_line_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vmm) = fake_vmm(dir.path(), b"OK 1073741824\nguest spoke first|", true);
    let mut stream = tokio::time::timeout(LIMIT, connect_hybrid_vsock(&path, PORT)).await.unwrap().unwrap();
    assert_eq!(stream.host_port(), 1_073_741_824);
    let mut early = [0u8; 18];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut early)).await.unwrap().unwrap();
    assert_eq!(&early, b"guest spoke first|");
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(&echoed, b"ping");
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty());
    assert_eq!(vmm.await.unwrap(), format!("CONNECT {PORT}\n"));
}

#[tokio::test]
async fn test_closed_connection_means_nothing_listens() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vmm) = fake_vmm(dir.path(), b"", false);
    let err = connect_hybrid_vsock(&path, 52).await.unwrap_err();
    assert!(matches!(err, TransportError::NotListening { port: 52 }), "{err:?}");
    assert_eq!(err.to_string(), "nothing listens on vsock port 52 in the guest");
    assert_eq!(vmm.await.unwrap(), "CONNECT 52\n");
}

#[tokio::test]
async fn test_eof_inside_reply_line_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _vmm) = fake_vmm(dir.path(), b"OK 10", false);
    let err = connect_hybrid_vsock(&path, PORT).await.unwrap_err();
    assert!(matches!(err, TransportError::Truncated { port: PORT, ref partial } if partial == "OK 10"), "{err:?}");
}

#[tokio::test]
async fn test_junk_reply_is_refused_with_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _vmm) = fake_vmm(dir.path(), b"ERR no such port\nmore", false);
    let err = connect_hybrid_vsock(&path, PORT).await.unwrap_err();
    assert!(matches!(err, TransportError::Refused { port: PORT, ref reply } if reply == "ERR no such port"), "{err:?}");
}

#[tokio::test]
async fn test_overlong_reply_line_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _vmm) = fake_vmm(dir.path(), &[b'7'; 200], true);
    let err = connect_hybrid_vsock(&path, PORT).await.unwrap_err();
    assert!(matches!(err, TransportError::LineTooLong { port: PORT, limit: MAX_REPLY_LINE }), "{err:?}");
}

#[tokio::test]
async fn test_missing_socket_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sock");
    let err = connect_hybrid_vsock(&path, PORT).await.unwrap_err();
    assert!(matches!(err, TransportError::Connect { path: ref p, .. } if *p == path), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn test_silent_vmm_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vsock.sock");
    // Bound but never accepting: connect succeeds through the backlog, no reply ever comes.
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let err = connect_hybrid_vsock(&path, PORT).await.unwrap_err();
    assert!(matches!(err, TransportError::Timeout { port: PORT, after, .. } if after == HANDSHAKE_TIMEOUT), "{err:?}");
}
