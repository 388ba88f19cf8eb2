//! 4 KiB faults per second: the page server filling anonymous guest memory from a memory file
//! (one thread touching every page of the registered region once), against the kernel faulting
//! the same file, already in the page cache, through a `MAP_PRIVATE` mapping: read (the kernel maps
//! page-cache pages, copying nothing, several per fault) and write (copy-on-write: a new page and
//! a copy per fault, the work a page server always does). Each figure is the best of three runs.
//! `NESTBOX_PAGESERVER_BENCH_MIB` sets the file size (default 256).
//!
//! `cargo bench -p nestbox-pageserver --bench pageserver`

use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::ptr::NonNull;
use std::thread;
use std::time::{Duration, Instant};

use libc::c_void;
use nestbox_pageserver::{
    DEFAULT_FAULT_AROUND_BYTES, GuestRegion, PageServer, ServeEnd, StopSignal, accept_handshake, send_handshake,
};
use nix::sys::mman::{self, MapFlags, ProtFlags};
use userfaultfd::{FeatureFlags, UffdBuilder};

const PAGE: usize = 4096;
const RUNS: usize = 3;

fn main() {
    let mib: usize = std::env::var("NESTBOX_PAGESERVER_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let len = mib << 20;
    let pages = len / PAGE;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("memory");
    write_file(&path, len);

    let kernel_read = best(|| kernel_faults(&path, len, Touch::Read));
    let kernel_write = best(|| kernel_faults(&path, len, Touch::Write));
    let served = best(|| page_server_faults(dir.path(), &path, len, DEFAULT_FAULT_AROUND_BYTES));
    let single = best(|| page_server_faults(dir.path(), &path, len, 0));
    let rate = |d: Duration| pages as f64 / d.as_secs_f64();
    let line = |what: &str, d: Duration| println!("{what:<52} {:>11.0} pages/s  {:>8.1} ms", rate(d), ms(d));
    println!("{mib} MiB, {pages} pages of 4 KiB, each touched once by one thread; best of {RUNS}");
    line("kernel, MAP_PRIVATE file in page cache, read", kernel_read);
    line("kernel, MAP_PRIVATE file in page cache, write (CoW)", kernel_write);
    line(&format!("page server, fault-around {} KiB (default)", DEFAULT_FAULT_AROUND_BYTES / 1024), served);
    line("page server, one page per fault", single);
    let ratio = |what: &str, a: Duration, b: Duration| println!("ratio {what:<46} {:>11.2}", rate(a) / rate(b));
    ratio("page server (default) / kernel read", served, kernel_read);
    ratio("page server (default) / kernel write (CoW)", served, kernel_write);
    ratio("page server (one page per fault) / kernel read", single, kernel_read);
    ratio("page server (one page per fault) / kernel CoW", single, kernel_write);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn best(mut run: impl FnMut() -> Duration) -> Duration {
    (0..RUNS).map(|_| run()).min().expect("RUNS > 0")
}

/// A file of `len` bytes with no page alike, then read once so it is in the page cache.
fn write_file(path: &Path, len: usize) {
    let mut f = File::create(path).expect("create memory file");
    let mut chunk = vec![0u8; 1 << 20];
    for (i, block) in (0..len).step_by(chunk.len()).enumerate() {
        for (w, word) in chunk.chunks_exact_mut(8).enumerate() {
            word.copy_from_slice(&(((i as u64) << 32) | w as u64 | 1).to_le_bytes());
        }
        f.write_all(&chunk[..chunk.len().min(len - block)]).expect("write memory file");
    }
    f.sync_all().expect("sync memory file");
    let mut sink = vec![0u8; 1 << 20];
    let mut f = File::open(path).expect("open memory file");
    while f.read(&mut sink).expect("read memory file") > 0 {}
}

/// Reads one byte of every page at `base`, returning how long it took.
fn touch_every_page(base: *const u8, len: usize) -> Duration {
    let started = Instant::now();
    let mut sum = 0u64;
    for offset in (0..len).step_by(PAGE) {
        // SAFETY: `offset` is inside the `len`-byte mapping at `base`, alive for this call.
        sum = sum.wrapping_add(u64::from(unsafe { std::ptr::read_volatile(base.add(offset)) }));
    }
    black_box(sum);
    started.elapsed()
}

#[derive(Clone, Copy)]
enum Touch {
    Read,
    Write,
}

fn kernel_faults(path: &Path, len: usize, touch: Touch) -> Duration {
    let file = File::open(path).expect("open memory file");
    let prot = match touch {
        Touch::Read => ProtFlags::PROT_READ,
        Touch::Write => ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
    };
    // SAFETY: a fresh private mapping of the file at an address of the kernel's choosing; writes
    // to it stay in this process.
    let ptr =
        unsafe { mman::mmap(None, NonZeroUsize::new(len).unwrap(), prot, MapFlags::MAP_PRIVATE, file.as_fd(), 0) }
            .expect("mmap memory file");
    let took = match touch {
        Touch::Read => touch_every_page(ptr.as_ptr().cast(), len),
        Touch::Write => {
            let base = ptr.as_ptr().cast::<u8>();
            let started = Instant::now();
            for offset in (0..len).step_by(PAGE) {
                // SAFETY: `offset` is inside the writable private mapping, alive until the munmap.
                unsafe { std::ptr::write_volatile(base.add(offset), 1) };
            }
            started.elapsed()
        }
    };
    // SAFETY: exactly what mmap returned, no longer used.
    unsafe { mman::munmap(ptr, len) }.expect("munmap");
    took
}

fn page_server_faults(dir: &Path, path: &Path, len: usize, fault_around: usize) -> Duration {
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing.
    let mem: NonNull<c_void> = unsafe {
        mman::mmap_anonymous(
            None,
            NonZeroUsize::new(len).unwrap(),
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
        )
    }
    .expect("mmap guest memory");
    let uffd = UffdBuilder::new()
        .close_on_exec(true)
        .non_blocking(true)
        .require_features(FeatureFlags::EVENT_REMOVE)
        .create()
        .expect("userfaultfd");
    uffd.register(mem.as_ptr(), len).expect("UFFDIO_REGISTER");
    let socket = dir.join("uffd.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).expect("bind");
    let region = GuestRegion { base_host_virt_addr: mem.as_ptr() as u64, size: len, offset: 0, page_size: PAGE };
    let _conn = send_handshake(&socket, &[region], uffd.as_fd()).expect("send handshake");
    let handshake = accept_handshake(&listener).expect("accept handshake");
    let file = File::open(path).expect("open memory file");
    let mut server =
        PageServer::new(handshake.uffd, handshake.regions, &file).expect("page server").with_fault_around(fault_around);
    let stop = StopSignal::new().expect("stop signal");
    let (took, stats) = thread::scope(|s| {
        let serving = s.spawn(|| server.run(&stop));
        let took = touch_every_page(mem.as_ptr().cast(), len);
        stop.stop();
        (took, serving.join().expect("server thread").expect("serve"))
    });
    assert_eq!(stats.end, ServeEnd::Stopped);
    assert_eq!(stats.pages_copied as usize, len / PAGE, "{stats:?}");
    // SAFETY: the last page is filled and inside the mapping.
    let last = unsafe { std::slice::from_raw_parts(mem.as_ptr().cast::<u8>().add(len - PAGE), PAGE) };
    let mut want = [0u8; PAGE];
    let mut f = File::open(path).expect("open memory file");
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start((len - PAGE) as u64)).expect("seek");
    f.read_exact(&mut want).expect("read last page");
    assert_eq!(last, &want[..], "the last page differs from the file");
    drop(uffd);
    // SAFETY: exactly what mmap returned, no longer used.
    unsafe { mman::munmap(mem, len) }.expect("munmap");
    took
}
