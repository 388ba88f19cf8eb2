//! [`AgentClient`]: the connection, its reader/writer tasks and per-exec handles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use nestbox_agent_protocol::{
    CONTROL_STREAM, ExecStart, Hello, MAX_CHUNK, MIN_PROTOCOL_VERSION, Message, PROTOCOL_VERSION, TtySize, Welcome,
    encode,
};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::error::ClientError;
use crate::framing::{read_frame, write_frame};

/// Frames buffered per exec before the reader task waits for its consumer.
pub const EXEC_CHANNEL_CAPACITY: usize = 32;

/// Frames queued for the writer task before senders wait.
pub const WRITE_QUEUE_FRAMES: usize = 64;

/// The name this client gives in `hello`.
pub const CLIENT_NAME: &str = concat!("nestbox-agent-client/", env!("CARGO_PKG_VERSION"));

/// Streams of the connection, shared with the reader task.
#[derive(Debug, Default)]
struct Demux {
    /// `None` once the connection is closed: no new streams are accepted.
    streams: Option<HashMap<u32, mpsc::Sender<Message>>>,
}

#[derive(Debug)]
struct WriteCmd {
    frame: Vec<u8>,
    written: Option<oneshot::Sender<()>>,
}

#[derive(Debug)]
struct Inner {
    demux: Arc<Mutex<Demux>>,
    writer: mpsc::Sender<WriteCmd>,
    next_stream: AtomicU32,
    reader: AbortHandle,
    /// The protocol version the agent chose in `welcome`.
    version: u16,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lock(demux: &Mutex<Demux>) -> MutexGuard<'_, Demux> {
    demux.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Closes the connection for every stream: their receivers end without `Exited`.
fn close_all(demux: &Mutex<Demux>) {
    lock(demux).streams = None;
}

impl Inner {
    /// Fails when `msg` needs a newer protocol version than this connection speaks.
    fn check_version(&self, msg: &Message, feature: &'static str) -> Result<(), ClientError> {
        let needed = msg.min_version();
        if needed > self.version {
            return Err(ClientError::Unsupported { feature, needed, agent: self.version });
        }
        Ok(())
    }

    async fn send(&self, stream: u32, msg: &Message) -> Result<(), ClientError> {
        let mut frame = Vec::new();
        encode(stream, msg, &mut frame);
        self.writer.send(WriteCmd { frame, written: None }).await.map_err(|_| ClientError::Closed)
    }

    async fn send_and_flush(&self, stream: u32, msg: &Message) -> Result<(), ClientError> {
        let mut frame = Vec::new();
        encode(stream, msg, &mut frame);
        let (tx, rx) = oneshot::channel();
        self.writer.send(WriteCmd { frame, written: Some(tx) }).await.map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }
}

/// A connection to a guest agent. Cheap to clone; all clones share it.
#[derive(Debug, Clone)]
pub struct AgentClient {
    inner: Arc<Inner>,
}

/// What to run: argv, environment overrides, working directory, stdin, timeout, terminal, user.
///
/// New fields may be added: build it with [`ExecRequest::new`] and the setters, or with
/// `..ExecRequest::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Variables applied on top of the agent's default environment.
    pub env: Vec<(String, String)>,
    /// Working directory in the guest.
    pub cwd: Option<String>,
    /// Whether stdin is a pipe fed through [`Exec::stdin`].
    pub stdin: bool,
    /// Kill the process group after this long.
    pub timeout: Option<Duration>,
    /// Run on a fresh pseudo-terminal of this size: stdin, stdout and stderr are the terminal
    /// and all output arrives as [`ExecEvent::Stdout`]. Needs protocol version 2.
    pub tty: Option<TtySize>,
    /// Run as `uid`, `uid:gid`, `name` or `name:group` (names from the guest's `/etc/passwd`
    /// and `/etc/group`). Needs protocol version 2.
    pub user: Option<String>,
}

impl ExecRequest {
    /// A request running `argv` with defaults for everything else.
    pub fn new<I, S>(argv: I) -> ExecRequest
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequest { argv: argv.into_iter().map(Into::into).collect(), ..ExecRequest::default() }
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> ExecRequest {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, cwd: impl Into<String>) -> ExecRequest {
        self.cwd = Some(cwd.into());
        self
    }

    /// Asks for a stdin pipe.
    pub fn stdin(mut self, stdin: bool) -> ExecRequest {
        self.stdin = stdin;
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> ExecRequest {
        self.timeout = Some(timeout);
        self
    }

    /// Asks for a pseudo-terminal of `rows` × `cols`.
    pub fn tty(mut self, rows: u16, cols: u16) -> ExecRequest {
        self.tty = Some(TtySize { rows, cols });
        self
    }

    /// Runs the command as `user` (`uid`, `uid:gid`, `name` or `name:group`).
    pub fn user(mut self, user: impl Into<String>) -> ExecRequest {
        self.user = Some(user.into());
        self
    }

    /// The field a v1 agent would not understand, if any.
    fn v2_feature(&self) -> &'static str {
        if self.tty.is_some() { "tty" } else { "user" }
    }

