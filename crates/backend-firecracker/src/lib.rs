//! The Firecracker backend: Firecracker launched from a `VmSpec` (directly or through its
//! jailer) and driven over its HTTP API on a Unix socket.
//!
//! - [`wire`] mirrors the API's bodies (Swagger spec v1.16.1), one struct per definition.
//! - [`map`] turns a spec into the ordered configuration requests ([`Plan`]) and refuses, naming
//!   the field, what Firecracker cannot do; [`map::capabilities`] is the same as data.
//! - [`client`] is the typed API client; Firecracker's `fault_message` stays in the errors.
//! - [`process`] is the command line, the jail, the file checks, start, stop and crash reading.
//! - [`vm`] is the [`Backend`](nestbox_backend::Backend) implementation and the running VM.
//!
//! The guest agent is reached over hybrid vsock: guest CID 3, port
//! [`AGENT_VSOCK_PORT`](nestbox_backend::AGENT_VSOCK_PORT), through `<vm dir>/vsock.sock`.

pub mod client;
pub mod map;
pub mod process;
pub mod vm;
pub mod wire;

pub use client::FcClient;
pub use map::{MapError, MapOptions, Plan, Request, Transport};
pub use process::{JailerConfig, Layout};
pub use vm::{FirecrackerBackend, FirecrackerConfig, FirecrackerVm, locate_binary};

/// The Firecracker binary.
pub const FIRECRACKER_BINARY: &str = "firecracker";
/// The jailer binary shipped with Firecracker.
pub const JAILER_BINARY: &str = "jailer";
/// Where Firecracker comes from (it has no Debian package: its release tarball).
pub const FIRECRACKER_PACKAGE: &str = "firecracker (github.com/firecracker-microvm/firecracker releases)";
