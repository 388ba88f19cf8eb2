//! The typed VM model: what a microVM is, independent of any hypervisor.
//!
//! `VmSpec` is the checked shape every backend trusts. It is built from user input at the
//! edge (CLI flags, JSON, the `--device` syntax), validated once with one error per rule,
//! and defaulted in one place ([`defaults`]). This crate does no I/O.
//!
//! - [`spec`]: the types.
//! - [`validate`]: [`VmSpec::validate`] and [`SpecError`].
//! - [`parse`]: user quantities (`512M`, `30s`, `KEY=VALUE`, MAC addresses).
//! - [`device_syntax`]: `Device: FromStr + Display` (`virtio-blk,id=root,path=/x,readonly`).
//! - [`args`]: [`VmSpec::to_args`] and [`VmSpec::from_args`].
//! - [`cmdline`]: [`KernelCmdline`], the guest kernel command line for direct boot.

#![warn(missing_docs)]

pub mod args;
pub mod cmdline;
pub mod defaults;
pub mod device_syntax;
pub mod parse;
pub mod spec;
pub mod validate;

pub use args::{ArgsError, Flag};
pub use cmdline::{CmdlineError, GuestIp, GuestIpParseError, KernelCmdline};
pub use device_syntax::{DEVICE_KINDS, DeviceParseError};
pub use parse::{EnvVar, MacAddr, ParseError, parse_duration, parse_memory_mib, parse_vcpus};
pub use spec::*;
pub use validate::SpecError;
