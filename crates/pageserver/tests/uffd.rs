//! The page server against a real userfaultfd, with this test process playing Firecracker: it
//! maps anonymous guest memory, registers it (missing-page mode, remove events on), sends the
//! regions and the userfaultfd over the socket in one `sendmsg`, and touches the memory.

use std::fs::File;
use std::io::{IoSlice, Seek, SeekFrom, Write};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr::NonNull;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use libc::c_void;
use nestbox_pageserver::{
    GuestRegion, Handshake, PageServer, PageServerError, ServeEnd, ServeStats, StopSignal, accept_handshake,
    send_handshake, serve, serve_socket_until,
};
use nix::sys::mman::{self, MapFlags, MmapAdvise, ProtFlags};
use nix::sys::socket::{self, ControlMessage, MsgFlags};
use userfaultfd::{FeatureFlags, Uffd, UffdBuilder};

const PAGE: usize = 4096;
const CHILD_SOCKET: &str = "NESTBOX_PAGESERVER_TEST_SOCKET";
const CHILD_FILE: &str = "NESTBOX_PAGESERVER_TEST_FILE";

/// Anonymous read-write memory standing in for guest memory, unmapped on drop.
struct GuestMemory {
    ptr: NonNull<c_void>,
    len: usize,
}

// SAFETY: plain anonymous memory; the tests share it between threads only to read it.
unsafe impl Send for GuestMemory {}
// SAFETY: as above: concurrent reads only.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    fn new(len: usize) -> Self {
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing.
        let ptr = unsafe {
            mman::mmap_anonymous(
                None,
                NonZeroUsize::new(len).unwrap(),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )
        }
        .expect("mmap guest memory");
        GuestMemory { ptr, len }
    }

    fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Page `page`'s bytes, read through the mapping (faulting them in through the page server).
    fn page(&self, page: usize) -> &[u8] {
        assert!((page + 1) * PAGE <= self.len);
        // SAFETY: the page lies inside the mapping, which lives as long as `self`; reading it only
        // faults it in.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>().add(page * PAGE), PAGE) }
    }

    fn drop_pages(&self, pages: Range<usize>) {
        // SAFETY: the range lies inside the mapping and no reference into it is alive here;
        // MADV_DONTNEED on private anonymous memory only makes it read back from the fault path.
        unsafe {
            mman::madvise(
                NonNull::new(self.ptr.as_ptr().cast::<u8>().add(pages.start * PAGE).cast()).unwrap(),
                pages.len() * PAGE,
                MmapAdvise::MADV_DONTNEED,
            )
        }
        .expect("madvise");
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: exactly what mmap returned; no reference into it outlives `self`.
        let _ = unsafe { mman::munmap(self.ptr, self.len) };
    }
}

/// A userfaultfd as Firecracker creates it (non-blocking, close-on-exec, remove events on).
fn vm_uffd() -> Uffd {
    UffdBuilder::new()
        .close_on_exec(true)
        .non_blocking(true)
        .user_mode_only(true)
        .require_features(FeatureFlags::EVENT_REMOVE)
        .create()
        .expect("userfaultfd(2) (needs root or vm.unprivileged_userfaultfd=1)")
}

fn register(uffd: &Uffd, mem: &GuestMemory) {
    uffd.register(mem.ptr.as_ptr(), mem.len).expect("UFFDIO_REGISTER");
}

/// Page `page` of the memory file: every 8-byte word distinct (page number, word number).
fn page_pattern(page: usize) -> Vec<u8> {
    (0..PAGE / 8).flat_map(|w| ((page as u64) << 32 | w as u64 | 0x8000_0000).to_le_bytes()).collect()
}

/// A memory file of `pages` pages, the pattern everywhere but the `holes` (`[start, end)` page
/// ranges), which are never written.
/// Returns what each page must read as.
fn memory_file(path: &Path, pages: usize, holes: &[(usize, usize)]) -> Vec<Vec<u8>> {
    let mut f = File::create(path).unwrap();
    let mut expected = Vec::with_capacity(pages);
    for p in 0..pages {
        if holes.iter().any(|&(start, end)| (start..end).contains(&p)) {
            expected.push(vec![0; PAGE]);
        } else {
            f.seek(SeekFrom::Start((p * PAGE) as u64)).unwrap();
            f.write_all(&page_pattern(p)).unwrap();
            expected.push(page_pattern(p));
        }
    }
    f.set_len((pages * PAGE) as u64).unwrap();
    expected
}

