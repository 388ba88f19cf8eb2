//! `exec.start`: spawning a process and streaming its life back to the host.
//!
//! Each exec gets its own process group (its pid is the group id, so signals and timeouts
//! reach everything it starts),
//! a thread per output pipe sending chunks of at most `MAX_CHUNK`, an optional
//! stdin writer thread fed through a channel (a full pipe never blocks the
//! reader loop), and a waiter thread. The waiter gets the exit status from the
//! reaper, waits for both pipes to reach EOF (at most [`DRAIN_AFTER_EXIT`] after
//! the exit, for background processes that keep them open), then closes the
//! output gate and sends `exec.exited`, so nothing of the stream follows it.
//!
//! A `tty` exec runs on a fresh pseudo-terminal instead of pipes ([`crate::pty`]): it leads its
//! own session with the terminal as controlling terminal, one pump reads the master (EIO once
//! every slave descriptor is closed is its end of output), the stdin thread types into the
//! master and answers `exec.stdin_close` with the terminal's EOF character, and
//! `exec.resize` sets the master's window size. A `user` exec switches ids between fork and
//! exec ([`crate::user`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nestbox_agent_protocol::{ErrorCode, ExecStart, Exited, MAX_CHUNK, Message, TtySize};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_bytes::ByteBuf;

use crate::pty;
use crate::reaper::ExitInfo;
use crate::session::{CHECK_INTERVAL_MS, Shared};
use crate::user::{self, Identity};

/// `PATH` every exec starts with.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment every exec starts from; request pairs override or extend it.
pub const DEFAULT_ENV: [(&str, &str); 3] = [("PATH", DEFAULT_PATH), ("HOME", "/root"), ("TERM", "linux")];

/// How long output may still arrive after the process was reaped.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(100);

/// Exit code for a command that does not exist (as in shells).
const EXIT_NOT_FOUND: i32 = 127;

/// Exit code for a command that exists but could not be run, or a bad `cwd`.
const EXIT_CANNOT_RUN: i32 = 126;

enum StdinCmd {
    Data(Vec<u8>),
    Close,
}

/// The reader loop's view of a running exec.
#[derive(Debug)]
pub struct ExecEntry {
    pid: i32,
    stdin: Option<Sender<StdinCmd>>,
    /// The pseudo-terminal master of a `tty` exec.
    tty: Option<OwnedFd>,
}

impl std::fmt::Debug for StdinCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StdinCmd::Data(d) => write!(f, "Data({} bytes)", d.len()),
            StdinCmd::Close => f.write_str("Close"),
        }
    }
}

impl ExecEntry {
    /// Sends `signal` to the exec's process group; a gone group is not an error.
    pub fn kill_group(&self, signal: i32) {
        // SAFETY: kill has no memory effects; a negative pid names the process group.
        unsafe { libc::kill(-self.pid, signal) };
    }

    /// Queues bytes for the process's stdin.
    pub fn stdin_data(&self, data: Vec<u8>) -> Result<(), String> {
        match &self.stdin {
            Some(tx) => {
                let _ = tx.send(StdinCmd::Data(data));
                Ok(())
            }
            None => Err("exec was started without stdin".into()),
        }
    }

    /// Closes the process's stdin once queued bytes are written (on a terminal: types EOF).
    pub fn stdin_close(&self) -> Result<(), String> {
        match &self.stdin {
            Some(tx) => {
                let _ = tx.send(StdinCmd::Close);
                Ok(())
            }
            None => Err("exec was started without stdin".into()),
        }
    }

    /// Sets the terminal size of a `tty` exec.
    pub fn resize(&self, size: TtySize) -> Result<(), String> {
        match &self.tty {
            Some(master) => pty::resize(master.as_fd(), size).map_err(|e| format!("resize: {e}")),
            None => Err("exec was started without a tty".into()),
        }
    }
}

/// Serializes output against `exec.exited`: once closed, readers send nothing.
#[derive(Debug)]
struct Gate {
    closed: Mutex<bool>,
}

impl Gate {
    fn send(&self, shared: &Shared, stream: u32, msg: &Message) -> bool {
        let closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
        !*closed && shared.send(stream, msg)
    }

    fn close_and_send(&self, shared: &Shared, stream: u32, msg: &Message) {
        let mut closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
        *closed = true;
        shared.send(stream, msg);
    }
}

