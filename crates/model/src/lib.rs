//! The typed VM model: what a microVM is, independent of any hypervisor.
//!
//! `VmSpec` is the checked shape every backend trusts. It is built from user input at the
//! edge (CLI flags, JSON, the `--device` syntax), validated once with one error per rule,
//! and defaulted in one place ([`defaults`]). This crate does no I/O.

pub mod defaults;
pub mod spec;

pub use spec::*;
