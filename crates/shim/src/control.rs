//! The shim's control socket, `<sandbox dir>/control.sock`: how the CLI (and later the daemon)
//! asks a sandbox's shim to pause, resume, stop or kill the VM, reports its state, and attaches to
//! the serial console.
//!
//! One request per connection: the client writes one JSON line ([`Request`]) and reads one JSON
//! line ([`Reply`]). After a successful `console` reply the connection carries raw bytes both
//! ways: the guest's console output to the client, the client's keystrokes to the guest.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The longest request or reply line accepted.
const MAX_LINE: usize = 64 * 1024;
/// How long a client waits for the reply to a quick request.
pub const QUICK_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a client asks of the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Report the VM's state.
    Status,
    /// Pause the vCPUs.
    Pause,
    /// Resume the vCPUs.
    Resume,
    /// Ask the guest to power off; kill the VM when it has not after `timeout_ms`. The reply
    /// comes once the VM has exited.
    Stop {
        /// The grace period.
        timeout_ms: u64,
    },
    /// Kill the VM at once; the reply comes once it has exited.
    Kill,
    /// Attach to the serial console.
    Console,
    /// Snapshot the VM into `dest` (memory and device state by the hypervisor, then each disk
    /// copied while the VM is paused); then resume it, or leave it paused, or stop it.
    Snapshot {
        /// The snapshot's directory (exists, empty).
        dest: PathBuf,
        /// Disks to copy: (the VM's file, the copy's path).
        #[serde(default)]
        disks: Vec<(PathBuf, PathBuf)>,
        /// What the VM does afterwards.
        then: AfterSnapshot,
    },
}

/// What a VM does once its snapshot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterSnapshot {
    /// Run on.
    Resume,
    /// Stay paused.
    Pause,
    /// Stop (the snapshot holds its state).
    Stop,
}

/// The files a snapshot left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReply {
    /// The memory, when in a file of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<PathBuf>,
    /// The device state.
    pub state: PathBuf,
}

/// The VM as the shim sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The hypervisor's pid.
    pub vm_pid: u32,
    /// `running` or `paused`, as the hypervisor reports it.
    pub vm_state: String,
    /// How many clients are connected to the agent socket.
    pub agent_clients: usize,
    /// How many execs are running.
    pub execs: usize,
}

/// The shim's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The VM's state, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The snapshot's files, for `snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotReply>,
}

impl Reply {
    /// Success with nothing to report.
    pub fn ok() -> Self {
        Self { ok: true, error: None, status: None, snapshot: None }
    }

    /// Failure, with the reason.
    pub fn error(reason: impl Into<String>) -> Self {
        Self { ok: false, error: Some(reason.into()), status: None, snapshot: None }
    }
}

/// Why a control request failed before the shim answered it.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be reached (the shim is gone).
    #[error("cannot reach the sandbox's shim at {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The connection failed or closed before a reply.
    #[error("the sandbox's shim closed the connection without replying")]
    NoReply,
    /// No reply within the deadline.
    #[error("the sandbox's shim did not reply within {0:?}")]
    Timeout(Duration),
    /// The reply was not a [`Reply`].
    #[error("the sandbox's shim sent an invalid reply: {0}")]
    BadReply(String),
    /// The shim refused or failed the request.
    #[error("{0}")]
    Refused(String),
}

/// Sends `req` to the shim at `socket` and waits up to `timeout` for its reply.
pub async fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Reply, ControlError> {
    let (reply, _) =
        tokio::time::timeout(timeout, exchange(socket, req)).await.map_err(|_| ControlError::Timeout(timeout))??;
    if reply.ok { Ok(reply) } else { Err(ControlError::Refused(reply.error.unwrap_or_default())) }
}

/// Attaches to the console: the returned stream carries console bytes both ways.
pub async fn attach_console(socket: &Path) -> Result<BufReader<UnixStream>, ControlError> {
    let (reply, stream) = tokio::time::timeout(QUICK_REPLY_TIMEOUT, exchange(socket, &Request::Console))
        .await
        .map_err(|_| ControlError::Timeout(QUICK_REPLY_TIMEOUT))??;
    if reply.ok { Ok(stream) } else { Err(ControlError::Refused(reply.error.unwrap_or_default())) }
}

async fn exchange(socket: &Path, req: &Request) -> Result<(Reply, BufReader<UnixStream>), ControlError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ControlError::Connect { path: socket.display().to_string(), source })?;
    let mut stream = BufReader::new(stream);
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::BadReply(e.to_string()))?;
    line.push(b'\n');
    stream.get_mut().write_all(&line).await.map_err(|_| ControlError::NoReply)?;
    let text = read_line(&mut stream).await.ok_or(ControlError::NoReply)?;
    let reply = serde_json::from_str(&text).map_err(|e| ControlError::BadReply(format!("{e}: {text:?}")))?;
    Ok((reply, stream))
}

