//! `doctor`: for each backend, the binary found, its version, whether it can run a VM here,
//! and why not; and what the guest kernel needs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nestbox_backend::BackendKind;
use nestbox_kernel::{KernelConfig, ResolvedKernel};
use serde::Serialize;

use crate::accel;

/// How long `<binary> --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// One backend's state on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendReport {
    /// Which backend.
    pub backend: BackendKind,
    /// The binary found, if any.
    pub binary: Option<PathBuf>,
    /// The first line of `<binary> --version`.
    pub version: Option<String>,
    /// Whether it can run a VM here.
    pub usable: bool,
    /// Why not, or how (e.g. "TCG: KVM is not usable …").
    pub note: Option<String>,
}

/// The guest kernel's facts that decide how it boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelReport {
    /// The kernel found (or passed).
    pub source: PathBuf,
    /// Its release.
    pub version: Option<String>,
    /// The transport Firecracker needs for it: `virtio-mmio`, `virtio-pci`, or unknown.
    pub firecracker_transport: Option<String>,
    /// Why that transport.
    pub transport_note: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorReport {
    /// One entry per backend nestbox drives on Linux.
    pub backends: Vec<BackendReport>,
    /// The guest kernel, when one was found.
    pub kernel: Option<KernelReport>,
    /// Why no kernel was found.
    pub kernel_error: Option<String>,
}

/// The environment variable naming a backend's binary (the configuration between flag and PATH).
pub fn binary_env(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Qemu => "NESTBOX_QEMU",
        BackendKind::Firecracker => "NESTBOX_FIRECRACKER",
        BackendKind::CloudHypervisor => "NESTBOX_CLOUD_HYPERVISOR",
        BackendKind::Vfkit => "NESTBOX_VFKIT",
    }
}

/// The program name searched on PATH for a backend.
pub fn binary_name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Qemu => nestbox_backend_qemu::QEMU_BINARY,
        BackendKind::Firecracker => "firecracker",
        BackendKind::CloudHypervisor => "cloud-hypervisor",
        BackendKind::Vfkit => "vfkit",
    }
}

/// [`locate_binary`], or the error that names the binary and the package that provides it.
pub fn require_binary(kind: BackendKind, explicit: Option<&Path>) -> Result<PathBuf, nestbox_backend::BackendError> {
    locate_binary(kind, explicit).ok_or_else(|| nestbox_backend::BackendError::BinaryNotFound {
        binary: binary_name(kind).into(),
        package: crate::run::package_of(kind).into(),
    })
}

/// A backend's binary: `explicit` (a flag), else `$NESTBOX_<BACKEND>`, else PATH.
pub fn locate_binary(kind: BackendKind, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    if let Some(path) = std::env::var_os(binary_env(kind)).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    nestbox_supervise::find_program(binary_name(kind))
}

/// The first line `binary --version` prints, within [`VERSION_TIMEOUT`].
pub async fn version_of(binary: &Path) -> Option<String> {
    let run = tokio::process::Command::new(binary).arg("--version").kill_on_drop(true).output();
    let out = tokio::time::timeout(VERSION_TIMEOUT, run).await.ok()?.ok()?;
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    String::from_utf8_lossy(&text).lines().next().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty())
}

