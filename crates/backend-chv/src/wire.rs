//! The Cloud Hypervisor API's wire types: serde mirrors of the `components/schemas` of
//! `cloud-hypervisor.yaml` (OpenAPI 3.0.1, Cloud Hypervisor v53), for the bodies we send and the
//! replies we read.
//!
//! Field names and types follow the schema exactly. Optional fields are skipped when unset, so
//! what goes out is what we chose, never a default spelled by accident. Exceptions, on purpose:
//! `MemoryConfig::{shared, hugepages, thp}` and the balloon's `deflate_on_oom` /
//! `free_page_reporting` are always written, because their upstream defaults (`thp` is `true`)
//! are not what nestbox wants and must not depend on the VMM version.
//!
//! Unknown fields are accepted on input: `vm.info` echoes the whole configuration, with many
//! sections nestbox does not model. No `json!`: every body is one of these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `VmmPingResponse`: what `GET /vmm.ping` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmPingResponse {
    /// The VMM version, e.g. `v53.0`.
    pub version: String,
    /// The build version (git describe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_version: Option<String>,
    /// The VMM's process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    /// Compiled-in features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
}

/// `VmState`: the VM's state as `vm.info` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Created by `vm.create` (or restored without resuming), not booted.
    Created,
    /// Running guest code.
    Running,
    /// Shut down; the VMM is still there.
    Shutdown,
    /// Paused by `vm.pause`.
    Paused,
}

/// `VmInfo`: what `GET /vm.info` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmInfo {
    /// The configuration the VM was created with.
    pub config: VmConfig,
    /// Its state.
    pub state: VmState,
    /// The guest memory currently backed (after ballooning), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_actual_size: Option<i64>,
    /// The device tree, keyed by device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_tree: Option<BTreeMap<String, DeviceNode>>,
}

/// `DeviceNode`: one node of `VmInfo::device_tree`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// The device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Resources (a Rust enum upstream, which the schema leaves as plain objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<serde_json::Value>>,
    /// Child device ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<String>>,
    /// The PCI address, `segment:bus:device.function`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bdf: Option<String>,
}

/// `VmCounters`: per-device counters, `device id → counter name → value`.
pub type VmCounters = BTreeMap<String, BTreeMap<String, i64>>;

/// `PciDeviceInfo`: where a hot-added device landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDeviceInfo {
    /// The device id.
    pub id: String,
    /// Its PCI address.
    pub bdf: String,
}

/// `PayloadConfig`: what the guest boots.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PayloadConfig {
    /// A firmware image (e.g. `hypervisor-fw`, OVMF), instead of a kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// The kernel image (ELF vmlinux with a PVH note, or bzImage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// The kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// The initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<String>,
}

/// `VmConfig`: the body of `PUT /vm.create`, and `VmInfo::config`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VmConfig {
    /// vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<CpusConfig>,
    /// Guest memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryConfig>,
    /// What boots.
    pub payload: PayloadConfig,
    /// Block devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<DiskConfig>>,
    /// Network devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Vec<NetConfig>>,
    /// The entropy device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng: Option<RngConfig>,
    /// The balloon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<BalloonConfig>,
    /// The legacy serial port (ttyS0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<SerialConfig>,
    /// The virtio console (hvc0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleConfig>,
    /// The vsock device (hybrid vsock over a Unix socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
}

/// `CpusConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpusConfig {
    /// vCPUs at boot (at least 1).
    pub boot_vcpus: u32,
    /// Most vCPUs hot-pluggable (at least `boot_vcpus`).
    pub max_vcpus: u32,
}

/// How memory is hot-plugged (`MemoryConfig::hotplug_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HotplugMethod {
    /// ACPI memory hotplug (the upstream default).
    Acpi,
    /// virtio-mem.
    VirtioMem,
}

/// The upstream default of `MemoryConfig::thp`, for decoding a reply that omits it.
fn default_thp() -> bool {
    true
}

/// `MemoryConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryConfig {
    /// Guest memory, in bytes.
    pub size: u64,
    /// Memory that may be hot-plugged later, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug_size: Option<u64>,
    /// Memory already hot-plugged, in bytes (restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplugged_size: Option<u64>,
    /// KSM merging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mergeable: Option<bool>,
    /// How memory is hot-plugged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug_method: Option<HotplugMethod>,
    /// Map guest memory `MAP_SHARED` (needed for vhost-user, and so that balloon-freed pages are
    /// punched out of the backing file). Always serialized.
    #[serde(default)]
    pub shared: bool,
    /// Back guest memory with hugetlbfs. Always serialized.
    #[serde(default)]
    pub hugepages: bool,
    /// Hugepage size, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepage_size: Option<u64>,
    /// Fault all guest memory in at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefault: Option<bool>,
    /// Transparent huge pages (`madvise(MADV_HUGEPAGE)`). ALWAYS serialized, even as `false`:
    /// the upstream default is `true`, and huge pages keep balloon-freed 4 KiB pages resident.
    #[serde(default = "default_thp")]
    pub thp: bool,
}

/// `ImageType`: a disk image's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageType {
    /// Fixed VHD.
    FixedVhd,
    /// QCOW2.
    Qcow2,
    /// Raw.
    Raw,
    /// VHDX.
    Vhdx,
    /// Probe it.
    Unknown,
}

/// `DiskConfig`: one disk in `VmConfig::disks`, and the body of `PUT /vm.add-disk`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiskConfig {
    /// The backing file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Read-only. Always serialized.
    #[serde(default)]
    pub readonly: bool,
    /// `O_DIRECT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<bool>,
    /// Queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_queues: Option<u32>,
    /// Queue depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<u32>,
    /// The device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The serial number the guest sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The image format; probed when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_type: Option<ImageType>,
}

