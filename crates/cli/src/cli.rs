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
    /// Boot a fresh microVM, run CMD in it, and remove the VM (`-d`: keep it, print its ID).
    Run(RunArgs),
    /// Create a sandbox (nothing runs yet) and print its ID.
    Create(CreateArgs),
    /// Start created or stopped sandboxes.
    Start(SandboxesArgs),
    /// Run a command in a running sandbox.
    #[command(after_help = SANDBOX_EXIT_CODES)]
    Exec(ExecArgs),
    /// Attach to a sandbox's serial console (detach with Ctrl-]).
    Console(SandboxArg),
    /// Print a sandbox's console log.
    Logs(LogsArgs),
    /// Pause sandboxes' vCPUs.
    Pause(SandboxesArgs),
    /// Resume paused sandboxes.
    Resume(SandboxesArgs),
    /// Stop sandboxes: the guest powers off, or is killed after --timeout.
    Stop(StopArgs),
    /// Kill sandboxes' VMs at once.
    Kill(SandboxesArgs),
    /// Remove sandboxes (-f: stop running ones first).
    Rm(RmArgs),
    /// List sandboxes (running ones; -a: all).
    #[command(visible_alias = "ls")]
    Ps(PsArgs),
    /// Show everything about one sandbox.
    Inspect(InspectArgs),
    /// Remove what no sandbox owns: abandoned records, directories, sockets, processes.
    Gc(GcArgs),
    /// Root filesystem images: build, import, list, inspect, remove.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Snapshot a sandbox (memory, device state, disk); or list, inspect, remove, export and
    /// import snapshots.
    Snapshot(SnapshotArgs),
    /// Put a sandbox back to a snapshot (it restarts from the snapshot's memory and disk).
    Restore(RestoreArgs),
    /// Make new running sandboxes from a snapshot.
    Clone(CloneArgs),
    /// Show what nestbox would use on this host: kernel, QEMU, accelerator, state root.
    Info(InfoArgs),
    /// Check each backend: binary, version, whether it can run VMs here and why not.
    Doctor(DoctorArgs),
    /// The per-sandbox supervisor (started by `start`; not for direct use).
    #[command(hide = true)]
    Shim(ShimArgs),
}

/// `nestbox snapshot`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SnapshotArgs {
    /// List, inspect, remove, export or import snapshots.
    #[command(subcommand)]
    pub command: Option<SnapshotCommand>,
    /// The sandbox to snapshot (running or paused).
    #[arg(value_name = "SB", required = true)]
    pub sandbox: Option<String>,
    /// A name for the snapshot.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Let the sandbox run on afterwards (the default).
    #[arg(long, conflicts_with_all = ["stop", "pause"])]
    pub leave_running: bool,
    /// Stop the sandbox afterwards.
    #[arg(long, conflicts_with = "pause")]
    pub stop: bool,
    /// Leave the sandbox paused afterwards.
    #[arg(long)]
    pub pause: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `nestbox snapshot ls|inspect|rm|export|import`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots.
    Ls(FormatArgs),
    /// Show one snapshot's manifest.
    Inspect(SnapshotRef),
    /// Remove snapshots.
    Rm(SnapshotRefs),
    /// Write a snapshot as a portable, sparse-aware tar + zstd archive.
    Export(ExportArgs),
    /// Read a snapshot archive (checked before it is registered).
    Import(ImportArgs),
}

/// Just an output format.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct FormatArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// One snapshot.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct SnapshotRef {
    /// Snapshot name or unambiguous ID prefix.
    #[arg(value_name = "S")]
    pub snapshot: String,
}

/// Snapshots.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct SnapshotRefs {
    /// Snapshot names or unambiguous ID prefixes.
    #[arg(value_name = "S", required = true)]
    pub snapshots: Vec<String>,
}

/// `nestbox snapshot export`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ExportArgs {
    /// Snapshot name or unambiguous ID prefix.
    #[arg(value_name = "S")]
    pub snapshot: String,
    /// The archive to write (`-`: standard output).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
}

/// `nestbox snapshot import`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ImportArgs {
    /// The archive to read (`-`: standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `nestbox restore`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = SANDBOX_EXIT_CODES)]
