//! The Cloud Hypervisor [`Backend`] and the running VM ([`CloudHypervisorVm`]).
//!
//! Launch: check the spec, map it (refusals happen here, before any process), spawn
//! `cloud-hypervisor` under supervision, wait for its API socket with a deadline, `vmm.ping`,
//! `vm.create`, `vm.boot`. Restore: spawn a fresh VMM, `vmm.ping`, `vm.restore`. Pause and
//! resume check the state through `vm.info` first and refuse with `InvalidState` otherwise.
//! The guest agent is reached over hybrid vsock on `<dir>/vsock.sock`, port
//! [`AGENT_VSOCK_PORT`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use nestbox_backend::{
    AGENT_VSOCK_PORT, AgentEndpoint, Backend, BackendError, BackendKind, Capabilities, ExitReport, VmDirs, VmHandle,
    VmState,
};
use nestbox_model::VmSpec;
use nestbox_supervise::{CommandSpec, LogSpec, OsSpawner, Spawner, Stream, SuperviseError, Supervised};

use crate::client::{ApiError, ChvClient, DEFAULT_API_TIMEOUT, DEFAULT_SNAPSHOT_TIMEOUT};
use crate::process::{self, ChvArgs, ChvEvent, ExitCause};
use crate::wire::{
    self, DiskConfig, MemoryRestoreMode, PciDeviceInfo, RestoreConfig, VmCounters, VmInfo, VmRemoveDevice, VmResize,
    VmSnapshotConfig,
};
use crate::{CHV_BINARY, CHV_PACKAGE, map};

const BACKEND: BackendKind = BackendKind::CloudHypervisor;
/// The most console output kept on disk per VM (one rotated generation more).
pub const DEFAULT_CONSOLE_MAX_BYTES: u64 = 1 << 20;
/// The most VMM log kept on disk per VM (one rotated generation more).
pub const DEFAULT_LOG_MAX_BYTES: u64 = 1 << 20;
/// How long Cloud Hypervisor may take to open its API socket.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a forced stop waits after `vmm.shutdown`, and again after SIGTERM.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(2);
/// How much of a `--log-file` is read back to classify an exit.
const LOG_FILE_TAIL_BYTES: u64 = 64 * 1024;
/// The scheme of snapshot and restore URLs.
const FILE_URL_SCHEME: &str = "file://";

/// How Cloud Hypervisor is run.
#[derive(Debug, Clone)]
pub struct ChvConfig {
    /// The `cloud-hypervisor` binary.
    pub binary: PathBuf,
    /// Console log bound, in bytes.
    pub console_max_bytes: u64,
    /// VMM log (stderr) bound, in bytes.
    pub log_max_bytes: u64,
    /// Deadline for the API socket to accept connections.
    pub start_timeout: Duration,
    /// Deadline of an ordinary API call.
    pub api_timeout: Duration,
    /// Deadline of `vm.snapshot` and `vm.restore`.
    pub snapshot_timeout: Duration,
    /// Grace after `vmm.shutdown`, and after SIGTERM, before the next step.
    pub stop_grace: Duration,
    /// `-v` count.
    pub verbosity: u8,
    /// `--log-file`: the VMM writes its log there itself (unbounded) instead of to stderr.
    pub log_file: Option<PathBuf>,
    /// Kill the VMM if the process that started it dies (one-shot runs).
    pub die_with_parent: bool,
}

impl ChvConfig {
    /// A configuration for `binary` (from a flag or the config file) with the named defaults.
    pub fn with_binary(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            console_max_bytes: DEFAULT_CONSOLE_MAX_BYTES,
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            start_timeout: DEFAULT_START_TIMEOUT,
            api_timeout: DEFAULT_API_TIMEOUT,
            snapshot_timeout: DEFAULT_SNAPSHOT_TIMEOUT,
            stop_grace: DEFAULT_STOP_GRACE,
            verbosity: 0,
            log_file: None,
            die_with_parent: true,
        }
    }

    /// A configuration with the binary given (`explicit`) or found on `PATH`.
    pub fn new(explicit: Option<&Path>) -> Result<Self, BackendError> {
        Ok(Self::with_binary(locate_binary(explicit)?))
    }
}

