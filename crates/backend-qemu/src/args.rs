//! QEMU's command line, built from a `VmSpec`: one small type per option group.
//!
//! Every group implements [`ToQemuArgs`]; [`QemuArgs::build`] puts them in a fixed order, so
//! the same spec always gives the same argv (golden-tested in `tests/golden_argv.rs`).

use std::path::{Path, PathBuf};

use nestbox_backend::{BackendError, VmDirs};
use nestbox_model::{Boot, Device, VmSpec};

use crate::AGENT_PORT_NAME;

/// The accelerator QEMU runs the guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software emulator.
    Tcg,
}

impl Accel {
    /// QEMU's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One group of QEMU options.
pub trait ToQemuArgs {
    /// Appends this group's options to `argv`.
    fn append(&self, argv: &mut Vec<String>);
}

fn push(argv: &mut Vec<String>, flag: &str, value: impl Into<String>) {
    argv.push(flag.to_owned());
    argv.push(value.into());
}

/// Escapes a value for QEMU's comma-separated option syntax (a `,` is written `,,`).
fn opt_value(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// The fixed base: no defaults, no display, no reboot (a guest reboot ends QEMU).
#[derive(Debug)]
struct Base {
    name: String,
}

impl ToQemuArgs for Base {
    fn append(&self, argv: &mut Vec<String>) {
        push(argv, "-name", self.name.replace(',', ",,"));
        argv.extend(["-nodefaults", "-no-user-config", "-no-reboot"].map(String::from));
        push(argv, "-display", "none");
    }
}

/// The machine type: `microvm` for Linux direct boot, `q35` for firmware boot (UEFI needs PCI
/// and the PC platform's flash and ACPI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineKind {
    /// `microvm` with ACPI (Debian's kernel finds virtio-mmio devices through it).
    Microvm,
    /// `q35`, with virtio devices on PCI.
    Q35,
}

impl MachineKind {
    /// The machine that boots `boot`.
    pub fn for_boot(boot: &Boot) -> Self {
        match boot {
            Boot::Linux { .. } => MachineKind::Microvm,
            Boot::Firmware { .. } => MachineKind::Q35,
        }
    }

    /// QEMU's name for the virtio device `base` (e.g. `virtio-blk`) on this machine's transport.
    fn virtio(self, base: &str) -> String {
        match self {
            MachineKind::Microvm => format!("{base}-device"),
            MachineKind::Q35 => format!("{base}-pci"),
        }
    }
}

/// Guest memory in a file instead of anonymous memory: a snapshot leaves it out of the
/// migration stream (`x-ignore-shared`) and copies the file; a restore maps the snapshot's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryFile {
    /// The file (created by QEMU when missing).
    pub path: PathBuf,
    /// `share=on`: guest writes reach the file (the live memory of a VM that can be
    /// snapshotted); off: a private copy-on-write mapping of it (a restored clone).
    pub shared: bool,
}

/// The memory backend object for [`MemoryFile`].
#[derive(Debug)]
struct MemoryBackend<'a> {
    file: &'a MemoryFile,
    memory_mib: u32,
}

impl ToQemuArgs for MemoryBackend<'_> {
    fn append(&self, argv: &mut Vec<String>) {
        push(
            argv,
            "-object",
            format!(
                "memory-backend-file,id={MEMORY_BACKEND_ID},size={}M,mem-path={},share={}",
                self.memory_mib,
                opt_value(&self.file.path),
                on_off(self.file.shared)
            ),
        );
    }
}

/// The id of the memory backend object.
const MEMORY_BACKEND_ID: &str = "mem";

/// The machine, accelerator and CPU model.
#[derive(Debug)]
struct Machine {
    kind: MachineKind,
    accel: Accel,
    /// The machine's RAM is the memory backend object.
    memory_backend: bool,
}

