//! `nestbox run --hypervisor firecracker|cloud-hypervisor` end to end, through the real engine,
//! driver, HTTP client and hybrid-vsock transport, against the stand-in hypervisors of
//! `nestbox-testkit`: they keep the real API state machines (every request is checked against
//! the official specs) and, as no CPU is emulated, serve the real agent behind the VM's vsock
//! socket (`FAKE_AGENT`), where the guest's agent would listen.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::common::{Home, stderr, stdout};

/// The guest agent as a host executable (it is static, so it runs here too).
fn agent_on_host(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("nestbox-agent");
    std::fs::write(&path, nestbox_engine::agent_binary::AGENT).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A home, the agent to serve behind the stand-in's vsock socket (in a directory that lives as
/// long as the returned guard) and the stand-in binary; `None` (skipped) without a kernel.
fn stand_in(fake: &str) -> Option<(Home, tempfile::TempDir, PathBuf, PathBuf)> {
    if let Err(e) = nestbox_kernel::resolve(None, &crate::common::shared_cache()) {
        eprintln!("skipped: no guest kernel: {e}");
        return None;
    }
    let tools = tempfile::tempdir().unwrap();
    let agent = agent_on_host(tools.path());
    Some((Home::new(), tools, agent, nestbox_testkit::fake_binary(fake)))
}

fn run_through(fake: &str, hypervisor: &str) {
    let Some((home, _tools, agent, binary)) = stand_in(fake) else { return };
    let out = home
        .nestbox(["run", "--hypervisor", hypervisor, "--hypervisor-bin"])
        .arg(&binary)
        .args(["--", "sh", "-c", "echo hi; echo oops >&2; exit 3"])
        .env(nestbox_testkit::guest::FAKE_AGENT_ENV, &agent)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    assert!(stderr(&out).ends_with("oops\n"), "{}", stderr(&out));
    home.assert_clean();
}

#[test]
fn test_run_through_firecracker_driver() {
    run_through("fake-firecracker", "firecracker");
}

#[test]
fn test_run_through_cloud_hypervisor_driver() {
    run_through("fake-cloud-hypervisor", "cloud-hypervisor");
}

#[test]
fn test_missing_hypervisor_binary_is_named() {
    let home = Home::new();
    let empty = tempfile::tempdir().unwrap();
    let out = home
        .nestbox(["run", "--hypervisor", "firecracker", "--", "true"])
        .env("PATH", empty.path())
        .env_remove("NESTBOX_FIRECRACKER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("firecracker not found"), "{}", stderr(&out));
    home.assert_clean();
}

/// A persistent sandbox's life through a driver: the shim owns the stand-in hypervisor and
/// shares the agent behind its vsock socket.
fn sandbox_through(fake: &str, hypervisor: &str) {
    let Some((home, _tools, agent, binary)) = stand_in(fake) else { return };
    let nestbox = |args: &[&str]| {
        let out = home.nestbox(args).env(nestbox_testkit::guest::FAKE_AGENT_ENV, &agent).output().unwrap();
        assert!(out.status.success(), "nestbox {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let bin = binary.to_str().unwrap();
    let id =
        nestbox(&["create", "--name", "fc", "--hypervisor", hypervisor, "--hypervisor-bin", bin]).trim().to_owned();
    nestbox(&["start", "fc"]);
    assert_eq!(nestbox(&["exec", "fc", "--", "echo", "through the shim"]), "through the shim\n");
    nestbox(&["pause", "fc"]);
    let info: serde_json::Value = serde_json::from_str(&nestbox(&["inspect", "fc"])).unwrap();
    assert_eq!(info["state"], "paused");
    nestbox(&["resume", "fc"]);
    assert_eq!(nestbox(&["exec", "fc", "--", "echo", "again"]), "again\n");
    // The stand-in does not power off with its guest: the stop kills it after the grace period.
    nestbox(&["stop", "-t", "1s", "fc"]);
    let info: serde_json::Value = serde_json::from_str(&nestbox(&["inspect", &id])).unwrap();
    assert_eq!(info["state"], "stopped", "{info}");
    nestbox(&["rm", "fc"]);
    home.assert_clean();
}

#[test]
fn test_sandbox_through_firecracker_driver() {
    sandbox_through("fake-firecracker", "firecracker");
}

#[test]
fn test_sandbox_through_cloud_hypervisor_driver() {
    sandbox_through("fake-cloud-hypervisor", "cloud-hypervisor");
}

/// A cloud image through the Cloud Hypervisor driver: firmware boot (no kernel in the payload,
/// which the stand-in's spec check would otherwise demand), the agent over hybrid vsock, and a
/// stop that presses the ACPI power button, on which the stand-in powers off by itself.
#[test]
fn test_cloud_image_sandbox_through_cloud_hypervisor_driver() {
    let Some((home, tools, agent, binary)) = stand_in("fake-cloud-hypervisor") else { return };
    let nestbox = |args: &[&str]| {
        let out = home.nestbox(args).env(nestbox_testkit::guest::FAKE_AGENT_ENV, &agent).output().unwrap();
        assert!(out.status.success(), "nestbox {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let mut disk = vec![0u8; 1 << 20];
    disk[510..512].copy_from_slice(&[0x55, 0xaa]);
    let disk_path = tools.path().join("cloud.raw");
    std::fs::write(&disk_path, disk).unwrap();
    let firmware = tools.path().join("CLOUDHV.fd");
    std::fs::write(&firmware, b"firmware").unwrap();
    nestbox(&["image", "import", disk_path.to_str().unwrap(), "--name", "cloud"]);
    let id = nestbox(&[
        "create",
        "--name",
        "ch-cloud",
        "--image",
        "cloud",
        "--hypervisor",
        "cloud-hypervisor",
        "--hypervisor-bin",
        binary.to_str().unwrap(),
        "--firmware",
        firmware.to_str().unwrap(),
    ])
    .trim()
    .to_owned();
    nestbox(&["start", "ch-cloud"]);
    assert_eq!(nestbox(&["exec", "ch-cloud", "--", "echo", "via vsock"]), "via vsock\n");
    let seed = home.path().join("sandboxes").join(&id).join("seed.img");
    assert!(std::fs::metadata(&seed).is_ok_and(|m| m.len() > 0), "the seed was written");
    let started = std::time::Instant::now();
    nestbox(&["stop", "-t", "30s", "ch-cloud"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "the power button stopped it, no kill");
    let exit = std::fs::read_to_string(home.path().join("sandboxes").join(&id).join("exit.json")).unwrap();
    let exit: serde_json::Value = serde_json::from_str(&exit).unwrap();
    assert_eq!((exit["state"].as_str(), exit["exit_code"].as_i64()), (Some("stopped"), Some(0)), "{exit}");
    nestbox(&["rm", "ch-cloud"]);
    home.assert_clean();
}
