//! The bodies of Firecracker's HTTP API, one struct per definition of its Swagger spec
//! (`shared/specs/firecracker.yaml`, Firecracker v1.16.1), field names and enums exactly as the
//! spec spells them.
//!
//! Optional fields are `Option`s that are left out when `None`, so a body carries only what was
//! set. Response types accept unknown fields, so a newer Firecracker still decodes. Nothing here
//! knows about `VmSpec`: the mapping lives in [`crate::map`].

use serde::{Deserialize, Serialize};

/// `MachineConfiguration`: vCPUs, memory, SMT, dirty-page tracking, huge pages, CPU template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfiguration {
    /// Number of vCPUs, 1 to 32 (1 or even with SMT).
    pub vcpu_count: u32,
    /// Guest memory in MiB.
    pub mem_size_mib: u32,
    /// Simultaneous multithreading (x86 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Track dirty pages, for diff snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// A static CPU template (deprecated upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    /// Huge pages backing guest memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

/// `CpuTemplate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuTemplate {
    /// Intel C3.
    C3,
    /// Intel T2.
    T2,
    /// Intel T2S.
    T2S,
    /// Intel T2CL.
    T2CL,
    /// AMD T2A.
    T2A,
    /// Arm V1N1.
    V1N1,
    /// No template.
    None,
}

/// `MachineConfiguration.huge_pages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    /// Ordinary pages.
    None,
    /// 2 MiB hugetlbfs pages.
    #[serde(rename = "2M")]
    Huge2M,
}

/// `BootSource`: the kernel, initrd and command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSource {
    /// The kernel image as Firecracker sees the path.
    pub kernel_image_path: String,
    /// The initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    /// The kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

/// `Drive.cache_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// No flush to the host on guest flush (the default).
    Unsafe,
    /// Guest flushes become host fsyncs.
    Writeback,
}

/// `Drive.io_engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Blocking I/O (the default).
    Sync,
    /// io_uring (host kernel 5.10.51 or newer).
    Async,
}

/// `Drive`: a virtio-blk (or vhost-user-blk) disk, created with `PUT /drives/{drive_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    /// The drive id; equals the `{drive_id}` of the path.
    pub drive_id: String,
    /// The boot partition's unique id (root device only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Whether Firecracker makes this the root device (`root=/dev/vda`).
    pub is_root_device: bool,
    /// The cache strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    /// Read-only disk (virtio-blk only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    /// The backing file as Firecracker sees the path (virtio-blk only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    /// I/O rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    /// The I/O engine (virtio-blk only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// The vhost-user-blk backend's socket (vhost-user-blk only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

/// `PartialDrive`: the post-boot update of a drive (`PATCH /drives/{drive_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialDrive {
    /// The drive id.
    pub drive_id: String,
    /// A new backing file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    /// New rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// `RateLimiter`: independent bandwidth and operations token buckets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RateLimiter {
    /// Bytes as tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    /// Operations as tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

/// `TokenBucket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucket {
    /// Capacity in tokens.
    pub size: u64,
    /// An initial burst on top of the capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill the whole bucket.
    pub refill_time: u64,
}

/// `NetworkInterface`: a virtio-net device on a host TAP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    /// The interface id; equals the `{iface_id}` of the path.
    pub iface_id: String,
    /// The host TAP device.
    pub host_dev_name: String,
    /// The guest MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// MTU advertised to the guest (68 to 65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Receive rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Transmit rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `PartialNetworkInterface`: the post-boot rate-limiter update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialNetworkInterface {
    /// The interface id.
    pub iface_id: String,
    /// Receive rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Transmit rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `Vsock`: the hybrid vsock device, backed by a Unix socket Firecracker creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vsock {
    /// The guest CID (3 or more).
    pub guest_cid: u32,
    /// The Unix socket as Firecracker sees the path.
    pub uds_path: String,
    /// Deprecated upstream; never sent by nestbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
}

/// `Balloon`: the balloon device, configured before boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balloon {
    /// Target balloon size in MiB.
    pub amount_mib: u32,
    /// Deflate under guest memory pressure.
    pub deflate_on_oom: bool,
    /// Seconds between statistics refreshes; non-zero enables statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_polling_interval_s: Option<u32>,
    /// Free page hinting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_page_hinting: Option<bool>,
    /// Free page reporting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_page_reporting: Option<bool>,
}

/// `BalloonUpdate`: a new target size (`PATCH /balloon`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonUpdate {
    /// Target balloon size in MiB.
    pub amount_mib: u32,
}

/// `BalloonStatsUpdate`: a new statistics interval (`PATCH /balloon/statistics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonStatsUpdate {
    /// Seconds between statistics refreshes.
    pub stats_polling_interval_s: u32,
}

