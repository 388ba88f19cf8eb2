//! Serving sessions on a listening socket: AF_VSOCK in the guest when the kernel command line
//! says `nestbox.agent=vsock:<port>` (Firecracker and Cloud Hypervisor reach it through their
//! hybrid vsock Unix socket), or a Unix socket on the host for tests (`--listen-unix`).
//!
//! Unlike the single virtio-serial port, a listening socket takes any number of connections:
//! each is accepted and served in its own thread as an independent session (it starts with
//! `hello`, and its execs are killed when it ends).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, VsockAddr, accept4, bind, listen, socket};

use crate::log;
use crate::reaper::Reaper;
use crate::session::{self, EndReason};

/// The kernel command-line parameter that picks the agent's transport.
pub const AGENT_PARAM: &str = "nestbox.agent";

/// The value prefix that selects AF_VSOCK: `nestbox.agent=vsock:<port>`.
const VSOCK_PREFIX: &str = "vsock:";

/// The value that selects the virtio-serial port explicitly (also the default).
const SERIAL_VALUE: &str = "serial";

/// Connections the kernel queues before the agent accepts them.
const LISTEN_BACKLOG: i32 = 16;

/// How long to keep trying to create the vsock listener while the vsock modules come up.
pub const VSOCK_DEADLINE: Duration = Duration::from_secs(20);

/// Pause between attempts to create the vsock listener.
const VSOCK_RETRY: Duration = Duration::from_millis(5);

/// Pause after an accept that failed for lack of resources (descriptors, memory).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Where the host reaches the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The virtio-serial port named [`crate::init::PORT_NAME`] (QEMU).
    Serial,
    /// An AF_VSOCK stream socket listening on this port for any CID.
    Vsock {
        /// The vsock port.
        port: u32,
    },
}

/// A bad `nestbox.agent=` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    /// The value names no transport we know.
    UnknownTransport(String),
    /// `vsock:` is followed by something that is not a usable port number.
    BadVsockPort(String),
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::UnknownTransport(v) => write!(f, "{AGENT_PARAM}={v}: unknown transport"),
            ParamError::BadVsockPort(v) => write!(f, "{AGENT_PARAM}={VSOCK_PREFIX}{v}: bad vsock port"),
        }
    }
}

/// The transport the kernel command line asks for; the last `nestbox.agent=` wins, as the
/// kernel's own parameters do. Without one: [`Transport::Serial`].
pub fn transport_from_cmdline(cmdline: &str) -> Result<Transport, ParamError> {
    let prefix = format!("{AGENT_PARAM}=");
    let Some(value) = cmdline.split_whitespace().filter_map(|w| w.strip_prefix(&prefix)).next_back() else {
        return Ok(Transport::Serial);
    };
    if value == SERIAL_VALUE {
        return Ok(Transport::Serial);
    }
    let Some(port) = value.strip_prefix(VSOCK_PREFIX) else {
        return Err(ParamError::UnknownTransport(value.to_owned()));
    };
    // VMADDR_PORT_ANY would bind a random port the host cannot know.
    match port.parse::<u32>() {
        Ok(p) if p != libc::VMADDR_PORT_ANY && !port.starts_with('+') => Ok(Transport::Vsock { port: p }),
        _ => Err(ParamError::BadVsockPort(port.to_owned())),
    }
}

/// A transport as `nestbox.agent=` spells it (`serial`, `vsock:PORT`), e.g. from the command
/// line of `nestbox-agent --service`.
pub fn parse_transport(value: &str) -> Result<Transport, ParamError> {
    transport_from_cmdline(&format!("{AGENT_PARAM}={value}"))
}

/// The transport `/proc/cmdline` asks for; a bad value is logged and falls back to serial.
pub fn transport_from_proc() -> Transport {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    transport_from_cmdline(&cmdline).unwrap_or_else(|e| {
        log::error(&format!("{e}; using the virtio-serial port"));
        Transport::Serial
    })
}

/// A listening AF_VSOCK stream socket on `port` for any CID.
pub fn vsock_listener(port: u32) -> io::Result<OwnedFd> {
    let sock = socket(AddressFamily::Vsock, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    bind(sock.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port))?;
    listen(&sock, Backlog::new(LISTEN_BACKLOG)?)?;
    Ok(sock)
}

/// [`vsock_listener`], retried until [`VSOCK_DEADLINE`] while the address family or its
/// transport is not registered yet.
pub fn vsock_listener_with_deadline(port: u32) -> io::Result<OwnedFd> {
    let deadline = Instant::now() + VSOCK_DEADLINE;
    loop {
        match vsock_listener(port) {
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::ENODEV | libc::EADDRNOTAVAIL))
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(VSOCK_RETRY);
            }
            result => return result,
        }
    }
}

