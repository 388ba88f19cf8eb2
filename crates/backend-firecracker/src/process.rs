//! The Firecracker process: its command line (direct, or through the jailer with the files it
//! needs linked into the chroot), the checks on the files Firecracker will read, starting it and
//! waiting for its API socket, the stop ladder (Ctrl+Alt+Del, SIGTERM, SIGKILL), and reading
//! its log to tell a crash from a clean exit.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nestbox_backend::{BackendError, BackendKind, VmDirs};
use nestbox_model::{Boot, Device, VmSpec};
use nestbox_supervise::{CommandSpec, ExitReport, Spawner, Stream, SuperviseError, Supervised};

use crate::client::FcClient;
use crate::map::{PathRole, Plan, Transport};
use crate::wire::ActionType;

/// The jailer's default chroot base (`--chroot-base-dir`).
pub const DEFAULT_CHROOT_BASE: &str = "/srv/jailer";
/// The API socket inside the jail, as the jailed Firecracker sees it (Firecracker's default).
pub const JAILED_API_SOCKET: &str = "/run/firecracker.socket";
/// The vsock socket inside the jail.
pub const JAILED_VSOCK_SOCKET: &str = "/vsock.sock";
/// The vsock socket's name in the VM directory.
pub const VSOCK_SOCKET_NAME: &str = "vsock.sock";
/// The longest instance id Firecracker and the jailer accept.
pub const MAX_ID_LEN: usize = 64;
/// Lines of log read back to tell a crash from a clean exit.
pub const CRASH_SCAN_LINES: usize = 400;
/// Lines of stderr quoted when a launch fails.
const LAUNCH_TAIL_LINES: usize = 5;

/// Log lines that mean the guest or Firecracker failed, whatever the exit code: vCPU errors
/// (`vstate/vcpu`), Firecracker's own error exit and panic hook, and a guest kernel panic.
pub const CRASH_MARKERS: &[&str] = &[
    "Failure during vcpu run",
    "KVM failed to emulate an instruction",
    "Firecracker exiting with error",
    "Firecracker panicked",
    "Kernel panic - not syncing",
];

/// Running Firecracker through its jailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerConfig {
    /// The `jailer` binary.
    pub binary: PathBuf,
    /// The uid Firecracker runs as.
    pub uid: u32,
    /// The gid Firecracker runs as.
    pub gid: u32,
    /// Where chroots are built (`--chroot-base-dir`).
    pub chroot_base: PathBuf,
    /// A network namespace to join (`--netns`).
    pub netns: Option<PathBuf>,
    /// The cgroup hierarchy version (`--cgroup-version`, 1 or 2).
    pub cgroup_version: Option<u8>,
    /// Where the VM's cgroup goes (`--parent-cgroup`).
    pub parent_cgroup: Option<String>,
    /// `<file>=<value>` cgroup settings (`--cgroup`, repeated).
    pub cgroups: Vec<String>,
    /// `<resource>=<value>` limits (`--resource-limit`, repeated).
    pub resource_limits: Vec<String>,
}

impl JailerConfig {
    /// A jailer at `binary` running Firecracker as `uid:gid`, in the default chroot base.
    pub fn new(binary: impl Into<PathBuf>, uid: u32, gid: u32) -> Self {
        Self {
            binary: binary.into(),
            uid,
            gid,
            chroot_base: PathBuf::from(DEFAULT_CHROOT_BASE),
            netns: None,
            cgroup_version: None,
            parent_cgroup: None,
            cgroups: Vec::new(),
            resource_limits: Vec::new(),
        }
    }
}

/// A chroot the jailer builds for one VM: `<chroot_base>/<exec file name>/<id>/root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    root: PathBuf,
    uid: u32,
    gid: u32,
}