/// `BalloonStats` (`GET /balloon/statistics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BalloonStats {
    /// Pages the balloon aims to hold.
    pub target_pages: u64,
    /// Pages it holds.
    pub actual_pages: u64,
    /// MiB it aims to hold.
    pub target_mib: u64,
    /// MiB it holds.
    pub actual_mib: u64,
    /// Bytes swapped in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_in: Option<i64>,
    /// Bytes swapped out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_out: Option<i64>,
    /// Major page faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_faults: Option<i64>,
    /// Minor page faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor_faults: Option<i64>,
    /// Unused bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory: Option<i64>,
    /// Total bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_memory: Option<i64>,
    /// Bytes available without swapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_memory: Option<i64>,
    /// Bytes of quickly reclaimable caches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_caches: Option<i64>,
    /// Successful hugetlb allocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_allocations: Option<i64>,
    /// Failed hugetlb allocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_failures: Option<i64>,
    /// OOM killer invocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<i64>,
    /// Allocation stalls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloc_stall: Option<i64>,
    /// Memory scanned asynchronously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_scan: Option<i64>,
    /// Memory scanned directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_scan: Option<i64>,
    /// Memory reclaimed asynchronously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_reclaim: Option<i64>,
    /// Memory reclaimed directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_reclaim: Option<i64>,
}

/// `BalloonStartCmd` (`PATCH /balloon/hinting/start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BalloonStartCmd {
    /// Acknowledge automatically when the guest reports done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledge_on_stop: Option<bool>,
}

/// `BalloonHintingStatus` (`GET /balloon/hinting/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonHintingStatus {
    /// The host's last command.
    pub host_cmd: u64,
    /// The guest's last command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_cmd: Option<u64>,
}

/// `EntropyDevice`: virtio-rng.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EntropyDevice {
    /// Rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// `Logger.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warning,
    /// The default.
    Info,
    /// Debug.
    Debug,
    /// Everything.
    Trace,
    /// Nothing.
    Off,
}

/// `Logger`: where Firecracker's own log goes (`PUT /logger`, once).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Logger {
    /// The level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// A named pipe or file for the log, as Firecracker sees the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// Print the level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Print file and line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    /// Only messages from this module path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// `Metrics`: where metrics are flushed (`PUT /metrics`, once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// A named pipe or file, as Firecracker sees the path.
    pub metrics_path: String,
}

/// `InstanceActionInfo.action_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Write the metrics now.
    FlushMetrics,
    /// Boot the configured VM.
    InstanceStart,
    /// Press Ctrl+Alt+Del on the guest's i8042 keyboard (x86 only).
    SendCtrlAltDel,
}

/// `InstanceActionInfo` (`PUT /actions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceActionInfo {
    /// The action.
    pub action_type: ActionType,
}

/// `Vm.state`: what `PATCH /vm` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmRunState {
    /// Pause the vCPUs.
    Paused,
    /// Resume them.
    Resumed,
}

/// `Vm` (`PATCH /vm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    /// The desired state.
    pub state: VmRunState,
}

/// `SnapshotCreateParams.snapshot_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    /// All of guest memory.
    Full,
    /// Only memory dirtied since the last snapshot (needs `track_dirty_pages`).
    Diff,
}

/// `SnapshotCreateParams` (`PUT /snapshot/create`, paused VM only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCreateParams {
    /// Where guest memory goes.
    pub mem_file_path: String,
    /// Where the microVM state goes.
    pub snapshot_path: String,
    /// Full (the default) or diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
}

/// `MemoryBackend.backend_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    /// `backend_path` is the memory file.
    File,
    /// `backend_path` is the Unix socket of a userfaultfd page-fault handler.
    Uffd,
}

/// `MemoryBackend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBackend {
    /// File or Uffd.
    pub backend_type: MemoryBackendType,
    /// The memory file or the handler's socket.
    pub backend_path: String,
}

/// `NetworkOverride`: a new TAP for an interface on restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkOverride {
    /// The interface.
    pub iface_id: String,
    /// Its new TAP.
    pub host_dev_name: String,
}

/// `VsockOverride`: a new vsock socket on restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockOverride {
    /// The new socket path.
    pub uds_path: String,
}

/// `SnapshotLoadParams` (`PUT /snapshot/load`, fresh process only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotLoadParams {
    /// The microVM state file.
    pub snapshot_path: String,
    /// How guest memory is loaded (exclusive with `mem_file_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_backend: Option<MemoryBackend>,
    /// Deprecated upstream; nestbox sends `mem_backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_file_path: Option<String>,
    /// Deprecated upstream alias of `track_dirty_pages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_diff_snapshots: Option<bool>,
    /// Track dirty pages after the load, for diff snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Resume the VM once loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    /// TAP replacements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
    /// A new vsock socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
    /// Advance kvmclock by the wall time since the snapshot (x86 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_realtime: Option<bool>,
}

/// `InstanceInfo.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Configured, not booted.
    #[serde(rename = "Not started")]
    NotStarted,
    /// Booted and running.
    Running,
    /// Paused.
    Paused,
}

/// `InstanceInfo` (`GET /`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Application name ("Firecracker").
    pub app_name: String,
    /// The instance id.
    pub id: String,
    /// The state.
    pub state: InstanceState,
    /// The VMM's version.
    pub vmm_version: String,
}

/// `FirecrackerVersion` (`GET /version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirecrackerVersion {
    /// The build version.
    pub firecracker_version: String,
}

/// `MmdsConfig.version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MmdsVersion {
    /// IMDSv1-like.
    V1,
    /// Session-token based.
    V2,
}