/// Panics at the first of `pages` of `mem` that differs from `expected` (indexed by file page;
/// guest page 0 is file page `file_first_page`).
fn check_pages(mem: &GuestMemory, file_first_page: usize, pages: Range<usize>, expected: &[Vec<u8>]) {
    for p in pages {
        let got = mem.page(p);
        let want = &expected[file_first_page + p];
        if got != &want[..] {
            let at = got.iter().zip(want.iter()).position(|(a, b)| a != b).unwrap();
            panic!(
                "guest page {p} (file page {}) differs at byte {at}: {:#x} != {:#x}",
                file_first_page + p,
                got[at],
                want[at]
            );
        }
    }
}

/// Binds a socket in `dir` and serves `file` on a thread: accept, handshake, fault loop.
fn start_server(
    dir: &Path,
    file: &Path,
) -> (PathBuf, StopSignal, thread::JoinHandle<Result<ServeStats, PageServerError>>) {
    let socket = dir.join("uffd.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let memory_file = File::open(file).unwrap();
    let stop = StopSignal::new().unwrap();
    let stopper = stop.clone();
    let server = thread::spawn(move || {
        let handshake = accept_handshake(&listener)?;
        let regions = handshake.regions.clone();
        let spare = handshake.uffd.as_fd().try_clone_to_owned().unwrap();
        let result = serve(handshake, &memory_file, &stopper);
        if result.is_err() {
            // Let the touching threads go on (with zeros, so they fail) instead of waiting forever:
            // unregistering wakes them, and works from here because this is the VM's process.
            // SAFETY: `spare` is our own duplicate of the userfaultfd; `Uffd` closes it.
            let uffd = unsafe { Uffd::from_raw_fd(spare.into_raw_fd()) };
            for r in regions {
                let _ = uffd.unregister(r.base_host_virt_addr as *mut c_void, r.size);
            }
        }
        result
    });
    (socket, stop, server)
}

fn region(mem: &GuestMemory, offset: u64) -> GuestRegion {
    GuestRegion { base_host_virt_addr: mem.addr(), size: mem.len, offset, page_size: PAGE }
}

#[test]
fn test_every_page_reads_as_the_file_and_holes_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("memory");
    // 8 MiB: region A is file pages 0..1280, region B 1280..2048; a hole inside A, and B's tail a
    // hole through set_len.
    let holes = [(1000, 1300), (1900, 2048)];
    let expected = memory_file(&file, 2048, &holes);
    let (mem_a, mem_b) = (GuestMemory::new(1280 * PAGE), GuestMemory::new(768 * PAGE));
    let uffd = vm_uffd();
    register(&uffd, &mem_a);
    register(&uffd, &mem_b);
    let (socket, stop, server) = start_server(dir.path(), &file);
    let regions = [region(&mem_b, 1280 * PAGE as u64), region(&mem_a, 0)];
    let _conn = send_handshake(&socket, &regions, uffd.as_fd()).unwrap();

    // Four threads, interleaved pages, so faults on neighbouring pages race.
    thread::scope(|s| {
        for t in 0..4 {
            let (mem_a, mem_b, expected) = (&mem_a, &mem_b, &expected);
            s.spawn(move || {
                for p in (t..1280).step_by(4) {
                    check_pages(mem_a, 0, p..p + 1, expected);
                }
                for p in (t..768).step_by(4).rev() {
                    check_pages(mem_b, 1280, p..p + 1, expected);
                }
            });
        }
    });
    check_pages(&mem_a, 0, 0..1280, &expected);
    check_pages(&mem_b, 1280, 0..768, &expected);

    stop.stop();
    let stats = server.join().unwrap().unwrap();
    assert_eq!(stats.end, ServeEnd::Stopped);
    let hole_pages = 300 + 148;
    assert_eq!(stats.pages_zeroed, hole_pages, "{stats:?}");
    assert_eq!(stats.pages_copied, 2048 - hole_pages, "{stats:?}");
    assert!(stats.faults >= 2048 / 16 && stats.faults < 2048, "{stats:?}");
    assert!(stats.pages_ahead > 0, "{stats:?}");
}

