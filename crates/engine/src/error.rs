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
    /// `--disk-size` is smaller than the image.
    #[error("invalid value for --disk-size: {} MiB is smaller than the image ({} MiB)", size >> 20, image.div_ceil(1 << 20))]
    DiskTooSmall {
        /// The size asked for, bytes.
        size: u64,
        /// The image's size, bytes.
        image: u64,
    },
    /// No UEFI firmware was found to boot a cloud image with.
    #[error(
        "no UEFI firmware for {hypervisor} to boot the cloud image (looked for {}): {}",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        if *hypervisor == nestbox_backend::BackendKind::Qemu { "install the ovmf package, or pass --firmware PATH" } else { "pass --firmware PATH" }
    )]
    FirmwareNotFound {
        /// The hypervisor.
        hypervisor: nestbox_backend::BackendKind,
        /// Where it was looked for.
        searched: Vec<PathBuf>,
    },
    /// `--firmware` names no file.
    #[error("invalid value for --firmware: {} is not a file", path.display())]
    FirmwareMissing {
        /// What was given.
        path: PathBuf,
    },
    /// An `--ssh-key` is neither a public key nor a file of them.
    #[error("invalid value for --ssh-key {value:?}: {reason}")]
    SshKey {
        /// What was given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A cloud-init seed could not be written.
    #[error(transparent)]
    Seed(#[from] nestbox_seed::SeedError),
    /// A disk image cannot be imported as a cloud image.
    #[error("cannot import {path} as a cloud image: {reason}")]
    CloudImage {
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// A root filesystem image could not be built.
    #[error(transparent)]
    Rootfs(#[from] nestbox_image::ext4::Ext4Error),
    /// An image source could not be read or unpacked.
    #[error(transparent)]
    ImageSource(#[from] nestbox_image::SourceError),
    /// A registry pull failed.
    #[error(transparent)]
    Registry(#[from] nestbox_image::registry::RegistryError),
    /// The image store refused or failed.
    #[error(transparent)]
    ImageStore(#[from] nestbox_image::store::StoreError),
    /// The sandbox index could not be opened.
    #[error(transparent)]
    StoreOpen(#[from] nestbox_store::OpenError),
    /// A sandbox record operation failed (a name taken, a state changed under us, an illegal move).
    #[error(transparent)]
    Store(#[from] nestbox_store::SandboxError),
    /// `SB` names no sandbox, or several.
    #[error(transparent)]
    Resolve(#[from] nestbox_store::ResolveError),
    /// Another operation held the sandbox's lock too long.
    #[error(transparent)]
    Lock(#[from] nestbox_store::LockError),
    /// A sandbox name was refused.
    #[error(transparent)]
    Name(#[from] nestbox_store::NameError),
    /// The move between states is illegal (`pause` on a stopped sandbox).
    #[error(transparent)]
    Transition(#[from] nestbox_store::TransitionError),
    /// `SB` can be neither a name nor an id.
    #[error("invalid sandbox reference {input:?}: {reason}")]
    BadReference {
        /// What was typed.
        input: String,
        /// Why it is refused.
        reason: String,
    },
    /// The sandbox is not in a state that allows the operation.
    #[error("cannot {verb} sandbox {id}: it is {state}")]
    InvalidState {
        /// The sandbox.
        id: String,
        /// The operation.
        verb: &'static str,
        /// Its state.
        state: String,
    },
    /// The sandbox did not come up.
    #[error("sandbox {id} failed to start: {reason}")]
    StartFailed {
        /// The sandbox.
        id: String,
        /// Why, as its shim recorded it.
        reason: String,
    },
    /// The sandbox's shim failed a request or could not be reached.
    #[error("sandbox {id}: {reason}")]
    Shim {
        /// The sandbox.
        id: String,
        /// What went wrong.
        reason: String,
    },
    /// No snapshot has this name or id prefix.
    #[error("no snapshot {input:?}")]
    NoSnapshot {
        /// What was looked up.
        input: String,
    },
    /// A snapshot id prefix matches several.
    #[error("snapshot id prefix {input:?} is ambiguous: it matches {}", candidates.join(", "))]
    AmbiguousSnapshot {
        /// The prefix.
        input: String,
        /// The matching ids.
        candidates: Vec<String>,
    },
    /// A snapshot name is taken.
    #[error("invalid value for --name: a snapshot named {name:?} exists")]
    SnapshotName {
        /// The name.
        name: String,
    },
    /// A snapshot cannot be restored here.
    #[error("snapshot {id} cannot be restored here: {reason}")]
    SnapshotUnusable {
        /// The snapshot.
        id: String,
        /// Why.
        reason: String,
    },
    /// A snapshot's manifest, files or archive failed.
    #[error(transparent)]
    Snapshot(#[from] nestbox_snapshot::SnapshotError),
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
