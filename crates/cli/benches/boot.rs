//! Boot overhead: `nestbox run -- true` against a raw QEMU boot of the same kernel, machine
//! type and accelerator to an init that powers off at once, measured in one run, interleaved.
//!
//! `cargo bench -p nestbox-cli --bench boot` (`NESTBOX_BENCH_RUNS`, default 10). Prints both
//! medians and the ratio b/a; the target is at most 1.15.

use std::process::{Command, Stdio};
use std::time::Instant;

use nestbox_backend::VmDirs;
use nestbox_backend_qemu::QemuArgs;
use nestbox_engine::Home;
use nestbox_engine::accel::{self, AccelChoice};
use nestbox_engine::guest::DEFAULT_CMDLINE;
use nestbox_initramfs::busybox::Busybox;
use nestbox_initramfs::script_image;
use nestbox_model::{Boot, VmSpec};

const TARGET_RATIO: f64 = 1.15;

fn main() {
    let runs: usize = std::env::var("NESTBOX_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let Some(qemu) = nestbox_supervise::find_program("qemu-system-x86_64") else {
        println!("skipped: qemu-system-x86_64 is not installed");
        return;
    };
    let work = tempfile::Builder::new().prefix("nbxbench").tempdir_in("/tmp").unwrap();
    let home = Home::new(work.path().join("home"));
    let kernel = nestbox_kernel::resolve(None, home.root()).expect("a guest kernel");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let decision = rt.block_on(accel::choose(AccelChoice::Auto, &home.cache(), &qemu, &kernel)).unwrap();

    // (a) raw QEMU: the very argv nestbox builds (same kernel, machine, accelerator and
    // devices, agent port included), booting a busybox script that powers off at once.
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
    }
    .build(&spec, &VmDirs::new(&raw_dir))
    .unwrap();
    let raw = || {
        let status = Command::new(&qemu).args(&args).stdin(Stdio::null()).stdout(Stdio::null()).status().unwrap();
        assert!(status.success(), "raw boot failed: {status}");
    };

    // (b) nestbox run -- true, caches warmed by one untimed run.
    let nestbox = env!("CARGO_BIN_EXE_nestbox");
    let run = || {
        let out = Command::new(nestbox)
            .args(["run", "--", "true"])
            .env("NESTBOX_HOME", home.root())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "nestbox run failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    raw();
    run();

    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(time(raw));
        b.push(time(run));
    }
    let (ma, mb) = (median(&mut a), median(&mut b));
    println!("accelerator: {}", decision.accel);
    println!("(a) raw QEMU boot to a powering-off init: median {:.3} s, min {:.3} s, n={runs}", ma, min(&a));
    println!("(b) nestbox run -- true:                  median {:.3} s, min {:.3} s, n={runs}", mb, min(&b));
    println!("ratio b/a: {:.3} (target <= {TARGET_RATIO})", mb / ma);
}

fn time(f: impl Fn()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}