    fn to_wire(&self) -> ExecStart {
        ExecStart {
            argv: self.argv.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            stdin: self.stdin,
            timeout_ms: self.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            tty: self.tty,
            user: self.user.clone(),
        }
    }
}

/// How an exec ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code for a normal exit.
    pub code: Option<i32>,
    /// Signal number when killed by a signal.
    pub signal: Option<i32>,
    /// Whether the agent killed it for exceeding its timeout.
    pub timed_out: bool,
}

/// Shell convention for "neither code nor signal" (should not happen).
const SHELL_CODE_UNKNOWN: i32 = 255;

impl ExitStatus {
    /// The code a shell would report: the exit code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => SHELL_CODE_UNKNOWN,
        }
    }

    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// One event of a running exec, in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// The process is running with this pid.
    Started {
        /// Its pid in the guest.
        pid: u32,
    },
    /// Bytes from stdout.
    Stdout(Bytes),
    /// Bytes from stderr.
    Stderr(Bytes),
    /// The process ended; always the last event.
    Exited(ExitStatus),
}

/// Everything an exec produced, from [`Exec::output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its pid, when it was spawned.
    pub pid: Option<u32>,
    /// All of stdout.
    pub stdout: Vec<u8>,
    /// All of stderr.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub status: ExitStatus,
}

/// A running exec: its events and handles to its stdin, signals and terminal size.
#[derive(Debug)]
pub struct Exec {
    stream: u32,
    rx: mpsc::Receiver<Message>,
    first: Option<Message>,
    finished: bool,
    tty: bool,
    inner: Arc<Inner>,
}

/// Writes to an exec's stdin and resizes its terminal. Cheap to clone, so a stdin pump and a
/// SIGWINCH task can each hold one.
#[derive(Debug, Clone)]
pub struct ExecStdin {
    stream: u32,
    tty: bool,
    inner: Arc<Inner>,
}

/// Sends `exec.resize` for a tty exec; refuses locally otherwise (the agent would answer
/// with an error on the exec's stream).
async fn resize(inner: &Inner, stream: u32, tty: bool, rows: u16, cols: u16) -> Result<(), ClientError> {
    if !tty {
        return Err(ClientError::NoTty);
    }
    let msg = Message::ExecResize(TtySize { rows, cols });
    inner.check_version(&msg, "exec.resize")?;
    inner.send(stream, &msg).await
}

impl AgentClient {
    /// Greets the agent over `io` and starts the connection's tasks.
    ///
    /// Must be called inside a tokio runtime. It waits for `welcome` without a
    /// deadline; wrap it in `tokio::time::timeout` if the agent may be absent.
    pub async fn connect<S>(io: S) -> Result<(AgentClient, Welcome), ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (read_half, mut write_half) = tokio::io::split(io);
        let mut reader = BufReader::new(read_half);
        let hello = Message::Hello(Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            client: CLIENT_NAME.into(),
        });
        write_frame(&mut write_half, CONTROL_STREAM, &hello).await?;
        let welcome = match read_frame(&mut reader).await? {
            Some((CONTROL_STREAM, Message::Welcome(w))) => w,
            Some((_, Message::Error(e))) => {
                return Err(ClientError::Agent { code: e.code, message: e.message });
            }
            Some((stream, other)) => {
                return Err(ClientError::UnexpectedMessage { stream, name: other.name() });
            }
            None => return Err(ClientError::Closed),
        };

        let demux = Arc::new(Mutex::new(Demux { streams: Some(HashMap::new()) }));
        let (writer_tx, writer_rx) = mpsc::channel(WRITE_QUEUE_FRAMES);
        tokio::spawn(write_task(write_half, writer_rx, Arc::clone(&demux)));
        let reader = tokio::spawn(read_task(reader, Arc::clone(&demux))).abort_handle();
        let version = welcome.version;
        let inner = Inner { demux, writer: writer_tx, next_stream: AtomicU32::new(1), reader, version };
        Ok((AgentClient { inner: Arc::new(inner) }, welcome))
    }

    /// Starts a command. Returns once the agent accepted it (its first message
    /// on the stream); a refused request is [`ClientError::Agent`], and a `tty` or `user`
    /// request to a version 1 agent is [`ClientError::Unsupported`] (nothing is sent).
    pub async fn exec(&self, req: ExecRequest) -> Result<Exec, ClientError> {
        let start = Message::ExecStart(req.to_wire());
        self.inner.check_version(&start, req.v2_feature())?;
        let stream = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel(EXEC_CHANNEL_CAPACITY);
        match lock(&self.inner.demux).streams.as_mut() {
            Some(streams) => streams.insert(stream, tx),
            None => return Err(ClientError::Closed),
        };
        if let Err(e) = self.inner.send(stream, &start).await {
            if let Some(streams) = lock(&self.inner.demux).streams.as_mut() {
                streams.remove(&stream);
            }
            return Err(e);
        }
        match rx.recv().await {
            None => Err(ClientError::Closed),
            Some(Message::Error(e)) => Err(ClientError::Agent { code: e.code, message: e.message }),
            Some(first) => Ok(Exec {
                stream,
                rx,
                first: Some(first),
                finished: false,
                tty: req.tty.is_some(),
                inner: Arc::clone(&self.inner),
            }),
        }
    }

    /// Asks the guest to power off; returns once the request is written.
    pub async fn poweroff(&self) -> Result<(), ClientError> {
        self.inner.send_and_flush(CONTROL_STREAM, &Message::GuestPoweroff).await
    }

    /// The protocol version the agent chose.
    pub fn version(&self) -> u16 {
        self.inner.version
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        lock(&self.inner.demux).streams.is_none()
    }
}

