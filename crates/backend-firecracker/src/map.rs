//! `VmSpec` → Firecracker: the ordered configuration requests ([`Plan`]) that set a VM up
//! before `InstanceStart`, and the refusal, before launch, of anything Firecracker cannot do,
//! each naming the backend and the field.
//!
//! Pure: no I/O. Paths are carried as Firecracker will see them; the jailer rewrites them into
//! its chroot ([`Plan::paths_mut`]). What needs the files themselves (raw disks, an ELF kernel)
//! is checked by [`crate::process::preflight`].

use std::path::{Path, PathBuf};

use nestbox_backend::{AGENT_VSOCK_CID, AGENT_VSOCK_PORT, Capabilities, Operation};
use nestbox_model::{Boot, Device, VmSpec};
use serde::Serialize;

use crate::wire::{Balloon, BootSource, Drive, EntropyDevice, MachineConfiguration, NetworkInterface, Vsock};

/// The fewest vCPUs Firecracker accepts.
pub const MIN_VCPUS: u8 = 1;
/// The most vCPUs Firecracker accepts (`MachineConfiguration.vcpu_count` maximum).
pub const MAX_VCPUS: u8 = 32;
/// The drive id that becomes the root device when the guest boots without an initrd.
pub const ROOT_DRIVE_ID: &str = "root";

/// How virtio devices reach the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// virtio-mmio, announced on the command line: the kernel needs
    /// `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` (Debian's kernels lack it). The guest gets `pci=off`.
    Mmio,
    /// virtio-pci (`--enable-pci`, Firecracker 1.13 and later).
    Pci,
}

/// What the mapping needs besides the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapOptions {
    /// The device transport.
    pub transport: Transport,
    /// The host side of the agent's vsock, as Firecracker will see the path.
    pub vsock_path: PathBuf,
}

/// A spec Firecracker cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// A feature Firecracker lacks.
    #[error("firecracker does not support {field}")]
    Unsupported {
        /// The field, e.g. `boot.firmware` or `devices[3] (virtio-fs)`.
        field: String,
    },
    /// Too few or too many vCPUs.
    #[error("firecracker supports {MIN_VCPUS} to {MAX_VCPUS} vcpus, not {vcpus}")]
    Vcpus {
        /// The count asked for.
        vcpus: u8,
    },
    /// A second device of a kind Firecracker has only one of.
    #[error("firecracker has one {kind} device; devices[{index}] is another")]
    Duplicate {
        /// The device kind.
        kind: &'static str,
        /// The second one's index.
        index: usize,
    },
    /// A vsock device other than the agent's (Firecracker has one, and the agent uses it).
    #[error(
        "firecracker has one vsock device and the agent uses it (cid {AGENT_VSOCK_CID}); devices[{index}] asks for cid {cid}"
    )]
    VsockTaken {
        /// The device's index.
        index: usize,
        /// The CID it asks for.
        cid: u32,
    },
    /// A path the JSON API cannot carry.
    #[error("firecracker cannot take {field}: {path:?} is not UTF-8")]
    NonUtf8Path {
        /// The field.
        field: String,
        /// The path.
        path: PathBuf,
    },
}

/// One pre-boot configuration request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `PUT /machine-config`.
    MachineConfig(MachineConfiguration),
    /// `PUT /boot-source`.
    BootSource(BootSource),
    /// `PUT /drives/{drive_id}`.
    Drive(Drive),
    /// `PUT /network-interfaces/{iface_id}`.
    NetworkInterface(NetworkInterface),
    /// `PUT /vsock`.
    Vsock(Vsock),
    /// `PUT /balloon`.
    Balloon(Balloon),
    /// `PUT /entropy`.
    Entropy(EntropyDevice),
}

