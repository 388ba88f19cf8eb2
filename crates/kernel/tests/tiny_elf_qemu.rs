//! `tiny_pvh_elf` must be something QEMU really boots through its PVH path: a few bytes of
//! 32-bit code write "K" to the serial port and leave through `isa-debug-exit`. Skipped when
//! `qemu-system-x86_64` is not installed. Runs under TCG, so it needs no KVM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nestbox_kernel::tiny_pvh_elf;

/// `mov dx,0x3f8; mov al,'K'; out dx,al; mov dx,0xf4; mov al,0x10; out dx,al; hlt; jmp $-1`
const CODE: &[u8] =
    &[0x66, 0xba, 0xf8, 0x03, 0xb0, b'K', 0xee, 0x66, 0xba, 0xf4, 0x00, 0xb0, 0x10, 0xee, 0xf4, 0xeb, 0xfd];
/// isa-debug-exit turns the value 0x10 into exit status (0x10 << 1) | 1.
const EXPECTED_STATUS: i32 = 0x21;
const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn test_qemu_boots_tiny_pvh_elf() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("tiny.elf");
    std::fs::write(&kernel, tiny_pvh_elf(CODE)).unwrap();
    let child = Command::new("qemu-system-x86_64")
        .args(["-machine", "microvm,accel=tcg", "-m", "32M", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel"])
        .arg(&kernel)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            eprintln!("skipped: cannot run qemu-system-x86_64: {e}");
            return;
        }
    };
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > TIMEOUT {
            child.kill().unwrap();
            panic!("QEMU did not exit within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXPECTED_STATUS), "stderr: {stderr}");
    assert_eq!(out.stdout, b"K", "stderr: {stderr}");
}
