//! A fake Cloud Hypervisor (v53) API server that keeps the real VMM state machine.
//!
//! [`FakeCloudHypervisor`] is pure: [`FakeCloudHypervisor::handle`] takes one request (method,
//! path, body) and returns the status and body Cloud Hypervisor itself would answer. It mirrors
//! `vmm/src/api/http/{mod.rs,http_endpoint.rs}` (routing, method and body checks) and the
//! `RequestHandler` impl in `vmm/src/lib.rs` (what each action may do in which state):
//!
//! - `vm.create` stores a config once; `vm.boot` needs one and no booted VM; `vm.pause` and
//!   `vm.resume` follow `VmState::valid_transition`; `vm.snapshot` needs a paused VM and writes
//!   `config.json`, `state.json` and `memory-ranges` (tiny) into a `file://` directory;
//!   `vm.restore` needs a fresh VMM (no config) and a directory holding those files; `vm.shutdown`
//!   drops the booted VM but keeps its config (`vm.info` then says `Created`); `vm.delete` drops
//!   both; `vmm.shutdown` deletes and asks the process to exit ([`FakeCloudHypervisor::exit_requested`]).
//! - Errors are what CH sends: the body is a JSON array of the error chain's messages, top first
//!   (`["Error from API","The VM could not boot","VM is already created"]`); the status is 404 when
//!   the root is `VmNotCreated`/`VmMissingConfig` (CH PR #8320, in v53), 400 for a bad method, a
//!   missing or unexpected body, or JSON that does not deserialize, and 500 otherwise. A wrong method
//!   on an action endpoint answers a bare 400; an unknown path `["Not Found"]` with 404.
//! - Like CH's `VmConfig`, bodies may carry unknown fields: they are ignored (CH PR #8674).
//! - `vmm.shutdown` answers 204 as the spec says; CH's own `VmmShutdown` handler answers 200 with
//!   no body, so clients must take any 2xx.
//!
//! The first messages of each chain (HTTP, `ApiError`, `vm::Error`) are CH's own; deeper causes of
//! failures that need a real guest (CPU or memory hotplug, device manager) are close paraphrases.
//!
//! [`serve`] and [`serve_shared`] put the fake on a Unix socket behind a [`FakeServer`] that checks
//! every request against [`SpecValidator::cloud_hypervisor`]: a violation is answered 400 with a
//! one-message chain starting "spec violation:" and recorded.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nestbox_uds_http::server::Reply;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

use crate::fake::{FakeHandler, FakeServer};
use crate::spec::SpecValidator;

/// The root every Cloud Hypervisor endpoint lives under.
pub const API_ROOT: &str = "/api/v1";
/// The `build_version` the fake reports (CH's `git describe`).
pub const BUILD_VERSION: &str = "v53.0";
/// The `version` the fake reports (CH's crate version).
pub const VERSION: &str = "53.0.0";
/// What `cloud-hypervisor --version` prints.
pub const VERSION_LINE: &str = "cloud-hypervisor v53.0";
/// The cargo features a release build of CH reports in `vmm.ping`.
pub const FEATURES: &[&str] = &["kvm", "io_uring"];
/// The VM config file of a snapshot directory (CH `SNAPSHOT_CONFIG_FILE`).
pub const SNAPSHOT_CONFIG_FILE: &str = "config.json";
/// The device state file of a snapshot directory (CH `SNAPSHOT_STATE_FILE`).
pub const SNAPSHOT_STATE_FILE: &str = "state.json";
/// The guest memory file of a snapshot directory (written by CH's memory manager).
pub const SNAPSHOT_MEMORY_FILE: &str = "memory-ranges";
/// vCPUs when `vm.create` has no `cpus` (CH `DEFAULT_VCPUS`).
pub const DEFAULT_VCPUS: u32 = 1;
/// Guest memory when `vm.create` has no `memory` (CH `DEFAULT_MEMORY_MB`, in bytes).
pub const DEFAULT_MEMORY_SIZE: u64 = 512 << 20;
/// What the fake writes as guest memory: a stand-in, not a real memory image.
const FAKE_MEMORY_CONTENT: &[u8] = b"fake-cloud-hypervisor guest memory\n";
/// The scheme a snapshot or restore URL must use (CH `url_to_path`).
const FILE_URL_PREFIX: &str = "file://";

/// A VM's state, as `vm.info` reports it (CH `vm::VmState`, without the debug-only `BreakPoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Created (`vm.create`), or shut down through the API.
    Created,
    /// Booted and running.
    Running,
    /// Shut down (CH reports it for a VM object that is still held after a shutdown).
    Shutdown,
    /// Paused.
    Paused,
}

impl VmState {
    /// CH `VmState::valid_transition` (without `BreakPoint`).
    fn valid_transition(self, to: VmState) -> Result<(), VmError> {
        use VmState::*;
        let ok = match self {
            Created => to != Created,
            Running => matches!(to, Paused | Shutdown),
            Shutdown => to == Running,
            Paused => matches!(to, Running | Shutdown),
        };
        if ok { Ok(()) } else { Err(VmError::InvalidStateTransition(self, to)) }
    }
}

/// CH `MemoryRestoreMode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryRestoreMode {
    /// Copy the whole memory file into guest memory before resuming.
    #[default]
    Copy,
    /// Fault pages in from the file on demand (userfaultfd).
    OnDemand,
}

/// The restore request as the fake last saw it, for tests to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreRecord {
    /// The snapshot directory (the `file://` URL's path).
    pub source: PathBuf,
    /// `prefault` (default false).
    pub prefault: bool,
    /// `memory_restore_mode` (default `Copy`).
    pub memory_restore_mode: MemoryRestoreMode,
    /// `resume` (default false).
    pub resume: bool,
}

/// The fake VMM: one optional VM config and one optional booted VM, like CH's `Vmm`.
#[derive(Debug)]
pub struct FakeCloudHypervisor {
    /// The stored config (`vm.create` or `vm.restore`), normalised as `vm.info` returns it.
    config: Option<Value>,
    /// The booted (or restored) VM.
    vm: Option<BootedVm>,
    /// The next number CH's device manager gives an unnamed device (`_disk0`, `_net1`, …).
    next_device: u32,
    /// The next free PCI slot on segment 0 (slot 0 is the host bridge).
    next_slot: u8,
    /// `--no-shutdown`: a guest power-off shuts the VM down instead of ending the VMM.
    no_shutdown: bool,
    /// `vmm.shutdown` was answered, or the guest powered off: the process should exit now.
    exit_requested: bool,
    /// The last restore, if any.
    last_restore: Option<RestoreRecord>,
}

#[derive(Debug, Clone)]
struct BootedVm {
    state: VmState,
    /// Device id → PCI BDF, in the order they were attached.
    devices: BTreeMap<String, String>,
    /// The guest will power off once resumed (power button pressed while paused).
    power_off_pending: bool,
}

/// CH `vm::Error`, reduced to what the fake can hit. `Display` is CH's message; `causes` what
/// follows it in the chain.
#[derive(Debug, Clone, PartialEq)]
enum VmError {
    VmMissingConfig,
    VmNotCreated,
    VmAlreadyCreated,
    VmNotRunning,
    InvalidStateTransition(VmState, VmState),
    Pause(VmState, VmState),
    Resume(VmState, VmState),
    Snapshot(String),
    SnapshotSend(String),
    Restore(MigrateStep, String),
    ConfigValidation(String),
    NoDeviceToRemove(String),
    DeviceManager(String),
    CpuManager(String),
    MemoryManager(String),
}

/// Which `MigratableError` wrapped a restore failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MigrateStep {
    /// CH's `url_to_path` reports a bad URL as a send error, even when restoring.
    Send,
    Receive,
}

impl VmError {
    /// The chain from this error down: its own message, then its causes.
    fn chain(&self) -> Vec<String> {
        let own = |s: &str| vec![s.to_owned()];
        match self {
            VmError::VmMissingConfig => own("VM config is missing"),
            VmError::VmNotCreated => own("VM is not created"),
            VmError::VmAlreadyCreated => own("VM is already created"),
            VmError::VmNotRunning => own("VM is not running"),
            VmError::InvalidStateTransition(from, to) => {
                own(&format!("invalid VM state transition: {from:?} to {to:?}"))
            }
            VmError::Pause(from, to) => vec![
                "Cannot pause VM".into(),
                "Failed to pause migratable component".into(),
                format!("Invalid transition: InvalidStateTransition({from:?}, {to:?})"),
            ],
            VmError::Resume(from, to) => vec![
                "Cannot resume VM".into(),
                "Failed to resume migratable component".into(),
                format!("Invalid transition: InvalidStateTransition({from:?}, {to:?})"),
            ],
            VmError::Snapshot(why) => {
                vec!["Cannot snapshot VM".into(), "Failed to snapshot migratable component".into(), why.clone()]
            }
            VmError::SnapshotSend(why) => vec![
                "Cannot send VM snapshot".into(),
                "Failed to send migratable component snapshot".into(),
                why.clone(),
            ],
            VmError::Restore(step, why) => vec![
                "Cannot restore VM".into(),
                match step {
                    MigrateStep::Send => "Failed to send migratable component snapshot".into(),
                    MigrateStep::Receive => "Failed to receive migratable component snapshot".into(),
                },
                why.clone(),
            ],
            VmError::ConfigValidation(why) => vec!["Failed to validate config".into(), why.clone()],
            VmError::NoDeviceToRemove(id) => own(&format!("No device with id {id:?} to remove")),
            VmError::DeviceManager(why) => vec!["Error from device manager".into(), why.clone()],
            VmError::CpuManager(why) => vec!["Error from CPU manager".into(), why.clone()],
            VmError::MemoryManager(why) => vec!["Memory manager error".into(), why.clone()],
        }
    }

