//! Boot overhead: `nestbox run -- true` against a raw QEMU boot of the same kernel, machine
//! type and accelerator to an init that powers off at once, measured in one run, interleaved.
//!
//! `cargo bench -p nestbox-cli --bench boot` (`NESTBOX_BENCH_RUNS`, default 10). Prints both
//! medians and the ratio b/a; the target is at most 1.15.

use std::process::{Command, Stdio};

mod common;
use common::{RawBoot, median, min, time};

const TARGET_RATIO: f64 = 1.15;

fn main() {
    let runs: usize = std::env::var("NESTBOX_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let Some(raw_boot) = RawBoot::setup() else { return };
    let (home, decision) = (&raw_boot.home, &raw_boot.decision);
    let raw = || raw_boot.boot();

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
