//! Output capture: in-memory tails and bounded, rotated log files.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::sh;
use nestbox_supervise::{LogSpec, OsSpawner, Spawner, Stream};

#[tokio::test]
async fn test_log_tail_separates_streams() {
    let child = OsSpawner.spawn(&sh("echo out1; echo err1 >&2; echo out2; printf 'no newline' >&2")).unwrap();
    assert!(child.wait().await.success());
    assert_eq!(child.log_tail(Stream::Stdout, 10), ["out1", "out2"]);
    assert_eq!(child.log_tail(Stream::Stderr, 10), ["err1", "no newline"]);
    assert_eq!(child.log_tail(Stream::Stdout, 1), ["out2"]);
}

#[tokio::test]
async fn test_log_file_rotates_and_keeps_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qemu.out");
    let rotated = dir.path().join("qemu.out.1");
    let max_bytes = 256;
    let mut spec = sh("i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done");
    spec.stdout_log = Some(LogSpec { path: path.clone(), max_bytes });
    let child = OsSpawner.spawn(&spec).unwrap();
    assert!(child.wait().await.success());

    let expected: String = (0..200).map(|i| format!("line-{i}\n")).collect();
    let live = std::fs::read_to_string(&path).unwrap();
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(live.len() as u64 <= max_bytes, "live file is {} bytes", live.len());
    assert!(old.len() as u64 <= max_bytes, "rotated file is {} bytes", old.len());
    assert!(live.ends_with("line-199\n"), "{live}");
    // The two generations together are the end of the output, in order, cut at lines.
    let kept = format!("{old}{live}");
    assert!(expected.ends_with(&kept), "{kept}");
    assert!(kept.starts_with("line-"), "{kept}");
    assert!(kept.len() as u64 > max_bytes);
    for file in [&path, &rotated] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    assert_eq!(child.log_tail(Stream::Stdout, 3), ["line-197", "line-198", "line-199"]);
}

#[tokio::test]
async fn test_stderr_log_file_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("err.log");
    let mut spec = sh("echo oops >&2; echo fine");
    spec.stderr_log = Some(LogSpec { path: path.clone(), max_bytes: 1 << 20 });
    let child = OsSpawner.spawn(&spec).unwrap();
    child.wait().await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "oops\n");
}

#[tokio::test]
async fn test_memory_tail_is_bounded() {
    let child =
        OsSpawner.spawn(&sh("i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done; echo last")).unwrap();
    assert!(child.wait().await.success());
    let tail = child.log_tail(Stream::Stdout, usize::MAX);
    let bytes: usize = tail.iter().map(|line| line.len() + 1).sum();
    assert!(bytes <= nestbox_supervise::DEFAULT_LOG_RING_BYTES, "{bytes}");
    assert!(tail.len() > 1000);
    assert_eq!(tail.last().map(String::as_str), Some("last"));
    assert!(tail[0].starts_with("line-"), "first kept line is whole: {}", tail[0]);
    assert_eq!(tail[tail.len() - 2], "line-19999");
}

#[tokio::test]
async fn test_stdout_and_stderr_share_one_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.log");
    let max_bytes = 200;
    // Stderr rotates the file many times, then stdout writes a little. Were the streams writing
    // through separate handles, stdout's handle would point at a file rotated away and deleted.
    let mut spec = sh("i=0; while [ $i -lt 100 ]; do echo err-$i >&2; i=$((i+1)); done; \
         sleep 0.2; i=0; while [ $i -lt 10 ]; do echo out-$i; i=$((i+1)); done");
    let log = LogSpec { path: path.clone(), max_bytes };
    spec.stdout_log = Some(log.clone());
    spec.stderr_log = Some(log);
    let child = OsSpawner.spawn(&spec).unwrap();
    assert!(child.wait().await.success());
    let live = std::fs::read_to_string(&path).unwrap();
    let old = std::fs::read_to_string(dir.path().join("vm.log.1")).unwrap();
    assert!(live.len() as u64 <= max_bytes && old.len() as u64 <= max_bytes);
    let kept = format!("{old}{live}");
    for line in kept.lines() {
        assert!(line.starts_with("out-") || line.starts_with("err-"), "torn line {line:?} in {kept}");
    }
    assert!(kept.contains("err-99\n"), "{kept}");
    assert!(kept.ends_with("out-9\n"), "{kept}");
}