/// The binary: `explicit` when it names an executable, else `cloud-hypervisor` on `PATH`.
pub fn locate_binary(explicit: Option<&Path>) -> Result<PathBuf, BackendError> {
    let name = match explicit {
        Some(path) => path.to_string_lossy().into_owned(),
        None => CHV_BINARY.to_owned(),
    };
    // A bare name is searched on PATH; a path is checked as given.
    nestbox_supervise::find_program(&name)
        .ok_or_else(|| BackendError::BinaryNotFound { binary: name, package: CHV_PACKAGE.into() })
}

/// The Cloud Hypervisor driver.
#[derive(Debug, Clone)]
pub struct CloudHypervisorBackend {
    config: ChvConfig,
    spawner: Arc<dyn Spawner>,
    capabilities: Capabilities,
}

impl CloudHypervisorBackend {
    /// A backend that starts real processes.
    pub fn new(config: ChvConfig) -> Self {
        Self::with_spawner(config, Arc::new(OsSpawner))
    }

    /// A backend with an injected spawner (tests).
    pub fn with_spawner(config: ChvConfig, spawner: Arc<dyn Spawner>) -> Self {
        Self { config, spawner, capabilities: map::capabilities() }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ChvConfig {
        &self.config
    }

    /// The command Cloud Hypervisor is started with for the VM in `dirs`. The guest's serial
    /// port is its stdio (`Tty` mode): stdout goes to the bounded console log; stdin is a raw
    /// pseudo-terminal for [`VmHandle::console`]'s input, since Cloud Hypervisor reads serial
    /// input only from a terminal (a pipe would be ignored).
    pub fn command(&self, dirs: &VmDirs) -> Result<CommandSpec, BackendError> {
        let args = ChvArgs {
            log_file: self.config.log_file.clone(),
            verbosity: self.config.verbosity,
            ..ChvArgs::for_dirs(dirs)
        };
        let argv = args.build().map_err(|e| BackendError::Launch { backend: BACKEND, reason: e.to_string() })?;
        let mut cmd = CommandSpec::new(&self.config.binary).args(argv).stdin_pty();
        cmd.stdout_log = Some(LogSpec { path: dirs.console_log(), max_bytes: self.config.console_max_bytes });
        cmd.stderr_log = Some(LogSpec { path: dirs.hypervisor_log(), max_bytes: self.config.log_max_bytes });
        cmd.die_with_parent = self.config.die_with_parent;
        cmd.new_process_group = true;
        Ok(cmd)
    }

    fn client(&self, dirs: &VmDirs) -> ChvClient {
        ChvClient::new(dirs.api_socket())
            .with_timeout(self.config.api_timeout)
            .with_snapshot_timeout(self.config.snapshot_timeout)
    }

    /// Starts a VMM with no VM in it: spawn, wait for the API socket, `vmm.ping`.
    pub async fn start_vmm(&self, dirs: &VmDirs) -> Result<CloudHypervisorVm, BackendError> {
        let cmd = self.command(dirs)?;
        process::remove_stale_sockets(dirs)
            .map_err(|source| BackendError::Io { context: format!("clean {}", dirs.root().display()), source })?;
        let child = self.spawner.spawn(&cmd).map_err(|e| spawn_error(&self.config, e))?;
        tracing::debug!(pid = child.pid(), "cloud-hypervisor spawned");
        if let Err(e) = child.wait_for_socket(&dirs.api_socket(), self.config.start_timeout).await {
            child.kill();
            return Err(launch_error(launch_reason(&child, &e.to_string())));
        }
        let client = self.client(dirs);
        let version = match client.ping().await {
            Ok(ping) => ping.version,
            Err(e) => {
                child.kill();
                return Err(launch_error(launch_reason(&child, &format!("{}: {}", e.endpoint, e.message()))));
            }
        };
        Ok(CloudHypervisorVm {
            child,
            client,
            agent: AgentEndpoint::HybridVsock { path: map::vsock_socket(dirs), port: AGENT_VSOCK_PORT },
            events: process::events_file(dirs),
            log_file: self.config.log_file.clone(),
            version,
            stop_grace: self.config.stop_grace,
            signalled: AtomicBool::new(false),
        })
    }

    /// Launches `spec` and returns the concrete VM (the trait's `launch` boxes it).
    pub async fn launch_vm(&self, spec: &VmSpec, dirs: &VmDirs) -> Result<CloudHypervisorVm, BackendError> {
        self.check(spec)?;
        let config = map::vm_config(spec, dirs)
            .map_err(|e| BackendError::Refused { backend: BACKEND, reason: e.to_string() })?;
        let vm = self.start_vmm(dirs).await?;
        let booted = async {
            vm.client.create(&config).await?;
            vm.client.boot().await
        };
        if let Err(e) = booted.await {
            vm.child.kill();
            let reason = format!("{}: {}", e.endpoint, e.message());
            return Err(launch_error(launch_reason(&vm.child, &reason)));
        }
        Ok(vm)
    }

    /// Restores the snapshot in `snapshot_dir` into a fresh VMM with its files under `dirs`;
    /// the VM runs when `resume`, else it stays paused. The agent endpoint is the vsock socket
    /// recorded in the snapshot's configuration.
    pub async fn restore(
        &self,
        dirs: &VmDirs,
        snapshot_dir: &Path,
        mode: MemoryRestoreMode,
        resume: bool,
    ) -> Result<CloudHypervisorVm, BackendError> {
        let source_url = file_url(snapshot_dir)?;
        let mut vm = self.start_vmm(dirs).await?;
        let restore =
            RestoreConfig { source_url, prefault: None, memory_restore_mode: Some(mode), resume: Some(resume) };
        if let Err(e) = vm.client.restore(&restore).await {
            vm.child.kill();
            let reason = format!("{}: {}", e.endpoint, e.message());
            return Err(launch_error(launch_reason(&vm.child, &reason)));
        }
        match vm.client.info().await {
            Ok(VmInfo { config: wire::VmConfig { vsock: Some(vsock), .. }, .. }) => {
                vm.agent = AgentEndpoint::HybridVsock { path: PathBuf::from(vsock.socket), port: AGENT_VSOCK_PORT };
            }
            Ok(_) => {
                vm.child.kill();
                return Err(launch_error("the restored VM has no vsock device for the agent".into()));
            }
            Err(e) => {
                vm.child.kill();
                return Err(launch_error(launch_reason(&vm.child, &format!("{}: {}", e.endpoint, e.message()))));
            }
        }
        Ok(vm)
    }
}

#[async_trait]
impl Backend for CloudHypervisorBackend {
    fn kind(&self) -> BackendKind {
        BACKEND
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn launch(&self, spec: &VmSpec, dirs: &VmDirs) -> Result<Box<dyn VmHandle>, BackendError> {
        Ok(Box::new(self.launch_vm(spec, dirs).await?))
    }
}

fn launch_error(reason: String) -> BackendError {
    BackendError::Launch { backend: BACKEND, reason }
}

fn spawn_error(config: &ChvConfig, e: SuperviseError) -> BackendError {
    if e.is_not_found() {
        return BackendError::BinaryNotFound {
            binary: config.binary.display().to_string(),
            package: CHV_PACKAGE.into(),
        };
    }
    launch_error(e.to_string())
}

/// The reason a launch failed, with the VMM's own last words when it left any.
fn launch_reason(child: &Supervised, what: &str) -> String {
    let tail = child.log_tail(Stream::Stderr, 5).join(" / ");
    if tail.is_empty() || what.contains(&tail) { what.to_owned() } else { format!("{what}: {tail}") }
}

/// `file://<dir>` for an absolute UTF-8 directory.
pub fn file_url(dir: &Path) -> Result<String, BackendError> {
    let invalid = |why: &str| BackendError::Io {
        context: format!("snapshot directory {}", dir.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_owned()),
    };
    if !dir.is_absolute() {
        return Err(invalid("not an absolute path"));
    }
    let text = dir.to_str().ok_or_else(|| invalid("not UTF-8"))?;
    Ok(format!("{FILE_URL_SCHEME}{text}"))
}

/// A running Cloud Hypervisor VMM and its VM.
#[derive(Debug)]
pub struct CloudHypervisorVm {
    child: Supervised,
    client: ChvClient,
    agent: AgentEndpoint,
    events: PathBuf,
    log_file: Option<PathBuf>,
    version: String,
    stop_grace: Duration,
    /// Whether we signalled the process (a signal death is then ours, not a crash).
    signalled: AtomicBool,
}

impl CloudHypervisorVm {
    /// The API client.
    pub fn client(&self) -> &ChvClient {
        &self.client
    }

