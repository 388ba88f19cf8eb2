//! `nestbox.console=shell`: an interactive shell on the guest's serial console, for
//! `nestbox console`.
//!
//! With that word on the kernel command line, init mode runs [`SHELL`] on the console's
//! terminal (the device of the last `console=`, e.g. `console=ttyS0,115200` → `/dev/ttyS0`):
//! a session leader with the terminal as controlling terminal (so ^C and job control work),
//! `/` as working directory and the exec default environment (`TERM=linux`). When it exits it
//! is started again, at most once per [`MIN_RESTART_INTERVAL`], until [`stop`] (poweroff).
//!
//! The shell is spawned through the [`Reaper`] like any exec: the reaper reaps it and hands
//! its exit status to this module's thread, which is what triggers the restart.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::exec::DEFAULT_ENV;
use crate::log;
use crate::pty;
use crate::reaper::{ExitInfo, Reaper};

/// The kernel command-line parameter that asks for a console shell: `nestbox.console=shell`.
pub const CONSOLE_PARAM: &str = "nestbox.console";

/// The value of [`CONSOLE_PARAM`] that starts the shell.
const SHELL_VALUE: &str = "shell";

/// The program run on the console.
pub const SHELL: &str = "/bin/sh";

/// The console without a `console=` parameter.
const DEFAULT_CONSOLE: &str = "/dev/console";

/// The shortest time between two starts of the shell.
pub const MIN_RESTART_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest pause after the shell exits before the next one starts.
const RESTART_DELAY: Duration = Duration::from_millis(100);

/// Set at poweroff: the shell is not started again.
static STOP: AtomicBool = AtomicBool::new(false);

/// Whether the last `nestbox.console=` on `cmdline` asks for the shell.
pub fn shell_requested(cmdline: &str) -> bool {
    last_value(cmdline, CONSOLE_PARAM) == Some(SHELL_VALUE)
}

/// The terminal of the console: the device named by the last `console=` (options after a
/// comma dropped), or `/dev/console` when there is none or it is empty.
pub fn console_device(cmdline: &str) -> PathBuf {
    match last_value(cmdline, "console").and_then(|v| v.split(',').next()).filter(|n| !n.is_empty()) {
        Some(name) => Path::new("/dev").join(name.trim_start_matches("/dev/")),
        None => PathBuf::from(DEFAULT_CONSOLE),
    }
}

/// The value of the last `key=value` word of `cmdline`.
fn last_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_whitespace().filter_map(|w| w.strip_prefix(key)?.strip_prefix('=')).next_back()
}

/// How long to wait before the next start, given how long ago the last one was.
fn restart_delay(since_last_start: Duration) -> Duration {
    MIN_RESTART_INTERVAL.saturating_sub(since_last_start).max(RESTART_DELAY)
}

/// Starts the console shell thread when `/proc/cmdline` asks for it (init mode).
pub fn start_from_proc(reaper: &Arc<Reaper>) {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if !shell_requested(&cmdline) {
        return;
    }
    let mut device = console_device(&cmdline);
    if !device.exists() {
        // e.g. `console=uart8250,io,0x3f8`: the kernel's console is still /dev/console.
        device = PathBuf::from(DEFAULT_CONSOLE);
    }
    if let Err(e) = spawn_loop(device, Arc::clone(reaper), &STOP) {
        log::error(&format!("console shell thread: {e}"));
    }
}

/// Stops restarting the shell (the running one is left to poweroff's signals).
pub fn stop() {
    STOP.store(true, Ordering::Relaxed);
}

/// Runs the shell on `device` in a thread, again after each exit, until `stop` is set.
fn spawn_loop(device: PathBuf, reaper: Arc<Reaper>, stop: &'static AtomicBool) -> io::Result<()> {
    std::thread::Builder::new()
        .name("console".into())
        .stack_size(crate::THREAD_STACK)
        .spawn(move || run_loop(&device, &reaper, stop))
        .map(drop)
}

fn run_loop(device: &Path, reaper: &Reaper, stop: &AtomicBool) {
    let mut logged = false;
    let mut last_start: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if let Some(at) = last_start {
            std::thread::sleep(restart_delay(at.elapsed()));
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
        last_start = Some(Instant::now());
        match spawn_shell(device, reaper) {
            // The reaper sends the exit status; a closed channel means it is gone too.
            Ok(exited) => {
                logged = false;
                if exited.recv().is_err() {
                    return;
                }
            }
            // Said once, not every second while the cause lasts.
            Err(e) if !logged => {
                logged = true;
                log::error(&format!("console shell on {}: {e}", device.display()));
            }
            Err(_) => {}
        }
    }
}

