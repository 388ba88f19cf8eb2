//! Snapshots of sandboxes, and sandboxes from snapshots.
//!
//! ```text
//! $NESTBOX_HOME/snapshots/<id>/      one snapshot; its manifest.json is the commit point
//!   manifest.json                    versioned: backend, version, CPU, page size, memory, the
//!                                    sandbox's config, and a sha256 per file
//!   state                            the hypervisor's device state (QEMU: its migration stream)
//!   memory                           guest memory, sparse (when not inside `state`)
//!   root.qcow2 | root.raw            the sandbox's disk, copied while the VM was paused
//! $NESTBOX_HOME/snapshots/.new-<id>/ one being taken (removed by gc when its taker is gone)
//! ```
//!
//! `snapshot` asks the sandbox's shim (which owns the hypervisor) to pause, write memory and
//! state, copy the disk and resume (or stay paused, or stop); the manifest is written last and
//! the directory renamed into place. `clone` makes new sandboxes whose start restores the
//! snapshot (`restore.json`) instead of booting; `restore` rolls a sandbox back the same way.
//! A restore checks the manifest (backend, version, CPU, page size, checksums) first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nestbox_backend::{BackendKind, RestoreMode};
use nestbox_shim::control::{self, AfterSnapshot, Request};
use nestbox_snapshot::{FileEntry, FileKind, HostFacts, Manifest, MemoryLayout};
use nestbox_store::SandboxState;

use super::{SandboxConfig, SandboxInfo, Sandboxes, files, reconcile};
use crate::EngineError;

/// The device state's file name.
const STATE: &str = "state";
/// Prefix of snapshots being taken.
pub const NEW_PREFIX: &str = ".new-";
/// How long a snapshot may take (the shim's reply).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);

/// A stored snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotInfo {
    /// Its manifest.
    #[serde(flatten)]
    pub manifest: Manifest,
    /// Its directory.
    pub dir: PathBuf,
}

