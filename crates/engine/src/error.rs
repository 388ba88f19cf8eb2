//! What can go wrong between a request and a finished run.

use std::path::PathBuf;
use std::time::Duration;

use nestbox_backend::{BackendError, ExitReport};

/// An engine failure.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No usable kernel.
    #[error(transparent)]
    Kernel(#[from] nestbox_kernel::KernelError),
    /// The guest image could not be built.
    #[error(transparent)]
    Image(#[from] nestbox_initramfs::InitramfsError),
    /// The VM spec is invalid.
    #[error(transparent)]
    Spec(#[from] nestbox_model::SpecError),
    /// The hypervisor failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// `--accel kvm` was asked for but KVM does not run guests here.
    #[error("KVM is not usable: {reason}")]
    KvmUnusable {
        /// Why not.
        reason: String,
    },
    /// The guest agent did not answer within the boot deadline.
    #[error("the guest agent did not come up within {waited:?}; last console lines:\n{}", console.join("\n"))]
    BootTimeout {
        /// The deadline.
        waited: Duration,
        /// The last console lines.
        console: Vec<String>,
    },
    /// The VM ended before its agent answered, or while a command ran.
    #[error(
        "the VM {report}{} before the command finished; last console lines:\n{}",
        crash.as_deref().map(|c| format!(" (crashed: {c})")).unwrap_or_default(),
        console.join("\n")
    )]
    VmExited {
        /// How the hypervisor ended.
        report: ExitReport,
        /// Why, when the backend saw a crash.
        crash: Option<String>,
        /// The last console lines.
        console: Vec<String>,
    },
    /// Talking to the guest agent failed.
    #[error("guest agent: {0}")]
    Agent(#[from] nestbox_agent_client::ClientError),
    /// A signal asked us to stop.
    #[error("interrupted by signal {signal}")]
    Interrupted {
        /// The signal number.
        signal: i32,
    },
    /// A Unix socket path would exceed the kernel's limit.
    #[error("socket path {path} is too long ({len} bytes, limit {max}): use a shorter NESTBOX_HOME")]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
