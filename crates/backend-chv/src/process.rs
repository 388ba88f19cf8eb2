//! The `cloud-hypervisor` process: its command line, starting it under supervision, stopping
//! it, and telling a crash from a clean exit.
//!
//! Command line: `--api-socket path=<dir>/api.sock --event-monitor path=<dir>/events.json`,
//! then optionally `--log-file <path>` and `-v` (repeated). Without `--log-file` the VMM logs to
//! stderr, which the supervisor keeps in the bounded `hypervisor.log`; stdout carries the guest
//! serial port (`Tty` mode, see [`crate::map`]) into the bounded `console.log`, and stdin, a raw
//! pseudo-terminal, carries keystrokes to it.
//!
//! Stopping: `vmm.shutdown` (the VMM shuts the VM down and exits), then SIGTERM, then SIGKILL
//! after a grace period; the supervisor checks that the PID is still the process it started
//! before each signal.
//!
//! Crash or clean: Cloud Hypervisor exits 0 after a vCPU error just as after a guest power-off
//! (both go through its exit event and `vmm_shutdown`). What tells them apart is what it wrote
//! first: an error line (`VCPU generated error`, `vCPU thread panicked`, `thread panicked`) in
//! its log, or a `guest`/`panic` event (pvpanic) in the event monitor's stream. The event
//! monitor writes one pretty-printed JSON object per event,
//! `{"timestamp":{"secs":..,"nanos":..},"source":"vm","event":"booted","properties":null}`,
//! one after another in the file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nestbox_backend::{BackendError, BackendKind, VmDirs};
use nestbox_supervise::{ExitReport, Supervised};
use serde::Deserialize;

use crate::client::ChvClient;

/// The event monitor's file in the VM directory.
pub const EVENTS_FILE_NAME: &str = "events.json";
/// Log lines Cloud Hypervisor writes when a vCPU or VMM thread failed (from its sources:
/// `vmm/src/cpu.rs`, and any thread's panic).
pub const CRASH_MARKERS: &[&str] = &["VCPU generated error", "vCPU thread panicked", "panicked"];
/// How many log lines [`classify_exit`]'s callers should look back through.
pub const CRASH_LOG_LINES: usize = 200;

/// The event-monitor file of the VM in `dirs`.
pub fn events_file(dirs: &VmDirs) -> PathBuf {
    dirs.root().join(EVENTS_FILE_NAME)
}

/// A path that cannot go into a `key=value,...` option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cloud-hypervisor cannot take {flag} {} (a comma splits its options)", path.display())]
pub struct ArgsError {
    /// The option.
    pub flag: &'static str,
    /// The path.
    pub path: PathBuf,
}

/// The command-line options nestbox passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChvArgs {
    /// `--api-socket path=<socket>`.
    pub api_socket: PathBuf,
    /// `--event-monitor path=<file>`.
    pub event_monitor: Option<PathBuf>,
    /// `--log-file <file>`; stderr when `None`.
    pub log_file: Option<PathBuf>,
    /// How many `-v` (0: warnings and errors; 1: info; 2: debug).
    pub verbosity: u8,
}

impl ChvArgs {
    /// The options for the VM in `dirs`: API socket and event monitor in the directory, logs to
    /// stderr, default verbosity.
    pub fn for_dirs(dirs: &VmDirs) -> Self {
        Self { api_socket: dirs.api_socket(), event_monitor: Some(events_file(dirs)), log_file: None, verbosity: 0 }
    }

    /// The argument vector (without the program).
    pub fn build(&self) -> Result<Vec<OsString>, ArgsError> {
        let mut argv = vec![OsString::from("--api-socket"), keyed("--api-socket", "path", &self.api_socket)?];
        if let Some(events) = &self.event_monitor {
            argv.push("--event-monitor".into());
            argv.push(keyed("--event-monitor", "path", events)?);
        }
        if let Some(log) = &self.log_file {
            argv.push("--log-file".into());
            argv.push(log.as_os_str().to_owned());
        }
        for _ in 0..self.verbosity {
            argv.push("-v".into());
        }
        Ok(argv)
    }
}

/// `key=<path>`, refusing a path CH's option parser would split.
fn keyed(flag: &'static str, key: &str, path: &Path) -> Result<OsString, ArgsError> {
    if path.as_os_str().as_encoded_bytes().contains(&b',') {
        return Err(ArgsError { flag, path: path.to_owned() });
    }
    let mut arg = OsString::from(format!("{key}="));
    arg.push(path.as_os_str());
    Ok(arg)
}

/// The event monitor's timestamp: time since the VMM started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct EventTimestamp {
    /// Whole seconds.
    pub secs: u64,
    /// Nanoseconds.
    pub nanos: u32,
}

/// One event from `--event-monitor`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChvEvent {
    /// When, since the VMM started.
    pub timestamp: EventTimestamp,
    /// Who: `vmm`, `vm`, `guest`, `virtio-device`, ...
    pub source: String,
    /// What: `booted`, `paused`, `shutdown`, `panic`, ...
    pub event: String,
    /// Details.
    #[serde(default)]
    pub properties: Option<BTreeMap<String, String>>,
}

