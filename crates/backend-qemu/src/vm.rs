//! The QEMU [`Backend`]: launches QEMU for a spec, supervises it, and drives it over QMP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nestbox_backend::{
    AgentEndpoint, Backend, BackendError, BackendKind, Capabilities, ExitReport, Operation, RestoreMode, RestoreSource,
    SnapshotFiles, VmDirs, VmHandle, VmState,
};
use nestbox_model::VmSpec;
use nestbox_supervise::{CommandSpec, LogSpec, OsSpawner, Spawner, Stream, SuperviseError, Supervised};

use crate::args::{Accel, MemoryFile, QemuArgs};
use crate::qmp::{MigrationState, QmpClient, QmpError, RunStatus};
use crate::{QEMU_BINARY, QEMU_PACKAGE};

/// The most console output kept on disk per VM (one rotated generation more).
pub const DEFAULT_CONSOLE_MAX_BYTES: u64 = 1 << 20;
/// How long QEMU may take to open its control socket.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a forced stop waits after `quit` before signalling.
const QUIT_GRACE: Duration = Duration::from_secs(1);
/// How long a snapshot's or a restore's migration may take (RAM in the stream, at worst).
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(300);
/// Pause between looks at a migration in progress.
const MIGRATION_POLL: Duration = Duration::from_millis(5);
/// The device state's file name in a snapshot directory.
pub const STATE_FILE: &str = "state";
/// The memory's file name in a snapshot directory.
pub const MEMORY_FILE: &str = "memory";

/// How QEMU is run.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// The `qemu-system-x86_64` binary.
    pub binary: PathBuf,
    /// The accelerator.
    pub accel: Accel,
    /// The host TSC rate for TCG guests, in kHz.
    pub tsc_khz: u32,
    /// Console log bound, in bytes.
    pub console_max_bytes: u64,
    /// Deadline for QEMU to open its control socket.
    pub start_timeout: Duration,
    /// Kill QEMU if the process that started it dies (one-shot runs).
    pub die_with_parent: bool,
    /// Guest memory in this file (shared), so that the VM can be snapshotted; `None`: anonymous.
    pub memory_file: Option<PathBuf>,
}

impl QemuConfig {
    /// A configuration with the binary found on `PATH` and the named defaults.
    pub fn new(accel: Accel) -> Result<Self, BackendError> {
        Ok(Self {
            binary: locate_binary()?,
            accel,
            tsc_khz: crate::host::tsc_khz(),
            console_max_bytes: DEFAULT_CONSOLE_MAX_BYTES,
            start_timeout: DEFAULT_START_TIMEOUT,
            die_with_parent: true,
            memory_file: None,
        })
    }
}

/// Finds `qemu-system-x86_64` on `PATH`, or says which package provides it.
pub fn locate_binary() -> Result<PathBuf, BackendError> {
    nestbox_supervise::find_program(QEMU_BINARY)
        .ok_or_else(|| BackendError::BinaryNotFound { binary: QEMU_BINARY.into(), package: QEMU_PACKAGE.into() })
}

/// The QEMU driver.
#[derive(Debug, Clone)]
pub struct QemuBackend {
    config: QemuConfig,
    spawner: Arc<dyn Spawner>,
    capabilities: Capabilities,
}

impl QemuBackend {
    /// A backend that starts real processes.
    pub fn new(config: QemuConfig) -> Self {
        Self::with_spawner(config, Arc::new(OsSpawner))
    }

    /// A backend with an injected spawner (tests).
    pub fn with_spawner(config: QemuConfig, spawner: Arc<dyn Spawner>) -> Self {
        let capabilities = Capabilities {
            operations: vec![
                Operation::Pause,
                Operation::Snapshot,
                Operation::RestoreCopy,
                Operation::RestoreShared,
                Operation::FirmwareBoot,
                Operation::DeviceBlock,
                Operation::DeviceNet,
                Operation::DeviceVsock,
                Operation::DeviceBalloon,
                Operation::DeviceRng,
            ],
        };
        Self { config, spawner, capabilities }
    }

    /// The configuration in use.
    pub fn config(&self) -> &QemuConfig {
        &self.config
    }

    /// The command QEMU is started with for `spec`. The guest's serial console is QEMU's stdio:
    /// stdout goes to the bounded console log, stdin is a pipe for [`VmHandle::console`]'s input
    /// (QEMU reads it as the serial port's input, and simply stops reading at end of file).
    pub fn command(&self, spec: &VmSpec, dirs: &VmDirs, agent: bool) -> Result<CommandSpec, BackendError> {
        let memory = self.config.memory_file.clone().map(|path| MemoryFile { path, shared: true });
        self.command_with(spec, dirs, agent, memory, false)
    }

