//! The one owner of `wait`: reaps every child, including orphans that PID 1
//! inherits, and hands exit statuses of registered exec children to their waiters.
//!
//! A child is registered while the spawn lock is held, and the reaper only reaps
//! (after peeking with `WNOWAIT`) while holding that lock, so a child that exits
//! before its pid is registered is never reaped unseen. Holding the lock during
//! `Command::spawn` also lets std reap a child whose `exec` failed without racing
//! the reaper.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

use crate::log;

/// How long the reaper sleeps with no children before looking again (a safety
/// net; spawns wake it at once).
const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code for a normal exit.
    pub code: Option<i32>,
    /// Signal number when killed by a signal.
    pub signal: Option<i32>,
}

#[derive(Debug, Default)]
struct State {
    waiters: HashMap<i32, Sender<ExitInfo>>,
    generation: u64,
}

/// Shared handle to the reaper thread.
#[derive(Debug)]
pub struct Reaper {
    state: Mutex<State>,
    wake: Condvar,
    spawn_lock: Mutex<()>,
}

impl Reaper {
    /// Starts the reaper thread.
    pub fn start() -> io::Result<Arc<Reaper>> {
        let reaper =
            Arc::new(Reaper { state: Mutex::new(State::default()), wake: Condvar::new(), spawn_lock: Mutex::new(()) });
        let r = Arc::clone(&reaper);
        std::thread::Builder::new().name("reaper".into()).stack_size(crate::THREAD_STACK).spawn(move || r.run())?;
        Ok(reaper)
    }

    /// Spawns `cmd` and registers its pid; the receiver yields its exit status.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, Receiver<ExitInfo>)> {
        let _guard = self.spawn_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let child = cmd.spawn()?;
        let (tx, rx) = mpsc::channel();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.waiters.insert(child.id() as i32, tx);
        state.generation += 1;
        self.wake.notify_all();
        Ok((child, rx))
    }

    fn run(&self) {
        loop {
            let generation = self.lock_state().generation;
            match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.reap(pid);
                    }
                }
                Err(Errno::ECHILD) => {
                    let state = self.lock_state();
                    if state.generation == generation {
                        let _ = self.wake.wait_timeout(state, IDLE_RECHECK).unwrap_or_else(PoisonError::into_inner);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    log::error(&format!("waitid: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn reap(&self, pid: Pid) {
        let _guard = self.spawn_lock.lock().unwrap_or_else(PoisonError::into_inner);
        // WNOHANG: std may have reaped it already (failed exec) and the pid been reused.
        let info = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => ExitInfo { code: Some(code), signal: None },
            Ok(WaitStatus::Signaled(_, sig, _)) => ExitInfo { code: None, signal: Some(sig as i32) },
            Ok(_) | Err(_) => return,
        };
        if let Some(tx) = self.lock_state().waiters.remove(&pid.as_raw()) {
            let _ = tx.send(info);
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use super::*;

    /// One reaper per process: two would steal each other's children.
    pub(crate) fn shared() -> Arc<Reaper> {
        static REAPER: OnceLock<Arc<Reaper>> = OnceLock::new();
        Arc::clone(REAPER.get_or_init(|| Reaper::start().unwrap()))
    }

    #[test]
    fn test_reaper_delivers_exit_code_and_signal() {
        let reaper = shared();
        let (_c, rx) = reaper.spawn(Command::new("sh").args(["-c", "exit 7"])).unwrap();
        let (_c2, rx2) = reaper.spawn(Command::new("sh").args(["-c", "kill -KILL $$"])).unwrap();
        let timeout = Duration::from_secs(10);
        assert_eq!(rx.recv_timeout(timeout).unwrap(), ExitInfo { code: Some(7), signal: None });
        assert_eq!(rx2.recv_timeout(timeout).unwrap(), ExitInfo { code: None, signal: Some(9) });
    }

    #[test]
    fn test_reaper_survives_failed_exec() {
        let reaper = shared();
        let err = reaper.spawn(&mut Command::new("/nonexistent/nestbox-test")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        let (_c, rx) = reaper.spawn(&mut Command::new("true")).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap().code, Some(0));
    }
}
