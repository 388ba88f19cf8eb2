//! The Firecracker [`Backend`]: launches Firecracker (directly or through its jailer) for a
//! spec, configures it over the API, boots it, and drives the running VM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nestbox_backend::{
    AGENT_VSOCK_PORT, AgentEndpoint, Backend, BackendError, BackendKind, Capabilities, ExitReport, VmDirs, VmHandle,
    VmState,
};
use nestbox_model::VmSpec;
use nestbox_supervise::{CommandSpec, LogSpec, OsSpawner, Spawner, Supervised};

use crate::client::FcClient;
use crate::map::{MapError, MapOptions, Plan, Transport};
use crate::process::{self, JailerConfig, Layout};
use crate::wire::{ActionType, InstanceState, SnapshotCreateParams, SnapshotLoadParams, VmRunState};
use crate::{FIRECRACKER_BINARY, FIRECRACKER_PACKAGE};

/// How long Firecracker may take to open its API socket.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// The deadline on each API call.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SIGTERM is given before SIGKILL.
pub const DEFAULT_TERM_GRACE: Duration = Duration::from_secs(2);
/// The most console and log output kept on disk per stream (one rotated generation more).
pub const DEFAULT_LOG_MAX_BYTES: u64 = 1 << 20;

/// How Firecracker is run.
#[derive(Debug, Clone)]
pub struct FirecrackerConfig {
    /// The `firecracker` binary.
    pub binary: PathBuf,
    /// The virtio transport; [`Transport::Pci`] for kernels without
    /// `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`.
    pub transport: Transport,
    /// Run through the jailer.
    pub jailer: Option<JailerConfig>,
    /// Deadline for the API socket to appear.
    pub start_timeout: Duration,
    /// Deadline on each API call.
    pub api_timeout: Duration,
    /// SIGTERM to SIGKILL.
    pub term_grace: Duration,
    /// Bound on each of the console log and the hypervisor log.
    pub log_max_bytes: u64,
    /// Kill Firecracker if the process that started it dies (one-shot runs).
    pub die_with_parent: bool,
    /// Ask the guest to stop with Ctrl+Alt+Del first (x86 guests have the i8042 it needs).
    pub ctrl_alt_del: bool,
}

impl FirecrackerConfig {
    /// A configuration with the binary at `explicit` (a flag or config entry) or found on `PATH`.
    pub fn new(explicit: Option<&Path>, transport: Transport) -> Result<Self, BackendError> {
        Ok(Self::with_binary(locate_binary(explicit)?, transport))
    }

    /// A configuration for `binary` with the named defaults.
    pub fn with_binary(binary: impl Into<PathBuf>, transport: Transport) -> Self {
        Self {
            binary: binary.into(),
            transport,
            jailer: None,
            start_timeout: DEFAULT_START_TIMEOUT,
            api_timeout: DEFAULT_API_TIMEOUT,
            term_grace: DEFAULT_TERM_GRACE,
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            die_with_parent: true,
            ctrl_alt_del: cfg!(target_arch = "x86_64"),
        }
    }
}

/// The Firecracker binary: `explicit` when given (it must be executable), else `firecracker` on
/// `PATH`.
pub fn locate_binary(explicit: Option<&Path>) -> Result<PathBuf, BackendError> {
    let name = explicit.map_or_else(|| FIRECRACKER_BINARY.to_owned(), |p| p.to_string_lossy().into_owned());
    nestbox_supervise::find_program(&name)
        .ok_or_else(|| BackendError::BinaryNotFound { binary: name, package: FIRECRACKER_PACKAGE.into() })
}

impl From<MapError> for BackendError {
    fn from(e: MapError) -> Self {
        BackendError::Refused { backend: BackendKind::Firecracker, reason: e.to_string() }
    }
}

/// The Firecracker driver.
#[derive(Debug, Clone)]
pub struct FirecrackerBackend {
    config: FirecrackerConfig,
    spawner: Arc<dyn Spawner>,
    capabilities: Capabilities,
}

impl FirecrackerBackend {
    /// A backend that starts real processes.
    pub fn new(config: FirecrackerConfig) -> Self {
        Self::with_spawner(config, Arc::new(OsSpawner))
    }

    /// A backend with an injected spawner (tests).
    pub fn with_spawner(config: FirecrackerConfig, spawner: Arc<dyn Spawner>) -> Self {
        Self { config, spawner, capabilities: crate::map::capabilities() }
    }

    /// The configuration in use.
    pub fn config(&self) -> &FirecrackerConfig {
        &self.config
    }

    /// Where the VM in `dirs` keeps its sockets.
    pub fn layout(&self, dirs: &VmDirs) -> Result<Layout, BackendError> {
        match &self.config.jailer {
            Some(jailer) => Layout::jailed(dirs, jailer, &self.config.binary),
            None => Ok(Layout::direct(dirs)),
        }
    }

    /// The configuration requests for `spec`, with paths as Firecracker will see them (before
    /// the jail rewrites them).
    pub fn plan(&self, spec: &VmSpec, layout: &Layout) -> Result<Plan, MapError> {
        let options = MapOptions { transport: self.config.transport, vsock_path: layout.vsock_socket_in_vmm.clone() };
        Plan::new(spec, &options)
    }

