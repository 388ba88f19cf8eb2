//! The live side of a supervised process: output subscriptions and stdin (a pipe or a
//! pseudo-terminal).

mod common;

use std::time::Duration;

use common::sh;
use nestbox_supervise::{CommandSpec, LogSpec, OsSpawner, Spawner, StdinMode, Stream};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

const DEADLINE: Duration = Duration::from_secs(20);

/// Receives until the bytes gathered contain `needle`; panics after [`DEADLINE`] or when the
/// feed ends first.
async fn recv_until(rx: &mut Receiver<bytes::Bytes>, needle: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let gather = async {
        while !got.windows(needle.len()).any(|w| w == needle) {
            match rx.recv().await {
                Ok(chunk) => got.extend_from_slice(&chunk),
                Err(e) => panic!("feed ended ({e}) before {:?}", String::from_utf8_lossy(needle)),
            }
        }
    };
    tokio::time::timeout(DEADLINE, gather).await.expect("output did not arrive");
    got
}

/// Everything left in the feed, until it ends.
async fn recv_to_end(rx: &mut Receiver<bytes::Bytes>) -> Vec<u8> {
    let mut got = Vec::new();
    let gather = async {
        loop {
            match rx.recv().await {
                Ok(chunk) => got.extend_from_slice(&chunk),
                Err(RecvError::Closed) => break,
                Err(RecvError::Lagged(n)) => panic!("lagged by {n}"),
            }
        }
    };
    tokio::time::timeout(DEADLINE, gather).await.expect("the feed did not end");
    got
}

#[tokio::test]
async fn test_subscriber_sees_only_output_after_subscribe() {
    let child = OsSpawner.spawn(&sh("echo before; read go; echo after-$go").stdin_piped()).unwrap();
    assert!(common::wait_until(DEADLINE, || child.log_tail(Stream::Stdout, 1) == ["before"]).await);
    let mut rx = child.subscribe(Stream::Stdout);
    let mut late = child.subscribe(Stream::Stdout);
    child.stdin().unwrap().write(b"x\n").await.unwrap();
    assert_eq!(recv_to_end(&mut rx).await, b"after-x\n");
    assert_eq!(recv_to_end(&mut late).await, b"after-x\n", "every subscriber gets every chunk");
    assert!(child.wait().await.success());
    // After the stream has ended, a subscription ends at once.
    assert!(matches!(child.subscribe(Stream::Stdout).recv().await, Err(RecvError::Closed)));
}

#[tokio::test]
async fn test_stdin_reaches_cat_and_comes_back() {
    let child = OsSpawner.spawn(&CommandSpec::new("cat").stdin_piped()).unwrap();
    let mut rx = child.subscribe(Stream::Stdout);
    let stdin = child.stdin().unwrap();
    stdin.write(b"hello\n").await.unwrap();
    assert_eq!(recv_until(&mut rx, b"hello\n").await, b"hello\n");
    // Clones share the pipe; each write arrives whole.
    let (a, b) = (stdin.clone(), child.stdin().unwrap());
    let big_a = vec![b'a'; 100_000];
    let big_b = vec![b'b'; 100_000];
    let (ra, rb) = tokio::join!(a.write(&big_a), b.write(&big_b));
    ra.unwrap();
    rb.unwrap();
    // Closing ends cat's input: it exits, and the feed ends after the last of its output.
    stdin.close().await;
    let rest = recv_to_end(&mut rx).await;
    assert!(child.wait().await.success());
    assert_eq!(rest.len(), 200_000);
    let first = rest[0];
    let switch = rest.iter().position(|&c| c != first).unwrap();
    assert_eq!(switch, 100_000, "the two writes interleaved");
    assert!(rest[switch..].iter().all(|&c| c != first));
    let err = a.write(b"more").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn test_write_after_exit_fails() {
    for spec in [sh("exit 0").stdin_piped(), sh("exit 0").stdin_pty()] {
        let child = OsSpawner.spawn(&spec).unwrap();
        child.wait().await;
        let err = child.stdin().unwrap().write(b"late\n").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{:?}: {err}", spec.stdin);
    }
}

#[tokio::test]
async fn test_lagging_subscriber_does_not_hold_up_the_child_or_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.log");
    // About 14 MB: many more chunks than a subscriber may fall behind by.
    let mut spec = sh("yes line | head -n 2000000; echo last");
    spec.stdout_log = Some(LogSpec { path: path.clone(), max_bytes: 1 << 20 });
    let child = OsSpawner.spawn(&spec).unwrap();
    let mut stalled = child.subscribe(Stream::Stdout);
    let report = tokio::time::timeout(DEADLINE, child.wait()).await.expect("a stalled subscriber held up the child");
    assert!(report.success());
    assert!(std::fs::read_to_string(&path).unwrap().ends_with("line\nlast\n"));
    assert_eq!(child.log_tail(Stream::Stdout, 1), ["last"]);
    // The subscriber is told what it lost, then reads on from the oldest chunk kept, up to the end.
    match stalled.recv().await {
        Err(RecvError::Lagged(lost)) => assert!(lost > 0),
        other => panic!("expected a lag, got {other:?}"),
    }
    let rest = recv_to_end(&mut stalled).await;
    assert!(rest.ends_with(b"line\nlast\n"));
    assert!(rest.len() <= nestbox_supervise::SUBSCRIBER_BACKLOG_CHUNKS * nestbox_supervise::CAPTURE_READ_BYTES);
}

#[tokio::test]
async fn test_pty_stdin_is_a_raw_terminal() {
    let spec = sh("if [ -t 0 ]; then echo tty; else echo not-a-tty; fi; exec cat").stdin_pty();
    assert_eq!(spec.stdin, StdinMode::Pty);
    let child = OsSpawner.spawn(&spec).unwrap();
    let mut rx = child.subscribe(Stream::Stdout);
    let stdin = child.stdin().unwrap();
    // Raw: a carriage return is not turned into a newline, and nothing waits for a whole line.
    stdin.write(b"a\rb").await.unwrap();
    assert!(recv_until(&mut rx, b"a\rb").await.ends_with(b"a\rb"));
    assert_eq!(child.log_tail(Stream::Stdout, 10)[0], "tty");
    // Closing the terminal is a hang-up: cat's input ends.
    stdin.close().await;
    tokio::time::timeout(DEADLINE, child.wait()).await.expect("cat did not see the hang-up");
}

#[tokio::test]
async fn test_no_stdin_writer_unless_asked_for() {
    let spec = sh("exit 0");
    assert_eq!(spec.stdin, StdinMode::Null);
    let child = OsSpawner.spawn(&spec).unwrap();
    assert!(child.stdin().is_none());
    assert!(child.wait().await.success());
}
