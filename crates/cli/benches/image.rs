//! Images, measured in one run:
//!
//! (a) making a sandbox's copy-on-write disk over a 100 MiB and a 4 GiB base (sparse ext4-sized
//!     files), side by side; the target is a ratio of at most 1.2 (constant time in the size);
//! (b) building an ext4 image from a tree (`nestbox_image::ext4::build_ext4`, which measures the
//!     tree, writes a sparse temp file and renames it) against `mkfs.ext4 -d` alone on the same
//!     tree and size.
//!
//! `cargo bench -p nestbox-cli --bench image` (`NESTBOX_BENCH_RUNS`, default 20).

use std::path::Path;
use std::process::Command;

use nestbox_backend::BackendKind;

mod common;
use common::{median, time};

const TARGET_RATIO: f64 = 1.2;

fn main() {
    let runs: usize = std::env::var("NESTBOX_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    if nestbox_supervise::find_program("qemu-img").is_none() || nestbox_supervise::find_program("mkfs.ext4").is_none() {
        println!("skipped: qemu-img or mkfs.ext4 is missing");
        return;
    }
    let work = tempfile::Builder::new().prefix("nbximg").tempdir_in("/tmp").unwrap();

    // (a)
    let mut medians = Vec::new();
    for (label, size) in [("100 MiB", 100u64 << 20), ("4 GiB", 4u64 << 30)] {
        let base = work.path().join(format!("base-{size}.ext4"));
        std::fs::File::create(&base).unwrap().set_len(size).unwrap();
        let mut times = Vec::new();
        for i in 0..runs {
            let dest = work.path().join(format!("overlay-{size}-{i}.qcow2"));
            times.push(time(|| {
                nestbox_engine::disk::overlay(&nestbox_engine::disk::Base::raw(&base), &dest, BackendKind::Qemu, None)
                    .unwrap();
            }));
        }
        let m = median(&mut times);
        println!("(a) qcow2 overlay over a {label} base: median {:.2} ms, n={runs}", m * 1000.0);
        medians.push(m);
    }
    println!("(a) ratio 4 GiB / 100 MiB: {:.3} (target <= {TARGET_RATIO})", medians[1] / medians[0]);

    // (b) a tree of 2000 files of 32 KiB (about 64 MiB).
    let tree = work.path().join("tree");
    for d in 0..20 {
        let dir = tree.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(dir.join(format!("f{f}")), vec![(d * 100 + f) as u8; 32 << 10]).unwrap();
        }
    }
    let opts = nestbox_image::ext4::Ext4Options::default();
    let (mut ours, mut alone) = (Vec::new(), Vec::new());
    let mut size = 0;
    for i in 0..runs.min(5) {
        let out = work.path().join(format!("ours-{i}.ext4"));
        ours.push(time(|| {
            size = nestbox_image::ext4::build_ext4(&tree, &out, &opts).unwrap().size_bytes;
        }));
        std::fs::remove_file(&out).unwrap();
        let raw = work.path().join(format!("alone-{i}.ext4"));
        alone.push(time(|| mkfs_alone(&tree, &raw, size)));
        std::fs::remove_file(&raw).unwrap();
    }
    let (mo, ma) = (median(&mut ours), median(&mut alone));
    let mib = 64.0;
    println!("(b) build_ext4 of a 64 MiB tree:   median {mo:.3} s ({:.0} MiB/s)", mib / mo);
    println!("(b) mkfs.ext4 -d alone, same size: median {ma:.3} s ({:.0} MiB/s)", mib / ma);
    println!("(b) ratio ours/alone: {:.3}", mo / ma);
}

fn mkfs_alone(tree: &Path, out: &Path, size: u64) {
    let status = Command::new("mkfs.ext4")
        .stdout(std::process::Stdio::null())
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(tree)
        .arg(out)
        .arg(format!("{}", size / 4096))
        .status()
        .unwrap();
    assert!(status.success());
}