impl Jail {
    /// The jail for instance `id` of `firecracker` under `config`.
    pub fn new(config: &JailerConfig, firecracker: &Path, id: &str) -> Result<Self, BackendError> {
        let exec_name = firecracker.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        // The jailer refuses an exec file whose name lacks "firecracker".
        if !exec_name.contains("firecracker") {
            return Err(launch(format!(
                "the jailer runs only a binary named *firecracker*, not {}",
                firecracker.display()
            )));
        }
        Ok(Self { root: config.chroot_base.join(exec_name).join(id).join("root"), uid: config.uid, gid: config.gid })
    }

    /// The chroot directory (`/` for the jailed Firecracker).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a path inside the jail is on the host.
    pub fn host_path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// Creates the chroot and its `/run`, links (or copies) every file the plan names into it,
    /// and rewrites the plan's paths to the jailed view.
    pub fn prepare(&self, plan: &mut Plan) -> Result<(), BackendError> {
        let run = self.host_path("/run");
        std::fs::create_dir_all(&run).map_err(io(format!("cannot create {}", run.display())))?;
        chown(&run, self.uid, self.gid)?;
        let writable: Vec<String> = plan
            .requests
            .iter()
            .filter_map(|r| match r {
                crate::map::Request::Drive(d) if d.is_read_only != Some(true) => Some(d.drive_id.clone()),
                _ => None,
            })
            .collect();
        for (role, path) in plan.paths_mut() {
            let (inside, owned) = match role {
                PathRole::Kernel => ("/kernel".to_owned(), false),
                PathRole::Initrd => ("/initrd".to_owned(), false),
                PathRole::Drive(id) => (format!("/drive-{id}"), writable.iter().any(|w| w == id)),
                PathRole::VsockSocket => {
                    *path = JAILED_VSOCK_SOCKET.to_owned();
                    continue;
                }
            };
            let target = self.host_path(&inside);
            self.place(Path::new(path.as_str()), &target, owned)?;
            *path = inside;
        }
        Ok(())
    }

    /// Hard-links `source` to `target` (copying across filesystems). A writable disk is then
    /// owned by the jailed uid (the link shares the inode: the source changes owner too); a
    /// read-only file the uid cannot read is copied and the copy given to it.
    fn place(&self, source: &Path, target: &Path, writable: bool) -> Result<(), BackendError> {
        let _ = std::fs::remove_file(target);
        let linked = std::fs::hard_link(source, target).is_ok();
        if !linked {
            std::fs::copy(source, target).map_err(io(format!(
                "cannot copy {} into the jail at {}",
                source.display(),
                target.display()
            )))?;
        }
        let meta = std::fs::metadata(target).map_err(io(format!("cannot stat {}", target.display())))?;
        let world_readable = meta.permissions().mode() & 0o004 != 0;
        if writable {
            return chown(target, self.uid, self.gid);
        }
        if !world_readable {
            if linked {
                std::fs::remove_file(target).map_err(io(format!("cannot unlink {}", target.display())))?;
                std::fs::copy(source, target).map_err(io(format!(
                    "cannot copy {} into the jail at {}",
                    source.display(),
                    target.display()
                )))?;
            }
            return chown(target, self.uid, self.gid);
        }
        Ok(())
    }

    /// Removes the chroot (`<chroot_base>/<exec>/<id>`), once Firecracker has ended.
    pub fn remove(&self) {
        if let Some(instance) = self.root.parent()
            && let Err(e) = std::fs::remove_dir_all(instance)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %instance.display(), error = %e, "cannot remove the jail");
        }
    }
}

/// Where one VM's sockets are, on the host and as Firecracker sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The instance id (`--id`).
    pub id: String,
    /// The API socket on the host.
    pub api_socket: PathBuf,
    /// The API socket as Firecracker sees it (`--api-sock`).
    pub api_socket_in_vmm: PathBuf,
    /// The vsock socket on the host (the agent endpoint).
    pub vsock_socket: PathBuf,
    /// The vsock socket as Firecracker sees it (`/vsock` `uds_path`).
    pub vsock_socket_in_vmm: PathBuf,
    /// The jail, when run through the jailer.
    pub jail: Option<Jail>,
}

