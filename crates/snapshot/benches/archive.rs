//! Export speed and size against GNU tar + zstd: `cargo bench -p nestbox-snapshot --bench archive`.
//!
//! Builds a snapshot-like directory (a 512 MiB sparse memory file holding 64 MiB of compressible
//! data in 256 scattered regions, a 16 MiB state file), then times `export` to a file against
//! `tar --sparse -cf - -C DIR . | zstd -1 -q -o FILE` on the same files, best of 3 runs each after
//! a warm-up, and prints throughput (logical bytes per second), archive sizes and the ratios
//! ours/theirs (target: time ≤ 1, size ≤ 1). Also times `import` against `zstd -dc | tar -xSf`.
//! Skipped, saying so, where the `zstd` or `tar` command is missing.

use std::fs::{self, File};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nestbox_snapshot::{
    CpuInfo, FileEntry, FileKind, ImportLimits, MANIFEST_VERSION, Manifest, MemoryLayout, export, import,
};

const MIB: u64 = 1 << 20;
const MEMORY: u64 = 512 * MIB;
const REGIONS: u64 = 256;
const REGION: u64 = 256 * 1024; // 256 regions of 256 KiB = 64 MiB
const STATE: u64 = 16 * MIB;
const RUNS: usize = 3;

fn main() {
    for tool in ["tar", "zstd"] {
        if !Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success()) {
            println!("archive bench skipped: the `{tool}` command is not installed (Debian: apt-get install {tool})");
            return;
        }
    }
    let work = tempfile::tempdir().expect("temporary directory");
    let snap = work.path().join("snap");
    fs::create_dir(&snap).unwrap();
    let logical = build_snapshot(&snap);

    let ours = work.path().join("ours.tar.zst");
    let theirs = work.path().join("theirs.tar.zst");
    let export_ours = || {
        let out = File::create(&ours).unwrap();
        export(&snap, &out, None).unwrap();
        out.sync_all().unwrap();
    };
    let export_theirs = || {
        let _ = fs::remove_file(&theirs);
        let cmd = format!("tar --sparse -cf - -C {} . | zstd -1 -q -o {}", snap.display(), theirs.display());
        sh(&cmd);
        File::open(&theirs).unwrap().sync_all().unwrap();
    };
    let t_ours = best_of(export_ours);
    let t_theirs = best_of(export_theirs);
    let s_ours = fs::metadata(&ours).unwrap().len();
    let s_theirs = fs::metadata(&theirs).unwrap().len();

    let imported = work.path().join("imported");
    let extracted = work.path().join("extracted");
    fs::create_dir(&imported).unwrap();
    fs::create_dir(&extracted).unwrap();
    let import_ours = || {
        let _ = fs::remove_dir_all(imported.join("0123456789abcdef"));
        import(File::open(&ours).unwrap(), &imported, &ImportLimits::default()).unwrap();
    };
    let import_theirs = || {
        let _ = fs::remove_dir_all(&extracted);
        fs::create_dir(&extracted).unwrap();
        sh(&format!(
            "zstd -dcq {} | tar -xSf - -C {} && sync -f {}",
            theirs.display(),
            extracted.display(),
            extracted.display()
        ));
    };
    let i_ours = best_of(import_ours);
    let manifest = Manifest::read(&snap).unwrap();
    let verify = best_of(|| manifest.verify(&snap).unwrap());
    let i_theirs = best_of(import_theirs);

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "snapshot: {} MiB logical ({} MiB memory with {} MiB of data in {REGIONS} regions, {} MiB state), {cpus} CPUs",
        logical / MIB,
        MEMORY / MIB,
        REGIONS * REGION / MIB,
        STATE / MIB
    );
    println!(
        "export  ours  : {:>8.1} ms {:>8.0} MiB/s  archive {:>10} bytes",
        ms(t_ours),
        rate(logical, t_ours),
        s_ours
    );
    println!(
        "export  theirs: {:>8.1} ms {:>8.0} MiB/s  archive {:>10} bytes  (tar --sparse | zstd -1)",
        ms(t_theirs),
        rate(logical, t_theirs),
        s_theirs
    );
    println!("export  ours/theirs: time {:.2}, size {:.3}", ratio(t_ours, t_theirs), s_ours as f64 / s_theirs as f64);
    println!(
        "import  ours  : {:>8.1} ms {:>8.0} MiB/s  (checks sha256 of every file)",
        ms(i_ours),
        rate(logical, i_ours)
    );
    println!(
        "import  theirs: {:>8.1} ms {:>8.0} MiB/s  (zstd -dc | tar -xS, no checks)",
        ms(i_theirs),
        rate(logical, i_theirs)
    );
    println!("import  ours/theirs: time {:.2}", ratio(i_ours, i_theirs));
    println!(
        "verify        : {:>8.1} ms {:>8.0} MiB/s  (Manifest::verify: the sha256 part of import)",
        ms(verify),
        rate(logical, verify)
    );
}

/// Writes the files and the manifest; returns the logical size of the listed files.
fn build_snapshot(dir: &Path) -> u64 {
    let mem = File::create(dir.join("memory.bin")).unwrap();
    mem.set_len(MEMORY).unwrap();
    let stride = MEMORY / REGIONS;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for i in 0..REGIONS {
        // Somewhere in its stride, page-aligned.
        let jitter = (rng.next() % ((stride - REGION) / 4096)) * 4096;
        mem.write_all_at(&guest_like(&mut rng, REGION as usize), i * stride + jitter).unwrap();
    }
    fs::write(dir.join("state.bin"), guest_like(&mut rng, STATE as usize)).unwrap();
    let files = vec![
        FileEntry::compute(dir, "memory.bin", FileKind::Memory).unwrap(),
        FileEntry::compute(dir, "state.bin", FileKind::State).unwrap(),
    ];
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        id: "0123456789abcdef".into(),
        name: None,
        created_at_ms: 1_760_000_000_000,
        backend: "qemu".into(),
        backend_version: "7.2.19".into(),
        accel: "kvm".into(),
        cpu: CpuInfo { model: "bench".into(), flags: vec![] },
        kernel: None,
        page_size: 4096,
        memory: MemoryLayout { size_bytes: MEMORY, file: "memory.bin".into() },
        sandbox: serde_json::Value::Null,
        files,
    };
    manifest.write(dir).unwrap();
    manifest.total_size()
}

/// Page-sized pieces like guest memory's: a quarter random, half low-entropy text, a quarter a
/// repeated 64-byte structure. zstd -1 shrinks it to about half.
fn guest_like(rng: &mut XorShift, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    for page in out.chunks_mut(4096) {
        match rng.next() % 4 {
            0 => page.iter_mut().for_each(|b| *b = rng.next() as u8),
            1 => {
                let pattern: Vec<u8> = (0..64).map(|_| rng.next() as u8).collect();
                page.iter_mut().zip(pattern.iter().cycle()).for_each(|(b, p)| *b = *p);
            }
            _ => page.iter_mut().for_each(|b| *b = b'a' + (rng.next() % 16) as u8),
        }
    }
    out
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn sh(cmd: &str) {
    let status = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(status.success(), "{cmd}: {status}");
}

/// The fastest of [`RUNS`] runs, after one to warm the page cache.
fn best_of(mut f: impl FnMut()) -> Duration {
    f();
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rate(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
