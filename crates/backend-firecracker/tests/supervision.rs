//! Supervision with the stand-in executable: a socket that appears late, one that never does,
//! a process that dies before it is ready, and one that ignores SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::{config, guest, wrapper};
use nestbox_backend::{Backend, BackendError, VmState};
use nestbox_backend_firecracker::FirecrackerBackend;

#[tokio::test]
async fn test_late_socket_is_waited_for() {
    let g = guest();
    let started = Instant::now();
    let vm = FirecrackerBackend::new(config(&wrapper("late"))).launch(&g.spec, &g.dirs).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "the socket came after FAKE_DELAY_MS");
    assert_eq!(vm.state().await.unwrap(), VmState::Running);
    vm.kill();
    vm.wait().await;
}

#[tokio::test]
async fn test_socket_never_appears_times_out_and_kills() {
    let g = guest();
    let mut cfg = config(&wrapper("never"));
    cfg.start_timeout = Duration::from_millis(400);
    let started = Instant::now();
    let err = FirecrackerBackend::new(cfg).launch(&g.spec, &g.dirs).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "the deadline held");
    let BackendError::Launch { reason, .. } = &err else { panic!("{err:?}") };
    assert!(reason.contains("not ready after"), "{reason}");
    // The stand-in printed its banner before it slept, and is gone now.
    let log = std::fs::read_to_string(g.dirs.console_log()).unwrap_or_default();
    assert!(log.contains("Running Firecracker"), "{log}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while pid_with_socket(&g).is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pid_with_socket(&g), None, "the stand-in was killed");
}

/// A live process whose command line names this VM's API socket.
fn pid_with_socket(g: &common::Guest) -> Option<u32> {
    let needle = g.dirs.api_socket().to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (String::from_utf8_lossy(&cmdline).contains(&needle) && common::alive(pid)).then_some(pid)
    })
}

#[tokio::test]
async fn test_early_death_reports_stderr_tail() {
    let g = guest();
    let err = FirecrackerBackend::new(config(&wrapper("dies"))).launch(&g.spec, &g.dirs).await.unwrap_err();
    let BackendError::Launch { reason, .. } = &err else { panic!("{err:?}") };
    assert!(reason.contains("exited with 3"), "{reason}");
    assert!(reason.contains("exiting early with 3"), "the stand-in's last words: {reason}");
}

#[tokio::test]
async fn test_ignored_sigterm_ends_in_sigkill() {
    let g = guest();
    let mut cfg = config(&wrapper("stubborn"));
    cfg.ctrl_alt_del = false;
    cfg.term_grace = Duration::from_millis(300);
    let vm = FirecrackerBackend::new(cfg).launch(&g.spec, &g.dirs).await.unwrap();
    let pid = vm.pid();
    let report = vm.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.signal, Some(9), "{report:?}");
    assert!(!common::alive(pid));
    assert_eq!(vm.state().await.unwrap(), VmState::Exited);
}

#[tokio::test]
async fn test_sigterm_is_enough_for_a_willing_process() {
    let g = guest();
    let mut cfg = config(&wrapper("plain"));
    cfg.ctrl_alt_del = false;
    let vm = FirecrackerBackend::new(cfg).launch(&g.spec, &g.dirs).await.unwrap();
    let report = vm.shutdown(Duration::from_millis(100)).await;
    assert_eq!((report.code, report.signal), (Some(0), None), "the stand-in exits 0 on SIGTERM");
}
