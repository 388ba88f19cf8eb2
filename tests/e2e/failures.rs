//! Bad input and failures: each a one-line error, a distinct exit code, nothing left behind.

use crate::common::{Home, stderr};
use crate::require_vm;

fn assert_usage_error(args: &[&str], flag: &str) {
    let home = Home::new();
    let out = home.output(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("nestbox: ") && err.contains(flag), "{err}");
    home.assert_clean();
}

#[test]
fn test_invalid_memory_is_a_usage_error() {
    assert_usage_error(&["run", "--memory", "lots", "--", "true"], "--memory");
    assert_usage_error(&["run", "--memory", "16M", "--", "true"], "--memory");
}

#[test]
fn test_invalid_cpus_is_a_usage_error() {
    assert_usage_error(&["run", "--cpus", "0", "--", "true"], "--cpus");
    assert_usage_error(&["run", "--cpus", "many", "--", "true"], "--cpus");
}

#[test]
fn test_invalid_env_is_a_usage_error() {
    assert_usage_error(&["run", "--env", "NOEQUALS", "--", "true"], "--env");
    assert_usage_error(&["run", "--env", "1BAD=x", "--", "true"], "--env");
}

#[test]
fn test_missing_command_is_a_usage_error() {
    assert_usage_error(&["run"], "CMD");
}

#[test]
fn test_missing_kernel_file_names_the_flag() {
    if nestbox_supervise::find_program("qemu-system-x86_64").is_none() {
        eprintln!("skipped: qemu-system-x86_64 is not installed");
        return;
    }
    let home = Home::new();
    let out = home.output(["run", "--accel", "tcg", "--kernel", "/nonexistent/vmlinuz", "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("/nonexistent/vmlinuz"), "{}", stderr(&out));
    home.assert_clean();
}

#[test]
fn test_kernel_without_pvh_note_is_refused() {
    if nestbox_supervise::find_program("qemu-system-x86_64").is_none() {
        eprintln!("skipped: qemu-system-x86_64 is not installed");
        return;
    }
    let home = Home::new();
    // Any ELF without the Xen PVH note will do: the test binary itself.
    let not_pvh = std::env::current_exe().unwrap();
    let out = home.output([
        "run".as_ref(),
        "--accel".as_ref(),
        "tcg".as_ref(),
        "--kernel".as_ref(),
        not_pvh.as_os_str(),
        "--".as_ref(),
        "true".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("PVH"), "{}", stderr(&out));
    home.assert_clean();
}

#[test]
fn test_qemu_missing_names_the_package() {
    let home = Home::new();
    let empty = tempfile::tempdir().unwrap();
    let out = home.nestbox(["run", "--", "true"]).env("PATH", empty.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("qemu-system-x86_64") && err.contains("qemu-system-x86 package"), "{err}");
    home.assert_clean();
}

#[test]
fn test_boot_deadline_shows_console_and_cleans_up() {
    require_vm!();
    let home = Home::new();
    // No init: the kernel panics, and panic=0 keeps it from rebooting, so the agent never answers.
    let out = home.output([
        "run",
        "--boot-timeout",
        "6s",
        "--kernel-arg",
        "rdinit=/nonexistent",
        "--kernel-arg",
        "panic=0",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("did not come up within 6s"), "{err}");
    assert!(err.contains("Kernel panic") || err.contains("VFS"), "console lines missing: {err}");
    let console_lines = err.lines().skip_while(|l| !l.contains("last console lines")).count();
    assert!((2..=21).contains(&console_lines), "{err}");
    home.assert_clean();
}

#[test]
fn test_guest_crash_during_boot_is_reported() {
    require_vm!();
    let home = Home::new();
    // panic=-1 with -no-reboot: QEMU exits at once; the error says so and shows the console.
    let out = home.output(["run", "--kernel-arg", "rdinit=/nonexistent", "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the VM exited"), "{err}");
    assert!(err.contains("Kernel panic") || err.contains("VFS"), "{err}");
    home.assert_clean();
}
