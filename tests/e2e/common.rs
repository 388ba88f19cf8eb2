//! Shared helpers: per-test homes over a shared cache, prerequisites, leftover checks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `nestbox` binary under test.
pub const NESTBOX: &str = env!("CARGO_BIN_EXE_nestbox");

/// Returns why the host cannot run VMs, or `None` when it can.
pub fn missing_prerequisite() -> Option<String> {
    if nestbox_supervise::find_program("qemu-system-x86_64").is_none() {
        return Some("qemu-system-x86_64 is not installed".into());
    }
    if !Path::new("/bin/busybox").exists() && !Path::new("/usr/bin/busybox").exists() {
        return Some("busybox is not installed".into());
    }
    if let Err(e) = nestbox_kernel::resolve(None, &shared_cache()) {
        return Some(format!("no guest kernel: {e}"));
    }
    None
}

/// Skips the calling test (returning early) when the host cannot run VMs.
#[macro_export]
macro_rules! require_vm {
    () => {
        if let Some(why) = $crate::common::missing_prerequisite() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Kernel, image and probe caches shared by all tests.
pub fn shared_cache() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-cache");
    for sub in ["kernels", "images/initramfs", "cache"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    dir
}

/// A test's own `NESTBOX_HOME`.
#[derive(Debug)]
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    /// A fresh home whose caches point at the shared ones.
    pub fn new() -> Self {
        // Short path: Unix socket paths are limited to 107 bytes.
        let dir = tempfile::Builder::new().prefix("nbx").tempdir_in("/tmp").unwrap();
        let shared = shared_cache();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        for sub in ["kernels", "images/initramfs", "cache"] {
            std::os::unix::fs::symlink(shared.join(sub), dir.path().join(sub)).unwrap();
        }
        Self { dir }
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `nestbox ARGS` with this home.
    pub fn nestbox<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(NESTBOX);
        cmd.args(args).env("NESTBOX_HOME", self.path()).stdin(Stdio::null());
        cmd
    }

    /// Runs `nestbox ARGS` to completion.
    pub fn output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.nestbox(args).output().unwrap()
    }

    /// Asserts nothing is left: no VM directory, no process mentioning this home.
    pub fn assert_clean(&self) {
        let left: Vec<_> = ["run", "sandboxes"]
            .iter()
            .flat_map(|d| std::fs::read_dir(self.path().join(d)).into_iter().flatten())
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        let needle = self.path().to_string_lossy().into_owned();
        // QEMU gets SIGKILL on the way out; give the kernel a moment to reap it.
        for _ in 0..50 {
            if processes_mentioning(&needle).is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("processes left behind: {:?}", processes_mentioning(&needle));
    }
}

impl Drop for Home {
    /// A test that failed half-way may leave sandboxes running (their shims outlive the CLI):
    /// kill whatever still names this home, so one failure does not leave VMs eating the CPU.
    fn drop(&mut self) {
        for (pid, _) in processes_mentioning(&self.path().to_string_lossy()) {
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: kill has no memory effects; the pid was just seen naming this home.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Pids (and command lines) of live processes whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
            .unwrap_or(false);
        if cmdline.contains(needle) && !zombie && pid != std::process::id() {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Runs `nestbox ARGS`, asserts it succeeded and returns its stdout.
pub fn ok(home: &Home, args: &[&str]) -> String {
    let out = home.output(args);
    assert!(out.status.success(), "nestbox {args:?}: {:?}\n{}", out.status, stderr(&out));
    stdout(&out)
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Boots a QEMU VM with the default image through the engine's API (256 MiB, one vCPU).
pub async fn boot_sandbox(home: &Home) -> nestbox_engine::Sandbox {
    boot_sandbox_with(home, None).await
}

/// As [`boot_sandbox`], with `root_disk` as the guest's root filesystem.
pub async fn boot_sandbox_with(home: &Home, root_disk: Option<PathBuf>) -> nestbox_engine::Sandbox {
    let runner = nestbox_engine::Runner::new(nestbox_engine::Home::new(home.path()));
    let prepared = runner
        .prepare(&nestbox_engine::BootRequest {
            vcpus: 1,
            memory_mib: 256,
            kernel: None,
            kernel_args: vec![],
            boot_timeout: std::time::Duration::from_secs(60),
            accel: nestbox_engine::accel::AccelChoice::Auto,
            hypervisor: nestbox_backend::BackendKind::Qemu,
            hypervisor_binary: None,
            root_disk,
            volumes: Vec::new(),
            cloud: None,
        })
        .await
        .unwrap();
    runner.boot(&prepared).await.unwrap()
}
