//! Garbage collection: whatever under `$NESTBOX_HOME` no live sandbox accounts for.
//!
//! In order: records stuck in `creating` past the grace period (their creator died; nobody holds
//! their lock), sandbox directories without a record, lock files without a record, `nestbox run`
//! directories older than the grace period that no live process names, processes
//! that mention a sandbox directory whose record is gone or not active (the pid's owner and
//! start time are checked before the signal), and sockets left in the directories of sandboxes
//! that are not running. Every record is reconciled first. `dry_run` reports the same list
//! without touching anything.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::Duration;

use nestbox_store::{ListFilter, SandboxId, SandboxLock, SandboxState};
use serde::Serialize;

use super::{Sandboxes, files, proc, reconcile};
use crate::EngineError;

/// How old a `creating` record must be before it is taken as abandoned.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// One thing removed (or, in a dry run, that would be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    /// `record`, `directory`, `lock`, `process` or `socket`.
    pub kind: &'static str,
    /// What: an id, a path, a pid with its command line.
    pub target: String,
    /// Why it goes.
    pub reason: String,
}

/// Collects garbage; returns what was (or would be) removed.
pub fn collect(sandboxes: &Sandboxes, dry_run: bool, grace: Duration) -> Result<Vec<Removal>, EngineError> {
    let mut store = sandboxes.store()?;
    // A create killed before it took its first lock leaves no locks directory, and a lock cannot
    // be tried without one: make it, so such a record is seen as the unlocked orphan it is.
    let locks = sandboxes.home().locks();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&locks)
        .map_err(EngineError::io(format!("cannot create {}", locks.display())))?;
    let mut removed = Vec::new();
    let mut known: BTreeMap<String, SandboxState> = BTreeMap::new();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    for record in store.list(&ListFilter::default())? {
        let record = reconcile::one(sandboxes, &mut store, record)?;
        let abandoned = record.state == SandboxState::Creating
            && now_ms.saturating_sub(record.updated_at_ms) >= grace_ms
            && SandboxLock::acquire(&locks, &record.id, Duration::ZERO).is_ok();
        if abandoned {
            let dir = sandboxes.dir(&record.id);
            if dir.exists() {
                removed.push(Removal {
                    kind: "directory",
                    target: dir.display().to_string(),
                    reason: format!("sandbox {} was never fully created", record.id),
                });
                if !dry_run {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            removed.push(Removal {
                kind: "record",
                target: record.id.to_string(),
                reason: format!("stuck in creating for {} s: its creator died", (now_ms - record.updated_at_ms) / 1000),
            });
            if !dry_run {
                store.remove(&record.id)?;
            }
            continue;
        }
        known.insert(record.id.to_string(), record.state);
    }

    // Directories and lock files nobody owns.
    for (parent, kind) in [(sandboxes.home().sandboxes(), "directory"), (sandboxes.home().locks(), "lock")] {
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".lock").unwrap_or(&name);
            if known.contains_key(id) {
                continue;
            }
            let path = entry.path();
            // Created after the listing above? Then it has a record now, and is not ours.
            if SandboxId::parse(id).is_ok_and(|id| store.get(&id).is_ok()) {
                continue;
            }
            if kind == "lock" {
                // A lock someone holds is in use, record or not.
                let Ok(lock_id) = SandboxId::parse(id) else { continue };
                if SandboxLock::acquire(&parent, &lock_id, Duration::ZERO).is_err() {
                    continue;
                }
            }
            removed.push(Removal { kind, target: path.display().to_string(), reason: "no sandbox record".into() });
            if !dry_run {
                let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            }
        }
    }

    // `nestbox run` directories whose run died (kill -9) without removing them: old enough, and
    // named by no live process (the run's QEMU names its directory).
    if let Ok(entries) = std::fs::read_dir(sandboxes.home().ephemeral()) {
        for entry in entries.flatten() {
            let path = entry.path();
            let age = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            if age.is_none_or(|age| age < grace) || !proc::processes_mentioning(&path.display().to_string()).is_empty()
            {
                continue;
            }
            removed.push(Removal {
                kind: "directory",
                target: path.display().to_string(),
                reason: "a `nestbox run` that ended without removing it".into(),
            });
            if !dry_run {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }

    // Image build directories whose builder died: nobody holds their lock.
    if let Ok(entries) = std::fs::read_dir(sandboxes.home().rootfs_images()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !crate::images::WORK_PREFIXES.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let path = entry.path();
            let Ok(dir) = std::fs::File::open(&path) else { continue };
            if !crate::images::try_flock(&dir) {
                continue;
            }
            removed.push(Removal {
                kind: "directory",
                target: path.display().to_string(),
                reason: "an image build that died".into(),
            });
            if !dry_run {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }

    // Processes of sandboxes that are not running: those that name a sandbox directory (the
    // hypervisor), and shims, whose command line names the home and the id instead.
    let prefix = format!("{}/", sandboxes.home().sandboxes().display());
    let mut strays = Vec::new();
    for (process, argv) in proc::processes_mentioning(&prefix) {
        if let Some(id) = argv.iter().find_map(|a| sandbox_of(a, &prefix)) {
            strays.push((process, argv, format!("sandbox {id}"), id));
        }
    }
    for (process, argv, id) in proc::shims(&sandboxes.home().root().display().to_string()) {
        strays.push((process, argv, format!("shim of sandbox {id}"), id));
    }
    for (process, argv, what, id) in strays {
        if known.get(&id).is_some_and(SandboxState::is_active) {
            continue;
        }
        removed.push(Removal {
            kind: "process",
            target: format!("{} ({})", process.pid, argv.join(" ")),
            reason: format!("{what}, which is not running"),
        });
        if !dry_run {
            process.kill();
        }
    }

    // Sockets in the directories of sandboxes that are not running.
    for (id, state) in &known {
        if state.is_active() {
            continue;
        }
        let Ok(id) = SandboxId::parse(id) else { continue };
        let dir = sandboxes.dir(&id);
        let vm = nestbox_backend::VmDirs::new(&dir);
        let sockets: [PathBuf; 4] =
            [dir.join(files::AGENT_SOCKET), dir.join(files::CONTROL_SOCKET), vm.api_socket(), vm.agent_socket()];
        for socket in sockets.into_iter().filter(|p| p.exists()) {
            removed.push(Removal {
                kind: "socket",
                target: socket.display().to_string(),
                reason: format!("sandbox {id} is {state}"),
            });
            if !dry_run {
                let _ = std::fs::remove_file(&socket);
            }
        }
    }
    Ok(removed)
}

/// The sandbox id in `arg` when it is a path under `prefix`.
fn sandbox_of(arg: &str, prefix: &str) -> Option<String> {
    let start = arg.find(prefix)? + prefix.len();
    let id: String = arg[start..].chars().take_while(char::is_ascii_hexdigit).collect();
    (id.len() == nestbox_store::sandbox::ID_LEN).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sandbox_of_finds_ids_in_paths_and_options() {
        let prefix = "/h/sandboxes/";
        assert_eq!(sandbox_of("/h/sandboxes/0123456789ab/api.sock", prefix).as_deref(), Some("0123456789ab"));
        assert_eq!(
            sandbox_of("socket,id=qmp,path=/h/sandboxes/0123456789ab/api.sock,server=on", prefix).as_deref(),
            Some("0123456789ab")
        );
        assert_eq!(sandbox_of("/h/sandboxes/xyz/api.sock", prefix), None);
        assert_eq!(sandbox_of("/other/path", prefix), None);
    }
}