#[test]
fn test_without_fault_around_each_page_is_its_own_fault() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("memory");
    let expected = memory_file(&file, 64, &[(10, 20)]);
    let mem = GuestMemory::new(64 * PAGE);
    let uffd = vm_uffd();
    register(&uffd, &mem);
    let listener = UnixListener::bind(dir.path().join("uffd.sock")).unwrap();
    let _conn = send_handshake(&dir.path().join("uffd.sock"), &[region(&mem, 0)], uffd.as_fd()).unwrap();
    let handshake = accept_handshake(&listener).unwrap();
    let memory_file = File::open(&file).unwrap();
    let mut server = PageServer::new(handshake.uffd, handshake.regions, &memory_file).unwrap().with_fault_around(0);
    let stop = StopSignal::new().unwrap();
    let stats = thread::scope(|s| {
        let serving = s.spawn(|| server.run(&stop));
        check_pages(&mem, 0, 0..64, &expected);
        stop.stop();
        serving.join().unwrap().unwrap()
    });
    assert_eq!((stats.faults, stats.pages_copied, stats.pages_zeroed, stats.pages_ahead), (64, 54, 10, 0));
}

#[test]
fn test_removed_memory_reads_as_zeros_after_a_remove_event() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("memory");
    let expected = memory_file(&file, 256, &[]);
    let mem = GuestMemory::new(256 * PAGE);
    let uffd = vm_uffd();
    register(&uffd, &mem);
    let (socket, stop, server) = start_server(dir.path(), &file);
    let _conn = send_handshake(&socket, &[region(&mem, 0)], uffd.as_fd()).unwrap();

    check_pages(&mem, 0, 0..256, &expected);
    // Balloon inflation: the VM drops pages 64..128. madvise returns once the server has read the
    // remove event.
    mem.drop_pages(64..128);
    let mut after = expected.clone();
    for page in &mut after[64..128] {
        page.fill(0);
    }
    check_pages(&mem, 0, 0..256, &after);

    stop.stop();
    let stats = server.join().unwrap().unwrap();
    assert_eq!(stats.remove_events, 1, "{stats:?}");
    assert_eq!((stats.pages_copied, stats.pages_zeroed), (256, 64), "{stats:?}");
}

#[test]
fn test_a_fault_outside_the_regions_is_an_error_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("memory");
    memory_file(&file, 2, &[]);
    let mem = GuestMemory::new(2 * PAGE);
    let uffd = vm_uffd();
    register(&uffd, &mem);
    let (socket, _stop, server) = start_server(dir.path(), &file);
    // Only the first page is described.
    let described = GuestRegion { size: PAGE, ..region(&mem, 0) };
    let _conn = send_handshake(&socket, &[described], uffd.as_fd()).unwrap();
    let toucher = thread::scope(|s| {
        let toucher = s.spawn(|| mem.page(1)[0]);
        let err = server.join().unwrap().unwrap_err();
        assert!(
            matches!(err, PageServerError::FaultOutsideRegions { addr } if addr == mem.addr() + PAGE as u64),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("{:#x}", mem.addr() + PAGE as u64)), "{err}");
        // With every copy of the userfaultfd closed the kernel lets the waiting thread go on with
        // plain anonymous memory.
        drop(uffd);
        toucher.join().unwrap()
    });
    assert_eq!(toucher, 0);
}

