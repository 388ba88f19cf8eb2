//! Every default and every limit of the VM model, named in one place.
//!
//! Validation ([`crate::validate`]) and parsing ([`crate::parse`]) read their bounds from here;
//! nothing else in the crate spells a limit as a literal.

/// vCPUs when none are asked for.
pub const DEFAULT_VCPUS: u8 = 1;
/// Guest memory when none is asked for, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 512;

/// Most vCPUs a VM may have (the x86 APIC id limit less the broadcast id).
pub const MAX_VCPUS: u8 = 254;
/// Least guest memory, in MiB.
pub const MIN_MEMORY_MIB: u32 = 64;
/// Most guest memory, in MiB (1 TiB).
pub const MAX_MEMORY_MIB: u32 = 1024 * 1024;

/// Longest kernel command line, in bytes (x86 `COMMAND_LINE_SIZE`).
pub const MAX_CMDLINE_LEN: usize = 2048;

/// Longest device id, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 64;
/// Longest TAP interface name, in bytes (`IFNAMSIZ` - 1).
pub const MAX_TAP_NAME_LEN: usize = 15;
/// Longest virtio-fs tag, in bytes (the size of the tag in virtio-fs config space).
pub const MAX_FS_TAG_LEN: usize = 36;

/// Least guest vsock context id; 0, 1 and 2 are the hypervisor, local and host.
pub const MIN_VSOCK_CID: u32 = 3;
/// `VMADDR_CID_ANY`, which no guest may take.
pub const VSOCK_CID_ANY: u32 = u32::MAX;