    /// The command that starts Firecracker (or the jailer) for `layout`. The guest's serial port
    /// is Firecracker's stdio (the jailer hands its own on): stdout goes to the bounded console
    /// log, stdin is a pipe for [`VmHandle::console`]'s input (Firecracker reads a pipe, and
    /// stops reading at end of file).
    pub fn command(&self, layout: &Layout, dirs: &VmDirs) -> CommandSpec {
        let mut cmd = match &self.config.jailer {
            Some(jailer) => CommandSpec::new(&jailer.binary).args(process::jailer_args(
                jailer,
                &self.config.binary,
                layout,
                self.config.transport,
            )),
            None => {
                CommandSpec::new(&self.config.binary).args(process::firecracker_args(layout, self.config.transport))
            }
        };
        cmd = cmd.stdin_piped();
        cmd.stdout_log = Some(LogSpec { path: dirs.console_log(), max_bytes: self.config.log_max_bytes });
        cmd.stderr_log = Some(LogSpec { path: dirs.hypervisor_log(), max_bytes: self.config.log_max_bytes });
        cmd.die_with_parent = self.config.die_with_parent;
        cmd.new_process_group = true;
        cmd
    }

    /// Starts a fresh Firecracker for `dirs` (no configuration sent yet).
    async fn spawn(&self, dirs: &VmDirs, layout: Layout) -> Result<FirecrackerVm, BackendError> {
        layout.remove_stale_sockets()?;
        let cmd = self.command(&layout, dirs);
        let started = process::start(self.spawner.as_ref(), &cmd, &layout.api_socket, self.config.start_timeout).await;
        let child = match started {
            Ok(child) => child,
            Err(e) => {
                if let Some(jail) = &layout.jail {
                    jail.remove();
                }
                return Err(e);
            }
        };
        let client = FcClient::new(&layout.api_socket).with_timeout(self.config.api_timeout);
        let agent = AgentEndpoint::HybridVsock { path: layout.vsock_socket.clone(), port: AGENT_VSOCK_PORT };
        Ok(FirecrackerVm {
            child,
            client,
            agent,
            layout,
            term_grace: self.config.term_grace,
            ctrl_alt_del: self.config.ctrl_alt_del,
        })
    }

    /// Launches the concrete VM (what [`Backend::launch`] boxes).
    pub async fn launch_vm(&self, spec: &VmSpec, dirs: &VmDirs) -> Result<FirecrackerVm, BackendError> {
        let layout = self.layout(dirs)?;
        let mut plan = self.plan(spec, &layout)?;
        process::preflight(spec)?;
        if let Some(jail) = &layout.jail {
            jail.prepare(&mut plan)?;
        }
        let vm = self.spawn(dirs, layout).await?;
        for request in &plan.requests {
            if let Err(e) = vm.client.apply(request).await {
                return Err(vm.fail(e));
            }
        }
        if let Err(e) = vm.client.action(ActionType::InstanceStart).await {
            return Err(vm.fail(e));
        }
        tracing::debug!(pid = vm.pid(), "firecracker booted");
        Ok(vm)
    }

    /// Starts a fresh Firecracker for `dirs` and loads a snapshot into it (`load` names paths as
    /// Firecracker sees them: inside the jail when jailed).
    pub async fn restore(&self, dirs: &VmDirs, load: &SnapshotLoadParams) -> Result<FirecrackerVm, BackendError> {
        let layout = self.layout(dirs)?;
        if let Some(jail) = &layout.jail {
            jail.prepare(&mut Plan { requests: Vec::new() })?;
        }
        let vm = self.spawn(dirs, layout).await?;
        if let Err(e) = vm.client.load_snapshot(load).await {
            return Err(vm.fail(e));
        }
        Ok(vm)
    }
}

