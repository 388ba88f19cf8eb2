//! Spawning: errors, environment, working directory.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::sh;
use nestbox_supervise::{CommandSpec, LogSpec, OsSpawner, Spawner, Stream, SuperviseError};

#[tokio::test]
async fn test_spawn_missing_program_is_not_found() {
    for program in ["/nonexistent/qemu-system-x86_64", "nestbox-no-such-program"] {
        let err = OsSpawner.spawn(&CommandSpec::new(program)).unwrap_err();
        assert!(err.is_not_found(), "{program}: {err:?}");
        assert!(matches!(&err, SuperviseError::Spawn { program: p, .. } if p.as_os_str() == program));
    }
}

#[tokio::test]
async fn test_spawn_non_executable_is_not_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script");
    std::fs::write(&path, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = OsSpawner.spawn(&CommandSpec::new(&path)).unwrap_err();
    assert!(matches!(err, SuperviseError::Spawn { .. }), "{err:?}");
    assert!(!err.is_not_found());
}

#[tokio::test]
async fn test_spawn_passes_env_and_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("echo \"$NESTBOX_TEST_VAR\"; pwd").env("NESTBOX_TEST_VAR", "hello world");
    spec.cwd = Some(dir.path().to_owned());
    let child = OsSpawner.spawn(&spec).unwrap();
    assert!(child.wait().await.success());
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(child.log_tail(Stream::Stdout, 2), ["hello world".to_owned(), cwd.display().to_string()]);
}

#[tokio::test]
async fn test_spawn_stdin_is_empty() {
    let child = OsSpawner.spawn(&sh("cat; echo done")).unwrap();
    assert!(child.wait().await.success());
    assert_eq!(child.log_tail(Stream::Stdout, 5), ["done"]);
}

#[tokio::test]
async fn test_spawn_bad_log_path_fails_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let mut spec = sh(&format!("touch '{}'", marker.display()));
    spec.stdout_log = Some(LogSpec { path: dir.path().join("missing-dir/out.log"), max_bytes: 1024 });
    let err = OsSpawner.spawn(&spec).unwrap_err();
    assert!(matches!(err, SuperviseError::Io { .. }), "{err:?}");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!marker.exists(), "the program ran despite the bad log path");
}