impl ToQemuArgs for Machine {
    fn append(&self, argv: &mut Vec<String>) {
        let mut machine = match self.kind {
            MachineKind::Microvm => "microvm,acpi=on,rtc=on,x-option-roms=off",
            MachineKind::Q35 => "q35",
        }
        .to_owned();
        if self.memory_backend {
            machine.push_str(&format!(",memory-backend={MEMORY_BACKEND_ID}"));
        }
        push(argv, "-machine", &machine);
        push(argv, "-accel", self.accel.as_str());
        // KVM passes the host CPU through; TCG emulates the richest model it has.
        push(argv, "-cpu", if self.accel == Accel::Kvm { "host" } else { "max" });
    }
}

/// vCPUs and memory.
#[derive(Debug)]
struct Resources {
    vcpus: u8,
    memory_mib: u32,
}

impl ToQemuArgs for Resources {
    fn append(&self, argv: &mut Vec<String>) {
        push(argv, "-smp", self.vcpus.to_string());
        push(argv, "-m", format!("{}M", self.memory_mib));
    }
}

/// Linux direct boot: a PVH ELF vmlinux, an initramfs, the command line.
#[derive(Debug)]
struct LinuxBoot {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    cmdline: String,
}

impl ToQemuArgs for LinuxBoot {
    fn append(&self, argv: &mut Vec<String>) {
        push(argv, "-kernel", self.kernel.to_string_lossy());
        if let Some(initrd) = &self.initrd {
            push(argv, "-initrd", initrd.to_string_lossy());
        }
        push(argv, "-append", self.cmdline.clone());
    }
}

/// Firmware boot: a UEFI image (OVMF) as the machine's BIOS, which boots from the first disk.
/// Its variables live in memory only: cloud images boot through the removable-media path.
#[derive(Debug)]
struct FirmwareBoot {
    path: PathBuf,
}

impl ToQemuArgs for FirmwareBoot {
    fn append(&self, argv: &mut Vec<String>) {
        push(argv, "-bios", self.path.to_string_lossy());
    }
}

/// QMP on a Unix socket that QEMU listens on.
#[derive(Debug)]
struct Qmp {
    socket: PathBuf,
}

impl ToQemuArgs for Qmp {
    fn append(&self, argv: &mut Vec<String>) {
        push(argv, "-chardev", format!("socket,id=qmp,path={},server=on,wait=off", opt_value(&self.socket)));
        push(argv, "-mon", "chardev=qmp,mode=control");
    }
}

/// The guest's serial console on QEMU's stdio: stdout, which the supervisor keeps in a bounded
/// log and feeds to console subscribers, and stdin, the serial port's input (`signal=off`: were
/// stdin a terminal, Ctrl-C would still go to the guest rather than stop QEMU).
#[derive(Debug)]
struct Console;

impl ToQemuArgs for Console {
    fn append(&self, argv: &mut Vec<String>) {
        push(argv, "-chardev", "stdio,id=console,signal=off");
        push(argv, "-serial", "chardev:console");
    }
}

/// The guest agent's channel: a virtio-serial port backed by a Unix socket QEMU listens on.
#[derive(Debug)]
struct AgentPort {
    machine: MachineKind,
    socket: PathBuf,
}

impl ToQemuArgs for AgentPort {
    fn append(&self, argv: &mut Vec<String>) {
        push(argv, "-device", format!("{},id=vser0,max_ports=2", self.machine.virtio("virtio-serial")));
        push(argv, "-chardev", format!("socket,id=agent,path={},server=on,wait=off", opt_value(&self.socket)));
        push(argv, "-device", format!("virtserialport,bus=vser0.0,chardev=agent,name={AGENT_PORT_NAME}"));
    }
}

/// A device of the spec, on a machine.
#[derive(Debug)]
struct DeviceArgs<'a> {
    machine: MachineKind,
    device: &'a Device,
}

