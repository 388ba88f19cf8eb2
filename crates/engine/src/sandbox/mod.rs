//! Persistent sandboxes: create, start, stop, pause, resume, kill, remove, list, and the pieces
//! around them (the shim process, reconciliation, garbage collection).
//!
//! The rules that keep it crash-safe:
//! - The SQLite record exists before any directory, socket or process of the sandbox, and goes
//!   last (`rm`).
//! - A state change is a compare-and-set on the record, checked by `nestbox_store::transition`;
//!   operations that change a sandbox hold its `flock` (`$NESTBOX_HOME/locks/<id>.lock`), so they
//!   are serialized across processes while other sandboxes proceed.
//! - A running sandbox is owned by its shim (`nestbox shim`, [`shim::run`]): a detached process
//!   that holds the hypervisor and the agent connection. Whatever a process finds, it reconciles
//!   first ([`reconcile`]): a sandbox whose shim is gone is shown as it ended (`exit.json`) or as
//!   crashed.

pub mod config;
pub mod fault;
pub mod gc;
pub mod proc;
pub mod reconcile;
pub mod shim;
pub mod snapshot;

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nestbox_agent_client::AgentClient;
use nestbox_backend::VmDirs;
use nestbox_shim::control::{self, Request};
use nestbox_store::{
    ListFilter, NewSandbox, ResolveError, Sandbox, SandboxId, SandboxLock, SandboxName, SandboxState, ShimProcess,
    Store,
};
use serde::Serialize;
use tokio::net::UnixStream;

pub use config::{DiskConfig, SandboxConfig};

use crate::{EngineError, Home, disk, doctor};

/// How long an operation waits for another one on the same sandbox.
pub const LOCK_TIMEOUT: Duration = Duration::from_millis(nestbox_store::DEFAULT_LOCK_TIMEOUT_MS);
/// How often `start` looks at the record while the shim boots the VM.
const START_POLL: Duration = Duration::from_millis(10);
/// Extra time `start` gives the shim beyond the boot timeout (kernel and image preparation).
const START_MARGIN: Duration = Duration::from_secs(60);
/// How long `stop`'s reply may take beyond its grace period.
const STOP_MARGIN: Duration = Duration::from_secs(15);
/// The default grace period of `stop`.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Files in a sandbox's directory, beside the hypervisor's (see `VmDirs`).
pub mod files {
    /// The configuration the sandbox was created with.
    pub const SPEC: &str = "spec.json";
    /// The shim's multiplexed agent socket.
    pub const AGENT_SOCKET: &str = "agent.sock";
    /// The shim's control socket.
    pub const CONTROL_SOCKET: &str = "control.sock";
    /// The shim's own log.
    pub const SHIM_LOG: &str = "shim.log";
    /// How the VM ended, written by the shim before it exits.
    pub const EXIT: &str = "exit.json";
    /// The hypervisor's pid, written by the shim once it runs.
    pub const VM_PID: &str = "vm.pid";
    /// A snapshot to restore at the next start, instead of booting (removed once restored).
    pub const RESTORE: &str = "restore.json";
    /// The accelerator the VM runs under (`kvm`, `tcg`), written by the shim.
    pub const VM_ACCEL: &str = "vm.accel";
}

/// The live memory file of sandbox `id` (QEMU), in the home's memory directory.
pub fn memory_file(home: &Home, id: &str) -> PathBuf {
    home.memory_dir().join(format!("{id}.mem"))
}

/// `restore.json` in `dir`: the snapshot the next start restores instead of booting, if any.
pub fn read_restore(dir: &Path) -> Result<Option<nestbox_backend::RestoreSource>, EngineError> {
    let path = dir.join(files::RESTORE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| EngineError::Io {
            context: format!("unreadable {}", path.display()),
            source: std::io::Error::other(e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::io(format!("cannot read {}", path.display()))(e)),
    }
}

/// Writes `restore.json` into `dir`.
pub fn write_restore(dir: &Path, from: &nestbox_backend::RestoreSource) -> Result<(), EngineError> {
    write_private(&dir.join(files::RESTORE), &serde_json::to_vec_pretty(from).expect("a source serializes"))
}

/// What `create` needs.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// A name; one is made up when absent.
    pub name: Option<String>,
    /// The VM and its defaults.
    pub config: SandboxConfig,
    /// Labels (`k=v`).
    pub labels: BTreeMap<String, String>,
    /// The image to run on: its id, the name it was asked for by, and its ext4 file. The
    /// sandbox gets its own copy-on-write disk over it.
    pub image: Option<ImageChoice>,
    /// The size of that disk, when larger than the image, MiB.
    pub disk_size_mib: Option<u32>,
}

