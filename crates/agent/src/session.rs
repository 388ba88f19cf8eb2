//! One protocol session over a byte stream: the reader loop and the writer thread.
//!
//! The reader loop (the calling thread) decodes frames and dispatches them; a
//! single writer thread owns the write side and drains a bounded channel of
//! encoded frames, so output readers block when the host reads slowly. A session
//! ends on EOF / hang-up, on a write error, on a framing error or on
//! `guest.poweroff`; its execs are killed when it ends.

use std::collections::HashMap;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nestbox_agent_protocol::{
    CONTROL_STREAM, ErrorCode, Hello, MIN_PROTOCOL_VERSION, Message, PROTOCOL_VERSION, ProtocolError, Welcome, decode,
    encode,
};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::exec::{self, ExecEntry};
use crate::reaper::Reaper;

/// Frames queued for the writer before senders block (each at most ~64 KiB).
const WRITE_QUEUE_FRAMES: usize = 64;

/// How often blocked loops wake to check whether the session ended.
pub const CHECK_INTERVAL_MS: u8 = 100;

/// Bytes asked of each `read` on the transport.
const READ_CHUNK: usize = 256 * 1024;

/// Why a session ended.
#[derive(Debug)]
pub enum EndReason {
    /// The host went away (EOF, hang-up or a failed write); wait for the next one.
    Disconnected,
    /// The host asked for `guest.poweroff`.
    Poweroff,
    /// The transport broke in a way a reconnect will not fix.
    Fatal(io::Error),
}

/// State shared by the reader loop, the writer and the exec threads.
#[derive(Debug)]
pub struct Shared {
    tx: SyncSender<Vec<u8>>,
    ended: AtomicBool,
    execs: Mutex<HashMap<u32, ExecEntry>>,
    pub reaper: Arc<Reaper>,
}

impl Shared {
    /// Whether the session is over (nothing more will be written).
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Queues `msg` on `stream`; false when the session is over.
    pub fn send(&self, stream: u32, msg: &Message) -> bool {
        if self.ended() {
            return false;
        }
        let mut frame = Vec::new();
        encode(stream, msg, &mut frame);
        self.tx.send(frame).is_ok()
    }

