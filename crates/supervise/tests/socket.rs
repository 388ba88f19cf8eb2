//! `Supervised::wait_for_socket` against real processes.

mod common;

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::sh;
use nestbox_supervise::{CommandSpec, OsSpawner, Spawner, SuperviseError, find_program};

#[tokio::test]
async fn test_wait_for_socket_ready_when_child_binds_late() {
    let Some(python) = find_program("python3") else {
        eprintln!("skipped: python3 not found on PATH");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.sock");
    let script = "import socket, sys, time\n\
                  time.sleep(0.3)\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  s.bind(sys.argv[1])\n\
                  s.listen(4)\n\
                  time.sleep(60)\n";
    let child = OsSpawner.spawn(&CommandSpec::new(python).arg("-c").arg(script).arg(&path)).unwrap();
    let start = Instant::now();
    child.wait_for_socket(&path, Duration::from_secs(30)).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(250), "ready too soon: {:?}", start.elapsed());
    assert_eq!(child.try_wait(), None);
}

#[tokio::test]
async fn test_wait_for_socket_ready_when_listener_appears_late() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let child = OsSpawner.spawn(&CommandSpec::new("sleep").arg("60")).unwrap();
    let bind_path = path.clone();
    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let listener = UnixListener::bind(&bind_path).unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(listener);
    });
    let start = Instant::now();
    child.wait_for_socket(&path, Duration::from_secs(30)).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(150));
    server.abort();
}

#[tokio::test]
async fn test_wait_for_socket_reports_early_exit_with_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.sock");
    let child = OsSpawner.spawn(&sh("echo starting >&2; echo 'unsupported machine type' >&2; exit 3")).unwrap();
    let start = Instant::now();
    let err = child.wait_for_socket(&path, Duration::from_secs(60)).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10), "should fail early");
    let SuperviseError::ProcessExited { status, stderr_tail } = &err else {
        panic!("expected ProcessExited, got {err:?}");
    };
    assert_eq!(status.code, Some(3));
    assert_eq!(stderr_tail, &["starting", "unsupported machine type"]);
    assert!(err.to_string().contains("unsupported machine type"), "{err}");
}

#[tokio::test]
async fn test_wait_for_socket_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("never.sock");
    let child = OsSpawner.spawn(&CommandSpec::new("sleep").arg("60")).unwrap();
    let deadline = Duration::from_millis(200);
    let err = child.wait_for_socket(&path, deadline).await.unwrap_err();
    let SuperviseError::SocketTimeout { path: got, waited } = &err else {
        panic!("expected SocketTimeout, got {err:?}");
    };
    assert_eq!(got, &path);
    assert!(*waited >= deadline, "{waited:?}");
    assert_eq!(child.try_wait(), None, "a timeout leaves the process running");
}
