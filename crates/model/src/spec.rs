//! `VmSpec` and its parts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A whole microVM: CPUs, memory, how it boots, and its devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Number of vCPUs (at least 1).
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// How the guest boots.
    pub boot: Boot,
    /// Devices, in order.
    #[serde(default)]
    pub devices: Vec<Device>,
}

/// How the guest boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Boot {
    /// Linux direct boot.
    Linux {
        /// The kernel image (an ELF vmlinux with a PVH note for QEMU/Firecracker).
        kernel: PathBuf,
        /// An optional initramfs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        initrd: Option<PathBuf>,
        /// The kernel command line.
        #[serde(default)]
        cmdline: String,
    },
    /// Firmware boot (e.g. a UEFI image).
    Firmware {
        /// The firmware image.
        path: PathBuf,
    },
}

/// A device attached to the VM.
///
/// Deserialized through a private mirror enum, so that unknown fields are refused on `rng` too
/// (serde ignores them on a unit variant of an internally tagged enum).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields, from = "DeviceRepr")]
pub enum Device {
    /// A virtio block device.
    VirtioBlk {
        /// Stable device id, unique within the spec.
        id: String,
        /// Backing file.
        path: PathBuf,
        /// Read-only disk.
        #[serde(default)]
        readonly: bool,
    },
    /// A virtio network device on a TAP interface.
    VirtioNet {
        /// Stable device id, unique within the spec.
        id: String,
        /// Host TAP device name.
        tap: String,
        /// Guest MAC address, `aa:bb:cc:dd:ee:ff`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
    },
    /// A virtio vsock device.
    Vsock {
        /// Guest context id (3 or more).
        cid: u32,
        /// Host-side Unix socket for hybrid vsock backends.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        socket: Option<PathBuf>,
    },
    /// A virtio balloon.
    Balloon {
        /// Deflate when the guest runs out of memory.
        #[serde(default)]
        deflate_on_oom: bool,
        /// Report freed pages to the host.
        #[serde(default)]
        free_page_reporting: bool,
    },
    /// A virtio entropy source.
    Rng,
    /// A shared directory (virtio-fs).
    VirtioFs {
        /// Mount tag seen by the guest.
        tag: String,
        /// Host directory.
        path: PathBuf,
    },
}

/// The JSON shape of [`Device`] on input: the same, with `Rng` as an empty struct variant.
/// Keep in step with `Device`; the JSON golden and round-trip tests catch drift.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum DeviceRepr {
    VirtioBlk {
        id: String,
        path: PathBuf,
        #[serde(default)]
        readonly: bool,
    },
    VirtioNet {
        id: String,
        tap: String,
        #[serde(default)]
        mac: Option<String>,
    },
    Vsock {
        cid: u32,
        #[serde(default)]
        socket: Option<PathBuf>,
    },
    Balloon {
        #[serde(default)]
        deflate_on_oom: bool,
        #[serde(default)]
        free_page_reporting: bool,
    },
    Rng {},
    VirtioFs {
        tag: String,
        path: PathBuf,
    },
}

impl From<DeviceRepr> for Device {
    fn from(repr: DeviceRepr) -> Device {
        match repr {
            DeviceRepr::VirtioBlk { id, path, readonly } => Device::VirtioBlk { id, path, readonly },
            DeviceRepr::VirtioNet { id, tap, mac } => Device::VirtioNet { id, tap, mac },
            DeviceRepr::Vsock { cid, socket } => Device::Vsock { cid, socket },
            DeviceRepr::Balloon { deflate_on_oom, free_page_reporting } => {
                Device::Balloon { deflate_on_oom, free_page_reporting }
            }
            DeviceRepr::Rng {} => Device::Rng,
            DeviceRepr::VirtioFs { tag, path } => Device::VirtioFs { tag, path },
        }
    }
}

impl Boot {
    /// The name of this boot kind as JSON spells it (`linux`, `firmware`).
    pub fn kind(&self) -> &'static str {
        match self {
            Boot::Linux { .. } => "linux",
            Boot::Firmware { .. } => "firmware",
        }
    }
}

impl Device {
    /// The device type as JSON and the `--device` syntax spell it (`virtio-blk`, `rng`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Device::VirtioBlk { .. } => "virtio-blk",
            Device::VirtioNet { .. } => "virtio-net",
            Device::Vsock { .. } => "vsock",
            Device::Balloon { .. } => "balloon",
            Device::Rng => "rng",
            Device::VirtioFs { .. } => "virtio-fs",
        }
    }

    /// The device id, for the kinds that have one (`virtio-blk`, `virtio-net`).
    pub fn id(&self) -> Option<&str> {
        match self {
            Device::VirtioBlk { id, .. } | Device::VirtioNet { id, .. } => Some(id),
            Device::Vsock { .. } | Device::Balloon { .. } | Device::Rng | Device::VirtioFs { .. } => None,
        }
    }
}