impl ToQemuArgs for DeviceArgs<'_> {
    fn append(&self, argv: &mut Vec<String>) {
        let virtio = |base: &str| self.machine.virtio(base);
        match self.device {
            Device::VirtioBlk { id, path, readonly } => {
                let format = if is_qcow2(path) { "qcow2" } else { "raw" };
                let ro = if *readonly { "on" } else { "off" };
                push(
                    argv,
                    "-blockdev",
                    format!(
                        "driver={format},node-name={id},read-only={ro},file.driver=file,file.filename={}",
                        opt_value(path)
                    ),
                );
                // The serial names the disk in the guest: /dev/disk/by-id/virtio-<id>.
                push(argv, "-device", format!("{},drive={id},id={id},serial={id}", virtio("virtio-blk")));
            }
            Device::VirtioNet { id, tap, mac } => {
                push(argv, "-netdev", format!("tap,id={id},ifname={tap},script=no,downscript=no"));
                let mut dev = format!("{},netdev={id},id={id}", virtio("virtio-net"));
                if let Some(mac) = mac {
                    dev.push_str(&format!(",mac={mac}"));
                }
                push(argv, "-device", dev);
            }
            Device::Vsock { cid, .. } => push(argv, "-device", format!("{},guest-cid={cid}", virtio("vhost-vsock"))),
            Device::Balloon { deflate_on_oom, free_page_reporting } => push(
                argv,
                "-device",
                format!(
                    "{},deflate-on-oom={},free-page-reporting={}",
                    virtio("virtio-balloon"),
                    on_off(*deflate_on_oom),
                    on_off(*free_page_reporting)
                ),
            ),
            Device::Rng => {
                push(argv, "-object", "rng-random,id=rng0,filename=/dev/urandom");
                push(argv, "-device", format!("{},rng=rng0", virtio("virtio-rng")));
            }
            // Refused by the capability check before argv is built.
            Device::VirtioFs { .. } => {}
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// Whether `path` starts with the qcow2 magic.
fn is_qcow2(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"QFI\xfb"
}

/// What, besides the spec, shapes the command line.
#[derive(Debug, Clone)]
pub struct QemuArgs {
    /// The VM's name, shown by QEMU (`-name`).
    pub name: String,
    /// The accelerator.
    pub accel: Accel,
    /// The host TSC rate for `tsc_early_khz=` under TCG.
    pub tsc_khz: u32,
    /// Whether to add the guest agent's port.
    pub agent: bool,
    /// Guest memory in a file, when it should be.
    pub memory: Option<MemoryFile>,
    /// Wait for an incoming migration (`-incoming defer`): a restore.
    pub incoming: bool,
}

impl QemuArgs {
    /// The whole argv (without the program) for `spec`, with sockets under `dirs`.
    pub fn build(&self, spec: &VmSpec, dirs: &VmDirs) -> Result<Vec<String>, BackendError> {
        let machine = MachineKind::for_boot(&spec.boot);
        let boot: Box<dyn ToQemuArgs> = match &spec.boot {
            Boot::Linux { kernel, initrd, cmdline } => {
                Box::new(LinuxBoot { kernel: kernel.clone(), initrd: initrd.clone(), cmdline: self.cmdline(cmdline) })
            }
            Boot::Firmware { path } => Box::new(FirmwareBoot { path: path.clone() }),
        };
        let mut argv = Vec::new();
        let groups: Vec<Box<dyn ToQemuArgs>> = vec![
            Box::new(Base { name: self.name.clone() }),
            Box::new(Machine { kind: machine, accel: self.accel, memory_backend: self.memory.is_some() }),
            Box::new(Resources { vcpus: spec.vcpus, memory_mib: spec.memory_mib }),
            boot,
            Box::new(Qmp { socket: dirs.api_socket() }),
            Box::new(Console),
        ];
        for group in &groups {
            group.append(&mut argv);
        }
        if let Some(file) = &self.memory {
            MemoryBackend { file, memory_mib: spec.memory_mib }.append(&mut argv);
        }
        if self.incoming {
            push(&mut argv, "-incoming", "defer");
        }
        if self.agent {
            AgentPort { machine, socket: dirs.agent_socket() }.append(&mut argv);
        }
        for device in &spec.devices {
            DeviceArgs { machine, device }.append(&mut argv);
        }
        Ok(argv)
    }

    /// The guest command line: the spec's, plus `tsc_early_khz=` under TCG unless already set.
    fn cmdline(&self, base: &str) -> String {
        let mut cmdline = base.trim().to_owned();
        if self.accel == Accel::Tcg && !cmdline.split_whitespace().any(|w| w.starts_with("tsc_early_khz=")) {
            if !cmdline.is_empty() {
                cmdline.push(' ');
            }
            cmdline.push_str(&format!("tsc_early_khz={}", self.tsc_khz));
        }
        cmdline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(accel: Accel) -> QemuArgs {
        QemuArgs { name: "t".into(), accel, tsc_khz: 2_600_000, agent: true, memory: None, incoming: false }
    }

    #[test]
    fn test_cmdline_adds_tsc_only_under_tcg() {
        assert_eq!(args(Accel::Tcg).cmdline("console=ttyS0"), "console=ttyS0 tsc_early_khz=2600000");
        assert_eq!(args(Accel::Tcg).cmdline(""), "tsc_early_khz=2600000");
        assert_eq!(args(Accel::Tcg).cmdline("tsc_early_khz=1 quiet"), "tsc_early_khz=1 quiet");
        assert_eq!(args(Accel::Kvm).cmdline("quiet"), "quiet");
    }

    fn has(argv: &[String], flag: &str, value: &str) -> bool {
        argv.windows(2).any(|w| w[0] == flag && w[1] == value)
    }

    #[test]
    fn test_firmware_boot_uses_q35_the_firmware_and_pci_devices() {
        let disk = Device::VirtioBlk { id: "root".into(), path: "/d/root.qcow2".into(), readonly: false };
        let spec =
            VmSpec { vcpus: 1, memory_mib: 128, boot: Boot::Firmware { path: "/fw.fd".into() }, devices: vec![disk] };
        let argv = args(Accel::Tcg).build(&spec, &VmDirs::new("/d")).unwrap();
        assert!(has(&argv, "-machine", "q35"), "{argv:?}");
        assert!(has(&argv, "-bios", "/fw.fd"), "{argv:?}");
        assert!(has(&argv, "-device", "virtio-blk-pci,drive=root,id=root,serial=root"), "{argv:?}");
        assert!(has(&argv, "-device", "virtio-serial-pci,id=vser0,max_ports=2"), "{argv:?}");
        assert!(!argv.iter().any(|a| a == "-kernel" || a == "-append" || a.contains("-device,")), "{argv:?}");
    }

    #[test]
    fn test_linux_boot_uses_microvm_and_mmio_devices() {
        let spec = VmSpec {
            vcpus: 1,
            memory_mib: 128,
            boot: Boot::Linux { kernel: "/k".into(), initrd: None, cmdline: String::new() },
            devices: vec![Device::Rng],
        };
        let argv = args(Accel::Tcg).build(&spec, &VmDirs::new("/d")).unwrap();
        assert!(argv.iter().any(|a| a.starts_with("microvm,")), "{argv:?}");
        assert!(has(&argv, "-device", "virtio-rng-device,rng=rng0"), "{argv:?}");
        assert!(!argv.iter().any(|a| a == "-bios"), "{argv:?}");
    }

    #[test]
    fn test_a_memory_file_backs_the_machine_and_a_restore_waits_for_its_state() {
        let spec = VmSpec {
            vcpus: 1,
            memory_mib: 256,
            boot: Boot::Linux { kernel: "/k".into(), initrd: None, cmdline: String::new() },
            devices: vec![],
        };
        let memory = MemoryFile { path: "/snap/memory".into(), shared: false };
        let argv = QemuArgs { memory: Some(memory), incoming: true, ..args(Accel::Tcg) }
            .build(&spec, &VmDirs::new("/d"))
            .unwrap();
        assert!(argv.iter().any(|a| a.starts_with("microvm,") && a.ends_with(",memory-backend=mem")), "{argv:?}");
        assert!(has(&argv, "-object", "memory-backend-file,id=mem,size=256M,mem-path=/snap/memory,share=off"));
        assert!(has(&argv, "-incoming", "defer"), "{argv:?}");
        let plain = args(Accel::Tcg).build(&spec, &VmDirs::new("/d")).unwrap();
        assert!(!plain.iter().any(|a| a.contains("memory-backend") || a == "-incoming"), "{plain:?}");
    }

    #[test]
    fn test_commas_in_socket_paths_are_escaped() {
        assert_eq!(opt_value(Path::new("/a,b/c")), "/a,,b/c");
    }
}
