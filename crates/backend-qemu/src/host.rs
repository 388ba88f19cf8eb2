//! Host facts the QEMU command line depends on.

/// The TSC rate assumed when the host does not say.
pub const FALLBACK_TSC_KHZ: u32 = 2_000_000;

/// The host's TSC rate in kHz, which TCG guests see as theirs.
///
/// Under TCG the guest's TSC ticks with the host's, and the guest kernel's calibration of it
/// against the emulated PIT fails on a loaded host (the kernel then hangs). Passing this value as
/// `tsc_early_khz=` skips that calibration.
pub fn tsc_khz() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .or_else(|| std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| cpuinfo_khz(&s)))
        .unwrap_or(FALLBACK_TSC_KHZ)
}

/// The first `cpu MHz` line of `/proc/cpuinfo`, in kHz.
fn cpuinfo_khz(cpuinfo: &str) -> Option<u32> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        if key.trim() != "cpu MHz" {
            return None;
        }
        let mhz: f64 = value.trim().parse().ok()?;
        (mhz > 0.0).then(|| (mhz * 1000.0).round() as u32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cpuinfo_khz_reads_first_cpu() {
        let s = "processor\t: 0\ncpu MHz\t\t: 2600.123\nprocessor\t: 1\ncpu MHz\t\t: 1.0\n";
        assert_eq!(cpuinfo_khz(s), Some(2_600_123));
        assert_eq!(cpuinfo_khz("processor : 0\n"), None);
        assert_eq!(cpuinfo_khz("cpu MHz : nope\n"), None);
    }

    #[test]
    fn test_tsc_khz_is_plausible() {
        let khz = tsc_khz();
        assert!((100_000..=10_000_000).contains(&khz), "{khz}");
    }
}