/// Starts [`SHELL`] as a session leader on `device`; the receiver yields its exit.
fn spawn_shell(device: &Path, reaper: &Reaper) -> io::Result<Receiver<ExitInfo>> {
    let tty = pty::open_terminal(device)?;
    let mut cmd = Command::new(SHELL);
    cmd.env_clear()
        .envs(DEFAULT_ENV)
        .current_dir("/")
        .stdin(Stdio::from(tty.try_clone()?))
        .stdout(Stdio::from(tty.try_clone()?))
        .stderr(Stdio::from(tty));
    // SAFETY: the hook runs in the forked child and makes only async-signal-safe system calls
    // (setsid, ioctl).
    unsafe { cmd.pre_exec(|| pty::become_session_leader(libc::STDIN_FILENO)) };
    let (_child, exited) = reaper.spawn(&mut cmd)?;
    Ok(exited)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    use nestbox_agent_protocol::TtySize;

    use super::*;

    #[test]
    fn test_shell_requested_by_last_console_param() {
        assert!(shell_requested("console=ttyS0 nestbox.console=shell quiet"));
        assert!(!shell_requested("console=ttyS0 quiet"));
        assert!(!shell_requested("nestbox.console=shell nestbox.console=off"));
        assert!(!shell_requested("nestbox.console=shells"));
        assert!(!shell_requested("xnestbox.console=shell"));
    }

    #[test]
    fn test_console_device_is_the_last_console_param() {
        assert_eq!(console_device("console=ttyS0"), Path::new("/dev/ttyS0"));
        assert_eq!(console_device("console=tty0 console=ttyS0,115200n8 panic=-1"), Path::new("/dev/ttyS0"));
        assert_eq!(console_device("console=ttyS0 console=hvc0"), Path::new("/dev/hvc0"));
        assert_eq!(console_device("earlyprintk=ttyS0 reboot=k"), Path::new("/dev/console"));
        assert_eq!(console_device("console="), Path::new("/dev/console"));
        assert_eq!(console_device("nestbox.console=shell"), Path::new("/dev/console"), "not a console= word");
        assert_eq!(console_device("console=/dev/ttyAMA0"), Path::new("/dev/ttyAMA0"));
    }

    #[test]
    fn test_restart_delay_allows_one_start_per_second() {
        assert_eq!(restart_delay(Duration::ZERO), MIN_RESTART_INTERVAL);
        assert_eq!(restart_delay(Duration::from_millis(300)), Duration::from_millis(700));
        assert_eq!(restart_delay(Duration::from_secs(60)), RESTART_DELAY);
    }

    /// Reads from `master` until `want` shows up; panics after the deadline.
    fn read_until(master: &mut std::fs::File, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(want) {
            assert!(Instant::now() < deadline, "no {want:?} in {:?}", String::from_utf8_lossy(&seen));
            let mut fds = [nix::poll::PollFd::new(master.as_fd(), nix::poll::PollFlags::POLLIN)];
            if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u8)).unwrap_or(0) > 0 {
                let n = master.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    #[test]
    fn test_shell_runs_on_the_terminal_and_restarts_after_exit() {
        static STOP_TEST: AtomicBool = AtomicBool::new(false);
        let pty = pty::open(TtySize { rows: 24, cols: 80 }).unwrap();
        let slave = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&pty.slave)))
            .expect("slave path");
        let mut master = std::fs::File::from(pty.master);
        spawn_loop(slave, crate::reaper::tests::shared(), &STOP_TEST).unwrap();

        let ask = b"s=$(cut -d' ' -f6 /proc/$$/stat); echo \"tty=$(tty) sid=$s pid=$$ term=$TERM\"\n";
        master.write_all(ask).unwrap();
        let answer = |text: String| {
            // The answer may follow a prompt printed after the terminal echoed our input.
            let line = text.lines().find(|l| l.contains("term=linux")).unwrap_or_default().to_string();
            let field =
                |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or_default().to_string();
            (field("tty="), field("sid="), field("pid="))
        };
        let (tty, sid, first_pid) = answer(read_until(&mut master, "term=linux"));
        assert!(tty.starts_with("/dev/pts/"), "the shell's terminal is the console: {tty}");
        assert_eq!(sid, first_pid, "the shell leads its session");

        master.write_all(b"exit\n").unwrap();
        // The reaper reports the exit; the loop starts a new shell on the same terminal.
        std::thread::sleep(MIN_RESTART_INTERVAL + Duration::from_millis(500));
        master.write_all(ask).unwrap();
        let (_, sid, second_pid) = answer(read_until(&mut master, "term=linux"));
        assert_ne!(second_pid, first_pid, "a new shell answers");
        assert_eq!(sid, second_pid);
        STOP_TEST.store(true, Ordering::Relaxed);
        // Closing the master hangs up the terminal: the shell exits and is not restarted.
        drop(master);
    }
}