/// `MmdsConfig` (read back in [`FullVmConfiguration`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmdsConfig {
    /// The MMDS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<MmdsVersion>,
    /// Interfaces that forward to MMDS.
    pub network_interfaces: Vec<String>,
    /// The link-local address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    /// EC2 IMDS compatibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imds_compat: Option<bool>,
}

/// `Pmem` (read back in [`FullVmConfiguration`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pmem {
    /// The device id.
    pub id: String,
    /// The backing file.
    pub path_on_host: String,
    /// Root device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device: Option<bool>,
    /// Read-only mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// `MemoryHotplugConfig` (read back in [`FullVmConfiguration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryHotplugConfig {
    /// Total hotpluggable MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size_mib: Option<u64>,
    /// Slot size in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_size_mib: Option<u64>,
    /// Block size in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size_mib: Option<u64>,
}

/// `FullVmConfiguration` (`GET /vm/config`). `cpu-config` is kept as raw JSON: nestbox never
/// sets CPU templates.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FullVmConfiguration {
    /// The balloon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<Balloon>,
    /// All block devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drives: Vec<Drive>,
    /// The boot source (empty after a snapshot load).
    #[serde(rename = "boot-source", default, skip_serializing_if = "Option::is_none")]
    pub boot_source: Option<BootSource>,
    /// The custom CPU template.
    #[serde(rename = "cpu-config", default, skip_serializing_if = "Option::is_none")]
    pub cpu_config: Option<serde_json::Value>,
    /// The logger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    /// The machine.
    #[serde(rename = "machine-config", default, skip_serializing_if = "Option::is_none")]
    pub machine_config: Option<MachineConfiguration>,
    /// The metrics sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Hotpluggable memory.
    #[serde(rename = "memory-hotplug", default, skip_serializing_if = "Option::is_none")]
    pub memory_hotplug: Option<MemoryHotplugConfig>,
    /// MMDS.
    #[serde(rename = "mmds-config", default, skip_serializing_if = "Option::is_none")]
    pub mmds_config: Option<MmdsConfig>,
    /// All net devices.
    #[serde(rename = "network-interfaces", default, skip_serializing_if = "Vec::is_empty")]
    pub network_interfaces: Vec<NetworkInterface>,
    /// All pmem devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pmem: Vec<Pmem>,
    /// The vsock device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<Vsock>,
    /// The entropy device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<EntropyDevice>,
}

/// `Error`: every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Error {
    /// Firecracker's description of what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_optional_fields_are_left_out() {
        let drive = Drive {
            drive_id: "root".into(),
            partuuid: None,
            is_root_device: false,
            cache_type: None,
            is_read_only: Some(true),
            path_on_host: Some("/d/root.img".into()),
            rate_limiter: None,
            io_engine: None,
            socket: None,
        };
        assert_eq!(
            serde_json::to_string(&drive).unwrap(),
            r#"{"drive_id":"root","is_root_device":false,"is_read_only":true,"path_on_host":"/d/root.img"}"#
        );
    }

    #[test]
    fn test_enums_spelled_as_the_spec() {
        let info: InstanceInfo = serde_json::from_str(
            r#"{"app_name":"Firecracker","id":"a","state":"Not started","vmm_version":"1.16.1","extra":1}"#,
        )
        .unwrap();
        assert_eq!(info.state, InstanceState::NotStarted);
        let huge = MachineConfiguration {
            vcpu_count: 2,
            mem_size_mib: 256,
            smt: None,
            track_dirty_pages: None,
            cpu_template: None,
            huge_pages: Some(HugePages::Huge2M),
        };
        assert_eq!(serde_json::to_string(&huge).unwrap(), r#"{"vcpu_count":2,"mem_size_mib":256,"huge_pages":"2M"}"#);
        let load = SnapshotLoadParams {
            snapshot_path: "/s".into(),
            mem_backend: Some(MemoryBackend { backend_type: MemoryBackendType::Uffd, backend_path: "/u.sock".into() }),
            mem_file_path: None,
            enable_diff_snapshots: None,
            track_dirty_pages: None,
            resume_vm: Some(true),
            network_overrides: vec![],
            vsock_override: None,
            clock_realtime: None,
        };
        assert_eq!(
            serde_json::to_string(&load).unwrap(),
            r#"{"snapshot_path":"/s","mem_backend":{"backend_type":"Uffd","backend_path":"/u.sock"},"resume_vm":true}"#
        );
    }

    #[test]
    fn test_full_config_uses_dashed_keys() {
        let cfg: FullVmConfiguration = serde_json::from_str(
            r#"{"boot-source":{"kernel_image_path":"/k"},"machine-config":{"vcpu_count":1,"mem_size_mib":128},
               "network-interfaces":[{"iface_id":"n","host_dev_name":"tap0"}]}"#,
        )
        .unwrap();
        assert_eq!(cfg.boot_source.unwrap().kernel_image_path, "/k");
        assert_eq!(cfg.machine_config.unwrap().mem_size_mib, 128);
        assert_eq!(cfg.network_interfaces[0].host_dev_name, "tap0");
    }
}
