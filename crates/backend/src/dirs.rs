//! The files a running VM owns: one directory, fixed names inside it.

use std::path::{Path, PathBuf};

/// The per-VM directory and the well-known paths inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDirs {
    root: PathBuf,
}

impl VmDirs {
    /// Uses `root` (which must exist) as the VM's directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The hypervisor's control socket (QMP, or the HTTP API).
    pub fn api_socket(&self) -> PathBuf {
        self.root.join("api.sock")
    }
    /// The socket that carries the guest agent's stream, as the hypervisor exposes it
    /// (virtio-serial for QEMU, hybrid vsock for Firecracker and Cloud Hypervisor). Only the
    /// sandbox's shim connects here; clients use the shim's multiplexed `agent.sock`.
    pub fn agent_socket(&self) -> PathBuf {
        self.root.join("vm-agent.sock")
    }
    /// The bounded guest console log.
    pub fn console_log(&self) -> PathBuf {
        self.root.join("console.log")
    }
    /// The hypervisor's own stderr log.
    pub fn hypervisor_log(&self) -> PathBuf {
        self.root.join("hypervisor.log")
    }
}
