//! Does KVM really run a guest here? Asked by booting a few instructions under QEMU.
//!
//! `/dev/kvm` existing proves little: under some nested setups (paravirtualized nesting such as
//! `kvm_pvm`) it opens fine but ordinary guests crawl and die. Two steps, cheapest first:
//!
//! 1. [`run_probe`] boots a tiny PVH ELF whose only instructions write a byte to QEMU's
//!    `isa-debug-exit` port; QEMU then exits with `(byte << 1) | 1`. This fails fast where KVM
//!    cannot run anything — but a few instructions can run where a kernel cannot (seen under
//!    `kvm_pvm`), so it is not enough on its own.
//! 2. [`run_boot_probe`] boots the real guest kernel to a script that prints a marker and powers
//!    off. Only a marker on the console within the deadline means "usable".

use std::path::Path;
use std::time::Duration;

use nestbox_supervise::{CommandSpec, Spawner, Stream};

/// The byte the probe guest writes.
pub const PROBE_BYTE: u8 = 0x2a;
/// The I/O port of the `isa-debug-exit` device.
pub const PROBE_PORT: u8 = 0xf4;
/// How long the probe guest may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the kernel boot probe may take (a KVM boot to userspace takes well under a second).
pub const BOOT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// What the boot probe's init prints when it runs.
pub const BOOT_PROBE_MARKER: &str = "nestbox-kvm-probe-ok";

/// 32-bit protected-mode code (PVH entry state): `mov al, BYTE; out PORT, al; hlt; jmp $-1`.
pub fn probe_code() -> Vec<u8> {
    vec![0xb0, PROBE_BYTE, 0xe6, PROBE_PORT, 0xf4, 0xeb, 0xfd]
}

/// QEMU's exit code when the probe guest ran.
pub fn expected_exit_code() -> i32 {
    (i32::from(PROBE_BYTE) << 1) | 1
}

/// The argv that boots `elf` (a PVH ELF running [`probe_code`]) with `accel`.
pub fn probe_args(elf: &Path, accel: crate::Accel) -> Vec<String> {
    let cpu = if accel == crate::Accel::Kvm { "host" } else { "max" };
    [
        "-machine",
        "microvm,acpi=off,x-option-roms=off,rtc=off,isa-serial=off",
        "-accel",
        accel.as_str(),
        "-cpu",
        cpu,
        "-m",
        "16M",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-device",
        &format!("isa-debug-exit,iobase={PROBE_PORT:#x},iosize=1"),
        "-kernel",
        &elf.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Boots the probe guest with `binary`; `Ok(())` when it ran, else why not.
pub async fn run_probe(
    spawner: &dyn Spawner,
    binary: &Path,
    elf: &Path,
    accel: crate::Accel,
    timeout: Duration,
) -> Result<(), String> {
    let mut cmd = CommandSpec::new(binary).args(probe_args(elf, accel));
    cmd.die_with_parent = true;
    let child = spawner.spawn(&cmd).map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(report) if report.code == Some(expected_exit_code()) => Ok(()),
        Ok(report) => {
            let tail = child.log_tail(Stream::Stderr, 3).join(" / ");
            Err(format!("probe guest {}{}{tail}", report_text(report), if tail.is_empty() { "" } else { ": " }))
        }
        Err(_) => {
            child.kill();
            Err(format!("probe guest did not finish within {timeout:?}"))
        }
    }
}

fn report_text(report: nestbox_supervise::ExitReport) -> String {
    match (report.code, report.signal) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".into(),
    }
}

/// Runs QEMU with `args` (a guest whose init prints [`BOOT_PROBE_MARKER`] on the console and
/// powers off); `Ok(())` when the marker appears before QEMU exits, within `timeout`.
pub async fn run_boot_probe(
    spawner: &dyn Spawner,
    binary: &Path,
    args: Vec<String>,
    timeout: Duration,
) -> Result<(), String> {
    let mut cmd = CommandSpec::new(binary).args(args);
    cmd.die_with_parent = true;
    cmd.new_process_group = true;
    let child = spawner.spawn(&cmd).map_err(|e| e.to_string())?;
    let report = tokio::time::timeout(timeout, child.wait()).await;
    let printed = child.log_tail(Stream::Stdout, 200).iter().any(|l| l.contains(BOOT_PROBE_MARKER));
    match report {
        Ok(_) if printed => Ok(()),
        Ok(report) => {
            let tail = child.log_tail(Stream::Stdout, 2).join(" / ");
            Err(format!(
                "a guest kernel {} without reaching userspace{}{tail}",
                report_text(report),
                if tail.is_empty() { "" } else { ": " }
            ))
        }
        Err(_) => {
            child.kill();
            Err(format!("a guest kernel did not boot within {timeout:?}"))
        }
    }
}
