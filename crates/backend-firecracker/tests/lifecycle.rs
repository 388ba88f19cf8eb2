//! The whole life of a VM through the `Backend` trait against the stand-in Firecracker (whose
//! API keeps the real state machine and answers spec violations with 400), and every error
//! path: refused specs, configuration after start, pausing twice, snapshots of a running VM,
//! loading a snapshot into a configured process.

mod common;

use std::time::Duration;

use common::{backend, guest, wrapper};
use nestbox_backend::{AgentEndpoint, Backend, BackendError, VmDirs, VmState};
use nestbox_backend_firecracker::wire::{
    Drive, MemoryBackend, MemoryBackendType, SnapshotCreateParams, SnapshotLoadParams, SnapshotType,
};
use nestbox_model::Device;

const GRACE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn test_launch_pause_resume_state_shutdown_through_trait() {
    let g = guest();
    let backend = backend(&common::fake());
    let backend: &dyn Backend = &backend;
    backend.check(&g.spec).unwrap();
    let vm = backend.launch(&g.spec, &g.dirs).await.unwrap();
    assert_eq!(vm.agent_endpoint(), &AgentEndpoint::HybridVsock { path: g.dirs.root().join("vsock.sock"), port: 1024 });
    assert!(common::alive(vm.pid()));
    assert_eq!(vm.state().await.unwrap(), VmState::Running);

    vm.pause().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), VmState::Paused);
    let twice = vm.pause().await.unwrap_err();
    assert!(matches!(twice, BackendError::InvalidState { op: "pause", state: VmState::Paused }), "{twice}");

    vm.resume().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), VmState::Running);
    let again = vm.resume().await.unwrap_err();
    assert!(matches!(again, BackendError::InvalidState { op: "resume", state: VmState::Running }), "{again}");

    // Ctrl+Alt+Del reboots the guest and Firecracker exits 0: the first rung of the ladder.
    let report = vm.shutdown(GRACE).await;
    assert_eq!((report.code, report.signal), (Some(0), None));
    assert_eq!(vm.try_wait(), Some(report));
    assert_eq!(vm.state().await.unwrap(), VmState::Exited);
    let after = vm.pause().await.unwrap_err();
    assert!(matches!(after, BackendError::InvalidState { state: VmState::Exited, .. }), "{after}");
    assert!(vm.console_tail(10).iter().any(|l| l.contains("Running Firecracker")), "{:?}", vm.console_tail(10));
}

#[tokio::test]
async fn test_console_takes_keystrokes_and_ends_with_firecracker() {
    let g = guest();
    let vm = backend(&common::fake()).launch(&g.spec, &g.dirs).await.unwrap();
    let mut console = vm.console().expect("Firecracker has a console");
    common::type_and_hear(&mut console, b"uname -a\n").await;
    // Firecracker's last words come on the feed too, then the feed ends with the process.
    assert_eq!(vm.shutdown(GRACE).await.code, Some(0));
    let rest = common::rest_of_console(&mut console).await;
    assert!(rest.contains("Vmm is stopping."), "{rest:?}");
    assert!(!rest.contains("Running Firecracker"), "output from before the subscription: {rest:?}");
    let log = std::fs::read_to_string(g.dirs.console_log()).unwrap();
    assert!(log.contains("Running Firecracker") && log.contains("uname -a\n"), "{log}");
}

#[tokio::test]
async fn test_configuration_after_start_keeps_fault_message() {
    let g = guest();
    let backend = backend(&common::fake());
    let vm = backend.launch_vm(&g.spec, &g.dirs).await.unwrap();
    let drive = Drive {
        drive_id: "late".into(),
        partuuid: None,
        is_root_device: false,
        cache_type: None,
        is_read_only: Some(true),
        path_on_host: Some("/d/late.img".into()),
        rate_limiter: None,
        io_engine: None,
        socket: None,
    };
    let err = vm.client().put_drive(&drive).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "firecracker API PUT /drives/late failed: {} (status 400)",
            nestbox_testkit::firecracker::NOT_SUPPORTED_POST_BOOT
        )
    );
    // The VM is still up and answering.
    assert_eq!(nestbox_backend::VmHandle::state(&vm).await.unwrap(), VmState::Running);
}

