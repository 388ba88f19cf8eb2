//! Waiting for a supervised process's Unix socket (QMP, a Firecracker or Cloud Hypervisor API
//! socket) to accept connections.
//!
//! We poll: try to connect, and on "not there yet" (`ENOENT`, `ECONNREFUSED`, `EAGAIN`) nap for a
//! short interval that starts at [`SOCKET_POLL_INITIAL`] and doubles up to [`SOCKET_POLL_MAX`].
//! A nap ends early when the process exits, so a crash is reported at once rather than at the
//! deadline. The probe connection is closed straight away.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Result, SuperviseError};
use crate::process::ExitReport;

/// First interval between connection attempts.
pub const SOCKET_POLL_INITIAL: Duration = Duration::from_millis(2);

/// Longest interval between connection attempts.
pub const SOCKET_POLL_MAX: Duration = Duration::from_millis(10);

/// How a wait for a socket ended, short of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketWait {
    /// A connection was accepted.
    Ready,
    /// The process exited first.
    Exited(ExitReport),
    /// The deadline passed; carries how long we waited.
    TimedOut(Duration),
}

/// Polls `path` until it accepts a connection, the process behind `exit` exits, or `deadline`
/// passes.
pub(crate) async fn poll_socket(
    path: &Path,
    deadline: Duration,
    exit: &watch::Receiver<Option<ExitReport>>,
) -> Result<SocketWait> {
    let start = Instant::now();
    let mut exit = exit.clone();
    let mut interval = SOCKET_POLL_INITIAL;
    loop {
        if let Some(report) = *exit.borrow_and_update() {
            return Ok(SocketWait::Exited(report));
        }
        match UnixStream::connect(path).await {
            Ok(_probe) => return Ok(SocketWait::Ready),
            Err(err) if is_not_ready(&err) => {}
            Err(source) => {
                return Err(SuperviseError::Io { action: "connect to socket", path: path.to_owned(), source });
            }
        }
        let waited = start.elapsed();
        if waited >= deadline {
            return Ok(SocketWait::TimedOut(waited));
        }
        let nap = interval.min(deadline - waited);
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            changed = exit.changed() => {
                // The exit publisher is gone (runtime shutting down): fall back to napping.
                if changed.is_err() {
                    tokio::time::sleep(nap).await;
                }
            }
        }
        interval = (interval * 2).min(SOCKET_POLL_MAX);
    }
}

/// Errors that mean "the server has not bound or is not listening yet".
fn is_not_ready(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[tokio::test]
    async fn test_poll_socket_ready_when_listening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let (_tx, rx) = watch::channel(None);
        let got = poll_socket(&path, Duration::from_secs(5), &rx).await.unwrap();
        assert_eq!(got, SocketWait::Ready);
    }

    #[tokio::test]
    async fn test_poll_socket_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let (_tx, rx) = watch::channel(None);
        let deadline = Duration::from_millis(120);
        let got = poll_socket(&path, deadline, &rx).await.unwrap();
        let SocketWait::TimedOut(waited) = got else {
            panic!("expected a timeout, got {got:?}");
        };
        assert!(waited >= deadline, "{waited:?}");
        assert!(waited < deadline + Duration::from_secs(2), "{waited:?}");
    }

    #[tokio::test]
    async fn test_poll_socket_wakes_on_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let (tx, rx) = watch::channel(None);
        let report = ExitReport { code: Some(2), signal: None };
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            tx.send_replace(Some(report));
            // Keep the sender alive so the waiter sees the value, not a closed channel.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let start = Instant::now();
        let got = poll_socket(&path, Duration::from_secs(30), &rx).await.unwrap();
        assert_eq!(got, SocketWait::Exited(report));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn test_poll_socket_rejects_overlong_path() {
        let path = Path::new("/tmp").join("x".repeat(200));
        let (_tx, rx) = watch::channel(None);
        let err = poll_socket(&path, Duration::from_secs(1), &rx).await.unwrap_err();
        assert!(matches!(err, SuperviseError::Io { .. }), "{err:?}");
    }
}
