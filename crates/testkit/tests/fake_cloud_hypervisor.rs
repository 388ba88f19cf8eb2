//! Drives the `fake-cloud-hypervisor` stand-in executable over its HTTP API: the life of a VM
//! (create → boot → pause → snapshot → resume → shutdown), a restore into a fresh process, and
//! the supervision knobs (late socket, early exit, SIGTERM ignored, `fd=` refused).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nestbox_testkit::chv::{SNAPSHOT_CONFIG_FILE, SNAPSHOT_MEMORY_FILE, SNAPSHOT_STATE_FILE, VERSION, VERSION_LINE};
use nestbox_uds_http::UdsClient;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fake-cloud-hypervisor");
/// How long a test waits for the socket to appear or the process to end.
const DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

/// The child is killed when the test ends, however it ends.
struct Fake {
    child: Child,
    socket: PathBuf,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fake {
    fn spawn(args: &[&str], socket: &Path, env: &[(&str, &str)]) -> Fake {
        let child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fake-cloud-hypervisor");
        Fake { child, socket: socket.to_owned() }
    }

    /// Spawns with the usual flags and waits for the API socket.
    fn start(socket: &Path) -> Fake {
        let api = format!("path={}", socket.display());
        let fake = Fake::spawn(&["--kernel", "/k", "--api-socket", &api, "--seccomp", "false"], socket, &[]);
        fake.wait_for_socket();
        fake
    }

    fn client(&self) -> UdsClient {
        UdsClient::new(&self.socket)
    }

    fn wait_for_socket(&self) {
        let start = Instant::now();
        while !self.socket.exists() {
            assert!(start.elapsed() < DEADLINE, "socket {} never appeared", self.socket.display());
            std::thread::sleep(POLL);
        }
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "the fake did not exit");
            std::thread::sleep(POLL);
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -{name} failed");
    }
}

fn config() -> Value {
    json!({
        "payload": {"kernel": "/k", "cmdline": "console=hvc0 nestbox.agent=vsock:1024"},
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "memory": {"size": 268_435_456, "shared": false, "thp": false},
        "vsock": {"cid": 3, "socket": "/tmp/vsock.sock"},
        "serial": {"mode": "Off"},
        "console": {"mode": "Off"},
    })
}

async fn state(client: &UdsClient) -> String {
    let info: Value = client.get_json("/api/v1/vm.info").await.unwrap();
    info["state"].as_str().unwrap().to_owned()
}

#[test]
fn test_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{VERSION_LINE}\n"));
}

#[tokio::test]
async fn test_lifecycle_then_restore_in_a_fresh_process() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snap");
    std::fs::create_dir(&snapshot).unwrap();
    let socket = dir.path().join("api.sock");

    let mut fake = Fake::start(&socket);
    let client = fake.client();
    let ping: Value = client.get_json("/api/v1/vmm.ping").await.unwrap();
    assert_eq!(ping["version"], VERSION);
    assert_eq!(ping["pid"], fake.child.id());
    client.put_json("/api/v1/vm.create", &config()).await.unwrap();
    assert_eq!(state(&client).await, "Created");
    client.put_empty("/api/v1/vm.boot").await.unwrap();
    assert_eq!(state(&client).await, "Running");
    // Snapshotting a running VM is refused with CH's error chain.
    let url = json!({"destination_url": format!("file://{}", snapshot.display())});
    let err = client.put_json("/api/v1/vm.snapshot", &url).await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(err.body().unwrap().contains("Trying to snapshot while VM is running"), "{err}");
    client.put_empty("/api/v1/vm.pause").await.unwrap();
    assert_eq!(state(&client).await, "Paused");
    client.put_json("/api/v1/vm.snapshot", &url).await.unwrap();
    for file in [SNAPSHOT_CONFIG_FILE, SNAPSHOT_STATE_FILE, SNAPSHOT_MEMORY_FILE] {
        assert!(snapshot.join(file).is_file(), "{file} missing");
    }
    client.put_empty("/api/v1/vm.resume").await.unwrap();
    assert_eq!(state(&client).await, "Running");
    client.put_empty("/api/v1/vmm.shutdown").await.unwrap();
    assert!(fake.wait_exit().success());
    assert!(!socket.exists(), "the socket outlived the VMM");

    // Restore only into a fresh VMM: a plain socket path this time.
    let mut fresh = Fake::spawn(&["--api-socket", socket.to_str().unwrap()], &socket, &[]);
    fresh.wait_for_socket();
    let client = fresh.client();
    let restore = json!({"source_url": format!("file://{}", snapshot.display()), "memory_restore_mode": "OnDemand"});
    client.put_json("/api/v1/vm.restore", &restore).await.unwrap();
    assert_eq!(state(&client).await, "Paused");
    let info: Value = client.get_json("/api/v1/vm.info").await.unwrap();
    assert_eq!(info["config"]["payload"], config()["payload"]);
    let err = client.put_json("/api/v1/vm.restore", &restore).await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(err.body().unwrap(), r#"["Error from API","The VM could not be restored","VM is already created"]"#);
    client.put_empty("/api/v1/vm.resume").await.unwrap();
    assert_eq!(state(&client).await, "Running");
    fresh.signal("TERM");
    assert!(fresh.wait_exit().success());
    assert!(!socket.exists(), "the socket outlived SIGTERM");
}

#[tokio::test]
async fn test_spec_violations_answer_400() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let fake = Fake::start(&socket);
    let client = fake.client();
    // memory.size is required by the spec.
    let err = client.put_json("/api/v1/vm.create", &json!({"payload": {}, "memory": {}})).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.body().unwrap().contains("spec violation:"), "{err}");
    let err = client.get_json::<Value>("/api/v1/vm.info").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn test_power_button_ends_the_vmm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let mut fake = Fake::start(&socket);
    let client = fake.client();
    client.put_json("/api/v1/vm.create", &config()).await.unwrap();
    client.put_empty("/api/v1/vm.boot").await.unwrap();
    client.put_empty("/api/v1/vm.power-button").await.unwrap();
    assert!(fake.wait_exit().success());
    assert!(!socket.exists());
}

#[test]
fn test_late_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let api = format!("path={}", socket.display());
    let start = Instant::now();
    let fake = Fake::spawn(&["--api-socket", &api], &socket, &[("FAKE_DELAY_MS", "300")]);
    fake.wait_for_socket();
    assert!(start.elapsed() >= Duration::from_millis(300), "bound after {:?}", start.elapsed());
}

#[test]
fn test_early_exit() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let api = format!("path={}", socket.display());
    let mut fake = Fake::spawn(&["--api-socket", &api], &socket, &[("FAKE_EXIT", "3")]);
    assert_eq!(fake.wait_exit().code(), Some(3));
    assert!(!socket.exists());
}

#[tokio::test]
async fn test_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let api = format!("path={}", socket.display());
    let mut fake = Fake::spawn(&["--api-socket", &api], &socket, &[("FAKE_IGNORE_SIGTERM", "1")]);
    fake.wait_for_socket();
    fake.signal("TERM");
    // Still serving after the signal was delivered and handled.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ping: Value = fake.client().get_json("/api/v1/vmm.ping").await.unwrap();
    assert_eq!(ping["build_version"], "v53.0");
    assert!(fake.child.try_wait().unwrap().is_none(), "SIGTERM ended it");
    fake.signal("KILL");
    assert!(!fake.wait_exit().success());
}

#[test]
fn test_fd_api_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let mut fake = Fake::spawn(&["--api-socket", "fd=3"], &socket, &[]);
    let status = fake.wait_exit();
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(fake.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("fd="), "{stderr}");
}
