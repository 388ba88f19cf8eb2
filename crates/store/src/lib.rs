//! The sandbox index: a SQLite store (WAL, one writer per process, versioned migrations), the
//! sandbox life-cycle rules, name/id resolution, and per-sandbox cross-process locks.
#![warn(missing_docs)]

pub mod db;
pub mod lock;
pub mod migrations;
pub mod resolve;
pub mod sandbox;
pub mod state;

pub use db::{DEFAULT_BUSY_TIMEOUT_MS, OpenError, Store, StoreOptions};
pub use lock::{DEFAULT_LOCK_TIMEOUT_MS, LockError, SandboxLock, lock_path};
pub use migrations::MigrationError;
pub use resolve::ResolveError;
pub use sandbox::{
    IdError, LabelError, ListFilter, ListScope, MAX_NAME_LEN, NameError, NewSandbox, Sandbox, SandboxError, SandboxId,
    SandboxName, ShimProcess, parse_label,
};
pub use state::{SandboxState, TransitionError, transition};