/// An image a sandbox runs on, resolved by the caller.
#[derive(Debug, Clone)]
pub struct ImageChoice {
    /// Its id.
    pub id: String,
    /// The name it was asked for by.
    pub name: Option<String>,
    /// Its file.
    pub base: PathBuf,
    /// What it is.
    pub kind: nestbox_image::store::ImageKind,
}

/// A sandbox as the CLI shows it: the record, its configuration and its files.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxInfo {
    /// The stored record.
    #[serde(flatten)]
    pub record: Sandbox,
    /// Its configuration.
    pub config: Option<SandboxConfig>,
    /// Its directory.
    pub dir: PathBuf,
    /// The hypervisor's pid, while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_pid: Option<u32>,
}

impl SandboxInfo {
    /// The id.
    pub fn id(&self) -> &SandboxId {
        &self.record.id
    }
    /// The state.
    pub fn state(&self) -> &SandboxState {
        &self.record.state
    }
}

/// The sandboxes under one `$NESTBOX_HOME`.
#[derive(Debug, Clone)]
pub struct Sandboxes {
    home: Home,
    shim_program: PathBuf,
}

impl Sandboxes {
    /// Sandboxes under `home`, whose shims run as `shim_program shim …` (the `nestbox` binary).
    pub fn new(home: Home, shim_program: PathBuf) -> Self {
        Self { home, shim_program }
    }

    /// The state root.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// Opens the index, creating it (and the state root) on first use.
    pub fn store(&self) -> Result<Store, EngineError> {
        let root = self.home.root();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(EngineError::io(format!("cannot create {}", root.display())))?;
        Ok(Store::open(self.home.state_db())?)
    }

    /// The directory of sandbox `id`.
    pub fn dir(&self, id: &SandboxId) -> PathBuf {
        self.home.sandboxes().join(id.as_str())
    }

    fn lock(&self, id: &SandboxId) -> Result<SandboxLock, EngineError> {
        let dir = self.home.locks();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(EngineError::io(format!("cannot create {}", dir.display())))?;
        Ok(SandboxLock::acquire(&dir, id, LOCK_TIMEOUT)?)
    }

    /// Creates a sandbox: its record, then its directory and `spec.json`. Nothing runs yet.
    pub fn create(&self, req: CreateRequest) -> Result<SandboxInfo, EngineError> {
        self.create_with(req, None, nestbox_backend::RestoreMode::Copy)
    }

    /// As [`create`](Self::create); with a snapshot, the sandbox gets a copy of the snapshot's
    /// disk and its first start restores the snapshot in `mode` instead of booting.
    pub(crate) fn create_with(
        &self,
        req: CreateRequest,
        from: Option<&snapshot::SnapshotInfo>,
        mode: nestbox_backend::RestoreMode,
    ) -> Result<SandboxInfo, EngineError> {
        let mut store = self.store()?;
        let name = match &req.name {
            Some(name) => SandboxName::parse(name)?,
            None => names::fresh(&store)?,
        };
        self.check_config(&req.config)?;
        let mut config = req.config;
        let disk_file = disk::disk_path(Path::new(""), config.hypervisor).display().to_string();
        if let Some(image) = &req.image {
            // The kind is settled once the disk exists; the record says which image it is from.
            config.disk = Some(DiskConfig {
                image: image.id.clone(),
                kind: image.kind,
                image_name: image.name.clone(),
                overlay: if config.hypervisor == nestbox_backend::BackendKind::Firecracker {
                    disk::OverlayKind::SparseCopy
                } else {
                    disk::OverlayKind::Qcow2
                },
                file: disk_file,
                size_mib: req.disk_size_mib,
            });
        }
        // Refused before anything of the sandbox exists.
        if let Some(image) = &req.image {
            let base = disk::Base { path: &image.base, format: image.kind.disk_format() };
            disk::check_size(&base, req.disk_size_mib.map(|m| u64::from(m) << 20))?;
            if image.kind.is_cloud() {
                crate::cloud::check_hypervisor(config.hypervisor)?;
                crate::cloud::firmware(config.hypervisor, config.firmware.as_deref())?;
            }
        }
        let spec = serde_json::to_value(&config).expect("a config serializes");
        let record = store.insert(NewSandbox {
            name,
            hypervisor: config.hypervisor.to_string(),
            spec: spec.clone(),
            labels: req.labels,
        })?;
        fault::point("create.record");
        let _lock = self.lock(&record.id)?;
        let dir = self.dir(&record.id);
        match self.fill(&mut store, &record.id, &dir, &mut config, req.image.as_ref(), from.map(|s| (s, mode))) {
            Ok(()) => {
                let record = store.update_state(&record.id, &SandboxState::Creating, SandboxState::Created)?;
                Ok(self.info(record))
            }
            Err(e) => {
                // A create that failed (rather than died) takes back what it made.
                let _ = remove_dir(&dir);
                let _ = store.remove(&record.id);
                Err(e)
            }
        }
    }