/// Handles `exec.start` on `stream`; every outcome ends in `exec.exited` or `error`.
pub fn start(stream: u32, req: ExecStart, shared: &Arc<Shared>) {
    let Some(argv0) = req.argv.first().cloned() else {
        shared.send(stream, &Message::error(ErrorCode::BadRequest, "argv is empty"));
        return;
    };
    if let Some(cwd) = &req.cwd
        && !Path::new(cwd).is_dir()
    {
        let why = match std::fs::metadata(cwd) {
            Ok(_) => "Not a directory".to_string(),
            Err(e) => strip_os_suffix(&e),
        };
        fail(stream, shared, EXIT_CANNOT_RUN, &format!("nestbox-agent: cd: {cwd}: {why}\n"));
        return;
    }
    let identity = match req.user.as_deref().map(user::resolve_in_guest).transpose() {
        Ok(identity) => identity,
        Err(e) => {
            fail(stream, shared, EXIT_CANNOT_RUN, &format!("nestbox-agent: user: {e}\n"));
            return;
        }
    };

    let env = environment(identity.as_ref(), &req.env);
    // Resolved here, against the command's own PATH, so std can start it with posix_spawn
    // (a vfork-style clone) rather than fork: far cheaper in a guest under emulation.
    let path = env.iter().find(|(k, _)| k == "PATH").map_or("", |(_, v)| v.as_str());
    let program = match resolve_program(&argv0, path) {
        Ok(program) => program,
        Err(e) => {
            spawn_failed(stream, shared, &argv0, &e);
            return;
        }
    };
    let mut cmd = Command::new(&program);
    cmd.arg0(&argv0).args(&req.argv[1..]).env_clear().envs(env);
    if let Some(cwd) = &req.cwd {
        cmd.current_dir(cwd);
    }
    let master = match req.tty {
        Some(size) => match attach_pty(&mut cmd, size) {
            Ok(master) => Some(master),
            Err(e) => {
                let msg = format!("cannot open a pseudo-terminal: {e}");
                shared.send(stream, &Message::error(ErrorCode::SpawnFailed, msg));
                return;
            }
        },
        None => {
            cmd.stdin(if req.stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            None
        }
    };
    let switch_ids =
        identity.map(|id| (id.groups.into_iter().map(nix::unistd::Gid::from_raw).collect(), id.gid, id.uid));
    set_pre_exec(&mut cmd, master.is_some(), switch_ids);

    let spawned = shared.reaper.spawn(&mut cmd);
    // The command holds the terminal's slave descriptors: close them now, so that the master
    // reports the end of output (EIO) once the process and its children let go of theirs.
    drop(cmd);
    let (mut child, status_rx) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            spawn_failed(stream, shared, &argv0, &e);
            return;
        }
    };
    let pid = child.id() as i32;
    // Each is optional: without a thread the exec still runs, only unfed or unread.
    let stdin_tx = match &master {
        Some(m) if req.stdin => m.try_clone().ok().and_then(|m| start_tty_stdin(File::from(m)).ok()),
        Some(_) => None,
        None => child.stdin.take().and_then(|stdin| start_stdin(stdin).ok()),
    };
    let output = master.as_ref().and_then(|m| m.try_clone().ok());
    shared.execs().insert(stream, ExecEntry { pid, stdin: stdin_tx, tty: master });
    shared.send(stream, &Message::ExecStarted { pid: pid as u32 });

    let gate = Arc::new(Gate { closed: Mutex::new(false) });
    let (done_tx, done_rx) = mpsc::channel();
    let mut pumps = 0;
    if let Some(out) = output {
        pumps += spawn_pump(File::from(out), stream, false, &gate, shared, &done_tx);
    }
    if let Some(out) = child.stdout.take() {
        pumps += spawn_pump(out, stream, false, &gate, shared, &done_tx);
    }
    if let Some(err) = child.stderr.take() {
        pumps += spawn_pump(err, stream, true, &gate, shared, &done_tx);
    }
    drop(done_tx);
    let timeout = req.timeout_ms.map(Duration::from_millis);
    let waiter_shared = Arc::clone(shared);
    let waiter = std::thread::Builder::new()
        .name("exec-wait".into())
        .stack_size(crate::THREAD_STACK)
        .spawn(move || wait_and_report(stream, pid, timeout, status_rx, done_rx, pumps, &gate, &waiter_shared));
    if let Err(e) = waiter {
        // Without a waiter nobody would report this exec: stop it and say so.
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        shared.execs().remove(&stream);
        shared.send(stream, &Message::error(ErrorCode::Internal, format!("no waiter thread: {e}")));
    }
}

/// Opens a pseudo-terminal of `size` as the command's stdin, stdout and stderr; returns the master.
fn attach_pty(cmd: &mut Command, size: TtySize) -> io::Result<OwnedFd> {
    let pty = pty::open(size)?;
    cmd.stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave));
    Ok(pty.master)
}

/// Supplementary groups, gid and uid to switch to.
type SwitchIds = (Vec<nix::unistd::Gid>, u32, u32);

