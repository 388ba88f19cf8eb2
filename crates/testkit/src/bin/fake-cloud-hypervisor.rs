//! Stand-in `cloud-hypervisor` executable for launch and supervision tests.
//!
//! Accepts the real command line: `--api-socket path=PATH` (or a plain `PATH`, or
//! `--api-socket=…`), `--no-shutdown`; every other flag is ignored. `--api-socket fd=N` is refused
//! (the fake binds its own socket). It serves [`nestbox_testkit::chv`]'s fake API on the socket
//! and exits 0 on `vmm.shutdown`, when the guest powers off (`vm.power-button`, unless
//! `--no-shutdown`), or on SIGTERM/SIGINT, removing its socket. `--version` prints
//! "cloud-hypervisor v53.0". Once the VM is booted, what comes in on stdin is echoed on stdout,
//! the serial console, when stdin is a terminal (Cloud Hypervisor's `Tty` serial reads no other).
//!
//! Knobs, from the environment:
//! - `FAKE_DELAY_MS=N`: wait N ms before binding the socket (a slow start).
//! - `FAKE_EXIT=N`: exit with status N before binding (an early death).
//! - `FAKE_IGNORE_SIGTERM=1`: ignore SIGTERM (only SIGKILL, or SIGINT, ends it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nestbox_testkit::chv::{FakeCloudHypervisor, VERSION_LINE, VmState, serve_shared};
use tokio::signal::unix::{SignalKind, signal};

/// The name messages start with.
const NAME: &str = "fake-cloud-hypervisor";
/// How often the exit request is polled.
const EXIT_POLL: Duration = Duration::from_millis(10);
/// Time left for the last reply to leave before the socket goes away.
const EXIT_LINGER: Duration = Duration::from_millis(50);
/// Exit status for a command line the fake cannot serve (clap's usage error status).
const USAGE_ERROR: u8 = 2;

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Version,
    Serve { api_socket: PathBuf, no_shutdown: bool },
}

/// Parses CH's command line; `Err` is the message for a line the fake cannot serve.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut api_socket = None;
    let mut no_shutdown = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--version" | "-V" => return Ok(Command::Version),
            "--no-shutdown" => no_shutdown = true,
            "--api-socket" => {
                let value = args.next().ok_or("--api-socket needs a value")?;
                api_socket = Some(api_socket_path(&value)?);
            }
            other => {
                if let Some(value) = other.strip_prefix("--api-socket=") {
                    api_socket = Some(api_socket_path(value)?);
                }
            }
        }
    }
    let api_socket = api_socket.ok_or("needs --api-socket path=PATH")?;
    Ok(Command::Serve { api_socket, no_shutdown })
}