async fn read_line(stream: &mut BufReader<UnixStream>) -> Option<String> {
    let mut buf = Vec::new();
    let mut limited = (&mut *stream).take(MAX_LINE as u64);
    match limited.read_until(b'\n', &mut buf).await {
        Ok(0) | Err(_) => None,
        Ok(_) if buf.last() != Some(&b'\n') => None,
        Ok(_) => String::from_utf8(buf).ok(),
    }
}

/// What the shim does for each request.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Carries out a request other than `console`.
    async fn handle(&self, req: Request) -> Reply;
    /// Serves an attached console on `stream` until either side closes it. The success reply
    /// was already sent.
    async fn console(&self, stream: BufReader<UnixStream>);
    /// Whether the console can be attached (a reason when it cannot).
    fn console_available(&self) -> Result<(), String>;
}

/// Serves the control socket until the listener fails: every connection in its own task.
pub async fn serve(listener: UnixListener, handler: Arc<dyn Handler>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let handler = handler.clone();
                tokio::spawn(async move { serve_one(stream, &*handler).await });
            }
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_one(stream: UnixStream, handler: &dyn Handler) {
    let mut stream = BufReader::new(stream);
    let Some(line) = read_line(&mut stream).await else {
        return;
    };
    let req = match serde_json::from_str::<Request>(&line) {
        Ok(req) => req,
        Err(e) => {
            let _ = send(&mut stream, &Reply::error(format!("invalid request: {e}"))).await;
            return;
        }
    };
    tracing::debug!(?req, "control request");
    if req == Request::Console {
        let reply = match handler.console_available() {
            Ok(()) => Reply::ok(),
            Err(reason) => Reply::error(reason),
        };
        let ok = reply.ok;
        if send(&mut stream, &reply).await.is_ok() && ok {
            handler.console(stream).await;
        }
        return;
    }
    let reply = handler.handle(req).await;
    let _ = send(&mut stream, &reply).await;
}

async fn send(stream: &mut BufReader<UnixStream>, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.get_mut().write_all(&line).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<Request>>,
    }

    #[async_trait::async_trait]
    impl Handler for Recorder {
        async fn handle(&self, req: Request) -> Reply {
            self.seen.lock().unwrap().push(req.clone());
            match req {
                Request::Pause => Reply::error("cannot pause sandbox: it is paused"),
                Request::Status => Reply {
                    status: Some(Status { vm_pid: 7, vm_state: "running".into(), agent_clients: 0, execs: 0 }),
                    ..Reply::ok()
                },
                _ => Reply::ok(),
            }
        }
        async fn console(&self, mut stream: BufReader<UnixStream>) {
            let mut buf = [0u8; 5];
            stream.read_exact(&mut buf).await.unwrap();
            stream.get_mut().write_all(&buf.to_ascii_uppercase()).await.unwrap();
        }
        fn console_available(&self) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn test_requests_have_stable_json_names() {
        let json = serde_json::to_string(&Request::Stop { timeout_ms: 5000 }).unwrap();
        assert_eq!(json, r#"{"op":"stop","timeout_ms":5000}"#);
        assert_eq!(serde_json::to_string(&Request::Kill).unwrap(), r#"{"op":"kill"}"#);
    }

    #[tokio::test]
    async fn test_call_round_trips_and_surfaces_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let recorder = Arc::new(Recorder::default());
        tokio::spawn(serve(UnixListener::bind(&path).unwrap(), recorder.clone()));
        let reply = call(&path, &Request::Status, QUICK_REPLY_TIMEOUT).await.unwrap();
        assert_eq!(reply.status.unwrap().vm_pid, 7);
        let err = call(&path, &Request::Pause, QUICK_REPLY_TIMEOUT).await.unwrap_err();
        assert_eq!(err.to_string(), "cannot pause sandbox: it is paused");
        assert_eq!(*recorder.seen.lock().unwrap(), vec![Request::Status, Request::Pause]);
    }

    #[tokio::test]
    async fn test_console_switches_the_connection_to_raw_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        tokio::spawn(serve(UnixListener::bind(&path).unwrap(), Arc::new(Recorder::default())));
        let mut stream = attach_console(&path).await.unwrap();
        stream.get_mut().write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HELLO");
    }

    #[tokio::test]
    async fn test_a_missing_shim_is_a_connect_error_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let err = call(&path, &Request::Status, QUICK_REPLY_TIMEOUT).await.unwrap_err();
        assert!(matches!(err, ControlError::Connect { .. }), "{err}");
        tokio::spawn(serve(UnixListener::bind(&path).unwrap(), Arc::new(Recorder::default())));
        let mut raw = BufReader::new(UnixStream::connect(&path).await.unwrap());
        raw.get_mut().write_all(b"{\"op\":\"fly\"}\n").await.unwrap();
        let line = read_line(&mut raw).await.unwrap();
        let reply: Reply = serde_json::from_str(&line).unwrap();
        assert!(!reply.ok && reply.error.unwrap().contains("invalid request"));
    }
}
