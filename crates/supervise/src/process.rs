//! A running supervised process: its identity, exit, signals, and output tail.
//!
//! Identity: right after spawning (before anything can reap the child, so the PID is certainly
//! ours) we record the PID, its start time (field 22 of `/proc/<pid>/stat`, in clock ticks since
//! boot) and, where the kernel has it, a pidfd. Before every signal we re-read the start time and
//! refuse if it changed: the PID has been reused by another process. Signals then go through the
//! pidfd, which cannot be reused at all, or to the process group when the child leads its own.
//!
//! Exit: one task owns the `tokio::process::Child`, waits on it (reaping it) and publishes an
//! [`ExitReport`] on a watch channel, so any number of tasks can [`Supervised::wait`], and
//! cancelling a wait loses nothing.
//!
//! Output: see [`crate::log`]; [`Supervised::subscribe`] taps a stream's capture live.
//!
//! Drop: a still-running child is SIGKILLed; the waiter task reaps it.

use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::{broadcast, watch};

use crate::error::{Result, SuperviseError};
use crate::log::{self, DEFAULT_LOG_RING_BYTES, LogRing, SUBSCRIBER_BACKLOG_CHUNKS, SharedLog, Stream};
use crate::socket::{self, SocketWait};
use crate::spawn::CommandSpec;
use crate::stdin::StdinWriter;

/// How long, after the process exits, to wait for its output pipes to reach end of file before
/// reading the tail. Bounded because a grandchild may hold the pipes open.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_millis(200);

/// Lines of stderr carried by [`SuperviseError::ProcessExited`].
const EXIT_STDERR_TAIL_LINES: usize = 20;

/// Root of the proc filesystem.
const PROC_ROOT: &str = "/proc";

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitReport {
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
}

impl ExitReport {
    /// Neither code nor signal: the wait itself failed.
    pub const UNKNOWN: Self = Self { code: None, signal: None };

    /// True for exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl From<ExitStatus> for ExitReport {
    fn from(status: ExitStatus) -> Self {
        Self { code: status.code(), signal: status.signal() }
    }
}

impl fmt::Display for ExitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with {code}"),
            (None, Some(signal)) => match Signal::try_from(signal) {
                Ok(sig) => write!(f, "killed by {}", sig.as_str()),
                Err(_) => write!(f, "killed by signal {signal}"),
            },
            (None, None) => f.write_str("exited with unknown status"),
        }
    }
}

/// One output stream's capture: its ring, its live feed, and whether its pipe reached end of file.
#[derive(Debug)]
struct Capture {
    ring: Arc<Mutex<LogRing>>,
    /// The capture task holds the only strong sender, so subscriptions end with the pipe.
    live: broadcast::WeakSender<Bytes>,
    drained: watch::Receiver<bool>,
}

impl Capture {
    fn start<R>(pipe: Option<R>, stream: Stream, file: Option<SharedLog>) -> Self
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        let ring = Arc::new(Mutex::new(LogRing::new(DEFAULT_LOG_RING_BYTES)));
        let (drained_tx, drained) = watch::channel(false);
        let (live_tx, _) = broadcast::channel(SUBSCRIBER_BACKLOG_CHUNKS);
        let live = live_tx.downgrade();
        match pipe {
            Some(pipe) => {
                tokio::spawn(log::capture(pipe, stream, ring.clone(), live_tx, file, drained_tx));
            }
            None => {
                drained_tx.send_replace(true);
            }
        }
        Self { ring, live, drained }
    }

    fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        match self.live.upgrade() {
            Some(live) => live.subscribe(),
            // The pipe has ended: a receiver that says so at once.
            None => broadcast::channel(1).1,
        }
    }
}

/// What [`Supervised::signal`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignalOutcome {
    Sent,
    /// The process had already exited (or vanished): nothing to signal.
    AlreadyExited,
    /// The PID now belongs to a process with another start time; we did not signal it.
    PidReused,
    /// The kernel refused the signal.
    Failed(Errno),
}

