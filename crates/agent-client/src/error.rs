//! The client's error type.

use nestbox_agent_protocol::{ErrorCode, ProtocolError};
use thiserror::Error;

/// Errors from [`crate::AgentClient`] and [`crate::Exec`].
#[derive(Debug, Error)]
pub enum ClientError {
    /// Reading or writing the connection failed.
    #[error("agent connection i/o failed")]
    Io(#[from] std::io::Error),
    /// The agent sent bytes that are not a valid frame.
    #[error("agent sent an invalid frame")]
    Protocol(#[from] ProtocolError),
    /// The connection ended (or its tasks stopped) before the operation finished.
    #[error("agent connection closed")]
    Closed,
    /// The agent answered with an `error` message.
    #[error("agent refused the request ({code:?}): {message}")]
    Agent {
        /// The agent's error kind.
        code: ErrorCode,
        /// The agent's explanation.
        message: String,
    },
    /// The request needs a newer protocol version than the agent speaks; nothing was sent.
    #[error("{feature} needs agent protocol version {needed}, the agent speaks {agent}")]
    Unsupported {
        /// What the request used: `tty`, `user` or `exec.resize`.
        feature: &'static str,
        /// The protocol version it needs.
        needed: u16,
        /// The version the agent chose.
        agent: u16,
    },
    /// A resize for an exec started without a terminal; nothing was sent.
    #[error("exec has no tty to resize")]
    NoTty,
    /// The agent sent a message that makes no sense at this point.
    #[error("unexpected {name} on stream {stream}")]
    UnexpectedMessage {
        /// The stream it arrived on.
        stream: u32,
        /// Its wire name.
        name: &'static str,
    },
}