/// CH's `--api-socket` value: `path=PATH`, a plain `PATH`, or `fd=N` (refused here).
fn api_socket_path(value: &str) -> Result<PathBuf, String> {
    if !value.contains('=') {
        return Ok(PathBuf::from(value));
    }
    let mut path = None;
    for option in value.split(',') {
        match option.split_once('=') {
            Some(("path", p)) if !p.is_empty() => path = Some(PathBuf::from(p)),
            Some(("fd", _)) => return Err(format!("--api-socket {value}: fd= is not supported by the fake")),
            _ => return Err(format!("--api-socket {value}: unknown option {option:?}")),
        }
    }
    path.ok_or_else(|| format!("--api-socket {value}: no path"))
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn main() -> ExitCode {
    let (api_socket, no_shutdown) = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Version) => {
            println!("{VERSION_LINE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Serve { api_socket, no_shutdown }) => (api_socket, no_shutdown),
        Err(message) => {
            eprintln!("{NAME}: {message}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{NAME}: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(api_socket, no_shutdown))
}

async fn run(api_socket: PathBuf, no_shutdown: bool) -> ExitCode {
    let ignore_term = std::env::var("FAKE_IGNORE_SIGTERM").is_ok_and(|v| v == "1");
    // Install the handlers first, so a SIGTERM during the delay is handled too.
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{NAME}: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(code) = env_number("FAKE_EXIT") {
        eprintln!("{NAME}: exiting early with {code} (FAKE_EXIT)");
        return ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX));
    }
    if let Some(ms) = env_number("FAKE_DELAY_MS") {
        let delay = tokio::time::sleep(Duration::from_millis(ms));
        tokio::pin!(delay);
        loop {
            tokio::select! {
                () = &mut delay => break,
                _ = term.recv() => if ignore_term {
                    eprintln!("{NAME}: ignoring SIGTERM");
                } else {
                    return ExitCode::SUCCESS;
                },
                _ = int.recv() => return ExitCode::SUCCESS,
            }
        }
    }
    let fake = Arc::new(Mutex::new(FakeCloudHypervisor::new().with_no_shutdown(no_shutdown)));
    let server = match serve_shared(&api_socket, Arc::clone(&fake)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{NAME}: Error creation API server's socket {}: {e}", api_socket.display());
            return ExitCode::from(1);
        }
    };
    eprintln!("{NAME}: {VERSION_LINE} API on {}", api_socket.display());
    let mut guest = nestbox_testkit::guest::Guest::from_env();
    let mut serial = false;
    let mut poll = tokio::time::interval(EXIT_POLL);
    loop {
        tokio::select! {
            _ = term.recv() => {
                if ignore_term {
                    eprintln!("{NAME}: ignoring SIGTERM");
                    continue;
                }
                break;
            }
            _ = int.recv() => break,
            _ = poll.tick() => {
                // With FAKE_AGENT, a booted VM with a vsock device gets the agent behind it.
                guest.poll(|| {
                    let ch = fake.lock().unwrap_or_else(|e| e.into_inner());
                    let booted = matches!(ch.state(), Some(VmState::Running | VmState::Paused));
                    let socket = ch.config().and_then(|c| c.get("vsock")?.get("socket")?.as_str().map(PathBuf::from));
                    socket.filter(|_| booted)
                });
                let booted = matches!(
                    fake.lock().unwrap_or_else(|e| e.into_inner()).state(),
                    Some(VmState::Running | VmState::Paused)
                );
                if !serial && booted {
                    serial = true;
                    nestbox_testkit::guest::echo_serial(nestbox_testkit::guest::SerialInput::TerminalOnly);
                }
                if fake.lock().unwrap_or_else(|e| e.into_inner()).exit_requested() {
                    tokio::time::sleep(EXIT_LINGER).await;
                    break;
                }
            }
        }
    }
    drop(guest);
    server.shutdown();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    fn serve(path: &str, no_shutdown: bool) -> Result<Command, String> {
        Ok(Command::Serve { api_socket: PathBuf::from(path), no_shutdown })
    }

    #[test]
    fn test_parse_api_socket_forms() {
        assert_eq!(parse(&["--api-socket", "path=/run/ch.sock"]), serve("/run/ch.sock", false));
        assert_eq!(parse(&["--api-socket", "/run/ch.sock"]), serve("/run/ch.sock", false));
        assert_eq!(parse(&["--api-socket=path=/a", "--no-shutdown"]), serve("/a", true));
        assert_eq!(
            parse(&["--kernel", "/k", "--cmdline", "console=hvc0", "--api-socket", "path=/b", "-v"]),
            serve("/b", false)
        );
    }

    #[test]
    fn test_parse_refusals() {
        assert!(parse(&["--api-socket", "fd=3"]).unwrap_err().contains("fd="));
        assert!(parse(&["--api-socket", "path=/a,fd=3"]).unwrap_err().contains("fd="));
        assert!(parse(&["--api-socket", "mode=x"]).unwrap_err().contains("unknown option"));
        assert!(parse(&["--api-socket"]).is_err());
        assert!(parse(&["--kernel", "/k"]).unwrap_err().contains("--api-socket"));
    }

    #[test]
    fn test_parse_version() {
        assert_eq!(parse(&["--version"]), Ok(Command::Version));
        assert_eq!(parse(&["-V", "--api-socket", "fd=3"]), Ok(Command::Version));
    }
}