impl Layout {
    /// Firecracker run directly: both sockets in the VM directory.
    pub fn direct(dirs: &VmDirs) -> Self {
        let vsock = dirs.root().join(VSOCK_SOCKET_NAME);
        Self {
            id: instance_id(dirs),
            api_socket: dirs.api_socket(),
            api_socket_in_vmm: dirs.api_socket(),
            vsock_socket: vsock.clone(),
            vsock_socket_in_vmm: vsock,
            jail: None,
        }
    }

    /// Firecracker run by the jailer: sockets inside the chroot.
    pub fn jailed(dirs: &VmDirs, jailer: &JailerConfig, firecracker: &Path) -> Result<Self, BackendError> {
        let id = instance_id(dirs);
        let jail = Jail::new(jailer, firecracker, &id)?;
        Ok(Self {
            api_socket: jail.host_path(JAILED_API_SOCKET),
            api_socket_in_vmm: PathBuf::from(JAILED_API_SOCKET),
            vsock_socket: jail.host_path(JAILED_VSOCK_SOCKET),
            vsock_socket_in_vmm: PathBuf::from(JAILED_VSOCK_SOCKET),
            id,
            jail: Some(jail),
        })
    }

    /// Removes sockets a previous run left behind (Firecracker refuses to bind over them).
    pub fn remove_stale_sockets(&self) -> Result<(), BackendError> {
        for socket in [&self.api_socket, &self.vsock_socket] {
            match std::fs::remove_file(socket) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(BackendError::Io { context: format!("cannot remove {}", socket.display()), source: e });
                }
            }
        }
        Ok(())
    }
}

/// The instance id for a VM directory: its name, reduced to what Firecracker accepts
/// (letters, digits and `-`, at most [`MAX_ID_LEN`]).
pub fn instance_id(dirs: &VmDirs) -> String {
    let name = dirs.root().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let id: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).take(MAX_ID_LEN).collect();
    if id.is_empty() { "nestbox".to_owned() } else { id }
}

/// Firecracker's own arguments: `--api-sock`, `--id` (the jailer passes that itself), and
/// `--enable-pci` for virtio-pci.
pub fn firecracker_args(layout: &Layout, transport: Transport) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--api-sock".into(), layout.api_socket_in_vmm.clone().into()];
    if layout.jail.is_none() {
        args.extend(["--id".into(), layout.id.clone().into()]);
    }
    if transport == Transport::Pci {
        args.push("--enable-pci".into());
    }
    args
}

/// The jailer's arguments, then `--`, then Firecracker's.
pub fn jailer_args(jailer: &JailerConfig, firecracker: &Path, layout: &Layout, transport: Transport) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--id".into(),
        layout.id.clone().into(),
        "--exec-file".into(),
        firecracker.into(),
        "--uid".into(),
        jailer.uid.to_string().into(),
        "--gid".into(),
        jailer.gid.to_string().into(),
        "--chroot-base-dir".into(),
        jailer.chroot_base.clone().into(),
    ];
    if let Some(netns) = &jailer.netns {
        args.extend(["--netns".into(), netns.into()]);
    }
    if let Some(version) = jailer.cgroup_version {
        args.extend(["--cgroup-version".into(), version.to_string().into()]);
    }
    if let Some(parent) = &jailer.parent_cgroup {
        args.extend(["--parent-cgroup".into(), parent.into()]);
    }
    for cgroup in &jailer.cgroups {
        args.extend(["--cgroup".into(), cgroup.into()]);
    }
    for limit in &jailer.resource_limits {
        args.extend(["--resource-limit".into(), limit.into()]);
    }
    args.push("--".into());
    args.extend(firecracker_args(layout, transport));
    args
}

