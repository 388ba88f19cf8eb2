//! Per-sandbox exclusive locks across processes.
//!
//! Every operation on one sandbox (start, stop, exec setup, rm, reconcile) holds
//! [`SandboxLock`] on `<dir>/<id>.lock`, an `flock(2)` lock, so two CLIs serialize on the same
//! sandbox while different sandboxes proceed in parallel. The kernel drops the lock when the
//! holder exits, even on `kill -9`, so a crashed CLI never leaves a stale lock. Lock files are
//! left in place (deleting one while another process waits on it would split the lock); `rm`
//! and the garbage collector remove them while holding the lock.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::sandbox::SandboxId;

/// How long [`SandboxLock::acquire`] waits by default.
pub const DEFAULT_LOCK_TIMEOUT_MS: u64 = 30_000;
/// How often a waiting acquirer retries.
const LOCK_POLL_INTERVAL_MS: u64 = 10;

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file could not be created or opened.
    #[error("cannot open lock file {path}")]
    Open {
        /// The lock file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Another process held the lock for the whole timeout.
    #[error("sandbox {id} is busy: another operation held its lock for {timeout_ms} ms")]
    Timeout {
        /// The sandbox.
        id: SandboxId,
        /// How long we waited.
        timeout_ms: u128,
    },
    /// `flock` failed for a reason other than contention.
    #[error("cannot lock {path}")]
    Flock {
        /// The lock file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: Errno,
    },
}

/// An exclusive lock on one sandbox; released when dropped.
#[derive(Debug)]
pub struct SandboxLock {
    _lock: Flock<File>,
    path: PathBuf,
}

/// The lock file for `id` under `dir`.
pub fn lock_path(dir: &Path, id: &SandboxId) -> PathBuf {
    dir.join(format!("{id}.lock"))
}

impl SandboxLock {
    /// Takes the lock for `id` under `dir` (which must exist), waiting up to `timeout`.
    pub fn acquire(dir: &Path, id: &SandboxId, timeout: Duration) -> Result<Self, LockError> {
        let path = lock_path(dir, id);
        let deadline = Instant::now() + timeout;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| LockError::Open { path: path.clone(), source })?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(Self { _lock: lock, path }),
                Err((f, Errno::EWOULDBLOCK | Errno::EINTR)) => file = f,
                Err((_, source)) => return Err(LockError::Flock { path, source }),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LockError::Timeout { id: id.clone(), timeout_ms: timeout.as_millis() });
            }
            std::thread::sleep(Duration::from_millis(LOCK_POLL_INTERVAL_MS).min(deadline - now));
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread;

    use super::*;

    fn id(s: &str) -> SandboxId {
        SandboxId::parse(s).unwrap()
    }

    #[test]
    fn test_lock_excludes_same_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let a = id("aaaaaaaaaaaa");
        let held = SandboxLock::acquire(dir.path(), &a, Duration::ZERO).unwrap();
        assert_eq!(held.path(), dir.path().join("aaaaaaaaaaaa.lock"));
        let err = SandboxLock::acquire(dir.path(), &a, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, LockError::Timeout { timeout_ms: 50, .. }), "{err:?}");
        drop(held);
        SandboxLock::acquire(dir.path(), &a, Duration::ZERO).unwrap();
    }

    #[test]
    fn test_lock_different_sandboxes_do_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let _a = SandboxLock::acquire(dir.path(), &id("aaaaaaaaaaaa"), Duration::ZERO).unwrap();
        let _b = SandboxLock::acquire(dir.path(), &id("bbbbbbbbbbbb"), Duration::ZERO).unwrap();
    }

    #[test]
    fn test_lock_waiter_gets_it_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let a = id("aaaaaaaaaaaa");
        let held = SandboxLock::acquire(dir.path(), &a, Duration::ZERO).unwrap();
        let (tx, rx) = mpsc::channel();
        let path = dir.path().to_owned();
        let a2 = a.clone();
        let waiter = thread::spawn(move || {
            tx.send(()).unwrap();
            SandboxLock::acquire(&path, &a2, Duration::from_secs(10)).map(|_| Instant::now())
        });
        rx.recv().unwrap();
        thread::sleep(Duration::from_millis(100));
        let released = Instant::now();
        drop(held);
        let got = waiter.join().unwrap().unwrap();
        assert!(got >= released);
    }

    #[test]
    fn test_lock_missing_dir_is_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = SandboxLock::acquire(&dir.path().join("nope"), &id("aaaaaaaaaaaa"), Duration::ZERO).unwrap_err();
        assert!(matches!(err, LockError::Open { .. }), "{err:?}");
    }
}