impl Exec {
    /// The stream id this exec runs on.
    pub fn stream_id(&self) -> u32 {
        self.stream
    }

    /// The next event, or `Ok(None)` after [`ExecEvent::Exited`]. Fails with
    /// [`ClientError::Closed`] if the connection ended before the exit, or
    /// [`ClientError::Agent`] if the agent ended the stream with an error.
    pub async fn try_next_event(&mut self) -> Result<Option<ExecEvent>, ClientError> {
        if self.finished {
            return Ok(None);
        }
        let msg = match self.first.take() {
            Some(m) => m,
            None => match self.rx.recv().await {
                Some(m) => m,
                None => {
                    self.finished = true;
                    return Err(ClientError::Closed);
                }
            },
        };
        let event = match msg {
            Message::ExecStarted { pid } => ExecEvent::Started { pid },
            Message::ExecStdout { data } => ExecEvent::Stdout(Bytes::from(data.into_vec())),
            Message::ExecStderr { data } => ExecEvent::Stderr(Bytes::from(data.into_vec())),
            Message::ExecExited(e) => {
                self.finished = true;
                ExecEvent::Exited(ExitStatus { code: e.code, signal: e.signal, timed_out: e.timed_out })
            }
            Message::Error(e) => {
                self.finished = true;
                return Err(ClientError::Agent { code: e.code, message: e.message });
            }
            other => {
                return Err(ClientError::UnexpectedMessage { stream: self.stream, name: other.name() });
            }
        };
        Ok(Some(event))
    }

    /// The next event; `None` after [`ExecEvent::Exited`], or when the stream
    /// ended without one (use [`Exec::try_next_event`] to learn why).
    pub async fn next_event(&mut self) -> Option<ExecEvent> {
        self.try_next_event().await.ok().flatten()
    }

    /// Collects all output until the exit.
    pub async fn output(mut self) -> Result<ExecOutput, ClientError> {
        let mut pid = None;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        loop {
            match self.try_next_event().await? {
                Some(ExecEvent::Started { pid: p }) => pid = Some(p),
                Some(ExecEvent::Stdout(b)) => stdout.extend_from_slice(&b),
                Some(ExecEvent::Stderr(b)) => stderr.extend_from_slice(&b),
                Some(ExecEvent::Exited(status)) => {
                    return Ok(ExecOutput { pid, stdout, stderr, status });
                }
                None => return Err(ClientError::Closed),
            }
        }
    }

    /// A handle writing to this exec's stdin (requested with [`ExecRequest::stdin`]) and
    /// resizing its terminal.
    pub fn stdin(&self) -> ExecStdin {
        ExecStdin { stream: self.stream, tty: self.tty, inner: Arc::clone(&self.inner) }
    }

    /// Sends `signal` to the exec's process group.
    pub async fn signal(&self, signal: i32) -> Result<(), ClientError> {
        self.inner.send(self.stream, &Message::ExecSignal { signal }).await
    }

    /// Sets the size of the exec's terminal (the process gets SIGWINCH). Fails with
    /// [`ClientError::NoTty`] for an exec started without [`ExecRequest::tty`].
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        resize(&self.inner, self.stream, self.tty, rows, cols).await
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        if let Some(streams) = lock(&self.inner.demux).streams.as_mut() {
            streams.remove(&self.stream);
        }
    }
}