impl ChvEvent {
    /// Whether this is `source`/`event`.
    pub fn is(&self, source: &str, event: &str) -> bool {
        self.source == source && self.event == event
    }
}

/// Parses the event monitor's stream: JSON objects one after another. Stops at the first
/// object that does not parse (a torn last write).
pub fn parse_events(text: &str) -> Vec<ChvEvent> {
    serde_json::Deserializer::from_str(text).into_iter::<ChvEvent>().map_while(Result::ok).collect()
}

/// Reads and parses the event file; empty when it is missing or unreadable.
pub fn read_events(path: &Path) -> Vec<ChvEvent> {
    std::fs::read_to_string(path).map(|text| parse_events(&text)).unwrap_or_default()
}

/// How a Cloud Hypervisor process ended, as far as its exit status, log and events tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitCause {
    /// It exited 0 after a shutdown we asked for or a guest power-off, with no sign of a crash.
    Clean,
    /// We signalled it (SIGTERM or SIGKILL after a failed graceful stop).
    Forced {
        /// The signal.
        signal: i32,
    },
    /// It crashed: a non-zero exit, a signal we did not send, or exit 0 after a vCPU or thread
    /// failure or a guest panic.
    Crash {
        /// Its exit status.
        report: ExitReport,
        /// The evidence: the log line or event that tells, or the exit status.
        reason: String,
    },
}

impl ExitCause {
    /// Whether the VM died rather than stopped.
    pub fn is_crash(&self) -> bool {
        matches!(self, ExitCause::Crash { .. })
    }
}

/// Classifies an exit from its status, the VMM's last log lines, its events, and whether we
/// sent it signals.
pub fn classify_exit(report: ExitReport, log_tail: &[String], events: &[ChvEvent], signalled: bool) -> ExitCause {
    if let Some(signal) = report.signal {
        return if signalled {
            ExitCause::Forced { signal }
        } else {
            ExitCause::Crash { report, reason: format!("killed by signal {signal}") }
        };
    }
    let evidence = log_tail
        .iter()
        .find(|line| CRASH_MARKERS.iter().any(|marker| line.contains(marker)))
        .map(|line| line.trim().to_owned())
        .or_else(|| {
            events.iter().find(|e| e.is("guest", "panic")).map(|_| "guest panicked (pvpanic event)".to_owned())
        });
    match (report.code, evidence) {
        (Some(0), None) => ExitCause::Clean,
        (_, Some(reason)) => ExitCause::Crash { report, reason },
        (Some(code), None) => {
            let reason = log_tail.iter().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_owned());
            ExitCause::Crash { report, reason: reason.unwrap_or_else(|| format!("exited with code {code}")) }
        }
        (None, None) => ExitCause::Crash { report, reason: "ended with no exit status".into() },
    }
}

/// How long `cloud-hypervisor --version` may take.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// The version in `cloud-hypervisor --version` output (`cloud-hypervisor v53.0` → `v53.0`).
pub fn parse_version(stdout: &str) -> Option<String> {
    let line = stdout.lines().find(|l| !l.trim().is_empty())?;
    let word =
        line.split_whitespace().find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))?;
    Some(word.to_owned())
}

