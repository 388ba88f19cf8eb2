//! `run`: boot a fresh microVM, run one command in it through the agent, tear it down.
//!
//! The order matters for leaving nothing behind: the VM directory is created only after the
//! kernel and image are ready, QEMU dies with us (`PR_SET_PDEATHSIG`), and [`Sandbox`] tears
//! down the VM and removes the directory on every path out, including a signal.

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use nestbox_agent_client::{AgentClient, ExecEvent, ExecRequest, ExitStatus};
use nestbox_backend::{AgentEndpoint, Backend, VmDirs, VmHandle};
use nestbox_backend_qemu::{QemuBackend, QemuConfig};
use nestbox_initramfs::{DEFAULT_MODULES, ImageInputs};
use nestbox_model::{Boot, Device, VmSpec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use nestbox_backend::{BackendError, BackendKind};
use nestbox_backend_chv::{ChvConfig, CloudHypervisorBackend};
use nestbox_backend_firecracker::{FirecrackerBackend, FirecrackerConfig, Transport};
use nestbox_backend_qemu::Accel;
use nestbox_kernel::{KernelConfig, VirtioTransport};

use crate::accel::{self, AccelChoice, AccelDecision};
use crate::doctor;
use crate::guest::{CONSOLE_TAIL_LINES, DEFAULT_CMDLINE, POWEROFF_GRACE};
use crate::{EngineError, Home, agent_binary, ids};

/// The kernel's limit on a Unix socket path (`sun_path` less its NUL).
pub(crate) const MAX_SOCKET_PATH: usize = 107;
/// How often the agent socket is tried while QEMU creates it.
const CONNECT_RETRY: Duration = Duration::from_millis(5);
/// How long a failed handshake waits to see whether the VM is exiting.
const EXIT_SETTLE: Duration = Duration::from_millis(500);
/// The device id of a root disk: the first virtio-blk device, so the guest sees it as `/dev/vda`.
const ROOT_DISK_ID: &str = "root";
/// Read size for forwarding stdin.
const STDIN_CHUNK: usize = 64 * 1024;

/// What VM to boot.
#[derive(Debug, Clone)]
pub struct BootRequest {
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// The kernel, when not searched for.
    pub kernel: Option<PathBuf>,
    /// Extra kernel command-line words.
    pub kernel_args: Vec<String>,
    /// How long boot may take, from launch to a ready agent.
    pub boot_timeout: Duration,
    /// Which accelerator to use (QEMU; Firecracker and Cloud Hypervisor always use KVM).
    pub accel: AccelChoice,
    /// Which hypervisor runs the VM.
    pub hypervisor: BackendKind,
    /// Its binary, when not found as `doctor::locate_binary` finds it.
    pub hypervisor_binary: Option<PathBuf>,
    /// A disk (raw ext4, or a qcow2 overlay of one) to use as the guest's root filesystem: the
    /// agent switches to it from the initramfs (`nestbox.root=/dev/vda`).
    pub root_disk: Option<PathBuf>,
    /// Data disks, mounted in the guest where each says.
    pub volumes: Vec<Volume>,
    /// The root disk is a cloud image, booted by firmware with a cloud-init seed, rather than
    /// a root filesystem our initramfs switches to.
    pub cloud: Option<crate::cloud::CloudBoot>,
}

/// A data disk: a file on the host (raw or qcow2, holding ext4) mounted at a path in the guest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Volume {
    /// The disk file.
    pub path: PathBuf,
    /// Where the guest mounts it (absolute; no whitespace or `:`).
    pub guest_path: String,
    /// Read-only, for the hypervisor and the guest.
    #[serde(default)]
    pub readonly: bool,
}

impl std::str::FromStr for Volume {
    type Err = String;