/// Builds the report. `cache_dir` holds the KVM probe's answer.
pub async fn diagnose(cache_dir: &Path, kernel: Result<&ResolvedKernel, String>, boot_dir: &Path) -> DoctorReport {
    let qemu = locate_binary(BackendKind::Qemu, None);
    let kvm = match (&qemu, &kernel) {
        (Some(q), Ok(k)) => accel::kvm_usable(cache_dir, q, k).await,
        (None, _) => Err(format!("cannot probe KVM without {}", nestbox_backend_qemu::QEMU_BINARY)),
        (_, Err(e)) => Err(format!("cannot probe KVM without a guest kernel ({e})")),
    };
    let mut backends = Vec::new();
    for kind in [BackendKind::Qemu, BackendKind::Firecracker, BackendKind::CloudHypervisor] {
        let binary = locate_binary(kind, None);
        let version = match &binary {
            Some(b) => version_of(b).await,
            None => None,
        };
        let (usable, note) = match (&binary, kind, &kvm) {
            (None, _, _) => {
                (false, Some(format!("{} not found on PATH or in ${}", binary_name(kind), binary_env(kind))))
            }
            (Some(_), BackendKind::Qemu, Ok(())) => (true, Some("KVM".to_owned())),
            (Some(_), BackendKind::Qemu, Err(why)) => {
                (true, Some(format!("TCG software emulation: KVM is not usable ({why})")))
            }
            (Some(_), _, Ok(())) if version.is_none() => {
                (false, Some("the binary did not answer --version".to_owned()))
            }
            (Some(_), _, Ok(())) => (true, None),
            (Some(_), _, Err(why)) => (false, Some(format!("needs a working KVM: {why}"))),
        };
        backends.push(BackendReport { backend: kind, binary, version, usable, note });
    }
    let (kernel, kernel_error) = match kernel {
        Ok(k) => (Some(kernel_report(k, boot_dir)), None),
        Err(e) => (None, Some(e)),
    };
    DoctorReport { backends, kernel, kernel_error }
}

fn kernel_report(kernel: &ResolvedKernel, boot_dir: &Path) -> KernelReport {
    let config = kernel.version.as_deref().and_then(|v| KernelConfig::for_version(boot_dir, v));
    let (transport, note) = match config.as_ref().map(KernelConfig::firecracker_transport) {
        Some(Some(t @ nestbox_kernel::VirtioTransport::Mmio)) => {
            (Some(t), "the kernel takes virtio-mmio devices from its command line".to_owned())
        }
        Some(Some(t @ nestbox_kernel::VirtioTransport::Pci)) => (
            Some(t),
            "no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES: Firecracker must run with --enable-pci (1.13 or later)".to_owned(),
        ),
        Some(None) => (
            None,
            "neither virtio-mmio command-line devices nor virtio-pci: Firecracker cannot give it devices".to_owned(),
        ),
        None => (None, "no build config found for this kernel: transport unknown (virtio-pci is tried)".to_owned()),
    };
    KernelReport {
        source: kernel.source.clone(),
        version: kernel.version.clone(),
        firecracker_transport: transport.map(|t| t.to_string()),
        transport_note: note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_locate_binary_prefers_the_flag() {
        assert_eq!(locate_binary(BackendKind::Firecracker, Some(Path::new("/x/fc"))), Some(PathBuf::from("/x/fc")));
    }

    #[tokio::test]
    async fn test_version_of_reads_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake");
        std::fs::write(&script, "#!/bin/sh\necho 'Firecracker v1.16.1'\necho second\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        assert_eq!(version_of(&script).await.as_deref(), Some("Firecracker v1.16.1"));
        assert_eq!(version_of(Path::new("/nonexistent/fc")).await, None);
    }

    #[test]
    fn test_kernel_report_names_the_transport() {
        let boot = tempfile::tempdir().unwrap();
        std::fs::write(boot.path().join("config-6.1-t"), "CONFIG_PCI=y\nCONFIG_VIRTIO_PCI=m\n").unwrap();
        let kernel = ResolvedKernel {
            vmlinux: "/k".into(),
            source: "/boot/vmlinuz-6.1-t".into(),
            version: Some("6.1-t".into()),
            modules_dir: None,
            pvh_entry: 0,
            sha256: String::new(),
        };
        let r = kernel_report(&kernel, boot.path());
        assert_eq!(r.firecracker_transport.as_deref(), Some("virtio-pci"));
        assert!(r.transport_note.contains("--enable-pci"));
        let r = kernel_report(&ResolvedKernel { version: Some("other".into()), ..kernel }, boot.path());
        assert_eq!(r.firecracker_transport, None);
    }
}