/// Checks the files Firecracker will read: an uncompressed ELF kernel on x86_64 (Firecracker
/// boots neither a bzImage nor a compressed image there) and raw disks (no image formats).
pub fn preflight(spec: &VmSpec) -> Result<(), BackendError> {
    if let Boot::Linux { kernel, .. } = &spec.boot {
        let head = read_head(kernel, 0x210).map_err(io(format!("cannot read boot.kernel {}", kernel.display())))?;
        if cfg!(target_arch = "x86_64") && !head.starts_with(b"\x7fELF") {
            let what = if head.get(0x202..0x206) == Some(b"HdrS") { "a bzImage" } else { "not an ELF image" };
            return Err(launch(format!(
                "firecracker boots only an uncompressed ELF vmlinux on x86_64; boot.kernel {} is {what}",
                kernel.display()
            )));
        }
    }
    for (index, device) in spec.devices.iter().enumerate() {
        if let Device::VirtioBlk { path, .. } = device {
            let head =
                read_head(path, 8).map_err(io(format!("cannot read devices[{index}].path {}", path.display())))?;
            if let Some(format) = image_format(&head) {
                return Err(launch(format!(
                    "firecracker takes only raw disks; devices[{index}].path {} is {format}",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// The image format a disk's first bytes announce, if any.
fn image_format(head: &[u8]) -> Option<&'static str> {
    [(&b"QFI\xfb"[..], "qcow2"), (b"vhdxfile", "vhdx"), (b"KDMV", "vmdk"), (b"<<< ", "vdi")]
        .into_iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, name)| name)
}

fn read_head(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(len);
    std::fs::File::open(path)?.take(len as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Spawns `cmd` and waits up to `timeout` for the API socket; on failure the process is killed
/// and the error carries its last words.
pub async fn start(
    spawner: &dyn Spawner,
    cmd: &CommandSpec,
    api_socket: &Path,
    timeout: Duration,
) -> Result<Supervised, BackendError> {
    let child = spawner.spawn(cmd).map_err(|e| {
        if e.is_not_found() {
            BackendError::BinaryNotFound {
                binary: cmd.program.display().to_string(),
                package: crate::FIRECRACKER_PACKAGE.into(),
            }
        } else {
            launch(e.to_string())
        }
    })?;
    tracing::debug!(pid = child.pid(), "firecracker spawned");
    if let Err(e) = child.wait_for_socket(api_socket, timeout).await {
        child.kill();
        return Err(launch(launch_reason(&child, e)));
    }
    Ok(child)
}

/// Why a start failed, with the process's stderr tail unless the error already carries it.
fn launch_reason(child: &Supervised, e: SuperviseError) -> String {
    if matches!(e, SuperviseError::ProcessExited { .. }) {
        return e.to_string();
    }
    let tail = child.log_tail(Stream::Stderr, LAUNCH_TAIL_LINES).join(" | ");
    if tail.is_empty() { e.to_string() } else { format!("{e}: {tail}") }
}

/// The stop ladder: Ctrl+Alt+Del (when the guest has an i8042, x86 only) and up to `grace` for
/// the guest to go down, then SIGTERM and `term_grace`, then SIGKILL. Signals are sent only
/// while the PID is still the process we started.
pub async fn stop(
    child: &Supervised,
    client: &FcClient,
    grace: Duration,
    term_grace: Duration,
    ctrl_alt_del: bool,
) -> ExitReport {
    if child.try_wait().is_some() {
        return child.wait().await;
    }
    if ctrl_alt_del {
        match client.action(ActionType::SendCtrlAltDel).await {
            Ok(()) => {
                if let Ok(report) = tokio::time::timeout(grace, child.wait()).await {
                    return report;
                }
                tracing::debug!(?grace, "guest did not stop after Ctrl+Alt+Del");
            }
            Err(e) => tracing::debug!(error = %e, "Ctrl+Alt+Del refused"),
        }
    }
    child.terminate(term_grace).await
}

/// Why Firecracker crashed, read from its output, whatever its exit code: the first line that
/// carries one of [`CRASH_MARKERS`].
pub fn crash_reason(child: &Supervised) -> Option<String> {
    let mut lines = child.log_tail(Stream::Stdout, CRASH_SCAN_LINES);
    lines.extend(child.log_tail(Stream::Stderr, CRASH_SCAN_LINES));
    find_crash(&lines)
}

/// The first line of `lines` that carries a crash marker.
pub fn find_crash(lines: &[String]) -> Option<String> {
    lines.iter().find(|line| CRASH_MARKERS.iter().any(|m| line.contains(m))).map(|line| line.trim().to_owned())
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), BackendError> {
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid))).map_err(
        |e| BackendError::Io {
            context: format!("cannot give {} to {uid}:{gid} for the jailer", path.display()),
            source: e.into(),
        },
    )
}

fn launch(reason: String) -> BackendError {
    BackendError::Launch { backend: BackendKind::Firecracker, reason }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> BackendError {
    move |source| BackendError::Io { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::MapOptions;

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn test_direct_argv_golden() {
        let layout = Layout::direct(&VmDirs::new("/h/sandboxes/ab_c.1"));
        assert_eq!(layout.id, "ab-c-1");
        assert_eq!(
            strings(&firecracker_args(&layout, Transport::Mmio)),
            ["--api-sock", "/h/sandboxes/ab_c.1/api.sock", "--id", "ab-c-1"]
        );
        assert_eq!(
            strings(&firecracker_args(&layout, Transport::Pci)),
            ["--api-sock", "/h/sandboxes/ab_c.1/api.sock", "--id", "ab-c-1", "--enable-pci"]
        );
        assert_eq!(layout.vsock_socket, Path::new("/h/sandboxes/ab_c.1/vsock.sock"));
    }

    #[test]
    fn test_jailer_argv_golden() {
        let mut jailer = JailerConfig::new("/usr/bin/jailer", 123, 100);
        jailer.netns = Some("/var/run/netns/vm".into());
        jailer.cgroup_version = Some(2);
        jailer.parent_cgroup = Some("nestbox".into());
        jailer.cgroups = vec!["cpuset.cpus=0".into(), "memory.max=536870912".into()];
        jailer.resource_limits = vec!["no-file=1024".into()];
        let fc = Path::new("/usr/bin/firecracker");
        let layout = Layout::jailed(&VmDirs::new("/h/sandboxes/abc"), &jailer, fc).unwrap();
        assert_eq!(
            strings(&jailer_args(&jailer, fc, &layout, Transport::Pci)).join(" "),
            "--id abc --exec-file /usr/bin/firecracker --uid 123 --gid 100 --chroot-base-dir /srv/jailer \
             --netns /var/run/netns/vm --cgroup-version 2 --parent-cgroup nestbox --cgroup cpuset.cpus=0 \
             --cgroup memory.max=536870912 --resource-limit no-file=1024 \
             -- --api-sock /run/firecracker.socket --enable-pci"
        );
        assert_eq!(layout.api_socket, Path::new("/srv/jailer/firecracker/abc/root/run/firecracker.socket"));
        assert_eq!(layout.vsock_socket, Path::new("/srv/jailer/firecracker/abc/root/vsock.sock"));
    }

    #[test]
    fn test_jailer_refuses_exec_file_not_named_firecracker() {
        let jailer = JailerConfig::new("/usr/bin/jailer", 1, 1);
        let err = Layout::jailed(&VmDirs::new("/h/x"), &jailer, Path::new("/usr/bin/fc")).unwrap_err();
        assert!(err.to_string().contains("named *firecracker*"), "{err}");
    }

    #[test]
    fn test_jail_prepare_links_files_and_rewrites_plan() {
        let tmp = tempfile::tempdir().unwrap();
        let kernel = tmp.path().join("vmlinux");
        let initrd = tmp.path().join("initrd");
        let disk = tmp.path().join("data.img");
        for f in [&kernel, &initrd, &disk] {
            std::fs::write(f, b"x").unwrap();
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        // Our own uid and gid: chown needs no privilege then.
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let mut jailer = JailerConfig::new("/usr/bin/jailer", uid, gid);
        jailer.chroot_base = tmp.path().join("jail");
        let spec = VmSpec {
            vcpus: 1,
            memory_mib: 128,
            boot: Boot::Linux { kernel: kernel.clone(), initrd: Some(initrd), cmdline: String::new() },
            devices: vec![Device::VirtioBlk { id: "data".into(), path: disk, readonly: false }],
        };
        let layout = Layout::jailed(&VmDirs::new(tmp.path().join("vm")), &jailer, Path::new("/x/firecracker")).unwrap();
        let options = MapOptions { transport: Transport::Mmio, vsock_path: layout.vsock_socket_in_vmm.clone() };
        let mut plan = Plan::new(&spec, &options).unwrap();
        let jail = layout.jail.as_ref().unwrap();
        jail.prepare(&mut plan).unwrap();
        let bodies: Vec<String> = plan.requests.iter().map(|r| String::from_utf8(r.body()).unwrap()).collect();
        assert!(bodies[1].contains(r#""kernel_image_path":"/kernel","initrd_path":"/initrd""#), "{}", bodies[1]);
        assert!(bodies[2].contains(r#""path_on_host":"/drive-data""#), "{}", bodies[2]);
        assert!(bodies[3].contains(r#""uds_path":"/vsock.sock""#), "{}", bodies[3]);
        assert!(jail.root().join("kernel").is_file());
        assert!(jail.root().join("drive-data").is_file());
        assert!(jail.root().join("run").is_dir());
        jail.remove();
        assert!(!jail.root().exists());
    }

    #[test]
    fn test_preflight_kernel_and_disk_formats() {
        let tmp = tempfile::tempdir().unwrap();
        let elf = tmp.path().join("vmlinux");
        std::fs::write(&elf, b"\x7fELF\x02\x01\x01").unwrap();
        let mut bz = vec![0u8; 0x210];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let bzimage = tmp.path().join("bzImage");
        std::fs::write(&bzimage, &bz).unwrap();
        let raw = tmp.path().join("raw.img");
        std::fs::write(&raw, [0u8; 512]).unwrap();
        let qcow = tmp.path().join("disk.qcow2");
        std::fs::write(&qcow, b"QFI\xfb\0\0\0\x03").unwrap();
        let spec = |kernel: &Path, disk: &Path| VmSpec {
            vcpus: 1,
            memory_mib: 128,
            boot: Boot::Linux { kernel: kernel.into(), initrd: None, cmdline: String::new() },
            devices: vec![Device::VirtioBlk { id: "d".into(), path: disk.into(), readonly: true }],
        };
        preflight(&spec(&elf, &raw)).unwrap();
        let err = preflight(&spec(&elf, &qcow)).unwrap_err().to_string();
        assert!(err.contains("only raw disks") && err.contains("qcow2"), "{err}");
        if cfg!(target_arch = "x86_64") {
            let err = preflight(&spec(&bzimage, &raw)).unwrap_err().to_string();
            assert!(err.contains("ELF vmlinux") && err.contains("a bzImage"), "{err}");
        }
        let err = preflight(&spec(&tmp.path().join("missing"), &raw)).unwrap_err().to_string();
        assert!(err.starts_with("cannot read boot.kernel"), "{err}");
    }

    #[test]
    fn test_find_crash_reads_vcpu_errors_whatever_the_code() {
        let clean =
            ["Running Firecracker v1.16.1", "Vmm is stopping.", "Firecracker exiting successfully. exit_code=0"]
                .map(String::from);
        assert_eq!(find_crash(&clean), None);
        let crashed = [
            "Running Firecracker v1.16.1",
            "2026-01-01T00:00:00 [vm:fc_vcpu 0] Failure during vcpu run: Bad address (os error 14)",
            "Firecracker exiting successfully. exit_code=0",
        ]
        .map(String::from);
        assert_eq!(
            find_crash(&crashed).as_deref(),
            Some("2026-01-01T00:00:00 [vm:fc_vcpu 0] Failure during vcpu run: Bad address (os error 14)")
        );
        let panic = ["[    1.0] Kernel panic - not syncing: No working init found."].map(String::from);
        assert!(find_crash(&panic).is_some());
    }
}