pub struct RestoreArgs {
    /// The sandbox to put back.
    #[arg(value_name = "SB")]
    pub sandbox: String,
    /// Snapshot name or unambiguous ID prefix.
    #[arg(value_name = "S")]
    pub snapshot: String,
}

/// `nestbox clone`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct CloneArgs {
    /// Snapshot name or unambiguous ID prefix.
    #[arg(value_name = "S")]
    pub snapshot: String,
    /// The new sandbox's name (with -n: NAME-1, NAME-2, …).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// How many sandboxes to make.
    #[arg(short = 'n', long = "count", value_name = "COUNT", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub count: u32,
    /// How memory comes back: copy (read it all first), lazy (on first touch, through
    /// userfaultfd) or shared (the snapshot's memory mapped copy-on-write).
    #[arg(long, value_name = "MODE", default_value = "shared")]
    pub restore_mode: nestbox_backend::RestoreMode,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Exit codes of commands that name a sandbox, shown in their `--help`.
pub const SANDBOX_EXIT_CODES: &str = "\
Exit codes:
  the command's   exec: the command ran and exited (128+N: killed by signal N; 124: --timeout)
  2               bad flags or values
  118             the sandbox is not in a state that allows this (e.g. exec on a stopped one)
  119             the name is already taken
  120             the ID prefix is ambiguous (the candidates are listed)
  121             no such sandbox
  122             malformed sandbox name or ID
  123             another operation held the sandbox too long
  125             nestbox itself failed";

/// Output format for commands a person may script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Human-readable.
    #[default]
    Table,
    /// JSON.
    Json,
}

/// The VM a sandbox gets: shared by `run` and `create`.
#[derive(Debug, Clone, Args)]
#[deny(missing_docs)]
pub struct VmArgs {
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = nestbox_model::defaults::DEFAULT_VCPUS, value_parser = parse_vcpus)]
    pub cpus: u8,
    /// Guest memory: 512M, 1G, 2048 (MiB when no unit).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_memory)]
    pub memory: u32,
    /// Set an environment variable for commands (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<EnvVar>,
    /// How long the guest may take to boot [default: 60s; 300s for a cloud image].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub boot_timeout: Option<Duration>,
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
    /// Run on this image (a name, name:tag or ID prefix from `nestbox image ls`): the sandbox
    /// gets its own copy-on-write disk over it, and the image's env, workdir and user.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// The size of the sandbox's disk over its image (at least the image's): 2G, 512M. The
    /// guest's root filesystem grows to fill it.
    #[arg(long, value_name = "SIZE", requires = "image", value_parser = parse_disk_size)]
    pub disk_size: Option<u32>,
    /// A data disk: a disk image file (raw or qcow2, with ext4) mounted at GUEST_PATH, read-only
    /// with `:ro` (repeatable).
    #[arg(long = "volume", short = 'v', value_name = "PATH:GUEST_PATH[:ro]")]
    pub volumes: Vec<nestbox_engine::Volume>,
    /// UEFI firmware for a cloud image (default: OVMF from the ovmf package for QEMU; Cloud
    /// Hypervisor's CLOUDHV.fd or hypervisor-fw).
    #[arg(long, value_name = "PATH", requires = "image")]
    pub firmware: Option<PathBuf>,
    /// An SSH public key for a cloud image's cloud-init to authorize: the key itself or a file
    /// of keys (repeatable).
    #[arg(long = "ssh-key", value_name = "KEY|FILE", requires = "image")]
    pub ssh_keys: Vec<String>,
}

/// How long a guest may take to boot when `--boot-timeout` is not given.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// `nestbox image …`.
#[derive(Debug, Subcommand)]
#[deny(missing_docs)]
pub enum ImageCommand {
    /// Build an image.
    #[command(subcommand)]
    Build(ImageBuild),
    /// Import a directory, a tarball (plain, gzip, zstd), an OCI image layout or a `docker save`
    /// archive as an image.
    Import(ImageImportArgs),
    /// Pull an image from an OCI registry: registry/repo:tag or registry/repo@sha256:….
    Pull(ImagePullArgs),
    /// List images.
    Ls(ImageLsArgs),
    /// Show one image as JSON.
    Inspect(ImageArg),
    /// Remove images no sandbox uses.
    Rm(ImageRmArgs),
    /// Remove unnamed images no sandbox uses.
    Prune(ImageLsArgs),
}