impl Sandboxes {
    /// The snapshots' directory.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.home.snapshots()
    }

    /// Takes a snapshot of the running or paused sandbox `input`, named `name`; the sandbox
    /// then does `then`.
    pub async fn snapshot(
        &self,
        input: &str,
        name: Option<String>,
        then: AfterSnapshot,
    ) -> Result<SnapshotInfo, EngineError> {
        if let Some(name) = &name {
            nestbox_store::SandboxName::parse(name)?;
            if self.find_snapshot(name).is_ok() {
                return Err(EngineError::SnapshotName { name: name.clone() });
            }
        }
        let sb = self.resolve(input)?;
        let id = sb.id().clone();
        let _lock = self.lock(&id)?;
        let mut store = self.store()?;
        let record = reconcile::by_id(self, &mut store, &id)?;
        if !matches!(record.state, SandboxState::Running | SandboxState::Paused) {
            return Err(EngineError::InvalidState {
                id: id.to_string(),
                verb: "snapshot",
                state: record.state.to_string(),
            });
        }
        let config: SandboxConfig = sb.config.clone().ok_or_else(|| EngineError::InvalidState {
            id: id.to_string(),
            verb: "snapshot",
            state: "without a readable configuration".into(),
        })?;
        let snap_id = crate::ids::new_id().map_err(EngineError::io("cannot read /dev/urandom"))?;
        let root = self.snapshots_dir();
        std::fs::create_dir_all(&root).map_err(EngineError::io(format!("cannot create {}", root.display())))?;
        let work = root.join(format!("{NEW_PREFIX}{snap_id}"));
        std::fs::create_dir(&work).map_err(EngineError::io(format!("cannot create {}", work.display())))?;
        let result = self.take(&sb, &config, &work, then).await;
        let files = match result {
            Ok(files) => files,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work);
                return Err(e);
            }
        };
        let after = match then {
            AfterSnapshot::Resume => SandboxState::Running,
            AfterSnapshot::Pause => SandboxState::Paused,
            AfterSnapshot::Stop => SandboxState::Stopped,
        };
        if after != SandboxState::Stopped {
            let _ = store.update_state(&id, &record.state, after);
        }
        let accel = std::fs::read_to_string(sb.dir.join(files::VM_ACCEL)).unwrap_or_else(|_| "tcg".into());
        let manifest = self.manifest(&config, accel.trim(), &work, snap_id.clone(), name, files).await;
        let finished = manifest.and_then(|m| {
            m.write(&work)?;
            let dir = root.join(&snap_id);
            std::fs::rename(&work, &dir).map_err(EngineError::io(format!("cannot move {}", work.display())))?;
            let info = SnapshotInfo { manifest: m, dir };
            // The checksums were just computed from these very files.
            write_verified_stamp(&info);
            Ok(info)
        });
        if finished.is_err() {
            let _ = std::fs::remove_dir_all(&work);
        }
        finished
    }

    /// Asks the shim for the snapshot; returns the files in `work`.
    async fn take(
        &self,
        sb: &SandboxInfo,
        config: &SandboxConfig,
        work: &Path,
        then: AfterSnapshot,
    ) -> Result<Vec<(String, FileKind)>, EngineError> {
        let mut disks = Vec::new();
        let mut names = Vec::new();
        if let Some(disk) = &config.disk {
            disks.push((sb.dir.join(&disk.file), work.join(&disk.file)));
            names.push((disk.file.clone(), FileKind::Disk));
        }
        let socket = sb.dir.join(files::CONTROL_SOCKET);
        let req = Request::Snapshot { dest: work.to_path_buf(), disks, then };
        let reply = control::call(&socket, &req, SNAPSHOT_TIMEOUT)
            .await
            .map_err(|e| EngineError::Shim { id: sb.id().to_string(), reason: e.to_string() })?;
        let files = reply.snapshot.ok_or_else(|| EngineError::Shim {
            id: sb.id().to_string(),
            reason: reply.error.clone().unwrap_or_else(|| "the snapshot failed".into()),
        })?;
        names.push((file_name(&files.state)?, FileKind::State));
        if let Some(memory) = &files.memory {
            names.push((file_name(memory)?, FileKind::Memory));
        }
        Ok(names)
    }

    async fn manifest(
        &self,
        config: &SandboxConfig,
        accel: &str,
        work: &Path,
        id: String,
        name: Option<String>,
        files: Vec<(String, FileKind)>,
    ) -> Result<Manifest, EngineError> {
        let facts = host_facts(config, accel).await?;
        let mut entries = Vec::new();
        for (file, kind) in &files {
            entries.push(FileEntry::compute(work, file, *kind)?);
        }
        let memory_file =
            files.iter().find(|(_, k)| *k == FileKind::Memory).map_or_else(|| STATE.to_owned(), |(f, _)| f.clone());
        let created_at_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Ok(Manifest {
            version: nestbox_snapshot::MANIFEST_VERSION,
            id,
            name,
            created_at_ms,
            backend: facts.backend,
            backend_version: facts.backend_version,
            accel: facts.accel,
            cpu: facts.cpu,
            kernel: None,
            page_size: facts.page_size,
            memory: MemoryLayout { size_bytes: u64::from(config.memory_mib) << 20, file: memory_file },
            sandbox: serde_json::to_value(config).expect("a config serializes"),
            files: entries,
        })
    }

    /// Every snapshot, newest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>, EngineError> {
        let root = self.snapshots_dir();
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&root) else { return Ok(out) };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Ok(manifest) = Manifest::read(&entry.path()) {
                out.push(SnapshotInfo { manifest, dir: entry.path() });
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.manifest.created_at_ms));
        Ok(out)
    }

    /// The snapshot named `input`, or whose id starts with it.
    pub fn find_snapshot(&self, input: &str) -> Result<SnapshotInfo, EngineError> {
        let all = self.snapshots()?;
        if let Some(s) = all.iter().find(|s| s.manifest.name.as_deref() == Some(input)) {
            return Ok(s.clone());
        }
        let matches: Vec<&SnapshotInfo> =
            all.iter().filter(|s| !input.is_empty() && s.manifest.id.starts_with(input)).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(EngineError::NoSnapshot { input: input.to_owned() }),
            many => Err(EngineError::AmbiguousSnapshot {
                input: input.to_owned(),
                candidates: many.iter().map(|s| s.manifest.id.clone()).collect(),
            }),
        }
    }

    /// Removes a snapshot.
    pub fn remove_snapshot(&self, input: &str) -> Result<SnapshotInfo, EngineError> {
        let snap = self.find_snapshot(input)?;
        // The manifest goes first: what is left without it is not a snapshot (gc sweeps it).
        let manifest = snap.dir.join(nestbox_snapshot::MANIFEST_FILE);
        std::fs::remove_file(&manifest).map_err(EngineError::io(format!("cannot remove {}", manifest.display())))?;
        std::fs::remove_dir_all(&snap.dir).map_err(EngineError::io(format!("cannot remove {}", snap.dir.display())))?;
        Ok(snap)
    }

    /// Makes `count` new sandboxes from snapshot `input` (named `name`, or `name-1`, `name-2`, …
    /// for several) and starts them: each restores the snapshot rather than booting.
    pub async fn clone_snapshot(
        &self,
        input: &str,
        name: Option<String>,
        count: u32,
        mode: RestoreMode,
    ) -> Result<Vec<SandboxInfo>, EngineError> {
        let snap = self.find_snapshot(input)?;
        let config = self.check_restorable(&snap, mode).await?;
        let mut made = Vec::new();
        for i in 0..count {
            let name = match (&name, count) {
                (Some(n), 1) => Some(n.clone()),
                (Some(n), _) => Some(format!("{n}-{}", i + 1)),
                (None, _) => None,
            };
            let req = super::CreateRequest {
                name,
                config: config.clone(),
                labels: Default::default(),
                image: None,
                disk_size_mib: None,
            };
            let sb = self.create_with(req, Some(&snap), mode)?;
            made.push(self.start(sb.id().as_str()).await?);
        }
        Ok(made)
    }

    /// Puts sandbox `input` back to snapshot `snapshot`: it is stopped, its disk replaced by
    /// the snapshot's, and started from the snapshot's memory (copied: it stays its own).
    pub async fn restore_snapshot(&self, input: &str, snapshot: &str) -> Result<SandboxInfo, EngineError> {
        let snap = self.find_snapshot(snapshot)?;
        let config = self.check_restorable(&snap, RestoreMode::Copy).await?;
        let sb = self.resolve(input)?;
        if sb.state().is_active() {
            self.kill(input).await?;
        }
        let dir = sb.dir.clone();
        {
            let _lock = self.lock(sb.id())?;
            if let Some(disk) = &config.disk {
                let target = dir.join(&disk.file);
                let _ = std::fs::remove_file(&target);
                nestbox_backend::copy_file(&snap.dir.join(&disk.file), &target)
                    .map_err(EngineError::io(format!("cannot copy the snapshot's disk to {}", target.display())))?;
            }
            self.store()?.set_spec(sb.id(), &serde_json::to_value(&config).expect("a config serializes"))?;
            std::fs::write(dir.join(files::SPEC), serde_json::to_vec_pretty(&config).expect("JSON serializes"))
                .map_err(EngineError::io("cannot write spec.json"))?;
            super::write_restore(&dir, &restore_source(&snap, RestoreMode::Copy))?;
        }
        self.start(sb.id().as_str()).await
    }

    /// The snapshot's sandbox config, once its manifest fits this host and its files their
    /// checksums.
    async fn check_restorable(&self, snap: &SnapshotInfo, mode: RestoreMode) -> Result<SandboxConfig, EngineError> {
        let mut config: SandboxConfig =
            serde_json::from_value(snap.manifest.sandbox.clone()).map_err(|e| EngineError::SnapshotUnusable {
                id: snap.manifest.id.clone(),
                reason: format!("its sandbox configuration is unreadable: {e}"),
            })?;
        // The restored VM runs under the accelerator the snapshot was taken with, or not at all.
        config.accel = if snap.manifest.accel == "kvm" {
            crate::accel::open_kvm().map_err(|reason| EngineError::SnapshotUnusable {
                id: snap.manifest.id.clone(),
                reason: format!("it was taken under KVM, which is not usable here: {reason}"),
            })?;
            crate::accel::AccelChoice::Kvm
        } else {
            crate::accel::AccelChoice::Tcg
        };
        let facts = host_facts(&config, &snap.manifest.accel).await?;
        snap.manifest
            .check_host(&facts)
            .map_err(|e| EngineError::SnapshotUnusable { id: snap.manifest.id.clone(), reason: e.to_string() })?;
        if mode == RestoreMode::Lazy && config.hypervisor != BackendKind::Firecracker {
            return Err(nestbox_backend::BackendError::Unsupported {
                backend: config.hypervisor,
                op: nestbox_backend::Operation::RestoreLazy,
            }
            .into());
        }
        if !verified_stamp_holds(snap) {
            // The stamp is no file of the snapshot's: out of the way of the check.
            let _ = std::fs::remove_file(snap.dir.join(VERIFIED));
            snap.manifest.verify(&snap.dir)?;
            write_verified_stamp(snap);
        }
        Ok(config)
    }
}