    /// Makes the directory of a new sandbox, its disk and `spec.json`.
    fn fill(
        &self,
        store: &mut Store,
        id: &SandboxId,
        dir: &Path,
        config: &mut SandboxConfig,
        image: Option<&ImageChoice>,
        from: Option<(&snapshot::SnapshotInfo, nestbox_backend::RestoreMode)>,
    ) -> Result<(), EngineError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.home.sandboxes())
            .map_err(EngineError::io(format!("cannot create {}", self.home.sandboxes().display())))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(EngineError::io(format!("cannot create {}", dir.display())))?;
        check_socket_paths(dir)?;
        fault::point("create.dir");
        if let (Some(image), Some(disk)) = (image, config.disk.as_mut()) {
            let size = disk.size_mib.map(|m| u64::from(m) << 20);
            let base = disk::Base { path: &image.base, format: image.kind.disk_format() };
            let kind = disk::overlay(&base, &dir.join(&disk.file), config.hypervisor, size)?;
            if kind != disk.overlay {
                disk.overlay = kind;
                store.set_spec(id, &serde_json::to_value(&*config).expect("a config serializes"))?;
            }
        }
        if let Some((snap, mode)) = from {
            if let Some(disk) = &config.disk {
                let target = dir.join(&disk.file);
                nestbox_backend::copy_file(&snap.dir.join(&disk.file), &target)
                    .map_err(EngineError::io(format!("cannot copy the snapshot's disk to {}", target.display())))?;
            }
            write_restore(dir, &snapshot::restore_source(snap, mode))?;
        }
        let text = serde_json::to_vec_pretty(&*config).expect("JSON serializes");
        write_private(&dir.join(files::SPEC), &text)?;
        fault::point("create.spec");
        Ok(())
    }

    /// What must hold before a record is written: the hypervisor binary exists.
    fn check_config(&self, config: &SandboxConfig) -> Result<(), EngineError> {
        doctor::require_binary(config.hypervisor, config.hypervisor_binary.as_deref())?;
        Ok(())
    }

    /// Finds the sandbox `input` names (id, name or unambiguous id prefix), reconciled.
    pub fn resolve(&self, input: &str) -> Result<SandboxInfo, EngineError> {
        check_reference(input)?;
        let mut store = self.store()?;
        let record = store.resolve(input)?;
        let record = reconcile::one(self, &mut store, record)?;
        Ok(self.info(record))
    }

    /// Every sandbox matching `filter`, reconciled, oldest first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<SandboxInfo>, EngineError> {
        let mut store = self.store()?;
        let all = store.list(&ListFilter { scope: nestbox_store::ListScope::All, labels: filter.labels.clone() })?;
        let mut out = Vec::new();
        for record in all {
            let record = reconcile::one(self, &mut store, record)?;
            if filter.scope == nestbox_store::ListScope::All || record.state.is_active() {
                out.push(self.info(record));
            }
        }
        Ok(out)
    }

    fn info(&self, record: Sandbox) -> SandboxInfo {
        let dir = self.dir(&record.id);
        let config = serde_json::from_value(record.spec.clone()).ok();
        let vm_pid = if record.state.is_active() {
            std::fs::read_to_string(dir.join(files::VM_PID)).ok().and_then(|s| s.trim().parse().ok())
        } else {
            None
        };
        SandboxInfo { record, config, dir, vm_pid }
    }

    /// Starts a created or stopped sandbox: spawns its shim and waits until the guest agent
    /// answers (the record says `running`) or the start fails (it says `crashed`, with why).
    pub async fn start(&self, input: &str) -> Result<SandboxInfo, EngineError> {
        let sb = self.resolve(input)?;
        let id = sb.id().clone();
        let _lock = self.lock(&id)?;
        let mut store = self.store()?;
        let record = reconcile::by_id(self, &mut store, &id)?;
        let record = store.update_state(&id, &record.state, SandboxState::Starting)?;
        fault::point("start.starting");
        let dir = self.dir(&id);
        clear_run_files(&dir);
        let child = self.spawn_shim(&id, &dir)?;
        fault::point("start.spawned");
        let shim = proc::ProcessId::of(child);
        if let Some(p) = shim {
            store.set_shim(&id, Some(ShimProcess { pid: p.pid, start_time: p.start_time }))?;
        }
        fault::point("start.recorded");
        let timeout = sb.config.as_ref().map_or(Duration::ZERO, SandboxConfig::boot_timeout) + START_MARGIN;
        let deadline = Instant::now() + timeout;
        let _ = record;
        loop {
            tokio::time::sleep(START_POLL).await;
            let now = reconcile::by_id(self, &mut store, &id)?;
            if now.state == SandboxState::Starting && !shim.is_some_and(|s| s.is_alive()) {
                // We hold the lock, so reconciliation left this to us: the shim is gone.
                let state = match reconcile::ExitRecord::read(&dir) {
                    Some(exit) => exit.sandbox_state(),
                    None => SandboxState::Crashed {
                        reason: format!("its shim exited at once: {}", last_line(&dir.join(files::SHIM_LOG))),
                    },
                };
                let now = store.update_state(&id, &SandboxState::Starting, state)?;
                let reason = now.state.reason().unwrap_or("the VM stopped while it was starting").to_owned();
                return Err(EngineError::StartFailed { id: id.to_string(), reason });
            }
            match &now.state {
                SandboxState::Running | SandboxState::Paused => return Ok(self.info(now)),
                SandboxState::Crashed { reason } => {
                    return Err(EngineError::StartFailed { id: id.to_string(), reason: reason.clone() });
                }
                SandboxState::Stopped => {
                    let reason = "the VM stopped while it was starting".to_owned();
                    return Err(EngineError::StartFailed { id: id.to_string(), reason });
                }
                _ => {}
            }
            if Instant::now() > deadline {
                let _ = control::call(&dir.join(files::CONTROL_SOCKET), &Request::Kill, STOP_MARGIN).await;
                let reason = format!("no answer from its shim within {timeout:?}");
                return Err(EngineError::StartFailed { id: id.to_string(), reason });
            }
        }
    }

    /// Starts `nestbox shim` for `id`, detached: a new session, no terminal, its output in
    /// `shim.log`. It outlives us.
    fn spawn_shim(&self, id: &SandboxId, dir: &Path) -> Result<u32, EngineError> {
        let log_path = dir.join(files::SHIM_LOG);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(EngineError::io(format!("cannot open {}", log_path.display())))?;
        let log2 = log.try_clone().map_err(EngineError::io("cannot duplicate the shim log"))?;
        let mut cmd = std::process::Command::new(&self.shim_program);
        cmd.arg("shim")
            .arg("--home")
            .arg(self.home.root())
            .arg("--id")
            .arg(id.as_str())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child =
            cmd.spawn().map_err(EngineError::io(format!("cannot start the shim {}", self.shim_program.display())))?;
        let pid = child.id();
        // Reap it if it ends while we live (a failed start); otherwise it is re-parented when we
        // exit.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(pid)
    }

    /// Stops a running or paused sandbox: the guest powers off, or is killed after `timeout`.
    pub async fn stop(&self, input: &str, timeout: Duration) -> Result<SandboxInfo, EngineError> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.end(input, Request::Stop { timeout_ms }, timeout + STOP_MARGIN, "stop").await
    }

    /// Kills a running or paused sandbox's VM at once.
    pub async fn kill(&self, input: &str) -> Result<SandboxInfo, EngineError> {
        self.end(input, Request::Kill, STOP_MARGIN, "kill").await
    }

    async fn end(
        &self,
        input: &str,
        req: Request,
        wait: Duration,
        verb: &'static str,
    ) -> Result<SandboxInfo, EngineError> {
        let sb = self.resolve(input)?;
        let id = sb.id().clone();
        let _lock = self.lock(&id)?;
        let mut store = self.store()?;
        let record = reconcile::by_id(self, &mut store, &id)?;
        if !matches!(record.state, SandboxState::Running | SandboxState::Paused | SandboxState::Starting) {
            return Err(EngineError::InvalidState { id: id.to_string(), verb, state: record.state.to_string() });
        }
        store.update_state(&id, &record.state, SandboxState::Stopping)?;
        let socket = self.dir(&id).join(files::CONTROL_SOCKET);
        let result = control::call(&socket, &req, wait).await;
        // Whatever the reply, the shim may be gone: let reconciliation settle the record.
        let shim = store.get(&id)?.shim.map(|s| proc::ProcessId { pid: s.pid, start_time: s.start_time });
        if let Some(shim) = shim {
            wait_gone(shim, Duration::from_secs(5)).await;
        }
        let record = reconcile::by_id(self, &mut store, &id)?;
        if let Err(e) = result
            && record.state.is_active()
        {
            return Err(EngineError::Shim { id: id.to_string(), reason: e.to_string() });
        }
        Ok(self.info(record))
    }

    /// Pauses a running sandbox's vCPUs.
    pub async fn pause(&self, input: &str) -> Result<SandboxInfo, EngineError> {
        self.pause_or_resume(input, SandboxState::Paused).await
    }

    /// Resumes a paused sandbox.
    pub async fn resume(&self, input: &str) -> Result<SandboxInfo, EngineError> {
        self.pause_or_resume(input, SandboxState::Running).await
    }

    async fn pause_or_resume(&self, input: &str, to: SandboxState) -> Result<SandboxInfo, EngineError> {
        let sb = self.resolve(input)?;
        let id = sb.id().clone();
        let _lock = self.lock(&id)?;
        let mut store = self.store()?;
        let record = reconcile::by_id(self, &mut store, &id)?;
        nestbox_store::transition(id.as_str(), &record.state, &to)?;
        let req = if to == SandboxState::Paused { Request::Pause } else { Request::Resume };
        let socket = self.dir(&id).join(files::CONTROL_SOCKET);
        control::call(&socket, &req, control::QUICK_REPLY_TIMEOUT)
            .await
            .map_err(|e| EngineError::Shim { id: id.to_string(), reason: e.to_string() })?;
        let record = store.update_state(&id, &record.state, to)?;
        Ok(self.info(record))
    }

    /// Removes a sandbox: its directory, then its record. A running one needs `force` (it is
    /// killed first).
    pub async fn remove(&self, input: &str, force: bool) -> Result<SandboxId, EngineError> {
        let sb = self.resolve(input)?;
        let id = sb.id().clone();
        if sb.state().is_active() {
            if !force {
                return Err(EngineError::InvalidState {
                    id: id.to_string(),
                    verb: "remove",
                    state: format!("{} (stop it first, or use --force)", sb.state()),
                });
            }
            match self.kill(id.as_str()).await {
                Ok(_) => {}
                // Stopped meanwhile: fine.
                Err(EngineError::InvalidState { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let lock = self.lock(&id)?;
        let mut store = self.store()?;
        let record = reconcile::by_id(self, &mut store, &id)?;
        if record.state.is_active() {
            return Err(EngineError::InvalidState {
                id: id.to_string(),
                verb: "remove",
                state: record.state.to_string(),
            });
        }
        let dir = self.dir(&id);
        for (p, _) in proc::processes_mentioning(&dir.display().to_string()) {
            p.kill();
        }
        remove_dir(&dir)?;
        store.remove(&id)?;
        let lock_file = lock.path().to_owned();
        drop(lock);
        let _ = std::fs::remove_file(lock_file);
        Ok(id)
    }

    /// Connects to a running sandbox's agent, through its shim.
    pub async fn agent(&self, input: &str) -> Result<(AgentClient, SandboxInfo), EngineError> {
        let sb = self.resolve(input)?;
        if *sb.state() != SandboxState::Running {
            return Err(EngineError::InvalidState {
                id: sb.id().to_string(),
                verb: "exec in",
                state: sb.state().to_string(),
            });
        }
        let socket = sb.dir.join(files::AGENT_SOCKET);
        let stream = UnixStream::connect(&socket)
            .await
            .map_err(EngineError::io(format!("cannot connect to {}", socket.display())))?;
        let (client, _) = AgentClient::connect(stream).await?;
        Ok((client, sb))
    }

    /// Attaches to a running sandbox's serial console.
    pub async fn console(&self, input: &str) -> Result<(tokio::io::BufReader<UnixStream>, SandboxInfo), EngineError> {
        let sb = self.resolve(input)?;
        if !matches!(sb.state(), SandboxState::Running | SandboxState::Paused) {
            return Err(EngineError::InvalidState {
                id: sb.id().to_string(),
                verb: "attach to",
                state: sb.state().to_string(),
            });
        }
        let stream = control::attach_console(&sb.dir.join(files::CONTROL_SOCKET))
            .await
            .map_err(|e| EngineError::Shim { id: sb.id().to_string(), reason: e.to_string() })?;
        Ok((stream, sb))
    }
}

/// Refuses an `SB` that can be neither a name nor an id prefix, before looking it up.
fn check_reference(input: &str) -> Result<(), EngineError> {
    if input.is_empty() {
        return Err(ResolveError::Empty.into());
    }
    SandboxName::parse(input)
        .map(|_| ())
        .map_err(|e| EngineError::BadReference { input: input.to_owned(), reason: e.to_string() })
}

/// Refuses a directory whose sockets would be too long for `sun_path`.
fn check_socket_paths(dir: &Path) -> Result<(), EngineError> {
    let vm = VmDirs::new(dir);
    for socket in [vm.api_socket(), vm.agent_socket(), dir.join(files::AGENT_SOCKET), dir.join(files::CONTROL_SOCKET)] {
        let len = socket.as_os_str().len();
        if len > crate::run::MAX_SOCKET_PATH {
            return Err(EngineError::SocketPathTooLong { path: socket, len, max: crate::run::MAX_SOCKET_PATH });
        }
    }
    Ok(())
}

/// Removes what a previous run of the sandbox left: sockets, pid and exit files.
fn clear_run_files(dir: &Path) {
    let vm = VmDirs::new(dir);
    for path in [
        vm.api_socket(),
        vm.agent_socket(),
        dir.join(files::AGENT_SOCKET),
        dir.join(files::CONTROL_SOCKET),
        dir.join(files::EXIT),
        dir.join(files::VM_PID),
    ] {
        let _ = std::fs::remove_file(path);
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), EngineError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(EngineError::io(format!("cannot create {}", path.display())))?;
    f.write_all(data).map_err(EngineError::io(format!("cannot write {}", path.display())))
}

fn remove_dir(dir: &Path) -> Result<(), EngineError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EngineError::Io { context: format!("cannot remove {}", dir.display()), source: e }),
    }
}