/// `nestbox image build …`.
#[derive(Debug, Subcommand)]
#[deny(missing_docs)]
pub enum ImageBuild {
    /// A minimal Debian with python3, from the package mirror (mmdebstrap).
    Debian(DebianArgs),
}

/// `nestbox image build debian`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct DebianArgs {
    /// The image's name.
    #[arg(long, value_name = "NAME", default_value = "debian")]
    pub name: String,
    /// The Debian suite.
    #[arg(long, value_name = "SUITE", default_value = "bookworm")]
    pub suite: String,
    /// The mirror (else the host's apt sources, else deb.debian.org).
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
}

/// `nestbox image import`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ImageImportArgs {
    /// Name the image (repeatable): name or name:tag.
    #[arg(long = "name", short = 'n', value_name = "NAME")]
    pub names: Vec<String>,
    /// The platform to pick from a multi-platform image.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", default_value = "linux/amd64")]
    pub platform: String,
    /// The image of an OCI layout to pick, by its ref name annotation.
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// The directory, tarball, layout or archive.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

/// `nestbox image pull`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ImagePullArgs {
    /// Name the image (repeatable; default: the reference without its registry).
    #[arg(long = "name", short = 'n', value_name = "NAME")]
    pub names: Vec<String>,
    /// The platform to pick from a multi-platform image.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", default_value = "linux/amd64")]
    pub platform: String,
    /// A registry (host:port) spoken to over plain HTTP (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure: Vec<String>,
    /// User name for the registry; the password is read from $NESTBOX_REGISTRY_PASSWORD.
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// Refuse an image whose layers add up to more than this (e.g. 2G).
    #[arg(long, value_name = "SIZE", value_parser = parse_disk_size)]
    pub max_size: Option<u32>,
    /// The image reference.
    #[arg(value_name = "REFERENCE")]
    pub reference: String,
}

/// `nestbox image ls` and `prune`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ImageLsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `nestbox image inspect`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ImageArg {
    /// A name, name:tag or ID prefix.
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

/// `nestbox image rm`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ImageRmArgs {
    /// Names, name:tags or ID prefixes.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// `nestbox run`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct RunArgs {
    /// The VM.
    #[command(flatten)]
    pub vm: VmArgs,
    /// Keep the sandbox running after CMD is started, and print its ID (CMD runs in the
    /// background; without CMD the sandbox just runs).
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Name the sandbox (it is listed by `ps` while it runs, and removed after, unless -d).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Label the sandbox (repeatable; with -d or --name).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Working directory of CMD in the guest.
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// Kill CMD after this long (30s, 500ms, 2m); exit code 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// The command and its arguments.
    #[arg(required_unless_present = "detach", trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `nestbox create`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = SANDBOX_EXIT_CODES)]
pub struct CreateArgs {
    /// The VM.
    #[command(flatten)]
    pub vm: VmArgs,
    /// The sandbox's name: letters, digits, '_', '.', '-' (one is made up when absent).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Label the sandbox (repeatable).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// A command on one or more sandboxes.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = SANDBOX_EXIT_CODES)]
pub struct SandboxesArgs {
    /// Sandbox IDs, names or unambiguous ID prefixes.
    #[arg(required = true, value_name = "SB")]
    pub sandboxes: Vec<String>,
}

/// A command on one sandbox.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = SANDBOX_EXIT_CODES)]
pub struct SandboxArg {
    /// Sandbox ID, name or unambiguous ID prefix.
    #[arg(value_name = "SB")]
    pub sandbox: String,
}

/// `nestbox stop`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = SANDBOX_EXIT_CODES)]
pub struct StopArgs {
    /// How long the guest gets to power off before it is killed.
    #[arg(long, short = 't', value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Sandbox IDs, names or unambiguous ID prefixes.
    #[arg(required = true, value_name = "SB")]
    pub sandboxes: Vec<String>,
}

/// `nestbox rm`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = SANDBOX_EXIT_CODES)]
pub struct RmArgs {
    /// Kill running sandboxes first.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Sandbox IDs, names or unambiguous ID prefixes.
    #[arg(required = true, value_name = "SB")]
    pub sandboxes: Vec<String>,
}

/// `nestbox exec`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ExecArgs {
    /// Keep stdin open and forward it to the command.
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Give the command a terminal (raw mode here, window size forwarded).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Set an environment variable (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<EnvVar>,
    /// Working directory in the guest.
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// Run as this user: uid, uid:gid, name or name:group.
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: Option<String>,
    /// Kill the command after this long; exit code 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Sandbox ID, name or unambiguous ID prefix.
    #[arg(value_name = "SB")]
    pub sandbox: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `nestbox logs`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = SANDBOX_EXIT_CODES)]
