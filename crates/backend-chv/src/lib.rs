//! The Cloud Hypervisor backend: a `VmSpec` launched as a `cloud-hypervisor` process and driven
//! over its HTTP API on a Unix socket (`/api/v1/...`, OpenAPI 3.0.1, v53).
//!
//! - [`wire`] mirrors the API's schemas (serde types, no `json!`).
//! - [`map`] turns a spec into the `vm.create` body and holds the capability table.
#![warn(missing_docs)]

pub mod map;
pub mod wire;

/// The Cloud Hypervisor binary.
pub const CHV_BINARY: &str = "cloud-hypervisor";
/// Where to get [`CHV_BINARY`]: it is not in Debian; upstream publishes static release binaries.
pub const CHV_PACKAGE: &str = "cloud-hypervisor (github.com/cloud-hypervisor/cloud-hypervisor/releases)";
