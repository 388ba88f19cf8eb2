//! `nestbox-agent`: the guest agent. PID 1 in the microVM (init mode), a service started by
//! the guest's own init (`--service`: cloud images, where cloud-init starts it from the seed
//! disk), or a protocol server over stdin/stdout (`--stdio`), a Unix socket it connects to
//! (`--socket`), or a Unix socket it listens on, one session per connection (`--listen-unix`).
//!
//! In init mode it serves the virtio-serial port named `nestbox.agent`, or, when the kernel
//! command line has `nestbox.agent=vsock:<port>`, an AF_VSOCK listener on that port; with
//! `nestbox.console=shell` it also keeps a shell on the serial console (`console.rs`).
//!
//! It speaks `nestbox-agent-protocol`; see that crate's `PROTOCOL.md`. Built
//! static (`-C target-feature=+crt-static`), with std threads and no async runtime.

mod console;
mod exec;
mod init;
mod listen;
mod log;
mod pty;
mod reaper;
mod rootfs;
mod session;
mod user;

use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::listen::Transport;
use crate::reaper::Reaper;
use crate::session::EndReason;

/// Stack size of every agent thread (buffers live on the heap).
pub const THREAD_STACK: usize = 256 * 1024;

/// Pause between looks at a virtio port while no host is connected.
const RECONNECT_POLL_MS: u8 = 10;

const USAGE: &str = "usage: nestbox-agent [--service [serial|vsock:PORT] | --stdio | --socket PATH | --listen-unix PATH]\n\
    As PID 1 it initializes the guest and serves the virtio port named nestbox.agent,\n\
    or AF_VSOCK when the kernel command line has nestbox.agent=vsock:PORT.\n\
    With --service it serves that port under the guest's own init, which powers the guest off.";

/// What a service-mode agent runs when the host asks for a power-off: the guest's init
/// shuts down in order (services stopped, disks unmounted).
const SERVICE_POWEROFF: &[&str] = &["poweroff", "systemctl poweroff", "busybox poweroff"];

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
        ["--listen-unix", path] => listen_unix(path),
        ["--service"] => service_main(None),
        ["--service", transport] => service_main(Some(transport)),
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

/// Serves every connection to a Unix socket at `path` as its own session (the vsock accept
/// loop, on the host). `guest.poweroff` ends the process.
fn listen_unix(path: &str) -> ExitCode {
    let listener = match UnixListener::bind(path) {
        Ok(l) => OwnedFd::from(l),
        Err(e) => {
            log::error(&format!("listen {path}: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let reaper = match Reaper::start() {
        Ok(r) => r,
        Err(e) => {
            log::error(&format!("reaper: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let e = listen::serve_forever(listener.as_fd(), &reaper, exit_success);
    log::error(&format!("accept on {path}: {e}"));
    ExitCode::FAILURE
}

fn exit_success() -> ! {
    std::process::exit(0)
}

/// Init mode over AF_VSOCK: accepts host connections on `port` until poweroff.
fn serve_vsock(port: u32, reaper: &Arc<Reaper>) -> ! {
    let listener = match listen::vsock_listener_with_deadline(port) {
        Ok(l) => l,
        Err(e) => {
            log::error(&format!("vsock port {port}: {e}"));
            init::poweroff();
        }
    };
    log::trace("vsock listening");
    let e = listen::serve_forever(listener.as_fd(), reaper, init::poweroff);
    log::error(&format!("accept on vsock port {port}: {e}"));
    init::poweroff()
}

fn init_main() -> ! {
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("PATH", exec::DEFAULT_PATH) };
    init::setup();
    if let Err(e) = rootfs::switch_from_cmdline() {
        log::error(&e);
        init::poweroff();
    }
    rootfs::mount_volumes_from_cmdline();
    let reaper = match Reaper::start() {
        Ok(r) => r,
        Err(e) => {
            log::error(&format!("reaper: {e}"));
            init::poweroff();
        }
    };
    console::start_from_proc(&reaper);
    if let Transport::Vsock { port } = listen::transport_from_proc() {
        serve_vsock(port, &reaper);
    }
    let port = match init::open_agent_port() {
        Ok(p) => p,
        Err(e) => {
            log::error(&format!("agent port: {e}"));
            init::poweroff();
        }
    };
    log::trace("port open");
    let e = serve_port(&port, &reaper, init::poweroff);
    log::error(&format!("agent port: {e}"));
    init::poweroff()
}

/// Serves one host connection after another on the virtio port, until a session ends in
/// `guest.poweroff` (then `poweroff` runs) or the port fails (returned).
fn serve_port(port: &impl AsFd, reaper: &Arc<Reaper>, poweroff: fn() -> !) -> String {
    loop {
        wait_for_host(port);
        log::trace("host connected");
        match session::serve(port.as_fd(), port.as_fd(), Arc::clone(reaper)) {
            EndReason::Disconnected => {}
            EndReason::Poweroff => poweroff(),
            EndReason::Fatal(e) => return e.to_string(),
        }
    }
}

/// Service mode: the guest's init (systemd, through cloud-init) runs us; we serve the virtio
/// port or AF_VSOCK (`transport`, else the kernel command line's `nestbox.agent=`, else the
/// port) and leave the power-off to that init.
fn service_main(transport: Option<&str>) -> ExitCode {
    // The guest's console shows kernel messages: failures are seen there, not only in a journal.
    log::use_kmsg();
    log::enable_trace_from_cmdline();
    if std::env::var_os("PATH").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("PATH", exec::DEFAULT_PATH) };
    }
    let reaper = match Reaper::start() {
        Ok(r) => r,
        Err(e) => {
            log::error(&format!("reaper: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let transport = match transport.map(listen::parse_transport) {
        None => listen::transport_from_proc(),
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            eprintln!("nestbox-agent: --service {e}");
            return ExitCode::from(2);
        }
    };
    if let Transport::Vsock { port } = transport {
        let listener = match listen::vsock_listener_with_deadline(port) {
            Ok(l) => l,
            Err(e) => {
                log::error(&format!("vsock port {port}: {e}"));
                return ExitCode::FAILURE;
            }
        };
        let e = listen::serve_forever(listener.as_fd(), &reaper, service_poweroff);
        log::error(&format!("accept on vsock port {port}: {e}"));
        return ExitCode::FAILURE;
    }
    let port = match init::open_agent_port() {
        Ok(p) => p,
        Err(e) => {
            log::error(&format!("agent port: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let e = serve_port(&port, &reaper, service_poweroff);
    log::error(&format!("agent port: {e}"));
    ExitCode::FAILURE
}

/// Asks the guest's init to power off, and exits (the init stops us anyway).
fn service_poweroff() -> ! {
    nix::unistd::sync();
    for command in SERVICE_POWEROFF {
        let mut words = command.split_whitespace();
        let Some(program) = words.next() else { continue };
        let started = std::process::Command::new(program).args(words).stdin(std::process::Stdio::null()).status();
        if started.is_ok_and(|s| s.success()) {
            std::process::exit(0);
        }
    }
    log::error("poweroff: no poweroff command worked");
    std::process::exit(1)
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