    /// `PATH:GUEST_PATH[:ro|:rw]`; `PATH` must be an existing file.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(':');
        let (Some(path), Some(guest)) = (parts.next(), parts.next()) else {
            return Err("expected PATH:GUEST_PATH[:ro]".into());
        };
        let readonly = match parts.next() {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(other) => return Err(format!("unknown mode {other:?}: expected ro or rw")),
        };
        if parts.next().is_some() {
            return Err("expected PATH:GUEST_PATH[:ro]".into());
        }
        if !std::path::Path::new(path).is_file() {
            return Err(format!("{path} is not a disk image file"));
        }
        if !guest.starts_with('/') || guest == "/" || guest.chars().any(char::is_whitespace) {
            return Err(format!("the guest path {guest:?} must be absolute, not /, without spaces"));
        }
        let path = std::fs::canonicalize(path).map_err(|e| format!("{path}: {e}"))?;
        Ok(Volume { path, guest_path: guest.to_owned(), readonly })
    }
}

/// A request made ready to launch: a validated spec, the accelerator and the configured backend.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The VM.
    pub spec: VmSpec,
    /// The accelerator, and why not KVM when `auto` fell back.
    pub accel: AccelDecision,
    /// How long boot may take.
    pub boot_timeout: Duration,
    /// The backend that will launch it.
    pub launcher: Launcher,
}

/// A backend with its configuration, chosen by `prepare`.
#[derive(Debug, Clone)]
pub enum Launcher {
    /// QEMU.
    Qemu(QemuConfig),
    /// Firecracker.
    Firecracker(FirecrackerConfig),
    /// Cloud Hypervisor.
    CloudHypervisor(ChvConfig),
}

impl Launcher {
    /// The backend, ready to launch.
    pub(crate) fn backend(&self) -> Box<dyn Backend> {
        match self {
            Launcher::Qemu(config) => Box::new(QemuBackend::new(config.clone())),
            Launcher::Firecracker(config) => Box::new(FirecrackerBackend::new(config.clone())),
            Launcher::CloudHypervisor(config) => Box::new(CloudHypervisorBackend::new(config.clone())),
        }
    }
}

/// One `run`: a VM and the command to run in it.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The VM.
    pub boot: BootRequest,
    /// Extra environment for the command.
    pub env: Vec<(String, String)>,
    /// Working directory in the guest.
    pub workdir: Option<String>,
    /// Kill the command after this long.
    pub timeout: Option<Duration>,
    /// The command and its arguments.
    pub argv: Vec<String>,
}

/// Where the command's streams go.
pub struct RunIo {
    /// Forwarded to the command's stdin.
    pub stdin: Pin<Box<dyn AsyncRead + Send>>,
    /// Receives the command's stdout as it is produced.
    pub stdout: Pin<Box<dyn AsyncWrite + Send>>,
    /// Receives the command's stderr as it is produced.
    pub stderr: Pin<Box<dyn AsyncWrite + Send>>,
}

impl std::fmt::Debug for RunIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunIo").finish_non_exhaustive()
    }
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// The guest's report.
    pub status: ExitStatus,
    /// The exit code a shell would show: the code, or 128+signal, or 124 on timeout.
    pub exit_code: i32,
}

/// Receives one-line progress messages about slow, one-off work (the KVM probe).
pub type Notify = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Boots VMs and runs commands in them.
#[derive(Clone)]
pub struct Runner {
    home: Home,
    notify: Option<Notify>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("home", &self.home).finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner keeping its state under `home`.
    pub fn new(home: Home) -> Self {
        Self { home, notify: None }
    }

    /// Sends progress messages to `notify` (a terminal, say).
    pub fn with_notify(mut self, notify: Notify) -> Self {
        self.notify = Some(notify);
        self
    }

    /// Boots a VM for `req`, runs the command with `io`, and tears the VM down. When `cancel`
    /// resolves (to a signal number) first, the VM is torn down and `Interrupted` returned.
    pub async fn run(
        &self,
        prepared: &Prepared,
        req: RunRequest,
        io: RunIo,
        cancel: impl Future<Output = i32>,
    ) -> Result<RunOutcome, EngineError> {
        let mut slot: Option<Sandbox> = None;
        let result = tokio::select! {
            r = async {
                let sandbox = slot.insert(self.boot(prepared).await?);
                sandbox.run_command(&req, io).await
            } => r,
            signal = cancel => Err(EngineError::Interrupted { signal }),
        };
        // Without disks `run` keeps nothing of the VM, so there is nothing for the guest to
        // flush: kill it rather than wait for an orderly power-off. A disk that outlives the run
        // (a volume) gets an orderly power-off, which unmounts it cleanly.
        let keeps_disks = prepared.spec.devices.iter().any(|d| matches!(d, Device::VirtioBlk { .. }));
        let mode = if keeps_disks { Teardown::Graceful } else { Teardown::Discard };
        if let Some(sandbox) = slot.take() {
            sandbox.teardown(mode).await;
        }
        result
    }

