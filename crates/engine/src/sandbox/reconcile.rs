//! Reconciliation: making a record tell the truth about processes that may have died.
//!
//! A record in an active state (`starting`, `running`, `paused`, `stopping`) claims a live shim.
//! When that shim is gone, the sandbox ended: as the shim wrote in `exit.json` if it had the
//! chance, or as crashed (`the shim (pid N) died`) if it had not. A `starting` record without a
//! shim is an interrupted start once nobody holds the sandbox's lock and no shim process of it
//! runs (one spawned just before its CLI died records itself). Every command runs this on
//! the records it reads.

use std::path::Path;

use nestbox_store::{Sandbox, SandboxError, SandboxLock, SandboxState, Store};
use serde::{Deserialize, Serialize};

use super::{Sandboxes, files, proc};
use crate::EngineError;

/// How the VM ended, as the shim recorded it in `exit.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// `stopped` or `crashed`.
    pub state: String,
    /// Why, for `crashed` (and for a forced stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The exit code a shell would show for the hypervisor, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl ExitRecord {
    /// The state it stands for.
    pub fn sandbox_state(&self) -> SandboxState {
        match self.state.as_str() {
            "stopped" => SandboxState::Stopped,
            _ => SandboxState::Crashed { reason: self.reason.clone().unwrap_or_else(|| "unknown".into()) },
        }
    }

    /// Reads `<dir>/exit.json`.
    pub fn read(dir: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(dir.join(files::EXIT)).ok()?).ok()
    }
}

/// Reads and reconciles the record of `id`.
pub fn by_id(sandboxes: &Sandboxes, store: &mut Store, id: &nestbox_store::SandboxId) -> Result<Sandbox, EngineError> {
    let record = store.get(id)?;
    one(sandboxes, store, record)
}

/// Brings `record` in line with the processes it claims, and returns it as it is now.
pub fn one(sandboxes: &Sandboxes, store: &mut Store, record: Sandbox) -> Result<Sandbox, EngineError> {
    if !record.state.is_active() {
        return Ok(record);
    }
    let shim = record.shim.map(|s| proc::ProcessId { pid: s.pid, start_time: s.start_time });
    if shim.is_some_and(|s| s.is_alive()) {
        return Ok(record);
    }
    let dir = sandboxes.dir(&record.id);
    let (state, exit_code) = match (ExitRecord::read(&dir), shim) {
        (Some(exit), _) => (exit.sandbox_state(), exit.exit_code),
        (None, Some(shim)) => (SandboxState::Crashed { reason: format!("its shim (pid {}) died", shim.pid) }, None),
        (None, None) => {
            // A start in progress has the lock and will record its shim: leave it alone.
            let locks = sandboxes.home().locks();
            let Ok(_lock) = SandboxLock::acquire(&locks, &record.id, std::time::Duration::ZERO) else {
                return Ok(record);
            };
            let again = store.get(&record.id)?;
            if again.shim.is_some() || again.state != record.state {
                return one(sandboxes, store, again);
            }
            // Its start died between spawning the shim and recording it; the shim records itself as
            // it comes up, so while it lives the start is still going on.
            if shim_process_alive(sandboxes, &record.id) {
                return Ok(again);
            }
            (SandboxState::Crashed { reason: "its start was interrupted before the shim ran".into() }, None)
        }
    };
    let from = record.state.clone();
    match store.update_state(&record.id, &from, state) {
        Ok(updated) => {
            if exit_code.is_some() {
                store.set_exit_code(&updated.id, exit_code)?;
            }
            tracing::debug!(id = %updated.id, from = %from, to = %updated.state, "reconciled");
            Ok(Sandbox { exit_code, ..updated })
        }
        // Someone else settled it first: take theirs.
        Err(SandboxError::StateConflict { .. }) => Ok(store.get(&record.id)?),
        Err(e) => Err(e.into()),
    }
}

/// Whether a `nestbox shim --home H --id ID` process of this sandbox lives.
fn shim_process_alive(sandboxes: &Sandboxes, id: &nestbox_store::SandboxId) -> bool {
    proc::shims(&sandboxes.home().root().display().to_string()).iter().any(|(_, _, shim)| shim == id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_exit_record_maps_to_states() {
        let stopped = ExitRecord { state: "stopped".into(), reason: None, exit_code: Some(0) };
        assert_eq!(stopped.sandbox_state(), SandboxState::Stopped);
        let crashed =
            ExitRecord { state: "crashed".into(), reason: Some("killed by signal 9".into()), exit_code: None };
        assert_eq!(crashed.sandbox_state(), SandboxState::Crashed { reason: "killed by signal 9".into() });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(files::EXIT), serde_json::to_vec(&crashed).unwrap()).unwrap();
        assert_eq!(ExitRecord::read(dir.path()), Some(crashed));
        assert_eq!(ExitRecord::read(&dir.path().join("nope")), None);
    }
}
