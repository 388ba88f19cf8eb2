//! The whole life of a VM through the `Backend` / `VmHandle` traits, against the stand-in
//! `cloud-hypervisor` (which serves the fake API with CH's state machine, every request checked
//! against the spec): launch, state, pause, resume, snapshot, restore, shutdown, and each way
//! these fail.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{GRACE, KnobSpawner, backend, backend_with, guest};
use nestbox_backend::{AgentEndpoint, Backend, BackendError, BackendKind, Operation, VmDirs, VmHandle, VmState};
use nestbox_backend_chv::wire::{DiskConfig, MemoryRestoreMode, VmResize};
use nestbox_backend_chv::{ChvConfig, CloudHypervisorBackend, ExitCause};
use nestbox_model::Device;

fn assert_invalid(result: Result<(), BackendError>, op: &str, state: VmState) {
    match result {
        Err(BackendError::InvalidState { op: got_op, state: got_state }) => {
            assert_eq!((got_op, got_state), (op, state));
        }
        other => panic!("expected InvalidState {{ {op}, {state} }}, got {other:?}"),
    }
}

#[tokio::test]
async fn test_launch_pause_resume_state_shutdown() {
    let guest = guest();
    let backend = backend();
    assert_eq!(backend.kind(), BackendKind::CloudHypervisor);
    let vm: Box<dyn VmHandle> = backend.launch(&guest.spec, &guest.dirs).await.unwrap();
    assert_eq!(
        vm.agent_endpoint(),
        &AgentEndpoint::HybridVsock { path: guest.dirs.root().join("vsock.sock"), port: 1024 }
    );
    assert!(vm.pid() > 0);
    assert_eq!(vm.try_wait(), None);
    assert_eq!(vm.state().await.unwrap(), VmState::Running);

    assert_invalid(vm.resume().await, "resume", VmState::Running);
    vm.pause().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), VmState::Paused);
    assert_invalid(vm.pause().await, "pause", VmState::Paused);
    vm.resume().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), VmState::Running);

    // The power button powers the (fake) guest off, and CH exits 0.
    let report = vm.shutdown(GRACE).await;
    assert_eq!(report.code, Some(0), "{report}");
    assert_eq!(vm.try_wait(), Some(report));
    assert_eq!(vm.wait().await, report);
    assert_eq!(vm.state().await.unwrap(), VmState::Exited);
    assert_invalid(vm.pause().await, "pause", VmState::Exited);
    assert_invalid(vm.resume().await, "resume", VmState::Exited);
    // A second shutdown is a no-op that reports the same exit.
    assert_eq!(vm.shutdown(GRACE).await, report);
}

#[tokio::test]
async fn test_launch_sends_the_mapped_config() {
    let guest = guest();
    let vm = backend().launch_vm(&guest.spec, &guest.dirs).await.unwrap();
    assert_eq!(vm.version(), "53.0.0");
    let info = vm.info().await.unwrap();
    let memory = info.config.memory.unwrap();
    assert!(memory.shared && !memory.thp, "{memory:?}");
    assert_eq!(memory.size, 256 << 20);
    assert_eq!(info.config.cpus.unwrap().boot_vcpus, 2);
    assert!(info.config.payload.cmdline.unwrap().ends_with("nestbox.agent=vsock:1024"));
    let vsock = info.config.vsock.unwrap();
    assert_eq!((vsock.cid, Path::new(&vsock.socket)), (3, guest.dirs.root().join("vsock.sock").as_path()));
    let disks = info.config.disks.unwrap();
    assert_eq!(disks[0].id.as_deref(), Some("root"));
    assert!(disks[0].readonly);
    vm.counters().await.unwrap();
    vm.shutdown(GRACE).await;
}

