//! The command line, as clap types. Values are parsed by the model's parsers, so a bad value
//! is reported with the flag's name before anything runs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nestbox_backend::BackendKind;
use nestbox_engine::accel::AccelChoice;
use nestbox_model::EnvVar;

/// Run commands in microVM sandboxes.
#[derive(Debug, Parser)]
#[command(name = "nestbox", version, about, propagate_version = true)]
#[deny(missing_docs)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[deny(missing_docs)]
pub enum Command {
    /// Boot a fresh microVM, run CMD in it, and remove the VM.
    Run(RunArgs),
    /// Show what nestbox would use on this host: kernel, QEMU, accelerator, state root.
    Info(InfoArgs),
    /// Check each backend: binary, version, whether it can run VMs here and why not.
    Doctor(DoctorArgs),
}

/// Output format for commands a person may script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Human-readable.
    #[default]
    Table,
    /// JSON.
    Json,
}

/// `nestbox run`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct RunArgs {
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = nestbox_model::defaults::DEFAULT_VCPUS, value_parser = parse_vcpus)]
    pub cpus: u8,
    /// Guest memory: 512M, 1G, 2048 (MiB when no unit).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_memory)]
    pub memory: u32,
    /// Set an environment variable for CMD (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<EnvVar>,
    /// Working directory of CMD in the guest.
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// Kill CMD after this long (30s, 500ms, 2m); exit code 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// How long the guest may take to boot.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub boot_timeout: Duration,
    /// Guest kernel: a bzImage or an ELF vmlinux with a PVH note.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Extra word for the guest kernel's command line (repeatable).
    #[arg(long = "kernel-arg", value_name = "ARG")]
    pub kernel_args: Vec<String>,
    /// Accelerator: auto uses KVM only when a probe shows it runs guests (QEMU only;
    /// Firecracker and Cloud Hypervisor always use KVM).
    #[arg(long, value_name = "auto|kvm|tcg", default_value = "auto", value_parser = parse_accel)]
    pub accel: AccelChoice,
    /// Hypervisor: qemu, firecracker or cloud-hypervisor.
    #[arg(long, value_name = "NAME", default_value = "qemu", value_parser = parse_hypervisor)]
    pub hypervisor: BackendKind,
    /// The hypervisor's binary (else $NESTBOX_QEMU / $NESTBOX_FIRECRACKER /
    /// $NESTBOX_CLOUD_HYPERVISOR, else PATH).
    #[arg(long, value_name = "PATH")]
    pub hypervisor_bin: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `nestbox info`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct InfoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Guest kernel to check instead of the one found by searching.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
}

/// `nestbox doctor`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct DoctorArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Guest kernel to check instead of the one found by searching.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
}

fn parse_vcpus(s: &str) -> Result<u8, String> {
    nestbox_model::parse_vcpus(s).map_err(|e| e.to_string())
}

fn parse_memory(s: &str) -> Result<u32, String> {
    let mib = nestbox_model::parse_memory_mib(s).map_err(|e| e.to_string())?;
    if mib < nestbox_model::defaults::MIN_MEMORY_MIB {
        return Err(format!("at least {}M is needed", nestbox_model::defaults::MIN_MEMORY_MIB));
    }
    Ok(mib)
}

fn parse_env(s: &str) -> Result<EnvVar, String> {
    s.parse::<EnvVar>().map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    nestbox_model::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_accel(s: &str) -> Result<AccelChoice, String> {
    s.parse()
}

fn parse_hypervisor(s: &str) -> Result<BackendKind, String> {
    match s {
        "qemu" => Ok(BackendKind::Qemu),
        "firecracker" | "fc" => Ok(BackendKind::Firecracker),
        "cloud-hypervisor" | "ch" => Ok(BackendKind::CloudHypervisor),
        other => Err(format!("unknown hypervisor {other:?}: expected qemu, firecracker or cloud-hypervisor")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn test_verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_run_takes_everything_after_double_dash() {
        let cli = Cli::try_parse_from(["nestbox", "run", "--cpus", "2", "--", "sh", "-c", "echo --cpus"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.cpus, 2);
        assert_eq!(args.command, ["sh", "-c", "echo --cpus"]);
    }

    #[test]
    fn test_bad_values_name_the_flag() {
        for (flag, value) in
            [("--cpus", "0"), ("--memory", "12Q"), ("--env", "=x"), ("--timeout", "soon"), ("--accel", "hvf")]
        {
            let err = Cli::try_parse_from(["nestbox", "run", flag, value, "--", "true"]).unwrap_err();
            let text = err.render().to_string();
            assert!(text.lines().next().unwrap().contains(flag), "{flag}: {text}");
        }
    }
}
