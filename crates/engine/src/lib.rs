//! The engine: everything between a user's request and a running VM.
//!
//! It finds the kernel, builds the default guest image around the embedded agent, picks the
//! accelerator, launches the VM through a backend, talks to the guest agent and tears it all
//! down again. The CLI and (later) the daemon are thin layers over it.

pub mod accel;
pub mod agent_binary;
pub mod cloud;
pub mod disk;
pub mod doctor;
pub mod error;
pub mod guest;
pub mod home;
pub mod ids;
pub mod images;
pub mod run;
pub mod sandbox;

pub use error::EngineError;
pub use home::Home;
pub use run::{
    AgentStream, BootRequest, Launcher, Notify, Prepared, RunIo, RunOutcome, RunRequest, Runner, Sandbox, Teardown,
    Volume, stream_exec,
};
pub use sandbox::{CreateRequest, SandboxConfig, SandboxInfo, Sandboxes};