#[tokio::test]
async fn test_snapshot_only_when_paused_and_restore_into_fresh_process() {
    let g = guest();
    let backend = backend(&common::fake());
    let vm = backend.launch_vm(&g.spec, &g.dirs).await.unwrap();
    let snap = |t| SnapshotCreateParams {
        mem_file_path: g.tmp.path().join("mem").to_string_lossy().into_owned(),
        snapshot_path: g.tmp.path().join("state").to_string_lossy().into_owned(),
        snapshot_type: t,
    };
    let running = vm.snapshot(&snap(None)).await.unwrap_err();
    assert!(matches!(running, BackendError::InvalidState { op: "snapshot", state: VmState::Running }), "{running}");
    nestbox_backend::VmHandle::pause(&vm).await.unwrap();
    vm.snapshot(&snap(Some(SnapshotType::Full))).await.unwrap();

    // A booted process refuses a snapshot load with Firecracker's own words.
    let load = SnapshotLoadParams {
        snapshot_path: snap(None).snapshot_path,
        mem_backend: Some(MemoryBackend {
            backend_type: MemoryBackendType::File,
            backend_path: snap(None).mem_file_path,
        }),
        mem_file_path: None,
        enable_diff_snapshots: None,
        track_dirty_pages: None,
        resume_vm: Some(true),
        network_overrides: vec![],
        vsock_override: None,
        clock_realtime: None,
    };
    let refused = vm.client().load_snapshot(&load).await.unwrap_err();
    assert!(refused.to_string().contains(nestbox_testkit::firecracker::NOT_SUPPORTED_POST_BOOT), "{refused}");
    nestbox_backend::VmHandle::kill(&vm);

    // A fresh process takes it and resumes.
    let dir2 = g.tmp.path().join("vm2");
    std::fs::create_dir(&dir2).unwrap();
    let restored = backend.restore(&VmDirs::new(&dir2), &load).await.unwrap();
    assert_eq!(nestbox_backend::VmHandle::state(&restored).await.unwrap(), VmState::Running);
    let report = nestbox_backend::VmHandle::shutdown(&restored, GRACE).await;
    assert_eq!(report.code, Some(0));
}

#[tokio::test]
async fn test_refused_specs_start_nothing() {
    let g = guest();
    let backend = backend(&common::fake());
    let mut spec = g.spec.clone();
    spec.devices.push(Device::VirtioFs { tag: "t".into(), path: "/srv".into() });
    let check = Backend::check(&backend, &spec).unwrap_err();
    assert!(check.to_string().ends_with("firecracker does not support devices[4] (virtio-fs)"), "{check}");
    let err = backend.launch(&spec, &g.dirs).await.unwrap_err();
    assert!(err.to_string().ends_with("firecracker does not support devices[4] (virtio-fs)"), "{err}");
    assert!(!g.dirs.api_socket().exists());
    assert!(!g.dirs.console_log().exists(), "nothing was spawned");

    let mut spec = g.spec.clone();
    spec.boot = nestbox_model::Boot::Firmware { path: "/fw".into() };
    let err = backend.launch(&spec, &g.dirs).await.unwrap_err();
    assert!(matches!(err, nestbox_backend::BackendError::Refused { .. }), "{err:?}");
    assert_eq!(err.to_string(), "firecracker does not support boot.firmware");

    // A qcow2 disk is refused before launch.
    let qcow = g.tmp.path().join("disk.qcow2");
    std::fs::write(&qcow, b"QFI\xfb\0\0\0\x03").unwrap();
    let mut spec = g.spec.clone();
    spec.devices.push(Device::VirtioBlk { id: "q".into(), path: qcow, readonly: true });
    let err = backend.launch(&spec, &g.dirs).await.unwrap_err();
    assert!(err.to_string().contains("only raw disks"), "{err}");
    assert!(!g.dirs.console_log().exists(), "nothing was spawned");
}

#[tokio::test]
async fn test_missing_binary_names_the_binary() {
    let g = guest();
    let backend = backend(std::path::Path::new("/nonexistent/firecracker"));
    let err = backend.launch(&g.spec, &g.dirs).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::BinaryNotFound { binary, .. } if binary == "/nonexistent/firecracker"),
        "{err}"
    );
    let err =
        nestbox_backend_firecracker::locate_binary(Some(std::path::Path::new("/nonexistent/firecracker"))).unwrap_err();
    assert!(matches!(err, BackendError::BinaryNotFound { .. }), "{err}");
}

#[tokio::test]
async fn test_exit_zero_after_vcpu_error_is_a_crash() {
    let g = guest();
    let backend = backend(&wrapper("vcpu-error"));
    let vm = backend.launch_vm(&g.spec, &g.dirs).await.unwrap();
    assert_eq!(vm.crash(), None, "no crash while it runs");
    let report = nestbox_backend::VmHandle::shutdown(&vm, GRACE).await;
    assert_eq!(report.code, Some(0));
    let crash = vm.crash().expect("the vCPU error is read from the log");
    assert!(crash.contains("Failure during vcpu run"), "{crash}");
    // The same verdict through the backend trait, where the engine reads it.
    assert_eq!(nestbox_backend::VmHandle::crash_reason(&vm), Some(crash));

    // A clean run reports no crash.
    let g = guest();
    let clean = common::backend(&wrapper("plain")).launch_vm(&g.spec, &g.dirs).await.unwrap();
    nestbox_backend::VmHandle::shutdown(&clean, GRACE).await;
    assert_eq!(clean.crash(), None);
}

