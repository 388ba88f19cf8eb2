//! What the benchmarks share: a raw QEMU boot of the very argv nestbox builds (same kernel,
//! machine, accelerator and devices) to a busybox init that powers off at once, and statistics.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::Instant;

use nestbox_backend::VmDirs;
use nestbox_backend_qemu::QemuArgs;
use nestbox_engine::Home;
use nestbox_engine::accel::{self, AccelChoice, AccelDecision};
use nestbox_engine::guest::DEFAULT_CMDLINE;
use nestbox_initramfs::busybox::Busybox;
use nestbox_initramfs::script_image;
use nestbox_model::{Boot, VmSpec};

/// The baseline: QEMU booting to an init that powers off.
pub struct RawBoot {
    /// A scratch directory holding `home` and the raw VM's files.
    pub work: tempfile::TempDir,
    /// The state root nestbox runs under in the benchmark.
    pub home: Home,
    /// The accelerator both sides use.
    pub decision: AccelDecision,
    qemu: std::path::PathBuf,
    args: Vec<std::ffi::OsString>,
}

impl RawBoot {
    /// Builds the raw VM; `None` (with a line saying why) when QEMU is missing.
    pub fn setup() -> Option<Self> {
        let Some(qemu) = nestbox_supervise::find_program("qemu-system-x86_64") else {
            println!("skipped: qemu-system-x86_64 is not installed");
            return None;
        };
        let work = tempfile::Builder::new().prefix("nbxbench").tempdir_in("/tmp").unwrap();
        let home = Home::new(work.path().join("home"));
        let kernel = nestbox_kernel::resolve(None, home.root()).expect("a guest kernel");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let decision = rt.block_on(accel::choose(AccelChoice::Auto, &home.cache(), &qemu, &kernel)).unwrap();
        let initrd = work.path().join("trivial.cpio");
        let busybox = Busybox::load(None).expect("a static busybox (package busybox-static)");
        std::fs::write(&initrd, script_image(&busybox, "/bin/busybox poweroff -f").unwrap()).unwrap();
        let raw_dir = work.path().join("raw");
        std::fs::create_dir(&raw_dir).unwrap();
        let spec = VmSpec {
            vcpus: 1,
            memory_mib: nestbox_model::defaults::DEFAULT_MEMORY_MIB,
            boot: Boot::Linux { kernel: kernel.vmlinux.clone(), initrd: Some(initrd), cmdline: DEFAULT_CMDLINE.into() },
            devices: vec![],
        };
        let args = QemuArgs {
            name: "bench".into(),
            accel: decision.accel,
            tsc_khz: nestbox_backend_qemu::host::tsc_khz(),
            agent: true,
            memory: None,
            incoming: false,
        }
        .build(&spec, &VmDirs::new(&raw_dir))
        .unwrap();
        let args = args.into_iter().map(Into::into).collect();
        Some(Self { work, home, decision, qemu, args })
    }

    /// One raw boot, to power-off.
    pub fn boot(&self) {
        let status =
            Command::new(&self.qemu).args(&self.args).stdin(Stdio::null()).stdout(Stdio::null()).status().unwrap();
        assert!(status.success(), "raw boot failed: {status}");
    }
}

/// Seconds `f` took.
pub fn time(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

/// The median (sorts `v`).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// The smallest value.
pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The `p`th percentile (0–100, nearest rank; sorts `v`).
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}