    /// Boots a prepared VM and waits for its agent. If this future is dropped part-way,
    /// whatever was started is killed and removed.
    pub async fn boot(&self, prepared: &Prepared) -> Result<Sandbox, EngineError> {
        let firmware = matches!(prepared.spec.boot, Boot::Firmware { .. });
        let mut sandbox = Sandbox { dirs: self.create_dir()?, vm: None, agent: None, firmware };
        let backend = prepared.launcher.backend();
        let vm = sandbox.vm.insert(backend.launch(&prepared.spec, &sandbox.dirs).await?);
        tracing::debug!(pid = vm.pid(), "hypervisor up");
        sandbox.agent = Some(connect_agent(&**vm, prepared.boot_timeout).await?);
        tracing::debug!("agent ready");
        Ok(sandbox)
    }

    /// Finds the kernel, builds the guest image, chooses the accelerator and assembles a
    /// validated spec.
    pub async fn prepare(&self, req: &BootRequest) -> Result<Prepared, EngineError> {
        let home = self.home.clone();
        let kernel_flag = req.kernel.clone();
        // A cloud image boots its own kernel: ours is only the KVM probe's, and the seed replaces
        // the initramfs.
        let cloud = req.cloud.clone().map(|c| (c, req.volumes.clone()));
        let (kernel, initrd) = tokio::task::spawn_blocking(move || -> Result<_, EngineError> {
            let kernel = nestbox_kernel::resolve(kernel_flag.as_deref(), home.root())?;
            if let Some((cloud, volumes)) = cloud {
                crate::cloud::write_seed(&cloud.seed, &volumes)?;
                return Ok((kernel, None));
            }
            let inputs = ImageInputs {
                agent: agent_binary::AGENT,
                busybox: None,
                modules_dir: kernel.modules_dir.as_deref(),
                modules: DEFAULT_MODULES,
            };
            let image = nestbox_initramfs::build_default(&inputs, &home.initramfs_cache())?;
            Ok((kernel, Some(image.path)))
        })
        .await
        .map_err(|e| EngineError::Io { context: "preparing the guest".into(), source: std::io::Error::other(e) })??;
        let kernel_info = kernel.clone();
        let spec = match (&req.cloud, initrd) {
            (Some(cloud), _) => {
                let firmware = crate::cloud::firmware(req.hypervisor, cloud.firmware.as_deref())?;
                firmware_boot_spec(req, firmware, &cloud.seed.path)
            }
            (None, initrd) => direct_boot_spec(req, kernel.vmlinux, initrd.expect("built for a direct boot")),
        };
        spec.validate()?;
        let binary = doctor::require_binary(req.hypervisor, req.hypervisor_binary.as_deref())?;
        let (accel, launcher) = match req.hypervisor {
            BackendKind::Qemu => {
                if req.accel == AccelChoice::Auto
                    && let Some(notify) = &self.notify
                    && !accel::probe_is_cached(&self.home.cache(), &binary, &kernel_info)
                {
                    notify("checking whether KVM can boot a guest here (once per host boot; up to 10 s)");
                }
                let accel = accel::choose(req.accel, &self.home.cache(), &binary, &kernel_info).await?;
                let mut config = QemuConfig::new(accel.accel)?;
                config.binary = binary;
                (accel, Launcher::Qemu(config))
            }
            BackendKind::Firecracker => {
                require_kvm(req.hypervisor)?;
                let transport = match firecracker_transport(&kernel_info) {
                    Some(VirtioTransport::Pci) => Transport::Pci,
                    _ => Transport::Mmio,
                };
                let accel = AccelDecision { accel: Accel::Kvm, note: None };
                (accel, Launcher::Firecracker(FirecrackerConfig::with_binary(binary, transport)))
            }
            BackendKind::CloudHypervisor => {
                require_kvm(req.hypervisor)?;
                let accel = AccelDecision { accel: Accel::Kvm, note: None };
                (accel, Launcher::CloudHypervisor(ChvConfig::with_binary(binary)))
            }
            kind => {
                return Err(BackendError::Unsupported { backend: kind, op: nestbox_backend::Operation::Launch }.into());
            }
        };
        tracing::debug!(accel = %accel.accel, hypervisor = %req.hypervisor, "prepared");
        Ok(Prepared { spec, accel, boot_timeout: req.boot_timeout, launcher })
    }

