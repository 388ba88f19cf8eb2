//! The kernel's build configuration (`/boot/config-<version>`), for the questions nestbox asks of
//! a kernel: can it find virtio-mmio devices from the command line (Firecracker's default
//! transport), or does it need virtio-pci?

use std::collections::HashMap;
use std::path::Path;

/// A parsed `config-<version>` file: `CONFIG_X=y|m|"string"`; `# CONFIG_X is not set` is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelConfig {
    values: HashMap<String, String>,
}

/// How a guest kernel finds Firecracker's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioTransport {
    /// virtio-mmio devices described on the command line (`CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y`).
    Mmio,
    /// virtio-pci (Firecracker's `--enable-pci`); needs `CONFIG_PCI` and `CONFIG_VIRTIO_PCI`.
    Pci,
}

impl std::fmt::Display for VirtioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VirtioTransport::Mmio => "virtio-mmio",
            VirtioTransport::Pci => "virtio-pci",
        })
    }
}

impl KernelConfig {
    /// Parses the text of a config file.
    pub fn parse(text: &str) -> Self {
        let values = text
            .lines()
            .filter(|l| l.starts_with("CONFIG_"))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        Self { values }
    }

    /// `<boot>/config-<version>`, when it exists.
    pub fn for_version(boot: &Path, version: &str) -> Option<Self> {
        std::fs::read_to_string(boot.join(format!("config-{version}"))).ok().map(|t| Self::parse(&t))
    }

    /// The value of `CONFIG_<name>` (`y`, `m`, a number or a string), if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(&format!("CONFIG_{name}")).map(String::as_str)
    }

    /// Whether `CONFIG_<name>` is built in or a module.
    pub fn enabled(&self, name: &str) -> bool {
        matches!(self.get(name), Some("y" | "m"))
    }

    /// The transport Firecracker must use for this kernel's devices: mmio when the kernel takes
    /// mmio devices from its command line, else pci when it has virtio-pci, else `None`.
    pub fn firecracker_transport(&self) -> Option<VirtioTransport> {
        if self.get("VIRTIO_MMIO_CMDLINE_DEVICES") == Some("y") && self.enabled("VIRTIO_MMIO") {
            Some(VirtioTransport::Mmio)
        } else if self.enabled("PCI") && self.enabled("VIRTIO_PCI") {
            Some(VirtioTransport::Pci)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_and_transport() {
        let debian = "CONFIG_PCI=y\nCONFIG_VIRTIO_PCI=m\nCONFIG_VIRTIO_MMIO=m\n# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set\nCONFIG_LOCALVERSION=\"-x\"\n";
        let c = KernelConfig::parse(debian);
        assert_eq!(c.get("LOCALVERSION"), Some("-x"));
        assert!(c.enabled("VIRTIO_PCI"));
        assert!(!c.enabled("VIRTIO_MMIO_CMDLINE_DEVICES"));
        assert_eq!(c.firecracker_transport(), Some(VirtioTransport::Pci));
        let fc = KernelConfig::parse("CONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\n");
        assert_eq!(fc.firecracker_transport(), Some(VirtioTransport::Mmio));
        assert_eq!(KernelConfig::parse("CONFIG_VIRTIO=y\n").firecracker_transport(), None);
    }

    #[test]
    fn test_for_version_reads_boot_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config-6.1.0-x"), "CONFIG_PCI=y\n").unwrap();
        assert!(KernelConfig::for_version(dir.path(), "6.1.0-x").unwrap().enabled("PCI"));
        assert_eq!(KernelConfig::for_version(dir.path(), "missing"), None);
    }

    #[test]
    fn test_host_kernel_needs_pci_when_debian() {
        let Some(c) = KernelConfig::for_version(Path::new("/boot"), "6.1.0-56-cloud-amd64") else {
            eprintln!("skipped: no /boot/config-6.1.0-56-cloud-amd64");
            return;
        };
        assert_eq!(c.firecracker_transport(), Some(VirtioTransport::Pci));
    }
}