impl Request {
    /// The HTTP method (all pre-boot configuration is `PUT`).
    pub fn method(&self) -> &'static str {
        "PUT"
    }

    /// The request path.
    pub fn path(&self) -> String {
        match self {
            Request::MachineConfig(_) => "/machine-config".into(),
            Request::BootSource(_) => "/boot-source".into(),
            Request::Drive(d) => format!("/drives/{}", d.drive_id),
            Request::NetworkInterface(n) => format!("/network-interfaces/{}", n.iface_id),
            Request::Vsock(_) => "/vsock".into(),
            Request::Balloon(_) => "/balloon".into(),
            Request::Entropy(_) => "/entropy".into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail: no maps with non-string keys, no
        // fallible Serialize impls.
        let encoded = match self {
            Request::MachineConfig(b) => serde_json::to_vec(b),
            Request::BootSource(b) => serde_json::to_vec(b),
            Request::Drive(b) => serde_json::to_vec(b),
            Request::NetworkInterface(b) => serde_json::to_vec(b),
            Request::Vsock(b) => serde_json::to_vec(b),
            Request::Balloon(b) => serde_json::to_vec(b),
            Request::Entropy(b) => serde_json::to_vec(b),
        };
        encoded.unwrap_or_default()
    }
}

/// Which file a path in the plan names (for the jailer, which links each into its chroot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRole<'a> {
    /// The kernel image.
    Kernel,
    /// The initrd.
    Initrd,
    /// The backing file of the drive with this id.
    Drive(&'a str),
    /// The vsock's Unix socket (created by Firecracker).
    VsockSocket,
}

/// The requests that configure a VM, in the order they are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Machine config, boot source, drives, NICs, vsock, balloon, entropy.
    pub requests: Vec<Request>,
}

impl Plan {
    /// Maps `spec`; refuses what Firecracker cannot do.
    pub fn new(spec: &VmSpec, options: &MapOptions) -> Result<Self, MapError> {
        if !(MIN_VCPUS..=MAX_VCPUS).contains(&spec.vcpus) {
            return Err(MapError::Vcpus { vcpus: spec.vcpus });
        }
        let (kernel, initrd, cmdline) = match &spec.boot {
            Boot::Linux { kernel, initrd, cmdline } => (kernel, initrd, cmdline),
            Boot::Firmware { .. } => return Err(MapError::Unsupported { field: "boot.firmware".into() }),
        };
        let mut requests = vec![Request::MachineConfig(MachineConfiguration {
            vcpu_count: u32::from(spec.vcpus),
            mem_size_mib: spec.memory_mib,
            smt: None,
            track_dirty_pages: None,
            cpu_template: None,
            huge_pages: None,
        })];
        requests.push(Request::BootSource(BootSource {
            kernel_image_path: utf8("boot.kernel", kernel)?,
            initrd_path: initrd.as_deref().map(|p| utf8("boot.initrd", p)).transpose()?,
            boot_args: Some(guest_cmdline(cmdline, options.transport)),
        }));

        let mut drives = Vec::new();
        let mut nics = Vec::new();
        let mut balloon = None;
        let mut entropy = None;
        for (index, device) in spec.devices.iter().enumerate() {
            match device {
                Device::VirtioBlk { id, path, readonly } => drives.push(Request::Drive(Drive {
                    drive_id: id.clone(),
                    partuuid: None,
                    is_root_device: id == ROOT_DRIVE_ID && initrd.is_none(),
                    cache_type: None,
                    is_read_only: Some(*readonly),
                    path_on_host: Some(utf8(&format!("devices[{index}].path"), path)?),
                    rate_limiter: None,
                    io_engine: None,
                    socket: None,
                })),
                Device::VirtioNet { id, tap, mac } => nics.push(Request::NetworkInterface(NetworkInterface {
                    iface_id: id.clone(),
                    host_dev_name: tap.clone(),
                    guest_mac: mac.clone(),
                    mtu: None,
                    rx_rate_limiter: None,
                    tx_rate_limiter: None,
                })),
                Device::Vsock { cid, socket } => {
                    let same_socket = socket.as_deref().is_none_or(|s| s == options.vsock_path);
                    if *cid != AGENT_VSOCK_CID || !same_socket {
                        return Err(MapError::VsockTaken { index, cid: *cid });
                    }
                }
                Device::Balloon { deflate_on_oom, free_page_reporting } => {
                    if balloon.is_some() {
                        return Err(MapError::Duplicate { kind: "balloon", index });
                    }
                    balloon = Some(Request::Balloon(Balloon {
                        amount_mib: 0,
                        deflate_on_oom: *deflate_on_oom,
                        stats_polling_interval_s: None,
                        free_page_hinting: None,
                        // Sent only when asked for: older Firecrackers refuse the field.
                        free_page_reporting: free_page_reporting.then_some(true),
                    }));
                }
                Device::Rng => {
                    if entropy.is_some() {
                        return Err(MapError::Duplicate { kind: "rng", index });
                    }
                    entropy = Some(Request::Entropy(EntropyDevice { rate_limiter: None }));
                }
                Device::VirtioFs { .. } => {
                    return Err(MapError::Unsupported { field: format!("devices[{index}] ({})", device.kind()) });
                }
            }
        }
        requests.extend(drives);
        requests.extend(nics);
        requests.push(Request::Vsock(Vsock {
            guest_cid: AGENT_VSOCK_CID,
            uds_path: utf8("vsock socket", &options.vsock_path)?,
            vsock_id: None,
        }));
        requests.extend(balloon);
        requests.extend(entropy);
        Ok(Self { requests })
    }