    fn create_dir(&self) -> Result<VmDirs, EngineError> {
        let parent = self.home.ephemeral();
        std::fs::create_dir_all(&parent).map_err(EngineError::io(format!("cannot create {}", parent.display())))?;
        let id = ids::new_id().map_err(EngineError::io("cannot read /dev/urandom"))?;
        let dirs = VmDirs::new(parent.join(id));
        for socket in [dirs.api_socket(), dirs.agent_socket()] {
            let len = socket.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(EngineError::SocketPathTooLong { path: socket, len, max: MAX_SOCKET_PATH });
            }
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dirs.root())
            .map_err(EngineError::io(format!("cannot create {}", dirs.root().display())))?;
        Ok(dirs)
    }
}

/// A VM booted by our kernel and initramfs, which switches to the root disk when there is one
/// and mounts the volumes the command line names.
fn direct_boot_spec(req: &BootRequest, kernel: PathBuf, initrd: PathBuf) -> VmSpec {
    let mut cmdline = DEFAULT_CMDLINE.to_owned();
    for arg in &req.kernel_args {
        cmdline.push(' ');
        cmdline.push_str(arg);
    }
    let mut devices = Vec::new();
    if let Some(disk) = &req.root_disk {
        devices.push(Device::VirtioBlk { id: ROOT_DISK_ID.into(), path: disk.clone(), readonly: false });
        cmdline.push_str(" nestbox.root=/dev/vda");
    }
    // Disks appear in the guest in device order: vda (the root, when there is one), vdb, …
    for (i, volume) in req.volumes.iter().enumerate() {
        let letter = char::from(b'a' + u8::try_from(devices.len()).unwrap_or(25).min(25));
        devices.push(Device::VirtioBlk { id: format!("vol{i}"), path: volume.path.clone(), readonly: volume.readonly });
        let mode = if volume.readonly { "ro" } else { "rw" };
        cmdline.push_str(&format!(" nestbox.volume=/dev/vd{letter}:{}:{mode}", volume.guest_path));
    }
    VmSpec {
        vcpus: req.vcpus,
        memory_mib: req.memory_mib,
        boot: Boot::Linux { kernel, initrd: Some(initrd), cmdline },
        devices,
    }
}

/// A cloud image booted by `firmware`: the root disk, the seed, then the volumes (cloud-init
/// mounts them by their serials, `vol0`, `vol1`, …).
fn firmware_boot_spec(req: &BootRequest, firmware: PathBuf, seed: &std::path::Path) -> VmSpec {
    let mut devices = Vec::new();
    if let Some(disk) = &req.root_disk {
        devices.push(Device::VirtioBlk { id: ROOT_DISK_ID.into(), path: disk.clone(), readonly: false });
    }
    devices.push(Device::VirtioBlk { id: crate::cloud::SEED_DISK_ID.into(), path: seed.to_path_buf(), readonly: true });
    for (i, volume) in req.volumes.iter().enumerate() {
        devices.push(Device::VirtioBlk { id: format!("vol{i}"), path: volume.path.clone(), readonly: volume.readonly });
    }
    VmSpec { vcpus: req.vcpus, memory_mib: req.memory_mib, boot: Boot::Firmware { path: firmware }, devices }
}

