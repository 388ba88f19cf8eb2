//! Whether a host can restore a snapshot: the facts about a host that matter ([`HostFacts`]),
//! reading them (`/proc/cpuinfo`, the page size), and comparing them with a manifest.

use std::collections::HashSet;

use crate::manifest::{CpuInfo, Manifest};

/// What a restore needs to know of the host it would run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// The hypervisor that would restore: "qemu", "firecracker" or "cloud-hypervisor".
    pub backend: String,
    /// Its version, e.g. "7.2.19".
    pub backend_version: String,
    /// "kvm" or "tcg".
    pub accel: String,
    /// The host's CPU (see [`host_cpu`]), or the emulated model under TCG.
    pub cpu: CpuInfo,
    /// The host's page size in bytes (see [`host_page_size`]).
    pub page_size: u64,
}

impl HostFacts {
    /// This host's facts, for the given hypervisor and accelerator: the CPU from
    /// `/proc/cpuinfo` and the page size from `sysconf`.
    pub fn detect(backend: &str, backend_version: &str, accel: &str) -> HostFacts {
        HostFacts {
            backend: backend.to_owned(),
            backend_version: backend_version.to_owned(),
            accel: accel.to_owned(),
            cpu: host_cpu(),
            page_size: host_page_size(),
        }
    }
}

/// Why a snapshot cannot be restored on a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Incompatible {
    /// It was taken by another hypervisor.
    #[error("snapshot was taken with {snapshot}, this host would restore it with {host}")]
    Backend {
        /// The snapshot's backend.
        snapshot: String,
        /// The host's.
        host: String,
    },
    /// It was taken by another major.minor version of the hypervisor.
    #[error("snapshot was taken with version {snapshot}, this host has {host} (major.minor must match)")]
    BackendVersion {
        /// The snapshot's backend version.
        snapshot: String,
        /// The host's.
        host: String,
    },
    /// It was taken under another accelerator.
    #[error("snapshot was taken under {snapshot}, this host would restore it under {host}")]
    Accel {
        /// The snapshot's accelerator.
        snapshot: String,
        /// The host's.
        host: String,
    },
    /// Under KVM: the host's CPU is another model.
    #[error("snapshot was taken on a {snapshot:?} CPU, this host has a {host:?}")]
    CpuModel {
        /// The snapshot's CPU model.
        snapshot: String,
        /// The host's.
        host: String,
    },
    /// Under KVM: the host's CPU lacks flags the snapshot's had.
    #[error("this host's CPU lacks flags the snapshot's had: {}", missing.join(" "))]
    CpuFlags {
        /// The flags missing, in the snapshot's order.
        missing: Vec<String>,
    },
    /// The host's page size differs.
    #[error("snapshot was taken with {snapshot}-byte pages, this host has {host}-byte pages")]
    PageSize {
        /// The snapshot's page size.
        snapshot: u64,
        /// The host's.
        host: u64,
    },
}

impl Manifest {
    /// Checks that `host` can restore this snapshot, and says the first thing that differs, in
    /// this order: backend; backend major.minor version; accelerator; page size; and under KVM
    /// the CPU model, then the flags (the host must have every flag the snapshot's CPU had; more
    /// are fine). Under TCG the CPU is not compared: QEMU emulates the same model anywhere.
    pub fn check_host(&self, host: &HostFacts) -> Result<(), Incompatible> {
        if self.backend != host.backend {
            return Err(Incompatible::Backend { snapshot: self.backend.clone(), host: host.backend.clone() });
        }
        if major_minor(&self.backend_version) != major_minor(&host.backend_version) {
            return Err(Incompatible::BackendVersion {
                snapshot: self.backend_version.clone(),
                host: host.backend_version.clone(),
            });
        }
        if self.accel != host.accel {
            return Err(Incompatible::Accel { snapshot: self.accel.clone(), host: host.accel.clone() });
        }
        if self.page_size != host.page_size {
            return Err(Incompatible::PageSize { snapshot: self.page_size, host: host.page_size });
        }
        if self.accel == "kvm" {
            if self.cpu.model != host.cpu.model {
                return Err(Incompatible::CpuModel { snapshot: self.cpu.model.clone(), host: host.cpu.model.clone() });
            }
            let have: HashSet<&str> = host.cpu.flags.iter().map(String::as_str).collect();
            let missing: Vec<String> = self.cpu.flags.iter().filter(|f| !have.contains(f.as_str())).cloned().collect();
            if !missing.is_empty() {
                return Err(Incompatible::CpuFlags { missing });
            }
        }
        Ok(())
    }
}

/// "7.2.19" → "7.2"; "v41.0" → "41.0"; "1" → "1". A version that does not start with digits
/// is compared whole.
fn major_minor(version: &str) -> &str {
    let v = version.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    if !v.starts_with(|c: char| c.is_ascii_digit()) {
        return version;
    }
    // The end of the second dot-separated number, or of the first if there is no second.
    let mut dots = 0;
    for (i, c) in v.char_indices() {
        match c {
            '0'..='9' => {}
            '.' if dots == 0 => dots += 1,
            _ => return &v[..i],
        }
    }
    v
}

/// This host's CPU: the first processor's "model name" and "flags" in `/proc/cpuinfo` (on
/// arm64, which has neither, "CPU implementer"/"CPU part" and "Features"). Empty where the
/// file cannot be read.
pub fn host_cpu() -> CpuInfo {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|text| parse_cpuinfo(&text))
        .unwrap_or_else(|_| CpuInfo { model: String::new(), flags: Vec::new() })
}

