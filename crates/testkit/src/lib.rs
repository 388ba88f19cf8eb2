//! Test support shared across crates: spec validators for the hypervisor APIs and fake
//! Firecracker / Cloud Hypervisor API servers that keep the real state machines.

pub mod chv;
pub mod fake;
pub mod firecracker;
pub mod spec;

pub use fake::{FakeServer, Recorded};
