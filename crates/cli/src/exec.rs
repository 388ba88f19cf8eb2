//! `nestbox exec`: a command in a running sandbox, through its shim's agent socket, with the
//! same streaming and exit-code rules as `run`; `-t` puts the host terminal in raw mode and
//! forwards window size changes.

use std::os::fd::AsFd;
use std::time::Duration;

use nestbox_agent_client::{ExecRequest, TtySize};
use nestbox_engine::{RunIo, Sandboxes};
use nix::sys::termios::{self, SetArg, Termios};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::ExecArgs;

/// What to run, from `exec`'s flags or `run --name`.
#[derive(Debug)]
pub struct ExecOptions {
    pub sandbox: String,
    pub interactive: bool,
    pub tty: bool,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub timeout: Option<Duration>,
    pub command: Vec<String>,
}

/// `nestbox exec`.
pub async fn exec(args: ExecArgs) -> anyhow::Result<i32> {
    let opts = ExecOptions {
        sandbox: args.sandbox,
        interactive: args.interactive,
        tty: args.tty,
        env: args.env.into_iter().map(|e| (e.key, e.value)).collect(),
        workdir: args.workdir,
        user: args.user,
        timeout: args.timeout,
        command: args.command,
    };
    exec_in(&crate::sandbox::manager()?, opts).await
}

/// Runs `opts.command` in the sandbox and returns the exit code to leave with.
pub async fn exec_in(mgr: &Sandboxes, opts: ExecOptions) -> anyhow::Result<i32> {
    let (client, sb) = mgr.agent(&opts.sandbox).await?;
    let mut env = sb.config.as_ref().map(|c| c.env.clone()).unwrap_or_default();
    env.extend(opts.env);
    let tty = opts.tty.then(|| terminal_size().unwrap_or(TtySize { rows: 24, cols: 80 }));
    // The image's working directory and user, unless the command names its own.
    let defaults = sb.config.as_ref();
    let req = ExecRequest {
        argv: opts.command,
        env,
        cwd: opts.workdir.or_else(|| defaults.and_then(|c| c.workdir.clone())),
        stdin: true,
        timeout: opts.timeout,
        tty,
        user: opts.user.or_else(|| defaults.and_then(|c| c.user.clone())),
    };
    let exec = client.exec(req).await?;
    let _raw = if opts.tty { RawMode::enter() } else { None };
    let resizer = tty.map(|_| {
        let handle = exec.stdin();
        tokio::spawn(async move {
            let Ok(mut winch) = signal(SignalKind::window_change()) else { return };
            while winch.recv().await.is_some() {
                if let Some(size) = terminal_size() {
                    let _ = handle.resize(size.rows, size.cols).await;
                }
            }
        })
    });
    let stdin: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>> =
        if opts.interactive { Box::pin(tokio::io::stdin()) } else { Box::pin(tokio::io::empty()) };
    let io = RunIo { stdin, stdout: Box::pin(tokio::io::stdout()), stderr: Box::pin(tokio::io::stderr()) };
    let status = nestbox_engine::stream_exec(exec, io).await;
    if let Some(r) = resizer {
        r.abort();
    }
    drop(_raw);
    let status = status.map_err(|e| match e {
        // The agent connection ended under the command: the sandbox stopped.
        nestbox_engine::EngineError::Agent(nestbox_agent_client::ClientError::Closed) => {
            anyhow::anyhow!("sandbox {} stopped while the command ran", sb.id())
        }
        e => e.into(),
    })?;
    if status.timed_out {
        if let Some(t) = opts.timeout {
            eprintln!("nestbox: command timed out after {t:?}");
        }
        return Ok(124);
    }
    Ok(status.shell_code())
}

/// The host terminal's size, when stdout (or stdin) is one.
pub fn terminal_size() -> Option<TtySize> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ writes one winsize into the struct we own.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if rc == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
            return Some(TtySize { rows: ws.ws_row, cols: ws.ws_col });
        }
    }
    None
}

/// The host terminal in raw mode until dropped (when stdin is a terminal).
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Enters raw mode; `None` when stdin is not a terminal.
    pub fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}
