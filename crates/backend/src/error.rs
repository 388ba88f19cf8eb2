//! Errors every backend returns, and how a hypervisor process ended.

use crate::{BackendKind, Operation};

/// How a hypervisor process ended: the supervisor's report, shared by every backend.
pub use nestbox_supervise::ExitReport;

/// A backend failure.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot do this at all.
    #[error("{backend} does not support {op}")]
    Unsupported {
        /// The backend.
        backend: BackendKind,
        /// What was asked.
        op: Operation,
    },
    /// The operation is not allowed in the VM's current state.
    #[error("cannot {op} a VM that is {state}")]
    InvalidState {
        /// What was asked.
        op: &'static str,
        /// The state it is in.
        state: crate::VmState,
    },
    /// The backend cannot run this spec; the reason names the backend and the field.
    #[error("{reason}")]
    Refused {
        /// The backend.
        backend: BackendKind,
        /// Which field it cannot honour, and why.
        reason: String,
    },
    /// The hypervisor binary is missing.
    #[error("{binary} not found on PATH: install the {package} package")]
    BinaryNotFound {
        /// The binary searched for.
        binary: String,
        /// The package that provides it.
        package: String,
    },
    /// The hypervisor could not be started or died while starting.
    #[error("{backend} failed to start: {reason}")]
    Launch {
        /// The backend.
        backend: BackendKind,
        /// What went wrong, with the hypervisor's own last words.
        reason: String,
    },
    /// The hypervisor's API refused or failed a request; its own text is kept.
    #[error("{backend} API {request} failed: {message}")]
    Api {
        /// The backend.
        backend: BackendKind,
        /// The request, e.g. `stop` or `PUT /actions`.
        request: String,
        /// The hypervisor's error text.
        message: String,
    },
    /// The hypervisor process has ended.
    #[error("the hypervisor has exited ({0})")]
    Exited(ExitReport),
    /// A filesystem or socket error.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