    /// The VMM version `vmm.ping` reported.
    pub fn version(&self) -> &str {
        &self.version
    }

    fn api_error(&self, e: ApiError) -> BackendError {
        match self.child.try_wait() {
            Some(report) => BackendError::Exited(report),
            None => e.into(),
        }
    }

    /// `vm.info`.
    pub async fn info(&self) -> Result<VmInfo, BackendError> {
        self.client.info().await.map_err(|e| self.api_error(e))
    }

    /// `vm.counters`.
    pub async fn counters(&self) -> Result<VmCounters, BackendError> {
        self.client.counters().await.map_err(|e| self.api_error(e))
    }

    /// `vm.power-button`.
    pub async fn power_button(&self) -> Result<(), BackendError> {
        self.client.power_button().await.map_err(|e| self.api_error(e))
    }

    /// Snapshots the paused VM into `dir` (created if missing): `vm.snapshot` to `file://<dir>`.
    pub async fn snapshot(&self, dir: &Path) -> Result<(), BackendError> {
        let url = file_url(dir)?;
        match self.state().await? {
            VmState::Paused => {}
            state => return Err(BackendError::InvalidState { op: "snapshot", state }),
        }
        std::fs::create_dir_all(dir)
            .map_err(|source| BackendError::Io { context: format!("create {}", dir.display()), source })?;
        self.client.snapshot(&VmSnapshotConfig { destination_url: url }).await.map_err(|e| self.api_error(e))
    }