#[test]
fn test_stop_ends_a_server_waiting_for_the_vm_and_removes_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("memory");
    memory_file(&file, 1, &[]);
    let socket = dir.path().join("uffd.sock");
    let stop = StopSignal::new().unwrap();
    let server = {
        let (socket, file, stop) = (socket.clone(), file.clone(), stop.clone());
        thread::spawn(move || serve_socket_until(&socket, &file, &stop))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the server never bound {}", socket.display());
        thread::sleep(Duration::from_millis(5));
    }
    stop.stop();
    let stats = server.join().unwrap().unwrap();
    assert_eq!(stats.end, ServeEnd::Stopped);
    assert!(!socket.exists());
    // A VM pointed at a page server that has gone gets a clear error, not a hang.
    let mem = GuestMemory::new(PAGE);
    let err = send_handshake(&socket, &[region(&mem, 0)], vm_uffd().as_fd()).unwrap_err();
    match &err {
        PageServerError::Connect { path, source } => {
            assert_eq!(path, &socket);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Connect, got {other}"),
    }
    assert!(err.to_string().contains("uffd.sock"), "{err}");
}

#[test]
fn test_a_dead_listener_refuses_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("uffd.sock");
    drop(UnixListener::bind(&socket).unwrap());
    let mem = GuestMemory::new(PAGE);
    let err = send_handshake(&socket, &[region(&mem, 0)], vm_uffd().as_fd()).unwrap_err();
    assert!(
        matches!(&err, PageServerError::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
        "{err}"
    );
}