/// The last non-empty line of a log, for an error message.
fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_owned))
        .unwrap_or_else(|| format!("nothing in {}", path.display()))
}

async fn wait_gone(p: proc::ProcessId, within: Duration) {
    let deadline = Instant::now() + within;
    while p.is_alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Made-up names, as `docker` makes them: `adjective-noun`, with a number when those run out.
mod names {
    use nestbox_store::{SandboxName, Store};

    use crate::EngineError;

    const ADJECTIVES: &[&str] = &[
        "brave", "calm", "eager", "fond", "gentle", "happy", "keen", "lucid", "merry", "nimble", "proud", "quiet",
        "rapid", "sharp", "tidy", "vivid", "witty", "zesty", "bold", "crisp",
    ];
    const NOUNS: &[&str] = &[
        "finch", "heron", "lark", "owl", "robin", "swift", "wren", "crane", "egret", "kite", "martin", "plover",
        "raven", "sparrow", "tern", "thrush", "warbler", "dipper", "falcon", "gannet",
    ];

    /// A name no sandbox has.
    pub fn fresh(store: &Store) -> Result<SandboxName, EngineError> {
        let seed = crate::ids::new_id().map_err(EngineError::io("cannot read /dev/urandom"))?;
        let n = u64::from_str_radix(&seed, 16).unwrap_or(0);
        for attempt in 0..64u64 {
            let k = n.wrapping_add(attempt.wrapping_mul(7919));
            let adjective = ADJECTIVES[(k % ADJECTIVES.len() as u64) as usize];
            let noun = NOUNS[((k / ADJECTIVES.len() as u64) % NOUNS.len() as u64) as usize];
            let text =
                if attempt < 32 { format!("{adjective}-{noun}") } else { format!("{adjective}-{noun}-{}", k % 10_000) };
            let name = SandboxName::parse(&text).expect("made-up names are valid");
            if store.resolve(name.as_str()).is_err() {
                return Ok(name);
            }
        }
        Ok(SandboxName::parse(&seed).expect("an id is a valid name"))
    }
}