    /// Sets the balloon to `bytes` (`vm.resize` with `desired_balloon`).
    pub async fn resize_balloon(&self, bytes: u64) -> Result<(), BackendError> {
        let resize = VmResize { desired_balloon: Some(bytes), ..VmResize::default() };
        self.client.resize(&resize).await.map_err(|e| self.api_error(e))
    }

    /// `vm.resize` as given (vCPUs, RAM, balloon).
    pub async fn resize(&self, resize: &VmResize) -> Result<(), BackendError> {
        self.client.resize(resize).await.map_err(|e| self.api_error(e))
    }

    /// Hot-adds a disk: where it landed, or `None` when cold-added.
    pub async fn add_disk(&self, disk: &DiskConfig) -> Result<Option<PciDeviceInfo>, BackendError> {
        self.client.add_disk(disk).await.map_err(|e| self.api_error(e))
    }

    /// Hot-removes the device `id`.
    pub async fn remove_device(&self, id: &str) -> Result<(), BackendError> {
        self.client.remove_device(&VmRemoveDevice { id: id.to_owned() }).await.map_err(|e| self.api_error(e))
    }

    /// The events the VMM has written so far.
    pub fn events(&self) -> Vec<ChvEvent> {
        process::read_events(&self.events)
    }

    /// Once the process has ended: whether it crashed or stopped, from its status, log and
    /// events. `None` while it runs.
    pub fn exit_cause(&self) -> Option<ExitCause> {
        let report = self.child.try_wait()?;
        let log = match &self.log_file {
            Some(path) => tail_file(path, LOG_FILE_TAIL_BYTES),
            None => self.child.log_tail(Stream::Stderr, process::CRASH_LOG_LINES),
        };
        Some(process::classify_exit(report, &log, &self.events(), self.signalled.load(Ordering::SeqCst)))
    }

    fn report_exit(&self, report: nestbox_supervise::ExitReport) -> ExitReport {
        if let Some(ExitCause::Crash { reason, .. }) = self.exit_cause() {
            tracing::warn!(pid = self.child.pid(), %reason, "cloud-hypervisor crashed");
        }
        report
    }
}

/// The last lines of the last `max_bytes` of a file; empty when unreadable.
fn tail_file(path: &Path, max_bytes: u64) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(len.saturating_sub(max_bytes))).is_err() || file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    String::from_utf8_lossy(&bytes).lines().map(str::to_owned).collect()
}

