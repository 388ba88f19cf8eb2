//! The fake Firecracker over its socket: in-process `serve` and the `fake-firecracker`
//! stand-in executable with its knobs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::Method;
use nestbox_testkit::firecracker::serve;
use nestbox_uds_http::UdsClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fake-firecracker");
const WAIT: Duration = Duration::from_secs(10);

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spawn(sock: &Path, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.args(["--api-sock"])
        .arg(sock)
        .args(["--id", "t1", "--level", "Debug", "--enable-pci"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap())
}

fn sock_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("api.sock")
}

#[tokio::test]
async fn serve_checks_records_and_keeps_the_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let fake = serve(&sock).await.unwrap();
    let client = UdsClient::new(&sock);

    client.put_json("/boot-source", &json!({"kernel_image_path": "/k"})).await.unwrap();
    client.put_json("/actions", &json!({"action_type": "InstanceStart"})).await.unwrap();
    let info: Value = client.get_json("/").await.unwrap();
    assert_eq!(info["state"], "Running");

    // the state machine's own error
    let e = client.put_json("/boot-source", &json!({"kernel_image_path": "/k"})).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.body().unwrap().contains("not supported after starting"), "{e}");
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());

    // a spec violation
    let e = client.patch_json("/vm", &json!({"state": "Sleeping"})).await.unwrap_err();
    let fault: Value = serde_json::from_str(e.body().unwrap()).unwrap();
    assert!(fault["fault_message"].as_str().unwrap().starts_with("spec violation:"), "{fault}");
    assert_eq!(fake.violations().len(), 1);
    let raw = client.request(Method::DELETE, "/vm", None).await.unwrap();
    assert_eq!(raw.status, 400);
    assert_eq!(fake.violations().len(), 2);

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 6);
    assert_eq!(reqs[0].method, "PUT");
    assert_eq!(reqs[0].path, "/boot-source");
    assert_eq!(reqs[0].body, Some(json!({"kernel_image_path": "/k"})));
    assert_eq!(reqs[0].status, 204);
    assert_eq!(reqs[2].body, None);
    fake.shutdown();
    assert!(!sock.exists());
}

#[test]
fn version_flag() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Firecracker v1.16.1");
}

#[tokio::test]
async fn binary_serves_and_exits_on_ctrl_alt_del() {
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let mut child = spawn(&sock, &[]);
    wait_for("socket", || sock.exists());
    let client = UdsClient::new(&sock);
    let info: Value = client.get_json("/").await.unwrap();
    assert_eq!(info["id"], "t1");
    assert_eq!(info["state"], "Not started");
    client.put_json("/boot-source", &json!({"kernel_image_path": "/k"})).await.unwrap();
    client.put_json("/actions", &json!({"action_type": "InstanceStart"})).await.unwrap();
    client.put_json("/actions", &json!({"action_type": "SendCtrlAltDel"})).await.unwrap();
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(0));
    assert!(!sock.exists());
}

#[test]
fn binary_exits_on_sigterm_and_removes_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let mut child = spawn(&sock, &[]);
    wait_for("socket", || sock.exists());
    kill(pid(&child), Signal::SIGTERM).unwrap();
    assert!(wait_exit(&mut child).success());
    assert!(!sock.exists());
}

#[test]
fn binary_can_ignore_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let mut child = spawn(&sock, &[("FAKE_IGNORE_SIGTERM", "1")]);
    wait_for("socket", || sock.exists());
    kill(pid(&child), Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "exited on SIGTERM");
    assert!(sock.exists());
    kill(pid(&child), Signal::SIGKILL).unwrap();
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), None);
}

#[test]
fn binary_early_exit_and_late_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    let mut child = spawn(&sock, &[("FAKE_EXIT", "3")]);
    assert_eq!(wait_exit(&mut child).code(), Some(3));
    assert!(!sock.exists());

    let started = Instant::now();
    let mut child = spawn(&sock, &[("FAKE_DELAY_MS", "400")]);
    std::thread::sleep(Duration::from_millis(150));
    assert!(!sock.exists(), "socket appeared before the delay");
    wait_for("late socket", || sock.exists());
    assert!(started.elapsed() >= Duration::from_millis(400));
    kill(pid(&child), Signal::SIGTERM).unwrap();
    assert!(wait_exit(&mut child).success());
}

#[test]
fn binary_refuses_a_socket_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let sock = sock_in(&dir);
    std::fs::write(&sock, b"").unwrap();
    let mut child = spawn(&sock, &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("Failed to open the API socket"), "{err}");
}

#[test]
fn fake_binary_finds_the_fresh_build() {
    let path = nestbox_testkit::fake_binary("fake-firecracker");
    assert!(path.is_file(), "{}", path.display());
    let out = Command::new(&path).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Firecracker v1.16.1");
}
