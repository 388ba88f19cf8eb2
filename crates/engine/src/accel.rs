//! Choosing the accelerator: KVM only when a probe shows it really runs a guest.
//!
//! The probe (see `nestbox_backend_qemu::probe`) boots the guest kernel under KVM, so its
//! answer is cached in `$NESTBOX_HOME/cache/kvm-probe.json`, keyed by the host's boot id, the
//! QEMU binary and the kernel: a reboot, a QEMU upgrade or another kernel asks again.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use nestbox_backend::VmDirs;
use nestbox_backend_qemu::{Accel, QemuArgs, probe};
use nestbox_initramfs::busybox::Busybox;
use nestbox_kernel::ResolvedKernel;
use nestbox_model::{Boot, VmSpec};
use nestbox_supervise::OsSpawner;
use serde::{Deserialize, Serialize};

use crate::EngineError;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM when the probe passes, else TCG.
    #[default]
    Auto,
    /// KVM, as the user says: only checks that `/dev/kvm` opens, no boot probe (the user
    /// overrides the probe's verdict; a KVM that cannot boot shows as a boot timeout).
    Kvm,
    /// TCG.
    Tcg,
}

impl FromStr for AccelChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "kvm" => Ok(Self::Kvm),
            "tcg" => Ok(Self::Tcg),
            other => Err(format!("invalid accelerator {other:?}: expected auto, kvm or tcg")),
        }
    }
}

/// The accelerator to use, and (for `auto` falling back) why not KVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelDecision {
    /// The accelerator.
    pub accel: Accel,
    /// A one-line explanation when `auto` chose TCG.
    pub note: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct CachedProbe {
    boot_id: String,
    qemu: PathBuf,
    qemu_mtime: u64,
    kernel_sha256: String,
    usable: bool,
    reason: String,
}

/// Decides the accelerator for `choice`, probing KVM with `kernel` when needed.
pub async fn choose(
    choice: AccelChoice,
    cache_dir: &Path,
    qemu: &Path,
    kernel: &ResolvedKernel,
) -> Result<AccelDecision, EngineError> {
    match choice {
        AccelChoice::Tcg => Ok(AccelDecision { accel: Accel::Tcg, note: None }),
        AccelChoice::Kvm => match open_kvm() {
            Ok(()) => Ok(AccelDecision { accel: Accel::Kvm, note: None }),
            Err(reason) => Err(EngineError::KvmUnusable { reason }),
        },
        AccelChoice::Auto => Ok(match kvm_usable(cache_dir, qemu, kernel).await {
            Ok(()) => AccelDecision { accel: Accel::Kvm, note: None },
            Err(reason) => AccelDecision {
                accel: Accel::Tcg,
                note: Some(format!("KVM is not usable ({reason}); using TCG software emulation")),
            },
        }),
    }
}

/// `Ok(())` when `/dev/kvm` opens for reading and writing.
pub fn open_kvm() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("cannot open /dev/kvm: {e}"))
}

/// `Ok(())` when KVM runs `kernel` on this host, else the reason it does not.
pub async fn kvm_usable(cache_dir: &Path, qemu: &Path, kernel: &ResolvedKernel) -> Result<(), String> {
    open_kvm()?;
    let key = probe_key(qemu, kernel);
    let cache_file = cache_dir.join(PROBE_CACHE_FILE);
    if let Some(cached) = cached_answer(&cache_file, &key) {
        return cached;
    }
    let result = probe_now(cache_dir, qemu, kernel).await;
    let entry = CachedProbe { usable: result.is_ok(), reason: result.clone().err().unwrap_or_default(), ..key };
    // A cache that cannot be written only costs a probe next time.
    if let Ok(json) = serde_json::to_vec(&entry) {
        let tmp = cache_dir.join(format!("{PROBE_CACHE_FILE}.{}", std::process::id()));
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, &cache_file);
        }
    }
    result
}

/// Whether `kvm_usable` would answer from its cache (no probe, no wait).
pub fn probe_is_cached(cache_dir: &Path, qemu: &Path, kernel: &ResolvedKernel) -> bool {
    cached_answer(&cache_dir.join(PROBE_CACHE_FILE), &probe_key(qemu, kernel)).is_some()
}

/// The probe cache's file name under `$NESTBOX_HOME/cache`.
const PROBE_CACHE_FILE: &str = "kvm-probe.json";

/// What a cached answer must match: this boot, this QEMU, this kernel.
fn probe_key(qemu: &Path, kernel: &ResolvedKernel) -> CachedProbe {
    CachedProbe {
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_owned(),
        qemu: qemu.to_path_buf(),
        qemu_mtime: std::fs::metadata(qemu)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
        kernel_sha256: kernel.sha256.clone(),
        usable: false,
        reason: String::new(),
    }
}

/// The cached answer in `path`, when it was given for `key`.
fn cached_answer(path: &Path, key: &CachedProbe) -> Option<Result<(), String>> {
    let cached = read_cache(path)?;
    let same = (&cached.boot_id, &cached.qemu, cached.qemu_mtime, &cached.kernel_sha256)
        == (&key.boot_id, &key.qemu, key.qemu_mtime, &key.kernel_sha256);
    same.then_some(if cached.usable { Ok(()) } else { Err(cached.reason) })
}

fn read_cache(path: &Path) -> Option<CachedProbe> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

