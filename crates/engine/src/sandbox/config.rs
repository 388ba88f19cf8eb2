//! What a sandbox is made of, as the user asked for it at `create`: stored as JSON in the
//! sandbox's record (and in `spec.json` beside it), and turned into a [`BootRequest`] each time it
//! starts, so a kernel or QEMU upgrade between starts is picked up.

use std::path::PathBuf;
use std::time::Duration;

use nestbox_backend::BackendKind;
use serde::{Deserialize, Serialize};

use crate::BootRequest;
use crate::accel::AccelChoice;

/// A sandbox's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// Which hypervisor runs it.
    pub hypervisor: BackendKind,
    /// Its binary, when given explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor_binary: Option<PathBuf>,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// The kernel, when given explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    /// Extra kernel command-line words.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// The accelerator choice (QEMU).
    pub accel: AccelChoice,
    /// How long a start may take, in milliseconds.
    pub boot_timeout_ms: u64,
    /// Environment every exec starts with (an exec's own `--env` comes after).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The working directory execs start in, when they name none (from the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The user execs run as, when they name none (from the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Data disks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::Volume>,
    /// The root disk, when the sandbox runs on an image rather than the default initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskConfig>,
    /// The UEFI firmware a cloud image boots with, when given explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<PathBuf>,
    /// SSH public keys a cloud image's cloud-init authorizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
}

/// A sandbox's root disk: its own copy-on-write disk over an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskConfig {
    /// The image's id.
    pub image: String,
    /// What the image is: a root filesystem, or a cloud image booted by firmware.
    #[serde(default)]
    pub kind: nestbox_image::store::ImageKind,
    /// The name it was asked for by, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    /// How the sandbox's disk was made over the image (`qcow2`, `reflink`, `sparse-copy`).
    pub overlay: crate::disk::OverlayKind,
    /// The disk's file name in the sandbox's directory.
    pub file: String,
    /// Its size when made larger than the image (`--disk-size`), MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mib: Option<u32>,
}

/// The kernel argument that gives the guest a shell on its serial console (`nestbox console`).
pub const CONSOLE_SHELL_ARG: &str = "nestbox.console=shell";

/// The file a cloud image sandbox's seed disk is written to, in its directory.
pub const SEED_FILE: &str = "seed.img";

impl SandboxConfig {
    /// Whether the sandbox boots a cloud image through firmware.
    pub fn is_cloud(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| d.kind.is_cloud())
    }

    /// The boot request for one start of the sandbox `id` named `name`, whose directory is `dir`.
    pub fn boot_request(&self, dir: &std::path::Path, id: &str, name: &str) -> BootRequest {
        let cloud = self.is_cloud().then(|| crate::cloud::CloudBoot {
            firmware: self.firmware.clone(),
            seed: crate::cloud::SeedRequest {
                path: dir.join(SEED_FILE),
                instance_id: id.to_owned(),
                hostname: crate::cloud::hostname_for(name),
                ssh_keys: self.ssh_keys.clone(),
                agent_transport: crate::cloud::agent_transport(self.hypervisor),
            },
        });
        let mut kernel_args = vec![CONSOLE_SHELL_ARG.to_owned()];
        kernel_args.extend(self.kernel_args.iter().cloned());
        BootRequest {
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            kernel: self.kernel.clone(),
            kernel_args,
            boot_timeout: self.boot_timeout(),
            accel: self.accel,
            hypervisor: self.hypervisor,
            hypervisor_binary: self.hypervisor_binary.clone(),
            root_disk: self.disk.as_ref().map(|d| dir.join(&d.file)),
            volumes: self.volumes.clone(),
            cloud,
        }
    }

    /// How long a start may take.
    pub fn boot_timeout(&self) -> Duration {
        Duration::from_millis(self.boot_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SandboxConfig {
        SandboxConfig {
            hypervisor: BackendKind::Qemu,
            hypervisor_binary: None,
            vcpus: 2,
            memory_mib: 256,
            kernel: Some("/boot/vmlinuz".into()),
            kernel_args: vec!["quiet".into()],
            accel: AccelChoice::Tcg,
            boot_timeout_ms: 30_000,
            env: vec![("A".into(), "1".into())],
            workdir: None,
            user: None,
            volumes: Vec::new(),
            disk: None,
            firmware: None,
            ssh_keys: Vec::new(),
        }
    }

    #[test]
    fn test_config_round_trips_through_json() {
        let c = config();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["hypervisor"], "qemu");
        assert_eq!(json["accel"], "tcg");
        assert_eq!(serde_json::from_value::<SandboxConfig>(json).unwrap(), c);
    }

    #[test]
    fn test_boot_request_adds_the_console_shell_before_user_arguments() {
        let req = config().boot_request(std::path::Path::new("/sb"), "id1", "web_1");
        assert_eq!(req.root_disk, None);
        assert_eq!(req.cloud, None);
        assert_eq!(req.kernel_args, vec![CONSOLE_SHELL_ARG.to_owned(), "quiet".into()]);
        assert_eq!(req.boot_timeout, Duration::from_secs(30));
        assert_eq!((req.vcpus, req.memory_mib), (2, 256));
    }

    #[test]
    fn test_a_cloud_image_boots_with_a_seed_named_for_the_sandbox() {
        let mut c = config();
        c.disk = Some(DiskConfig {
            image: "i".into(),
            kind: nestbox_image::store::ImageKind::CloudQcow2,
            image_name: None,
            overlay: crate::disk::OverlayKind::Qcow2,
            file: "root.qcow2".into(),
            size_mib: None,
        });
        c.ssh_keys = vec!["ssh-ed25519 AAAA k".into()];
        let req = c.boot_request(std::path::Path::new("/sb"), "id1", "web_1");
        let cloud = req.cloud.unwrap();
        assert_eq!(cloud.seed.path, std::path::Path::new("/sb").join(SEED_FILE));
        assert_eq!((cloud.seed.instance_id.as_str(), cloud.seed.hostname.as_str()), ("id1", "web-1"));
        assert_eq!(cloud.seed.ssh_keys, c.ssh_keys);
        assert_eq!(req.root_disk.as_deref(), Some(std::path::Path::new("/sb/root.qcow2")));
        // Records written before kinds existed are root filesystems.
        let old = serde_json::json!({"image": "i", "overlay": "qcow2", "file": "root.qcow2"});
        assert!(!serde_json::from_value::<DiskConfig>(old).unwrap().kind.is_cloud());
    }
}