/// Accepts connections on `listener` forever, serving each in its own thread. A session that
/// asks for `guest.poweroff` calls `poweroff`. Returns only when accepting fails for good.
pub fn serve_forever(listener: BorrowedFd<'_>, reaper: &Arc<Reaper>, poweroff: fn() -> !) -> io::Error {
    loop {
        let conn = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
            // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(Errno::EINTR | Errno::ECONNABORTED | Errno::EPROTO) => continue,
            Err(e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                log::error(&format!("accept: {e}"));
                std::thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
            Err(e) => return e.into(),
        };
        log::trace("host connected");
        let reaper = Arc::clone(reaper);
        let spawned = std::thread::Builder::new()
            .name("session".into())
            .stack_size(crate::THREAD_STACK)
            .spawn(move || serve_connection(&conn, reaper, poweroff));
        if let Err(e) = spawned {
            // The connection was moved into the closure and is closed with it.
            log::error(&format!("session thread: {e}"));
        }
    }
}

fn serve_connection(conn: &OwnedFd, reaper: Arc<Reaper>, poweroff: fn() -> !) {
    match session::serve(conn.as_fd(), conn.as_fd(), reaper) {
        EndReason::Disconnected => {}
        EndReason::Poweroff => poweroff(),
        // One broken connection; the listener and the other sessions carry on.
        EndReason::Fatal(e) => log::error(&format!("session: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_transport_defaults_to_serial() {
        assert_eq!(transport_from_cmdline(""), Ok(Transport::Serial));
        assert_eq!(transport_from_cmdline("console=ttyS0 nestbox.trace quiet"), Ok(Transport::Serial));
        assert_eq!(transport_from_cmdline("nestbox.agent=serial"), Ok(Transport::Serial));
        // Only the exact parameter counts.
        assert_eq!(transport_from_cmdline("xnestbox.agent=vsock:5 nestbox.agentx=vsock:6"), Ok(Transport::Serial));
    }

    #[test]
    fn test_transport_reads_vsock_port() {
        assert_eq!(
            transport_from_cmdline("console=hvc0 nestbox.agent=vsock:1024 init=/init\n"),
            Ok(Transport::Vsock { port: 1024 })
        );
        assert_eq!(transport_from_cmdline("nestbox.agent=vsock:0"), Ok(Transport::Vsock { port: 0 }));
        assert_eq!(
            transport_from_cmdline("nestbox.agent=vsock:4294967294"),
            Ok(Transport::Vsock { port: 4_294_967_294 })
        );
        // The last one wins.
        assert_eq!(
            transport_from_cmdline("nestbox.agent=vsock:1 nestbox.agent=vsock:2"),
            Ok(Transport::Vsock { port: 2 })
        );
        assert_eq!(transport_from_cmdline("nestbox.agent=vsock:1 nestbox.agent=serial"), Ok(Transport::Serial));
    }

    #[test]
    fn test_transport_rejects_bad_values() {
        for (cmdline, want) in [
            ("nestbox.agent=vsock:", ParamError::BadVsockPort(String::new())),
            ("nestbox.agent=vsock:abc", ParamError::BadVsockPort("abc".into())),
            ("nestbox.agent=vsock:-1", ParamError::BadVsockPort("-1".into())),
            ("nestbox.agent=vsock:+5", ParamError::BadVsockPort("+5".into())),
            ("nestbox.agent=vsock:4294967295", ParamError::BadVsockPort("4294967295".into())),
            ("nestbox.agent=vsock:4294967296", ParamError::BadVsockPort("4294967296".into())),
            ("nestbox.agent=vsock:1024x", ParamError::BadVsockPort("1024x".into())),
            ("nestbox.agent=tcp:80", ParamError::UnknownTransport("tcp:80".into())),
            ("nestbox.agent=", ParamError::UnknownTransport(String::new())),
        ] {
            assert_eq!(transport_from_cmdline(cmdline), Err(want), "{cmdline}");
        }
        assert_eq!(ParamError::BadVsockPort("x".into()).to_string(), "nestbox.agent=vsock:x: bad vsock port");
    }

    #[test]
    fn test_vsock_listener_binds_or_reports_missing_support() {
        // Hosts without the vsock modules (or sandboxes that filter the family) refuse it.
        match vsock_listener(0x4e42_0000 + std::process::id() % 0xffff) {
            Ok(fd) => assert!(fd.as_raw_fd() >= 0),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT | libc::EPERM | libc::EACCES | libc::EADDRNOTAVAIL)
                ) =>
            {
                eprintln!("skipped the vsock bind check: AF_VSOCK unusable on this host ({e})");
            }
            Err(e) => panic!("vsock listener: {e}"),
        }
    }
}