/// The stamp that says a snapshot's files passed their checksums as they are now: each file's
/// size, modification time and inode, so a file changed since is checked again. Without it
/// every clone would read all of the memory.
const VERIFIED: &str = ".verified";

/// A file's name, size, modification time (s, ns) and inode.
type FileIdentity = (String, u64, i64, i64, u64);

fn file_identities(snap: &SnapshotInfo) -> Option<Vec<FileIdentity>> {
    use std::os::unix::fs::MetadataExt;
    snap.manifest
        .files
        .iter()
        .map(|f| {
            let m = std::fs::symlink_metadata(snap.dir.join(&f.name)).ok()?;
            Some((f.name.clone(), m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
        })
        .collect()
}

fn verified_stamp_holds(snap: &SnapshotInfo) -> bool {
    let Ok(bytes) = std::fs::read(snap.dir.join(VERIFIED)) else { return false };
    let stamp: Option<Vec<FileIdentity>> = serde_json::from_slice(&bytes).ok();
    stamp.is_some() && stamp == file_identities(snap)
}

fn write_verified_stamp(snap: &SnapshotInfo) {
    if let Some(ids) = file_identities(snap) {
        let _ = std::fs::write(snap.dir.join(VERIFIED), serde_json::to_vec(&ids).expect("identities serialize"));
    }
}

/// What a sandbox's start restores from `snap`.
pub(super) fn restore_source(snap: &SnapshotInfo, mode: RestoreMode) -> nestbox_backend::RestoreSource {
    let memory = snap.manifest.files.iter().find(|f| f.kind == FileKind::Memory).map(|f| snap.dir.join(&f.name));
    nestbox_backend::RestoreSource {
        files: nestbox_backend::SnapshotFiles { memory, state: snap.dir.join(STATE) },
        mode,
    }
}

fn file_name(path: &Path) -> Result<String, EngineError> {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| EngineError::Io {
        context: format!("the snapshot file {} has no name", path.display()),
        source: std::io::Error::other("no file name"),
    })
}

/// This host, as a snapshot of a sandbox with `config` running under `accel` records it.
async fn host_facts(config: &SandboxConfig, accel: &str) -> Result<HostFacts, EngineError> {
    let backend = config.hypervisor.to_string();
    let binary = crate::doctor::require_binary(config.hypervisor, config.hypervisor_binary.as_deref())?;
    let line = crate::doctor::version_of(&binary).await.unwrap_or_default();
    Ok(HostFacts::detect(&backend, version_number(&line), accel))
}

/// The version number in a `--version` line: "QEMU emulator version 7.2.19 (Debian …)" →
/// "7.2.19"; the whole line when none is found.
fn version_number(line: &str) -> &str {
    line.split_whitespace()
        .map(|w| w.trim_start_matches('v'))
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.'))
        .unwrap_or(line.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_version_number_is_found_in_version_lines() {
        assert_eq!(version_number("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)"), "7.2.19");
        assert_eq!(version_number("cloud-hypervisor v41.0"), "41.0");
        assert_eq!(version_number("Firecracker v1.10.1"), "1.10.1");
        assert_eq!(version_number("odd"), "odd");
    }
}
