//! `nestbox run`: flags → engine request; streams wired to the terminal; signals → teardown.

use anyhow::Context;
use nestbox_backend_qemu::QemuConfig;
use nestbox_engine::{BootRequest, EngineError, Home, RunIo, RunRequest, Runner, accel};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::RunArgs;

/// Runs the command and returns the exit code to leave with.
pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let home = Home::from_env();
    let qemu = nestbox_backend_qemu::vm::locate_binary()?;
    let decision = accel::choose(args.accel, &home.cache(), &qemu).await?;
    if let Some(note) = &decision.note {
        eprintln!("nestbox: {note}");
    }
    let mut config = QemuConfig::new(decision.accel)?;
    config.binary = qemu;
    let runner = Runner::new(home, config);
    let req = RunRequest {
        boot: BootRequest {
            vcpus: args.cpus,
            memory_mib: args.memory,
            kernel: args.kernel,
            kernel_args: args.kernel_args,
            boot_timeout: args.boot_timeout,
        },
        env: args.env.into_iter().map(|e| (e.key, e.value)).collect(),
        workdir: args.workdir,
        timeout: args.timeout,
        argv: args.command,
    };
    let io = RunIo {
        stdin: Box::pin(tokio::io::stdin()),
        stdout: Box::pin(tokio::io::stdout()),
        stderr: Box::pin(tokio::io::stderr()),
    };
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let cancel = async move {
        tokio::select! {
            _ = sigint.recv() => libc::SIGINT,
            _ = sigterm.recv() => libc::SIGTERM,
        }
    };
    let timeout = req.timeout;
    match runner.run(req, io, cancel).await {
        Ok(outcome) => {
            if outcome.status.timed_out {
                if let Some(t) = timeout {
                    eprintln!("nestbox: command timed out after {t:?}");
                }
            }
            Ok(outcome.exit_code)
        }
        Err(EngineError::Interrupted { signal }) => Ok(128 + signal),
        Err(e) => Err(e.into()),
    }
}
