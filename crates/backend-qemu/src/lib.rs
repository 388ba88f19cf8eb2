//! The QEMU backend: QEMU's `microvm` machine, launched from a `VmSpec` and driven over QMP.
//!
//! - [`args`] turns a spec into QEMU's command line (one small type per option group).
//! - [`qmp`] is the typed QMP client (the `qapi` crate's generated commands).
//! - [`host`] reads the host facts the command line depends on (TSC rate, binary).
//! - [`vm`] is the [`Backend`](nestbox_backend::Backend) implementation and the running VM.

pub mod args;
pub mod host;
pub mod probe;
pub mod qmp;
pub mod vm;

pub use args::{Accel, QemuArgs};
pub use vm::{QemuBackend, QemuConfig, QemuVm};

/// The QEMU binary for x86_64 guests.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";
/// The Debian/Ubuntu package that provides [`QEMU_BINARY`].
pub const QEMU_PACKAGE: &str = "qemu-system-x86";
/// The virtio-serial port name the guest agent looks for.
pub const AGENT_PORT_NAME: &str = "nestbox.agent";
