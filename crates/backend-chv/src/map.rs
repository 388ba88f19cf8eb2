//! `VmSpec` → Cloud Hypervisor's `VmConfig` (the `vm.create` body), and the capability table.
//!
//! What Cloud Hypervisor cannot do is refused here, before anything is launched, with an error
//! that names the backend and the spec field. Choices made for every VM:
//!
//! - Memory is `shared=true`, `thp=false` (both written out): balloon-freed pages are punched
//!   out of the shared mapping and stay holes, so sparse snapshots stay small.
//! - The agent's hybrid vsock device is always there: CID [`AGENT_VSOCK_CID`], Unix socket
//!   `<dir>/vsock.sock`; the guest command line gets `nestbox.agent=vsock:<port>`. Cloud
//!   Hypervisor has one vsock device, so a spec's own vsock device must be that one.
//! - The serial port (ttyS0) is `Tty`: Cloud Hypervisor writes it to its stdout, which the
//!   supervisor captures into the bounded `console.log` (a `File` serial would grow without
//!   bound, written by the VMM itself), and reads its input from stdin, but only when stdin is a
//!   terminal: the process gets a raw pseudo-terminal as stdin for that (see
//!   `CloudHypervisorBackend::command`). The virtio console is `Off`.
//! - virtio-fs is refused: Cloud Hypervisor needs an external `virtiofsd` per share, which
//!   nestbox does not run.

use std::path::{Path, PathBuf};

use nestbox_backend::{AGENT_VSOCK_CID, AGENT_VSOCK_PORT, BackendKind, Capabilities, Operation, VmDirs};
use nestbox_model::{Boot, Device, VmSpec};

use crate::wire::{
    BalloonConfig, ConsoleConfig, ConsoleMode, CpusConfig, DiskConfig, MemoryConfig, NetConfig, PayloadConfig,
    RngConfig, SerialConfig, VmConfig, VsockConfig,
};

/// The backend's name in messages.
const BACKEND: BackendKind = BackendKind::CloudHypervisor;
/// Bytes in a MiB.
const MIB: u64 = 1 << 20;
/// The host entropy source behind the virtio-rng device.
pub const DEFAULT_RNG_SOURCE: &str = "/dev/urandom";
/// virtio-net queues per NIC: one receive/transmit pair (the upstream default, written out).
pub const DEFAULT_NET_NUM_QUEUES: u32 = 2;
/// virtio-net queue depth (the upstream default, written out).
pub const DEFAULT_NET_QUEUE_SIZE: u32 = 256;
/// The longest kernel command line Cloud Hypervisor accepts on x86_64, in bytes.
pub const MAX_CMDLINE_LEN: usize = 2048;
/// The name of the hybrid vsock socket in the VM directory.
pub const VSOCK_SOCKET_NAME: &str = "vsock.sock";
/// The id given to the agent's vsock device.
pub const AGENT_VSOCK_ID: &str = "nestbox-agent";

/// The hybrid vsock socket of the VM in `dirs`.
pub fn vsock_socket(dirs: &VmDirs) -> PathBuf {
    dirs.root().join(VSOCK_SOCKET_NAME)
}

/// The guest command-line argument that tells the agent where to listen.
pub fn agent_cmdline_arg() -> String {
    format!("nestbox.agent=vsock:{AGENT_VSOCK_PORT}")
}

/// What Cloud Hypervisor can do, as data.
pub fn capabilities() -> Capabilities {
    Capabilities {
        operations: vec![
            Operation::Pause,
            Operation::Snapshot,
            Operation::Restore,
            Operation::ResizeBalloon,
            Operation::FirmwareBoot,
            Operation::DeviceBlock,
            Operation::DeviceNet,
            Operation::DeviceVsock,
            Operation::DeviceBalloon,
            Operation::DeviceRng,
        ],
    }
}

