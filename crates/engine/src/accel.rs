//! Choosing the accelerator: KVM only when a probe shows it really runs a guest.
//!
//! The probe (see `nestbox_backend_qemu::probe`) costs a QEMU start, so its answer is cached
//! in `$NESTBOX_HOME/cache/kvm-probe.json`, keyed by the host's boot id and the QEMU binary:
//! a reboot or a QEMU upgrade asks again.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use nestbox_backend_qemu::Accel;
use nestbox_backend_qemu::probe;
use nestbox_supervise::OsSpawner;
use serde::{Deserialize, Serialize};

use crate::EngineError;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// KVM when the probe passes, else TCG.
    #[default]
    Auto,
    /// KVM, or fail.
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
            other => Err(format!(
                "invalid accelerator {other:?}: expected auto, kvm or tcg"
            )),
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
    usable: bool,
    reason: String,
}

/// Decides the accelerator for `choice`, probing KVM when needed.
pub async fn choose(
    choice: AccelChoice,
    cache_dir: &Path,
    qemu: &Path,
) -> Result<AccelDecision, EngineError> {
    match choice {
        AccelChoice::Tcg => Ok(AccelDecision {
            accel: Accel::Tcg,
            note: None,
        }),
        AccelChoice::Kvm => match kvm_usable(cache_dir, qemu).await {
            Ok(()) => Ok(AccelDecision {
                accel: Accel::Kvm,
                note: None,
            }),
            Err(reason) => Err(EngineError::KvmUnusable { reason }),
        },
        AccelChoice::Auto => Ok(match kvm_usable(cache_dir, qemu).await {
            Ok(()) => AccelDecision {
                accel: Accel::Kvm,
                note: None,
            },
            Err(reason) => AccelDecision {
                accel: Accel::Tcg,
                note: Some(format!(
                    "KVM is not usable ({reason}); using TCG software emulation"
                )),
            },
        }),
    }
}

/// `Ok(())` when KVM runs a guest on this host, else the reason it does not.
pub async fn kvm_usable(cache_dir: &Path, qemu: &Path) -> Result<(), String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Err(format!("cannot open /dev/kvm: {e}"));
    }
    let key = CachedProbe {
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        qemu: qemu.to_path_buf(),
        qemu_mtime: std::fs::metadata(qemu)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
        usable: false,
        reason: String::new(),
    };
    let cache_file = cache_dir.join("kvm-probe.json");
    if let Some(cached) = read_cache(&cache_file)
        && (&cached.boot_id, &cached.qemu, cached.qemu_mtime)
            == (&key.boot_id, &key.qemu, key.qemu_mtime)
    {
        return if cached.usable {
            Ok(())
        } else {
            Err(cached.reason)
        };
    }
    let result = probe_now(cache_dir, qemu).await;
    let entry = CachedProbe {
        usable: result.is_ok(),
        reason: result.clone().err().unwrap_or_default(),
        ..key
    };
    // A cache that cannot be written only costs a probe next time.
    if let Ok(json) = serde_json::to_vec(&entry) {
        let tmp = cache_dir.join(format!("kvm-probe.json.{}", std::process::id()));
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, &cache_file);
        }
    }
    result
}

fn read_cache(path: &Path) -> Option<CachedProbe> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

async fn probe_now(cache_dir: &Path, qemu: &Path) -> Result<(), String> {
    std::fs::create_dir_all(cache_dir)
        .map_err(|e| format!("cannot create {}: {e}", cache_dir.display()))?;
    let elf = cache_dir.join(format!("kvm-probe.{}.elf", std::process::id()));
    std::fs::write(&elf, nestbox_kernel::tiny_pvh_elf(&probe::probe_code()))
        .map_err(|e| format!("cannot write {}: {e}", elf.display()))?;
    let result = probe::run_probe(&OsSpawner, qemu, &elf, Accel::Kvm, probe::PROBE_TIMEOUT).await;
    let _ = std::fs::remove_file(&elf);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_accel_choice_parses_and_names_bad_values() {
        assert_eq!("auto".parse::<AccelChoice>(), Ok(AccelChoice::Auto));
        assert_eq!("kvm".parse::<AccelChoice>(), Ok(AccelChoice::Kvm));
        assert_eq!("tcg".parse::<AccelChoice>(), Ok(AccelChoice::Tcg));
        assert!(
            "hvf"
                .parse::<AccelChoice>()
                .unwrap_err()
                .contains("\"hvf\"")
        );
    }

    #[tokio::test]
    async fn test_tcg_needs_no_probe() {
        let d = choose(
            AccelChoice::Tcg,
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        )
        .await
        .unwrap();
        assert_eq!(
            d,
            AccelDecision {
                accel: Accel::Tcg,
                note: None
            }
        );
    }
}
