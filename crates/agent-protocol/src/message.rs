//! Message types: one serde enum whose dotted tags are the stable wire names.
//!
//! Names and field names are frozen per protocol version by
//! `tests/schema_snapshot.rs`; never rename them, add new messages instead.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The newest protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 2;

/// The oldest protocol version this crate still speaks: every v1 frame decodes into these types,
/// and a message using nothing newer encodes to its v1 bytes.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// The control stream: `hello`, `welcome`, `guest.poweroff` and connection-level errors.
pub const CONTROL_STREAM: u32 = 0;

/// `hello`: the host's opening message on stream 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Lowest protocol version the host accepts.
    pub min_version: u16,
    /// Highest protocol version the host accepts.
    pub max_version: u16,
    /// Free-form client name, for logs.
    pub client: String,
}

/// `welcome`: the agent's answer to `hello`, with the chosen version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The negotiated protocol version.
    pub version: u16,
    /// The agent's crate version.
    pub agent_version: String,
    /// `uname -r` of the guest kernel.
    pub kernel_release: String,
}

/// The size of a terminal in character cells (`struct winsize` without the pixel fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TtySize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// `exec.start`: run a command on a fresh stream.
///
/// Fields added after version 1 are `Option`s left out of the encoding when absent, so a v1
/// frame decodes and a request using none of them encodes to its v1 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStart {
    /// Program and arguments; `argv[0]` is looked up in the child's `PATH`.
    pub argv: Vec<String>,
    /// Variables set on top of the agent's default environment, in order.
    pub env: Vec<(String, String)>,
    /// Working directory; the agent's own (`/`) when absent.
    pub cwd: Option<String>,
    /// Whether stdin is a pipe fed by `exec.stdin` (otherwise `/dev/null`).
    pub stdin: bool,
    /// Kill the process group with SIGKILL after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// Since v2: run on a fresh pseudo-terminal of this size (stdin, stdout and stderr all
    /// the terminal; its output comes back as `exec.stdout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySize>,
    /// Since v2: run as this user: `uid`, `uid:gid`, `name` or `name:group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `exec.exited`: how the command ended; always the last message of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exited {
    /// Exit code, when the process exited normally.
    pub code: Option<i32>,
    /// Signal number, when the process was killed by a signal.
    pub signal: Option<i32>,
    /// Whether the agent killed it because `timeout_ms` expired.
    pub timed_out: bool,
}

/// Machine-readable error kinds carried by `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message was malformed or not allowed here.
    BadRequest,
    /// `hello` asked for versions the agent does not speak.
    UnsupportedVersion,
    /// The stream does not name a running exec.
    UnknownStream,
    /// The agent could not start the process (not a missing command: that exits 127).
    SpawnFailed,
    /// An agent-side failure that is not the request's fault.
    Internal,
}

/// `error`: a request failed; on an exec stream it ends that stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// What kind of failure.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

/// Every message of the protocol, tagged by its stable dotted name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Message {
    /// host→guest, stream 0: open a session.
    #[serde(rename = "hello")]
    Hello(Hello),
    /// guest→host, stream 0: session accepted.
    #[serde(rename = "welcome")]
    Welcome(Welcome),
    /// host→guest: start a process on this stream.
    #[serde(rename = "exec.start")]
    ExecStart(ExecStart),
    /// host→guest: bytes for the process's stdin.
    #[serde(rename = "exec.stdin")]
    ExecStdin {
        /// At most [`crate::MAX_CHUNK`] bytes.
        data: ByteBuf,
    },
    /// host→guest: close the process's stdin.
    #[serde(rename = "exec.stdin_close")]
    ExecStdinClose,
    /// host→guest: send a signal to the process group.
    #[serde(rename = "exec.signal")]
    ExecSignal {
        /// Linux signal number.
        signal: i32,
    },
    /// host→guest, since v2: set the terminal size of a tty exec (the process gets SIGWINCH).
    #[serde(rename = "exec.resize")]
    ExecResize(TtySize),
    /// host→guest, stream 0: sync, stop everything and power the guest off.
    #[serde(rename = "guest.poweroff")]
    GuestPoweroff,
    /// guest→host: the process is running.
    #[serde(rename = "exec.started")]
    ExecStarted {
        /// Its pid (also its process group and session id).
        pid: u32,
    },
    /// guest→host: bytes the process wrote to stdout.
    #[serde(rename = "exec.stdout")]
    ExecStdout {
        /// At most [`crate::MAX_CHUNK`] bytes.
        data: ByteBuf,
    },
    /// guest→host: bytes the process wrote to stderr.
    #[serde(rename = "exec.stderr")]
    ExecStderr {
        /// At most [`crate::MAX_CHUNK`] bytes.
        data: ByteBuf,
    },
    /// guest→host: the process ended; the last message of its stream.
    #[serde(rename = "exec.exited")]
    ExecExited(Exited),
    /// guest→host: a request failed.
    #[serde(rename = "error")]
    Error(ErrorMessage),
}

impl Message {
    /// The stable wire name of this message.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Welcome(_) => "welcome",
            Message::ExecStart(_) => "exec.start",
            Message::ExecStdin { .. } => "exec.stdin",
            Message::ExecStdinClose => "exec.stdin_close",
            Message::ExecSignal { .. } => "exec.signal",
            Message::ExecResize(_) => "exec.resize",
            Message::GuestPoweroff => "guest.poweroff",
            Message::ExecStarted { .. } => "exec.started",
            Message::ExecStdout { .. } => "exec.stdout",
            Message::ExecStderr { .. } => "exec.stderr",
            Message::ExecExited(_) => "exec.exited",
            Message::Error(_) => "error",
        }
    }

    /// The oldest protocol version in which this message, with the fields it uses, exists. A
    /// peer must not send it on a session that negotiated an older version.
    pub fn min_version(&self) -> u16 {
        match self {
            Message::ExecStart(ExecStart { tty: None, user: None, .. }) => MIN_PROTOCOL_VERSION,
            Message::ExecStart(_) | Message::ExecResize(_) => 2,
            _ => MIN_PROTOCOL_VERSION,
        }
    }

    /// Builds an `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Message {
        Message::Error(ErrorMessage { code, message: message.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_message_name_matches_serde_tag() {
        let msg = Message::ExecSignal { signal: 15 };
        let mut buf = Vec::new();
        ciborium::into_writer(&msg, &mut buf).unwrap();
        let value: ciborium::Value = ciborium::from_reader(buf.as_slice()).unwrap();
        let map = value.as_map().unwrap();
        let tag = map.iter().find(|(k, _)| k.as_text() == Some("type")).and_then(|(_, v)| v.as_text()).unwrap();
        assert_eq!(tag, msg.name());
    }

    #[test]
    fn test_min_version_marks_v2_additions() {
        let plain = ExecStart { argv: vec!["true".into()], ..ExecStart::default() };
        assert_eq!(Message::ExecStart(plain.clone()).min_version(), 1);
        let tty = ExecStart { tty: Some(TtySize { rows: 24, cols: 80 }), ..plain.clone() };
        assert_eq!(Message::ExecStart(tty).min_version(), 2);
        let user = ExecStart { user: Some("0".into()), ..plain };
        assert_eq!(Message::ExecStart(user).min_version(), 2);
        assert_eq!(Message::ExecResize(TtySize { rows: 1, cols: 1 }).min_version(), 2);
        assert_eq!(Message::GuestPoweroff.min_version(), 1);
    }
}
