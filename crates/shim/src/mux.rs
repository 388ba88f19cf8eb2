//! The agent multiplexer: many clients on `<sandbox dir>/agent.sock`, one connection to the guest
//! agent.
//!
//! Clients speak the agent protocol itself (see `crates/agent-protocol/PROTOCOL.md`), so the same
//! `AgentClient` talks to a shim or to an agent. The shim opens the session upstream once
//! ([`handshake`]) and answers each client's `hello` with that session's `welcome`. Each client
//! numbers its exec streams as it likes; the multiplexer gives every `exec.start` a fresh
//! upstream stream id and routes the stream's replies back to the client that opened it.
//!
//! - Stream 0 from a client is answered here: `guest.poweroff` is refused (stopping a sandbox is
//!   the shim's job, through its control socket), anything else is a `bad_request`.
//! - A client that disconnects has its running execs killed (`exec.signal` 9), as the agent does
//!   for a connection that ends.
//! - When the upstream connection ends (the VM stopped), every client connection is closed.
//!
//! Output is forwarded with backpressure: a client that stops reading eventually stalls the
//! upstream reader, as one slow reader of a direct agent connection would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use nestbox_agent_client::{read_frame, write_frame};
use nestbox_agent_protocol::{CONTROL_STREAM, ErrorCode, Hello, Message, PROTOCOL_VERSION, Welcome};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

/// Frames queued per client before the upstream reader waits for it.
const CLIENT_QUEUE_FRAMES: usize = 256;
/// Frames queued for the agent before clients wait.
const UPSTREAM_QUEUE_FRAMES: usize = 256;
/// The signal sent to the execs of a client that went away.
const SIGKILL: i32 = 9;
/// The lowest agent protocol version the shim speaks upstream.
const MIN_PROTOCOL_VERSION: u16 = 1;

/// The name the shim gives itself in its `hello`.
pub const SHIM_CLIENT_NAME: &str = concat!("nestbox-shim/", env!("CARGO_PKG_VERSION"));

/// Why the upstream session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The stream failed or carried a bad frame.
    #[error("agent handshake failed: {0}")]
    Protocol(#[from] nestbox_agent_protocol::ProtocolError),
    /// The agent closed the stream before answering.
    #[error("the agent closed the connection during the handshake")]
    Closed,
    /// The agent refused the session.
    #[error("the agent refused the session: {0}")]
    Refused(String),
    /// The agent answered with something other than `welcome`.
    #[error("the agent answered hello with {0}")]
    Unexpected(&'static str),
}

/// Opens the session with the agent on `stream`: `hello`, then `welcome`.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> Result<Welcome, HandshakeError> {
    let hello =
        Hello { min_version: MIN_PROTOCOL_VERSION, max_version: PROTOCOL_VERSION, client: SHIM_CLIENT_NAME.to_owned() };
    write_frame(stream, CONTROL_STREAM, &Message::Hello(hello)).await?;
    match read_frame(stream).await? {
        Some((_, Message::Welcome(welcome))) => Ok(welcome),
        Some((_, Message::Error(e))) => Err(HandshakeError::Refused(e.message)),
        Some((_, other)) => Err(HandshakeError::Unexpected(other.name())),
        None => Err(HandshakeError::Closed),
    }
}

type ClientId = u64;

/// Where an upstream stream's replies go.
#[derive(Debug, Clone, Copy)]
struct Route {
    client: ClientId,
    stream: u32,
    /// Whether `exec.started` was seen: an `error` before it ends the stream, one after it
    /// answers a single request.
    started: bool,
}

#[derive(Debug)]
struct ClientEntry {
    tx: mpsc::Sender<(u32, Message)>,
    /// The client's stream id → the upstream one, for its live execs.
    streams: HashMap<u32, u32>,
}

#[derive(Debug, Default)]
struct Table {
    next_upstream: u32,
    next_client: ClientId,
    routes: HashMap<u32, Route>,
    clients: HashMap<ClientId, ClientEntry>,
    /// Set when the upstream connection ended; no client is accepted after it.
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    table: Mutex<Table>,
    upstream: mpsc::Sender<(u32, Message)>,
    welcome: Welcome,
}

