//! `nestbox`: run commands in microVM sandboxes.
//!
//! A thin binary: parse (clap), render, map errors to exit codes. The work is in
//! `nestbox-engine`.

mod cli;
mod console;
mod doctor;
mod exec;
mod exit;
mod image;
mod info;
mod progress;
mod run;
mod sandbox;
mod snapshot;

use clap::Parser;
use sandbox::Action;

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => exit::usage_error(e),
    };
    init_tracing(if matches!(cli.command, cli::Command::Shim(_)) { "info" } else { "warn" });
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => exit::fail(&anyhow::anyhow!(e).context("cannot start the async runtime")),
    };
    let code = runtime.block_on(async {
        match cli.command {
            cli::Command::Run(args) => run::run(args).await,
            cli::Command::Create(args) => sandbox::create(args).await,
            cli::Command::Start(args) => sandbox::act(args.sandboxes, Action::Start).await,
            cli::Command::Exec(args) => exec::exec(args).await,
            cli::Command::Console(args) => console::console(args).await,
            cli::Command::Logs(args) => console::logs(args).await,
            cli::Command::Pause(args) => sandbox::act(args.sandboxes, Action::Pause).await,
            cli::Command::Resume(args) => sandbox::act(args.sandboxes, Action::Resume).await,
            cli::Command::Stop(args) => sandbox::act(args.sandboxes, Action::Stop(args.timeout)).await,
            cli::Command::Kill(args) => sandbox::act(args.sandboxes, Action::Kill).await,
            cli::Command::Rm(args) => sandbox::act(args.sandboxes, Action::Remove { force: args.force }).await,
            cli::Command::Ps(args) => sandbox::ps(args).await,
            cli::Command::Inspect(args) => sandbox::inspect(args).await,
            cli::Command::Gc(args) => sandbox::gc(args).await,
            cli::Command::Image(cmd) => image::image(cmd).await,
            cli::Command::Snapshot(args) => snapshot::snapshot(args).await,
            cli::Command::Restore(args) => snapshot::restore(args).await,
            cli::Command::Clone(args) => snapshot::clone(args).await,
            cli::Command::Shim(args) => sandbox::shim(args).await,
            cli::Command::Info(args) => info::info(args).await,
            cli::Command::Doctor(args) => doctor::doctor(args).await,
        }
    });
    match code {
        Ok(code) => exit::exit(code),
        Err(e) => exit::fail(&e),
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NESTBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}
