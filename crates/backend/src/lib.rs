//! The backend contract: one narrow trait that every hypervisor driver implements.
//!
//! A [`Backend`] launches a [`VmSpec`] into a running VM and returns a [`VmHandle`] that
//! pauses, resumes, reports state and shuts the VM down. What a backend can do is data
//! ([`Capabilities`]); asking for anything else is [`BackendError::Unsupported`], naming the
//! backend and the operation — never a panic or a silent no-op. A running VM's serial console
//! is reached live through [`VmHandle::console`].

mod capabilities;
mod console;
mod copy;
mod dirs;
mod error;
mod snapshot;

use std::time::Duration;

use async_trait::async_trait;
pub use capabilities::{BackendKind, Capabilities, Operation};
pub use console::{Console, ConsoleInput};
pub use copy::{CopyKind, copy_file};
pub use dirs::VmDirs;
pub use error::{BackendError, ExitReport};
use nestbox_model::VmSpec;
pub use snapshot::{RestoreMode, RestoreSource, SnapshotFiles};

/// The guest vsock port the agent listens on where the agent is reached over vsock
/// (Firecracker, Cloud Hypervisor); the guest learns it from `nestbox.agent=vsock:<port>`.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// The guest CID given to the agent's vsock device.
pub const AGENT_VSOCK_CID: u32 = 3;

/// Where the host reaches the guest agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEndpoint {
    /// A Unix stream socket that carries the agent's byte stream directly (QEMU's
    /// virtio-serial chardev).
    Unix(std::path::PathBuf),
    /// Hybrid vsock (Firecracker, Cloud Hypervisor): connect, send `CONNECT <port>\n`, read `OK`.
    HybridVsock {
        /// The hypervisor's vsock Unix socket.
        path: std::path::PathBuf,
        /// The guest port the agent listens on.
        port: u32,
    },
}

/// The state of a VM as the hypervisor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Created, not yet running guest code.
    Created,
    /// Running guest code.
    Running,
    /// Paused by the host.
    Paused,
    /// The hypervisor process has ended.
    Exited,
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmState::Created => "created",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Exited => "exited",
        })
    }
}

/// A hypervisor driver.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Which hypervisor this is.
    fn kind(&self) -> BackendKind;
    /// What this backend can do, as data.
    fn capabilities(&self) -> &Capabilities;
    /// Checks `spec` against the capabilities before anything is launched.
    fn check(&self, spec: &VmSpec) -> Result<(), BackendError> {
        self.capabilities().check(self.kind(), spec)
    }
    /// Starts the hypervisor for `spec`, with its sockets and logs under `dirs`, and boots it.
    async fn launch(&self, spec: &VmSpec, dirs: &VmDirs) -> Result<Box<dyn VmHandle>, BackendError>;
    /// Starts the hypervisor for `spec` and loads the snapshot `from` into it; the VM is left
    /// paused. A backend that cannot, or cannot in `from.mode`, says `Unsupported`.
    async fn restore(
        &self,
        spec: &VmSpec,
        dirs: &VmDirs,
        from: &RestoreSource,
    ) -> Result<Box<dyn VmHandle>, BackendError> {
        let _ = (spec, dirs);
        Err(BackendError::Unsupported { backend: self.kind(), op: from.mode.operation() })
    }
}

/// A running VM.
#[async_trait]
pub trait VmHandle: Send + Sync + std::fmt::Debug {
    /// Where the guest agent is reached.
    fn agent_endpoint(&self) -> &AgentEndpoint;
    /// The hypervisor process: every backend runs its hypervisor as one supervised child whose
    /// stdio is the guest's serial console.
    fn process(&self) -> &nestbox_supervise::Supervised;
    /// The hypervisor's process id.
    fn pid(&self) -> u32 {
        self.process().pid()
    }
    /// Pauses the vCPUs of a running VM; any other state is `InvalidState`. The state rule
    /// lives here, once; backends implement [`VmHandle::pause_vcpus`].
    async fn pause(&self) -> Result<(), BackendError> {
        match self.state().await? {
            VmState::Running => self.pause_vcpus().await,
            state => Err(BackendError::InvalidState { op: "pause", state }),
        }
    }
    /// Resumes a paused VM; any other state is `InvalidState`.
    async fn resume(&self) -> Result<(), BackendError> {
        match self.state().await? {
            VmState::Paused => self.resume_vcpus().await,
            state => Err(BackendError::InvalidState { op: "resume", state }),
        }
    }
    /// The hypervisor's own pause call, without the state check.
    async fn pause_vcpus(&self) -> Result<(), BackendError>;
    /// The hypervisor's own resume call, without the state check.
    async fn resume_vcpus(&self) -> Result<(), BackendError>;
    /// Asks the hypervisor for the VM's state.
    async fn state(&self) -> Result<VmState, BackendError>;
    /// Shuts down: graceful (ACPI power button or guest request) for up to `grace`, then forced.
    async fn shutdown(&self, grace: Duration) -> ExitReport;
    /// Kills the hypervisor at once.
    fn kill(&self);
    /// Waits for the hypervisor process to end.
    async fn wait(&self) -> ExitReport;
    /// Returns immediately with the exit report if the hypervisor has ended.
    fn try_wait(&self) -> Option<ExitReport> {
        self.process().try_wait()
    }
    /// The last `lines` lines of the guest console.
    fn console_tail(&self, lines: usize) -> Vec<String> {
        self.process().log_tail(nestbox_supervise::Stream::Stdout, lines)
    }
    /// The guest's serial console, live: a new subscription to what the guest writes to it from
    /// now on (what came before is in `console.log` and [`console_tail`](Self::console_tail)),
    /// and the way to type into its serial port. Each call is an independent subscription: one
    /// per attached client: the hypervisor's stdout, and its stdin for keystrokes.
    fn console(&self) -> Option<Console> {
        Some(Console::from_stdio(self.process()))
    }
    /// Pauses the VM (if running) and writes a snapshot of its memory and device state into the
    /// directory `dest`; the VM stays paused. Disks are the caller's to copy while it is.
    async fn snapshot(&self, dest: &std::path::Path) -> Result<SnapshotFiles, BackendError> {
        let _ = dest;
        Err(BackendError::Unsupported { backend: self.backend_kind(), op: Operation::Snapshot })
    }
    /// Which backend runs this VM (for errors).
    fn backend_kind(&self) -> BackendKind;
    /// Once the hypervisor has ended: why, when it crashed — also when it exited 0 after a
    /// vCPU error, which its exit status alone does not tell. `None` while it runs, after a
    /// clean exit, or where the backend cannot tell.
    fn crash_reason(&self) -> Option<String> {
        None
    }
}
