//! A fake Firecracker API: the real pre-boot / runtime state machine, real error texts, and a
//! server for it on a Unix socket.
//!
//! [`FakeFirecracker`] is pure (no I/O: it neither opens the kernel, drives or TAP devices, nor
//! writes snapshot files). It follows Firecracker v1.16's `rpc_interface.rs`:
//! - Pre-boot configuration (`/machine-config`, `/boot-source`, `/drives/{id}`,
//!   `/network-interfaces/{id}`, `/vsock`, `/balloon`, `/entropy`, `/mmds/config`, `/serial`,
//!   `/cpu-config`, `/logger`, `/metrics`) is refused once the microVM runs, with
//!   "The requested operation is not supported after starting the microVM.".
//! - Runtime operations (`PATCH /vm`, `/snapshot/create`, `PATCH /balloon`, balloon statistics,
//!   `PATCH /drives|/network-interfaces`, `FlushMetrics`, `SendCtrlAltDel`) are refused before
//!   boot with "... not supported before starting the microVM.".
//! - `InstanceStart` needs a boot source; machine config defaults to 1 vCPU / 128 MiB.
//! - `PUT /snapshot/load` is accepted only by a fresh process: anything but the logger and the
//!   metrics configured makes it fail with "Loading a microVM snapshot not allowed after
//!   configuring boot-specific resources."; it leaves the VM `Paused` (or running with
//!   `resume_vm`).
//! - `PUT /snapshot/create` needs a paused VM. Pausing a paused VM and resuming a running one
//!   succeed, as on the real VMM (the vCPUs answer the event either way).
//! - Bodies are decoded with `deny_unknown_fields`, like Firecracker's structs; decode errors
//!   answer 400 with Firecracker's "An error occurred when deserializing the json body of a
//!   request: ..." text.
//! - `SendCtrlAltDel` after boot makes the process "exit" (the guest reboots, Firecracker exits
//!   0): [`FakeFirecracker::exit_requested`] turns true and the served state answers nothing
//!   more.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use nestbox_uds_http::server::Reply;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::fake::{FakeHandler, FakeServer};
use crate::spec::SpecValidator;

/// The version the fake reports.
pub const FIRECRACKER_VERSION: &str = "1.16.1";
/// Firecracker's application name in `GET /`.
pub const APP_NAME: &str = "Firecracker";
/// Firecracker's instance id when `--id` is not given.
pub const DEFAULT_INSTANCE_ID: &str = "anonymous-instance";
/// Default vCPU count.
pub const DEFAULT_VCPUS: u8 = 1;
/// Default memory size.
pub const DEFAULT_MEM_MIB: u64 = 128;
/// Largest vCPU count Firecracker accepts.
pub const MAX_VCPUS: u8 = 32;

/// Fault after boot.
pub const NOT_SUPPORTED_POST_BOOT: &str = "The requested operation is not supported after starting the microVM.";
/// Fault before boot.
pub const NOT_SUPPORTED_PRE_BOOT: &str = "The requested operation is not supported before starting the microVM.";
/// Fault of a snapshot load into a configured process.
pub const LOAD_NOT_ALLOWED: &str =
    "Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.";
/// Fault of `InstanceStart` without a boot source.
pub const MISSING_KERNEL: &str = "Start microvm error: Cannot start microvm without kernel configuration.";
/// Fault of a snapshot of a running VM.
pub const SNAPSHOT_WHILE_RUNNING: &str = "Create snapshot error: Cannot save the microVM state: Operation not allowed: save/restore unavailable while running";
/// Fault when a path id and a body id differ.
pub const ID_MISMATCH: &str = "The id from the path does not match the id from the body!";

/// The instance state of `GET /`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FcState {
    /// Not booted yet.
    NotStarted,
    /// vCPUs running.
    Running,
    /// vCPUs paused.
    Paused,
}