/// The package that provides a backend's binary.
pub(crate) fn package_of(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Qemu => nestbox_backend_qemu::QEMU_PACKAGE,
        BackendKind::Firecracker => "firecracker (release binary from its project)",
        BackendKind::CloudHypervisor => "cloud-hypervisor (release binary from its project)",
        BackendKind::Vfkit => "vfkit (Homebrew)",
    }
}

/// Firecracker and Cloud Hypervisor run guests with KVM only: refuse early, and clearly,
/// where `/dev/kvm` cannot be opened.
fn require_kvm(backend: BackendKind) -> Result<(), EngineError> {
    accel::open_kvm().map_err(|e| EngineError::KvmUnusable { reason: format!("{backend} needs KVM: {e}") })
}

/// The virtio transport Firecracker needs for `kernel`, when its build config is known.
fn firecracker_transport(kernel: &nestbox_kernel::ResolvedKernel) -> Option<VirtioTransport> {
    let version = kernel.version.as_deref()?;
    let boot = kernel.source.parent()?;
    KernelConfig::for_version(boot, version)?.firecracker_transport()
}

/// A byte stream to the guest agent, whichever transport carries it.
pub trait AgentStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AgentStream for T {}

/// Connects to the agent with the client's handshake.
async fn connect_agent(vm: &dyn VmHandle, deadline: Duration) -> Result<AgentClient, EngineError> {
    connect_agent_with(vm, deadline, |stream| async move {
        AgentClient::connect(stream).await.map(|(client, _welcome)| client).map_err(|e| e.to_string())
    })
    .await
}

/// Opens the agent's stream and runs `handshake` on it, retrying while the hypervisor creates
/// its socket and the guest boots, until `deadline`; fails early with the console tail if the VM
/// ends first.
pub(crate) async fn connect_agent_with<T, F, Fut>(
    vm: &dyn VmHandle,
    deadline: Duration,
    handshake: F,
) -> Result<T, EngineError>
where
    F: Fn(Box<dyn AgentStream>) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let endpoint = vm.agent_endpoint().clone();
    let exited = |report| EngineError::VmExited {
        report,
        crash: vm.crash_reason(),
        console: vm.console_tail(CONSOLE_TAIL_LINES),
    };
    let connect = async {
        loop {
            // A hybrid-vsock refusal only means the agent does not listen yet: retry it too.
            let stream: Option<Box<dyn AgentStream>> = match &endpoint {
                AgentEndpoint::Unix(path) => UnixStream::connect(path).await.ok().map(|s| Box::new(s) as _),
                AgentEndpoint::HybridVsock { path, port } => {
                    match nestbox_agent_client::connect_hybrid_vsock(path, *port).await {
                        Ok(stream) => Some(Box::new(stream) as _),
                        Err(e) => {
                            tracing::trace!("hybrid vsock not ready: {e}");
                            None
                        }
                    }
                }
            };
            if let Some(stream) = stream {
                match handshake(stream).await {
                    Ok(client) => return Ok(client),
                    // A VM that died takes the connection with it: report the VM, not the socket.
                    Err(e) => match tokio::time::timeout(EXIT_SETTLE, vm.wait()).await {
                        Ok(report) => return Err(exited(report)),
                        Err(_) => tracing::debug!("agent handshake failed, retrying: {e}"),
                    },
                }
            }
            tokio::time::sleep(CONNECT_RETRY).await;
        }
    };
    tokio::select! {
        r = tokio::time::timeout(deadline, connect) => match r {
            Ok(client) => client,
            Err(_) => Err(EngineError::BootTimeout { waited: deadline, console: vm.console_tail(CONSOLE_TAIL_LINES) }),
        },
        report = vm.wait() => Err(exited(report)),
    }
}

