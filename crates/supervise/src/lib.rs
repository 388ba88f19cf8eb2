//! Supervision of one hypervisor process (QEMU, Firecracker, Cloud Hypervisor, or a per-sandbox
//! shim).
//!
//! A [`Spawner`] turns a [`CommandSpec`] into a running [`Supervised`] child: its stdout and
//! stderr are captured into bounded, rotated log files and an in-memory ring
//! ([`Supervised::log_tail`]) and fed live to any number of subscribers
//! ([`Supervised::subscribe`]); its stdin, when asked for as a pipe or a pseudo-terminal
//! ([`CommandSpec::stdin_piped`], [`CommandSpec::stdin_pty`]), is written through a shared
//! [`StdinWriter`] ([`Supervised::stdin`]); its exit is published to any number of waiters
//! ([`Supervised::wait`]); it is signalled only after checking that its PID still names the
//! process we started ([`Supervised::terminate`], [`Supervised::kill`]); and it is killed when the
//! [`Supervised`] handle is dropped. [`Supervised::wait_for_socket`] polls for the API socket a
//! hypervisor creates once it is ready.
//!
//! Everything here needs a tokio runtime: spawn from inside one.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use nestbox_supervise::{CommandSpec, LogSpec, OsSpawner, Spawner, Stream};
//!
//! # async fn run() -> nestbox_supervise::Result<()> {
//! let mut spec = CommandSpec::new("qemu-system-x86_64").args(["-qmp", "unix:/run/vm/qmp.sock,server=on,wait=off"]);
//! spec.stderr_log = Some(LogSpec { path: "/run/vm/qemu.log".into(), max_bytes: 1 << 20 });
//! spec.die_with_parent = true;
//! let vm = OsSpawner.spawn(&spec)?;
//! vm.wait_for_socket("/run/vm/qmp.sock".as_ref(), Duration::from_secs(10)).await?;
//! // ... talk QMP ...
//! let report = vm.terminate(Duration::from_secs(5)).await;
//! println!("qemu {report}; last words: {:?}", vm.log_tail(Stream::Stderr, 5));
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod error;
mod log;
mod process;
mod socket;
mod spawn;
mod stdin;

pub use error::{Result, SuperviseError};
pub use log::{CAPTURE_READ_BYTES, DEFAULT_LOG_RING_BYTES, SUBSCRIBER_BACKLOG_CHUNKS, Stream};
pub use process::{ExitReport, Supervised, parse_start_time};
pub use socket::{SOCKET_POLL_INITIAL, SOCKET_POLL_MAX};
pub use spawn::{CommandSpec, LogSpec, OsSpawner, Spawner, find_program};
pub use stdin::{StdinMode, StdinWriter};
