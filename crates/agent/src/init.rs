//! Init mode (PID 1 in the guest): early mounts (devpts at `/dev/pts` with a usable
//! `/dev/ptmx`, for tty execs and the console shell), hostname, loopback, kernel modules,
//! finding the agent's virtio-serial port, and powering off.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use nix::mount::{MsFlags, mount};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::log;

/// The virtio-serial port name the host gives the agent's channel.
pub const PORT_NAME: &str = "nestbox.agent";

/// Where virtio-serial ports list their names.
const VIRTIO_PORTS_DIR: &str = "/sys/class/virtio-ports";

/// How long to wait for the agent port to appear.
pub const PORT_DEADLINE: Duration = Duration::from_secs(20);

/// How often to look for the agent port.
const PORT_POLL: Duration = Duration::from_millis(5);

/// The kernel's module autoloader helper; empty turns autoloading off.
const MODPROBE_SYSCTL: &str = "/proc/sys/kernel/modprobe";

/// Kernel modules to load, one absolute path per line, in order.
const MODULES_LIST: &str = "/etc/nestbox/modules";

/// How long processes get between SIGTERM and SIGKILL at poweroff.
const TERM_GRACE: Duration = Duration::from_secs(1);

struct MountSpec {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const MOUNTS: [MountSpec; 7] = [
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC),
        data: None,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC),
        data: None,
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("mode=0620,ptmxmode=0666"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
];

/// Everything PID 1 does before serving; failures are logged, never fatal.
pub fn setup() {
    for m in &MOUNTS {
        let _ = std::fs::create_dir_all(m.target);
        match mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data) {
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(e) => log::error(&format!("mount {}: {e}", m.target)),
        }
    }
    log::use_kmsg();
    if let Err(e) = ensure_ptmx(Path::new("/dev")) {
        log::error(&format!("/dev/ptmx: {e}"));
    }
    log::enable_trace_from_cmdline();
    // The image ships no modules.dep, so the kernel's module autoloader (which would start
    // `/sbin/modprobe`, a busybox applet, for every device or protocol it looks up) could never
    // succeed: turn it off rather than pay a process start for each attempt.
    if let Err(e) = std::fs::write(MODPROBE_SYSCTL, "\n") {
        log::error(&format!("{MODPROBE_SYSCTL}: {e}"));
    }
    log::trace("mounted");
    if let Ok(name) = std::fs::read_to_string("/etc/hostname") {
        let name = name.trim();
        if !name.is_empty()
            && let Err(e) = nix::unistd::sethostname(name)
        {
            log::error(&format!("sethostname {name}: {e}"));
        }
    }
    if let Err(e) = loopback_up() {
        log::error(&format!("lo up: {e}"));
    }
    load_modules(Path::new(MODULES_LIST));
    log::trace("modules loaded");
}

/// Makes `<dev>/ptmx` open a terminal of the devpts instance at `<dev>/pts` (tty execs and
/// the console use it): devtmpfs provides the device node, which the kernel resolves against
/// `pts` next to it; where it is missing, a link to the instance's own `ptmx` does the same.
fn ensure_ptmx(dev: &Path) -> std::io::Result<()> {
    let ptmx = dev.join("ptmx");
    if ptmx.symlink_metadata().is_ok() {
        return Ok(());
    }
    std::os::unix::fs::symlink("pts/ptmx", ptmx)
}

/// Where the virtio bus lists its devices, each with a `device` file holding its type id.
const VIRTIO_DEVICES_DIR: &str = "/sys/bus/virtio/devices";

/// Loads the modules of `list` in order. A line is a module path, optionally followed by
/// ` virtio=ID[,ID…]`: such a module loads only when a virtio device of one of those types is
/// present (the list puts those lines after the ones that load the virtio transport).
fn load_modules(list: &Path) {
    let Ok(text) = std::fs::read_to_string(list) else {
        return;
    };
    let mut present: Option<Vec<u32>> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (path, condition) = parse_module_line(line);
        let needed = match condition {
            Condition::Always => true,
            Condition::Pci => has_entries(Path::new(PCI_DEVICES_DIR)),
            Condition::Virtio(wanted) => {
                let present = present.get_or_insert_with(|| virtio_device_ids(Path::new(VIRTIO_DEVICES_DIR)));
                wanted.iter().any(|id| present.contains(id))
            }
        };
        if !needed {
            continue;
        }
        let result = File::open(path)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
            .and_then(|f| finit_module(&f, c"", ModuleInitFlags::empty()));
        match result {
            Ok(()) | Err(Errno::EEXIST) => log::trace(path),
            Err(e) => log::error(&format!("module {path}: {e}")),
        }
    }
}

/// When a listed module is needed.
#[derive(Debug, PartialEq, Eq)]
enum Condition {
    Always,
    /// Only with PCI devices present (the virtio-pci transport).
    Pci,
    /// Only with a virtio device of one of these types present.
    Virtio(Vec<u32>),
}

/// Where the PCI bus lists its devices.
const PCI_DEVICES_DIR: &str = "/sys/bus/pci/devices";

/// A module-list line: the path, and when it is needed.
fn parse_module_line(line: &str) -> (&str, Condition) {
    let mut words = line.split_whitespace();
    let path = words.next().unwrap_or_default();
    let condition = match words.next() {
        Some("pci") => Condition::Pci,
        Some(w) => match w.strip_prefix("virtio=") {
            Some(ids) => Condition::Virtio(ids.split(',').filter_map(|id| id.trim().parse().ok()).collect()),
            None => Condition::Always,
        },
        None => Condition::Always,
    };
    (path, condition)
}