    fn command_with(
        &self,
        spec: &VmSpec,
        dirs: &VmDirs,
        agent: bool,
        memory: Option<MemoryFile>,
        incoming: bool,
    ) -> Result<CommandSpec, BackendError> {
        let name = dirs.root().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let args = QemuArgs {
            name: format!("nestbox-{name}"),
            accel: self.config.accel,
            tsc_khz: self.config.tsc_khz,
            agent,
            memory,
            incoming,
        }
        .build(spec, dirs)?;
        let mut cmd = CommandSpec::new(&self.config.binary).args(args).stdin_piped();
        cmd.stdout_log = Some(LogSpec { path: dirs.console_log(), max_bytes: self.config.console_max_bytes });
        cmd.stderr_log = Some(LogSpec { path: dirs.hypervisor_log(), max_bytes: self.config.console_max_bytes });
        cmd.die_with_parent = self.config.die_with_parent;
        cmd.new_process_group = true;
        Ok(cmd)
    }
}

#[async_trait]
impl Backend for QemuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn launch(&self, spec: &VmSpec, dirs: &VmDirs) -> Result<Box<dyn VmHandle>, BackendError> {
        self.check(spec)?;
        let memory = self.config.memory_file.clone().map(|path| MemoryFile { path, shared: true });
        let cmd = self.command_with(spec, dirs, true, memory.clone(), false)?;
        Ok(Box::new(self.start(cmd, dirs, memory).await?))
    }

    /// Starts QEMU waiting for the snapshot's state, and loads it: the memory file is mapped
    /// privately (`shared`) or copied to this VM's own memory file (`copy`) first; a snapshot
    /// whose memory is inside its state (taken of a VM without a shared memory file) can only
    /// be copied. The VM is left paused.
    async fn restore(
        &self,
        spec: &VmSpec,
        dirs: &VmDirs,
        from: &RestoreSource,
    ) -> Result<Box<dyn VmHandle>, BackendError> {
        self.check(spec)?;
        let refuse = |reason: String| BackendError::Launch { backend: BackendKind::Qemu, reason };
        let (memory, ignore_shared) = match (from.mode, &from.files.memory) {
            (RestoreMode::Lazy, _) => {
                return Err(BackendError::Unsupported { backend: BackendKind::Qemu, op: Operation::RestoreLazy });
            }
            (RestoreMode::Shared, Some(file)) => (Some(MemoryFile { path: file.clone(), shared: false }), true),
            (RestoreMode::Shared, None) => {
                return Err(refuse(
                    "this snapshot keeps its memory inside its device state (it was taken of a VM restored \
                     with mode shared): restore it with mode copy"
                        .into(),
                ));
            }
            (RestoreMode::Copy, memory) => {
                let live = self.config.memory_file.clone();
                if let (Some(src), Some(live)) = (memory, &live) {
                    let _ = std::fs::remove_file(live);
                    nestbox_backend::copy_file(src, live)
                        .map_err(|e| refuse(format!("cannot copy {} to {}: {e}", src.display(), live.display())))?;
                }
                (live.map(|path| MemoryFile { path, shared: true }), memory.is_some())
            }
        };
        if ignore_shared && memory.is_none() {
            return Err(refuse("restoring a snapshot's memory file needs a memory file for the VM".into()));
        }
        let cmd = self.command_with(spec, dirs, true, memory.clone(), true)?;
        let vm = self.start(cmd, dirs, memory).await?;
        let loaded = async {
            vm.qmp.set_ignore_shared(ignore_shared).await?;
            vm.qmp.migrate_incoming(&exec_uri("cat", "<", &from.files.state)).await?;
            Ok::<(), QmpError>(())
        };
        if let Err(e) = loaded.await {
            vm.child.kill();
            return Err(vm.api_error(e));
        }
        let deadline = tokio::time::Instant::now() + MIGRATION_TIMEOUT;
        loop {
            match vm.qmp.status().await {
                Ok(RunStatus::Inmigrate) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(MIGRATION_POLL).await;
                }
                Ok(RunStatus::Paused) => return Ok(Box::new(vm)),
                Ok(other) => {
                    vm.child.kill();
                    let tail = vm.child.log_tail(Stream::Stderr, 5).join(" / ");
                    return Err(refuse(format!("loading the snapshot ended in state {other:?}: {tail}")));
                }
                Err(e) => {
                    vm.child.kill();
                    let tail = vm.child.log_tail(Stream::Stderr, 5).join(" / ");
                    return Err(refuse(format!("loading the snapshot failed: {e}: {tail}")));
                }
            }
        }
    }
}