impl Shared {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running multiplexer. Dropping it does not stop it; it ends with the upstream connection.
#[derive(Debug, Clone)]
pub struct Mux {
    shared: Arc<Shared>,
    ended: watch::Receiver<bool>,
}

impl Mux {
    /// Serves clients accepted on `listener` over the agent session on `upstream`, which
    /// [`handshake`] opened with `welcome`.
    pub fn start<S>(upstream: S, welcome: Welcome, listener: UnixListener) -> Mux
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (up_tx, up_rx) = mpsc::channel(UPSTREAM_QUEUE_FRAMES);
        let shared = Arc::new(Shared {
            table: Mutex::new(Table { next_upstream: 1, ..Table::default() }),
            upstream: up_tx,
            welcome,
        });
        let (ended_tx, ended) = watch::channel(false);
        let (rd, wr) = tokio::io::split(upstream);
        tokio::spawn(write_upstream(wr, up_rx));
        tokio::spawn(read_upstream(rd, shared.clone(), ended_tx));
        tokio::spawn(accept(listener, shared.clone(), ended.clone()));
        Mux { shared, ended }
    }

    /// Asks the guest to power off (`guest.poweroff` on the control stream).
    pub async fn poweroff(&self) -> bool {
        self.shared.upstream.send((CONTROL_STREAM, Message::GuestPoweroff)).await.is_ok()
    }

    /// Resolves once the upstream connection has ended.
    pub async fn ended(&self) {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
    }

    /// How many clients are connected.
    pub fn clients(&self) -> usize {
        self.shared.table().clients.len()
    }

    /// How many execs are running, over all clients.
    pub fn execs(&self) -> usize {
        self.shared.table().routes.len()
    }
}

async fn write_upstream<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<(u32, Message)>) {
    while let Some((stream, msg)) = rx.recv().await {
        if let Err(e) = write_frame(&mut wr, stream, &msg).await {
            tracing::debug!("agent connection write failed: {e}");
            break;
        }
    }
}

async fn read_upstream<R: AsyncRead + Unpin>(mut rd: R, shared: Arc<Shared>, ended: watch::Sender<bool>) {
    loop {
        let (stream, msg) = match read_frame(&mut rd).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("agent connection read failed: {e}");
                break;
            }
        };
        if stream == CONTROL_STREAM {
            tracing::debug!(msg = msg.name(), "agent control message");
            continue;
        }
        let (target, ended) = {
            let mut table = shared.table();
            let Some(route) = table.routes.get_mut(&stream) else {
                continue;
            };
            let ends = match &msg {
                Message::ExecExited(_) => true,
                Message::Error(_) => !route.started,
                Message::ExecStarted { .. } => {
                    route.started = true;
                    false
                }
                _ => false,
            };
            let route = *route;
            (table.clients.get(&route.client).map(|c| (c.tx.clone(), route.stream)), ends.then_some(route))
        };
        if let Some((tx, client_stream)) = target {
            let _ = tx.send((client_stream, msg)).await;
        }
        // The route goes only once the last message is queued for the client: a client frame for
        // the stream that comes later (a stdin close racing the exit) is then answered with
        // "unknown stream" behind the exit, never ahead of it. One that comes meanwhile still
        // goes to the agent, and its answer is dropped above, the route being gone by then.
        if let Some(route) = ended {
            let mut table = shared.table();
            table.routes.remove(&stream);
            if let Some(client) = table.clients.get_mut(&route.client) {
                client.streams.remove(&route.stream);
            }
        }
    }
    let mut table = shared.table();
    table.closed = true;
    table.clients.clear();
    table.routes.clear();
    drop(table);
    let _ = ended.send(true);
}

