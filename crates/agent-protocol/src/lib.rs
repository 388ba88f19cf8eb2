//! The host↔guest agent protocol: frames, messages and their CBOR encoding.
//!
//! This crate is the single contract between `nestbox-agent` (in the guest) and
//! `nestbox-agent-client` (on the host). It does no I/O beyond the blocking
//! [`read_frame`] / [`write_frame`] helpers over `std::io`. See `PROTOCOL.md`.
#![warn(missing_docs)]

mod codec;
mod message;

pub use codec::{
    FRAME_HEADER_LEN, MAX_CHUNK, MAX_FRAME_SIZE, ProtocolError, decode, encode, encode_checked, read_frame, write_frame,
};
pub use message::{
    CONTROL_STREAM, ErrorCode, ErrorMessage, ExecStart, Exited, Hello, MIN_PROTOCOL_VERSION, Message, PROTOCOL_VERSION,
    TtySize, Welcome,
};
