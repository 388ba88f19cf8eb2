//! Stand-in `firecracker` executable for launch and supervision tests.
//!
//! Accepts the real command line (`--api-sock PATH`, `--id ID`; every other flag is ignored),
//! serves [`nestbox_testkit::firecracker`]'s fake API on the socket, and exits 0 when the guest
//! "reboots" (`SendCtrlAltDel` after boot, like Firecracker) or on SIGTERM/SIGINT, removing
//! its socket. `--version` prints "Firecracker v1.16.1". Once the VM is started, what comes in
//! on stdin (a pipe or a terminal, as Firecracker reads) is echoed on stdout, the serial console.
//!
//! Knobs, from the environment:
//! - `FAKE_DELAY_MS=N`: wait N ms before binding the socket (a slow start).
//! - `FAKE_EXIT=N`: exit with status N before binding (an early death).
//! - `FAKE_IGNORE_SIGTERM=1`: ignore SIGTERM (only SIGKILL ends it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nestbox_testkit::firecracker::{DEFAULT_INSTANCE_ID, FIRECRACKER_VERSION, FakeFirecracker, FcState, serve_shared};
use tokio::signal::unix::{SignalKind, signal};

/// Firecracker's default API socket.
const DEFAULT_API_SOCK: &str = "/run/firecracker.socket";
/// How often the exit request is polled.
const EXIT_POLL: Duration = Duration::from_millis(10);
/// Time left for the last reply to leave before the socket goes away.
const EXIT_LINGER: Duration = Duration::from_millis(50);

struct Args {
    api_sock: PathBuf,
    id: String,
    version: bool,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Args {
    let mut out =
        Args { api_sock: PathBuf::from(DEFAULT_API_SOCK), id: DEFAULT_INSTANCE_ID.to_owned(), version: false };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--version" => out.version = true,
            "--api-sock" => {
                if let Some(v) = args.next() {
                    out.api_sock = PathBuf::from(v);
                }
            }
            "--id" => {
                if let Some(v) = args.next() {
                    out.id = v;
                }
            }
            other => {
                if let Some(v) = other.strip_prefix("--api-sock=") {
                    out.api_sock = PathBuf::from(v);
                } else if let Some(v) = other.strip_prefix("--id=") {
                    out.id = v.to_owned();
                }
            }
        }
    }
    out
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn main() -> ExitCode {
    let args = parse_args(std::env::args().skip(1));
    if args.version {
        println!("Firecracker v{FIRECRACKER_VERSION}");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-firecracker: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let ignore_term = std::env::var("FAKE_IGNORE_SIGTERM").is_ok_and(|v| v == "1");
    // Install the handlers first, so a SIGTERM during the delay is honoured too.
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("fake-firecracker: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    println!("[{}:main] Running Firecracker v{FIRECRACKER_VERSION}", args.id);
    if let Some(code) = env_number("FAKE_EXIT") {
        eprintln!("[{}:main] fake-firecracker: exiting early with {code} (FAKE_EXIT)", args.id);
        return ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX));
    }
    if let Some(ms) = env_number("FAKE_DELAY_MS") {
        let delay = tokio::time::sleep(Duration::from_millis(ms));
        tokio::pin!(delay);
        loop {
            tokio::select! {
                () = &mut delay => break,
                _ = term.recv() => if !ignore_term { return ExitCode::SUCCESS },
                _ = int.recv() => return ExitCode::SUCCESS,
            }
        }
    }
    let fake = Arc::new(Mutex::new(FakeFirecracker::with_id(&args.id)));
    let server = match serve_shared(&args.api_sock, Arc::clone(&fake)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "[{}:main] Failed to open the API socket at: {}. Check that it is not already used: {e}",
                args.id,
                args.api_sock.display()
            );
            return ExitCode::from(1);
        }
    };
    let mut guest = nestbox_testkit::guest::Guest::from_env();
    let mut serial = false;
    let mut poll = tokio::time::interval(EXIT_POLL);
    loop {
        tokio::select! {
            _ = term.recv() => {
                if ignore_term {
                    eprintln!("[{}:main] fake-firecracker: ignoring SIGTERM", args.id);
                    continue;
                }
                break;
            }
            _ = int.recv() => break,
            _ = poll.tick() => {
                // With FAKE_AGENT, a booted VM with a vsock device gets the agent behind it.
                guest.poll(|| {
                    let fc = fake.lock().unwrap_or_else(|e| e.into_inner());
                    (fc.state() != FcState::NotStarted).then(|| fc.vsock_uds_path()).flatten()
                });
                if !serial && fake.lock().unwrap_or_else(|e| e.into_inner()).state() != FcState::NotStarted {
                    serial = true;
                    nestbox_testkit::guest::echo_serial(nestbox_testkit::guest::SerialInput::TerminalOrPipe);
                }
                if fake.lock().unwrap_or_else(|e| e.into_inner()).exit_requested() {
                    println!("[{}:main] Vmm is stopping.", args.id);
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