async fn accept(listener: UnixListener, shared: Arc<Shared>, mut ended: watch::Receiver<bool>) {
    loop {
        let conn = tokio::select! {
            conn = listener.accept() => conn,
            _ = ended.wait_for(|e| *e) => return,
        };
        match conn {
            Ok((stream, _)) => {
                tokio::spawn(serve_client(stream, shared.clone(), ended.clone()));
            }
            Err(e) => {
                tracing::warn!("agent socket accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_client(stream: UnixStream, shared: Arc<Shared>, mut ended: watch::Receiver<bool>) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<(u32, Message)>(CLIENT_QUEUE_FRAMES);
    let writer = tokio::spawn(async move {
        while let Some((stream, msg)) = rx.recv().await {
            if write_frame(&mut wr, stream, &msg).await.is_err() {
                break;
            }
        }
    });
    // The session opens with hello, answered with the upstream session's welcome.
    let reply = match read_frame(&mut rd).await {
        Ok(Some((_, Message::Hello(hello)))) => (CONTROL_STREAM, greet(&hello, &shared.welcome)),
        Ok(Some((stream, other))) => {
            let msg = format!("expected hello, got {}", other.name());
            (stream, Message::error(ErrorCode::BadRequest, msg))
        }
        _ => return,
    };
    let id = match reply {
        (_, welcome @ Message::Welcome(_)) => {
            let registered = {
                let mut table = shared.table();
                let id = table.next_client;
                table.next_client += 1;
                let open = !table.closed;
                if open {
                    table.clients.insert(id, ClientEntry { tx: tx.clone(), streams: HashMap::new() });
                }
                open.then_some(id)
            };
            let Some(id) = registered else {
                return;
            };
            let _ = tx.send((CONTROL_STREAM, welcome)).await;
            id
        }
        (stream, error) => {
            let _ = tx.send((stream, error)).await;
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut rd) => frame,
            // The agent connection is gone: close this client too.
            _ = ended.wait_for(|e| *e) => break,
        };
        let Ok(Some((stream, msg))) = frame else {
            break;
        };
        if let Some((stream, reply)) = forward(&shared, id, stream, msg).await {
            let _ = tx.send((stream, reply)).await;
        }
    }
    // Gone: kill what it left running, as the agent would for its own connection.
    let orphans: Vec<u32> = {
        let mut table = shared.table();
        table.clients.remove(&id).map(|c| c.streams.into_values().collect()).unwrap_or_default()
    };
    for upstream in orphans {
        let _ = shared.upstream.send((upstream, Message::ExecSignal { signal: SIGKILL })).await;
    }
    drop(tx);
    let _ = writer.await;
}

/// The answer to a client's `hello`: the upstream session's `welcome` when the client speaks its
/// version.
fn greet(hello: &Hello, welcome: &Welcome) -> Message {
    if (hello.min_version..=hello.max_version).contains(&welcome.version) {
        Message::Welcome(welcome.clone())
    } else {
        let msg = format!(
            "the sandbox's agent speaks protocol version {}, this client {}..={}",
            welcome.version, hello.min_version, hello.max_version
        );
        Message::error(ErrorCode::UnsupportedVersion, msg)
    }
}

/// Sends one client frame on, or returns the reply the multiplexer gives itself.
async fn forward(shared: &Shared, client: ClientId, stream: u32, msg: Message) -> Option<(u32, Message)> {
    if stream == CONTROL_STREAM {
        let reply = match msg {
            Message::GuestPoweroff => Message::error(
                ErrorCode::BadRequest,
                "guest.poweroff is not accepted on a shared agent socket: stop the sandbox instead",
            ),
            other => Message::error(ErrorCode::BadRequest, format!("{} is not valid on stream 0", other.name())),
        };
        return Some((stream, reply));
    }
    let upstream = {
        let mut table = shared.table();
        let is_start = matches!(msg, Message::ExecStart(_));
        let existing = table.clients.get(&client).and_then(|c| c.streams.get(&stream).copied());
        match (is_start, existing) {
            (true, Some(_)) => {
                let reply = Message::error(ErrorCode::BadRequest, format!("stream {stream} is already in use"));
                return Some((stream, reply));
            }
            (true, None) => {
                let upstream = table.next_upstream;
                table.next_upstream = table.next_upstream.wrapping_add(1).max(1);
                table.routes.insert(upstream, Route { client, stream, started: false });
                if let Some(c) = table.clients.get_mut(&client) {
                    c.streams.insert(stream, upstream);
                }
                upstream
            }
            (false, Some(upstream)) => upstream,
            (false, None) => {
                let reply = Message::error(ErrorCode::UnknownStream, format!("no exec is running on stream {stream}"));
                return Some((stream, reply));
            }
        }
    };
    if shared.upstream.send((upstream, msg)).await.is_err() {
        return Some((stream, Message::error(ErrorCode::Internal, "the sandbox's agent connection is closed")));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn welcome(version: u16) -> Welcome {
        Welcome { version, agent_version: "test".into(), kernel_release: "6.1".into() }
    }

    #[test]
    fn test_greet_answers_with_the_upstream_welcome_when_versions_overlap() {
        let hello = Hello { min_version: 1, max_version: 2, client: "c".into() };
        assert_eq!(greet(&hello, &welcome(1)), Message::Welcome(welcome(1)));
        let old = Hello { min_version: 1, max_version: 1, client: "c".into() };
        let err = greet(&old, &welcome(2));
        assert!(
            matches!(err, Message::Error(e) if e.code == ErrorCode::UnsupportedVersion && e.message.contains("version 2"))
        );
    }
}

#[cfg(test)]
mod fake_agent_tests {
    use std::sync::Mutex as StdMutex;

    use nestbox_agent_client::{AgentClient, ExecRequest};
    use nestbox_agent_protocol::Exited;
    use serde_bytes::ByteBuf;

    use super::*;

    /// A stand-in agent: `echo WORDS` prints its words and exits 0; `sleep` runs until signalled.
    async fn fake_agent(stream: tokio::io::DuplexStream, signals: Arc<StdMutex<Vec<(u32, i32)>>>) {
        let (mut rd, mut wr) = tokio::io::split(stream);
        while let Ok(Some((stream, msg))) = read_frame(&mut rd).await {
            let replies = match msg {
                Message::Hello(_) => vec![Message::Welcome(Welcome {
                    version: PROTOCOL_VERSION,
                    agent_version: "fake".into(),
                    kernel_release: "6.1".into(),
                })],
                Message::ExecStart(start) if start.argv[0] == "echo" => vec![
                    Message::ExecStarted { pid: stream },
                    Message::ExecStdout { data: ByteBuf::from(start.argv[1..].join(" ").into_bytes()) },
                    Message::ExecExited(Exited { code: Some(0), signal: None, timed_out: false }),
                ],
                Message::ExecStart(_) => vec![Message::ExecStarted { pid: stream }],
                Message::ExecSignal { signal } => {
                    signals.lock().unwrap().push((stream, signal));
                    vec![Message::ExecExited(Exited { code: None, signal: Some(signal), timed_out: false })]
                }
                _ => vec![],
            };
            for reply in replies {
                write_frame(&mut wr, stream, &reply).await.unwrap();
            }
        }
    }

    async fn setup() -> (tempfile::TempDir, std::path::PathBuf, Mux, Arc<StdMutex<Vec<(u32, i32)>>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let (mut host, guest) = tokio::io::duplex(1 << 16);
        let signals = Arc::new(StdMutex::new(Vec::new()));
        tokio::spawn(fake_agent(guest, signals.clone()));
        let welcome = handshake(&mut host).await.unwrap();
        let mux = Mux::start(host, welcome, UnixListener::bind(&path).unwrap());
        (dir, path, mux, signals)
    }

    async fn client(path: &std::path::Path) -> AgentClient {
        AgentClient::connect(UnixStream::connect(path).await.unwrap()).await.unwrap().0
    }

    #[tokio::test]
    async fn test_clients_share_one_agent_session_with_their_own_streams() {
        let (_dir, path, mux, _) = setup().await;
        let (a, b) = (client(&path).await, client(&path).await);
        // Both clients number their first exec stream 1; the replies must not cross.
        let (out_a, out_b) = tokio::join!(
            async { a.exec(ExecRequest::new(["echo", "from", "a"])).await.unwrap().output().await.unwrap() },
            async { b.exec(ExecRequest::new(["echo", "from", "b"])).await.unwrap().output().await.unwrap() },
        );
        assert_eq!(out_a.stdout, b"from a");
        assert_eq!(out_b.stdout, b"from b");
        assert_eq!(mux.clients(), 2);
        assert_eq!(mux.execs(), 0, "finished execs leave no route behind");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn test_a_late_stdin_close_never_overtakes_the_exit() {
        let (_dir, path, _mux, _) = setup().await;
        // Each exec ends at once; the stdin close sent right after it may reach the multiplexer
        // after the route is gone, and the error it earns must not reach the client before the
        // exit (the client would take the stream as failed and drop the exit).
        let mut clients = Vec::new();
        for c in 0..8 {
            let a = client(&path).await;
            clients.push(tokio::spawn(async move {
                for n in 0..300 {
                    let exec = a.exec(ExecRequest::new(["echo", "x"]).stdin(true)).await.unwrap();
                    let _ = exec.stdin().close().await;
                    let out = exec.output().await.unwrap_or_else(|e| panic!("client {c}, exec {n}: {e}"));
                    assert_eq!(out.stdout, b"x");
                }
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
    }

    #[tokio::test]
    async fn test_poweroff_from_a_client_is_refused() {
        let (_dir, path, _mux, _) = setup().await;
        let mut raw = UnixStream::connect(&path).await.unwrap();
        let hello = Hello { min_version: 1, max_version: PROTOCOL_VERSION, client: "t".into() };
        write_frame(&mut raw, 0, &Message::Hello(hello)).await.unwrap();
        assert!(matches!(read_frame(&mut raw).await.unwrap(), Some((0, Message::Welcome(_)))));
        write_frame(&mut raw, 0, &Message::GuestPoweroff).await.unwrap();
        let reply = read_frame(&mut raw).await.unwrap();
        assert!(
            matches!(&reply, Some((0, Message::Error(e))) if e.code == ErrorCode::BadRequest && e.message.contains("stop the sandbox")),
            "{reply:?}"
        );
        // A signal for a stream that runs nothing is answered here, not sent on.
        write_frame(&mut raw, 9, &Message::ExecSignal { signal: 15 }).await.unwrap();
        let reply = read_frame(&mut raw).await.unwrap();
        assert!(matches!(&reply, Some((9, Message::Error(e))) if e.code == ErrorCode::UnknownStream), "{reply:?}");
    }

    #[tokio::test]
    async fn test_a_departed_clients_execs_are_killed() {
        let (_dir, path, mux, signals) = setup().await;
        let a = client(&path).await;
        let exec = a.exec(ExecRequest::new(["sleep", "100"])).await.unwrap();
        let upstream = exec.stream_id();
        while mux.execs() == 0 {
            tokio::task::yield_now().await;
        }
        drop(exec);
        drop(a);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while signals.lock().unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "no kill reached the agent");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(signals.lock().unwrap()[0].1, SIGKILL);
        assert_eq!(upstream, 1, "the client numbered its stream 1");
    }

    #[tokio::test]
    async fn test_clients_are_closed_when_the_agent_connection_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let (mut host, guest) = tokio::io::duplex(1 << 16);
        let agent = tokio::spawn(fake_agent(guest, Arc::default()));
        let welcome = handshake(&mut host).await.unwrap();
        let mux = Mux::start(host, welcome, UnixListener::bind(&path).unwrap());
        let a = client(&path).await;
        agent.abort();
        tokio::time::timeout(std::time::Duration::from_secs(5), mux.ended()).await.unwrap();
        let err = a.exec(ExecRequest::new(["echo", "x"])).await;
        let ended = match err {
            Err(_) => true,
            Ok(exec) => exec.output().await.is_err(),
        };
        assert!(ended, "a client of a dead agent connection must see it closed");
    }
}