/// A spec Cloud Hypervisor cannot run as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// A part of the spec this backend does not do at all.
    #[error("{BACKEND} does not support {field}")]
    Unsupported {
        /// The spec field, e.g. `devices[2] (virtio-fs)`.
        field: String,
    },
    /// A path the JSON API cannot carry.
    #[error("{BACKEND} needs {field} as UTF-8, got {}", path.display())]
    NonUtf8Path {
        /// The spec field.
        field: String,
        /// The path.
        path: PathBuf,
    },
    /// A second device of a kind Cloud Hypervisor has only one of.
    #[error("{BACKEND} has one {kind} device; devices[{index}] is a second")]
    Duplicate {
        /// The device kind.
        kind: &'static str,
        /// The index of the extra device.
        index: usize,
    },
    /// A vsock device other than the agent's, which takes the only vsock slot.
    #[error(
        "{BACKEND} has one vsock device and the agent uses it (cid {AGENT_VSOCK_CID}, {}); devices[{index}] asks for cid {cid}{}",
        agent_socket.display(),
        socket.as_ref().map(|s| format!(" on {}", s.display())).unwrap_or_default()
    )]
    VsockTaken {
        /// The index of the device.
        index: usize,
        /// The CID it asks for.
        cid: u32,
        /// The socket it asks for.
        socket: Option<PathBuf>,
        /// The agent's socket.
        agent_socket: PathBuf,
    },
    /// The command line with the agent argument added is too long.
    #[error("{BACKEND} takes a kernel command line of at most {max} bytes; boot.cmdline would be {len}")]
    CmdlineTooLong {
        /// Its length with the agent argument.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Builds the `vm.create` body for `spec`, with the VM's files under `dirs`.
pub fn vm_config(spec: &VmSpec, dirs: &VmDirs) -> Result<VmConfig, MapError> {
    // A u32 of MiB is below 2^52 bytes: no overflow, and within the schema's int64.
    let size = u64::from(spec.memory_mib) * MIB;
    let agent_socket = vsock_socket(dirs);
    let mut config = VmConfig {
        cpus: Some(CpusConfig { boot_vcpus: u32::from(spec.vcpus), max_vcpus: u32::from(spec.vcpus) }),
        memory: Some(sandbox_memory(size)),
        payload: payload(&spec.boot)?,
        disks: None,
        net: None,
        rng: None,
        balloon: None,
        serial: Some(SerialConfig { file: None, socket: None, mode: ConsoleMode::Tty }),
        console: Some(ConsoleConfig { file: None, socket: None, mode: ConsoleMode::Off, iommu: None }),
        vsock: Some(VsockConfig {
            cid: u64::from(AGENT_VSOCK_CID),
            socket: utf8("vsock socket", &agent_socket)?,
            id: Some(AGENT_VSOCK_ID.into()),
        }),
    };
    let mut disks = Vec::new();
    let mut nets = Vec::new();
    for (index, device) in spec.devices.iter().enumerate() {
        match device {
            Device::VirtioBlk { id, path, readonly } => disks.push(DiskConfig {
                path: Some(utf8(&format!("devices[{index}].path"), path)?),
                readonly: *readonly,
                id: Some(id.clone()),
                ..DiskConfig::default()
            }),
            Device::VirtioNet { id, tap, mac } => nets.push(NetConfig {
                tap: Some(tap.clone()),
                mac: mac.clone(),
                num_queues: Some(DEFAULT_NET_NUM_QUEUES),
                queue_size: Some(DEFAULT_NET_QUEUE_SIZE),
                id: Some(id.clone()),
                ..NetConfig::default()
            }),
            Device::Vsock { cid, socket } => {
                let same_socket = socket.as_ref().is_none_or(|s| *s == agent_socket);
                if *cid != AGENT_VSOCK_CID || !same_socket {
                    return Err(MapError::VsockTaken {
                        index,
                        cid: *cid,
                        socket: socket.clone(),
                        agent_socket: agent_socket.clone(),
                    });
                }
            }
            Device::Balloon { deflate_on_oom, free_page_reporting } => {
                if config.balloon.is_some() {
                    return Err(MapError::Duplicate { kind: "balloon", index });
                }
                config.balloon = Some(BalloonConfig {
                    size: 0,
                    deflate_on_oom: *deflate_on_oom,
                    free_page_reporting: *free_page_reporting,
                    id: None,
                });
            }
            Device::Rng => {
                if config.rng.is_some() {
                    return Err(MapError::Duplicate { kind: "rng", index });
                }
                config.rng = Some(RngConfig { src: DEFAULT_RNG_SOURCE.into(), id: None });
            }
            Device::VirtioFs { .. } => {
                return Err(MapError::Unsupported { field: format!("devices[{index}] (virtio-fs without virtiofsd)") });
            }
        }
    }
    config.disks = (!disks.is_empty()).then_some(disks);
    config.net = (!nets.is_empty()).then_some(nets);
    Ok(config)
}

fn payload(boot: &Boot) -> Result<PayloadConfig, MapError> {
    match boot {
        Boot::Linux { kernel, initrd, cmdline } => Ok(PayloadConfig {
            firmware: None,
            kernel: Some(utf8("boot.kernel", kernel)?),
            cmdline: Some(guest_cmdline(cmdline)?),
            initramfs: initrd.as_deref().map(|p| utf8("boot.initrd", p)).transpose()?,
        }),
        Boot::Firmware { path } => {
            Ok(PayloadConfig { firmware: Some(utf8("boot.firmware", path)?), ..PayloadConfig::default() })
        }
    }
}

/// Guest memory of `size` bytes as nestbox wants it: `shared=true` and `thp=false` (written
/// out, not left to CH's default), so pages the balloon frees stay holes and snapshots stay
/// sparse; no hotplug, no huge pages.
pub fn sandbox_memory(size: u64) -> MemoryConfig {
    MemoryConfig {
        size,
        hotplug_size: None,
        hotplugged_size: None,
        mergeable: None,
        hotplug_method: None,
        shared: true,
        hugepages: false,
        hugepage_size: None,
        prefault: None,
        thp: false,
    }
}

/// The spec's command line with the agent argument added (unless it is there already).
pub fn guest_cmdline(base: &str) -> Result<String, MapError> {
    let arg = agent_cmdline_arg();
    let mut cmdline = base.trim().to_owned();
    if !cmdline.split_whitespace().any(|word| word == arg) {
        if !cmdline.is_empty() {
            cmdline.push(' ');
        }
        cmdline.push_str(&arg);
    }
    if cmdline.len() > MAX_CMDLINE_LEN {
        return Err(MapError::CmdlineTooLong { len: cmdline.len(), max: MAX_CMDLINE_LEN });
    }
    Ok(cmdline)
}

fn utf8(field: &str, path: &Path) -> Result<String, MapError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| MapError::NonUtf8Path { field: field.to_owned(), path: path.to_owned() })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    fn spec(boot: Boot, devices: Vec<Device>) -> VmSpec {
        VmSpec { vcpus: 2, memory_mib: 256, boot, devices }
    }

    fn linux() -> Boot {
        Boot::Linux { kernel: "/k/vmlinux".into(), initrd: Some("/k/initrd".into()), cmdline: "console=ttyS0".into() }
    }

    fn dirs() -> VmDirs {
        VmDirs::new("/run/nestbox/vm1")
    }

    #[test]
    fn test_vm_config_fixed_choices() {
        let config = vm_config(&spec(linux(), vec![]), &dirs()).unwrap();
        let memory = config.memory.unwrap();
        assert_eq!(memory.size, 256 * MIB);
        assert!(memory.shared);
        assert!(!memory.thp);
        assert_eq!(config.cpus, Some(CpusConfig { boot_vcpus: 2, max_vcpus: 2 }));
        assert_eq!(
            config.vsock,
            Some(VsockConfig { cid: 3, socket: "/run/nestbox/vm1/vsock.sock".into(), id: Some(AGENT_VSOCK_ID.into()) })
        );
        assert_eq!(config.serial.unwrap().mode, ConsoleMode::Tty);
        assert_eq!(config.console.unwrap().mode, ConsoleMode::Off);
        assert_eq!(config.payload.cmdline.as_deref(), Some("console=ttyS0 nestbox.agent=vsock:1024"));
        assert_eq!(config.payload.initramfs.as_deref(), Some("/k/initrd"));
        assert_eq!(config.disks, None);
        assert_eq!(config.net, None);
    }

    #[test]
    fn test_vm_config_devices() {
        let devices = vec![
            Device::VirtioBlk { id: "root".into(), path: "/d/root.img".into(), readonly: true },
            Device::VirtioNet { id: "net0".into(), tap: "tap0".into(), mac: Some("02:00:00:00:00:01".into()) },
            Device::Balloon { deflate_on_oom: true, free_page_reporting: true },
            Device::Rng,
            Device::Vsock { cid: 3, socket: None },
        ];
        let config = vm_config(&spec(linux(), devices), &dirs()).unwrap();
        let disks = config.disks.unwrap();
        assert_eq!(disks[0].path.as_deref(), Some("/d/root.img"));
        assert!(disks[0].readonly);
        assert_eq!(disks[0].id.as_deref(), Some("root"));
        let nets = config.net.unwrap();
        assert_eq!(nets[0].tap.as_deref(), Some("tap0"));
        assert_eq!(nets[0].mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(nets[0].num_queues, Some(DEFAULT_NET_NUM_QUEUES));
        assert_eq!(
            config.balloon,
            Some(BalloonConfig { size: 0, deflate_on_oom: true, free_page_reporting: true, id: None })
        );
        assert_eq!(config.rng.unwrap().src, DEFAULT_RNG_SOURCE);
    }

    #[test]
    fn test_vm_config_firmware_has_no_kernel_or_cmdline() {
        let config = vm_config(&spec(Boot::Firmware { path: "/fw/hypervisor-fw".into() }, vec![]), &dirs()).unwrap();
        assert_eq!(config.payload, PayloadConfig { firmware: Some("/fw/hypervisor-fw".into()), ..Default::default() });
    }

    #[test]
    fn test_guest_cmdline_adds_agent_once() {
        assert_eq!(guest_cmdline("").unwrap(), "nestbox.agent=vsock:1024");
        assert_eq!(guest_cmdline(" quiet nestbox.agent=vsock:1024 ").unwrap(), "quiet nestbox.agent=vsock:1024");
        let err = guest_cmdline(&"x".repeat(MAX_CMDLINE_LEN)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cloud-hypervisor takes a kernel command line of at most 2048 bytes; boot.cmdline would be {}",
                2048 + 25
            )
        );
    }

    #[test]
    fn test_vm_config_refusals_name_backend_and_field() {
        let fs = Device::VirtioFs { tag: "share".into(), path: "/s".into() };
        let err = vm_config(&spec(linux(), vec![Device::Rng, fs]), &dirs()).unwrap_err();
        assert_eq!(err.to_string(), "cloud-hypervisor does not support devices[1] (virtio-fs without virtiofsd)");

        let err = vm_config(&spec(linux(), vec![Device::Rng, Device::Rng]), &dirs()).unwrap_err();
        assert_eq!(err.to_string(), "cloud-hypervisor has one rng device; devices[1] is a second");

        let balloon = Device::Balloon { deflate_on_oom: false, free_page_reporting: false };
        let err = vm_config(&spec(linux(), vec![balloon.clone(), balloon]), &dirs()).unwrap_err();
        assert!(matches!(err, MapError::Duplicate { kind: "balloon", index: 1 }), "{err:?}");

        let err = vm_config(&spec(linux(), vec![Device::Vsock { cid: 7, socket: None }]), &dirs()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cloud-hypervisor has one vsock device and the agent uses it (cid 3, /run/nestbox/vm1/vsock.sock); devices[0] asks for cid 7"
        );
        let other = Device::Vsock { cid: 3, socket: Some("/elsewhere.sock".into()) };
        assert!(matches!(vm_config(&spec(linux(), vec![other]), &dirs()), Err(MapError::VsockTaken { .. })));

        let kernel = PathBuf::from(OsStr::from_bytes(b"/k/\xff"));
        let boot = Boot::Linux { kernel, initrd: None, cmdline: String::new() };
        let err = vm_config(&spec(boot, vec![]), &dirs()).unwrap_err();
        assert!(err.to_string().starts_with("cloud-hypervisor needs boot.kernel as UTF-8"), "{err}");
    }

    #[test]
    fn test_capabilities_refuse_fs_and_allow_firmware() {
        let caps = capabilities();
        assert!(caps.supports(Operation::FirmwareBoot));
        assert!(!caps.supports(Operation::DeviceFs));
        let spec = spec(linux(), vec![Device::VirtioFs { tag: "t".into(), path: "/s".into() }]);
        assert_eq!(caps.check(BACKEND, &spec).unwrap_err().to_string(), "cloud-hypervisor does not support device-fs");
    }
}