    /// CH `api_error_status_code`: 404 when the VM (config) is missing, 500 otherwise.
    fn status(&self) -> u16 {
        match self {
            VmError::VmNotCreated | VmError::VmMissingConfig => 404,
            _ => 500,
        }
    }
}

/// What one action answers: a body for 200, or nothing for 204.
type ActionResult = Result<Option<Vec<u8>>, VmError>;

/// How an action endpoint takes its input (CH's `vm_action_*_handler!` macros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `PUT` without a body (`vm.boot`).
    PutEmpty,
    /// `PUT` with a JSON body (`vm.snapshot`).
    PutBody,
    /// `GET` (`vm.counters`).
    Get,
}

/// The action endpoints the fake answers, their shape, and CH's `ApiError` message for them.
const ACTIONS: &[(&str, Shape, &str)] = &[
    ("/vm.boot", Shape::PutEmpty, "The VM could not boot"),
    ("/vm.delete", Shape::PutEmpty, "The VM could not be deleted"),
    ("/vm.shutdown", Shape::PutEmpty, "The VM could not shutdown"),
    ("/vm.reboot", Shape::PutEmpty, "The VM could not reboot"),
    ("/vm.pause", Shape::PutEmpty, "The VM could not be paused"),
    ("/vm.resume", Shape::PutEmpty, "The VM could not resume"),
    ("/vm.power-button", Shape::PutEmpty, "Error triggering power button"),
    ("/vm.nmi", Shape::PutEmpty, "Error triggering NMI"),
    ("/vm.counters", Shape::Get, "The VM info is not available"),
    ("/vm.snapshot", Shape::PutBody, "The VM could not be snapshotted"),
    ("/vm.restore", Shape::PutBody, "The VM could not be restored"),
    ("/vm.resize", Shape::PutBody, "The VM could not be resized"),
    ("/vm.add-disk", Shape::PutBody, "The disk could not be added to the VM"),
    ("/vm.remove-device", Shape::PutBody, "The device could not be removed from the VM"),
];

/// CH endpoints the fake does not model; they answer 500 saying so, never a silent success.
const UNMODELLED: &[&str] = &[
    "/vm.add-device",
    "/vm.add-user-device",
    "/vm.add-fs",
    "/vm.add-generic-vhost-user",
    "/vm.add-net",
    "/vm.add-pmem",
    "/vm.add-vdpa",
    "/vm.add-vsock",
    "/vm.resize-disk",
    "/vm.resize-zone",
    "/vm.coredump",
    "/vm.receive-migration",
    "/vm.send-migration",
];

/// The error body: the chain's messages as a JSON array (CH `error_response`).
fn error_body(chain: &[String]) -> Vec<u8> {
    serde_json::to_vec(chain).unwrap_or_default()
}

/// CH `HttpError::BadRequest` through `error_response`.
fn bad_request() -> (u16, Vec<u8>) {
    (400, error_body(&["Bad Request".to_owned()]))
}

/// CH `HttpError::SerdeJsonDeserialize`.
fn deserialize_error(e: &serde_json::Error) -> (u16, Vec<u8>) {
    (400, error_body(&["Failed to deserialize JSON".to_owned(), e.to_string()]))
}

/// CH `HttpError::ApiError(api)` where `api` is `ApiError::<action>(vm_error)`.
fn api_error(action: &str, e: &VmError) -> (u16, Vec<u8>) {
    let mut chain = vec!["Error from API".to_owned(), action.to_owned()];
    chain.extend(e.chain());
    (e.status(), error_body(&chain))
}

impl Default for FakeCloudHypervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeCloudHypervisor {
    /// A fresh VMM: no config, no VM (what `cloud-hypervisor --api-socket …` starts as).
    pub fn new() -> Self {
        FakeCloudHypervisor {
            config: None,
            vm: None,
            next_device: 0,
            next_slot: 1,
            no_shutdown: false,
            exit_requested: false,
            last_restore: None,
        }
    }

    /// CH `--no-shutdown`: a guest power-off shuts the VM down and keeps the VMM running.
    pub fn with_no_shutdown(mut self, no_shutdown: bool) -> Self {
        self.no_shutdown = no_shutdown;
        self
    }

    /// Whether the VMM has ended (`vmm.shutdown`, or a guest power-off without `--no-shutdown`):
    /// a process serving this fake should remove its socket and exit.
    pub fn exit_requested(&self) -> bool {
        self.exit_requested
    }

    /// The VM state `vm.info` would report, or `None` when no VM is created.
    pub fn state(&self) -> Option<VmState> {
        self.config.as_ref()?;
        Some(self.vm.as_ref().map_or(VmState::Created, |vm| vm.state))
    }

    /// The stored VM config, as `vm.info` returns it.
    pub fn config(&self) -> Option<&Value> {
        self.config.as_ref()
    }

    /// The last `vm.restore` that succeeded.
    pub fn last_restore(&self) -> Option<&RestoreRecord> {
        self.last_restore.as_ref()
    }

    /// Answers one request as CH v53 would: `(status, body)`. An empty `body` means none was sent.
    pub fn handle(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        // CH routes on the absolute path, without the query.
        let path = path.split('?').next().unwrap_or(path);
        let Some(endpoint) = path.strip_prefix(API_ROOT) else {
            return not_found();
        };
        let body = (!body.is_empty()).then_some(body);
        match endpoint {
            "/vmm.ping" => match method {
                "GET" => (200, self.ping()),
                _ => bad_request(),
            },
            "/vmm.shutdown" => match method {
                "PUT" => {
                    self.delete();
                    self.exit_requested = true;
                    (204, Vec::new())
                }
                _ => bad_request(),
            },
            "/vm.info" => match method {
                "GET" => match self.info() {
                    Ok(info) => (200, info),
                    Err(e) => api_error("The VM info is not available", &e),
                },
                _ => bad_request(),
            },
            "/vm.create" => match (method, body) {
                ("PUT", Some(body)) => match self.create(body) {
                    Ok(Ok(())) => (204, Vec::new()),
                    Ok(Err(e)) => api_error("The VM could not be created", &e),
                    Err(e) => deserialize_error(&e),
                },
                // CH answers a bodiless vm.create with a bare 400.
                ("PUT", None) => (400, Vec::new()),
                _ => bad_request(),
            },
            _ => {
                if UNMODELLED.contains(&endpoint) {
                    let msg = format!("fake-cloud-hypervisor does not model {endpoint}");
                    return (500, error_body(&[msg]));
                }
                match ACTIONS.iter().find(|(name, _, _)| *name == endpoint) {
                    Some(&(name, shape, action)) => self.action(name, shape, action, method, body),
                    None => not_found(),
                }
            }
        }
    }

    /// CH `EndpointHandler::handle_request` for a `VmActionHandler`.
    fn action(&mut self, name: &str, shape: Shape, action: &str, method: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
        let result = match (method, shape, body) {
            ("PUT", Shape::PutEmpty, None) => self.put_empty(name),
            ("PUT", Shape::PutBody, Some(body)) => match self.put_body(name, body) {
                Ok(result) => result,
                Err(e) => return deserialize_error(&e),
            },
            ("GET", Shape::Get, _) => self.counters(),
            ("PUT", _, _) | ("GET", _, _) => return bad_request(),
            // Other methods get a bare 400 from CH's handler.
            _ => return (400, Vec::new()),
        };
        match result {
            Ok(Some(body)) => (200, body),
            Ok(None) => (204, Vec::new()),
            Err(e) => api_error(action, &e),
        }
    }

    fn put_empty(&mut self, name: &str) -> ActionResult {
        match name {
            "/vm.boot" => self.boot(),
            "/vm.delete" => {
                self.delete();
                Ok(())
            }
            "/vm.shutdown" => self.shutdown(),
            "/vm.reboot" => self.reboot(),
            "/vm.pause" => self.pause(),
            "/vm.resume" => self.resume(),
            "/vm.power-button" => self.power_button(),
            "/vm.nmi" => self.vm.as_ref().map(|_| ()).ok_or(VmError::VmNotRunning),
            _ => unreachable!("{name} is not a bodiless action"),
        }
        .map(|()| None)
    }