async fn probe_now(cache_dir: &Path, qemu: &Path, kernel: &ResolvedKernel) -> Result<(), String> {
    std::fs::create_dir_all(cache_dir).map_err(|e| format!("cannot create {}: {e}", cache_dir.display()))?;
    let work = cache_dir.join(format!("kvm-probe.{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let result = probe_in(&work, qemu, kernel).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn probe_in(work: &Path, qemu: &Path, kernel: &ResolvedKernel) -> Result<(), String> {
    // Step 1: a few instructions; fails fast where KVM runs nothing.
    let elf = work.join("probe.elf");
    std::fs::write(&elf, nestbox_kernel::tiny_pvh_elf(&probe::probe_code()))
        .map_err(|e| format!("cannot write {}: {e}", elf.display()))?;
    probe::run_probe(&OsSpawner, qemu, &elf, Accel::Kvm, probe::PROBE_TIMEOUT).await?;
    // Step 2: the real kernel to userspace.
    let busybox = Busybox::load(None).map_err(|e| e.to_string())?;
    let script = format!("/bin/busybox echo {}\n/bin/busybox poweroff -f", probe::BOOT_PROBE_MARKER);
    let image = nestbox_initramfs::script_image(&busybox, &script).map_err(|e| e.to_string())?;
    let initrd = work.join("probe.cpio");
    std::fs::write(&initrd, image).map_err(|e| format!("cannot write {}: {e}", initrd.display()))?;
    let spec = VmSpec {
        vcpus: 1,
        memory_mib: PROBE_MEMORY_MIB,
        boot: Boot::Linux {
            kernel: kernel.vmlinux.clone(),
            initrd: Some(initrd),
            cmdline: crate::guest::DEFAULT_CMDLINE.into(),
        },
        devices: vec![],
    };
    let args = QemuArgs {
        name: "nestbox-kvm-probe".into(),
        accel: Accel::Kvm,
        tsc_khz: 0,
        agent: false,
        memory: None,
        incoming: false,
    }
    .build(&spec, &VmDirs::new(work))
    .map_err(|e| e.to_string())?;
    probe::run_boot_probe(&OsSpawner, qemu, args, probe::BOOT_PROBE_TIMEOUT).await
}

/// Memory for the boot probe guest.
const PROBE_MEMORY_MIB: u32 = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_accel_choice_parses_and_names_bad_values() {
        assert_eq!("auto".parse::<AccelChoice>(), Ok(AccelChoice::Auto));
        assert_eq!("kvm".parse::<AccelChoice>(), Ok(AccelChoice::Kvm));
        assert_eq!("tcg".parse::<AccelChoice>(), Ok(AccelChoice::Tcg));
        assert!("hvf".parse::<AccelChoice>().unwrap_err().contains("\"hvf\""));
    }

    #[tokio::test]
    async fn test_explicit_kvm_trusts_the_user_without_probing() {
        let kernel = ResolvedKernel {
            vmlinux: "/nonexistent".into(),
            source: "/nonexistent".into(),
            version: None,
            modules_dir: None,
            pvh_entry: 0,
            sha256: String::new(),
        };
        // A probe could not run with this QEMU; only /dev/kvm decides.
        let d = choose(AccelChoice::Kvm, Path::new("/nonexistent"), Path::new("/nonexistent/qemu"), &kernel).await;
        match open_kvm() {
            Ok(()) => assert_eq!(d.unwrap(), AccelDecision { accel: Accel::Kvm, note: None }),
            Err(reason) => assert!(matches!(d, Err(EngineError::KvmUnusable { reason: r }) if r == reason)),
        }
    }

    #[test]
    fn test_cached_answer_must_match_boot_qemu_and_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = |sha: &str| ResolvedKernel {
            vmlinux: "/k".into(),
            source: "/k".into(),
            version: None,
            modules_dir: None,
            pvh_entry: 0,
            sha256: sha.into(),
        };
        let qemu = Path::new("/nonexistent/qemu");
        assert!(!probe_is_cached(dir.path(), qemu, &kernel("a")));
        let entry = CachedProbe { usable: false, reason: "no".into(), ..probe_key(qemu, &kernel("a")) };
        std::fs::write(dir.path().join(PROBE_CACHE_FILE), serde_json::to_vec(&entry).unwrap()).unwrap();
        assert!(probe_is_cached(dir.path(), qemu, &kernel("a")));
        assert_eq!(
            cached_answer(&dir.path().join(PROBE_CACHE_FILE), &probe_key(qemu, &kernel("a"))),
            Some(Err("no".into()))
        );
        assert!(!probe_is_cached(dir.path(), qemu, &kernel("b")), "another kernel must probe again");
        assert!(!probe_is_cached(dir.path(), Path::new("/other/qemu"), &kernel("a")), "another QEMU too");
    }

    #[tokio::test]
    async fn test_tcg_needs_no_probe() {
        let kernel = ResolvedKernel {
            vmlinux: "/nonexistent".into(),
            source: "/nonexistent".into(),
            version: None,
            modules_dir: None,
            pvh_entry: 0,
            sha256: String::new(),
        };
        let d = choose(AccelChoice::Tcg, Path::new("/nonexistent"), Path::new("/nonexistent"), &kernel).await.unwrap();
        assert_eq!(d, AccelDecision { accel: Accel::Tcg, note: None });
    }
}
