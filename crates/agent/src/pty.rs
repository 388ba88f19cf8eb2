//! Pseudo-terminals for `tty` execs and the console shell: opening a pair, sizing it, making
//! a terminal the controlling terminal of a new session, and the bytes that mean end of input.
//!
//! Every descriptor is close-on-exec from the start (`O_CLOEXEC` on the master, `TIOCGPTPEER`
//! for the slave), so an exec spawned by another thread at the same moment never inherits one
//! and keeps a terminal alive after its process is gone.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use nestbox_agent_protocol::TtySize;
use nix::fcntl::OFlag;
use nix::pty::{PtyMaster, posix_openpt, ptsname_r, unlockpt};
use nix::sys::termios::{LocalFlags, SpecialCharacterIndices, tcgetattr};

/// The end-of-file character when the terminal has none set (^D).
const DEFAULT_EOF: u8 = 0x04;

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);
nix::ioctl_write_int_bad!(get_peer, libc::TIOCGPTPEER);

/// A fresh pseudo-terminal pair.
#[derive(Debug)]
pub struct Pty {
    /// The side the agent reads output from and types input into.
    pub master: OwnedFd,
    /// The side the process gets as stdin, stdout and stderr.
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal pair of `size`.
pub fn open(size: TtySize) -> io::Result<Pty> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    unlockpt(&master)?;
    let slave = open_slave(&master)?;
    let master = OwnedFd::from(master);
    resize(master.as_fd(), size)?;
    Ok(Pty { master, slave })
}

fn open_slave(master: &PtyMaster) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor we own.
    match unsafe { get_peer(master.as_raw_fd(), flags) } {
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        // Kernels before 4.13: open the slave by name (devpts must be at /dev/pts).
        Err(_) => {
            let path = ptsname_r(master)?;
            let file = OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(path)?;
            Ok(OwnedFd::from(file))
        }
    }
}

/// Sets the terminal size; the kernel sends SIGWINCH to the terminal's foreground process group.
pub fn resize(master: BorrowedFd<'_>, size: TtySize) -> io::Result<()> {
    let ws = libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives across the call.
    unsafe { set_winsize(master.as_raw_fd(), &ws) }?;
    Ok(())
}

/// What to type so that a reader of the terminal sees end of input: the terminal's `VEOF`
/// character, twice when `mid_line` (the first only ends the unfinished line) and the terminal
/// is in canonical mode (in raw mode the character is just a byte, sent once).
pub fn eof_bytes(master: BorrowedFd<'_>, mid_line: bool) -> Vec<u8> {
    // On Linux the termios of a master is that of its slave.
    let (eof, canonical) = match tcgetattr(master) {
        Ok(t) => {
            let c = t.control_chars[SpecialCharacterIndices::VEOF as usize];
            (if c == 0 { DEFAULT_EOF } else { c }, t.local_flags.contains(LocalFlags::ICANON))
        }
        Err(_) => (DEFAULT_EOF, true),
    };
    if canonical && mid_line { vec![eof, eof] } else { vec![eof] }
}

/// Makes `fd` (a terminal) the controlling terminal of a new session led by the calling process.
/// Only async-signal-safe calls: meant for `pre_exec`, between fork and exec.
pub fn become_session_leader(fd: libc::c_int) -> io::Result<()> {
    nix::unistd::setsid()?;
    // The agent is root and the terminal may still be the controlling terminal of a session
    // whose leader is gone: 1 takes it over.
    // SAFETY: TIOCSCTTY takes an int by value; no memory is involved.
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 1) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens a terminal device for a console: read-write, not as our controlling terminal.
pub fn open_terminal(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(fd: BorrowedFd<'_>) -> (u16, u16) {
        let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ writes one winsize into the pointer, which lives across the call.
        assert_eq!(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) }, 0);
        (ws.ws_row, ws.ws_col)
    }

    #[test]
    fn test_open_sets_size_and_resize_changes_it() {
        let pty = open(TtySize { rows: 33, cols: 101 }).unwrap();
        assert_eq!(size(pty.slave.as_fd()), (33, 101));
        resize(pty.master.as_fd(), TtySize { rows: 10, cols: 20 }).unwrap();
        assert_eq!(size(pty.slave.as_fd()), (10, 20));
        let flags = nix::fcntl::fcntl(&pty.slave, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "slave must not leak into other execs");
    }

    #[test]
    fn test_eof_bytes_follow_the_line_discipline() {
        let pty = open(TtySize { rows: 24, cols: 80 }).unwrap();
        assert_eq!(eof_bytes(pty.master.as_fd(), false), [DEFAULT_EOF]);
        assert_eq!(eof_bytes(pty.master.as_fd(), true), [DEFAULT_EOF, DEFAULT_EOF]);
        let mut raw = tcgetattr(&pty.slave).unwrap();
        raw.local_flags.remove(LocalFlags::ICANON);
        raw.control_chars[SpecialCharacterIndices::VEOF as usize] = 0x1a;
        nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &raw).unwrap();
        assert_eq!(eof_bytes(pty.master.as_fd(), true), [0x1a]);
    }
}