impl FcState {
    /// The spec's text for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            FcState::NotStarted => "Not started",
            FcState::Running => "Running",
            FcState::Paused => "Paused",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct TokenBucket {
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    one_time_burst: Option<u64>,
    refill_time: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
struct RateLimiter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bandwidth: Option<TokenBucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ops: Option<TokenBucket>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
enum HugePages {
    #[default]
    None,
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct MachineConfig {
    vcpu_count: u8,
    mem_size_mib: u64,
    #[serde(default)]
    smt: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpu_template: Option<String>,
    #[serde(default)]
    track_dirty_pages: bool,
    #[serde(default)]
    huge_pages: HugePages,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            vcpu_count: DEFAULT_VCPUS,
            mem_size_mib: DEFAULT_MEM_MIB,
            smt: false,
            cpu_template: None,
            track_dirty_pages: false,
            huge_pages: HugePages::None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MachineConfigUpdate {
    vcpu_count: Option<u8>,
    mem_size_mib: Option<u64>,
    smt: Option<bool>,
    cpu_template: Option<String>,
    track_dirty_pages: Option<bool>,
    huge_pages: Option<HugePages>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct BootSource {
    kernel_image_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    initrd_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot_args: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Drive {
    drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partuuid: Option<String>,
    is_root_device: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    is_read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_on_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    io_engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    socket: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialDrive {
    drive_id: String,
    path_on_host: Option<String>,
    rate_limiter: Option<RateLimiter>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct NetworkInterface {
    iface_id: String,
    host_dev_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    guest_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtu: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tx_rate_limiter: Option<RateLimiter>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialNetworkInterface {
    iface_id: String,
    #[allow(dead_code)] // decoded to refuse unknown fields; the fake keeps no limiter state
    rx_rate_limiter: Option<RateLimiter>,
    #[allow(dead_code)]
    tx_rate_limiter: Option<RateLimiter>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Vsock {
    guest_cid: u32,
    uds_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vsock_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Balloon {
    amount_mib: u32,
    deflate_on_oom: bool,
    #[serde(default)]
    stats_polling_interval_s: u16,
    #[serde(default)]
    free_page_hinting: bool,
    #[serde(default)]
    free_page_reporting: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BalloonUpdate {
    amount_mib: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BalloonStatsUpdate {
    stats_polling_interval_s: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
struct Entropy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_limiter: Option<RateLimiter>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Logger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    show_level: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    show_log_origin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    module: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Metrics {
    metrics_path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceAction {
    action_type: ActionType,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
enum ActionType {
    FlushMetrics,
    InstanceStart,
    SendCtrlAltDel,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmPatch {
    state: VmStateWanted,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
enum VmStateWanted {
    Paused,
    Resumed,
}

/// The snapshot kind.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum SnapshotType {
    /// All of memory.
    #[default]
    Full,
    /// Only pages dirtied since the last snapshot.
    Diff,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotCreate {
    snapshot_path: String,
    mem_file_path: String,
    #[serde(default)]
    snapshot_type: SnapshotType,
}

/// How a snapshot's memory is loaded.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum MemBackendType {
    /// Memory is read from a file.
    File,
    /// Page faults are served by a userfaultfd handler behind a Unix socket.
    Uffd,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemBackend {
    backend_type: MemBackendType,
    backend_path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkOverride {
    #[allow(dead_code)] // decoded to refuse unknown fields
    iface_id: String,
    #[allow(dead_code)]
    host_dev_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VsockOverride {
    #[allow(dead_code)] // decoded to refuse unknown fields
    uds_path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotLoad {
    snapshot_path: String,
    mem_file_path: Option<String>,
    mem_backend: Option<MemBackend>,
    #[allow(dead_code)] // decoded to refuse unknown fields
    enable_diff_snapshots: Option<bool>,
    #[allow(dead_code)]
    track_dirty_pages: Option<bool>,
    #[serde(default)]
    resume_vm: bool,
    #[allow(dead_code)]
    network_overrides: Option<Vec<NetworkOverride>>,
    #[allow(dead_code)]
    vsock_override: Option<VsockOverride>,
    #[allow(dead_code)]
    clock_realtime: Option<bool>,
}

/// A snapshot the fake took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTaken {
    /// The microVM state file.
    pub snapshot_path: String,
    /// The guest memory file.
    pub mem_file_path: String,
    /// Full or diff.
    pub snapshot_type: SnapshotType,
}

/// A snapshot the fake loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotLoaded {
    /// The microVM state file.
    pub snapshot_path: String,
    /// The memory backend kind (`File` for the deprecated `mem_file_path`).
    pub backend_type: MemBackendType,
    /// The memory file or the UFFD handler's socket.
    pub backend_path: String,
    /// Whether the VM was resumed right away.
    pub resumed: bool,
}

/// The fake's state machine. Feed it requests with [`FakeFirecracker::handle`].
#[derive(Debug, Clone)]
pub struct FakeFirecracker {
    id: String,
    state: FcState,
    /// Something other than the logger and metrics was configured (Firecracker's `boot_path`).
    boot_path: bool,
    machine: MachineConfig,
    boot_source: Option<BootSource>,
    drives: BTreeMap<String, Drive>,
    nets: BTreeMap<String, NetworkInterface>,
    vsock: Option<Vsock>,
    balloon: Option<Balloon>,
    entropy: Option<Entropy>,
    logger: Option<Logger>,
    metrics: Option<Metrics>,
    mmds: Option<Value>,
    snapshots: Vec<SnapshotTaken>,
    loaded: Option<SnapshotLoaded>,
    metrics_flushes: u32,
    exit_requested: bool,
}

impl Default for FakeFirecracker {
    fn default() -> Self {
        Self::new()
    }
}

type Answer = (u16, Vec<u8>);

fn fault(message: impl Into<String>) -> Answer {
    let message: String = message.into();
    (400, json!({ "fault_message": message }).to_string().into_bytes())
}

fn no_content() -> Answer {
    (204, Vec::new())
}

fn ok_json(value: Value) -> Answer {
    (200, value.to_string().into_bytes())
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Answer> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(fault("The request body is empty."));
    }
    serde_json::from_slice(body)
        .map_err(|e| fault(format!("An error occurred when deserializing the json body of a request: {e}.")))
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

impl FakeFirecracker {
    /// A fresh process with the default instance id.
    pub fn new() -> Self {
        Self::with_id(DEFAULT_INSTANCE_ID)
    }

    /// A fresh process started with `--id id`.
    pub fn with_id(id: &str) -> Self {
        FakeFirecracker {
            id: id.to_owned(),
            state: FcState::NotStarted,
            boot_path: false,
            machine: MachineConfig::default(),
            boot_source: None,
            drives: BTreeMap::new(),
            nets: BTreeMap::new(),
            vsock: None,
            balloon: None,
            entropy: None,
            logger: None,
            metrics: None,
            mmds: None,
            snapshots: Vec::new(),
            loaded: None,
            metrics_flushes: 0,
            exit_requested: false,
        }
    }

    /// The instance state.
    pub fn state(&self) -> FcState {
        self.state
    }

    /// The host side of the guest's vsock device, once configured (`PUT /vsock` `uds_path`).
    pub fn vsock_uds_path(&self) -> Option<std::path::PathBuf> {
        self.vsock.as_ref().map(|v| std::path::PathBuf::from(&v.uds_path))
    }

    /// True once `SendCtrlAltDel` reached a booted guest: the process should exit 0.
    pub fn exit_requested(&self) -> bool {
        self.exit_requested
    }

    /// Snapshots created so far.
    pub fn snapshots(&self) -> &[SnapshotTaken] {
        &self.snapshots
    }

    /// The snapshot this process was restored from.
    pub fn loaded_snapshot(&self) -> Option<&SnapshotLoaded> {
        self.loaded.as_ref()
    }

    /// How many `FlushMetrics` actions succeeded.
    pub fn metrics_flushes(&self) -> u32 {
        self.metrics_flushes
    }

    /// Handles one request; returns the status and the body (empty for 204).
    pub fn handle(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let path = path.split('?').next().unwrap_or(path);
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = method.to_ascii_uppercase();
        let result = match (method.as_str(), segments.as_slice()) {
            ("GET", [""]) => Ok(self.instance_info()),
            ("GET", ["version"]) => Ok(ok_json(json!({ "firecracker_version": FIRECRACKER_VERSION }))),
            ("GET", ["vm", "config"]) => Ok(self.full_config()),
            ("GET", ["machine-config"]) => Ok(ok_json(json!(self.machine))),
            ("PUT", ["machine-config"]) => self.put_machine_config(body, false),
            ("PATCH", ["machine-config"]) => self.put_machine_config(body, true),
            ("PUT", ["boot-source"]) => self.preboot(|s| {
                let b: BootSource = decode(body)?;
                s.boot_source = Some(b);
                Ok(no_content())
            }),
            ("PUT", ["drives", id]) => self.put_drive(id, body),
            ("PATCH", ["drives", id]) => self.patch_drive(id, body),
            ("PUT", ["network-interfaces", id]) => self.put_net(id, body),
            ("PATCH", ["network-interfaces", id]) => self.patch_net(id, body),
            ("PUT", ["vsock"]) => self.preboot(|s| {
                let v: Vsock = decode(body)?;
                if v.guest_cid < 3 {
                    return Err(fault(format!("Vsock config error: Invalid guest CID: {}", v.guest_cid)));
                }
                s.vsock = Some(v);
                Ok(no_content())
            }),
            ("PUT", ["balloon"]) => self.preboot(|s| {
                let b: Balloon = decode(body)?;
                if u64::from(b.amount_mib) > s.machine.mem_size_mib {
                    return Err(fault("Balloon config error: Amount of pages requested is too large."));
                }
                s.balloon = Some(b);
                Ok(no_content())
            }),
            ("GET", ["balloon"]) => match &self.balloon {
                Some(b) => Ok(ok_json(json!(b))),
                None => Err(fault("Balloon config error: No balloon device found.")),
            },
            ("PATCH", ["balloon"]) => self.runtime(|s| {
                let u: BalloonUpdate = decode(body)?;
                let mem = s.machine.mem_size_mib;
                let b = s
                    .balloon
                    .as_mut()
                    .ok_or_else(|| fault("Balloon update error: Invalid request: Device not found."))?;
                if u64::from(u.amount_mib) > mem {
                    return Err(fault("Balloon update error: Amount of pages requested is too large."));
                }
                b.amount_mib = u.amount_mib;
                Ok(no_content())
            }),
            ("GET", ["balloon", "statistics"]) => self.runtime(|s| {
                let b = s
                    .balloon
                    .as_ref()
                    .ok_or_else(|| fault("Balloon update error: Invalid request: Device not found."))?;
                if b.stats_polling_interval_s == 0 {
                    return Err(fault("Balloon update error: Statistics for the balloon device are not enabled"));
                }
                let pages = u64::from(b.amount_mib) * 256;
                Ok(ok_json(json!({
                    "target_pages": pages, "actual_pages": pages,
                    "target_mib": b.amount_mib, "actual_mib": b.amount_mib,
                })))
            }),
            ("PATCH", ["balloon", "statistics"]) => self.runtime(|s| {
                let u: BalloonStatsUpdate = decode(body)?;
                let b = s
                    .balloon
                    .as_mut()
                    .ok_or_else(|| fault("Balloon update error: Invalid request: Device not found."))?;
                if (b.stats_polling_interval_s == 0) != (u.stats_polling_interval_s == 0) {
                    return Err(fault("Balloon update error: Cannot enable/disable the statistics after boot."));
                }
                b.stats_polling_interval_s = u.stats_polling_interval_s;
                Ok(no_content())
            }),
            ("PUT", ["entropy"]) => self.preboot(|s| {
                s.entropy = Some(decode(body)?);
                Ok(no_content())
            }),
            ("PUT", ["logger"]) => {
                if self.state != FcState::NotStarted {
                    Err(fault(NOT_SUPPORTED_POST_BOOT))
                } else {
                    decode::<Logger>(body).and_then(|l| {
                        let levels = ["error", "warning", "info", "debug", "trace", "off"];
                        if let Some(level) = &l.level
                            && !levels.contains(&level.to_ascii_lowercase().as_str())
                        {
                            return Err(fault(format!("Logger error: Failed to deserialize the log level: {level}")));
                        }
                        self.logger = Some(l);
                        Ok(no_content())
                    })
                }
            }
            ("PUT", ["metrics"]) => {
                if self.state != FcState::NotStarted {
                    Err(fault(NOT_SUPPORTED_POST_BOOT))
                } else if self.metrics.is_some() {
                    Err(fault("Metrics error: Reinitialization of metrics not allowed."))
                } else {
                    decode::<Metrics>(body).map(|m| {
                        self.metrics = Some(m);
                        no_content()
                    })
                }
            }
            ("PUT", ["mmds"]) => decode::<Value>(body).map(|v| {
                self.mmds = Some(v);
                no_content()
            }),
            ("GET", ["mmds"]) => Ok(ok_json(self.mmds.clone().unwrap_or(json!({})))),
            ("PUT", ["mmds", "config"]) | ("PUT", ["serial"]) | ("PUT", ["cpu-config"]) => {
                self.preboot(|_| decode::<Value>(body).map(|_| no_content()))
            }
            ("PUT", ["actions"]) => self.action(body),
            ("PATCH", ["vm"]) => self.patch_vm(body),
            ("PUT", ["snapshot", "create"]) => self.create_snapshot(body),
            ("PUT", ["snapshot", "load"]) => self.load_snapshot(body),
            _ => Err(fault(format!("Invalid request method and/or path: {method} {path}."))),
        };
        result.unwrap_or_else(|e| e)
    }

    /// Runs `f` only before boot, marking the process as configured for boot.
    fn preboot(&mut self, f: impl FnOnce(&mut Self) -> Result<Answer, Answer>) -> Result<Answer, Answer> {
        if self.state != FcState::NotStarted {
            return Err(fault(NOT_SUPPORTED_POST_BOOT));
        }
        let answer = f(self)?;
        self.boot_path = true;
        Ok(answer)
    }

    /// Runs `f` only after boot.
    fn runtime(&mut self, f: impl FnOnce(&mut Self) -> Result<Answer, Answer>) -> Result<Answer, Answer> {
        if self.state == FcState::NotStarted {
            return Err(fault(NOT_SUPPORTED_PRE_BOOT));
        }
        f(self)
    }

    fn instance_info(&self) -> Answer {
        ok_json(json!({
            "id": self.id,
            "state": self.state.as_str(),
            "vmm_version": FIRECRACKER_VERSION,
            "app_name": APP_NAME,
        }))
    }

    fn full_config(&self) -> Answer {
        ok_json(json!({
            "balloon": self.balloon,
            "drives": self.drives.values().collect::<Vec<_>>(),
            "boot-source": self.boot_source,
            "cpu-config": null,
            "logger": self.logger,
            "machine-config": self.machine,
            "metrics": self.metrics,
            "mmds-config": null,
            "network-interfaces": self.nets.values().collect::<Vec<_>>(),
            "vsock": self.vsock,
            "entropy": self.entropy,
        }))
    }

    fn put_machine_config(&mut self, body: &[u8], patch: bool) -> Result<Answer, Answer> {
        self.preboot(|s| {
            let update: MachineConfigUpdate = if patch {
                decode(body)?
            } else {
                // PUT replaces: the two required fields, the rest back to defaults.
                let full: MachineConfig = if body.iter().all(u8::is_ascii_whitespace) {
                    MachineConfig::default()
                } else {
                    decode(body)?
                };
                MachineConfigUpdate {
                    vcpu_count: Some(full.vcpu_count),
                    mem_size_mib: Some(full.mem_size_mib),
                    smt: Some(full.smt),
                    cpu_template: Some(full.cpu_template.unwrap_or_else(|| "None".into())),
                    track_dirty_pages: Some(full.track_dirty_pages),
                    huge_pages: Some(full.huge_pages),
                }
            };
            let mut next = s.machine.clone();
            if let Some(v) = update.vcpu_count {
                next.vcpu_count = v;
            }
            if let Some(m) = update.mem_size_mib {
                next.mem_size_mib = m;
            }
            if let Some(smt) = update.smt {
                next.smt = smt;
            }
            if let Some(t) = update.cpu_template {
                next.cpu_template = (t != "None").then_some(t);
            }
            if let Some(d) = update.track_dirty_pages {
                next.track_dirty_pages = d;
            }
            if let Some(h) = update.huge_pages {
                next.huge_pages = h;
            }
            if next.vcpu_count == 0
                || next.vcpu_count > MAX_VCPUS
                || (next.smt && next.vcpu_count > 1 && next.vcpu_count % 2 == 1)
            {
                return Err(fault("Machine config error: The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled."));
            }
            if next.mem_size_mib == 0
                || (next.huge_pages == HugePages::Hugetlbfs2M && next.mem_size_mib % 2 == 1)
            {
                return Err(fault("Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size."));
            }
            s.machine = next;
            Ok(no_content())
        })
    }

    fn put_drive(&mut self, id: &str, body: &[u8]) -> Result<Answer, Answer> {
        self.preboot(|s| {
            let d: Drive = decode(body)?;
            if d.drive_id != id {
                return Err(fault(ID_MISMATCH));
            }
            if d.is_root_device
                && s.drives
                    .values()
                    .any(|o| o.is_root_device && o.drive_id != d.drive_id)
            {
                return Err(fault(
                    "Drive config error: A root block device already exists!",
                ));
            }
            match (&d.path_on_host, &d.socket) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(fault(
                        "Drive config error: Unable to create the block device: exactly one of path_on_host or socket must be given",
                    ));
                }
            }
            s.drives.insert(d.drive_id.clone(), d);
            Ok(no_content())
        })
    }

    fn patch_drive(&mut self, id: &str, body: &[u8]) -> Result<Answer, Answer> {
        self.runtime(|s| {
            let p: PartialDrive = decode(body)?;
            if p.drive_id != id {
                return Err(fault(ID_MISMATCH));
            }
            let d = s
                .drives
                .get_mut(id)
                .ok_or_else(|| fault("Drive config error: Unable to patch the block device: Device not found"))?;
            if let Some(path) = p.path_on_host {
                d.path_on_host = Some(path);
            }
            if let Some(rl) = p.rate_limiter {
                d.rate_limiter = Some(rl);
            }
            Ok(no_content())
        })
    }

    fn put_net(&mut self, id: &str, body: &[u8]) -> Result<Answer, Answer> {
        self.preboot(|s| {
            let n: NetworkInterface = decode(body)?;
            if n.iface_id != id {
                return Err(fault(ID_MISMATCH));
            }
            if let Some(mac) = &n.guest_mac
                && !valid_mac(mac)
            {
                return Err(fault(format!(
                    "An error occurred when deserializing the json body of a request: invalid MAC address: {mac}."
                )));
            }
            if let Some(other) = s.nets.values().find(|o| {
                o.iface_id != n.iface_id
                    && (o.host_dev_name == n.host_dev_name || (o.guest_mac.is_some() && o.guest_mac == n.guest_mac))
            }) {
                return Err(fault(format!(
                    "Network config error: The host device name or guest MAC is already in use by {}",
                    other.iface_id
                )));
            }
            s.nets.insert(n.iface_id.clone(), n);
            Ok(no_content())
        })
    }

    fn patch_net(&mut self, id: &str, body: &[u8]) -> Result<Answer, Answer> {
        self.runtime(|s| {
            let p: PartialNetworkInterface = decode(body)?;
            if p.iface_id != id {
                return Err(fault(ID_MISMATCH));
            }
            if !s.nets.contains_key(id) {
                return Err(fault("Network config error: Could not find the network device"));
            }
            Ok(no_content())
        })
    }

    fn action(&mut self, body: &[u8]) -> Result<Answer, Answer> {
        let a: InstanceAction = decode(body)?;
        match a.action_type {
            ActionType::InstanceStart => {
                if self.state != FcState::NotStarted {
                    return Err(fault(NOT_SUPPORTED_POST_BOOT));
                }
                if self.boot_source.is_none() {
                    return Err(fault(MISSING_KERNEL));
                }
                self.state = FcState::Running;
                Ok(no_content())
            }
            ActionType::FlushMetrics => self.runtime(|s| {
                s.metrics_flushes += 1;
                Ok(no_content())
            }),
            ActionType::SendCtrlAltDel => self.runtime(|s| {
                s.exit_requested = true;
                Ok(no_content())
            }),
        }
    }

    fn patch_vm(&mut self, body: &[u8]) -> Result<Answer, Answer> {
        self.runtime(|s| {
            let p: VmPatch = decode(body)?;
            s.state = match p.state {
                VmStateWanted::Paused => FcState::Paused,
                VmStateWanted::Resumed => FcState::Running,
            };
            Ok(no_content())
        })
    }

    fn create_snapshot(&mut self, body: &[u8]) -> Result<Answer, Answer> {
        self.runtime(|s| {
            let c: SnapshotCreate = decode(body)?;
            if s.state != FcState::Paused {
                return Err(fault(SNAPSHOT_WHILE_RUNNING));
            }
            if c.snapshot_type == SnapshotType::Diff && !s.machine.track_dirty_pages {
                return Err(fault(
                    "Create snapshot error: Diff snapshots require dirty page tracking (track_dirty_pages) to be enabled.",
                ));
            }
            s.snapshots.push(SnapshotTaken {
                snapshot_path: c.snapshot_path,
                mem_file_path: c.mem_file_path,
                snapshot_type: c.snapshot_type,
            });
            Ok(no_content())
        })
    }

    fn load_snapshot(&mut self, body: &[u8]) -> Result<Answer, Answer> {
        if self.state != FcState::NotStarted {
            return Err(fault(NOT_SUPPORTED_POST_BOOT));
        }
        let l: SnapshotLoad = decode(body)?;
        let (backend_type, backend_path) = match (l.mem_file_path, l.mem_backend) {
            (Some(_), Some(_)) => {
                return Err(fault(
                    "An error occurred when deserializing the json body of a request: too many fields: only one of `mem_file_path` and `mem_backend` may be given.",
                ));
            }
            (None, None) => {
                return Err(fault(
                    "An error occurred when deserializing the json body of a request: missing field: either `mem_backend` or `mem_file_path` is required.",
                ));
            }
            (Some(path), None) => (MemBackendType::File, path),
            (None, Some(b)) => (b.backend_type, b.backend_path),
        };
        if self.boot_path {
            return Err(fault(LOAD_NOT_ALLOWED));
        }
        self.loaded =
            Some(SnapshotLoaded { snapshot_path: l.snapshot_path, backend_type, backend_path, resumed: l.resume_vm });
        self.state = if l.resume_vm { FcState::Running } else { FcState::Paused };
        Ok(no_content())
    }
}

/// The reply a spec violation gets: 400 with the message as `fault_message`.
pub fn violation_reply(message: &str) -> Reply {
    let (status, body) = fault(message);
    Reply::json(status, body)
}

/// Serves a fresh [`FakeFirecracker`] on `socket`, checked against the spec.
pub async fn serve(socket: &Path) -> std::io::Result<FakeServer> {
    serve_shared(socket, Arc::new(Mutex::new(FakeFirecracker::new()))).await
}

/// Serves `fake` on `socket`; the caller keeps a handle on the state (the stand-in binary
/// watches [`FakeFirecracker::exit_requested`]). After the exit request nothing is answered
/// with success: requests get a 400 as if the process had gone.
pub async fn serve_shared(socket: &Path, fake: Arc<Mutex<FakeFirecracker>>) -> std::io::Result<FakeServer> {
    let handler: FakeHandler = Arc::new(move |method, path, body| {
        let mut fc = fake.lock().unwrap_or_else(|e| e.into_inner());
        let (status, body) =
            if fc.exit_requested() { fault("The microVM has exited.") } else { fc.handle(method, path, body) };
        if status == 204 { Reply::empty(status) } else { Reply::json(status, body) }
    });
    FakeServer::bind(socket, SpecValidator::firecracker(), handler, violation_reply).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(fc: &mut FakeFirecracker, method: &str, path: &str, body: Value) -> (u16, Value) {
        let raw = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        let (status, out) = fc.handle(method, path, &raw);
        let v = if out.is_empty() { Value::Null } else { serde_json::from_slice(&out).unwrap() };
        (status, v)
    }

    fn ok(fc: &mut FakeFirecracker, method: &str, path: &str, body: Value) -> Value {
        let (s, v) = call(fc, method, path, body);
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    fn err(fc: &mut FakeFirecracker, method: &str, path: &str, body: Value) -> String {
        let (s, v) = call(fc, method, path, body);
        assert_eq!(s, 400, "{method} {path}: {v}");
        v["fault_message"].as_str().unwrap().to_owned()
    }

    fn configured() -> FakeFirecracker {
        let mut fc = FakeFirecracker::with_id("vm1");
        ok(&mut fc, "PUT", "/machine-config", json!({"vcpu_count": 2, "mem_size_mib": 256}));
        ok(&mut fc, "PUT", "/boot-source", json!({"kernel_image_path": "/k", "boot_args": "console=ttyS0"}));
        ok(
            &mut fc,
            "PUT",
            "/drives/rootfs",
            json!({"drive_id": "rootfs", "path_on_host": "/r", "is_root_device": true, "is_read_only": false}),
        );
        ok(
            &mut fc,
            "PUT",
            "/network-interfaces/eth0",
            json!({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}),
        );
        ok(&mut fc, "PUT", "/vsock", json!({"guest_cid": 3, "uds_path": "/v.sock"}));
        ok(&mut fc, "PUT", "/balloon", json!({"amount_mib": 0, "deflate_on_oom": true, "stats_polling_interval_s": 1}));
        ok(&mut fc, "PUT", "/entropy", json!({}));
        fc
    }

    fn running() -> FakeFirecracker {
        let mut fc = configured();
        ok(&mut fc, "PUT", "/actions", json!({"action_type": "InstanceStart"}));
        fc
    }

    #[test]
    fn instance_info_follows_the_state() {
        let mut fc = configured();
        let info = ok(&mut fc, "GET", "/", Value::Null);
        assert_eq!(
            info,
            json!({"id": "vm1", "state": "Not started", "vmm_version": "1.16.1", "app_name": "Firecracker"})
        );
        ok(&mut fc, "PUT", "/actions", json!({"action_type": "InstanceStart"}));
        assert_eq!(ok(&mut fc, "GET", "/", Value::Null)["state"], "Running");
        ok(&mut fc, "PATCH", "/vm", json!({"state": "Paused"}));
        assert_eq!(ok(&mut fc, "GET", "/", Value::Null)["state"], "Paused");
        ok(&mut fc, "PATCH", "/vm", json!({"state": "Resumed"}));
        assert_eq!(fc.state(), FcState::Running);
        assert_eq!(ok(&mut fc, "GET", "/version", Value::Null), json!({"firecracker_version": "1.16.1"}));
    }

    #[test]
    fn preboot_config_is_refused_after_start() {
        let mut fc = running();
        for (m, p, b) in [
            ("PUT", "/machine-config", json!({"vcpu_count": 1, "mem_size_mib": 128})),
            ("PATCH", "/machine-config", json!({"vcpu_count": 1})),
            ("PUT", "/boot-source", json!({"kernel_image_path": "/k"})),
            (
                "PUT",
                "/drives/d2",
                json!({"drive_id": "d2", "path_on_host": "/d", "is_root_device": false, "is_read_only": true}),
            ),
            ("PUT", "/network-interfaces/eth1", json!({"iface_id": "eth1", "host_dev_name": "tap1"})),
            ("PUT", "/vsock", json!({"guest_cid": 4, "uds_path": "/w"})),
            ("PUT", "/balloon", json!({"amount_mib": 1, "deflate_on_oom": false})),
            ("PUT", "/entropy", json!({})),
            ("PUT", "/logger", json!({"level": "Info"})),
            ("PUT", "/metrics", json!({"metrics_path": "/m"})),
            ("PUT", "/actions", json!({"action_type": "InstanceStart"})),
            ("PUT", "/snapshot/load", json!({"snapshot_path": "/s", "mem_file_path": "/m"})),
        ] {
            assert_eq!(err(&mut fc, m, p, b), NOT_SUPPORTED_POST_BOOT, "{m} {p}");
        }
    }

    #[test]
    fn runtime_operations_are_refused_before_start() {
        let mut fc = configured();
        for (m, p, b) in [
            ("PATCH", "/vm", json!({"state": "Paused"})),
            ("PATCH", "/vm", json!({"state": "Resumed"})),
            ("PUT", "/snapshot/create", json!({"snapshot_path": "/s", "mem_file_path": "/m"})),
            ("PATCH", "/balloon", json!({"amount_mib": 1})),
            ("GET", "/balloon/statistics", Value::Null),
            ("PATCH", "/balloon/statistics", json!({"stats_polling_interval_s": 2})),
            ("PATCH", "/drives/rootfs", json!({"drive_id": "rootfs", "path_on_host": "/x"})),
            ("PATCH", "/network-interfaces/eth0", json!({"iface_id": "eth0"})),
            ("PUT", "/actions", json!({"action_type": "FlushMetrics"})),
            ("PUT", "/actions", json!({"action_type": "SendCtrlAltDel"})),
        ] {
            assert_eq!(err(&mut fc, m, p, b), NOT_SUPPORTED_PRE_BOOT, "{m} {p}");
        }
        assert!(!fc.exit_requested());
    }

    #[test]
    fn start_needs_a_boot_source_and_defaults_the_machine() {
        let mut fc = FakeFirecracker::new();
        assert_eq!(err(&mut fc, "PUT", "/actions", json!({"action_type": "InstanceStart"})), MISSING_KERNEL);
        assert_eq!(fc.state(), FcState::NotStarted);
        assert_eq!(
            ok(&mut fc, "GET", "/machine-config", Value::Null),
            json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false, "track_dirty_pages": false, "huge_pages": "None"})
        );
        ok(&mut fc, "PUT", "/boot-source", json!({"kernel_image_path": "/k"}));
        ok(&mut fc, "PUT", "/actions", json!({"action_type": "InstanceStart"}));
        assert_eq!(fc.state(), FcState::Running);
        assert_eq!(ok(&mut fc, "GET", "/", Value::Null)["id"], DEFAULT_INSTANCE_ID);
    }

    #[test]
    fn machine_config_rules() {
        let mut fc = FakeFirecracker::new();
        ok(&mut fc, "PUT", "/machine-config", json!({"vcpu_count": 4, "mem_size_mib": 512, "track_dirty_pages": true}));
        ok(&mut fc, "PATCH", "/machine-config", json!({"mem_size_mib": 1024}));
        let mc = ok(&mut fc, "GET", "/machine-config", Value::Null);
        assert_eq!(
            (mc["vcpu_count"].as_u64(), mc["mem_size_mib"].as_u64(), mc["track_dirty_pages"].as_bool()),
            (Some(4), Some(1024), Some(true))
        );
        // PUT resets the optional fields
        ok(&mut fc, "PUT", "/machine-config", json!({"vcpu_count": 2, "mem_size_mib": 256}));
        assert_eq!(ok(&mut fc, "GET", "/machine-config", Value::Null)["track_dirty_pages"], false);
        assert!(
            err(&mut fc, "PUT", "/machine-config", json!({"vcpu_count": 3, "mem_size_mib": 256, "smt": true}))
                .contains("vCPU number is invalid")
        );
        assert!(
            err(&mut fc, "PUT", "/machine-config", json!({"vcpu_count": 0, "mem_size_mib": 256}))
                .contains("vCPU number is invalid")
        );
        assert!(
            err(&mut fc, "PUT", "/machine-config", json!({"vcpu_count": 2, "mem_size_mib": 0})).contains("memory size")
        );
        assert!(
            err(&mut fc, "PUT", "/machine-config", json!({"vcpu_count": 2, "mem_size_mib": 257, "huge_pages": "2M"}))
                .contains("memory size")
        );
        assert!(
            err(&mut fc, "PUT", "/machine-config", json!({"mem_size_mib": 256})).contains("missing field `vcpu_count`")
        );
        // a failed update changes nothing
        assert_eq!(ok(&mut fc, "GET", "/machine-config", Value::Null)["vcpu_count"], 2);
    }

    #[test]
    fn unknown_fields_and_bad_bodies_are_refused() {
        let mut fc = FakeFirecracker::new();
        let e = err(&mut fc, "PUT", "/boot-source", json!({"kernel_image_path": "/k", "kernel": "/k"}));
        assert!(
            e.starts_with("An error occurred when deserializing the json body of a request:")
                && e.contains("unknown field `kernel`"),
            "{e}"
        );
        let e = err(
            &mut fc,
            "PUT",
            "/drives/r",
            json!({"drive_id": "r", "path_on_host": "/r", "is_root_device": true, "rate_limiter": {"ops": {"size": 1, "refill_time": 1, "burst": 1}}}),
        );
        assert!(e.contains("unknown field `burst`"), "{e}");
        let e = err(&mut fc, "PUT", "/actions", json!({"action_type": "Reboot"}));
        assert!(e.contains("unknown variant `Reboot`"), "{e}");
        assert_eq!(err(&mut fc, "PUT", "/actions", Value::Null), "The request body is empty.");
        let e = err(&mut fc, "DELETE", "/vm", Value::Null);
        assert_eq!(e, "Invalid request method and/or path: DELETE /vm.");
        // nothing was configured by the failures: a snapshot load is still allowed
        ok(&mut fc, "PUT", "/snapshot/load", json!({"snapshot_path": "/s", "mem_file_path": "/m"}));
    }

    #[test]
    fn device_id_and_uniqueness_rules() {
        let mut fc = FakeFirecracker::new();
        assert_eq!(
            err(&mut fc, "PUT", "/drives/a", json!({"drive_id": "b", "path_on_host": "/r", "is_root_device": true})),
            ID_MISMATCH
        );
        ok(
            &mut fc,
            "PUT",
            "/drives/a",
            json!({"drive_id": "a", "path_on_host": "/r", "is_root_device": true, "is_read_only": true}),
        );
        ok(
            &mut fc,
            "PUT",
            "/drives/a",
            json!({"drive_id": "a", "path_on_host": "/r2", "is_root_device": true, "is_read_only": true}),
        );
        assert!(
            err(&mut fc, "PUT", "/drives/b", json!({"drive_id": "b", "path_on_host": "/r", "is_root_device": true}))
                .contains("root block device already exists")
        );
        assert!(
            err(&mut fc, "PUT", "/drives/c", json!({"drive_id": "c", "is_root_device": false}))
                .contains("path_on_host or socket")
        );
        assert_eq!(
            err(&mut fc, "PUT", "/network-interfaces/x", json!({"iface_id": "y", "host_dev_name": "t"})),
            ID_MISMATCH
        );
        assert!(
            err(
                &mut fc,
                "PUT",
                "/network-interfaces/x",
                json!({"iface_id": "x", "host_dev_name": "t", "guest_mac": "zz"})
            )
            .contains("MAC")
        );
        ok(&mut fc, "PUT", "/network-interfaces/x", json!({"iface_id": "x", "host_dev_name": "t"}));
        assert!(
            err(&mut fc, "PUT", "/network-interfaces/y", json!({"iface_id": "y", "host_dev_name": "t"}))
                .contains("already in use")
        );
        assert!(err(&mut fc, "PUT", "/vsock", json!({"guest_cid": 2, "uds_path": "/v"})).contains("CID"));
        let cfg = ok(&mut fc, "GET", "/vm/config", Value::Null);
        assert_eq!(cfg["drives"][0]["path_on_host"], "/r2");
        assert_eq!(cfg["network-interfaces"][0]["host_dev_name"], "t");
        assert_eq!(cfg["boot-source"], Value::Null);
    }

    #[test]
    fn pause_resume_and_snapshot() {
        let mut fc = running();
        let snap = json!({"snapshot_path": "/s", "mem_file_path": "/m", "snapshot_type": "Full"});
        assert_eq!(err(&mut fc, "PUT", "/snapshot/create", snap.clone()), SNAPSHOT_WHILE_RUNNING);
        ok(&mut fc, "PATCH", "/vm", json!({"state": "Paused"}));
        // the real VMM pauses a paused VM again without complaint
        ok(&mut fc, "PATCH", "/vm", json!({"state": "Paused"}));
        ok(&mut fc, "PUT", "/snapshot/create", snap);
        assert!(
            err(
                &mut fc,
                "PUT",
                "/snapshot/create",
                json!({"snapshot_path": "/s", "mem_file_path": "/m", "snapshot_type": "Diff"})
            )
            .contains("track_dirty_pages")
        );
        assert_eq!(
            fc.snapshots(),
            &[SnapshotTaken {
                snapshot_path: "/s".into(),
                mem_file_path: "/m".into(),
                snapshot_type: SnapshotType::Full
            }]
        );
        ok(&mut fc, "PATCH", "/vm", json!({"state": "Resumed"}));
        assert_eq!(fc.state(), FcState::Running);
        assert!(err(&mut fc, "PATCH", "/vm", json!({"state": "Stopped"})).contains("unknown variant"));
    }

    #[test]
    fn snapshot_load_only_in_a_fresh_process() {
        let load = json!({"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m"}});
        // logger and metrics do not count as boot configuration
        let mut fc = FakeFirecracker::new();
        ok(&mut fc, "PUT", "/logger", json!({"log_path": "/l", "level": "debug"}));
        ok(&mut fc, "PUT", "/metrics", json!({"metrics_path": "/mt"}));
        ok(&mut fc, "PUT", "/snapshot/load", load.clone());
        assert_eq!(fc.state(), FcState::Paused);
        assert_eq!(fc.loaded_snapshot().unwrap().backend_type, MemBackendType::File);
        ok(&mut fc, "PATCH", "/vm", json!({"state": "Resumed"}));
        assert_eq!(fc.state(), FcState::Running);

        for (m, p, b) in [
            ("PUT", "/machine-config", json!({"vcpu_count": 1, "mem_size_mib": 128})),
            ("PUT", "/boot-source", json!({"kernel_image_path": "/k"})),
            ("PUT", "/vsock", json!({"guest_cid": 3, "uds_path": "/v"})),
            ("PUT", "/entropy", json!({})),
        ] {
            let mut fc = FakeFirecracker::new();
            ok(&mut fc, m, p, b);
            assert_eq!(err(&mut fc, "PUT", "/snapshot/load", load.clone()), LOAD_NOT_ALLOWED, "{p}");
        }

        let mut fc = FakeFirecracker::new();
        ok(
            &mut fc,
            "PUT",
            "/snapshot/load",
            json!({"snapshot_path": "/s", "mem_backend": {"backend_type": "Uffd", "backend_path": "/uffd.sock"}, "resume_vm": true}),
        );
        assert_eq!(fc.state(), FcState::Running);
        let loaded = fc.loaded_snapshot().unwrap();
        assert_eq!(
            (loaded.backend_type, loaded.backend_path.as_str(), loaded.resumed),
            (MemBackendType::Uffd, "/uffd.sock", true)
        );
        assert_eq!(err(&mut fc, "PUT", "/snapshot/load", load), NOT_SUPPORTED_POST_BOOT);

        let mut fc = FakeFirecracker::new();
        assert!(err(&mut fc, "PUT", "/snapshot/load", json!({"snapshot_path": "/s", "mem_file_path": "/m", "mem_backend": {"backend_type": "File", "backend_path": "/m"}})).contains("only one of"));
        assert!(
            err(&mut fc, "PUT", "/snapshot/load", json!({"snapshot_path": "/s"}))
                .contains("either `mem_backend` or `mem_file_path`")
        );
        assert!(
            err(
                &mut fc,
                "PUT",
                "/snapshot/load",
                json!({"snapshot_path": "/s", "mem_backend": {"backend_type": "Memfd", "backend_path": "/m"}})
            )
            .contains("unknown variant")
        );
        assert_eq!(fc.state(), FcState::NotStarted);
    }

    #[test]
    fn balloon_lifecycle() {
        let mut fc = FakeFirecracker::new();
        assert!(err(&mut fc, "GET", "/balloon", Value::Null).contains("No balloon device"));
        assert!(
            err(&mut fc, "PUT", "/balloon", json!({"amount_mib": 512, "deflate_on_oom": true})).contains("too large")
        );
        let mut fc = running();
        assert_eq!(
            ok(&mut fc, "GET", "/balloon", Value::Null),
            json!({"amount_mib": 0, "deflate_on_oom": true, "stats_polling_interval_s": 1, "free_page_hinting": false, "free_page_reporting": false})
        );
        ok(&mut fc, "PATCH", "/balloon", json!({"amount_mib": 64}));
        assert_eq!(ok(&mut fc, "GET", "/balloon", Value::Null)["amount_mib"], 64);
        let stats = ok(&mut fc, "GET", "/balloon/statistics", Value::Null);
        assert_eq!((stats["target_mib"].as_u64(), stats["target_pages"].as_u64()), (Some(64), Some(64 * 256)));
        assert!(err(&mut fc, "PATCH", "/balloon", json!({"amount_mib": 100000})).contains("too large"));
        ok(&mut fc, "PATCH", "/balloon/statistics", json!({"stats_polling_interval_s": 5}));
        assert!(
            err(&mut fc, "PATCH", "/balloon/statistics", json!({"stats_polling_interval_s": 0}))
                .contains("enable/disable")
        );

        let mut fc = FakeFirecracker::new();
        ok(&mut fc, "PUT", "/boot-source", json!({"kernel_image_path": "/k"}));
        ok(&mut fc, "PUT", "/balloon", json!({"amount_mib": 0, "deflate_on_oom": false}));
        ok(&mut fc, "PUT", "/actions", json!({"action_type": "InstanceStart"}));
        assert!(err(&mut fc, "GET", "/balloon/statistics", Value::Null).contains("not enabled"));
        let mut fc = FakeFirecracker::new();
        ok(&mut fc, "PUT", "/boot-source", json!({"kernel_image_path": "/k"}));
        ok(&mut fc, "PUT", "/actions", json!({"action_type": "InstanceStart"}));
        assert!(err(&mut fc, "PATCH", "/balloon", json!({"amount_mib": 1})).contains("Device not found"));
    }

    #[test]
    fn runtime_patches_and_actions() {
        let mut fc = running();
        ok(&mut fc, "PATCH", "/drives/rootfs", json!({"drive_id": "rootfs", "path_on_host": "/new"}));
        assert_eq!(ok(&mut fc, "GET", "/vm/config", Value::Null)["drives"][0]["path_on_host"], "/new");
        assert_eq!(err(&mut fc, "PATCH", "/drives/rootfs", json!({"drive_id": "other"})), ID_MISMATCH);
        assert!(err(&mut fc, "PATCH", "/drives/nope", json!({"drive_id": "nope"})).contains("not found"));
        ok(
            &mut fc,
            "PATCH",
            "/network-interfaces/eth0",
            json!({"iface_id": "eth0", "rx_rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}}}),
        );
        assert!(
            err(&mut fc, "PATCH", "/network-interfaces/eth9", json!({"iface_id": "eth9"})).contains("Could not find")
        );
        ok(&mut fc, "PUT", "/actions", json!({"action_type": "FlushMetrics"}));
        assert_eq!(fc.metrics_flushes(), 1);
        assert!(!fc.exit_requested());
        ok(&mut fc, "PUT", "/actions", json!({"action_type": "SendCtrlAltDel"}));
        assert!(fc.exit_requested());
    }

    #[test]
    fn logger_and_metrics_rules() {
        let mut fc = FakeFirecracker::new();
        assert!(err(&mut fc, "PUT", "/logger", json!({"level": "loud"})).contains("log level"));
        ok(&mut fc, "PUT", "/logger", json!({"level": "WARNING", "show_level": true}));
        ok(&mut fc, "PUT", "/metrics", json!({"metrics_path": "/m"}));
        assert!(err(&mut fc, "PUT", "/metrics", json!({"metrics_path": "/m"})).contains("Reinitialization"));
    }

    #[test]
    fn replies_conform_to_the_spec() {
        let spec = SpecValidator::firecracker();
        let mut fc = running();
        for path in ["/", "/vm/config", "/machine-config", "/balloon", "/balloon/statistics", "/version"] {
            let (status, body) = fc.handle("GET", path, b"");
            let v: Value = serde_json::from_slice(&body).unwrap();
            spec.check_response("GET", path, status, Some(&v)).unwrap_or_else(|e| panic!("{e}"));
        }
        let (status, body) = fc.handle("PATCH", "/vm", br#"{"state":"Frozen"}"#);
        let v: Value = serde_json::from_slice(&body).unwrap();
        spec.check_response("PATCH", "/vm", status, Some(&v)).unwrap();
    }
}
