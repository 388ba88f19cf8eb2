//! The crate's error type: what can go wrong while spawning, watching, or talking to a
//! supervised process.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::process::ExitReport;

/// `Result` with [`SuperviseError`] as the default error.
pub type Result<T, E = SuperviseError> = std::result::Result<T, E>;

/// Errors from spawning and supervising a process.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The program could not be started (not found, not executable, ...).
    #[error("cannot spawn {}", program.display())]
    Spawn {
        /// The program we tried to run.
        program: PathBuf,
        /// Why the OS refused.
        #[source]
        source: io::Error,
    },
    /// The process exited while we were waiting for it to become ready.
    #[error("process {status} before it was ready{}", format_tail(stderr_tail))]
    ProcessExited {
        /// How it exited.
        status: ExitReport,
        /// The last lines it wrote to stderr, oldest first.
        stderr_tail: Vec<String>,
    },
    /// The socket did not accept a connection before the deadline.
    #[error("socket {} not ready after {waited:?}", path.display())]
    SocketTimeout {
        /// The socket we polled.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// A log file size limit of zero bytes, which could never hold any output.
    #[error("log file {} has a size limit of zero bytes", path.display())]
    ZeroLogLimit {
        /// The log file.
        path: PathBuf,
    },
    /// An I/O operation on a path failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What we were doing, as a verb phrase ("open log file", "connect to socket").
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl SuperviseError {
    /// True when spawning failed because the program does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Renders a stderr tail as a message suffix: `: line1 | line2`, or nothing when empty.
fn format_tail(tail: &[String]) -> String {
    if tail.is_empty() { String::new() } else { format!(": {}", tail.join(" | ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_is_not_found_only_for_missing_program() {
        let missing =
            SuperviseError::Spawn { program: "/nope".into(), source: io::Error::from(io::ErrorKind::NotFound) };
        let denied =
            SuperviseError::Spawn { program: "/nope".into(), source: io::Error::from(io::ErrorKind::PermissionDenied) };
        let other = SuperviseError::Io {
            action: "open log file",
            path: "/nope".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(missing.is_not_found());
        assert!(!denied.is_not_found());
        assert!(!other.is_not_found());
    }

    #[test]
    fn test_process_exited_message_includes_tail() {
        let err = SuperviseError::ProcessExited {
            status: ExitReport { code: Some(1), signal: None },
            stderr_tail: vec!["bad option".into(), "usage".into()],
        };
        assert_eq!(err.to_string(), "process exited with 1 before it was ready: bad option | usage");
        let quiet =
            SuperviseError::ProcessExited { status: ExitReport { code: None, signal: Some(9) }, stderr_tail: vec![] };
        assert_eq!(quiet.to_string(), "process killed by SIGKILL before it was ready");
    }
}