/// Reads the first processor's block of a `/proc/cpuinfo` text.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut model = None;
    let mut implementer_part = (None, None);
    let mut flags = None;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            // The end of the first processor's block.
            if model.is_some() || flags.is_some() {
                break;
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match key.trim() {
            "model name" if model.is_none() => model = Some(value.to_owned()),
            "CPU implementer" => implementer_part.0 = Some(value.to_owned()),
            "CPU part" => implementer_part.1 = Some(value.to_owned()),
            "flags" | "Features" if flags.is_none() => {
                flags = Some(value.split_whitespace().map(str::to_owned).collect());
            }
            _ => {}
        }
    }
    let model = model.unwrap_or_else(|| match implementer_part {
        (Some(i), Some(p)) => format!("implementer {i} part {p}"),
        _ => String::new(),
    });
    CpuInfo { model, flags: flags.unwrap_or_default() }
}

/// This host's page size in bytes (4096 where `sysconf` does not say).
pub fn host_page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;

    fn host() -> HostFacts {
        HostFacts {
            backend: "qemu".into(),
            backend_version: "7.2.0".into(),
            accel: "kvm".into(),
            cpu: CpuInfo {
                model: "AMD EPYC 7B13".into(),
                flags: ["fpu", "sse2", "avx2", "avx512f"].map(String::from).to_vec(),
            },
            page_size: 4096,
        }
    }

    #[test]
    fn a_matching_host_passes_even_with_more_flags_and_another_patch_version() {
        sample(vec![]).check_host(&host()).unwrap();
    }

    #[test]
    fn another_backend() {
        let h = HostFacts { backend: "firecracker".into(), ..host() };
        assert_eq!(
            sample(vec![]).check_host(&h),
            Err(Incompatible::Backend { snapshot: "qemu".into(), host: "firecracker".into() })
        );
    }

    #[test]
    fn another_minor_version() {
        let h = HostFacts { backend_version: "7.1.19".into(), ..host() };
        let err = sample(vec![]).check_host(&h).unwrap_err();
        assert_eq!(err, Incompatible::BackendVersion { snapshot: "7.2.19".into(), host: "7.1.19".into() });
        assert!(err.to_string().contains("7.2.19"), "{err}");
        let h = HostFacts { backend_version: "8.2.19".into(), ..host() };
        assert!(matches!(sample(vec![]).check_host(&h), Err(Incompatible::BackendVersion { .. })));
    }

    #[test]
    fn another_accelerator() {
        let h = HostFacts { accel: "tcg".into(), ..host() };
        assert_eq!(
            sample(vec![]).check_host(&h),
            Err(Incompatible::Accel { snapshot: "kvm".into(), host: "tcg".into() })
        );
    }

    #[test]
    fn another_cpu_model_under_kvm() {
        let h = HostFacts { cpu: CpuInfo { model: "Intel Xeon".into(), ..host().cpu }, ..host() };
        assert_eq!(
            sample(vec![]).check_host(&h),
            Err(Incompatible::CpuModel { snapshot: "AMD EPYC 7B13".into(), host: "Intel Xeon".into() })
        );
    }

    #[test]
    fn missing_flags_under_kvm_are_named() {
        let h = HostFacts { cpu: CpuInfo { flags: vec!["sse2".into()], ..host().cpu }, ..host() };
        let err = sample(vec![]).check_host(&h).unwrap_err();
        assert_eq!(err, Incompatible::CpuFlags { missing: vec!["fpu".into(), "avx2".into()] });
        assert!(err.to_string().ends_with("fpu avx2"), "{err}");
    }

    #[test]
    fn under_tcg_the_cpu_is_not_compared() {
        let mut m = sample(vec![]);
        m.accel = "tcg".into();
        m.cpu = CpuInfo { model: "max".into(), flags: vec!["x2apic".into()] };
        let h = HostFacts { accel: "tcg".into(), cpu: CpuInfo { model: "Intel Xeon".into(), flags: vec![] }, ..host() };
        m.check_host(&h).unwrap();
    }

    #[test]
    fn another_page_size() {
        let h = HostFacts { page_size: 16384, ..host() };
        assert_eq!(sample(vec![]).check_host(&h), Err(Incompatible::PageSize { snapshot: 4096, host: 16384 }));
    }

    #[test]
    fn major_minor_forms() {
        assert_eq!(major_minor("7.2.19"), "7.2");
        assert_eq!(major_minor("v41.0"), "41.0");
        assert_eq!(major_minor("1.10.1-dev"), "1.10");
        assert_eq!(major_minor("9"), "9");
        assert_eq!(major_minor("9.1rc2"), "9.1");
        assert_eq!(major_minor("git-abc"), "git-abc");
        assert_ne!(major_minor("1.10.0"), major_minor("1.1.0"));
    }

    #[test]
    fn cpuinfo_x86_takes_the_first_processor() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu vme sse2\n\n\
                    processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n";
        assert_eq!(
            parse_cpuinfo(text),
            CpuInfo { model: "AMD EPYC 7B13".into(), flags: vec!["fpu".into(), "vme".into(), "sse2".into()] }
        );
    }

    #[test]
    fn cpuinfo_arm64() {
        let text = "processor\t: 0\nFeatures\t: fp asimd aes\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n";
        assert_eq!(
            parse_cpuinfo(text),
            CpuInfo {
                model: "implementer 0x41 part 0xd0c".into(),
                flags: vec!["fp".into(), "asimd".into(), "aes".into()]
            }
        );
    }

    #[test]
    fn this_host_has_a_cpu_and_pages() {
        let cpu = host_cpu();
        assert!(!cpu.flags.is_empty(), "{cpu:?}");
        assert!(host_page_size().is_power_of_two());
    }
}
