//! The per-sandbox shim's two sockets, as a library the engine's shim process and its clients
//! share.
//!
//! - [`mux`]: `<sandbox dir>/agent.sock`, where any number of clients speak the agent protocol
//!   over the shim's single connection to the guest agent.
//! - [`control`]: `<sandbox dir>/control.sock`, one JSON request per connection (pause, resume,
//!   stop, kill, status, console).
//!
//! The shim process itself (booting the VM, recording its state) lives in `nestbox-engine`.

pub mod control;
pub mod mux;

pub use control::{ControlError, Handler, Reply, Request, Status};
pub use mux::{HandshakeError, Mux, handshake};
