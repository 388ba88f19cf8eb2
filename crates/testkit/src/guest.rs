//! A stand-in guest for the fake hypervisors: the real `nestbox-agent`, reached over hybrid
//! vsock exactly as through Firecracker or Cloud Hypervisor.
//!
//! The fakes emulate no CPU, so once their VM "boots" they listen on the vsock device's host
//! socket themselves: each connection must open with `CONNECT <port>\n`; for the agent's port the
//! relay answers `OK <n>\n` and joins the connection to a fresh `nestbox-agent --stdio` (one
//! session per connection, as a guest agent serves them); any other port is closed without a
//! reply, as Firecracker does when nothing listens. The agent then runs commands on the host:
//! this is for tests only. Enabled by `FAKE_AGENT=<path to nestbox-agent>` in the fakes' binaries.
//!
//! The guest's serial console ([`echo_serial`]): once booted, what is typed on the fake's stdin
//! comes back on its stdout, as a shell at its prompt echoes it, provided the stdin is one the
//! real hypervisor reads ([`SerialInput`]).

use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// The environment variable that names the agent binary to serve.
pub const FAKE_AGENT_ENV: &str = "FAKE_AGENT";
/// The guest port the agent listens on (nestbox's `AGENT_VSOCK_PORT`).
pub const AGENT_PORT: u32 = 1024;

/// The stand-in guest of one fake hypervisor process: started once, when the fake's VM has
/// booted with a vsock device and `FAKE_AGENT` names an agent; stopped on drop.
#[derive(Debug, Default)]
pub struct Guest {
    agent: Option<PathBuf>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Guest {
    /// A guest for the agent named by `FAKE_AGENT`, if any.
    pub fn from_env() -> Self {
        Self { agent: std::env::var_os(FAKE_AGENT_ENV).map(PathBuf::from), task: None }
    }

    /// Starts serving once `vsock` (the booted VM's vsock host socket) is known; call it on
    /// every poll. `vsock` is only computed while the guest still has to start.
    pub fn poll(&mut self, vsock: impl FnOnce() -> Option<PathBuf>) {
        let Some(agent) = &self.agent else { return };
        if self.task.is_some() {
            return;
        }
        if let Some(path) = vsock() {
            match serve_agent(&path, agent.clone()) {
                Ok(task) => self.task = Some(task),
                Err(e) => eprintln!("fake guest: cannot listen on {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Which stdin a hypervisor takes its serial port's input from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialInput {
    /// A terminal or a pipe (Firecracker: it registers stdin for reading only when it is one).
    TerminalOrPipe,
    /// A terminal only (Cloud Hypervisor's `Tty` serial mode).
    TerminalOnly,
}

/// Starts echoing stdin to stdout, on a thread of its own (a blocking read on the runtime's
/// blocking pool would hold up its shutdown), until stdin ends; returns whether it started,
/// which it does only for a stdin that `input` says the real hypervisor reads.
pub fn echo_serial(input: SerialInput) -> bool {
    let stdin = std::io::stdin();
    let pipe = std::fs::metadata("/dev/stdin").is_ok_and(|meta| meta.file_type().is_fifo());
    let readable = stdin.is_terminal() || (input == SerialInput::TerminalOrPipe && pipe);
    if readable {
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let mut stdin = stdin.lock();
            while let Ok(n @ 1..) = stdin.read(&mut buf) {
                let mut out = std::io::stdout().lock();
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        });
    }
    readable
}

/// Listens on `uds_path` and relays each agent connection to a new `agent --stdio`, until the
/// returned task is aborted.
pub fn serve_agent(uds_path: &Path, agent: PathBuf) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let _ = std::fs::remove_file(uds_path);
    let listener = UnixListener::bind(uds_path)?;
    Ok(tokio::spawn(async move {
        let mut host_port = 1u32 << 30;
        while let Ok((stream, _)) = listener.accept().await {
            host_port += 1;
            let agent = agent.clone();
            tokio::spawn(async move {
                let _ = relay(stream, &agent, host_port).await;
            });
        }
    }))
}

async fn relay(stream: tokio::net::UnixStream, agent: &Path, host_port: u32) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    let port = line.strip_prefix("CONNECT ").and_then(|p| p.trim_end().parse::<u32>().ok());
    if port != Some(AGENT_PORT) {
        return Ok(());
    }
    let mut child = tokio::process::Command::new(agent)
        .arg("--stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (mut to_agent, mut from_agent) = (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"));
    stream.get_mut().write_all(format!("OK {host_port}\n").as_bytes()).await?;
    // Bytes the host sent right behind CONNECT are in the buffer: forward them first.
    let buffered = stream.buffer().to_vec();
    to_agent.write_all(&buffered).await?;
    let (mut read_half, mut write_half) = stream.into_inner().into_split();
    let up = tokio::io::copy(&mut read_half, &mut to_agent);
    let down = tokio::io::copy(&mut from_agent, &mut write_half);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    let _ = child.kill().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn test_relay_refuses_other_ports_and_answers_ok_for_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("v.sock");
        // `cat` stands in for the agent (ignoring `--stdio`): whatever is sent comes back.
        let cat = dir.path().join("agent");
        std::fs::write(&cat, "#!/bin/sh\nexec cat\n").unwrap();
        std::fs::set_permissions(&cat, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let task = serve_agent(&sock, cat).unwrap();
        let mut wrong = tokio::net::UnixStream::connect(&sock).await.unwrap();
        wrong.write_all(b"CONNECT 52\n").await.unwrap();
        let mut buf = Vec::new();
        wrong.read_to_end(&mut buf).await.unwrap();
        assert!(buf.is_empty(), "a port nobody listens on must be closed without a reply");

        let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
        s.write_all(b"CONNECT 1024\nhello").await.unwrap();
        let mut reply = vec![0u8; 64];
        let mut got = Vec::new();
        while !got.ends_with(b"hello") {
            let n = s.read(&mut reply).await.unwrap();
            assert!(n > 0, "closed early: {got:?}");
            got.extend_from_slice(&reply[..n]);
        }
        let text = String::from_utf8(got).unwrap();
        assert!(text.starts_with("OK ") && text.ends_with("\nhello"), "{text:?}");
        task.abort();
    }
}