#[async_trait]
impl Backend for FirecrackerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Firecracker
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Refuses, naming the field, what Firecracker cannot do.
    fn check(&self, spec: &VmSpec) -> Result<(), BackendError> {
        let options =
            MapOptions { transport: self.config.transport, vsock_path: PathBuf::from(process::VSOCK_SOCKET_NAME) };
        match Plan::new(spec, &options) {
            // The vsock path is only known with the VM's directory; launch checks it again.
            Ok(_) | Err(MapError::VsockTaken { cid: nestbox_backend::AGENT_VSOCK_CID, .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn launch(&self, spec: &VmSpec, dirs: &VmDirs) -> Result<Box<dyn VmHandle>, BackendError> {
        Ok(Box::new(self.launch_vm(spec, dirs).await?))
    }
}

/// A running Firecracker.
#[derive(Debug)]
pub struct FirecrackerVm {
    child: Supervised,
    client: FcClient,
    agent: AgentEndpoint,
    layout: Layout,
    term_grace: Duration,
    ctrl_alt_del: bool,
}

impl FirecrackerVm {
    /// The API client (for calls the trait does not cover).
    pub fn client(&self) -> &FcClient {
        &self.client
    }

    /// Where the sockets are.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Takes a snapshot of the paused VM (`mem_file_path` and `snapshot_path` as Firecracker
    /// sees them).
    pub async fn snapshot(&self, params: &SnapshotCreateParams) -> Result<(), BackendError> {
        match self.state().await? {
            VmState::Paused => self.client.create_snapshot(params).await.map_err(|e| self.api_error(e)),
            state => Err(BackendError::InvalidState { op: "snapshot", state }),
        }
    }

    /// Sets the balloon's target size.
    pub async fn resize_balloon(&self, amount_mib: u32) -> Result<(), BackendError> {
        self.client.resize_balloon(amount_mib).await.map_err(|e| self.api_error(e))
    }

    /// Why Firecracker crashed, once it has exited: a vCPU error, its own error exit, a panic or a
    /// guest kernel panic in its output, even when it exited 0. `None` while it runs or after a
    /// clean exit.
    pub fn crash(&self) -> Option<String> {
        self.child.try_wait()?;
        process::crash_reason(&self.child)
    }

    /// Kills a VM that failed while starting, and says why, preferring its exit.
    fn fail(&self, e: BackendError) -> BackendError {
        let e = self.api_error(e);
        self.child.kill();
        e
    }

    /// An API error, or the exit when the process has ended (with its crash line if any).
    fn api_error(&self, e: BackendError) -> BackendError {
        match self.child.try_wait() {
            Some(report) => {
                let reason = process::crash_reason(&self.child);
                match reason {
                    Some(reason) => BackendError::Launch {
                        backend: BackendKind::Firecracker,
                        reason: format!("{report}: {reason}"),
                    },
                    None => BackendError::Exited(report),
                }
            }
            None => e,
        }
    }

    fn note_crash(&self, report: nestbox_supervise::ExitReport) -> nestbox_supervise::ExitReport {
        if let Some(reason) = process::crash_reason(&self.child) {
            tracing::warn!(%report, %reason, "firecracker crashed");
        }
        report
    }
}

impl Drop for FirecrackerVm {
    fn drop(&mut self) {
        if let Some(jail) = &self.layout.jail {
            self.child.kill();
            jail.remove();
        }
    }
}

#[async_trait]
impl VmHandle for FirecrackerVm {
    fn backend_kind(&self) -> BackendKind {
        BackendKind::Firecracker
    }

    fn agent_endpoint(&self) -> &AgentEndpoint {
        &self.agent
    }

    fn crash_reason(&self) -> Option<String> {
        self.crash()
    }

    /// Firecracker; its stdout also carries its own log lines when it has no log file.
    fn process(&self) -> &Supervised {
        &self.child
    }

    async fn pause_vcpus(&self) -> Result<(), BackendError> {
        self.client.set_vm_state(VmRunState::Paused).await.map_err(|e| self.api_error(e))
    }

    async fn resume_vcpus(&self) -> Result<(), BackendError> {
        self.client.set_vm_state(VmRunState::Resumed).await.map_err(|e| self.api_error(e))
    }

    async fn state(&self) -> Result<VmState, BackendError> {
        if self.child.try_wait().is_some() {
            return Ok(VmState::Exited);
        }
        match self.client.instance_info().await {
            Ok(info) => Ok(match info.state {
                InstanceState::NotStarted => VmState::Created,
                InstanceState::Running => VmState::Running,
                InstanceState::Paused => VmState::Paused,
            }),
            Err(e) => match self.child.try_wait() {
                Some(_) => Ok(VmState::Exited),
                None => Err(e),
            },
        }
    }

    async fn shutdown(&self, grace: Duration) -> ExitReport {
        let report = process::stop(&self.child, &self.client, grace, self.term_grace, self.ctrl_alt_del).await;
        self.note_crash(report)
    }

    fn kill(&self) {
        self.child.kill();
    }

    async fn wait(&self) -> ExitReport {
        let report = self.child.wait().await;
        self.note_crash(report)
    }
}

#[cfg(test)]
mod tests {
    use nestbox_supervise::StdinMode;

    use super::*;

    #[test]
    fn test_command_pipes_stdin_to_the_serial_port_directly_and_through_the_jailer() {
        let dirs = VmDirs::new("/run/vm");
        let mut config = FirecrackerConfig::with_binary("/opt/fc/firecracker", Transport::Mmio);
        let direct = FirecrackerBackend::new(config.clone());
        config.jailer = Some(JailerConfig::new("/opt/fc/jailer", 1000, 1000));
        let jailed = FirecrackerBackend::new(config);
        for (backend, program) in [(direct, "/opt/fc/firecracker"), (jailed, "/opt/fc/jailer")] {
            let cmd = backend.command(&backend.layout(&dirs).unwrap(), &dirs);
            assert_eq!(cmd.program, Path::new(program));
            assert_eq!(cmd.stdin, StdinMode::Piped, "{program}");
            assert_eq!(cmd.stdout_log.unwrap().path, dirs.console_log());
        }
    }
}