    /// The body endpoints; the outer `Err` is a body that does not deserialize (400).
    fn put_body(&mut self, name: &str, body: &[u8]) -> Result<ActionResult, serde_json::Error> {
        Ok(match name {
            "/vm.snapshot" => self.snapshot(&serde_json::from_slice(body)?).map(|()| None),
            "/vm.restore" => self.restore(&serde_json::from_slice(body)?).map(|()| None),
            "/vm.resize" => self.resize(&serde_json::from_slice(body)?).map(|()| None),
            "/vm.add-disk" => {
                let disk: Value = serde_json::from_slice(body)?;
                serde_json::from_value::<DiskWire>(disk.clone())?;
                self.add_disk(disk)
            }
            "/vm.remove-device" => {
                let RemoveDeviceWire { id } = serde_json::from_slice(body)?;
                self.remove_device(&id).map(|()| None)
            }
            _ => unreachable!("{name} is not a body action"),
        })
    }

    fn ping(&self) -> Vec<u8> {
        let ping = json!({
            "build_version": BUILD_VERSION,
            "version": VERSION,
            "pid": i64::from(std::process::id()),
            "features": FEATURES,
        });
        serde_json::to_vec(&ping).unwrap_or_default()
    }

    /// The outer `Err` is a body that does not deserialize; the inner one CH's refusal.
    fn create(&mut self, body: &[u8]) -> Result<Result<(), VmError>, serde_json::Error> {
        let config = parse_vm_config(body)?;
        if self.config.is_some() {
            return Ok(Err(VmError::VmAlreadyCreated));
        }
        self.config = Some(config);
        Ok(Ok(()))
    }

    fn boot(&mut self) -> Result<(), VmError> {
        if self.vm.is_some() {
            return Err(VmError::VmAlreadyCreated);
        }
        let Some(config) = self.config.as_ref() else {
            return Err(VmError::VmMissingConfig);
        };
        validate(config).map_err(VmError::ConfigValidation)?;
        self.start_vm(VmState::Running);
        Ok(())
    }

    /// Creates the VM object from the stored config: names unnamed devices, gives each a slot.
    fn start_vm(&mut self, state: VmState) {
        let mut devices = BTreeMap::new();
        let mut config = self.config.take().unwrap_or_else(|| json!({}));
        for (section, prefix) in [("disks", "_disk"), ("net", "_net"), ("pmem", "_pmem"), ("fs", "_fs")] {
            if let Some(list) = config.get_mut(section).and_then(Value::as_array_mut) {
                for device in list.iter_mut() {
                    let id = self.device_id(device, prefix);
                    devices.insert(id, self.take_slot());
                }
            }
        }
        if let Some(vsock) = config.get_mut("vsock").filter(|v| v.is_object()) {
            let id = self.device_id(vsock, "_vsock");
            devices.insert(id, self.take_slot());
        }
        self.config = Some(config);
        self.vm = Some(BootedVm { state, devices, power_off_pending: false });
    }

    /// The device's `id`, or a new one CH-style (`_disk0`) written back into its config.
    fn device_id(&mut self, device: &mut Value, prefix: &str) -> String {
        if let Some(id) = device.get("id").and_then(Value::as_str) {
            return id.to_owned();
        }
        let id = loop {
            let candidate = format!("{prefix}{}", self.next_device);
            self.next_device += 1;
            if !self.id_in_use(&candidate) {
                break candidate;
            }
        };
        if let Some(map) = device.as_object_mut() {
            map.insert("id".into(), Value::String(id.clone()));
        }
        id
    }

    fn id_in_use(&self, id: &str) -> bool {
        self.vm.as_ref().is_some_and(|vm| vm.devices.contains_key(id))
            || self.config.as_ref().is_some_and(|c| config_ids(c).iter().any(|i| i == id))
    }

    fn take_slot(&mut self) -> String {
        let bdf = format!("0000:00:{:02x}.0", self.next_slot);
        self.next_slot = self.next_slot.saturating_add(1);
        bdf
    }

    fn pause(&mut self) -> Result<(), VmError> {
        let vm = self.vm.as_mut().ok_or(VmError::VmNotRunning)?;
        vm.state.valid_transition(VmState::Paused).map_err(|_| VmError::Pause(vm.state, VmState::Paused))?;
        vm.state = VmState::Paused;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), VmError> {
        let vm = self.vm.as_mut().ok_or(VmError::VmNotRunning)?;
        vm.state.valid_transition(VmState::Running).map_err(|_| VmError::Resume(vm.state, VmState::Running))?;
        vm.state = VmState::Running;
        if vm.power_off_pending {
            self.guest_power_off();
        }
        Ok(())
    }

    /// CH `vm_shutdown`: the VM object goes, its config stays.
    fn shutdown(&mut self) -> Result<(), VmError> {
        let vm = self.vm.as_ref().ok_or(VmError::VmNotRunning)?;
        vm.state.valid_transition(VmState::Shutdown)?;
        self.vm = None;
        Ok(())
    }

    fn reboot(&mut self) -> Result<(), VmError> {
        let vm = self.vm.as_ref().ok_or(VmError::VmNotCreated)?;
        vm.state.valid_transition(VmState::Shutdown)?;
        let devices = vm.devices.clone();
        self.vm = Some(BootedVm { state: VmState::Running, devices, power_off_pending: false });
        Ok(())
    }

    /// The guest answers the ACPI power button by powering off (once it runs).
    fn power_button(&mut self) -> Result<(), VmError> {
        let vm = self.vm.as_mut().ok_or(VmError::VmNotRunning)?;
        if vm.state == VmState::Paused {
            vm.power_off_pending = true;
        } else {
            self.guest_power_off();
        }
        Ok(())
    }

    /// CH's `GuestExit` event: `vm_shutdown` with `--no-shutdown`, else `vmm_shutdown` and exit.
    fn guest_power_off(&mut self) {
        self.vm = None;
        if !self.no_shutdown {
            self.delete();
            self.exit_requested = true;
        }
    }

    /// CH `vm_delete`: shut a booted VM down, forget the config; fine when there is none.
    fn delete(&mut self) {
        self.vm = None;
        self.config = None;
    }

    fn info(&self) -> Result<Vec<u8>, VmError> {
        let config = self.config.as_ref().ok_or(VmError::VmNotCreated)?;
        let memory = &config["memory"];
        let size = memory["size"].as_u64().unwrap_or(DEFAULT_MEMORY_SIZE);
        let mut info = Map::new();
        info.insert("config".into(), config.clone());
        match &self.vm {
            None => {
                info.insert("state".into(), json!(VmState::Created));
                info.insert("memory_actual_size".into(), json!(size));
            }
            Some(vm) => {
                let hotplugged = memory["hotplugged_size"].as_u64().unwrap_or(0);
                let balloon = config["balloon"]["size"].as_u64().unwrap_or(0);
                let actual = (size + hotplugged).saturating_sub(balloon);
                let tree: Map<String, Value> = vm
                    .devices
                    .iter()
                    .map(|(id, bdf)| {
                        let node = json!({"id": id, "resources": [], "children": [], "pci_bdf": bdf});
                        (id.clone(), node)
                    })
                    .collect();
                info.insert("state".into(), json!(vm.state));
                info.insert("memory_actual_size".into(), json!(actual));
                info.insert("device_tree".into(), Value::Object(tree));
            }
        }
        Ok(serde_json::to_vec(&info).unwrap_or_default())
    }

    fn counters(&self) -> ActionResult {
        let vm = self.vm.as_ref().ok_or(VmError::VmNotRunning)?;
        let mut counters = Map::new();
        for id in vm.devices.keys() {
            let names: &[&str] = if id.starts_with("_net") || self.is_net(id) {
                &["rx_bytes", "rx_frames", "tx_bytes", "tx_frames"]
            } else if id.starts_with("_disk") || self.is_disk(id) {
                &["read_bytes", "read_ops", "write_bytes", "write_ops"]
            } else {
                continue;
            };
            let values: Map<String, Value> = names.iter().map(|n| ((*n).to_owned(), json!(0))).collect();
            counters.insert(id.clone(), Value::Object(values));
        }
        Ok(Some(serde_json::to_vec(&counters).unwrap_or_default()))
    }

    fn is_net(&self, id: &str) -> bool {
        self.section_has_id("net", id)
    }

    fn is_disk(&self, id: &str) -> bool {
        self.section_has_id("disks", id)
    }

    fn section_has_id(&self, section: &str, id: &str) -> bool {
        self.config
            .as_ref()
            .and_then(|c| c.get(section))
            .and_then(Value::as_array)
            .is_some_and(|list| list.iter().any(|d| d.get("id").and_then(Value::as_str) == Some(id)))
    }

