//! Persistent sandboxes, measured in one run:
//!
//! (a) one `create`, `start`, `exec -- true`, `rm` cycle of the CLI against the raw QEMU boot of
//!     the boot benchmark, interleaved, as a ratio;
//! (b) a leak check over many such cycles through the engine in this process: its open file
//!     descriptors, the shim's resident memory, and the bytes under `$NESTBOX_HOME`, at the start
//!     and at the end;
//! (c) `exec -- true` round trips in one running sandbox: median and p99 over many calls from
//!     one client, then from 16 clients at once.
//!
//! `cargo bench -p nestbox-cli --bench sandbox`; `NESTBOX_BENCH_RUNS` (default 10) for (a),
//! `NESTBOX_BENCH_CYCLES` (default 200) for (b), `NESTBOX_BENCH_CALLS` (default 200) for (c).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use nestbox_agent_client::ExecRequest;
use nestbox_backend::BackendKind;
use nestbox_engine::accel::AccelChoice;
use nestbox_engine::{CreateRequest, SandboxConfig, Sandboxes};

mod common;
use common::{RawBoot, median, min, percentile, time};

const NESTBOX: &str = env!("CARGO_BIN_EXE_nestbox");
const CLIENTS: usize = 16;

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let Some(raw) = RawBoot::setup() else { return };
    let home = raw.home.clone();
    let cli = |args: &[&str]| -> String {
        let out =
            Command::new(NESTBOX).args(args).env("NESTBOX_HOME", home.root()).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "nestbox {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let cycle = || {
        let id = cli(&["create", "--memory", "256M"]);
        cli(&["start", &id]);
        cli(&["exec", &id, "--", "true"]);
        cli(&["rm", "-f", &id]);
    };
    println!("accelerator: {}", raw.decision.accel);

    // (a)
    let runs = env_or("NESTBOX_BENCH_RUNS", 10);
    raw.boot();
    cycle();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(time(|| raw.boot()));
        b.push(time(cycle));
    }
    let (ma, mb) = (median(&mut a), median(&mut b));
    println!("(a) raw QEMU boot to a powering-off init:        median {ma:.3} s, min {:.3} s, n={runs}", min(&a));
    println!("(a) create + start + exec -- true + rm (the CLI): median {mb:.3} s, min {:.3} s, n={runs}", min(&b));
    println!("(a) ratio cycle/raw: {:.3}", mb / ma);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mgr = Sandboxes::new(home.clone(), NESTBOX.into());
    let config = SandboxConfig {
        hypervisor: BackendKind::Qemu,
        hypervisor_binary: None,
        vcpus: 1,
        memory_mib: 256,
        kernel: None,
        kernel_args: Vec::new(),
        accel: AccelChoice::Auto,
        boot_timeout_ms: 60_000,
        env: Vec::new(),
        workdir: None,
        user: None,
        volumes: Vec::new(),
        disk: None,
        firmware: None,
        ssh_keys: Vec::new(),
    };

    // (b)
    let cycles = env_or("NESTBOX_BENCH_CYCLES", 200);
    let engine_cycle = |rss: &mut Vec<u64>| {
        rt.block_on(async {
            let sb = mgr
                .create(CreateRequest {
                    name: None,
                    config: config.clone(),
                    labels: Default::default(),
                    image: None,
                    disk_size_mib: None,
                })
                .unwrap();
            let id = sb.id().to_string();
            let sb = mgr.start(&id).await.unwrap();
            if let Some(shim) = sb.record.shim {
                rss.push(rss_kib(shim.pid));
            }
            let (client, _) = mgr.agent(&id).await.unwrap();
            let out = client.exec(ExecRequest::new(["true"])).await.unwrap().output().await.unwrap();
            assert!(out.status.success());
            drop(client);
            mgr.remove(&id, true).await.unwrap();
        });
    };
    let mut rss = Vec::new();
    engine_cycle(&mut rss);
    let (fds0, disk0) = (open_fds(), disk_bytes(home.root()));
    let started = Instant::now();
    for _ in 0..cycles {
        engine_cycle(&mut rss);
    }
    let (fds1, disk1) = (open_fds(), disk_bytes(home.root()));
    println!(
        "(b) {cycles} cycles in {:.1} s: engine fds {fds0} -> {fds1}; shim RSS first {} KiB, last {} KiB, max {} KiB; \
         bytes under NESTBOX_HOME {disk0} -> {disk1}",
        started.elapsed().as_secs_f64(),
        rss[1.min(rss.len() - 1)],
        rss.last().unwrap(),
        rss.iter().max().unwrap(),
    );
    println!("(b) leak check: fds {}, disk {}", verdict(fds0 == fds1), verdict(disk0 == disk1));

    // (c)
    let calls = env_or("NESTBOX_BENCH_CALLS", 200);
    rt.block_on(async {
        let sb = mgr.create(CreateRequest { name: None, config: config.clone(), labels: Default::default(), image: None, disk_size_mib: None }).unwrap();
        let id = sb.id().to_string();
        mgr.start(&id).await.unwrap();
        let one = |id: String, mgr: Sandboxes| async move {
            let t = Instant::now();
            let (client, _) = mgr.agent(&id).await.unwrap();
            let out = client.exec(ExecRequest::new(["true"])).await.unwrap().output().await.unwrap();
            assert!(out.status.success());
            t.elapsed().as_secs_f64() * 1000.0
        };
        let mut serial = Vec::new();
        for _ in 0..calls {
            serial.push(one(id.clone(), mgr.clone()).await);
        }
        println!(
            "(c) exec -- true, new connection each, 1 client:   median {:.2} ms, p99 {:.2} ms, n={calls}",
            median(&mut serial),
            percentile(&mut serial, 99.0)
        );
        let per_client = calls.div_ceil(CLIENTS);
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (id, mgr) = (id.clone(), mgr.clone());
                tokio::spawn(async move {
                    let mut v = Vec::new();
                    for _ in 0..per_client {
                        v.push(one(id.clone(), mgr.clone()).await);
                    }
                    v
                })
            })
            .collect();
        let wall = Instant::now();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let wall = wall.elapsed();
        println!(
            "(c) exec -- true, {CLIENTS} clients at once:            median {:.2} ms, p99 {:.2} ms, n={}, {:.0} execs/s",
            median(&mut all),
            percentile(&mut all, 99.0),
            all.len(),
            all.len() as f64 / wall.as_secs_f64()
        );
        let mut cli_times = Vec::new();
        for _ in 0..20 {
            cli_times.push(time(|| {
                cli(&["exec", &id, "--", "true"]);
            }) * 1000.0);
        }
        println!("(c) `nestbox exec SB -- true` as a process:        median {:.2} ms, n=20", median(&mut cli_times));
        mgr.remove(&id, true).await.unwrap();
    });
}

fn verdict(same: bool) -> &'static str {
    if same { "no leak" } else { "CHANGED" }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Bytes of regular files under `root`, not following links (the shared caches are links in
/// tests, real directories here and counted once).
fn disk_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(root) else { return 0 };
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        if meta.is_dir() {
            total += disk_bytes(&entry.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}