/// A process started by a [`Spawner`](crate::Spawner), supervised until it exits.
#[derive(Debug)]
pub struct Supervised {
    program: PathBuf,
    pid: u32,
    /// Field 22 of `/proc/<pid>/stat` when we started it.
    start_time: u64,
    pidfd: Option<OwnedFd>,
    /// The child leads its own process group; signal the group.
    group: bool,
    proc_root: PathBuf,
    exit: watch::Receiver<Option<ExitReport>>,
    stdout: Capture,
    stderr: Capture,
    stdin: Option<StdinWriter>,
}

impl Supervised {
    /// Takes over a freshly spawned child: records its identity, starts the capture and waiter
    /// tasks. The child must not have been waited on yet.
    pub(crate) fn start(
        mut child: Child,
        spec: &CommandSpec,
        stdin: Option<StdinWriter>,
        stdout_log: Option<SharedLog>,
        stderr_log: Option<SharedLog>,
    ) -> Result<Self> {
        let proc_root = PathBuf::from(PROC_ROOT);
        // A child that has not been waited on cannot have been reaped, so its PID is still ours.
        let Some(pid) = child.id() else {
            return Err(SuperviseError::Spawn {
                program: spec.program.clone(),
                source: std::io::Error::other("child was reaped before supervision started"),
            });
        };
        // On error `child` is dropped here and, with kill_on_drop, killed.
        let start_time = read_start_time(&proc_root, pid).map_err(|source| SuperviseError::Io {
            action: "read start time from",
            path: stat_path(&proc_root, pid),
            source,
        })?;
        let pidfd = pidfd_open(pid);

        let stdout = Capture::start(child.stdout.take(), Stream::Stdout, stdout_log);
        let stderr = Capture::start(child.stderr.take(), Stream::Stderr, stderr_log);

        let (exit_tx, exit) = watch::channel(None);
        let program = spec.program.clone();
        let waiter_program = program.clone();
        tokio::spawn(async move {
            let report = match child.wait().await {
                Ok(status) => ExitReport::from(status),
                Err(err) => {
                    tracing::warn!(program = %waiter_program.display(), pid, error = %err,
                        "waiting for supervised process failed");
                    ExitReport::UNKNOWN
                }
            };
            tracing::debug!(program = %waiter_program.display(), pid, %report, "supervised process ended");
            exit_tx.send_replace(Some(report));
        });

        Ok(Self {
            program,
            pid,
            start_time,
            pidfd,
            group: spec.new_process_group,
            proc_root,
            exit,
            stdout,
            stderr,
            stdin,
        })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The program that was started.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The last `lines` lines the process wrote to `which`, oldest first, from an in-memory ring
    /// of the last [`DEFAULT_LOG_RING_BYTES`] bytes. A line not yet ended by a newline is included.
    pub fn log_tail(&self, which: Stream, lines: usize) -> Vec<String> {
        let capture = match which {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        log::lock_ring(&capture.ring).tail(lines)
    }

    /// A live feed of `which`: every chunk the process writes to it after this call, as read
    /// (at most [`CAPTURE_READ_BYTES`](crate::CAPTURE_READ_BYTES) each, not split at lines).
    /// Earlier output is in [`log_tail`](Self::log_tail) and the log file. The feed ends
    /// ([`RecvError::Closed`](broadcast::error::RecvError::Closed)) when the stream does, at once
    /// if it already has. A receiver more than
    /// [`SUBSCRIBER_BACKLOG_CHUNKS`] chunks behind gets
    /// [`RecvError::Lagged`](broadcast::error::RecvError::Lagged) with the number it lost and goes
    /// on from the oldest kept; it never holds up the process, the log or other subscribers.
    pub fn subscribe(&self, which: Stream) -> broadcast::Receiver<Bytes> {
        match which {
            Stream::Stdout => self.stdout.subscribe(),
            Stream::Stderr => self.stderr.subscribe(),
        }
    }

    /// The writer for the process's stdin, when the spec asked for a pipe or a pseudo-terminal
    /// ([`CommandSpec::stdin_piped`], [`CommandSpec::stdin_pty`]); `None` for `/dev/null`. Every
    /// call returns a clone of the same writer.
    pub fn stdin(&self) -> Option<StdinWriter> {
        self.stdin.clone()
    }

    /// Waits until a Unix socket at `path` accepts a connection.
    ///
    /// Fails with [`SuperviseError::ProcessExited`] (with the stderr tail) as soon as the process
    /// exits, and with [`SuperviseError::SocketTimeout`] once `deadline` has passed.
    pub async fn wait_for_socket(&self, path: &Path, deadline: Duration) -> Result<()> {
        match socket::poll_socket(path, deadline, &self.exit).await? {
            SocketWait::Ready => Ok(()),
            SocketWait::Exited(status) => {
                self.output_drained().await;
                Err(SuperviseError::ProcessExited {
                    status,
                    stderr_tail: self.log_tail(Stream::Stderr, EXIT_STDERR_TAIL_LINES),
                })
            }
            SocketWait::TimedOut(waited) => Err(SuperviseError::SocketTimeout { path: path.to_owned(), waited }),
        }
    }

    /// How the process ended, or `None` while it runs.
    pub fn try_wait(&self) -> Option<ExitReport> {
        *self.exit.borrow()
    }

    /// Waits for the process to end, then (briefly) for its output to be captured, so that
    /// [`log_tail`](Self::log_tail) and the log files are complete. Cancel-safe; any number of
    /// tasks may wait at once.
    pub async fn wait(&self) -> ExitReport {
        let mut exit = self.exit.clone();
        // An error means the waiter task is gone without a report: the runtime is shutting down.
        let report = exit.wait_for(Option::is_some).await.map(|report| *report);
        let report = report.unwrap_or_else(|_| *exit.borrow());
        self.output_drained().await;
        report.unwrap_or(ExitReport::UNKNOWN)
    }

    /// Asks the process to stop with SIGTERM, waits up to `grace`, then SIGKILLs it, and returns
    /// how it ended. Returns at once if it has already ended.
    pub async fn terminate(&self, grace: Duration) -> ExitReport {
        if self.try_wait().is_some() {
            return self.wait().await;
        }
        self.signal(Signal::SIGTERM);
        if let Ok(report) = tokio::time::timeout(grace, self.wait()).await {
            return report;
        }
        tracing::debug!(program = %self.program.display(), pid = self.pid, ?grace,
            "process ignored SIGTERM; killing it");
        self.signal(Signal::SIGKILL);
        self.wait().await
    }

    /// Sends SIGKILL now, unless the process has already ended. Does not wait.
    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    /// Waits, bounded, for both output pipes to reach end of file.
    async fn output_drained(&self) {
        let mut stdout = self.stdout.drained.clone();
        let mut stderr = self.stderr.drained.clone();
        let both = async {
            // An error means the capture task is gone, which is as drained as it gets.
            let _ = stdout.wait_for(|done| *done).await;
            let _ = stderr.wait_for(|done| *done).await;
        };
        let _ = tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, both).await;
    }

    /// Sends `sig` to the process (or its group) if it is still the process we started.
    fn signal(&self, sig: Signal) -> SignalOutcome {
        if self.try_wait().is_some() {
            return SignalOutcome::AlreadyExited;
        }
        match read_start_time(&self.proc_root, self.pid) {
            Ok(start_time) if start_time == self.start_time => {}
            Ok(start_time) => {
                tracing::warn!(program = %self.program.display(), pid = self.pid,
                    expected = self.start_time, found = start_time,
                    "pid was reused by another process; not signalling it");
                return SignalOutcome::PidReused;
            }
            Err(_) => return SignalOutcome::AlreadyExited,
        }
        let sent = if self.group {
            nix::sys::signal::killpg(Pid::from_raw(self.pid_i32()), sig)
        } else if let Some(pidfd) = &self.pidfd {
            pidfd_send_signal(pidfd, sig)
        } else {
            nix::sys::signal::kill(Pid::from_raw(self.pid_i32()), sig)
        };
        match sent {
            Ok(()) => SignalOutcome::Sent,
            Err(Errno::ESRCH) => SignalOutcome::AlreadyExited,
            Err(errno) => {
                tracing::warn!(program = %self.program.display(), pid = self.pid, signal = %sig,
                    error = %errno, "signalling supervised process failed");
                SignalOutcome::Failed(errno)
            }
        }
    }

    fn pid_i32(&self) -> i32 {
        // PIDs are bounded by pid_max (at most 2^22), so they always fit.
        i32::try_from(self.pid).unwrap_or(i32::MAX)
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            tracing::debug!(program = %self.program.display(), pid = self.pid,
                "supervised process still running at drop; killing it");
            self.signal(Signal::SIGKILL);
        }
    }
}

