//! `nestbox-agent`: the guest agent. PID 1 in the microVM (init mode), or a
//! protocol server over stdin/stdout (`--stdio`) or a Unix socket (`--socket`).
//!
//! It speaks `nestbox-agent-protocol`; see that crate's `PROTOCOL.md`. Built
//! static (`-C target-feature=+crt-static`), with std threads and no async runtime.

mod exec;
mod init;
mod log;
mod reaper;
mod session;

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::reaper::Reaper;
use crate::session::EndReason;

/// Stack size of every agent thread (buffers live on the heap).
pub const THREAD_STACK: usize = 256 * 1024;

/// Pause between looks at a virtio port while no host is connected.
const RECONNECT_POLL_MS: u8 = 10;

const USAGE: &str = "usage: nestbox-agent [--stdio | --socket PATH]\n\
    As PID 1 it initializes the guest and serves the virtio port named nestbox.agent.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::process::id() == 1 {
        init_main();
    }
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["--stdio"] => {
            let stdin = std::io::stdin();
            let stdout = std::io::stdout();
            serve_once(|r| session::serve(stdin.as_fd(), stdout.as_fd(), r))
        }
        ["--socket", path] => match UnixStream::connect(path) {
            Ok(sock) => serve_once(|r| session::serve(sock.as_fd(), sock.as_fd(), r)),
            Err(e) => {
                log::error(&format!("connect {path}: {e}"));
                ExitCode::FAILURE
            }
        },
        ["--version"] => {
            println!("nestbox-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn serve_once(serve: impl FnOnce(Arc<Reaper>) -> EndReason) -> ExitCode {
    let reaper = match Reaper::start() {
        Ok(r) => r,
        Err(e) => {
            log::error(&format!("reaper: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match serve(reaper) {
        EndReason::Disconnected | EndReason::Poweroff => ExitCode::SUCCESS,
        EndReason::Fatal(e) => {
            log::error(&format!("transport: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn init_main() -> ! {
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("PATH", exec::DEFAULT_PATH) };
    init::setup();
    let reaper = match Reaper::start() {
        Ok(r) => r,
        Err(e) => {
            log::error(&format!("reaper: {e}"));
            init::poweroff();
        }
    };
    let port = match init::open_agent_port() {
        Ok(p) => p,
        Err(e) => {
            log::error(&format!("agent port: {e}"));
            init::poweroff();
        }
    };
    log::trace("port open");
    loop {
        wait_for_host(&port);
        log::trace("host connected");
        match session::serve(port.as_fd(), port.as_fd(), Arc::clone(&reaper)) {
            EndReason::Disconnected => {}
            EndReason::Poweroff => init::poweroff(),
            EndReason::Fatal(e) => {
                log::error(&format!("agent port: {e}"));
                init::poweroff();
            }
        }
    }
}

/// Waits until the port stops reporting a hang-up, i.e. a host is connected.
fn wait_for_host(port: &impl AsFd) {
    loop {
        let mut fds = [PollFd::new(port.as_fd(), PollFlags::POLLIN)];
        let hup = match poll(&mut fds, PollTimeout::from(RECONNECT_POLL_MS)) {
            Ok(_) => fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLHUP)),
            Err(_) => true,
        };
        if !hup {
            return;
        }
        std::thread::sleep(Duration::from_millis(RECONNECT_POLL_MS.into()));
    }
}