    /// CH `vm_snapshot` + `Vm::snapshot` + `Vm::send`.
    fn snapshot(&mut self, request: &SnapshotWire) -> Result<(), VmError> {
        let vm = self.vm.as_ref().ok_or(VmError::VmNotRunning)?;
        if vm.state != VmState::Paused {
            return Err(VmError::Snapshot("Trying to snapshot while VM is running".into()));
        }
        let dir = url_to_path(&request.destination_url).map_err(VmError::SnapshotSend)?;
        let config = serde_json::to_vec(self.config.as_ref().unwrap_or(&Value::Null)).unwrap_or_default();
        let state = serde_json::to_vec(&json!({
            "id": "vm",
            "fake-cloud-hypervisor": VERSION,
            "devices": vm.devices,
        }))
        .unwrap_or_default();
        for (name, content) in [
            (SNAPSHOT_CONFIG_FILE, config.as_slice()),
            (SNAPSHOT_STATE_FILE, state.as_slice()),
            (SNAPSHOT_MEMORY_FILE, FAKE_MEMORY_CONTENT),
        ] {
            write_new(&dir.join(name), content).map_err(|e| VmError::SnapshotSend(e.to_string()))?;
        }
        Ok(())
    }

    /// CH `vm_restore`: only into a VMM with no config; the VM comes back paused unless `resume`.
    fn restore(&mut self, request: &RestoreWire) -> Result<(), VmError> {
        if self.vm.is_some() || self.config.is_some() {
            return Err(VmError::VmAlreadyCreated);
        }
        let dir = url_to_path(&request.source_url).map_err(|e| VmError::Restore(MigrateStep::Send, e))?;
        let receive = |e: String| VmError::Restore(MigrateStep::Receive, e);
        let config = std::fs::read(dir.join(SNAPSHOT_CONFIG_FILE)).map_err(|e| receive(e.to_string()))?;
        let config = parse_vm_config(&config).map_err(|e| receive(e.to_string()))?;
        let state = std::fs::read(dir.join(SNAPSHOT_STATE_FILE)).map_err(|e| receive(e.to_string()))?;
        serde_json::from_slice::<Value>(&state).map_err(|e| receive(e.to_string()))?;
        std::fs::metadata(dir.join(SNAPSHOT_MEMORY_FILE)).map_err(|e| receive(e.to_string()))?;
        self.config = Some(config);
        self.start_vm(VmState::Paused);
        self.last_restore = Some(RestoreRecord {
            source: dir,
            prefault: request.prefault,
            memory_restore_mode: request.memory_restore_mode,
            resume: request.resume,
        });
        if request.resume {
            self.resume()?;
        }
        Ok(())
    }

    /// CH `vm_resize`: a created VM gets its config edited; a booted one is hotplugged.
    fn resize(&mut self, request: &ResizeWire) -> Result<(), VmError> {
        let config = self.config.as_mut().ok_or(VmError::VmNotCreated)?;
        if self.vm.is_none() {
            if let Some(vcpus) = request.desired_vcpus {
                config["cpus"]["boot_vcpus"] = json!(vcpus);
            }
            if let Some(ram) = request.desired_ram {
                config["memory"]["size"] = json!(ram);
            }
            if let (Some(size), Some(balloon)) = (request.desired_balloon, config.get_mut("balloon")) {
                balloon["size"] = json!(size);
            }
            return Ok(());
        }
        if let Some(vcpus) = request.desired_vcpus {
            let max = config["cpus"]["max_vcpus"].as_u64().unwrap_or(u64::from(DEFAULT_VCPUS));
            if u64::from(vcpus) > max {
                return Err(VmError::CpuManager(format!("desired vCPUs {vcpus} exceed the maximum of {max}")));
            }
        }
        if let Some(ram) = request.desired_ram {
            let size = config["memory"]["size"].as_u64().unwrap_or(DEFAULT_MEMORY_SIZE);
            let Some(hotplug) = config["memory"]["hotplug_size"].as_u64() else {
                return Err(VmError::MemoryManager("memory hotplug is not configured".into()));
            };
            if ram < size || ram > size + hotplug {
                return Err(VmError::MemoryManager(format!(
                    "desired RAM {ram} is outside {size}..={}",
                    size + hotplug
                )));
            }
        }
        if request.desired_balloon.is_some() && config.get("balloon").is_none_or(Value::is_null) {
            return Err(VmError::DeviceManager("missing virtio-balloon device".into()));
        }
        if let Some(vcpus) = request.desired_vcpus {
            config["cpus"]["boot_vcpus"] = json!(vcpus);
        }
        if let Some(ram) = request.desired_ram {
            let size = config["memory"]["size"].as_u64().unwrap_or(DEFAULT_MEMORY_SIZE);
            config["memory"]["hotplugged_size"] = json!(ram - size);
        }
        if let Some(size) = request.desired_balloon {
            config["balloon"]["size"] = json!(size);
        }
        Ok(())
    }

    /// CH `vm_add_disk`: validate the new config, then hotplug (200 with `PciDeviceInfo`) into a
    /// booted VM or add to the config of a created one (204).
    fn add_disk(&mut self, mut disk: Value) -> ActionResult {
        let config = self.config.as_ref().ok_or(VmError::VmNotCreated)?;
        if let Some(id) = disk.get("id").and_then(Value::as_str)
            && (config_ids(config).iter().any(|i| i == id)
                || self.vm.as_ref().is_some_and(|vm| vm.devices.contains_key(id)))
        {
            return Err(VmError::ConfigValidation(format!("Identifier {id} is not unique")));
        }
        let info = if self.vm.is_some() {
            let id = self.device_id(&mut disk, "_disk");
            let bdf = self.take_slot();
            if let Some(vm) = self.vm.as_mut() {
                vm.devices.insert(id.clone(), bdf.clone());
            }
            Some(serde_json::to_vec(&json!({"id": id, "bdf": bdf})).unwrap_or_default())
        } else {
            None
        };
        if let Some(config) = self.config.as_mut() {
            push_to(config, "disks", disk);
        }
        Ok(info)
    }

    /// CH `vm_remove_device`: unplug from a booted VM, or drop from a created VM's config.
    fn remove_device(&mut self, id: &str) -> Result<(), VmError> {
        let config = self.config.as_mut().ok_or(VmError::VmNotCreated)?;
        match self.vm.as_mut() {
            Some(vm) => {
                if vm.devices.remove(id).is_none() {
                    return Err(VmError::DeviceManager(format!("Unknown device id: {id}")));
                }
                remove_from_config(config, id);
                Ok(())
            }
            None if remove_from_config(config, id) => Ok(()),
            None => Err(VmError::NoDeviceToRemove(id.to_owned())),
        }
    }
}

fn not_found() -> (u16, Vec<u8>) {
    (404, error_body(&["Not Found".to_owned()]))
}

/// CH `url_to_path`: a `file://` URL naming an existing directory.
fn url_to_path(url: &str) -> Result<PathBuf, String> {
    let path = url
        .strip_prefix(FILE_URL_PREFIX)
        .map(PathBuf::from)
        .ok_or_else(|| format!("Could not extract path from URL: {url}"))?;
    if !path.is_dir() {
        return Err("Destination is not a directory".into());
    }
    Ok(path)
}

/// Creates `path`, failing if it exists (CH opens snapshot files with `create_new`).
fn write_new(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(content)
}

/// Every device id in a config's device lists.
fn config_ids(config: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    for section in DEVICE_SECTIONS {
        if let Some(list) = config.get(*section).and_then(Value::as_array) {
            ids.extend(list.iter().filter_map(|d| d.get("id")?.as_str().map(str::to_owned)));
        }
    }
    if let Some(id) = config.get("vsock").and_then(|v| v.get("id")).and_then(Value::as_str) {
        ids.push(id.to_owned());
    }
    ids
}

/// The `VmConfig` lists whose entries have ids (CH `VmConfig::remove_device`).
const DEVICE_SECTIONS: &[&str] =
    &["disks", "net", "fs", "pmem", "devices", "user_devices", "vdpa", "generic_vhost_user"];

/// Removes the device `id` from the config; whether it was there.
fn remove_from_config(config: &mut Value, id: &str) -> bool {
    let mut removed = false;
    for section in DEVICE_SECTIONS {
        if let Some(list) = config.get_mut(*section).and_then(Value::as_array_mut) {
            let before = list.len();
            list.retain(|d| d.get("id").and_then(Value::as_str) != Some(id));
            removed |= list.len() != before;
        }
    }
    if config.get("vsock").and_then(|v| v.get("id")).and_then(Value::as_str) == Some(id) {
        if let Some(map) = config.as_object_mut() {
            map.remove("vsock");
        }
        removed = true;
    }
    removed
}

fn push_to(config: &mut Value, section: &str, item: Value) {
    let Some(map) = config.as_object_mut() else { return };
    match map.get_mut(section).and_then(Value::as_array_mut) {
        Some(list) => list.push(item),
        None => {
            map.insert(section.to_owned(), Value::Array(vec![item]));
        }
    }
}