fn stat_path(proc_root: &Path, pid: u32) -> PathBuf {
    proc_root.join(pid.to_string()).join("stat")
}

/// Reads the start time (field 22) of `pid` from `<proc_root>/<pid>/stat`.
fn read_start_time(proc_root: &Path, pid: u32) -> std::io::Result<u64> {
    let stat = std::fs::read_to_string(stat_path(proc_root, pid))?;
    parse_start_time(&stat)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed /proc stat line"))
}

/// Extracts field 22 (`starttime`) from a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may itself contain spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards; field 22 is the 20th of those.
    after_comm.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Opens a pidfd for `pid`; `None` on kernels without pidfds (before 5.3).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the syscall succeeded, so `fd` is a fresh descriptor nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pidfd_send_signal(pidfd: &OwnedFd, sig: Signal) -> nix::Result<()> {
    // SAFETY: the pidfd is open for our lifetime; a null siginfo is allowed and no memory of ours
    // is written.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::{OsSpawner, Spawner};

    #[test]
    fn test_parse_start_time_counts_from_last_paren() {
        let stat = "4242 (we(i)rd name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 200 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("1 (x) S 1 2"), None);
        assert_eq!(parse_start_time("no parens at all"), None);
    }

    #[test]
    fn test_read_start_time_of_self() {
        let me = std::process::id();
        let first = read_start_time(Path::new(PROC_ROOT), me).unwrap();
        assert_eq!(read_start_time(Path::new(PROC_ROOT), me).unwrap(), first);
    }

    #[test]
    fn test_exit_report_display() {
        let code = ExitReport { code: Some(1), signal: None };
        let killed = ExitReport { code: None, signal: Some(libc::SIGKILL) };
        let odd = ExitReport { code: None, signal: Some(200) };
        assert_eq!(code.to_string(), "exited with 1");
        assert_eq!(killed.to_string(), "killed by SIGKILL");
        assert_eq!(odd.to_string(), "killed by signal 200");
        assert_eq!(ExitReport::UNKNOWN.to_string(), "exited with unknown status");
        assert!(!code.success());
    }

    fn alive(pid: u32) -> bool {
        // A zombie still has a /proc entry; count it as dead.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| !stat[stat.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn test_signal_refuses_reused_pid() {
        let child = OsSpawner.spawn(&CommandSpec::new("sleep").arg("100")).unwrap();
        let mut child = child;
        // The seam: pretend the PID now names a process that started at another time.
        child.start_time += 1;
        assert_eq!(child.signal(Signal::SIGKILL), SignalOutcome::PidReused);
        child.kill();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(alive(child.pid()), "a reused pid must not be signalled");
        assert_eq!(child.try_wait(), None);

        // A terminate that may not signal cannot end the process either.
        let gave_up = tokio::time::timeout(Duration::from_millis(300), child.terminate(Duration::ZERO)).await;
        assert!(gave_up.is_err());
        assert!(alive(child.pid()));

        // With the real identity back, signals go through again.
        child.start_time -= 1;
        let report = child.terminate(Duration::from_secs(5)).await;
        assert_eq!(report.signal, Some(libc::SIGTERM));
    }

    #[tokio::test]
    async fn test_signal_after_exit_is_noop() {
        let child = OsSpawner.spawn(&CommandSpec::new("true")).unwrap();
        let report = child.wait().await;
        assert!(report.success());
        assert_eq!(child.signal(Signal::SIGKILL), SignalOutcome::AlreadyExited);
        assert_eq!(child.terminate(Duration::ZERO).await, report);
    }
}
