//! Every default of the VM model, named in one place.

/// vCPUs when none are asked for.
pub const DEFAULT_VCPUS: u8 = 1;
/// Guest memory when none is asked for, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 512;