/// Whether `dir` exists and lists anything.
fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// The type ids of the virtio devices under `dir` (`device` files hold e.g. `0x0002`).
fn virtio_device_ids(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("device")).ok())
        .filter_map(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .collect()
}

fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags into the ifreq we pass, which lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel filled ifru_flags for SIOCGIFFLAGS.
    unsafe { ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass, which lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Finds `/dev/vportNpM` whose sysfs name is [`PORT_NAME`] and opens it.
pub fn open_agent_port() -> std::io::Result<File> {
    let deadline = Instant::now() + PORT_DEADLINE;
    loop {
        if let Some(dev) = find_port(Path::new(VIRTIO_PORTS_DIR)) {
            return OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(dev);
        }
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no virtio port named {PORT_NAME}")));
        }
        std::thread::sleep(PORT_POLL);
    }
}

fn find_port(dir: &Path) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim() == PORT_NAME {
            return Some(Path::new("/dev").join(entry.file_name()));
        }
    }
    None
}

/// Syncs, stops every other process and powers the machine off. Never returns.
pub fn poweroff() -> ! {
    crate::console::stop();
    nix::unistd::sync();
    let all = Pid::from_raw(-1);
    let _ = kill(all, Signal::SIGTERM);
    let deadline = Instant::now() + TERM_GRACE;
    // Not kill(-1, 0): it also reaches kernel threads, so it never reports "none left".
    while Instant::now() < deadline && user_processes_left(Path::new("/proc")) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = kill(all, Signal::SIGKILL);
    nix::unistd::sync();
    // Disks are left clean (no journal to replay), so a volume can be mounted read-only next.
    crate::rootfs::unmount_all();
    let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    log::error(&format!("poweroff: {e}"));
    // PID 1 must not exit: that panics the kernel.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Whether a live user-space process other than ourselves is left under `proc`. Kernel threads
/// have an empty `cmdline`; zombies (state `Z`) are gone already, only not yet reaped.
fn user_processes_left(proc: &Path) -> bool {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir(proc) else { return false };
    entries.filter_map(Result::ok).any(|entry| {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { return false };
        if pid == me || pid == 1 {
            return false;
        }
        let has_cmdline = std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| !c.is_empty());
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')));
        has_cmdline && !zombie
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_module_line_reads_conditions() {
        assert_eq!(parse_module_line("/lib/m/virtio.ko"), ("/lib/m/virtio.ko", Condition::Always));
        assert_eq!(parse_module_line("/lib/m/virtio_pci.ko pci"), ("/lib/m/virtio_pci.ko", Condition::Pci));
        assert_eq!(
            parse_module_line("/lib/m/virtio_blk.ko virtio=2"),
            ("/lib/m/virtio_blk.ko", Condition::Virtio(vec![2]))
        );
        assert_eq!(parse_module_line("/lib/m/x.ko virtio=1,19"), ("/lib/m/x.ko", Condition::Virtio(vec![1, 19])));
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_entries(dir.path()));
        assert!(!has_entries(&dir.path().join("missing")));
        std::fs::create_dir(dir.path().join("0000:00:01.0")).unwrap();
        assert!(has_entries(dir.path()));
    }

    #[test]
    fn test_virtio_device_ids_reads_hex_types() {
        let dir = tempfile::tempdir().unwrap();
        for (dev, id) in [("virtio0", "0x0003\n"), ("virtio1", "0x0002\n"), ("virtio2", "junk")] {
            std::fs::create_dir(dir.path().join(dev)).unwrap();
            std::fs::write(dir.path().join(dev).join("device"), id).unwrap();
        }
        let mut ids = virtio_device_ids(dir.path());
        ids.sort();
        assert_eq!(ids, [2, 3]);
        assert!(virtio_device_ids(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn test_user_processes_left_ignores_kernel_threads_and_zombies() {
        let proc = tempfile::tempdir().unwrap();
        let add = |pid: &str, cmdline: &[u8], stat: &str| {
            let dir = proc.path().join(pid);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("cmdline"), cmdline).unwrap();
            std::fs::write(dir.join("stat"), stat).unwrap();
        };
        add("1", b"/init\0", "1 (init) S 0");
        add("2", b"", "2 (kthreadd) S 0");
        add("40", b"sh\0", "40 (s h) Z 1");
        std::fs::create_dir(proc.path().join("self")).unwrap();
        assert!(!user_processes_left(proc.path()));
        add("41", b"sleep\x00100\x00", "41 (sleep) S 1");
        assert!(user_processes_left(proc.path()));
    }

    #[test]
    fn test_ensure_ptmx_links_only_when_missing() {
        let dev = tempfile::tempdir().unwrap();
        ensure_ptmx(dev.path()).unwrap();
        assert_eq!(std::fs::read_link(dev.path().join("ptmx")).unwrap(), Path::new("pts/ptmx"));
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("ptmx"), "node").unwrap();
        ensure_ptmx(other.path()).unwrap();
        assert!(std::fs::read_link(other.path().join("ptmx")).is_err(), "an existing node is kept");
    }

    #[test]
    fn test_find_port_matches_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (port, name) in [("vport0p1", "org.qemu.guest_agent.0\n"), ("vport0p2", "nestbox.agent\n")] {
            std::fs::create_dir(dir.path().join(port)).unwrap();
            std::fs::write(dir.path().join(port).join("name"), name).unwrap();
        }
        assert_eq!(find_port(dir.path()), Some(PathBuf::from("/dev/vport0p2")));
        assert_eq!(find_port(&dir.path().join("missing")), None);
    }
}