pub struct LogsArgs {
    /// Keep printing what the console writes.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<usize>,
    /// Sandbox ID, name or unambiguous ID prefix.
    #[arg(value_name = "SB")]
    pub sandbox: String,
}

/// `nestbox ps`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct PsArgs {
    /// All sandboxes, not only running ones.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Only sandboxes with this label (`label=KEY=VALUE`; repeatable, all must match).
    #[arg(long, value_name = "label=KEY=VALUE")]
    pub filter: Vec<String>,
    /// Only print IDs.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `nestbox inspect`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
#[command(after_help = SANDBOX_EXIT_CODES)]
pub struct InspectArgs {
    /// Output format (JSON by default, as docker does).
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Sandbox ID, name or unambiguous ID prefix.
    #[arg(value_name = "SB")]
    pub sandbox: String,
}

/// `nestbox gc`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct GcArgs {
    /// Only list what would be removed, and why.
    #[arg(long)]
    pub dry_run: bool,
    /// How long a sandbox may stay half-created before it counts as abandoned.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_grace)]
    pub grace: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `nestbox shim`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ShimArgs {
    /// The state root.
    #[arg(long, value_name = "DIR")]
    pub home: PathBuf,
    /// The sandbox.
    #[arg(long, value_name = "ID")]
    pub id: String,
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

fn parse_disk_size(s: &str) -> Result<u32, String> {
    nestbox_model::parse_memory_mib(s).map_err(|e| e.to_string())
}

fn parse_env(s: &str) -> Result<EnvVar, String> {
    s.parse::<EnvVar>().map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    nestbox_model::parse_duration(s).map_err(|e| e.to_string())
}

/// A grace period, which unlike a timeout may be zero (`gc --grace 0s`: no grace at all).
fn parse_grace(s: &str) -> Result<Duration, String> {
    match nestbox_model::parse_duration(s) {
        Err(nestbox_model::ParseError::Zero { .. }) => Ok(Duration::ZERO),
        other => other.map_err(|e| e.to_string()),
    }
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
        assert_eq!(args.vm.cpus, 2);
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
        let err = Cli::try_parse_from(["nestbox", "stop", "--timeout", "soon", "sb"]).unwrap_err();
        assert!(err.render().to_string().lines().next().unwrap().contains("--timeout"));
    }

    #[test]
    fn test_gc_grace_may_be_zero() {
        let Command::Gc(args) = Cli::try_parse_from(["nestbox", "gc", "--grace", "0s"]).unwrap().command else {
            panic!("not gc")
        };
        assert_eq!(args.grace, Duration::ZERO);
        assert!(Cli::try_parse_from(["nestbox", "gc", "--grace", "soon"]).is_err());
    }

    #[test]
    fn test_exec_takes_the_sandbox_then_the_command() {
        let cli = Cli::try_parse_from(["nestbox", "exec", "-it", "-u", "1000", "web", "sh", "-c", "id -u"]).unwrap();
        let Command::Exec(args) = cli.command else { panic!("not exec") };
        assert!(args.interactive && args.tty);
        assert_eq!((args.sandbox.as_str(), args.user.as_deref()), ("web", Some("1000")));
        assert_eq!(args.command, ["sh", "-c", "id -u"]);
    }

    #[test]
    fn test_run_detached_needs_no_command_and_ls_is_ps() {
        let cli = Cli::try_parse_from(["nestbox", "run", "-d", "--name", "web"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert!(args.detach && args.command.is_empty());
        assert!(Cli::try_parse_from(["nestbox", "run"]).is_err(), "run without -d needs a command");
        assert!(matches!(Cli::try_parse_from(["nestbox", "ls", "-a"]).unwrap().command, Command::Ps(p) if p.all));
    }
}
