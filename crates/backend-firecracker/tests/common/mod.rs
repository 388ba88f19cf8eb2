//! Shared test support: the stand-in binary, wrapper scripts that set its knobs, a guest whose
//! files pass the preflight checks, and a backend configured for quick tests.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use nestbox_backend::VmDirs;
use nestbox_backend_firecracker::{FirecrackerBackend, FirecrackerConfig, Transport};
use nestbox_model::{Boot, Device, VmSpec};

/// The stand-in `firecracker`, built once.
pub fn fake() -> PathBuf {
    nestbox_testkit::fake_binary("fake-firecracker")
}

/// The knobs a wrapper script sets before exec'ing the stand-in.
pub const WRAPPERS: &[(&str, &str)] = &[
    ("plain", ""),
    ("late", "FAKE_DELAY_MS=300"),
    ("never", "FAKE_DELAY_MS=60000"),
    ("dies", "FAKE_EXIT=3"),
    ("stubborn", "FAKE_IGNORE_SIGTERM=1"),
    ("vcpu-error", "echo '2026-01-01T00:00:00 [vm:fc_vcpu 0] Failure during vcpu run: Bad address (os error 14)';"),
];

/// Wrapper scripts around the stand-in, each named `<name>-firecracker` (the jailer's naming
/// rule). All are written before any test spawns anything, so no script is still open for
/// writing when another thread forks (which would make its exec fail with ETXTBSY).
pub fn wrapper(name: &str) -> PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, Vec<(String, PathBuf)>)> = OnceLock::new();
    let (_, scripts) = DIR.get_or_init(|| {
        let fake = fake();
        let dir = tempfile::tempdir().unwrap();
        let scripts = WRAPPERS
            .iter()
            .map(|(name, knobs)| {
                let path = dir.path().join(format!("{name}-firecracker"));
                let env = if knobs.contains(';') { knobs.to_string() } else { format!("export {knobs};") };
                let env = if knobs.is_empty() { String::new() } else { env };
                std::fs::write(&path, format!("#!/bin/sh\n{env}\nexec '{}' \"$@\"\n", fake.display())).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
                (name.to_string(), path)
            })
            .collect();
        (dir, scripts)
    });
    scripts.iter().find(|(n, _)| n == name).map(|(_, p)| p.clone()).unwrap_or_else(|| panic!("no wrapper {name}"))
}

/// A VM directory and the files of a guest that passes the preflight checks.
pub struct Guest {
    pub tmp: tempfile::TempDir,
    pub dirs: VmDirs,
    pub spec: VmSpec,
}

pub fn guest() -> Guest {
    let tmp = tempfile::tempdir().unwrap();
    let kernel = tmp.path().join("vmlinux");
    std::fs::write(&kernel, b"\x7fELF\x02\x01\x01\0").unwrap();
    let initrd = tmp.path().join("initrd.cpio");
    std::fs::write(&initrd, b"070701").unwrap();
    let disk = tmp.path().join("data.img");
    std::fs::write(&disk, [0u8; 4096]).unwrap();
    let root = tmp.path().join("vm");
    std::fs::create_dir(&root).unwrap();
    let spec = VmSpec {
        vcpus: 2,
        memory_mib: 256,
        boot: Boot::Linux { kernel, initrd: Some(initrd), cmdline: "console=ttyS0 quiet".into() },
        devices: vec![
            Device::VirtioBlk { id: "data".into(), path: disk, readonly: false },
            Device::VirtioNet { id: "net0".into(), tap: "tap0".into(), mac: Some("02:00:00:00:00:01".into()) },
            Device::Balloon { deflate_on_oom: true, free_page_reporting: true },
            Device::Rng,
        ],
    };
    Guest { dirs: VmDirs::new(root), tmp, spec }
}

/// A configuration for `binary` with short deadlines.
pub fn config(binary: &Path) -> FirecrackerConfig {
    let mut config = FirecrackerConfig::with_binary(binary, Transport::Pci);
    config.start_timeout = Duration::from_secs(10);
    config.term_grace = Duration::from_millis(500);
    config.die_with_parent = false;
    config
}

pub fn backend(binary: &Path) -> FirecrackerBackend {
    FirecrackerBackend::new(config(binary))
}

/// Whether a process with this pid still exists (zombies excluded).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|rest| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Types `text` into the console and waits for the stand-in guest to echo it back.
pub async fn type_and_hear(console: &mut nestbox_backend::Console, text: &[u8]) {
    console.input.as_ref().expect("console input").write(text).await.unwrap();
    let mut heard = Vec::new();
    let echo = async {
        while !heard.windows(text.len()).any(|w| w == text) {
            heard.extend_from_slice(&console.output.recv().await.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(10), echo).await.expect("no echo");
}

/// The rest of the console output, until the feed ends with the VMM.
pub async fn rest_of_console(console: &mut nestbox_backend::Console) -> String {
    let mut rest = Vec::new();
    let drain = async {
        while let Ok(chunk) = console.output.recv().await {
            rest.extend_from_slice(&chunk);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), drain).await.expect("the console did not end");
    String::from_utf8_lossy(&rest).into_owned()
}