/// Pumps stdin into the command and its output out, until it exits.
pub async fn stream_exec(mut exec: nestbox_agent_client::Exec, io: RunIo) -> Result<ExitStatus, EngineError> {
    let RunIo { mut stdin, mut stdout, mut stderr } = io;
    let sink = exec.stdin();
    let pump = tokio::spawn(async move {
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.write(bytes::Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });
    let result = loop {
        match exec.try_next_event().await {
            Ok(Some(ExecEvent::Stdout(data))) => write_out(&mut stdout, &data).await,
            Ok(Some(ExecEvent::Stderr(data))) => write_out(&mut stderr, &data).await,
            Ok(Some(ExecEvent::Exited(status))) => break Ok(status),
            Ok(Some(_)) => {}
            // The agent's own error (a refused exec), or the connection's end, as it is.
            Ok(None) => break Err(EngineError::Agent(nestbox_agent_client::ClientError::Closed)),
            Err(e) => break Err(EngineError::Agent(e)),
        }
    };
    pump.abort();
    result
}

/// Writes and flushes one chunk; a closed reader (e.g. `| head`) is not the command's problem.
async fn write_out(out: &mut Pin<Box<dyn AsyncWrite + Send>>, data: &[u8]) {
    if out.write_all(data).await.is_ok() {
        let _ = out.flush().await;
    }
}

/// A booted VM with a ready agent, and its directory; torn down exactly once.
#[derive(Debug)]
pub struct Sandbox {
    dirs: VmDirs,
    vm: Option<Box<dyn VmHandle>>,
    agent: Option<AgentClient>,
    /// Booted by firmware (a cloud image): its own init powers it off, on the ACPI button.
    firmware: bool,
}

impl Sandbox {
    /// The VM's directory.
    pub fn dirs(&self) -> &VmDirs {
        &self.dirs
    }

    /// The guest agent.
    pub fn agent(&self) -> &AgentClient {
        self.agent.as_ref().expect("a booted sandbox has an agent")
    }

    /// The running VM.
    pub fn vm(&self) -> &dyn VmHandle {
        &**self.vm.as_ref().expect("a booted sandbox has a VM")
    }

    /// Runs one command with `io` and returns how it ended.
    pub async fn run_command(&self, req: &RunRequest, io: RunIo) -> Result<RunOutcome, EngineError> {
        let vm = self.vm();
        let exec = self
            .agent()
            .exec(ExecRequest {
                argv: req.argv.clone(),
                env: req.env.clone(),
                cwd: req.workdir.clone(),
                stdin: true,
                timeout: req.timeout,
                tty: None,
                user: None,
            })
            .await?;
        let status = tokio::select! {
            status = stream_exec(exec, io) => status?,
            report = vm.wait() => {
                return Err(EngineError::VmExited { report, crash: vm.crash_reason(), console: vm.console_tail(CONSOLE_TAIL_LINES) });
            }
        };
        tracing::debug!(?status, "command ended");
        let exit_code = if status.timed_out { 124 } else { status.shell_code() };
        Ok(RunOutcome { status, exit_code })
    }

    /// Stops the VM and removes its directory.
    pub async fn teardown(mut self, mode: Teardown) {
        if let Some(vm) = self.vm.take() {
            if tracing::enabled!(tracing::Level::TRACE) {
                for line in vm.console_tail(CONSOLE_TAIL_LINES) {
                    tracing::trace!("console: {line}");
                }
            }
            let powered_off = match (mode, self.agent.take()) {
                (Teardown::Graceful, _) if self.firmware => vm.shutdown(POWEROFF_GRACE).await.success(),
                (Teardown::Graceful, Some(agent)) => {
                    agent.poweroff().await.is_ok() && tokio::time::timeout(POWEROFF_GRACE, vm.wait()).await.is_ok()
                }
                _ => false,
            };
            tracing::debug!(?mode, powered_off, "guest stopped");
            if !powered_off {
                vm.kill();
                vm.wait().await;
            }
        }
        if let Err(e) = std::fs::remove_dir_all(self.dirs.root())
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", self.dirs.root().display());
        }
    }
}

/// How a sandbox is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teardown {
    /// Ask the guest to power off (it syncs and stops its processes); force it after a grace
    /// period.
    Graceful,
    /// Kill the hypervisor at once: for a VM whose state is thrown away anyway (`run`, a
    /// failed or cancelled boot).
    Discard,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Only does anything when `teardown` was not reached (a cancelled boot).
        if let Some(vm) = self.vm.take() {
            vm.kill();
        }
        let _ = std::fs::remove_dir_all(self.dirs.root());
    }
}