    /// Every host path in the plan with the file it names, for rewriting.
    pub fn paths_mut(&mut self) -> Vec<(PathRole<'_>, &mut String)> {
        let mut out = Vec::new();
        for request in &mut self.requests {
            match request {
                Request::BootSource(boot) => {
                    out.push((PathRole::Kernel, &mut boot.kernel_image_path));
                    if let Some(initrd) = &mut boot.initrd_path {
                        out.push((PathRole::Initrd, initrd));
                    }
                }
                Request::Drive(drive) => {
                    if let Some(path) = &mut drive.path_on_host {
                        out.push((PathRole::Drive(&drive.drive_id), path));
                    }
                }
                Request::Vsock(vsock) => out.push((PathRole::VsockSocket, &mut vsock.uds_path)),
                Request::MachineConfig(_)
                | Request::NetworkInterface(_)
                | Request::Balloon(_)
                | Request::Entropy(_) => {}
            }
        }
        out
    }
}

/// The guest command line: the spec's, plus the agent's transport, `pci=off` on virtio-mmio and
/// `reboot=k` (a guest reboot then exits Firecracker through its i8042 reset), each only where
/// the spec does not already set that key.
pub fn guest_cmdline(cmdline: &str, transport: Transport) -> String {
    let mut args: Vec<String> = cmdline.split_whitespace().map(str::to_owned).collect();
    let has = |args: &[String], key: &str| args.iter().any(|a| a.split_once('=').map_or(a.as_str(), |(k, _)| k) == key);
    let agent = format!("nestbox.agent=vsock:{AGENT_VSOCK_PORT}");
    let mut extra = vec![agent.as_str(), "reboot=k"];
    if transport == Transport::Mmio {
        extra.push("pci=off");
    }
    for arg in extra {
        let key = arg.split_once('=').map_or(arg, |(k, _)| k);
        if !has(&args, key) {
            args.push(arg.to_owned());
        }
    }
    args.join(" ")
}

/// What Firecracker can do, as data.
pub fn capabilities() -> Capabilities {
    Capabilities {
        operations: vec![
            Operation::Pause,
            Operation::Snapshot,
            Operation::Restore,
            Operation::ResizeBalloon,
            Operation::DeviceBlock,
            Operation::DeviceNet,
            Operation::DeviceVsock,
            Operation::DeviceBalloon,
            Operation::DeviceRng,
        ],
    }
}

