//! A typed QMP client: QEMU's machine protocol over the VM's control socket.
//!
//! Commands go out as the `qapi` crate's generated types (checked against QEMU's schema at
//! compile time, and against the checked-in `query-qmp-schema` dump in tests). Every call has
//! a deadline; nothing is retried.

use std::path::Path;
use std::time::Duration;

use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp;
use tokio::io::WriteHalf;
use tokio::net::UnixStream;

/// How long one QMP command may take.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(5);

/// The QMP commands this client sends, for the schema contract test.
pub const COMMANDS_USED: &[&str] = &[
    "qmp_capabilities",
    "query-status",
    "stop",
    "cont",
    "system_powerdown",
    "quit",
    "migrate-set-capabilities",
    "migrate",
    "migrate-incoming",
    "query-migrate",
];

/// How a migration stands, from `query-migrate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationState {
    /// Not started, or still running.
    InProgress,
    /// Done.
    Completed,
    /// Failed or cancelled, with QEMU's reason.
    Failed(String),
}

/// A QMP failure.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be reached or the greeting failed.
    #[error("cannot connect to QMP at {path}")]
    Connect {
        /// The socket.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU answered with an error; its text is kept.
    #[error("{command}: {message}")]
    Command {
        /// The command sent.
        command: &'static str,
        /// QEMU's `desc`.
        message: String,
    },
    /// The connection failed during a command.
    #[error("{command}: {source}")]
    Io {
        /// The command sent.
        command: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No answer within [`QMP_TIMEOUT`].
    #[error("{command}: no answer within {timeout:?}")]
    Timeout {
        /// The command sent.
        command: &'static str,
        /// The deadline.
        timeout: Duration,
    },
}

/// QEMU's run state, as far as nestbox cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Running guest code.
    Running,
    /// Stopped by the host (or not started yet).
    Paused,
    /// Waiting for incoming migration.
    Inmigrate,
    /// The guest shut down (QEMU stays up with `-no-shutdown`).
    Shutdown,
    /// Any other state, named as QEMU names it.
    Other(&'static str),
}

type Writer = QmpStreamTokio<WriteHalf<UnixStream>>;

/// A connected, negotiated QMP session.
pub struct QmpClient {
    service: QapiService<Writer>,
    events: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for QmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpClient").finish_non_exhaustive()
    }
}

impl Drop for QmpClient {
    fn drop(&mut self) {
        self.events.abort();
    }
}

