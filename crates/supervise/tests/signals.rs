//! Termination, killing, waiting and dropping with real processes.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{alive, sh, stat_field, wait_until};
use nestbox_supervise::{CommandSpec, OsSpawner, Spawner, Stream};

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

#[tokio::test]
async fn test_terminate_kills_sigterm_ignorer_after_grace() {
    // `exec` keeps the PID; an ignored signal stays ignored across exec.
    let child = OsSpawner.spawn(&sh("trap '' TERM; echo ready; exec sleep 100")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || child.log_tail(Stream::Stdout, 1) == ["ready"]).await,
        "child never became ready"
    );
    let grace = Duration::from_millis(300);
    let start = Instant::now();
    let report = child.terminate(grace).await;
    assert_eq!(report.signal, Some(SIGKILL), "{report}");
    assert_eq!(report.to_string(), "killed by SIGKILL");
    assert!(start.elapsed() >= grace);
}

#[tokio::test]
async fn test_terminate_well_behaved_ends_with_sigterm() {
    let child = OsSpawner.spawn(&CommandSpec::new("sleep").arg("100")).unwrap();
    let start = Instant::now();
    let report = child.terminate(Duration::from_secs(20)).await;
    assert_eq!(report.signal, Some(SIGTERM), "{report}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(child.try_wait(), Some(report));
}

#[tokio::test]
async fn test_kill_ends_with_sigkill() {
    let child = OsSpawner.spawn(&CommandSpec::new("sleep").arg("100")).unwrap();
    child.kill();
    assert_eq!(child.wait().await.signal, Some(SIGKILL));
}

#[tokio::test]
async fn test_exit_code_reported() {
    let child = OsSpawner.spawn(&sh("exit 7")).unwrap();
    let report = child.wait().await;
    assert_eq!(report.code, Some(7));
    assert_eq!(report.to_string(), "exited with 7");
}

#[tokio::test]
async fn test_drop_kills_child() {
    let child = OsSpawner.spawn(&CommandSpec::new("sleep").arg("100")).unwrap();
    let pid = child.pid();
    assert!(alive(pid));
    drop(child);
    // Gone entirely: killed and reaped, not left a zombie.
    assert!(
        wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!("/proc/{pid}")).exists()).await,
        "process {pid} survived the drop of its handle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_wait_from_many_tasks_and_cancelled_waits() {
    let child = Arc::new(OsSpawner.spawn(&CommandSpec::new("sleep").arg("100")).unwrap());
    // A cancelled wait must not disturb later ones.
    assert!(tokio::time::timeout(Duration::from_millis(50), child.wait()).await.is_err());
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let child = Arc::clone(&child);
            tokio::spawn(async move { child.wait().await })
        })
        .collect();
    child.kill();
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().signal, Some(SIGKILL));
    }
    assert_eq!(child.wait().await.signal, Some(SIGKILL));
}

#[tokio::test]
async fn test_new_process_group_signals_whole_group() {
    let mut spec = sh("sleep 100 & echo $!; wait");
    spec.new_process_group = true;
    let child = OsSpawner.spawn(&spec).unwrap();
    let pid = child.pid();
    assert_eq!(stat_field(pid, 5), Some(pid.to_string()), "child leads its own group");
    assert!(wait_until(Duration::from_secs(10), || !child.log_tail(Stream::Stdout, 1).is_empty()).await);
    let grandchild: u32 = child.log_tail(Stream::Stdout, 1)[0].parse().unwrap();
    assert!(alive(grandchild));
    let report = child.terminate(Duration::from_secs(10)).await;
    assert_eq!(report.signal, Some(SIGTERM), "{report}");
    assert!(wait_until(Duration::from_secs(10), || !alive(grandchild)).await, "the group's other member survived");
}

/// Spawns `sleep` from a short-lived thread and returns its handle once that thread has exited.
async fn spawn_from_exiting_thread(die_with_parent: bool) -> nestbox_supervise::Supervised {
    let handle = tokio::runtime::Handle::current();
    let thread = std::thread::spawn(move || {
        let _guard = handle.enter();
        let mut spec = CommandSpec::new("sleep").arg("100");
        spec.die_with_parent = die_with_parent;
        OsSpawner.spawn(&spec).unwrap()
    });
    tokio::task::spawn_blocking(move || thread.join().unwrap()).await.unwrap()
}

#[tokio::test]
async fn test_die_with_parent_kills_child_when_spawner_goes() {
    // PR_SET_PDEATHSIG fires when the spawning thread exits.
    let child = spawn_from_exiting_thread(true).await;
    let report =
        tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("child outlived its parent thread");
    assert_eq!(report.signal, Some(SIGKILL));

    // The control: without the flag the child keeps running.
    let child = spawn_from_exiting_thread(false).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(child.try_wait(), None);
    assert!(alive(child.pid()));
}
