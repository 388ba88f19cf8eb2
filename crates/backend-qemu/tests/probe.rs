//! The KVM probe's guest really runs: under TCG (always available with QEMU) it must reach the
//! debug-exit port, which proves the probe ELF and argv are right, so a failure under KVM means
//! KVM, not the probe.

use nestbox_backend_qemu::{Accel, probe};
use nestbox_supervise::OsSpawner;

#[tokio::test]
async fn test_probe_guest_runs_under_tcg() {
    let Some(qemu) = nestbox_supervise::find_program(nestbox_backend_qemu::QEMU_BINARY) else {
        eprintln!("skipped: {} not installed", nestbox_backend_qemu::QEMU_BINARY);
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let elf = dir.path().join("probe.elf");
    std::fs::write(&elf, nestbox_kernel::tiny_pvh_elf(&probe::probe_code())).unwrap();
    let result = probe::run_probe(&OsSpawner, &qemu, &elf, Accel::Tcg, std::time::Duration::from_secs(20)).await;
    assert_eq!(result, Ok(()));
}

#[tokio::test]
async fn test_probe_reports_a_guest_that_does_not_run() {
    let Some(qemu) = nestbox_supervise::find_program(nestbox_backend_qemu::QEMU_BINARY) else {
        eprintln!("skipped: {} not installed", nestbox_backend_qemu::QEMU_BINARY);
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let elf = dir.path().join("probe.elf");
    // hlt forever: never reaches the port.
    std::fs::write(&elf, nestbox_kernel::tiny_pvh_elf(&[0xf4, 0xeb, 0xfd])).unwrap();
    let result = probe::run_probe(&OsSpawner, &qemu, &elf, Accel::Tcg, std::time::Duration::from_millis(1500)).await;
    assert!(result.unwrap_err().contains("did not finish"));
}
