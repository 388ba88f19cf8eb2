//! The Cloud Hypervisor backend: a `VmSpec` launched as a `cloud-hypervisor` process and driven
//! over its HTTP API on a Unix socket (`/api/v1/...`, OpenAPI 3.0.1, v53).
//!
//! - [`wire`] mirrors the API's schemas (serde types, no `json!`).
//! - [`map`] turns a spec into the `vm.create` body and holds the capability table.
//! - [`client`] is the typed API client (one method per endpoint), keeping CH's error text.
//! - [`process`] is the command line, stopping, and telling a crash from a clean exit.
//! - [`vm`] is the [`Backend`](nestbox_backend::Backend) implementation and the running VM.
#![warn(missing_docs)]

pub mod client;
pub mod map;
pub mod process;
pub mod vm;
pub mod wire;

pub use client::{ApiError, ChvClient, Endpoint};
pub use map::MapError;
pub use process::{ChvArgs, ExitCause};
pub use vm::{ChvConfig, CloudHypervisorBackend, CloudHypervisorVm};

/// The Cloud Hypervisor binary.
pub const CHV_BINARY: &str = "cloud-hypervisor";
/// Where to get [`CHV_BINARY`]: it is not in Debian; upstream publishes static release binaries.
pub const CHV_PACKAGE: &str = "cloud-hypervisor (github.com/cloud-hypervisor/cloud-hypervisor/releases)";
