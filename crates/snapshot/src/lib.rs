//! Snapshots of a sandbox: the manifest that describes a snapshot directory
//! (`$NESTBOX_HOME/snapshots/<id>/`) and what a host needs to restore it, and the portable
//! archive (`.tar.zst`) a snapshot is exported to and imported from.
//!
//! A snapshot directory holds `manifest.json` and the files it lists: guest memory (large and
//! mostly holes), the hypervisor's device state, the sandbox's disks. This crate does not take
//! snapshots; the engine writes the files, describes them with [`FileEntry::compute`] and
//! [`Manifest::write`], and calls [`export`] and [`import`].

#![warn(missing_docs)]

mod archive;
mod error;
mod host;
mod manifest;
mod sparse;

pub use archive::{
    ExportStats, IMPORT_DIR_PREFIX, ImportLimits, MAX_SPARSE_REGIONS, ZSTD_LEVEL, ZSTD_WINDOW_LOG_MAX, export, import,
};
pub use error::SnapshotError;
pub use host::{HostFacts, Incompatible, host_cpu, host_page_size, parse_cpuinfo};
pub use manifest::{
    CpuInfo, FileEntry, FileKind, KernelInfo, MANIFEST_FILE, MANIFEST_VERSION, MAX_FILE_NAME_LEN, MAX_MANIFEST_BYTES,
    Manifest, MemoryLayout, validate_file_name, validate_id,
};
