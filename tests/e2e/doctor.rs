//! `nestbox info` and `nestbox doctor`: what the host offers, as tables and JSON.

use crate::common::{Home, stderr, stdout};
use crate::require_vm;

#[test]
fn test_info_json_names_kernel_qemu_and_accel() {
    require_vm!();
    let home = Home::new();
    let out = home.output(["info", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(info["home"], home.path().to_string_lossy().as_ref());
    assert!(info["qemu"].as_str().unwrap().ends_with("qemu-system-x86_64"));
    assert!(info["kernel"]["vmlinux"].as_str().unwrap().ends_with(".vmlinux"));
    assert!(matches!(info["accel"].as_str(), Some("kvm" | "tcg")));
    // A fallback to TCG always says why.
    assert_eq!(info["accel"] == "tcg", info["accel_note"].is_string());
}

#[test]
fn test_doctor_reports_every_backend() {
    require_vm!();
    let home = Home::new();
    let out = home.nestbox(["doctor", "--format", "json"]).env_remove("NESTBOX_FIRECRACKER").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let backends = report["backends"].as_array().unwrap();
    let names: Vec<&str> = backends.iter().map(|b| b["backend"].as_str().unwrap()).collect();
    assert_eq!(names, ["qemu", "firecracker", "cloud-hypervisor"]);
    assert_eq!(backends[0]["usable"], true);
    assert!(backends[0]["version"].as_str().unwrap().starts_with("QEMU emulator version"));
    // Every unusable backend says why.
    for b in backends.iter().filter(|b| b["usable"] == false) {
        assert!(b["note"].as_str().is_some_and(|n| !n.is_empty()), "{b}");
    }
    assert!(report["kernel"]["transport_note"].is_string());
}