#[async_trait]
impl VmHandle for CloudHypervisorVm {
    fn backend_kind(&self) -> BackendKind {
        BackendKind::CloudHypervisor
    }

    fn agent_endpoint(&self) -> &AgentEndpoint {
        &self.agent
    }

    fn crash_reason(&self) -> Option<String> {
        match self.exit_cause()? {
            ExitCause::Crash { reason, .. } => Some(reason),
            ExitCause::Clean | ExitCause::Forced { .. } => None,
        }
    }

    /// Cloud Hypervisor; its stdin is a pseudo-terminal, as it reads serial input only from one.
    fn process(&self) -> &Supervised {
        &self.child
    }

    async fn pause_vcpus(&self) -> Result<(), BackendError> {
        self.client.pause().await.map_err(|e| self.api_error(e))
    }

    async fn resume_vcpus(&self) -> Result<(), BackendError> {
        self.client.resume().await.map_err(|e| self.api_error(e))
    }

    async fn state(&self) -> Result<VmState, BackendError> {
        if self.child.try_wait().is_some() {
            return Ok(VmState::Exited);
        }
        match self.client.info().await {
            Ok(info) => Ok(match info.state {
                wire::VmState::Created => VmState::Created,
                wire::VmState::Running => VmState::Running,
                wire::VmState::Paused => VmState::Paused,
                wire::VmState::Shutdown => VmState::Exited,
            }),
            Err(e) => match self.child.try_wait() {
                Some(_) => Ok(VmState::Exited),
                None => Err(e.into()),
            },
        }
    }

    async fn shutdown(&self, grace: Duration) -> ExitReport {
        if let Some(report) = self.child.try_wait() {
            return self.report_exit(report);
        }
        // Graceful: the ACPI power button; Cloud Hypervisor exits when the guest powers off.
        if self.client.power_button().await.is_ok()
            && let Ok(report) = tokio::time::timeout(grace, self.child.wait()).await
        {
            return self.report_exit(report);
        }
        let (report, signalled) = process::stop(&self.child, &self.client, self.stop_grace).await;
        if signalled {
            self.signalled.store(true, Ordering::SeqCst);
        }
        self.report_exit(report)
    }

    fn kill(&self) {
        self.signalled.store(true, Ordering::SeqCst);
        self.child.kill();
    }

    async fn wait(&self) -> ExitReport {
        let report = self.child.wait().await;
        self.report_exit(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_file_url_needs_absolute_utf8() {
        assert_eq!(file_url(Path::new("/snap/1")).unwrap(), "file:///snap/1");
        assert!(file_url(Path::new("snap")).is_err());
    }

    #[test]
    fn test_locate_binary_explicit_and_missing() {
        let err = locate_binary(Some(Path::new("/nonexistent/cloud-hypervisor"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("/nonexistent/cloud-hypervisor not found on PATH: install the {CHV_PACKAGE} package")
        );
        let Some(sh) = nestbox_supervise::find_program("sh") else {
            eprintln!("skipped: no sh on PATH");
            return;
        };
        assert_eq!(locate_binary(Some(&sh)).unwrap(), sh);
    }

    #[test]
    fn test_command_logs_and_argv() {
        let backend = CloudHypervisorBackend::new(ChvConfig::with_binary("/opt/ch/cloud-hypervisor"));
        let dirs = VmDirs::new("/run/vm");
        let cmd = backend.command(&dirs).unwrap();
        assert_eq!(cmd.program, Path::new("/opt/ch/cloud-hypervisor"));
        assert_eq!(cmd.args, ["--api-socket", "path=/run/vm/api.sock", "--event-monitor", "path=/run/vm/events.json"]);
        assert_eq!(cmd.stdout_log.unwrap().path, dirs.console_log());
        assert_eq!(cmd.stderr_log.unwrap().path, dirs.hypervisor_log());
        assert!(cmd.new_process_group);
        // Cloud Hypervisor's tty serial reads its input only from a terminal.
        assert_eq!(cmd.stdin, nestbox_supervise::StdinMode::Pty);
    }
}