/// Runs `binary --version` (for `nestbox doctor`) and returns the version it prints.
pub async fn binary_version(binary: &Path) -> Result<String, BackendError> {
    let backend = BackendKind::CloudHypervisor;
    let run = tokio::process::Command::new(binary).arg("--version").kill_on_drop(true).output();
    let output = match tokio::time::timeout(VERSION_TIMEOUT, run).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => {
            return Err(BackendError::Io { context: format!("run {} --version", binary.display()), source });
        }
        Err(_) => {
            return Err(BackendError::Launch {
                backend,
                reason: format!("{} --version gave no answer within {VERSION_TIMEOUT:?}", binary.display()),
            });
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    match parse_version(&stdout) {
        Some(version) if output.status.success() => Ok(version),
        _ => Err(BackendError::Launch {
            backend,
            reason: format!("{} --version ({}) printed {:?}", binary.display(), output.status, stdout.trim()),
        }),
    }
}

/// Removes sockets a previous run left in the VM directory: Cloud Hypervisor refuses to bind
/// over an existing file.
pub fn remove_stale_sockets(dirs: &VmDirs) -> std::io::Result<()> {
    for path in [dirs.api_socket(), crate::map::vsock_socket(dirs)] {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Stops the VMM: `vmm.shutdown` and up to `grace` for it to exit, then SIGTERM and, after
/// `grace` more, SIGKILL. Returns how it ended and whether signals were needed.
pub async fn stop(child: &Supervised, client: &ChvClient, grace: Duration) -> (ExitReport, bool) {
    if let Some(report) = child.try_wait() {
        return (report, false);
    }
    match client.vmm_shutdown().await {
        Ok(()) => {
            if let Ok(report) = tokio::time::timeout(grace, child.wait()).await {
                return (report, false);
            }
            tracing::warn!(pid = child.pid(), "cloud-hypervisor did not exit after vmm.shutdown; signalling");
        }
        Err(e) => {
            if let Some(report) = child.try_wait() {
                return (report, false);
            }
            tracing::warn!(pid = child.pid(), error = %e.message(), "vmm.shutdown failed; signalling");
        }
    }
    (child.terminate(grace).await, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitReport {
        ExitReport { code: Some(code), signal: None }
    }

    #[test]
    fn test_parse_version() {
        assert_eq!(parse_version("cloud-hypervisor v53.0\n").as_deref(), Some("v53.0"));
        assert_eq!(parse_version("\ncloud-hypervisor v41.0-12-gabcdef\n").as_deref(), Some("v41.0-12-gabcdef"));
        assert_eq!(parse_version("usage: ..."), None);
    }

    #[tokio::test]
    async fn test_binary_version_of_a_non_hypervisor_fails() {
        let Some(echo) = nestbox_supervise::find_program("true") else {
            eprintln!("skipped: no true on PATH");
            return;
        };
        let err = binary_version(&echo).await.unwrap_err();
        assert!(err.to_string().contains("--version"), "{err}");
    }

    #[test]
    fn test_args_for_dirs() {
        let args = ChvArgs::for_dirs(&VmDirs::new("/run/vm"));
        let argv = args.build().unwrap();
        assert_eq!(argv, ["--api-socket", "path=/run/vm/api.sock", "--event-monitor", "path=/run/vm/events.json"]);
        let verbose = ChvArgs { log_file: Some("/l/ch.log".into()), verbosity: 2, ..args };
        let argv = verbose.build().unwrap();
        assert_eq!(&argv[4..], ["--log-file", "/l/ch.log", "-v", "-v"]);
    }

    #[test]
    fn test_args_refuse_comma_paths() {
        let args = ChvArgs::for_dirs(&VmDirs::new("/run/a,b"));
        let err = args.build().unwrap_err();
        assert_eq!(err.flag, "--api-socket");
        assert_eq!(
            err.to_string(),
            "cloud-hypervisor cannot take --api-socket /run/a,b/api.sock (a comma splits its options)"
        );
    }

    #[test]
    fn test_parse_events_pretty_stream_and_torn_tail() {
        let text = r#"{
  "timestamp": {
    "secs": 0,
    "nanos": 1200
  },
  "source": "vmm",
  "event": "starting",
  "properties": null
}

{
  "timestamp": {"secs": 1, "nanos": 5},
  "source": "vm",
  "event": "booted",
  "properties": {"id": "x"}
}

{"timestamp": {"secs": 2, "#;
        let events = parse_events(text);
        assert_eq!(events.len(), 2);
        assert!(events[0].is("vmm", "starting"));
        assert!(events[1].is("vm", "booted"));
        assert_eq!(events[1].properties.as_ref().unwrap()["id"], "x");
        assert!(parse_events("").is_empty());
        assert!(parse_events("garbage").is_empty());
    }

    #[test]
    fn test_classify_exit_zero_after_vcpu_error_is_a_crash() {
        let log = vec![
            "cloud-hypervisor: 0.023199s: <vcpu0> ERROR:vmm/src/cpu.rs:1460 -- VCPU generated error: VcpuRun(...)"
                .to_owned(),
        ];
        let cause = classify_exit(exit(0), &log, &[], false);
        let ExitCause::Crash { reason, .. } = &cause else { panic!("{cause:?}") };
        assert!(reason.contains("VCPU generated error"), "{reason}");
        assert!(cause.is_crash());
    }

    #[test]
    fn test_classify_exit_guest_panic_event_is_a_crash() {
        let events =
            parse_events(r#"{"timestamp":{"secs":3,"nanos":0},"source":"guest","event":"panic","properties":null}"#);
        assert!(classify_exit(exit(0), &[], &events, false).is_crash());
    }

    #[test]
    fn test_classify_exit_clean_forced_and_failed() {
        let events =
            parse_events(r#"{"timestamp":{"secs":3,"nanos":0},"source":"vmm","event":"shutdown","properties":null}"#);
        assert_eq!(classify_exit(exit(0), &["info line".into()], &events, false), ExitCause::Clean);
        assert_eq!(
            classify_exit(ExitReport { code: None, signal: Some(9) }, &[], &[], true),
            ExitCause::Forced { signal: 9 }
        );
        assert!(classify_exit(ExitReport { code: None, signal: Some(11) }, &[], &[], false).is_crash());
        let cause = classify_exit(exit(1), &["Error booting VM: bad kernel".into(), "".into()], &[], false);
        assert_eq!(cause, ExitCause::Crash { report: exit(1), reason: "Error booting VM: bad kernel".into() });
    }
}
