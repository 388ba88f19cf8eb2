//! Shared test support: the stand-in `cloud-hypervisor`, a spawner that sets its knobs (or runs
//! it behind a shell prologue), a VM directory with a spec, and a backend tuned for quick tests.

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nestbox_backend::VmDirs;
use nestbox_backend_chv::{ChvConfig, CloudHypervisorBackend};
use nestbox_model::{Boot, Device, VmSpec};
use nestbox_supervise::{CommandSpec, OsSpawner, Spawner, Supervised};

/// The stand-in `cloud-hypervisor`, built once per process.
pub fn fake() -> PathBuf {
    nestbox_testkit::fake_binary("fake-cloud-hypervisor")
}

/// Spawns the command with extra environment (the stand-in's knobs) and, optionally, a shell
/// prologue run before the binary is exec'd (to print what a real VMM would have logged).
#[derive(Debug, Default)]
pub struct KnobSpawner {
    pub env: Vec<(OsString, OsString)>,
    pub prologue: Option<String>,
}

impl KnobSpawner {
    pub fn env(pairs: &[(&str, &str)]) -> Arc<Self> {
        Arc::new(Self { env: pairs.iter().map(|(k, v)| (k.into(), v.into())).collect(), prologue: None })
    }

    pub fn prologue(script: &str) -> Arc<Self> {
        Arc::new(Self { env: Vec::new(), prologue: Some(script.to_owned()) })
    }
}

impl Spawner for KnobSpawner {
    fn spawn(&self, cmd: &CommandSpec) -> nestbox_supervise::Result<Supervised> {
        let mut cmd = cmd.clone();
        cmd.env.extend(self.env.iter().cloned());
        if let Some(prologue) = &self.prologue {
            let mut args: Vec<OsString> =
                vec!["-c".into(), format!("{prologue}\nexec \"$0\" \"$@\"").into(), cmd.program.into_os_string()];
            args.append(&mut cmd.args);
            cmd.program = PathBuf::from("/bin/sh");
            cmd.args = args;
        }
        OsSpawner.spawn(&cmd)
    }
}

/// The quick-test configuration for `binary`.
pub fn config(binary: PathBuf) -> ChvConfig {
    let mut config = ChvConfig::with_binary(binary);
    config.start_timeout = Duration::from_secs(10);
    config.api_timeout = Duration::from_secs(5);
    config.stop_grace = Duration::from_millis(500);
    config
}

/// A backend on the stand-in, spawned with `spawner`.
pub fn backend_with(spawner: Arc<dyn Spawner>) -> CloudHypervisorBackend {
    CloudHypervisorBackend::with_spawner(config(fake()), spawner)
}

/// A backend on the stand-in.
pub fn backend() -> CloudHypervisorBackend {
    CloudHypervisorBackend::new(config(fake()))
}

/// A VM directory (removed on drop) and a spec using every device the backend supports.
pub struct Guest {
    pub tmp: tempfile::TempDir,
    pub dirs: VmDirs,
    pub spec: VmSpec,
}

pub fn guest() -> Guest {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = VmDirs::new(tmp.path());
    let spec = VmSpec {
        vcpus: 2,
        memory_mib: 256,
        boot: Boot::Linux {
            kernel: tmp.path().join("vmlinux"),
            initrd: Some(tmp.path().join("initrd.cpio")),
            cmdline: "console=ttyS0".into(),
        },
        devices: vec![
            Device::VirtioBlk { id: "root".into(), path: tmp.path().join("root.img"), readonly: true },
            Device::Balloon { deflate_on_oom: true, free_page_reporting: true },
            Device::Rng,
        ],
    };
    Guest { tmp, dirs, spec }
}

/// How long a graceful shutdown may take in tests.
pub const GRACE: Duration = Duration::from_secs(5);