/// CH `VmConfig::validate`, the rules a fake can check without a host.
fn validate(config: &Value) -> Result<(), String> {
    let boot = config["cpus"]["boot_vcpus"].as_u64().unwrap_or(u64::from(DEFAULT_VCPUS));
    let max = config["cpus"]["max_vcpus"].as_u64().unwrap_or(u64::from(DEFAULT_VCPUS));
    if max < boot {
        return Err(format!("Max is less than boot: max {max} boot {boot}"));
    }
    let payload = &config["payload"];
    if ["kernel", "firmware", "igvm"].iter().all(|k| payload[*k].is_null()) {
        return Err("No kernel specified".into());
    }
    Ok(())
}

/// Deserializes a `VmConfig` the way CH would (required fields, types, enums; unknown fields are
/// ignored) and returns it with CH's defaults for `cpus` and `memory` filled in.
fn parse_vm_config(body: &[u8]) -> Result<Value, serde_json::Error> {
    let mut value: Value = serde_json::from_slice(body)?;
    serde_json::from_value::<VmConfigWire>(value.clone())?;
    if let Some(map) = value.as_object_mut() {
        map.entry("cpus").or_insert_with(|| json!({"boot_vcpus": DEFAULT_VCPUS, "max_vcpus": DEFAULT_VCPUS}));
        map.entry("memory").or_insert_with(|| json!({"size": DEFAULT_MEMORY_SIZE}));
    }
    Ok(value)
}