/// What runs in the child between fork and exec, when anything must: a `tty` exec becomes a
/// session leader with its stdin (the terminal) as controlling terminal, which also makes it
/// its own process group; a `user` exec drops to its ids.
fn set_pre_exec(cmd: &mut Command, tty: bool, ids: Option<SwitchIds>) {
    if !tty && ids.is_none() {
        // Nothing to do in the child: std may use posix_spawn, far cheaper under emulation.
        return;
    }
    let hook = move || {
        if tty {
            pty::become_session_leader(libc::STDIN_FILENO)?;
        }
        if let Some((groups, gid, uid)) = &ids {
            user::switch_to(groups, *gid, *uid)?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child and makes only async-signal-safe system calls
    // (setsid, ioctl, setgroups, setgid, setuid) on data allocated before the fork.
    unsafe { cmd.pre_exec(hook) };
}

/// The default environment, then `HOME` and `USER` of the exec's user when `/etc/passwd` lists
/// it, then the request's pairs in order.
fn environment(identity: Option<&Identity>, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        DEFAULT_ENV.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
    let from_passwd = identity.into_iter().flat_map(|id| {
        let home = id.home.clone().map(|h| ("HOME".to_string(), h));
        let user = id.name.clone().map(|n| ("USER".to_string(), n));
        home.into_iter().chain(user)
    });
    for (k, v) in from_passwd.collect::<Vec<_>>().iter().chain(extra) {
        match env.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env
}

/// Finds `argv0` the way a shell does: as given when it has a `/`, else in the first `PATH`
/// directory holding an executable file of that name. `ENOENT` when there is none, `EACCES`
/// when only non-executable files of that name exist.
fn resolve_program(argv0: &str, path: &str) -> io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if argv0.contains('/') {
        return Ok(argv0.into());
    }
    let mut denied = false;
    for dir in path.split(':') {
        let candidate = Path::new(if dir.is_empty() { "." } else { dir }).join(argv0);
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => return Ok(candidate),
            Ok(meta) if meta.is_file() => denied = true,
            _ => {}
        }
    }
    Err(io::Error::from_raw_os_error(if denied { libc::EACCES } else { libc::ENOENT }))
}

fn spawn_failed(stream: u32, shared: &Shared, argv0: &str, err: &io::Error) {
    let errno = err.raw_os_error().unwrap_or(0);
    match errno {
        libc::ENOENT if argv0.contains('/') => {
            fail(stream, shared, EXIT_NOT_FOUND, &format!("nestbox-agent: {argv0}: No such file or directory\n"))
        }
        libc::ENOENT => fail(stream, shared, EXIT_NOT_FOUND, &format!("nestbox-agent: {argv0}: command not found\n")),
        // Resource exhaustion in the agent, not a property of the command.
        libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE => {
            shared.send(stream, &Message::error(ErrorCode::SpawnFailed, format!("cannot start {argv0}: {err}")));
        }
        _ => fail(stream, shared, EXIT_CANNOT_RUN, &format!("nestbox-agent: {argv0}: {}\n", strip_os_suffix(err))),
    }
}

/// "Permission denied (os error 13)" → "Permission denied".
fn strip_os_suffix(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn fail(stream: u32, shared: &Shared, code: i32, stderr: &str) {
    shared.send(stream, &Message::ExecStderr { data: ByteBuf::from(stderr.as_bytes().to_vec()) });
    shared.send(stream, &Message::ExecExited(Exited { code: Some(code), signal: None, timed_out: false }));
}

fn start_stdin(mut stdin: ChildStdin) -> io::Result<Sender<StdinCmd>> {
    let (tx, rx) = mpsc::channel::<StdinCmd>();
    std::thread::Builder::new().name("exec-stdin".into()).stack_size(crate::THREAD_STACK).spawn(move || {
        let mut broken = false;
        while let Ok(cmd) = rx.recv() {
            match cmd {
                // After EPIPE the bytes have nowhere to go; keep draining the channel.
                StdinCmd::Data(data) if !broken => broken = stdin.write_all(&data).is_err(),
                StdinCmd::Data(_) => {}
                StdinCmd::Close => return,
            }
        }
    })?;
    Ok(tx)
}

/// Starts the thread typing into a terminal's master: bytes as they come, and for
/// `exec.stdin_close` the terminal's end-of-file character (the master stays open: closing it
/// would hang up the terminal).
fn start_tty_stdin(mut master: File) -> io::Result<Sender<StdinCmd>> {
    let (tx, rx) = mpsc::channel::<StdinCmd>();
    std::thread::Builder::new().name("exec-tty-in".into()).stack_size(crate::THREAD_STACK).spawn(move || {
        // Whether the last byte typed left a line unfinished: EOF then needs a second ^D.
        let mut mid_line = false;
        while let Ok(cmd) = rx.recv() {
            let bytes = match cmd {
                StdinCmd::Data(data) => {
                    if let Some(last) = data.last() {
                        mid_line = !matches!(last, b'\n' | b'\r');
                    }
                    data
                }
                StdinCmd::Close => {
                    let eof = pty::eof_bytes(master.as_fd(), mid_line);
                    mid_line = false;
                    eof
                }
            };
            // EIO: the terminal is gone; keep draining the channel.
            let _ = master.write_all(&bytes);
        }
    })?;
    Ok(tx)
}

/// Starts a pipe reader; returns how many done signals to expect (0 or 1).
fn spawn_pump<R: Read + AsFd + Send + 'static>(
    pipe: R,
    stream: u32,
    is_stderr: bool,
    gate: &Arc<Gate>,
    shared: &Arc<Shared>,
    done: &Sender<()>,
) -> usize {
    let gate = Arc::clone(gate);
    let shared = Arc::clone(shared);
    let done = done.clone();
    let spawned =
        std::thread::Builder::new().name("exec-out".into()).stack_size(crate::THREAD_STACK).spawn(move || {
            pump(pipe, stream, is_stderr, &gate, &shared);
            let _ = done.send(());
        });
    usize::from(spawned.is_ok())
}

fn pump(mut pipe: impl Read + AsFd, stream: u32, is_stderr: bool, gate: &Gate, shared: &Shared) {
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(CHECK_INTERVAL_MS));
        if *gate.closed.lock().unwrap_or_else(PoisonError::into_inner) || shared.ended() {
            return;
        }
        match ready {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        let n = match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let data = ByteBuf::from(buf[..n].to_vec());
        let msg = if is_stderr { Message::ExecStderr { data } } else { Message::ExecStdout { data } };
        if !gate.send(shared, stream, &msg) {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn wait_and_report(
    stream: u32,
    pid: i32,
    timeout: Option<Duration>,
    status_rx: Receiver<ExitInfo>,
    done_rx: Receiver<()>,
    pumps: usize,
    gate: &Gate,
    shared: &Shared,
) {
    let mut timed_out = false;
    let info = match timeout {
        Some(limit) => match status_rx.recv_timeout(limit) {
            Ok(info) => Some(info),
            Err(RecvTimeoutError::Timeout) => {
                timed_out = true;
                // SAFETY: kill has no memory effects; negative pid = process group.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                status_rx.recv().ok()
            }
            Err(RecvTimeoutError::Disconnected) => None,
        },
        None => status_rx.recv().ok(),
    };
    let info = info.unwrap_or(ExitInfo { code: None, signal: None });
    let deadline = Instant::now() + DRAIN_AFTER_EXIT;
    for _ in 0..pumps {
        let left = deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    shared.execs().remove(&stream);
    gate.close_and_send(
        shared,
        stream,
        &Message::ExecExited(Exited { code: info.code, signal: info.signal, timed_out }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_environment_overrides_and_extends_defaults() {
        let env = environment(
            None,
            &[("HOME".into(), "/home/x".into()), ("FOO".into(), "1".into()), ("FOO".into(), "2".into())],
        );
        assert_eq!(
            env,
            vec![
                ("PATH".to_string(), DEFAULT_PATH.to_string()),
                ("HOME".into(), "/home/x".into()),
                ("TERM".into(), "linux".into()),
                ("FOO".into(), "2".into()),
            ]
        );
    }

    #[test]
    fn test_environment_takes_home_and_user_from_passwd_before_request() {
        let id = Identity { uid: 7, gid: 7, groups: vec![7], name: Some("sam".into()), home: Some("/home/sam".into()) };
        let env = environment(Some(&id), &[("USER".into(), "override".into())]);
        let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!((get("HOME"), get("USER"), get("TERM")), (Some("/home/sam"), Some("override"), Some("linux")));
        let unlisted = Identity { uid: 9, gid: 9, groups: vec![9], name: None, home: None };
        let env = environment(Some(&unlisted), &[]);
        assert_eq!(env.len(), DEFAULT_ENV.len(), "no passwd entry: the defaults stay");
    }

    #[test]
    fn test_resolve_program_searches_path_like_a_shell() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("tool"), "").unwrap();
        std::fs::write(b.join("tool"), "").unwrap();
        std::fs::set_permissions(b.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", a.display(), b.display());
        assert_eq!(resolve_program("tool", &path).unwrap(), b.join("tool"), "skips the non-executable");
        assert_eq!(resolve_program("/x/y", "").unwrap(), Path::new("/x/y"));
        assert_eq!(resolve_program("missing", &path).unwrap_err().raw_os_error(), Some(libc::ENOENT));
        let only_a = a.display().to_string();
        assert_eq!(resolve_program("tool", &only_a).unwrap_err().raw_os_error(), Some(libc::EACCES));
    }

    #[test]
    fn test_strip_os_suffix() {
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(strip_os_suffix(&e), "Permission denied");
    }
}