fn utf8(field: &str, path: &Path) -> Result<String, MapError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| MapError::NonUtf8Path { field: field.to_owned(), path: path.to_owned() })
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    fn options() -> MapOptions {
        MapOptions { transport: Transport::Mmio, vsock_path: "/run/vm/vsock.sock".into() }
    }

    fn spec(devices: Vec<Device>) -> VmSpec {
        VmSpec {
            vcpus: 2,
            memory_mib: 256,
            boot: Boot::Linux {
                kernel: "/k/vmlinux".into(),
                initrd: Some("/k/initrd".into()),
                cmdline: "quiet".into(),
            },
            devices,
        }
    }

    fn paths(plan: &Plan) -> Vec<String> {
        plan.requests.iter().map(Request::path).collect()
    }

    #[test]
    fn test_plan_order_and_agent_vsock() {
        let plan = Plan::new(
            &spec(vec![
                Device::Rng,
                Device::VirtioNet { id: "net0".into(), tap: "tap0".into(), mac: None },
                Device::VirtioBlk { id: "data".into(), path: "/d/data.img".into(), readonly: false },
                Device::Balloon { deflate_on_oom: true, free_page_reporting: true },
            ]),
            &options(),
        )
        .unwrap();
        assert_eq!(
            paths(&plan),
            [
                "/machine-config",
                "/boot-source",
                "/drives/data",
                "/network-interfaces/net0",
                "/vsock",
                "/balloon",
                "/entropy"
            ]
        );
        let vsock = String::from_utf8(plan.requests[4].body()).unwrap();
        assert_eq!(vsock, r#"{"guest_cid":3,"uds_path":"/run/vm/vsock.sock"}"#);
        let balloon = String::from_utf8(plan.requests[5].body()).unwrap();
        assert_eq!(balloon, r#"{"amount_mib":0,"deflate_on_oom":true,"free_page_reporting":true}"#);
    }

    #[test]
    fn test_firmware_and_virtio_fs_refused_naming_field() {
        let mut firmware = spec(vec![]);
        firmware.boot = Boot::Firmware { path: "/fw".into() };
        assert_eq!(
            Plan::new(&firmware, &options()).unwrap_err().to_string(),
            "firecracker does not support boot.firmware"
        );
        let fs = spec(vec![
            Device::Rng,
            Device::Balloon { deflate_on_oom: false, free_page_reporting: false },
            Device::VirtioBlk { id: "a".into(), path: "/a".into(), readonly: true },
            Device::VirtioFs { tag: "t".into(), path: "/s".into() },
        ]);
        assert_eq!(
            Plan::new(&fs, &options()).unwrap_err().to_string(),
            "firecracker does not support devices[3] (virtio-fs)"
        );
    }

    #[test]
    fn test_vcpu_limits() {
        for ok in [1, 2, 31, 32] {
            let mut s = spec(vec![]);
            s.vcpus = ok;
            assert!(Plan::new(&s, &options()).is_ok(), "{ok}");
        }
        for bad in [0, 33, 254] {
            let mut s = spec(vec![]);
            s.vcpus = bad;
            assert_eq!(Plan::new(&s, &options()).unwrap_err(), MapError::Vcpus { vcpus: bad });
        }
        let mut s = spec(vec![]);
        s.vcpus = 33;
        assert_eq!(Plan::new(&s, &options()).unwrap_err().to_string(), "firecracker supports 1 to 32 vcpus, not 33");
    }

    #[test]
    fn test_duplicates_and_foreign_vsock_refused() {
        let two_rng = spec(vec![Device::Rng, Device::Rng]);
        assert_eq!(Plan::new(&two_rng, &options()).unwrap_err(), MapError::Duplicate { kind: "rng", index: 1 });
        let b = Device::Balloon { deflate_on_oom: false, free_page_reporting: false };
        let two_balloons = spec(vec![b.clone(), b]);
        assert_eq!(
            Plan::new(&two_balloons, &options()).unwrap_err(),
            MapError::Duplicate { kind: "balloon", index: 1 }
        );
        let other_cid = spec(vec![Device::Vsock { cid: 7, socket: None }]);
        assert_eq!(Plan::new(&other_cid, &options()).unwrap_err(), MapError::VsockTaken { index: 0, cid: 7 });
        let other_socket = spec(vec![Device::Vsock { cid: 3, socket: Some("/elsewhere.sock".into()) }]);
        assert!(matches!(Plan::new(&other_socket, &options()), Err(MapError::VsockTaken { .. })));
        // The agent's own vsock, spelled out, is the one device.
        let same = spec(vec![Device::Vsock { cid: 3, socket: None }]);
        let plan = Plan::new(&same, &options()).unwrap();
        assert_eq!(plan.requests.iter().filter(|r| matches!(r, Request::Vsock(_))).count(), 1);
    }

    #[test]
    fn test_non_utf8_path_refused() {
        let bad = PathBuf::from(std::ffi::OsStr::from_bytes(b"/d/\xff.img"));
        let s = spec(vec![Device::VirtioBlk { id: "d".into(), path: bad, readonly: false }]);
        let err = Plan::new(&s, &options()).unwrap_err();
        assert!(err.to_string().starts_with("firecracker cannot take devices[0].path"), "{err}");
    }

    #[test]
    fn test_root_drive_only_without_initrd() {
        let root = Device::VirtioBlk { id: ROOT_DRIVE_ID.into(), path: "/r.img".into(), readonly: true };
        let with_initrd = Plan::new(&spec(vec![root.clone()]), &options()).unwrap();
        assert!(matches!(&with_initrd.requests[2], Request::Drive(d) if !d.is_root_device));
        let mut s = spec(vec![root]);
        s.boot = Boot::Linux { kernel: "/k".into(), initrd: None, cmdline: String::new() };
        let without = Plan::new(&s, &options()).unwrap();
        assert!(matches!(&without.requests[2], Request::Drive(d) if d.is_root_device));
    }

    #[test]
    fn test_cmdline_additions() {
        assert_eq!(
            guest_cmdline("console=ttyS0 quiet", Transport::Mmio),
            "console=ttyS0 quiet nestbox.agent=vsock:1024 reboot=k pci=off"
        );
        assert_eq!(guest_cmdline("", Transport::Pci), "nestbox.agent=vsock:1024 reboot=k");
        // Keys already present are left as the spec has them.
        assert_eq!(
            guest_cmdline("reboot=t pci=on nestbox.agent=vsock:9", Transport::Mmio),
            "reboot=t pci=on nestbox.agent=vsock:9"
        );
    }

    #[test]
    fn test_paths_mut_rewrites_every_host_path() {
        let mut plan = Plan::new(
            &spec(vec![Device::VirtioBlk { id: "data".into(), path: "/d/data.img".into(), readonly: false }]),
            &options(),
        )
        .unwrap();
        let roles: Vec<String> = plan
            .paths_mut()
            .into_iter()
            .map(|(role, path)| {
                *path = format!("/jail{path}");
                format!("{role:?}")
            })
            .collect();
        assert_eq!(roles, ["Kernel", "Initrd", "Drive(\"data\")", "VsockSocket"]);
        assert!(
            String::from_utf8(plan.requests[1].body()).unwrap().contains(r#""kernel_image_path":"/jail/k/vmlinux""#)
        );
    }

    #[test]
    fn test_capabilities_refuse_firmware_and_fs() {
        let caps = capabilities();
        assert!(caps.supports(Operation::Snapshot));
        assert!(!caps.supports(Operation::FirmwareBoot));
        assert!(!caps.supports(Operation::DeviceFs));
    }
}