/// The parts of CH's `VmConfig` whose shape the fake checks on `vm.create` and `vm.restore`.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // Fields are read by serde only: their presence and types are the check.
struct VmConfigWire {
    cpus: Option<CpusWire>,
    memory: Option<MemoryWire>,
    payload: Option<PayloadWire>,
    disks: Option<Vec<DiskWire>>,
    net: Option<Vec<NetWire>>,
    rng: Option<RngWire>,
    balloon: Option<BalloonWire>,
    serial: Option<ConsoleWire>,
    console: Option<ConsoleWire>,
    vsock: Option<VsockWire>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct CpusWire {
    boot_vcpus: u32,
    max_vcpus: u32,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct MemoryWire {
    size: u64,
    hotplug_size: Option<u64>,
    hotplugged_size: Option<u64>,
    shared: Option<bool>,
    thp: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct PayloadWire {
    firmware: Option<PathBuf>,
    kernel: Option<PathBuf>,
    cmdline: Option<String>,
    initramfs: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct DiskWire {
    path: Option<PathBuf>,
    readonly: Option<bool>,
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct NetWire {
    tap: Option<String>,
    #[serde(default, deserialize_with = "mac_address")]
    mac: Option<String>,
    #[serde(default, deserialize_with = "mac_address")]
    host_mac: Option<String>,
    ip: Option<std::net::Ipv4Addr>,
    mask: Option<std::net::Ipv4Addr>,
    num_queues: Option<u32>,
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct RngWire {
    src: PathBuf,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct BalloonWire {
    size: u64,
    deflate_on_oom: Option<bool>,
    free_page_reporting: Option<bool>,
}

/// CH `ConsoleOutputMode`.
#[derive(Debug, Deserialize)]
enum ConsoleMode {
    Off,
    Pty,
    Tty,
    File,
    Socket,
    Null,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct ConsoleWire {
    mode: ConsoleMode,
    file: Option<PathBuf>,
    socket: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct VsockWire {
    cid: u64,
    socket: PathBuf,
    id: Option<String>,
}

/// CH `VmSnapshotConfig`.
#[derive(Debug, Deserialize)]
struct SnapshotWire {
    destination_url: String,
}

/// CH `RestoreConfig` (the fds members cannot come over plain HTTP).
#[derive(Debug, Deserialize)]
struct RestoreWire {
    source_url: String,
    #[serde(default)]
    prefault: bool,
    #[serde(default)]
    memory_restore_mode: MemoryRestoreMode,
    #[serde(default)]
    resume: bool,
}

/// CH `VmResizeData`.
#[derive(Debug, Deserialize)]
struct ResizeWire {
    desired_vcpus: Option<u32>,
    desired_ram: Option<u64>,
    desired_balloon: Option<u64>,
}

/// CH `VmRemoveDeviceData`.
#[derive(Debug, Deserialize)]
struct RemoveDeviceWire {
    id: String,
}

/// CH's `MacAddr` deserializer: six colon-separated hex octets.
fn mac_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let Some(mac) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let octets: Vec<&str> = mac.split(':').collect();
    let valid = octets.len() == 6 && octets.iter().all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
    if valid { Ok(Some(mac)) } else { Err(serde::de::Error::custom(format!("invalid MAC address: {mac}"))) }
}

/// The chain a request gets once the VMM has ended but its socket is not yet gone.
const EXITED: &str = "The VMM has exited";

/// The reply a spec violation gets: 400 with the message as a one-element error chain.
pub fn violation_reply(message: &str) -> Reply {
    Reply::json(400, error_body(&[message.to_owned()]))
}

/// Serves a fresh [`FakeCloudHypervisor`] on `socket`, checked against the spec.
pub async fn serve(socket: &Path) -> std::io::Result<FakeServer> {
    serve_shared(socket, Arc::new(Mutex::new(FakeCloudHypervisor::new()))).await
}

/// Serves `fake` on `socket`; the caller keeps a handle on the state (the stand-in binary watches
/// [`FakeCloudHypervisor::exit_requested`]). Once the VMM has ended, every request gets a 500.
pub async fn serve_shared(socket: &Path, fake: Arc<Mutex<FakeCloudHypervisor>>) -> std::io::Result<FakeServer> {
    let handler: FakeHandler = Arc::new(move |method, path, body| {
        let mut ch = fake.lock().unwrap_or_else(|e| e.into_inner());
        let (status, body) =
            if ch.exit_requested() { (500, error_body(&[EXITED.to_owned()])) } else { ch.handle(method, path, body) };
        Reply::json(status, body)
    });
    FakeServer::bind(socket, SpecValidator::cloud_hypervisor(), handler, violation_reply).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL_CONFIG: &str = r#"{"payload":{"kernel":"/k","cmdline":"console=hvc0"},
        "cpus":{"boot_vcpus":1,"max_vcpus":2},
        "memory":{"size":268435456,"hotplug_size":268435456,"shared":false,"thp":false},
        "disks":[{"path":"/root.img","readonly":true}],
        "net":[{"tap":"tap0","mac":"12:34:56:78:9a:bc"}],
        "balloon":{"size":0,"deflate_on_oom":true,"free_page_reporting":false},
        "vsock":{"cid":3,"socket":"/v.sock"}}"#;

    fn put(fake: &mut FakeCloudHypervisor, endpoint: &str, body: &str) -> (u16, String) {
        call(fake, "PUT", endpoint, body)
    }

    fn get(fake: &mut FakeCloudHypervisor, endpoint: &str) -> (u16, String) {
        call(fake, "GET", endpoint, "")
    }

    fn call(fake: &mut FakeCloudHypervisor, method: &str, endpoint: &str, body: &str) -> (u16, String) {
        let (status, body) = fake.handle(method, &format!("{API_ROOT}{endpoint}"), body.as_bytes());
        (status, String::from_utf8(body).unwrap())
    }

    /// The error chain of an error body.
    fn chain(body: &str) -> Vec<String> {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON chain: {body:?}: {e}"))
    }

    fn info(fake: &mut FakeCloudHypervisor) -> Value {
        let (status, body) = get(fake, "/vm.info");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn created() -> FakeCloudHypervisor {
        let mut fake = FakeCloudHypervisor::new();
        assert_eq!(put(&mut fake, "/vm.create", KERNEL_CONFIG), (204, String::new()));
        fake
    }

    fn running() -> FakeCloudHypervisor {
        let mut fake = created();
        assert_eq!(put(&mut fake, "/vm.boot", ""), (204, String::new()));
        fake
    }

    fn paused() -> FakeCloudHypervisor {
        let mut fake = running();
        assert_eq!(put(&mut fake, "/vm.pause", ""), (204, String::new()));
        fake
    }

    fn snapshot_url(dir: &Path) -> String {
        format!(r#"{{"destination_url":"file://{}"}}"#, dir.display())
    }

    #[test]
    fn test_ping_reports_version_and_pid() {
        let mut fake = FakeCloudHypervisor::new();
        let (status, body) = get(&mut fake, "/vmm.ping");
        assert_eq!(status, 200);
        let ping: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(ping["build_version"], BUILD_VERSION);
        assert_eq!(ping["version"], VERSION);
        assert_eq!(ping["pid"], i64::from(std::process::id()));
        assert_eq!(ping["features"], json!(FEATURES));
    }

    #[test]
    fn test_full_lifecycle_states() {
        let mut fake = FakeCloudHypervisor::new();
        assert_eq!(fake.state(), None);
        assert_eq!(put(&mut fake, "/vm.create", KERNEL_CONFIG).0, 204);
        assert_eq!(info(&mut fake)["state"], "Created");
        assert_eq!(put(&mut fake, "/vm.boot", "").0, 204);
        assert_eq!(info(&mut fake)["state"], "Running");
        assert_eq!(put(&mut fake, "/vm.pause", "").0, 204);
        assert_eq!(info(&mut fake)["state"], "Paused");
        assert_eq!(put(&mut fake, "/vm.resume", "").0, 204);
        assert_eq!(fake.state(), Some(VmState::Running));
        assert_eq!(put(&mut fake, "/vm.shutdown", "").0, 204);
        // CH drops the VM object and keeps the config: it reads as Created and boots again.
        assert_eq!(info(&mut fake)["state"], "Created");
        assert_eq!(put(&mut fake, "/vm.boot", "").0, 204);
        assert_eq!(put(&mut fake, "/vm.delete", "").0, 204);
        assert_eq!(fake.state(), None);
        assert!(!fake.exit_requested());
    }

    #[test]
    fn test_create_only_once() {
        let mut fake = created();
        let (status, body) = put(&mut fake, "/vm.create", KERNEL_CONFIG);
        assert_eq!(status, 500);
        assert_eq!(chain(&body), ["Error from API", "The VM could not be created", "VM is already created"]);
    }

    #[test]
    fn test_create_fills_defaults_and_ignores_unknown_fields() {
        let mut fake = FakeCloudHypervisor::new();
        let body = r#"{"payload":{"kernel":"/k"},"no_such_field":1}"#;
        assert_eq!(put(&mut fake, "/vm.create", body).0, 204);
        let info = info(&mut fake);
        assert_eq!(info["config"]["cpus"]["boot_vcpus"], DEFAULT_VCPUS);
        assert_eq!(info["config"]["memory"]["size"], DEFAULT_MEMORY_SIZE);
        assert_eq!(info["memory_actual_size"], DEFAULT_MEMORY_SIZE);
    }

    #[test]
    fn test_create_rejects_bad_bodies_with_400() {
        let mut fake = FakeCloudHypervisor::new();
        for body in [
            "not json",
            r#"{"payload":{},"memory":{}}"#,
            r#"{"payload":{},"cpus":{"boot_vcpus":1}}"#,
            r#"{"payload":{},"memory":{"size":"big"}}"#,
            r#"{"payload":{},"serial":{"mode":"Loud"}}"#,
            r#"{"payload":{},"net":[{"mac":"12:34"}]}"#,
            r#"{"payload":{},"net":[{"ip":"300.1.1.1"}]}"#,
            r#"{"payload":{},"vsock":{"cid":3}}"#,
            r#"{"payload":{},"balloon":{"deflate_on_oom":true}}"#,
        ] {
            let (status, answer) = put(&mut fake, "/vm.create", body);
            assert_eq!(status, 400, "{body}");
            assert_eq!(chain(&answer)[0], "Failed to deserialize JSON", "{body}");
            assert_eq!(chain(&answer).len(), 2, "{body}");
        }
        assert_eq!(fake.state(), None);
        // No body at all: a bare 400.
        assert_eq!(put(&mut fake, "/vm.create", ""), (400, String::new()));
    }

    #[test]
    fn test_boot_needs_config_and_only_once() {
        let mut fake = FakeCloudHypervisor::new();
        let (status, body) = put(&mut fake, "/vm.boot", "");
        assert_eq!(status, 404);
        assert_eq!(chain(&body), ["Error from API", "The VM could not boot", "VM config is missing"]);
        let mut fake = running();
        let (status, body) = put(&mut fake, "/vm.boot", "");
        assert_eq!(status, 500);
        assert_eq!(chain(&body), ["Error from API", "The VM could not boot", "VM is already created"]);
    }

    #[test]
    fn test_boot_validates_config() {
        let mut fake = FakeCloudHypervisor::new();
        put(&mut fake, "/vm.create", r#"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":4,"max_vcpus":2}}"#);
        let (status, body) = put(&mut fake, "/vm.boot", "");
        assert_eq!(status, 500);
        assert_eq!(chain(&body)[2], "Failed to validate config");
        assert_eq!(fake.state(), Some(VmState::Created));

        let mut fake = FakeCloudHypervisor::new();
        put(&mut fake, "/vm.create", r#"{"payload":{"cmdline":"x"}}"#);
        let (status, body) = put(&mut fake, "/vm.boot", "");
        assert_eq!(status, 500);
        assert_eq!(chain(&body).last().unwrap(), "No kernel specified");
    }

    #[test]
    fn test_boot_names_devices_like_ch() {
        let mut fake = running();
        let info = info(&mut fake);
        assert_eq!(info["config"]["disks"][0]["id"], "_disk0");
        assert_eq!(info["config"]["net"][0]["id"], "_net1");
        assert_eq!(info["config"]["vsock"]["id"], "_vsock2");
        assert_eq!(info["device_tree"]["_disk0"]["pci_bdf"], "0000:00:01.0");
        assert_eq!(info["config"]["memory"]["thp"], false);
    }

    #[test]
    fn test_pause_only_running() {
        let mut fake = created();
        let (status, body) = put(&mut fake, "/vm.pause", "");
        assert_eq!(status, 500);
        assert_eq!(chain(&body), ["Error from API", "The VM could not be paused", "VM is not running"]);

        let mut fake = paused();
        let (status, body) = put(&mut fake, "/vm.pause", "");
        assert_eq!(status, 500);
        assert_eq!(
            chain(&body),
            [
                "Error from API",
                "The VM could not be paused",
                "Cannot pause VM",
                "Failed to pause migratable component",
                "Invalid transition: InvalidStateTransition(Paused, Paused)",
            ]
        );
        assert_eq!(fake.state(), Some(VmState::Paused));
    }

    #[test]
    fn test_resume_only_paused() {
        let mut fake = FakeCloudHypervisor::new();
        let (status, body) = put(&mut fake, "/vm.resume", "");
        assert_eq!(status, 500);
        assert_eq!(chain(&body)[2], "VM is not running");

        let mut fake = running();
        let (status, body) = put(&mut fake, "/vm.resume", "");
        assert_eq!(status, 500);
        assert_eq!(chain(&body)[1], "The VM could not resume");
        assert_eq!(chain(&body)[4], "Invalid transition: InvalidStateTransition(Running, Running)");
    }

    #[test]
    fn test_snapshot_only_paused_and_writes_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut fake = running();
        let (status, body) = put(&mut fake, "/vm.snapshot", &snapshot_url(dir.path()));
        assert_eq!(status, 500);
        assert_eq!(chain(&body)[4], "Trying to snapshot while VM is running");
        assert!(!dir.path().join(SNAPSHOT_CONFIG_FILE).exists());

        let mut fake = paused();
        assert_eq!(put(&mut fake, "/vm.snapshot", &snapshot_url(dir.path())).0, 204);
        for file in [SNAPSHOT_CONFIG_FILE, SNAPSHOT_STATE_FILE, SNAPSHOT_MEMORY_FILE] {
            let len = std::fs::metadata(dir.path().join(file)).unwrap().len();
            assert!(len > 0 && len < 4096, "{file}: {len} bytes");
        }
        let config: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(SNAPSHOT_CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(&config, fake.config().unwrap());
        // The VM stays paused; a second snapshot into the same directory fails (files exist).
        assert_eq!(fake.state(), Some(VmState::Paused));
        let (status, body) = put(&mut fake, "/vm.snapshot", &snapshot_url(dir.path()));
        assert_eq!(status, 500);
        assert_eq!(chain(&body)[2], "Cannot send VM snapshot");
    }

    #[test]
    fn test_snapshot_errors() {
        let mut fake = created();
        let (status, body) = put(&mut fake, "/vm.snapshot", r#"{"destination_url":"file:///tmp"}"#);
        assert_eq!(status, 500);
        assert_eq!(chain(&body)[2], "VM is not running");

        let mut fake = paused();
        let (status, body) = put(&mut fake, "/vm.snapshot", r#"{"destination_url":"/tmp"}"#);
        assert_eq!(status, 500);
        assert_eq!(chain(&body)[4], "Could not extract path from URL: /tmp");
        let (status, body) = put(&mut fake, "/vm.snapshot", r#"{"destination_url":"file:///no/such/dir"}"#);
        assert_eq!(status, 500);
        assert_eq!(chain(&body)[4], "Destination is not a directory");
        let (status, body) = put(&mut fake, "/vm.snapshot", "{}");
        assert_eq!(status, 400);
        assert!(chain(&body)[1].contains("destination_url"), "{body}");
    }

    #[test]
    fn test_restore_into_fresh_vmm_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = paused();
        assert_eq!(put(&mut source, "/vm.snapshot", &snapshot_url(dir.path())).0, 204);
        let restore = format!(r#"{{"source_url":"file://{}","memory_restore_mode":"OnDemand"}}"#, dir.path().display());

        let mut busy = created();
        let (status, body) = put(&mut busy, "/vm.restore", &restore);
        assert_eq!(status, 500);
        assert_eq!(chain(&body), ["Error from API", "The VM could not be restored", "VM is already created"]);

        let mut fresh = FakeCloudHypervisor::new();
        assert_eq!(put(&mut fresh, "/vm.restore", &restore).0, 204);
        assert_eq!(fresh.state(), Some(VmState::Paused));
        let record = fresh.last_restore().unwrap();
        assert_eq!(record.memory_restore_mode, MemoryRestoreMode::OnDemand);
        assert!(!record.resume && !record.prefault);
        assert_eq!(info(&mut fresh)["config"], *source.config().unwrap());
        assert_eq!(put(&mut fresh, "/vm.resume", "").0, 204);

        let mut resumed = FakeCloudHypervisor::new();
        let restore = format!(r#"{{"source_url":"file://{}","resume":true,"prefault":true}}"#, dir.path().display());
        assert_eq!(put(&mut resumed, "/vm.restore", &restore).0, 204);
        assert_eq!(resumed.state(), Some(VmState::Running));
        assert_eq!(resumed.last_restore().unwrap().memory_restore_mode, MemoryRestoreMode::Copy);
    }

    #[test]
    fn test_restore_errors() {
        let empty = tempfile::tempdir().unwrap();
        let mut fake = FakeCloudHypervisor::new();
        let (status, body) = put(&mut fake, "/vm.restore", r#"{"source_url":"/snap"}"#);
        assert_eq!(status, 500);
        assert_eq!(
            chain(&body)[2..],
            [
                "Cannot restore VM",
                "Failed to send migratable component snapshot",
                "Could not extract path from URL: /snap"
            ]
        );
        let url = format!(r#"{{"source_url":"file://{}"}}"#, empty.path().display());
        let (status, body) = put(&mut fake, "/vm.restore", &url);
        assert_eq!(status, 500);
        assert_eq!(chain(&body)[3], "Failed to receive migratable component snapshot");
        let (status, _) = put(&mut fake, "/vm.restore", r#"{"source_url":"file:///x","memory_restore_mode":"Lazy"}"#);
        assert_eq!(status, 400);
        let (status, _) = put(&mut fake, "/vm.restore", r#"{"prefault":true}"#);
        assert_eq!(status, 400);
        assert_eq!(fake.state(), None);
    }

    #[test]
    fn test_info_needs_a_vm() {
        let mut fake = FakeCloudHypervisor::new();
        let (status, body) = get(&mut fake, "/vm.info");
        assert_eq!(status, 404);
        assert_eq!(chain(&body), ["Error from API", "The VM info is not available", "VM is not created"]);
    }

    #[test]
    fn test_counters_only_booted() {
        let mut fake = created();
        let (status, body) = get(&mut fake, "/vm.counters");
        assert_eq!(status, 500);
        assert_eq!(chain(&body)[2], "VM is not running");
        let mut fake = running();
        let (status, body) = get(&mut fake, "/vm.counters");
        assert_eq!(status, 200);
        let counters: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(counters["_disk0"]["read_bytes"], 0);
        assert_eq!(counters["_net1"]["tx_frames"], 0);
    }

    #[test]
    fn test_resize_created_edits_config() {
        let mut fake = FakeCloudHypervisor::new();
        let (status, body) = put(&mut fake, "/vm.resize", r#"{"desired_vcpus":2}"#);
        assert_eq!(status, 404);
        assert_eq!(chain(&body)[1..], ["The VM could not be resized", "VM is not created"]);
        let mut fake = created();
        assert_eq!(
            put(&mut fake, "/vm.resize", r#"{"desired_vcpus":2,"desired_ram":1073741824,"desired_balloon":4096}"#).0,
            204
        );
        let config = fake.config().unwrap();
        assert_eq!(config["cpus"]["boot_vcpus"], 2);
        assert_eq!(config["memory"]["size"], 1_073_741_824_u64);
        assert_eq!(config["balloon"]["size"], 4096);
    }

    #[test]
    fn test_resize_running_and_paused() {
        for mut fake in [running(), paused()] {
            assert_eq!(put(&mut fake, "/vm.resize", r#"{"desired_balloon":67108864}"#).0, 204);
            assert_eq!(info(&mut fake)["memory_actual_size"], 268_435_456_u64 - 67_108_864);
            assert_eq!(put(&mut fake, "/vm.resize", r#"{"desired_ram":402653184}"#).0, 204);
            assert_eq!(info(&mut fake)["memory_actual_size"], 402_653_184_u64 - 67_108_864);
            assert_eq!(put(&mut fake, "/vm.resize", r#"{"desired_vcpus":2}"#).0, 204);
            let (status, body) = put(&mut fake, "/vm.resize", r#"{"desired_vcpus":3}"#);
            assert_eq!(status, 500);
            assert_eq!(chain(&body)[2], "Error from CPU manager");
            let (status, body) = put(&mut fake, "/vm.resize", r#"{"desired_ram":1073741824}"#);
            assert_eq!(status, 500);
            assert_eq!(chain(&body)[2], "Memory manager error");
        }
        let mut fake = FakeCloudHypervisor::new();
        put(&mut fake, "/vm.create", r#"{"payload":{"kernel":"/k"}}"#);
        put(&mut fake, "/vm.boot", "");
        let (status, body) = put(&mut fake, "/vm.resize", r#"{"desired_balloon":1}"#);
        assert_eq!(status, 500);
        assert_eq!(chain(&body)[2], "Error from device manager");
    }

    #[test]
    fn test_add_disk_hot_and_cold() {
        let mut fake = FakeCloudHypervisor::new();
        let (status, body) = put(&mut fake, "/vm.add-disk", r#"{"path":"/d.img"}"#);
        assert_eq!(status, 404);
        assert_eq!(chain(&body)[1], "The disk could not be added to the VM");

        let mut fake = created();
        assert_eq!(put(&mut fake, "/vm.add-disk", r#"{"path":"/d.img","id":"data"}"#), (204, String::new()));
        assert_eq!(fake.config().unwrap()["disks"][1]["id"], "data");
        let (status, body) = put(&mut fake, "/vm.add-disk", r#"{"path":"/e.img","id":"data"}"#);
        assert_eq!(status, 500);
        assert_eq!(chain(&body)[2..], ["Failed to validate config", "Identifier data is not unique"]);

        let mut fake = running();
        let (status, body) = put(&mut fake, "/vm.add-disk", r#"{"path":"/d.img","readonly":true}"#);
        assert_eq!(status, 200);
        let device: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(device, json!({"id": "_disk3", "bdf": "0000:00:04.0"}));
        assert_eq!(info(&mut fake)["device_tree"]["_disk3"]["pci_bdf"], "0000:00:04.0");
        assert_eq!(put(&mut fake, "/vm.add-disk", r#"{"path":7}"#).0, 400);
    }

    #[test]
    fn test_remove_device() {
        let mut fake = FakeCloudHypervisor::new();
        assert_eq!(put(&mut fake, "/vm.remove-device", r#"{"id":"x"}"#).0, 404);

        let mut fake = created();
        put(&mut fake, "/vm.add-disk", r#"{"path":"/d.img","id":"data"}"#);
        assert_eq!(put(&mut fake, "/vm.remove-device", r#"{"id":"data"}"#).0, 204);
        let (status, body) = put(&mut fake, "/vm.remove-device", r#"{"id":"data"}"#);
        assert_eq!(status, 500);
        assert_eq!(chain(&body)[2], r#"No device with id "data" to remove"#);

        let mut fake = running();
        assert_eq!(put(&mut fake, "/vm.remove-device", r#"{"id":"_disk0"}"#).0, 204);
        assert_eq!(fake.config().unwrap()["disks"], json!([]));
        let (status, body) = put(&mut fake, "/vm.remove-device", r#"{"id":"_disk0"}"#);
        assert_eq!(status, 500);
        assert_eq!(chain(&body)[2..], ["Error from device manager", "Unknown device id: _disk0"]);
        assert_eq!(put(&mut fake, "/vm.remove-device", "{}").0, 400);
    }

    #[test]
    fn test_shutdown_reboot_delete() {
        let mut fake = created();
        let (status, body) = put(&mut fake, "/vm.shutdown", "");
        assert_eq!(status, 500);
        assert_eq!(chain(&body), ["Error from API", "The VM could not shutdown", "VM is not running"]);
        let (status, body) = put(&mut fake, "/vm.reboot", "");
        assert_eq!(status, 404);
        assert_eq!(chain(&body), ["Error from API", "The VM could not reboot", "VM is not created"]);

        let mut fake = paused();
        assert_eq!(put(&mut fake, "/vm.reboot", "").0, 204);
        assert_eq!(fake.state(), Some(VmState::Running));
        assert_eq!(put(&mut fake, "/vm.pause", "").0, 204);
        assert_eq!(put(&mut fake, "/vm.shutdown", "").0, 204);
        assert_eq!(fake.state(), Some(VmState::Created));

        // Deleting nothing is fine; deleting a running VM shuts it down first.
        let mut fake = FakeCloudHypervisor::new();
        assert_eq!(put(&mut fake, "/vm.delete", "").0, 204);
        let mut fake = running();
        assert_eq!(put(&mut fake, "/vm.delete", "").0, 204);
        assert_eq!(get(&mut fake, "/vm.info").0, 404);
        assert_eq!(put(&mut fake, "/vm.create", KERNEL_CONFIG).0, 204);
    }

    #[test]
    fn test_power_button() {
        let mut fake = created();
        let (status, body) = put(&mut fake, "/vm.power-button", "");
        assert_eq!(status, 500);
        assert_eq!(chain(&body), ["Error from API", "Error triggering power button", "VM is not running"]);

        // The guest powers off: without --no-shutdown the VMM ends.
        let mut fake = running();
        assert_eq!(put(&mut fake, "/vm.power-button", "").0, 204);
        assert!(fake.exit_requested());

        let mut fake = running().with_no_shutdown(true);
        assert_eq!(put(&mut fake, "/vm.power-button", "").0, 204);
        assert!(!fake.exit_requested());
        assert_eq!(fake.state(), Some(VmState::Created));

        // A paused guest acts once resumed.
        let mut fake = paused();
        assert_eq!(put(&mut fake, "/vm.power-button", "").0, 204);
        assert!(!fake.exit_requested());
        assert_eq!(put(&mut fake, "/vm.resume", "").0, 204);
        assert!(fake.exit_requested());
    }

    #[test]
    fn test_vmm_shutdown_deletes_and_requests_exit() {
        let mut fake = running();
        assert_eq!(put(&mut fake, "/vmm.shutdown", ""), (204, String::new()));
        assert!(fake.exit_requested());
        assert_eq!(fake.state(), None);
    }

    #[test]
    fn test_nmi() {
        let mut fake = created();
        let (status, body) = put(&mut fake, "/vm.nmi", "");
        assert_eq!((status, chain(&body)[1].as_str()), (500, "Error triggering NMI"));
        let mut fake = running();
        assert_eq!(put(&mut fake, "/vm.nmi", "").0, 204);
    }

    #[test]
    fn test_http_shape_errors() {
        let mut fake = running();
        // Unknown paths, and paths outside the API root.
        assert_eq!(get(&mut fake, "/vm.nothing"), (404, r#"["Not Found"]"#.to_owned()));
        assert_eq!(fake.handle("GET", "/vm.info", b"").0, 404);
        // The query is not part of the route.
        assert_eq!(fake.handle("GET", "/api/v1/vm.info?x=1", b"").0, 200);
        // A body where none is expected, none where one is, and the wrong method.
        assert_eq!(put(&mut fake, "/vm.pause", "{}"), (400, r#"["Bad Request"]"#.to_owned()));
        assert_eq!(put(&mut fake, "/vm.snapshot", ""), (400, r#"["Bad Request"]"#.to_owned()));
        assert_eq!(get(&mut fake, "/vm.boot"), (400, r#"["Bad Request"]"#.to_owned()));
        assert_eq!(put(&mut fake, "/vm.counters", ""), (400, r#"["Bad Request"]"#.to_owned()));
        assert_eq!(call(&mut fake, "PATCH", "/vm.pause", ""), (400, String::new()));
        assert_eq!(put(&mut fake, "/vm.info", ""), (400, r#"["Bad Request"]"#.to_owned()));
        assert_eq!(put(&mut fake, "/vmm.ping", ""), (400, r#"["Bad Request"]"#.to_owned()));
        assert_eq!(get(&mut fake, "/vmm.shutdown"), (400, r#"["Bad Request"]"#.to_owned()));
        assert_eq!(get(&mut fake, "/vm.create"), (400, r#"["Bad Request"]"#.to_owned()));
        // None of that changed the VM.
        assert_eq!(fake.state(), Some(VmState::Running));
        // Endpoints the fake does not model say so.
        let (status, body) = put(&mut fake, "/vm.add-net", r#"{"tap":"t"}"#);
        assert_eq!(status, 500);
        assert!(chain(&body)[0].contains("does not model /vm.add-net"));
    }

    #[test]
    fn test_state_transitions_match_ch() {
        use VmState::*;
        let all = [Created, Running, Shutdown, Paused];
        let allowed = [
            (Created, Running),
            (Created, Shutdown),
            (Created, Paused),
            (Running, Paused),
            (Running, Shutdown),
            (Shutdown, Running),
            (Paused, Running),
            (Paused, Shutdown),
        ];
        for from in all {
            for to in all {
                assert_eq!(from.valid_transition(to).is_ok(), allowed.contains(&(from, to)), "{from:?} -> {to:?}");
            }
        }
    }
    #[tokio::test]
    async fn test_serve_checks_requests_against_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let server = serve(&socket).await.unwrap();
        let client = nestbox_uds_http::UdsClient::new(&socket);
        let ping: Value = client.get_json("/api/v1/vmm.ping").await.unwrap();
        assert_eq!(ping["version"], VERSION);
        let config: Value = serde_json::from_str(KERNEL_CONFIG).unwrap();
        client.put_json("/api/v1/vm.create", &config).await.unwrap();
        client.put_empty("/api/v1/vm.boot").await.unwrap();
        let info: Value = client.get_json("/api/v1/vm.info").await.unwrap();
        assert_eq!(info["state"], "Running");
        let counters: Value = client.get_json("/api/v1/vm.counters").await.unwrap();
        assert!(counters.get("_disk0").is_some(), "{counters}");

        // A body the spec refuses (desired_vcpus has minimum 1) never reaches the fake.
        let err = client.put_json("/api/v1/vm.resize", &json!({"desired_vcpus": 0})).await.unwrap_err();
        assert_eq!(err.status(), Some(400));
        assert!(chain(err.body().unwrap())[0].starts_with("spec violation:"), "{err}");
        // CH's own refusals come through with their status and chain.
        let err = client.put_empty("/api/v1/vm.resume").await.unwrap_err();
        assert_eq!(err.status(), Some(500));
        assert_eq!(chain(err.body().unwrap())[2], "Cannot resume VM");

        assert_eq!(server.violations().len(), 1, "{:?}", server.violations());
        let requests = server.requests();
        let seen: Vec<(&str, u16)> = requests.iter().map(|r| (r.path.as_str(), r.status)).collect();
        assert_eq!(
            seen,
            [
                ("/api/v1/vmm.ping", 200),
                ("/api/v1/vm.create", 204),
                ("/api/v1/vm.boot", 204),
                ("/api/v1/vm.info", 200),
                ("/api/v1/vm.counters", 200),
                ("/api/v1/vm.resize", 400),
                ("/api/v1/vm.resume", 500),
            ]
        );
        assert_eq!(requests[1].body.as_ref().unwrap()["payload"]["kernel"], "/k");

        // After vmm.shutdown nothing succeeds any more.
        client.put_empty("/api/v1/vmm.shutdown").await.unwrap();
        let err = client.get_json::<Value>("/api/v1/vmm.ping").await.unwrap_err();
        assert_eq!(err.status(), Some(500));
        assert!(server.violations().len() == 1, "{:?}", server.violations());
        server.shutdown();
        assert!(!socket.exists());
    }
    #[tokio::test]
    async fn test_served_replies_conform_to_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("snap");
        std::fs::create_dir(&snap).unwrap();
        let socket = dir.path().join("api.sock");
        let server = serve(&socket).await.unwrap();
        let client = nestbox_uds_http::UdsClient::new(&socket);
        let config: Value = serde_json::from_str(KERNEL_CONFIG).unwrap();
        client.put_json("/api/v1/vm.create", &config).await.unwrap();
        client.put_json("/api/v1/vm.add-disk", &json!({"path": "/cold.img"})).await.unwrap();
        client.put_empty("/api/v1/vm.boot").await.unwrap();
        let added = client.put_json("/api/v1/vm.add-disk", &json!({"path": "/hot.img"})).await.unwrap();
        assert_eq!(added.status, 200);
        client.put_json("/api/v1/vm.resize", &json!({"desired_balloon": 1_048_576})).await.unwrap();
        client.get_json::<Value>("/api/v1/vm.counters").await.unwrap();
        client.put_json("/api/v1/vm.remove-device", &json!({"id": "_disk0"})).await.unwrap();
        client.put_empty("/api/v1/vm.pause").await.unwrap();
        let url = json!({"destination_url": format!("file://{}", snap.display())});
        client.put_json("/api/v1/vm.snapshot", &url).await.unwrap();
        client.put_empty("/api/v1/vm.delete").await.unwrap();
        let restore = json!({"source_url": format!("file://{}", snap.display()), "resume": true});
        client.put_json("/api/v1/vm.restore", &restore).await.unwrap();
        let info: Value = client.get_json("/api/v1/vm.info").await.unwrap();
        assert_eq!(info["state"], "Running");
        client.put_empty("/api/v1/vm.power-button").await.unwrap();
        assert!(server.violations().is_empty(), "{:?}", server.violations());
        server.shutdown();
    }
}
