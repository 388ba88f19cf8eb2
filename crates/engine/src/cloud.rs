//! Cloud images: whole disks (a partition table, a bootloader, a root filesystem with
//! cloud-init) that boot through UEFI firmware rather than our kernel and initramfs.
//!
//! This module owns what makes them sandboxes: recognizing one on import, finding the firmware
//! for a hypervisor, and the per-sandbox NoCloud seed disk. The seed carries the instance id (the
//! sandbox id, so a clone is a new instance to cloud-init), the hostname, SSH keys, the mounts of
//! the sandbox's volumes and the guest agent itself, which a `bootcmd` copies out and starts as a
//! service on every boot. Stopping such a guest presses its ACPI power button.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nestbox_backend::{BackendError, BackendKind, Operation};
use nestbox_image::store::ImageKind;
use nestbox_seed::{Mount, NetworkConfig, Seed, SeedFile};

use crate::{EngineError, Volume, agent_binary};

/// How long a cloud image may take to boot when the user names no limit: firmware, a full
/// init and cloud-init take tens of seconds under TCG.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// UEFI firmware QEMU boots cloud images with, in the order looked for (Debian's and Ubuntu's
/// `ovmf` package, Fedora's `edk2-ovmf`).
pub const QEMU_FIRMWARE: &[&str] =
    &["/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd", "/usr/share/edk2/ovmf/OVMF.fd"];

/// Cloud Hypervisor's firmware (its `CLOUDHV.fd` EDK2 build, or `rust-hypervisor-firmware`).
pub const CHV_FIRMWARE: &[&str] = &[
    "/usr/share/cloud-hypervisor/CLOUDHV.fd",
    "/usr/local/share/cloud-hypervisor/CLOUDHV.fd",
    "/usr/share/cloud-hypervisor/hypervisor-fw",
    "/usr/local/share/cloud-hypervisor/hypervisor-fw",
];

/// The agent's file name on the seed disk.
pub const SEED_AGENT: &str = "nestbox-agent";

/// Where the guest copies the agent to and runs it from, replaced on each boot (on the root
/// disk: systemd mounts `/run` and `/tmp` may be `noexec`).
const GUEST_AGENT: &str = "/var/lib/nestbox/agent";

/// The seed disk's device id (QEMU gives it as the disk's serial).
pub const SEED_DISK_ID: &str = "seed";

/// The kind of disk image `path` holds, if it is one: a qcow2 file, or a raw disk with a
/// partition table (an MBR signature, which a GPT disk's protective MBR has too).
pub fn detect(path: &Path) -> Option<ImageKind> {
    let mut head = [0u8; 512];
    let mut file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    file.read_exact(&mut head).ok()?;
    if head.starts_with(b"QFI\xfb") {
        Some(ImageKind::CloudQcow2)
    } else if head[510..] == [0x55, 0xaa] {
        Some(ImageKind::CloudRaw)
    } else {
        None
    }
}

/// The firmware `hypervisor` boots a cloud image with: `explicit` when given, else the first of
/// its known locations that exists.
pub fn firmware(hypervisor: BackendKind, explicit: Option<&Path>) -> Result<PathBuf, EngineError> {
    let candidates: &[&str] = match hypervisor {
        BackendKind::Qemu => QEMU_FIRMWARE,
        BackendKind::CloudHypervisor => CHV_FIRMWARE,
        other => return Err(BackendError::Unsupported { backend: other, op: Operation::FirmwareBoot }.into()),
    };
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(EngineError::FirmwareMissing { path: path.to_path_buf() })
        };
    }
    candidates.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| EngineError::FirmwareNotFound {
        hypervisor,
        searched: candidates.iter().map(PathBuf::from).collect(),
    })
}

/// Refuses a cloud image on a hypervisor that cannot boot firmware, before anything is made.
pub fn check_hypervisor(hypervisor: BackendKind) -> Result<(), EngineError> {
    match hypervisor {
        BackendKind::Qemu | BackendKind::CloudHypervisor => Ok(()),
        other => Err(BackendError::Unsupported { backend: other, op: Operation::FirmwareBoot }.into()),
    }
}

/// How a cloud image boots: the firmware (found by [`firmware`] when not given) and the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudBoot {
    /// The firmware, when given explicitly (`--firmware`).
    pub firmware: Option<PathBuf>,
    /// The seed disk to write before each boot.
    pub seed: SeedRequest,
}