impl QemuBackend {
    /// Spawns `cmd` and connects to its QMP socket.
    async fn start(&self, cmd: CommandSpec, dirs: &VmDirs, memory: Option<MemoryFile>) -> Result<QemuVm, BackendError> {
        let child = self.spawner.spawn(&cmd).map_err(|e| spawn_error(&self.config, e))?;
        tracing::debug!(pid = child.pid(), "qemu spawned");
        if let Err(e) = child.wait_for_socket(&dirs.api_socket(), self.config.start_timeout).await {
            child.kill();
            return Err(BackendError::Launch { backend: BackendKind::Qemu, reason: launch_reason(&child, e) });
        }
        let qmp = match QmpClient::connect(&dirs.api_socket()).await {
            Ok(qmp) => qmp,
            Err(e) => {
                child.kill();
                return Err(BackendError::Launch { backend: BackendKind::Qemu, reason: e.to_string() });
            }
        };
        Ok(QemuVm { child, qmp, agent: AgentEndpoint::Unix(dirs.agent_socket()), memory })
    }
}

/// A migration URI that runs `program` with its stdin or stdout (`direction` `<` or `>`) on
/// `path` (QEMU runs it with `/bin/sh -c`, so the path is quoted).
fn exec_uri(program: &str, direction: &str, path: &std::path::Path) -> String {
    let quoted = path.to_string_lossy().replace('\'', "'\\''");
    format!("exec:{program} {direction} '{quoted}'")
}

fn spawn_error(config: &QemuConfig, e: SuperviseError) -> BackendError {
    if e.is_not_found() {
        return BackendError::BinaryNotFound {
            binary: config.binary.display().to_string(),
            package: QEMU_PACKAGE.into(),
        };
    }
    BackendError::Launch { backend: BackendKind::Qemu, reason: e.to_string() }
}

/// The reason a launch failed, with QEMU's own last words when it left any.
fn launch_reason(child: &Supervised, e: SuperviseError) -> String {
    let tail = child.log_tail(Stream::Stderr, 5).join(" / ");
    if tail.is_empty() { e.to_string() } else { format!("{e}: {tail}") }
}

/// A running QEMU.
#[derive(Debug)]
pub struct QemuVm {
    child: Supervised,
    qmp: QmpClient,
    agent: AgentEndpoint,
    /// Where the guest's memory lives, when in a file.
    memory: Option<MemoryFile>,
}

impl QemuVm {
    fn api_error(&self, e: QmpError) -> BackendError {
        match self.child.try_wait() {
            Some(report) => BackendError::Exited(report),
            None => {
                BackendError::Api { backend: BackendKind::Qemu, request: command_of(&e).into(), message: e.to_string() }
            }
        }
    }
}

fn command_of(e: &QmpError) -> &'static str {
    match e {
        QmpError::Connect { .. } => "connect",
        QmpError::Command { command, .. } | QmpError::Io { command, .. } | QmpError::Timeout { command, .. } => command,
    }
}

#[async_trait]
impl VmHandle for QemuVm {
    fn backend_kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn agent_endpoint(&self) -> &AgentEndpoint {
        &self.agent
    }