#[tokio::test]
async fn test_snapshot_then_restore_into_a_fresh_vmm() {
    let guest = guest();
    let backend = backend();
    let vm = backend.launch_vm(&guest.spec, &guest.dirs).await.unwrap();
    let snap = guest.tmp.path().join("snap");

    assert_invalid(vm.snapshot(&snap).await, "snapshot", VmState::Running);
    vm.pause().await.unwrap();
    vm.snapshot(&snap).await.unwrap();
    assert!(snap.join("config.json").is_file());
    assert!(snap.join("state.json").is_file());
    // Snapshotting again into the same directory: CH refuses to overwrite, and says so.
    match vm.snapshot(&snap).await {
        Err(BackendError::Api { backend: BackendKind::CloudHypervisor, request, message }) => {
            assert_eq!(request, "PUT /api/v1/vm.snapshot");
            assert!(message.starts_with("status 500: Error from API"), "{message}");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    // Paused, the guest cannot take the power button: a short grace, then vmm.shutdown.
    assert_eq!(vm.shutdown(Duration::from_millis(200)).await.code, Some(0));

    // Restore, paused, into another directory: the agent socket is the snapshot's.
    let other = tempfile::tempdir().unwrap();
    let restored =
        backend.restore(&VmDirs::new(other.path()), &snap, MemoryRestoreMode::OnDemand, false).await.unwrap();
    assert_eq!(restored.state().await.unwrap(), VmState::Paused);
    assert_eq!(
        restored.agent_endpoint(),
        &AgentEndpoint::HybridVsock { path: guest.dirs.root().join("vsock.sock"), port: 1024 }
    );
    restored.resume().await.unwrap();
    assert_eq!(restored.state().await.unwrap(), VmState::Running);
    restored.shutdown(GRACE).await;

    // Restore and resume at once.
    let third = tempfile::tempdir().unwrap();
    let resumed = backend.restore(&VmDirs::new(third.path()), &snap, MemoryRestoreMode::Copy, true).await.unwrap();
    assert_eq!(resumed.state().await.unwrap(), VmState::Running);
    resumed.shutdown(GRACE).await;
}

#[tokio::test]
async fn test_restore_of_a_missing_snapshot_fails_and_reaps_the_vmm() {
    let dir = tempfile::tempdir().unwrap();
    let err = backend()
        .restore(&VmDirs::new(dir.path()), &dir.path().join("nothing"), MemoryRestoreMode::Copy, true)
        .await
        .unwrap_err();
    let BackendError::Launch { backend: BackendKind::CloudHypervisor, reason } = &err else {
        panic!("expected a launch error, got {err:?}");
    };
    assert!(reason.starts_with("vm.restore: status 500: Error from API"), "{reason}");
    let relative = backend().restore(&VmDirs::new(dir.path()), Path::new("snap"), MemoryRestoreMode::Copy, true).await;
    assert!(matches!(relative, Err(BackendError::Io { .. })), "{relative:?}");
}

#[tokio::test]
async fn test_api_errors_keep_cloud_hypervisor_text() {
    let guest = guest();
    let vm = backend().launch_vm(&guest.spec, &guest.dirs).await.unwrap();
    // Booting twice.
    let err = vm.client().boot().await.unwrap_err();
    assert_eq!(err.endpoint, nestbox_backend_chv::Endpoint::VmBoot);
    assert!(err.status().is_some_and(|s| s >= 400), "{err:?}");
    assert!(err.message().contains("The VM could not boot"), "{}", err.message());
    // Removing a device that is not there.
    match vm.remove_device("nope").await {
        Err(BackendError::Api { request, message, .. }) => {
            assert_eq!(request, "PUT /api/v1/vm.remove-device");
            assert!(message.contains("Error from API"), "{message}");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    // Hot-adding a disk works, and the same id twice is refused.
    let disk = DiskConfig {
        path: Some(guest.tmp.path().join("extra.img").to_string_lossy().into_owned()),
        id: Some("extra".into()),
        ..DiskConfig::default()
    };
    let added = vm.add_disk(&disk).await.unwrap().expect("a hot-added disk has a PCI address");
    assert_eq!(added.id, "extra");
    assert!(matches!(vm.add_disk(&disk).await, Err(BackendError::Api { .. })));
    vm.remove_device("extra").await.unwrap();
    // The balloon resizes; vCPUs beyond max_vcpus do not.
    vm.resize_balloon(64 << 20).await.unwrap();
    let too_many = VmResize { desired_vcpus: Some(64), ..VmResize::default() };
    assert!(matches!(vm.resize(&too_many).await, Err(BackendError::Api { .. })));
    vm.shutdown(GRACE).await;
    // Once the VMM is gone, API calls say it exited.
    assert!(matches!(vm.info().await, Err(BackendError::Exited(_))), "{:?}", vm.info().await);
}

#[tokio::test]
async fn test_paused_vm_is_stopped_with_vmm_shutdown() {
    let guest = guest();
    let vm = backend().launch_vm(&guest.spec, &guest.dirs).await.unwrap();
    vm.pause().await.unwrap();
    // A paused guest cannot answer the power button; vmm.shutdown ends the VMM cleanly.
    let report = vm.shutdown(Duration::from_millis(300)).await;
    assert_eq!(report.code, Some(0), "{report}");
    assert_eq!(vm.exit_cause(), Some(ExitCause::Clean));
}

#[tokio::test]
async fn test_kill_is_forced_not_a_crash() {
    let guest = guest();
    let vm = backend().launch_vm(&guest.spec, &guest.dirs).await.unwrap();
    assert_eq!(vm.exit_cause(), None);
    vm.kill();
    let report = vm.wait().await;
    assert_eq!(report.signal, Some(9), "{report}");
    assert_eq!(vm.exit_cause(), Some(ExitCause::Forced { signal: 9 }));
    assert_eq!(vm.state().await.unwrap(), VmState::Exited);
}

#[tokio::test]
async fn test_exit_zero_after_a_vcpu_error_is_a_crash() {
    let guest = guest();
    let line = "cloud-hypervisor: 1.5s: <vcpu0> ERROR:vmm/src/cpu.rs:1460 -- VCPU generated error: VcpuRun(Failed to run vcpu)";
    let backend = backend_with(KnobSpawner::prologue(&format!("echo '{line}' >&2")));
    let vm = backend.launch_vm(&guest.spec, &guest.dirs).await.unwrap();
    let report = vm.shutdown(GRACE).await;
    assert_eq!(report.code, Some(0));
    match vm.exit_cause() {
        Some(ExitCause::Crash { reason, .. }) => assert!(reason.contains("VCPU generated error"), "{reason}"),
        other => panic!("expected a crash, got {other:?}"),
    }
    // The same verdict through the backend trait, where the engine reads it.
    let reason = nestbox_backend::VmHandle::crash_reason(&vm).expect("a crash reason through the trait");
    assert!(reason.contains("VCPU generated error"), "{reason}");
}

#[tokio::test]
async fn test_refusals_happen_before_any_process() {
    // A binary that does not exist proves nothing was spawned: spawning would say BinaryNotFound.
    let backend = CloudHypervisorBackend::new(ChvConfig::with_binary("/nonexistent/cloud-hypervisor"));
    let mut guest = guest();
    guest.spec.devices.push(Device::VirtioFs { tag: "src".into(), path: "/src".into() });
    match backend.launch(&guest.spec, &guest.dirs).await {
        Err(BackendError::Unsupported { backend: BackendKind::CloudHypervisor, op: Operation::DeviceFs }) => {}
        other => panic!("expected Unsupported, got {other:?}"),
    }
    guest.spec.devices.pop();
    guest.spec.devices.push(Device::Rng);
    match backend.launch(&guest.spec, &guest.dirs).await {
        Err(BackendError::Refused { backend: BackendKind::CloudHypervisor, reason }) => {
            assert_eq!(reason, "cloud-hypervisor has one rng device; devices[3] is a second")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    guest.spec.devices.pop();
    match backend.launch(&guest.spec, &guest.dirs).await {
        Err(BackendError::BinaryNotFound { binary, .. }) => assert_eq!(binary, "/nonexistent/cloud-hypervisor"),
        other => panic!("expected BinaryNotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn test_console_tail_reads_the_serial_output() {
    let guest = guest();
    let backend = backend_with(KnobSpawner::prologue("echo 'Linux version 6.1.0 (fake serial)'"));
    let vm = backend.launch_vm(&guest.spec, &guest.dirs).await.unwrap();
    vm.shutdown(GRACE).await;
    assert_eq!(vm.console_tail(1), ["Linux version 6.1.0 (fake serial)"]);
    let log = std::fs::read_to_string(guest.dirs.console_log()).unwrap();
    assert!(log.contains("fake serial"), "{log}");
}

#[tokio::test]
async fn test_console_takes_keystrokes_through_a_terminal() {
    let guest = guest();
    let vm = backend().launch(&guest.spec, &guest.dirs).await.unwrap();
    let mut console = vm.console().expect("Cloud Hypervisor has a console");
    let input = console.input.clone().expect("console input");
    // The stand-in, like Cloud Hypervisor, echoes only input that comes from a terminal.
    input.write(b"uname -a\n").await.unwrap();
    let mut heard = Vec::new();
    let echo = async {
        while !heard.ends_with(b"uname -a\n") {
            heard.extend_from_slice(&console.output.recv().await.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(10), echo).await.expect("no echo");
    assert_eq!(heard, b"uname -a\n");
    vm.shutdown(GRACE).await;
    assert!(input.write(b"late").await.is_err(), "input after the VMM exited");
    let log = std::fs::read_to_string(guest.dirs.console_log()).unwrap();
    assert!(log.contains("uname -a\n"), "{log}");
}

#[tokio::test]
async fn test_vm_create_refusal_fails_the_launch_with_ch_text() {
    let mut guest = guest();
    guest.spec.devices.push(Device::VirtioNet { id: "net0".into(), tap: "tap0".into(), mac: Some("not-a-mac".into()) });
    let err = backend().launch(&guest.spec, &guest.dirs).await.unwrap_err();
    match err {
        BackendError::Launch { backend: BackendKind::CloudHypervisor, reason } => {
            assert!(reason.starts_with("vm.create: status 400"), "{reason}");
            assert!(reason.contains("MAC"), "{reason}");
        }
        other => panic!("expected a launch error, got {other:?}"),
    }
}