#[tokio::test]
async fn test_stale_socket_is_replaced() {
    let g = guest();
    std::fs::write(g.dirs.api_socket(), b"stale").unwrap();
    let vm = backend(&common::fake()).launch(&g.spec, &g.dirs).await.unwrap();
    assert_eq!(vm.state().await.unwrap(), VmState::Running);
    vm.kill();
    vm.wait().await;
}

/// A stand-in `jailer`: checks the arguments the real one requires, then does what it does for
/// the socket: runs the exec file with `--id` and the arguments after `--`, the API socket
/// resolved inside `<chroot-base>/<exec name>/<id>/root`.
const JAILER_SCRIPT: &str = r#"#!/bin/sh
set -e
while [ "$#" -gt 0 ]; do
  case "$1" in
    --id) id="$2"; shift 2;;
    --exec-file) exec_file="$2"; shift 2;;
    --uid) uid="$2"; shift 2;;
    --gid) gid="$2"; shift 2;;
    --chroot-base-dir) base="$2"; shift 2;;
    --) shift; break;;
    *) echo "jailer: unexpected $1" >&2; exit 2;;
  esac
done
[ -n "$id" ] && [ -n "$exec_file" ] && [ -n "$uid" ] && [ -n "$gid" ] && [ -n "$base" ] || { echo "jailer: missing argument" >&2; exit 2; }
root="$base/$(basename "$exec_file")/$id/root"
[ -d "$root/run" ] || { echo "jailer: $root/run was not prepared" >&2; exit 2; }
[ -f "$root/kernel" ] || { echo "jailer: kernel not linked into $root" >&2; exit 2; }
[ "$1" = "--api-sock" ] || { echo "jailer: firecracker args start with $1" >&2; exit 2; }
sock="$2"; shift 2
exec "$exec_file" --id "$id" --api-sock "$root$sock" "$@"
"#;

#[tokio::test]
async fn test_launch_through_jailer_uses_the_chroot() {
    use std::os::unix::fs::PermissionsExt;
    let g = guest();
    let jailer = g.tmp.path().join("jailer");
    let fc = wrapper("plain");
    // Written and closed before the only spawn of this test; other tests' forks may still
    // inherit it for an instant, so retry the launch on ETXTBSY.
    std::fs::write(&jailer, JAILER_SCRIPT).unwrap();
    std::fs::set_permissions(&jailer, std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let id = |name: &str| -> u32 {
        status.lines().find(|l| l.starts_with(name)).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let mut jail = nestbox_backend_firecracker::JailerConfig::new(&jailer, id("Uid:"), id("Gid:"));
    jail.chroot_base = g.tmp.path().join("srv");
    let mut cfg = common::config(&fc);
    cfg.jailer = Some(jail);
    let backend = nestbox_backend_firecracker::FirecrackerBackend::new(cfg);
    let mut attempt = 0;
    let vm = loop {
        match backend.launch_vm(&g.spec, &g.dirs).await {
            Err(e) if attempt < 3 && e.to_string().contains("busy") => attempt += 1,
            other => break other.unwrap(),
        }
    };
    let root = g.tmp.path().join("srv/plain-firecracker/vm/root");
    assert_eq!(vm.layout().api_socket, root.join("run/firecracker.socket"));
    assert_eq!(
        nestbox_backend::VmHandle::agent_endpoint(&vm),
        &AgentEndpoint::HybridVsock { path: root.join("vsock.sock"), port: 1024 }
    );
    assert!(root.join("drive-data").is_file() && root.join("initrd").is_file());
    assert_eq!(nestbox_backend::VmHandle::state(&vm).await.unwrap(), VmState::Running);
    // The jailer hands Firecracker its stdio: the serial console works through it.
    let mut console = nestbox_backend::VmHandle::console(&vm).expect("a console through the jailer");
    common::type_and_hear(&mut console, b"jailed\n").await;
    let report = nestbox_backend::VmHandle::shutdown(&vm, GRACE).await;
    assert_eq!(report.code, Some(0));
    drop(vm);
    assert!(!root.exists(), "the jail is removed with the VM");
}