/// What a sandbox tells its guest through the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedRequest {
    /// Where the seed disk is written.
    pub path: PathBuf,
    /// cloud-init's instance id: the sandbox id.
    pub instance_id: String,
    /// The guest's hostname (made a valid one from the sandbox name by [`hostname_for`]).
    pub hostname: String,
    /// SSH public keys to authorize.
    pub ssh_keys: Vec<String>,
    /// Where the agent serves the host, as `nestbox-agent --service` takes it: `serial` (the
    /// virtio-serial port QEMU gives) or `vsock:PORT` (Cloud Hypervisor's hybrid vsock).
    pub agent_transport: String,
}

/// The agent transport a hypervisor reaches the agent of a cloud image by.
pub fn agent_transport(hypervisor: BackendKind) -> String {
    match hypervisor {
        BackendKind::Qemu => "serial".into(),
        _ => format!("vsock:{}", nestbox_backend::AGENT_VSOCK_PORT),
    }
}

/// A valid hostname for a sandbox name: lower-case letters, digits and dashes, at most 63.
pub fn hostname_for(name: &str) -> String {
    let mapped: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let trimmed = mapped.trim_matches('-');
    let mut host: String = trimmed.chars().take(63).collect();
    while host.ends_with('-') {
        host.pop();
    }
    if host.is_empty() { "sandbox".into() } else { host }
}

/// The seed for `req`, with `volumes` mounted where each says (they are the disks after the
/// root and the seed, named by their serials `vol0`, `vol1`, …).
///
/// The agent starts as a transient systemd service without default dependencies: `bootcmd`
/// runs inside cloud-init's early units, which `basic.target` waits for, so a service ordered
/// after it (the default) would wait for us, and a blocking `systemd-run` would never return.
pub fn seed(req: &SeedRequest, volumes: &[Volume]) -> Seed {
    let start_agent = format!(
        "mkdir -p /run/nestbox/seed /var/lib/nestbox && mount -r -L CIDATA /run/nestbox/seed && \
         cp /run/nestbox/seed/{SEED_AGENT} {GUEST_AGENT}.new && chmod 0755 {GUEST_AGENT}.new && \
         mv -f {GUEST_AGENT}.new {GUEST_AGENT}; \
         umount /run/nestbox/seed; \
         if command -v systemd-run >/dev/null; then \
         systemd-run --no-block --unit=nestbox-agent --collect -p DefaultDependencies=no \
         -p Conflicts=shutdown.target -p Before=shutdown.target {GUEST_AGENT} --service {transport}; \
         else setsid {GUEST_AGENT} --service {transport} </dev/null >/dev/null 2>&1 & fi",
        transport = req.agent_transport
    );
    Seed {
        instance_id: req.instance_id.clone(),
        hostname: req.hostname.clone(),
        ssh_authorized_keys: req.ssh_keys.clone(),
        bootcmd: vec![start_agent],
        mounts: volumes
            .iter()
            .enumerate()
            .map(|(i, v)| Mount {
                device: format!("/dev/disk/by-id/virtio-vol{i}"),
                path: v.guest_path.clone(),
                readonly: v.readonly,
            })
            .collect(),
        files: vec![SeedFile { name: SEED_AGENT.into(), contents: agent_binary::AGENT.to_vec() }],
        network: NetworkConfig::Dhcp,
    }
}

/// Writes the seed disk for `req`.
pub fn write_seed(req: &SeedRequest, volumes: &[Volume]) -> Result<(), EngineError> {
    Ok(seed(req, volumes).write(&req.path)?)
}

