//! Async host side of the agent protocol: one connection to a guest agent,
//! multiplexing many concurrent execs over numbered streams.
//!
//! [`AgentClient::connect`] performs the `hello`/`welcome` handshake and starts
//! a background task that demultiplexes frames by stream into bounded per-exec
//! channels (a consumer that stops reading stops the connection: backpressure
//! reaches the agent). A single writer task owns the write half.
//!
//! [`connect_hybrid_vsock`] opens the byte stream to a guest agent behind a Firecracker or
//! Cloud Hypervisor hybrid vsock socket.
#![warn(missing_docs)]

mod client;
mod error;
mod framing;
mod transport;

pub use client::{AgentClient, Exec, ExecEvent, ExecOutput, ExecRequest, ExecStdin, ExitStatus};
pub use error::ClientError;
pub use framing::{read_frame, write_frame};
pub use nestbox_agent_protocol::{ErrorCode, TtySize, Welcome};
pub use transport::{HANDSHAKE_TIMEOUT, HybridVsockStream, MAX_REPLY_LINE, TransportError, connect_hybrid_vsock};
