//! `nestbox run`: flags → engine request; streams wired to the terminal; signals → teardown.

use anyhow::Context;
use nestbox_engine::{BootRequest, EngineError, Home, RunIo, RunRequest, Runner};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::cli::RunArgs;

/// Runs the command and returns the exit code to leave with.
pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    if args.detach || args.name.is_some() || !args.labels.is_empty() || args.vm.image.is_some() {
        return crate::sandbox::run_persistent(args).await;
    }
    let signals = watch_signals()?;
    let cancelled = |mut rx: watch::Receiver<i32>| async move {
        let _ = rx.wait_for(|sig| *sig != 0).await;
        *rx.borrow()
    };
    let mut runner = Runner::new(Home::from_env());
    // Progress lines only for a person watching; scripts get the command's output alone.
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        runner = runner.with_notify(std::sync::Arc::new(|msg: &str| eprintln!("nestbox: {msg}")));
    }
    let req = RunRequest {
        boot: BootRequest {
            vcpus: args.vm.cpus,
            memory_mib: args.vm.memory,
            kernel: args.vm.kernel,
            kernel_args: args.vm.kernel_args,
            boot_timeout: args.vm.boot_timeout.unwrap_or(crate::cli::DEFAULT_BOOT_TIMEOUT),
            accel: args.vm.accel,
            hypervisor: args.vm.hypervisor,
            hypervisor_binary: args.vm.hypervisor_bin,
            root_disk: None,
            volumes: args.vm.volumes,
            cloud: None,
        },
        env: args.vm.env.into_iter().map(|e| (e.key, e.value)).collect(),
        workdir: args.workdir,
        timeout: args.timeout,
        argv: args.command,
    };
    let prepared = tokio::select! {
        prepared = runner.prepare(&req.boot) => prepared?,
        signal = cancelled(signals.clone()) => return Ok(128 + signal),
    };
    if let Some(note) = &prepared.accel.note {
        eprintln!("nestbox: {note}");
    }
    let io = RunIo {
        stdin: Box::pin(tokio::io::stdin()),
        stdout: Box::pin(tokio::io::stdout()),
        stderr: Box::pin(tokio::io::stderr()),
    };
    let timeout = req.timeout;
    match runner.run(&prepared, req, io, cancelled(signals)).await {
        Ok(outcome) => {
            if let (true, Some(t)) = (outcome.status.timed_out, timeout) {
                eprintln!("nestbox: command timed out after {t:?}");
            }
            Ok(outcome.exit_code)
        }
        Err(EngineError::Interrupted { signal }) => Ok(128 + signal),
        Err(e) => Err(e.into()),
    }
}

/// A channel that turns from 0 to the signal number on the first SIGINT or SIGTERM.
pub fn watch_signals() -> anyhow::Result<watch::Receiver<i32>> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let (tx, rx) = watch::channel(0);
    tokio::spawn(async move {
        let signal = tokio::select! {
            _ = sigint.recv() => libc::SIGINT,
            _ = sigterm.recv() => libc::SIGTERM,
        };
        let _ = tx.send(signal);
    });
    Ok(rx)
}
