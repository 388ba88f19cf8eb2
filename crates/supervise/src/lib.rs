//! Supervision of one hypervisor process (QEMU, Firecracker, Cloud Hypervisor, or a per-sandbox
//! shim).
//!
//! A [`Spawner`] turns a [`CommandSpec`] into a running [`Supervised`] child: its stdout and
//! stderr are captured into bounded, rotated log files and an in-memory ring
//! ([`Supervised::log_tail`]); its exit is published to any number of waiters
//! ([`Supervised::wait`]); it is signalled only after checking that its PID still names the
//! process we started ([`Supervised::terminate`], [`Supervised::kill`]); and it is killed when the
//! [`Supervised`] handle is dropped. [`Supervised::wait_for_socket`] polls for the API socket a
//! hypervisor creates once it is ready.
//!
//! Everything here needs a tokio runtime: spawn from inside one.
#![warn(missing_docs)]

mod error;
mod log;
mod process;
mod socket;
mod spawn;

pub use error::{Result, SuperviseError};
pub use log::{DEFAULT_LOG_RING_BYTES, Stream};
pub use process::{ExitReport, Supervised};
pub use socket::{SOCKET_POLL_INITIAL, SOCKET_POLL_MAX};
pub use spawn::{CommandSpec, LogSpec, OsSpawner, Spawner, find_program};
