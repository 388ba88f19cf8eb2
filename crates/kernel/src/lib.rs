//! Guest kernels for direct boot: find one (`--kernel`, `<home>/kernels/vmlinux`, or the host's
//! `/boot`), turn a bzImage into the ELF vmlinux with its Xen PVH entry note that QEMU and
//! Firecracker boot, and cache the result under `<home>/kernels/`. Plain blocking std I/O.
#![warn(missing_docs)]

mod bytes;
pub mod bzimage;
pub mod cache;
pub mod config;
pub mod decompress;
pub mod elf;
mod error;
mod index;
pub mod locate;
mod resolve;

pub use bzimage::{extract_vmlinux, kernel_version};
pub use config::{KernelConfig, VirtioTransport};
pub use decompress::{Compression, DecompressError};
pub use elf::{ElfError, pvh_entry, tiny_pvh_elf};
pub use error::KernelError;
pub use locate::SearchRoots;
pub use resolve::{ResolvedKernel, resolve, resolve_with};
