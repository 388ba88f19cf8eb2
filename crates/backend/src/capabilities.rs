//! What each backend can do, as data checked before launch.

use nestbox_model::{Boot, Device, VmSpec};
use serde::{Deserialize, Serialize};

use crate::BackendError;

/// The hypervisors nestbox drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// QEMU, through QMP.
    Qemu,
    /// Firecracker, through its HTTP API.
    Firecracker,
    /// Cloud Hypervisor, through its HTTP API.
    CloudHypervisor,
    /// vfkit on macOS.
    Vfkit,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Qemu => "qemu",
            BackendKind::Firecracker => "firecracker",
            BackendKind::CloudHypervisor => "cloud-hypervisor",
            BackendKind::Vfkit => "vfkit",
        })
    }
}

/// An operation a backend may or may not support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// Launch a VM at all (vfkit, for one, only runs on macOS).
    Launch,
    /// Pause and resume vCPUs.
    Pause,
    /// Take a snapshot.
    Snapshot,
    /// Restore from a snapshot.
    Restore,
    /// Restore reading all memory first.
    RestoreCopy,
    /// Restore serving memory on first touch (userfaultfd).
    RestoreLazy,
    /// Restore mapping the memory file copy-on-write.
    RestoreShared,
    /// Resize the balloon.
    ResizeBalloon,
    /// Boot from firmware instead of a kernel.
    FirmwareBoot,
    /// A virtio-blk disk.
    DeviceBlock,
    /// A virtio-net NIC on a TAP.
    DeviceNet,
    /// A vsock device.
    DeviceVsock,
    /// A balloon device.
    DeviceBalloon,
    /// An entropy device.
    DeviceRng,
    /// A virtio-fs share.
    DeviceFs,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

/// The static facts about a backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Supported operations.
    pub operations: Vec<Operation>,
}

impl Capabilities {
    /// Whether `op` is supported.
    pub fn supports(&self, op: Operation) -> bool {
        self.operations.contains(&op)
    }

    /// Returns `Unsupported` for the first part of `spec` this backend cannot do.
    pub fn check(&self, backend: BackendKind, spec: &VmSpec) -> Result<(), BackendError> {
        let mut needed = Vec::new();
        if matches!(spec.boot, Boot::Firmware { .. }) {
            needed.push(Operation::FirmwareBoot);
        }
        for device in &spec.devices {
            needed.push(match device {
                Device::VirtioBlk { .. } => Operation::DeviceBlock,
                Device::VirtioNet { .. } => Operation::DeviceNet,
                Device::Vsock { .. } => Operation::DeviceVsock,
                Device::Balloon { .. } => Operation::DeviceBalloon,
                Device::Rng => Operation::DeviceRng,
                Device::VirtioFs { .. } => Operation::DeviceFs,
            });
        }
        match needed.into_iter().find(|op| !self.supports(*op)) {
            Some(op) => Err(BackendError::Unsupported { backend, op }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn spec(devices: Vec<Device>) -> VmSpec {
        VmSpec {
            vcpus: 1,
            memory_mib: 128,
            boot: Boot::Linux { kernel: PathBuf::from("/k"), initrd: None, cmdline: String::new() },
            devices,
        }
    }

    #[test]
    fn test_check_names_backend_and_operation() {
        let caps = Capabilities { operations: vec![Operation::DeviceRng] };
        assert!(caps.check(BackendKind::Qemu, &spec(vec![Device::Rng])).is_ok());
        let err = caps
            .check(BackendKind::Qemu, &spec(vec![Device::VirtioFs { tag: "t".into(), path: "/s".into() }]))
            .unwrap_err();
        assert_eq!(err.to_string(), "qemu does not support device-fs");
    }
}
