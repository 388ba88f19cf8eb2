//! Supervision with the stand-in `cloud-hypervisor` and its knobs: the API socket appears late,
//! never appears, the process dies before it is ready, and it ignores SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::{KnobSpawner, config, fake, guest};
use nestbox_backend::{Backend, BackendError, BackendKind, VmHandle};
use nestbox_backend_chv::process::{self, ExitCause};
use nestbox_backend_chv::{ChvClient, CloudHypervisorBackend};
use nestbox_supervise::{OsSpawner, Spawner};

fn backend_with_knobs(knobs: &[(&str, &str)], start_timeout: Duration) -> CloudHypervisorBackend {
    let mut config = config(fake());
    config.start_timeout = start_timeout;
    CloudHypervisorBackend::with_spawner(config, KnobSpawner::env(knobs))
}

#[tokio::test]
async fn test_late_socket_within_the_deadline() {
    let guest = guest();
    let backend = backend_with_knobs(&[("FAKE_DELAY_MS", "400")], Duration::from_secs(10));
    let start = Instant::now();
    let vm = backend.launch(&guest.spec, &guest.dirs).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert_eq!(vm.shutdown(common::GRACE).await.code, Some(0));
}

#[tokio::test]
async fn test_socket_never_appears() {
    let guest = guest();
    let backend = backend_with_knobs(&[("FAKE_DELAY_MS", "60000")], Duration::from_millis(300));
    let start = Instant::now();
    let err = backend.launch(&guest.spec, &guest.dirs).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    match err {
        BackendError::Launch { backend: BackendKind::CloudHypervisor, reason } => {
            assert!(reason.contains("not ready after"), "{reason}");
        }
        other => panic!("expected a launch error, got {other:?}"),
    }
}

#[tokio::test]
async fn test_process_dies_before_it_is_ready() {
    let guest = guest();
    let backend = backend_with_knobs(&[("FAKE_EXIT", "3")], Duration::from_secs(10));
    let start = Instant::now();
    let err = backend.launch(&guest.spec, &guest.dirs).await.unwrap_err();
    // Reported at once, not at the deadline.
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    match err {
        BackendError::Launch { reason, .. } => assert!(reason.contains("exited with 3"), "{reason}"),
        other => panic!("expected a launch error, got {other:?}"),
    }
}

#[tokio::test]
async fn test_ignores_sigterm_then_sigkill() {
    let guest = guest();
    let mut cmd = common::backend().command(&guest.dirs).unwrap();
    cmd.env.push(("FAKE_IGNORE_SIGTERM".into(), "1".into()));
    let child = OsSpawner.spawn(&cmd).unwrap();
    child.wait_for_socket(&guest.dirs.api_socket(), Duration::from_secs(10)).await.unwrap();
    // A client on a socket nobody serves: vmm.shutdown fails, so the stop goes to signals.
    let nowhere = ChvClient::new(guest.tmp.path().join("nobody.sock"));
    let grace = Duration::from_millis(300);
    let start = Instant::now();
    let (report, signalled) = process::stop(&child, &nowhere, grace).await;
    assert!(signalled);
    assert_eq!(report.signal, Some(9), "SIGTERM was ignored, so SIGKILL ended it: {report:?}");
    assert!(start.elapsed() >= grace);
    let cause = process::classify_exit(report, &[], &[], signalled);
    assert_eq!(cause, ExitCause::Forced { signal: 9 });
}

#[tokio::test]
async fn test_stubborn_vmm_still_stops_through_the_api() {
    // SIGTERM is ignored, but vmm.shutdown is the first step and ends it cleanly.
    let guest = guest();
    let backend = backend_with_knobs(&[("FAKE_IGNORE_SIGTERM", "1")], Duration::from_secs(10));
    let vm = backend.launch_vm(&guest.spec, &guest.dirs).await.unwrap();
    vm.pause().await.unwrap();
    let report = vm.shutdown(Duration::from_millis(200)).await;
    assert_eq!(report.code, Some(0), "{report}");
    assert_eq!(vm.exit_cause(), Some(ExitCause::Clean));
}

#[tokio::test]
async fn test_binary_version_of_the_stand_in() {
    assert_eq!(process::binary_version(&fake()).await.unwrap(), "v53.0");
}