/// Reads SSH public keys: each argument is a key itself (`ssh-ed25519 AAAA… comment`) or a file
/// of them, one per line (blank lines and `#` comments skipped).
pub fn read_ssh_keys(args: &[String]) -> Result<Vec<String>, EngineError> {
    let mut keys = Vec::new();
    for arg in args {
        let is_key = |s: &str| {
            let kind = s.split_whitespace().next().unwrap_or("");
            kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-")
        };
        if is_key(arg) {
            keys.push(arg.trim().to_owned());
            continue;
        }
        let text = std::fs::read_to_string(arg).map_err(|e| EngineError::SshKey {
            value: arg.clone(),
            reason: format!("not a public key, and not a readable file ({e})"),
        })?;
        let found: Vec<String> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
        if let Some(bad) = found.iter().find(|l| !is_key(l)) {
            let shown: String = bad.chars().take(24).collect();
            return Err(EngineError::SshKey {
                value: arg.clone(),
                reason: format!("line {shown:?} is not a public key"),
            });
        }
        if found.is_empty() {
            return Err(EngineError::SshKey { value: arg.clone(), reason: "the file holds no key".into() });
        }
        keys.extend(found);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_detect_tells_qcow2_and_partitioned_raw_disks_from_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let qcow2 = dir.path().join("a.qcow2");
        std::fs::write(&qcow2, [b"QFI\xfb".as_slice(), &[0u8; 1020]].concat()).unwrap();
        let mut mbr = vec![0u8; 1024];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        let raw = dir.path().join("a.raw");
        std::fs::write(&raw, &mbr).unwrap();
        let plain = dir.path().join("a.tar");
        std::fs::write(&plain, vec![0u8; 1024]).unwrap();
        std::fs::write(dir.path().join("short"), b"QF").unwrap();
        assert_eq!(detect(&qcow2), Some(ImageKind::CloudQcow2));
        assert_eq!(detect(&raw), Some(ImageKind::CloudRaw));
        assert_eq!(detect(&plain), None);
        assert_eq!(detect(&dir.path().join("short")), None);
        assert_eq!(detect(dir.path()), None, "a directory is no disk");
    }

    #[test]
    fn test_firmware_is_refused_on_firecracker_and_a_missing_explicit_file_is_named() {
        let fc = firmware(BackendKind::Firecracker, None).unwrap_err();
        assert!(matches!(fc, EngineError::Backend(BackendError::Unsupported { op: Operation::FirmwareBoot, .. })));
        let missing = firmware(BackendKind::Qemu, Some(Path::new("/nonexistent/OVMF.fd"))).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/OVMF.fd"), "{missing}");
        let dir = tempfile::tempdir().unwrap();
        let fw = dir.path().join("fw.fd");
        std::fs::write(&fw, b"fw").unwrap();
        assert_eq!(firmware(BackendKind::CloudHypervisor, Some(&fw)).unwrap(), fw);
        assert!(check_hypervisor(BackendKind::Firecracker).is_err());
        assert!(check_hypervisor(BackendKind::Qemu).is_ok());
    }

    #[test]
    fn test_hostname_for_makes_a_valid_label() {
        assert_eq!(hostname_for("web_1.prod"), "web-1-prod");
        assert_eq!(hostname_for("-Alpha-"), "alpha");
        assert_eq!(hostname_for("___"), "sandbox");
        let long = hostname_for(&format!("{}-{}", "a".repeat(62), "b"));
        assert_eq!(long, "a".repeat(62), "cut to 63 without a trailing dash");
    }

    #[test]
    fn test_seed_starts_the_agent_mounts_volumes_and_names_the_instance() {
        let req = SeedRequest {
            path: "/sb/seed.img".into(),
            instance_id: "abc".into(),
            hostname: "box".into(),
            ssh_keys: vec!["ssh-ed25519 AAAA k".into()],
            agent_transport: agent_transport(BackendKind::CloudHypervisor),
        };
        let volumes = [Volume { path: "/d.img".into(), guest_path: "/data".into(), readonly: true }];
        let seed = seed(&req, &volumes);
        assert_eq!((seed.instance_id.as_str(), seed.hostname.as_str()), ("abc", "box"));
        let vsock = format!("--service vsock:{}", nestbox_backend::AGENT_VSOCK_PORT);
        assert!(seed.bootcmd[0].contains(&vsock) && seed.bootcmd[0].contains("-L CIDATA"), "{:?}", seed.bootcmd);
        assert_eq!(agent_transport(BackendKind::Qemu), "serial");
        assert_eq!(
            seed.mounts,
            [Mount { device: "/dev/disk/by-id/virtio-vol0".into(), path: "/data".into(), readonly: true }]
        );
        assert_eq!(seed.files[0].name, SEED_AGENT);
        assert_eq!(&seed.files[0].contents[..4], b"\x7fELF");
    }

    #[test]
    fn test_ssh_keys_come_inline_or_from_files_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.pub");
        std::fs::write(&file, "# mine\nssh-rsa AAAAB a@b\n\necdsa-sha2-nistp256 AAAAE c@d\n").unwrap();
        let keys = read_ssh_keys(&["ssh-ed25519 AAAAC x".into(), file.display().to_string()]).unwrap();
        assert_eq!(keys, ["ssh-ed25519 AAAAC x", "ssh-rsa AAAAB a@b", "ecdsa-sha2-nistp256 AAAAE c@d"]);
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        let e = read_ssh_keys(&[bad.display().to_string()]).unwrap_err().to_string();
        assert!(e.contains("--ssh-key") && e.contains("not a public key"), "{e}");
        let e = read_ssh_keys(&["/nonexistent.pub".into()]).unwrap_err().to_string();
        assert!(e.contains("/nonexistent.pub"), "{e}");
    }
}
