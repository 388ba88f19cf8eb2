//! A supervised process's standard input: what it is ([`StdinMode`]), and the [`StdinWriter`]
//! that any number of tasks share to type into it.
//!
//! [`StdinMode::Piped`] gives the child the read end of a pipe. [`StdinMode::Pty`] gives it the
//! slave side of a new pseudo-terminal in raw mode (no echo, no line editing, no signal keys,
//! bytes passed through unchanged), for programs that take input only from a terminal (Cloud
//! Hypervisor's `tty` serial port); the child does not get it as its controlling terminal. We keep
//! the write end (the pipe's, or the pty master) inside the writer; both ends are close-on-exec,
//! so no other child inherits them and closing ours is an end of file (a hang-up, for the pty)
//! the child sees.
//!
//! Writers are serialized by an async mutex, so the bytes of one [`StdinWriter::write`] are never
//! interleaved with another's. A write waits while the pipe (or the terminal's input queue) is
//! full, that is while the child is not reading.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::pty::PtyMaster;
use nix::sys::stat::Mode;
use nix::sys::termios::{self, SetArg};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};

/// What the child's standard input is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum StdinMode {
    /// `/dev/null`: the child reads end of file at once.
    #[default]
    Null,
    /// A pipe we write to through [`Supervised::stdin`](crate::Supervised::stdin).
    Piped,
    /// The slave side of a new pseudo-terminal in raw mode, whose master we write to through
    /// [`Supervised::stdin`](crate::Supervised::stdin).
    Pty,
}

/// The write end of a child's stdin, shared: clones write to the same pipe, one write at a time.
#[derive(Clone)]
pub struct StdinWriter {
    sink: Arc<tokio::sync::Mutex<Option<Sink>>>,
}

type Sink = Box<dyn AsyncWrite + Send + Unpin>;

impl StdinWriter {
    pub(crate) fn new(sink: impl AsyncWrite + Send + Unpin + 'static) -> Self {
        Self { sink: Arc::new(tokio::sync::Mutex::new(Some(Box::new(sink)))) }
    }

    /// Writes all of `data` to the child's stdin. Waits while the child is not reading and the
    /// pipe is full. Fails with [`io::ErrorKind::BrokenPipe`] once the child has closed its stdin
    /// or exited (for a pty: once no process holds the terminal any more), and once
    /// [`close`](Self::close) was called.
    pub async fn write(&self, data: &[u8]) -> io::Result<()> {
        let mut sink = self.sink.lock().await;
        let Some(sink) = sink.as_mut() else {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "stdin was closed"));
        };
        sink.write_all(data).await?;
        sink.flush().await
    }

    /// Closes our end for every clone: the child reads end of file (for a pty, a hang-up).
    /// Waits for a write in progress to finish first.
    pub async fn close(&self) {
        self.sink.lock().await.take();
    }
}

impl fmt::Debug for StdinWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdinWriter").finish_non_exhaustive()
    }
}

/// A new pseudo-terminal: its master (non-blocking, for us) and its slave in raw mode (for the
/// child's stdin). Both are close-on-exec from the start.
pub(crate) fn open_pty() -> io::Result<(PtyMaster, OwnedFd)> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    let slave = nix::fcntl::open(name.as_str(), OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut attrs = termios::tcgetattr(&slave)?;
    termios::cfmakeraw(&mut attrs);
    termios::tcsetattr(&slave, SetArg::TCSANOW, &attrs)?;
    Ok((master, slave))
}

/// A pty master as an async writer.
pub(crate) struct PtyWriter(AsyncFd<PtyMaster>);

impl PtyWriter {
    /// Wraps a non-blocking master; needs a tokio runtime.
    pub(crate) fn new(master: PtyMaster) -> io::Result<Self> {
        // SAFETY: the `PtyMaster` owns its descriptor, and nothing replaces or closes it while
        // the `AsyncFd` owns the master.
        let fd = unsafe { AsyncFd::register_with_interest(master, Interest::WRITABLE) }?;
        Ok(Self(fd))
    }
}

impl AsyncWrite for PtyWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            // Linux takes writes on a master whose slave is closed (until its buffer is full,
            // then they would wait forever): the hang-up is how we know the child has gone.
            if hung_up(self.0.get_ref())? {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the terminal was hung up")));
            }
            match guard.try_io(|master| master.get_ref().write(buf)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Whether every holder of the slave side has closed it.
fn hung_up(master: &PtyMaster) -> io::Result<bool> {
    let mut fds = [PollFd::new(master.as_fd(), PollFlags::empty())];
    nix::poll::poll(&mut fds, PollTimeout::ZERO)?;
    Ok(fds[0].revents().is_some_and(|events| events.contains(PollFlags::POLLHUP)))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn test_pty_is_raw_and_close_on_exec() {
        let (master, slave) = open_pty().unwrap();
        let attrs = termios::tcgetattr(&slave).unwrap();
        assert!(!attrs.local_flags.contains(termios::LocalFlags::ECHO));
        assert!(!attrs.local_flags.contains(termios::LocalFlags::ICANON));
        assert!(!attrs.input_flags.contains(termios::InputFlags::ICRNL));
        for fd in [std::os::fd::AsFd::as_fd(&master), std::os::fd::AsFd::as_fd(&slave)] {
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
            assert_ne!(flags & libc::FD_CLOEXEC, 0);
        }
        // Raw: a carriage return arrives as written, at once (no line discipline waiting for it).
        (&master).write_all(b"a\rb").unwrap();
        let mut got = [0u8; 3];
        std::fs::File::from(slave).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"a\rb");
    }

    #[tokio::test]
    async fn test_pty_write_fails_once_the_slave_is_closed() {
        let (master, slave) = open_pty().unwrap();
        let writer = StdinWriter::new(PtyWriter::new(master).unwrap());
        writer.write(b"typed").await.unwrap();
        drop(slave);
        let err = writer.write(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn test_blocked_pty_write_fails_when_the_slave_closes() {
        let (master, slave) = open_pty().unwrap();
        let writer = StdinWriter::new(PtyWriter::new(master).unwrap());
        // Nobody reads the slave: this fills the terminal's buffer and waits.
        let blocked = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(&[b'x'; 1 << 20]).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!blocked.is_finished());
        drop(slave);
        let result = tokio::time::timeout(std::time::Duration::from_secs(5), blocked).await;
        let err = result.expect("the write still waits after the hang-up").unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn test_closed_writer_refuses_writes() {
        let (master, _slave) = open_pty().unwrap();
        let writer = StdinWriter::new(PtyWriter::new(master).unwrap());
        writer.write(b"x").await.unwrap();
        writer.clone().close().await;
        let err = writer.write(b"y").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
