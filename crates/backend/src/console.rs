//! The guest's serial console, live ([`Console`]): what the guest writes to it from now on, and
//! a way to type into it ([`ConsoleInput`]). History is not here: it is in the VM's bounded
//! `console.log` (and `VmHandle::console_tail`).
//!
//! Every backend puts the serial port on the hypervisor's stdio, so [`Console::from_stdio`]
//! builds one from the supervised process: output is its stdout as the supervisor reads it,
//! input is its stdin.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use nestbox_supervise::{StdinWriter, Stream, Supervised};
use tokio::sync::broadcast;

/// Keystrokes for the guest's serial port.
#[async_trait]
pub trait ConsoleInput: Send + Sync + std::fmt::Debug {
    /// Sends all of `data` to the guest's serial port. Concurrent writes are not interleaved.
    /// Waits while the hypervisor takes no input (the guest is not reading the port); fails once
    /// the hypervisor has exited.
    async fn write(&self, data: &[u8]) -> io::Result<()>;
}

#[async_trait]
impl ConsoleInput for StdinWriter {
    async fn write(&self, data: &[u8]) -> io::Result<()> {
        StdinWriter::write(self, data).await
    }
}

/// One attachment to a running guest's serial console.
#[derive(Debug)]
pub struct Console {
    /// What the guest writes to its serial console from the moment this `Console` was made,
    /// in chunks as the hypervisor writes them (not split at lines). Ends
    /// ([`RecvError::Closed`](broadcast::error::RecvError::Closed)) when the hypervisor closes
    /// its output, that is when it exits. A receiver that falls behind by more than
    /// [`nestbox_supervise::SUBSCRIBER_BACKLOG_CHUNKS`] chunks is told how many it lost
    /// ([`RecvError::Lagged`](broadcast::error::RecvError::Lagged)) and reads on; it never holds
    /// up the guest, the console log or other receivers.
    pub output: broadcast::Receiver<Bytes>,
    /// Where keystrokes go: the guest's serial port. Shared by every `Console` of the VM;
    /// `None` where the backend cannot deliver input.
    pub input: Option<Arc<dyn ConsoleInput>>,
}

impl Console {
    /// The console of a hypervisor whose guest serial port is its stdio: output subscribed from
    /// its stdout, input written to its stdin (when it was spawned with one).
    pub fn from_stdio(child: &Supervised) -> Self {
        Self {
            output: child.subscribe(Stream::Stdout),
            input: child.stdin().map(|stdin| Arc::new(stdin) as Arc<dyn ConsoleInput>),
        }
    }
}

#[cfg(test)]
mod tests {
    use nestbox_supervise::{CommandSpec, OsSpawner, Spawner};

    use super::*;

    #[tokio::test]
    async fn test_from_stdio_types_into_stdin_and_reads_stdout() {
        let child = OsSpawner.spawn(&CommandSpec::new("cat").stdin_piped()).unwrap();
        let mut console = Console::from_stdio(&child);
        console.input.as_ref().unwrap().write(b"login: root\n").await.unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"\n") {
            got.extend_from_slice(&console.output.recv().await.unwrap());
        }
        assert_eq!(got, b"login: root\n");
        child.kill();
        child.wait().await;
        assert!(console.input.unwrap().write(b"x").await.is_err());
    }

    #[tokio::test]
    async fn test_from_stdio_without_stdin_has_no_input() {
        let child = OsSpawner.spawn(&CommandSpec::new("true")).unwrap();
        let mut console = Console::from_stdio(&child);
        assert!(console.input.is_none());
        child.wait().await;
        assert!(matches!(console.output.recv().await, Err(broadcast::error::RecvError::Closed)));
    }
}
