//! `nestbox`: run commands in microVM sandboxes.
//!
//! A thin binary: parse (clap), render, map errors to exit codes. The work is in
//! `nestbox-engine`.

mod cli;
mod doctor;
mod exit;
mod info;
mod run;

use clap::Parser;

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => exit::usage_error(e),
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => exit::fail(&anyhow::anyhow!(e).context("cannot start the async runtime")),
    };
    let code = runtime.block_on(async {
        match cli.command {
            cli::Command::Run(args) => run::run(args).await,
            cli::Command::Info(args) => info::info(args).await,
            cli::Command::Doctor(args) => doctor::doctor(args).await,
        }
    });
    match code {
        Ok(code) => exit::exit(code),
        Err(e) => exit::fail(&e),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NESTBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