    /// Stops the vCPUs and migrates the device state to `dest/state`. With the memory in a shared
    /// file, the stream leaves it out (`x-ignore-shared`) and the file is copied to
    /// `dest/memory` (sharing extents where it can, holes kept); otherwise the memory goes into
    /// the stream. The VM stays paused (`cont` resumes it).
    async fn snapshot(&self, dest: &std::path::Path) -> Result<SnapshotFiles, BackendError> {
        if let RunStatus::Running = self.qmp.status().await.map_err(|e| self.api_error(e))? {
            self.qmp.stop().await.map_err(|e| self.api_error(e))?;
        }
        let shared = self.memory.as_ref().filter(|m| m.shared);
        let state = dest.join(STATE_FILE);
        self.qmp.set_ignore_shared(shared.is_some()).await.map_err(|e| self.api_error(e))?;
        self.qmp.migrate(&exec_uri("cat", ">", &state)).await.map_err(|e| self.api_error(e))?;
        let deadline = tokio::time::Instant::now() + MIGRATION_TIMEOUT;
        loop {
            match self.qmp.migration().await.map_err(|e| self.api_error(e))? {
                MigrationState::Completed => break,
                MigrationState::Failed(reason) => {
                    return Err(BackendError::Api {
                        backend: BackendKind::Qemu,
                        request: "migrate".into(),
                        message: reason,
                    });
                }
                MigrationState::InProgress if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(MIGRATION_POLL).await;
                }
                MigrationState::InProgress => {
                    return Err(BackendError::Api {
                        backend: BackendKind::Qemu,
                        request: "migrate".into(),
                        message: format!("not done after {MIGRATION_TIMEOUT:?}"),
                    });
                }
            }
        }
        let memory = match shared {
            Some(file) => {
                let copy = dest.join(MEMORY_FILE);
                nestbox_backend::copy_file(&file.path, &copy).map_err(|e| BackendError::Api {
                    backend: BackendKind::Qemu,
                    request: "snapshot".into(),
                    message: format!("cannot copy the memory {} to {}: {e}", file.path.display(), copy.display()),
                })?;
                Some(copy)
            }
            None => None,
        };
        Ok(SnapshotFiles { memory, state })
    }

    /// QEMU, whose stdio is the serial port (`-chardev stdio`).
    fn process(&self) -> &Supervised {
        &self.child
    }

    async fn pause_vcpus(&self) -> Result<(), BackendError> {
        self.qmp.stop().await.map_err(|e| self.api_error(e))
    }

    async fn resume_vcpus(&self) -> Result<(), BackendError> {
        self.qmp.cont().await.map_err(|e| self.api_error(e))
    }

    async fn state(&self) -> Result<VmState, BackendError> {
        if self.child.try_wait().is_some() {
            return Ok(VmState::Exited);
        }
        match self.qmp.status().await {
            Ok(RunStatus::Running) => Ok(VmState::Running),
            Ok(RunStatus::Paused) => Ok(VmState::Paused),
            Ok(RunStatus::Inmigrate) => Ok(VmState::Created),
            Ok(RunStatus::Shutdown) => Ok(VmState::Exited),
            Ok(RunStatus::Other(name)) => Err(BackendError::Api {
                backend: BackendKind::Qemu,
                request: "query-status".into(),
                message: format!("unexpected run state {name}"),
            }),
            Err(e) => match self.child.try_wait() {
                Some(_) => Ok(VmState::Exited),
                None => Err(self.api_error(e)),
            },
        }
    }

    async fn shutdown(&self, grace: Duration) -> ExitReport {
        if let Some(report) = self.child.try_wait() {
            return report;
        }
        if self.qmp.system_powerdown().await.is_ok()
            && let Ok(report) = tokio::time::timeout(grace, self.child.wait()).await
        {
            return report;
        }
        if self.qmp.quit().await.is_ok()
            && let Ok(report) = tokio::time::timeout(QUIT_GRACE, self.child.wait()).await
        {
            return report;
        }
        self.child.terminate(QUIT_GRACE).await
    }

    fn kill(&self) {
        self.child.kill();
    }

    async fn wait(&self) -> ExitReport {
        self.child.wait().await
    }
}

#[cfg(test)]
mod tests {
    use nestbox_model::Boot;
    use nestbox_supervise::StdinMode;

    use super::*;

    #[test]
    fn test_exec_uri_quotes_the_path_for_the_shell() {
        assert_eq!(exec_uri("cat", ">", std::path::Path::new("/s/state")), "exec:cat > '/s/state'");
        assert_eq!(exec_uri("cat", "<", std::path::Path::new("/it's")), "exec:cat < '/it'\\''s'");
    }

    #[test]
    fn test_command_pipes_stdin_to_the_serial_console() {
        let config = QemuConfig {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            tsc_khz: 1_000_000,
            console_max_bytes: 4096,
            start_timeout: DEFAULT_START_TIMEOUT,
            die_with_parent: false,
            memory_file: None,
        };
        let spec = VmSpec {
            vcpus: 1,
            memory_mib: 64,
            boot: Boot::Linux { kernel: "/k".into(), initrd: None, cmdline: String::new() },
            devices: vec![],
        };
        let dirs = VmDirs::new("/run/vm");
        let cmd = QemuBackend::new(config).command(&spec, &dirs, true).unwrap();
        assert_eq!(cmd.stdin, StdinMode::Piped);
        assert_eq!(cmd.stdout_log, Some(LogSpec { path: dirs.console_log(), max_bytes: 4096 }));
        let argv: Vec<String> = cmd.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let serial = argv.windows(2).any(|w| w == ["-serial", "chardev:console"]);
        let stdio = argv.windows(2).any(|w| w == ["-chardev", "stdio,id=console,signal=off"]);
        assert!(serial && stdio, "{argv:?}");
    }
}