    /// The table of running execs, by stream.
    pub fn execs(&self) -> MutexGuard<'_, HashMap<u32, ExecEntry>> {
        self.execs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the reader loop does after a message.
enum Step {
    Continue,
    End(EndReason),
}

/// Serves one session: `input` is read, `output` is written (they may be the same fd).
pub fn serve(input: BorrowedFd<'_>, output: BorrowedFd<'_>, reaper: Arc<Reaper>) -> EndReason {
    let (tx, rx) = mpsc::sync_channel(WRITE_QUEUE_FRAMES);
    let shared = Arc::new(Shared { tx, ended: AtomicBool::new(false), execs: Mutex::new(HashMap::new()), reaper });
    let reason = std::thread::scope(|scope| {
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("writer".into())
            .stack_size(crate::THREAD_STACK)
            .spawn_scoped(scope, move || write_loop(output, rx, &writer_shared));
        let reason = match writer {
            Ok(_) => read_loop(input, &shared),
            Err(e) => EndReason::Fatal(e),
        };
        shared.ended.store(true, Ordering::Relaxed);
        reason
    });
    for entry in shared.execs().values() {
        entry.kill_group(libc::SIGKILL);
    }
    shared.execs().clear();
    reason
}

fn write_loop(fd: BorrowedFd<'_>, rx: Receiver<Vec<u8>>, shared: &Shared) {
    let interval = Duration::from_millis(CHECK_INTERVAL_MS.into());
    loop {
        match rx.recv_timeout(interval) {
            Ok(frame) => {
                if !write_all(fd, &frame, shared) {
                    shared.ended.store(true, Ordering::Relaxed);
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) if !shared.ended() => {}
            Err(_) => return,
        }
    }
}

/// Writes all of `buf`, waking every interval to notice a session that ended
/// (a virtio-serial port blocks writes while no host is connected).
fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8], shared: &Shared) -> bool {
    while !buf.is_empty() {
        if shared.ended() {
            return false;
        }
        let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
        match poll(&mut fds, PollTimeout::from(CHECK_INTERVAL_MS)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return false,
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL) {
            return false;
        }
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

fn read_loop(fd: BorrowedFd<'_>, shared: &Arc<Shared>) -> EndReason {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    // The negotiated protocol version, once `hello` succeeded.
    let mut version = None;
    loop {
        if shared.ended() {
            return EndReason::Disconnected;
        }
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(CHECK_INTERVAL_MS)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return EndReason::Fatal(e.into()),
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.contains(PollFlags::POLLNVAL) {
            return EndReason::Fatal(io::Error::from_raw_os_error(libc::EBADF));
        }
        if !revents.intersects(PollFlags::POLLIN) {
            // POLLHUP/POLLERR without data: the host is gone.
            return EndReason::Disconnected;
        }
        let n = match nix::unistd::read(fd, &mut chunk) {
            Ok(0) => return EndReason::Disconnected,
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(Errno::EIO | Errno::ECONNRESET | Errno::EPIPE | Errno::ENODEV) => {
                return EndReason::Disconnected;
            }
            Err(e) => return EndReason::Fatal(e.into()),
        };
        pending.extend_from_slice(&chunk[..n]);
        let mut off = 0;
        let step = loop {
            match decode(&pending[off..]) {
                Ok(Some((stream, msg, used))) => {
                    off += used;
                    if let Step::End(reason) = handle(stream, msg, &mut version, shared) {
                        break Step::End(reason);
                    }
                }
                Ok(None) => break Step::Continue,
                Err(ProtocolError::BadBody { stream, consumed, .. }) => {
                    off += consumed;
                    shared.send(stream, &Message::error(ErrorCode::BadRequest, "undecodable message"));
                }
                Err(e) => {
                    // A bad length prefix: framing is lost for good.
                    shared.send(CONTROL_STREAM, &Message::error(ErrorCode::BadRequest, e.to_string()));
                    break Step::End(EndReason::Disconnected);
                }
            }
        };
        pending.drain(..off);
        if let Step::End(reason) = step {
            return reason;
        }
    }
}

fn handle(stream: u32, msg: Message, version: &mut Option<u16>, shared: &Arc<Shared>) -> Step {
    let refuse = |code: ErrorCode, text: String| {
        shared.send(stream, &Message::error(code, text));
        Step::Continue
    };
    match msg {
        Message::Hello(hello) if stream == CONTROL_STREAM && version.is_none() => {
            match welcome(&hello) {
                Ok(w) => {
                    *version = Some(w.version);
                    crate::log::trace("hello");
                    shared.send(CONTROL_STREAM, &Message::Welcome(w));
                }
                Err(text) => {
                    shared.send(CONTROL_STREAM, &Message::error(ErrorCode::UnsupportedVersion, text));
                }
            }
            Step::Continue
        }
        _ if version.is_none() => refuse(ErrorCode::BadRequest, "expected hello first".into()),
        ref m if version.is_some_and(|v| m.min_version() > v) => refuse(
            ErrorCode::BadRequest,
            format!(
                "{} needs protocol version {}, the session speaks {}",
                m.name(),
                m.min_version(),
                version.unwrap_or(0)
            ),
        ),
        Message::GuestPoweroff if stream == CONTROL_STREAM => Step::End(EndReason::Poweroff),
        Message::ExecStart(req) if stream != CONTROL_STREAM => {
            if shared.execs().contains_key(&stream) {
                return refuse(ErrorCode::BadRequest, format!("stream {stream} already runs an exec"));
            }
            exec::start(stream, req, shared);
            Step::Continue
        }
        Message::ExecStdin { data } if stream != CONTROL_STREAM => {
            with_exec(stream, shared, |e| e.stdin_data(data.into_vec()))
        }
        Message::ExecStdinClose if stream != CONTROL_STREAM => with_exec(stream, shared, ExecEntry::stdin_close),
        Message::ExecResize(size) if stream != CONTROL_STREAM => with_exec(stream, shared, |e| e.resize(size)),
        Message::ExecSignal { signal } if stream != CONTROL_STREAM => {
            if !(1..=libc::SIGRTMAX()).contains(&signal) {
                return refuse(ErrorCode::BadRequest, format!("bad signal {signal}"));
            }
            with_exec(stream, shared, |e| {
                e.kill_group(signal);
                Ok(())
            })
        }
        other => refuse(ErrorCode::BadRequest, format!("{} not allowed on stream {stream}", other.name())),
    }
}

fn with_exec(stream: u32, shared: &Shared, f: impl FnOnce(&ExecEntry) -> Result<(), String>) -> Step {
    let result = match shared.execs().get(&stream) {
        Some(entry) => f(entry).map_err(|m| (ErrorCode::BadRequest, m)),
        None => Err((ErrorCode::UnknownStream, format!("no running exec on stream {stream}"))),
    };
    if let Err((code, text)) = result {
        shared.send(stream, &Message::error(code, text));
    }
    Step::Continue
}

/// Answers `hello` with the highest version both sides speak.
fn welcome(hello: &Hello) -> Result<Welcome, String> {
    let version = hello.max_version.min(PROTOCOL_VERSION);
    if version < MIN_PROTOCOL_VERSION || version < hello.min_version {
        return Err(format!(
            "agent speaks versions {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}, host asked for {}..={}",
            hello.min_version, hello.max_version
        ));
    }
    Ok(Welcome { version, agent_version: env!("CARGO_PKG_VERSION").into(), kernel_release: kernel_release() })
}

fn kernel_release() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(min: u16, max: u16) -> Hello {
        Hello { min_version: min, max_version: max, client: "t".into() }
    }

    #[test]
    fn test_welcome_negotiates_overlap() {
        assert_eq!(welcome(&hello(1, 5)).unwrap().version, PROTOCOL_VERSION);
        assert_eq!(welcome(&hello(1, 1)).unwrap().version, 1, "a v1 host still gets a session");
        assert_eq!(welcome(&hello(0, 2)).unwrap().version, 2);
        assert!(welcome(&hello(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 3)).is_err());
        assert!(welcome(&hello(0, 0)).is_err());
        assert!(welcome(&hello(2, 1)).is_err(), "an empty range overlaps nothing");
    }
}