/// `NetConfig`: one NIC in `VmConfig::net`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetConfig {
    /// The host TAP interface (opened, not created, when it exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// The guest MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The host-side MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_mac: Option<String>,
    /// The MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Queues (a receive and a transmit queue per pair).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_queues: Option<u32>,
    /// Queue depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<u32>,
    /// The device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `RngConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngConfig {
    /// The host entropy source.
    pub src: String,
    /// The device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `BalloonConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonConfig {
    /// The balloon's initial size, in bytes.
    pub size: u64,
    /// Deflate when the guest is under memory pressure. Always serialized.
    #[serde(default)]
    pub deflate_on_oom: bool,
    /// Let the guest report free pages. Always serialized.
    #[serde(default)]
    pub free_page_reporting: bool,
    /// The device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `ConsoleMode`: where a serial port or console goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsoleMode {
    /// No device.
    Off,
    /// A new pseudo-terminal.
    Pty,
    /// The VMM's own stdin/stdout (input only when stdin is a terminal).
    Tty,
    /// Output to a file.
    File,
    /// A Unix socket.
    Socket,
    /// The device exists; output is dropped.
    Null,
}

/// `SerialConfig`: the legacy serial port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialConfig {
    /// The output file, for `File`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The socket, for `Socket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// Where it goes.
    pub mode: ConsoleMode,
}

/// `ConsoleConfig`: the virtio console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleConfig {
    /// The output file, for `File`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The socket, for `Socket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// Where it goes.
    pub mode: ConsoleMode,
    /// Behind the virtual IOMMU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iommu: Option<bool>,
}

/// `VsockConfig`: hybrid vsock, proxied through a Unix socket on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockConfig {
    /// The guest CID (3 or more).
    pub cid: u64,
    /// The host Unix socket; host-initiated connections send `CONNECT <port>\n` on it.
    pub socket: String,
    /// The device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `VmResize`: the body of `PUT /vm.resize`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VmResize {
    /// vCPUs wanted (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_vcpus: Option<u32>,
    /// Guest memory wanted, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_ram: Option<u64>,
    /// Balloon size wanted, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_balloon: Option<u64>,
}

/// `VmRemoveDevice`: the body of `PUT /vm.remove-device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRemoveDevice {
    /// The device id.
    pub id: String,
}

/// `VmSnapshotConfig`: the body of `PUT /vm.snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSnapshotConfig {
    /// Where the snapshot goes: `file://<directory>`.
    pub destination_url: String,
}

/// `MemoryRestoreMode`: how guest memory comes back on restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryRestoreMode {
    /// Read the whole memory file before resuming (the upstream default).
    Copy,
    /// Fault pages in on demand through userfaultfd.
    OnDemand,
}

/// `RestoreConfig`: the body of `PUT /vm.restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreConfig {
    /// Where the snapshot is: `file://<directory>`.
    pub source_url: String,
    /// Fault all guest memory in before resuming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefault: Option<bool>,
    /// How memory comes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_restore_mode: Option<MemoryRestoreMode>,
    /// Resume the VM once restored (otherwise it stays paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_memory_config_always_writes_thp_and_shared() {
        let memory = crate::map::sandbox_memory(1 << 30);
        let text = serde_json::to_string(&memory).unwrap();
        assert_eq!(text, r#"{"size":1073741824,"shared":true,"hugepages":false,"thp":false}"#);
    }

    #[test]
    fn test_memory_config_decodes_upstream_thp_default() {
        let memory: MemoryConfig = serde_json::from_str(r#"{"size":4096}"#).unwrap();
        assert!(memory.thp, "the schema's default for thp is true");
        assert!(!memory.shared);
    }

    #[test]
    fn test_vm_info_ignores_unmodelled_fields() {
        let text = r#"{
            "config": {
                "cpus": {"boot_vcpus": 2, "max_vcpus": 2, "topology": null, "kvm_hyperv": false},
                "memory": {"size": 536870912, "shared": true, "thp": false, "zones": null},
                "payload": {"kernel": "/k", "initramfs": null, "cmdline": "console=ttyS0"},
                "disks": null, "net": null, "iommu": false,
                "serial": {"file": null, "mode": "Tty", "iommu": false},
                "console": {"file": null, "mode": "Off", "iommu": false}
            },
            "state": "Running",
            "memory_actual_size": 536870912,
            "device_tree": {"_vsock": {"id": "_vsock", "resources": [], "children": [], "pci_bdf": "0000:00:03.0"}}
        }"#;
        let info: VmInfo = serde_json::from_str(text).unwrap();
        assert_eq!(info.state, VmState::Running);
        assert_eq!(info.config.payload.initramfs, None);
        assert_eq!(info.config.serial.unwrap().mode, ConsoleMode::Tty);
        assert_eq!(info.device_tree.unwrap()["_vsock"].pci_bdf.as_deref(), Some("0000:00:03.0"));
    }

    #[test]
    fn test_restore_config_spells_modes_as_the_schema() {
        let restore = RestoreConfig {
            source_url: "file:///s".into(),
            prefault: None,
            memory_restore_mode: Some(MemoryRestoreMode::OnDemand),
            resume: Some(true),
        };
        let text = serde_json::to_string(&restore).unwrap();
        assert_eq!(text, r#"{"source_url":"file:///s","memory_restore_mode":"OnDemand","resume":true}"#);
    }
}