impl QmpClient {
    /// Connects to `path`, reads the greeting and negotiates capabilities.
    pub async fn connect(path: &Path) -> Result<Self, QmpError> {
        let connect = async {
            let negotiation = QmpStreamTokio::open_uds(path).await?;
            negotiation.negotiate().await
        };
        let stream = match tokio::time::timeout(QMP_TIMEOUT, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(QmpError::Connect { path: path.display().to_string(), source });
            }
            Err(_) => {
                return Err(QmpError::Timeout { command: "qmp_capabilities", timeout: QMP_TIMEOUT });
            }
        };
        let (service, events) = stream.spawn_tokio();
        Ok(Self { service, events })
    }

    async fn run<C>(&self, name: &'static str, command: C) -> Result<C::Ok, QmpError>
    where
        C: qapi::Command,
        Writer: futures::Sink<qapi::Execute<C, u32>, Error = std::io::Error> + Unpin,
    {
        match tokio::time::timeout(QMP_TIMEOUT, self.service.execute(command)).await {
            Ok(Ok(ok)) => Ok(ok),
            Ok(Err(qapi::ExecuteError::Qapi(e))) => Err(QmpError::Command { command: name, message: e.desc }),
            Ok(Err(qapi::ExecuteError::Io(source))) => Err(QmpError::Io { command: name, source }),
            Err(_) => Err(QmpError::Timeout { command: name, timeout: QMP_TIMEOUT }),
        }
    }

    /// `query-status`.
    pub async fn status(&self) -> Result<RunStatus, QmpError> {
        let info = self.run("query-status", qmp::query_status {}).await?;
        Ok(match info.status {
            qmp::RunState::running => RunStatus::Running,
            // After a completed outgoing migration (a snapshot) the VM is stopped and `cont` runs it.
            qmp::RunState::paused | qmp::RunState::prelaunch | qmp::RunState::postmigrate => RunStatus::Paused,
            qmp::RunState::inmigrate => RunStatus::Inmigrate,
            qmp::RunState::shutdown => RunStatus::Shutdown,
            other => RunStatus::Other(run_state_name(other)),
        })
    }

    /// `stop`: pauses the vCPUs.
    pub async fn stop(&self) -> Result<(), QmpError> {
        self.run("stop", qmp::stop {}).await.map(drop)
    }

    /// `cont`: resumes the vCPUs.
    pub async fn cont(&self) -> Result<(), QmpError> {
        self.run("cont", qmp::cont {}).await.map(drop)
    }

    /// `system_powerdown`: presses the ACPI power button.
    pub async fn system_powerdown(&self) -> Result<(), QmpError> {
        self.run("system_powerdown", qmp::system_powerdown {}).await.map(drop)
    }

    /// `migrate-set-capabilities` with `x-ignore-shared`: RAM in shared memory backend files is
    /// left out of the stream (the file is the memory).
    pub async fn set_ignore_shared(&self, on: bool) -> Result<(), QmpError> {
        let capabilities =
            vec![qmp::MigrationCapabilityStatus { capability: qmp::MigrationCapability::x_ignore_shared, state: on }];
        self.run("migrate-set-capabilities", qmp::migrate_set_capabilities { capabilities }).await.map(drop)
    }

    /// `migrate` to `uri` (e.g. `exec:cat > FILE`); returns once started.
    pub async fn migrate(&self, uri: &str) -> Result<(), QmpError> {
        let command = qmp::migrate { uri: Some(uri.to_owned()), channels: None, detach: None, resume: None };
        self.run("migrate", command).await.map(drop)
    }

    /// `migrate-incoming` from `uri` on a QEMU started with `-incoming defer`.
    pub async fn migrate_incoming(&self, uri: &str) -> Result<(), QmpError> {
        let command = qmp::migrate_incoming { uri: Some(uri.to_owned()), channels: None, exit_on_error: None };
        self.run("migrate-incoming", command).await.map(drop)
    }

    /// `query-migrate`.
    pub async fn migration(&self) -> Result<MigrationState, QmpError> {
        let info = self.run("query-migrate", qmp::query_migrate {}).await?;
        Ok(match info.status {
            Some(qmp::MigrationStatus::completed) => MigrationState::Completed,
            Some(qmp::MigrationStatus::failed | qmp::MigrationStatus::cancelled) => {
                MigrationState::Failed(info.error_desc.unwrap_or_else(|| "no reason given".into()))
            }
            _ => MigrationState::InProgress,
        })
    }

    /// `quit`: QEMU exits at once.
    pub async fn quit(&self) -> Result<(), QmpError> {
        self.run("quit", qmp::quit {}).await.map(drop)
    }
}

fn run_state_name(state: qmp::RunState) -> &'static str {
    match state {
        qmp::RunState::debug => "debug",
        qmp::RunState::finish_migrate => "finish-migrate",
        qmp::RunState::internal_error => "internal-error",
        qmp::RunState::io_error => "io-error",
        qmp::RunState::postmigrate => "postmigrate",
        qmp::RunState::restore_vm => "restore-vm",
        qmp::RunState::save_vm => "save-vm",
        qmp::RunState::suspended => "suspended",
        qmp::RunState::watchdog => "watchdog",
        qmp::RunState::guest_panicked => "guest-panicked",
        qmp::RunState::colo => "colo",
        _ => "unknown",
    }
}