impl ExecStdin {
    /// Queues `data` for the process's stdin, in chunks of at most `MAX_CHUNK`.
    pub async fn write(&self, data: Bytes) -> Result<(), ClientError> {
        for chunk in data.chunks(MAX_CHUNK) {
            let msg = Message::ExecStdin { data: ByteBuf::from(chunk.to_vec()) };
            self.inner.send(self.stream, &msg).await?;
        }
        Ok(())
    }

    /// Closes the process's stdin after the bytes already written; on a terminal this types
    /// its end-of-file character (^D) instead.
    pub async fn close(&self) -> Result<(), ClientError> {
        self.inner.send(self.stream, &Message::ExecStdinClose).await
    }

    /// Sets the size of the exec's terminal, like [`Exec::resize`].
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        resize(&self.inner, self.stream, self.tty, rows, cols).await
    }
}

async fn write_task<S: AsyncWrite>(mut io: WriteHalf<S>, mut rx: mpsc::Receiver<WriteCmd>, demux: Arc<Mutex<Demux>>) {
    use tokio::io::AsyncWriteExt;
    while let Some(cmd) = rx.recv().await {
        let mut ok = io.write_all(&cmd.frame).await.is_ok();
        if ok && rx.is_empty() {
            ok = io.flush().await.is_ok();
        }
        if !ok {
            tracing::debug!("agent connection write failed");
            close_all(&demux);
            return;
        }
        if let Some(done) = cmd.written {
            let _ = io.flush().await;
            let _ = done.send(());
        }
    }
    let _ = io.shutdown().await;
}

async fn read_task<S: AsyncRead>(mut io: BufReader<ReadHalf<S>>, demux: Arc<Mutex<Demux>>) {
    // Streams whose process was spawned. An `error` on one refuses a single request (a stdin
    // close that raced the exit, a write to an exec without stdin); it does not end the exec,
    // whose `exec.exited` still comes (PROTOCOL.md, rules 2, 6 and 9). It is dropped here.
    let mut started = std::collections::HashSet::new();
    loop {
        let (stream, msg) = match read_frame(&mut io).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "agent connection broken");
                break;
            }
        };
        if stream == CONTROL_STREAM {
            if let Message::Error(e) = &msg {
                tracing::warn!(code = ?e.code, message = %e.message, "agent error");
            }
            continue;
        }
        let terminal = match &msg {
            Message::ExecStarted { .. } => {
                started.insert(stream);
                false
            }
            Message::Error(e) if started.contains(&stream) => {
                tracing::debug!(stream, code = ?e.code, message = %e.message, "agent refused a request of a running exec");
                continue;
            }
            Message::ExecExited(_) | Message::Error(_) => {
                started.remove(&stream);
                true
            }
            _ => false,
        };
        let tx = match lock(&demux).streams.as_ref() {
            Some(streams) => streams.get(&stream).cloned(),
            None => break,
        };
        let Some(tx) = tx else {
            // A stream nobody waits for (dropped Exec, late error): discard.
            continue;
        };
        if (tx.send(msg).await.is_err() || terminal)
            && let Some(streams) = lock(&demux).streams.as_mut()
        {
            streams.remove(&stream);
        }
    }
    close_all(&demux);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_shell_code() {
        let s = |code, signal| ExitStatus { code, signal, timed_out: false };
        assert_eq!(s(Some(3), None).shell_code(), 3);
        assert_eq!(s(None, Some(9)).shell_code(), 137);
        assert_eq!(s(None, None).shell_code(), 255);
        assert!(s(Some(0), None).success());
    }

    #[test]
    fn test_exec_request_to_wire() {
        let req =
            ExecRequest::new(["ls", "-l"]).env("A", "1").cwd("/tmp").stdin(true).timeout(Duration::from_millis(1500));
        let wire = req.to_wire();
        assert_eq!(wire.argv, ["ls", "-l"]);
        assert_eq!(wire.env, [("A".to_string(), "1".to_string())]);
        assert_eq!(wire.cwd.as_deref(), Some("/tmp"));
        assert!(wire.stdin);
        assert_eq!(wire.timeout_ms, Some(1500));
        assert_eq!((wire.tty, wire.user.as_deref()), (None, None));
        assert_eq!(Message::ExecStart(wire).min_version(), 1, "a plain request stays v1");

        let wire = ExecRequest::new(["sh"]).tty(24, 80).user("1000:100").to_wire();
        assert_eq!(wire.tty, Some(TtySize { rows: 24, cols: 80 }));
        assert_eq!(wire.user.as_deref(), Some("1000:100"));
        assert_eq!(ExecRequest::new(["id"]).user("u").v2_feature(), "user");
        assert_eq!(ExecRequest::new(["sh"]).tty(1, 1).user("u").v2_feature(), "tty");
    }
}
