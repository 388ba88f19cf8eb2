//! Several writers on one store file, each with its own connection (as separate CLI processes
//! would have): compare-and-set updates never both win and never get lost, and concurrent
//! inserts all land thanks to WAL and the busy timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;

use nestbox_store::{ListFilter, NewSandbox, SandboxError, SandboxId, SandboxName, SandboxState, Store};

fn new_sandbox(name: &str) -> NewSandbox {
    NewSandbox {
        name: SandboxName::parse(name).unwrap(),
        hypervisor: "qemu".into(),
        spec: serde_json::json!({ "name": name }),
        labels: BTreeMap::from([("owner".to_owned(), name.to_owned())]),
    }
}

fn running_sandbox(path: &Path) -> SandboxId {
    let mut s = Store::open(path).unwrap();
    let sb = s.insert(new_sandbox("racer")).unwrap();
    for (from, to) in [
        (SandboxState::Creating, SandboxState::Created),
        (SandboxState::Created, SandboxState::Starting),
        (SandboxState::Starting, SandboxState::Running),
    ] {
        s.update_state(&sb.id, &from, to).unwrap();
    }
    sb.id
}

/// In each round every thread tries the same running → paused move at once: exactly one wins,
/// the others see a conflict naming the new state.
#[test]
fn test_update_state_race_has_one_winner() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let id = running_sandbox(&path);
    let start = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (path, id, start, done) = (path.clone(), id.clone(), start.clone(), done.clone());
            thread::spawn(move || {
                let mut s = Store::open(&path).unwrap();
                let mut wins = 0;
                for _ in 0..ROUNDS {
                    start.wait();
                    match s.update_state(&id, &SandboxState::Running, SandboxState::Paused) {
                        Ok(sb) => {
                            assert_eq!(sb.state, SandboxState::Paused);
                            wins += 1;
                        }
                        Err(SandboxError::StateConflict { actual, .. }) => {
                            assert_eq!(actual, SandboxState::Paused);
                        }
                        Err(e) => panic!("unexpected error: {e:?}"),
                    }
                    done.wait();
                }
                wins
            })
        })
        .collect();
    let mut main = Store::open(&path).unwrap();
    for _ in 0..ROUNDS {
        start.wait();
        done.wait();
        // Everyone has finished this round; put the record back for the next one.
        main.update_state(&id, &SandboxState::Paused, SandboxState::Running).unwrap();
    }
    let wins: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(wins, ROUNDS);
}

/// Threads toggle running ⇄ paused as fast as they can, each from the state it last read. If
/// an update were ever lost (two read-modify-writes interleaving), the parity of successful
/// toggles would not match the final state.
#[test]
fn test_update_state_no_lost_updates() {
    const THREADS: usize = 2;
    const ATTEMPTS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let id = running_sandbox(&path);
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (path, id, start) = (path.clone(), id.clone(), start.clone());
            thread::spawn(move || {
                let mut s = Store::open(&path).unwrap();
                start.wait();
                let mut wins = 0usize;
                for _ in 0..ATTEMPTS {
                    let seen = s.get(&id).unwrap().state;
                    let next = match seen {
                        SandboxState::Running => SandboxState::Paused,
                        SandboxState::Paused => SandboxState::Running,
                        other => panic!("unexpected state {other}"),
                    };
                    match s.update_state(&id, &seen, next) {
                        Ok(_) => wins += 1,
                        Err(SandboxError::StateConflict { .. }) => {}
                        Err(e) => panic!("unexpected error: {e:?}"),
                    }
                }
                wins
            })
        })
        .collect();
    let wins: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(wins >= ATTEMPTS, "at least one thread's worth of toggles succeed: {wins}");
    let end = Store::open(&path).unwrap().get(&id).unwrap().state;
    let want = if wins.is_multiple_of(2) { SandboxState::Running } else { SandboxState::Paused };
    assert_eq!(end, want, "{wins} successful toggles");
}

/// Eight threads insert at once through their own connections; every row and label lands.
#[test]
fn test_concurrent_inserts_lose_nothing() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (path, start) = (path.clone(), start.clone());
            thread::spawn(move || {
                // Opening races too: the first opener migrates, the others wait on it.
                start.wait();
                let mut s = Store::open(&path).unwrap();
                (0..PER_THREAD).map(|i| s.insert(new_sandbox(&format!("t{t}-{i}"))).unwrap().id).collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: BTreeSet<SandboxId> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert_eq!(ids.len(), THREADS * PER_THREAD);
    let all = Store::open(&path).unwrap().list(&ListFilter::default()).unwrap();
    assert_eq!(all.len(), THREADS * PER_THREAD);
    for sb in &all {
        assert!(ids.contains(&sb.id));
        assert_eq!(sb.labels["owner"], sb.name.as_str());
        assert_eq!(sb.spec["name"], sb.name.as_str());
    }
}

/// Two threads race to take the same name; exactly one gets it.
#[test]
fn test_concurrent_same_name_one_wins() {
    const THREADS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    drop(Store::open(&path).unwrap());
    let start = Arc::new(Barrier::new(THREADS));
    let results: Vec<_> = (0..THREADS)
        .map(|_| {
            let (path, start) = (path.clone(), start.clone());
            thread::spawn(move || {
                let mut s = Store::open(&path).unwrap();
                start.wait();
                s.insert(new_sandbox("only-one")).map(|_| ())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|w| w.join().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(r, SandboxError::NameTaken { .. }), "{r:?}");
    }
}