/// Connects to a fresh listener, lets `send` write on the connection, then reads the handshake.
fn handshake_of(send: impl FnOnce(UnixStream) + Send) -> Result<Handshake, PageServerError> {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("uffd.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let client = UnixStream::connect(&socket).unwrap();
    thread::scope(|s| {
        let sender = s.spawn(move || send(client));
        let result = accept_handshake(&listener);
        sender.join().unwrap();
        result
    })
}

fn send_raw(stream: &UnixStream, body: &[u8], fds: &[i32]) {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    socket::sendmsg::<()>(stream.as_raw_fd(), &[IoSlice::new(body)], cmsgs, MsgFlags::empty(), None).unwrap();
}

fn good_body(mem: &GuestMemory) -> Vec<u8> {
    serde_json::to_vec(&[region(mem, 0)]).unwrap()
}

#[test]
fn test_a_good_handshake_names_the_peer() {
    let mem = GuestMemory::new(2 * PAGE);
    let uffd = vm_uffd();
    let body = good_body(&mem);
    let h = handshake_of(|s| send_raw(&s, &body, &[uffd.as_raw_fd()])).unwrap();
    assert_eq!(h.regions, vec![region(&mem, 0)]);
    assert_eq!(h.peer_pid, Some(std::process::id() as i32));
    assert!(h.peer_pidfd.is_some());
}

#[test]
fn test_a_body_in_two_parts_is_read_whole() {
    let mem = GuestMemory::new(2 * PAGE);
    let uffd = vm_uffd();
    let body = good_body(&mem);
    let (first, rest) = body.split_at(10);
    let h = handshake_of(|s| {
        send_raw(&s, first, &[uffd.as_raw_fd()]);
        thread::sleep(Duration::from_millis(50));
        send_raw(&s, rest, &[]);
    })
    .unwrap();
    assert_eq!(h.regions[0].size, 2 * PAGE);
}

#[test]
fn test_malformed_handshakes_get_their_own_errors() {
    let mem = GuestMemory::new(2 * PAGE);
    let uffd = vm_uffd();
    let fd = uffd.as_raw_fd();

    let err = handshake_of(|s| send_raw(&s, br#"[{"base_host_virt_addr": 4096, "size": }]"#, &[fd])).unwrap_err();
    assert!(matches!(err, PageServerError::BadJson { .. }), "{err}");
    assert!(err.to_string().contains(r#""size": }]"#), "{err}");

    let err = handshake_of(|s| send_raw(&s, br#"{"regions": []}"#, &[fd])).unwrap_err();
    assert!(matches!(err, PageServerError::BadJson { .. }), "{err}");

    let body = good_body(&mem);
    let err = handshake_of(|s| send_raw(&s, &body, &[])).unwrap_err();
    assert!(matches!(err, PageServerError::NoUffd { .. }), "{err}");
    assert!(err.to_string().contains("base_host_virt_addr"), "{err}");

    let err = handshake_of(|s| send_raw(&s, &body, &[fd, fd])).unwrap_err();
    assert!(matches!(err, PageServerError::ExtraFds { count: 2 }), "{err}");

    let not_uffd = tempfile::NamedTempFile::new().unwrap();
    let err = handshake_of(|s| send_raw(&s, &body, &[not_uffd.as_file().as_raw_fd()])).unwrap_err();
    match &err {
        PageServerError::NotAUserfaultfd { target } => assert_eq!(Path::new(target), not_uffd.path()),
        other => panic!("expected NotAUserfaultfd, got {other}"),
    }

    let zero = format!(r#"[{{"base_host_virt_addr":{},"size":0,"offset":0,"page_size":4096}}]"#, mem.addr());
    let err = handshake_of(|s| send_raw(&s, zero.as_bytes(), &[fd])).unwrap_err();
    assert!(matches!(err, PageServerError::ZeroSizeRegion { index: 0, .. }), "{err}");
    assert!(err.to_string().contains(&format!("region 0 (at {:#x}) has size 0", mem.addr())), "{err}");

    let err = handshake_of(|s| send_raw(&s, b"[]", &[fd])).unwrap_err();
    assert!(matches!(err, PageServerError::NoRegions), "{err}");

    let err = handshake_of(drop).unwrap_err();
    assert!(matches!(err, PageServerError::HandshakeClosed { received: 0 }), "{err}");

    let err = handshake_of(|s| send_raw(&s, &body[..20], &[fd])).unwrap_err();
    assert!(matches!(err, PageServerError::HandshakeClosed { received: 20 }), "{err}");
}

#[test]
fn test_a_region_past_the_end_of_the_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("memory");
    memory_file(&file, 4, &[]);
    let mem = GuestMemory::new(4 * PAGE);
    let err = PageServer::new(vm_uffd(), vec![region(&mem, 2 * PAGE as u64)], &File::open(&file).unwrap()).unwrap_err();
    assert!(matches!(err, PageServerError::RegionBeyondFile { index: 0, end: 0x6000, file_len: 0x4000 }), "{err}");
}

#[test]
fn test_serve_returns_when_the_vm_process_exits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("memory");
    memory_file(&file, 512, &[(100, 200)]);
    let socket = dir.path().join("uffd.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["fake_vm_process", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_SOCKET, &socket)
        .env(CHILD_FILE, &file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let handshake = accept_handshake(&listener).unwrap();
    assert_eq!(handshake.peer_pid, Some(child.id() as i32));
    assert!(handshake.peer_pidfd.is_some());

    // If the end of the VM went unnoticed the watchdog stops the server, and the test fails.
    let stop = StopSignal::new().unwrap();
    let (done, watched) = mpsc::channel::<()>();
    let watchdog = {
        let stop = stop.clone();
        thread::spawn(move || {
            if watched.recv_timeout(Duration::from_secs(60)).is_err() {
                stop.stop();
            }
        })
    };
    let stats = serve(handshake, &File::open(&file).unwrap(), &stop).unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "the fake VM saw wrong memory: {status}");
    assert_eq!(stats.end, ServeEnd::VmExited, "{stats:?}");
    assert_eq!((stats.pages_copied, stats.pages_zeroed), (412, 100), "{stats:?}");
}

/// The VM process of `test_serve_returns_when_the_vm_process_exits`: that test runs this binary
/// again with this test alone and the socket and file in the environment.
#[test]
#[ignore = "the fake VM of test_serve_returns_when_the_vm_process_exits, which starts it"]
fn fake_vm_process() {
    let (Some(socket), Some(file)) = (std::env::var_os(CHILD_SOCKET), std::env::var_os(CHILD_FILE)) else {
        eprintln!("fake_vm_process: run only by test_serve_returns_when_the_vm_process_exits");
        return;
    };
    let expected: Vec<Vec<u8>> = std::fs::read(&file).unwrap().chunks(PAGE).map(<[u8]>::to_vec).collect();
    let mem = GuestMemory::new(expected.len() * PAGE);
    let uffd = vm_uffd();
    register(&uffd, &mem);
    let _conn = send_handshake(Path::new(&socket), &[region(&mem, 0)], uffd.as_fd()).unwrap();
    check_pages(&mem, 0, 0..expected.len(), &expected);
}
