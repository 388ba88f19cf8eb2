//! The fault loop: reads userfaultfd events and answers each page fault from the memory file,
//! until the VM exits or it is told to stop.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libc::c_void;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use userfaultfd::{Event, EventBuffer, Uffd};

use crate::PageServerError;
use crate::handshake::{GuestRegion, Handshake, host_page_size, read_handshake, validate_regions};
use crate::mapping::{Bitmap, Mapping, hole_pages};

/// How much memory one fault fills by default: the faulted page and the pages after it in the
/// same region, up to 64 KiB, that were never filled and are alike (all file data, or all zero).
/// The same figure as the kernel's `fault_around_bytes` for file mappings.
pub const DEFAULT_FAULT_AROUND_BYTES: usize = 64 * 1024;
/// Events read per `read(2)`.
const EVENT_BATCH: usize = 64;
/// How long to wait before retrying faults the kernel refused with `EAGAIN` when no event comes.
const RETRY_AFTER_MS: u8 = 1;

/// Ends [`PageServer::run`] from another thread. Once stopped it stays stopped: every loop that
/// waits on it returns.
#[derive(Debug, Clone)]
pub struct StopSignal(Arc<EventFd>);

impl StopSignal {
    /// A signal not yet given.
    pub fn new() -> Result<Self, PageServerError> {
        let fd =
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map_err(PageServerError::StopSignal)?;
        Ok(StopSignal(Arc::new(fd)))
    }

    /// Gives the signal.
    pub fn stop(&self) {
        // Only a counter at u64::MAX - 1 refuses a write, and then it is signalled already.
        let _ = self.0.write(1);
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Why the fault loop returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeEnd {
    /// The VM process exited (its pidfd became readable, or the kernel said its memory is gone).
    VmExited,
    /// The [`StopSignal`] was given.
    Stopped,
    /// Reading the userfaultfd returned end of file.
    UffdClosed,
}

/// What a fault loop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeStats {
    /// Page-fault events read.
    pub faults: u64,
    /// Pages filled from the memory file.
    pub pages_copied: u64,
    /// Pages filled with zeros (file holes, removed memory).
    pub pages_zeroed: u64,
    /// Of those, pages filled ahead of a fault (fault-around) rather than the faulted page itself.
    pub pages_ahead: u64,
    /// Faults whose page was already there when answered (another fault filled it): only woken.
    pub already_present: u64,
    /// Answers the kernel refused with `EAGAIN` while a remove event was unread, and retried.
    pub retried: u64,
    /// `UFFD_EVENT_REMOVE` events read.
    pub remove_events: u64,
    /// Why the loop returned.
    pub end: ServeEnd,
}

impl ServeStats {
    /// All counts zero.
    fn nothing(end: ServeEnd) -> Self {
        ServeStats {
            faults: 0,
            pages_copied: 0,
            pages_zeroed: 0,
            pages_ahead: 0,
            already_present: 0,
            retried: 0,
            remove_events: 0,
            end,
        }
    }
}

/// One region and what is known of its pages.
#[derive(Debug)]
struct RegionState {
    region: GuestRegion,
    pages: usize,
    /// Pages that are a hole in the memory file.
    holes: Bitmap,
    /// Pages the VM dropped (remove events): zeros from now on.
    removed: Bitmap,
    /// Pages this server filled and that have not been removed since. Only bounds fault-around:
    /// a fault is always answered, whatever this says.
    filled: Bitmap,
}

impl RegionState {
    fn zero(&self, page: usize) -> bool {
        self.holes.get(page) || self.removed.get(page)
    }
}

/// What answering one fault came to.
enum Answer {
    Done,
    /// The kernel said `EAGAIN`: retry after reading more events.
    Again,
    /// The VM's address space is gone.
    VmGone,
}

/// A page server for one VM: its userfaultfd, its regions, and the memory file mapped.
#[derive(Debug)]
pub struct PageServer {
    uffd: Uffd,
    /// Sorted by address.
    regions: Vec<RegionState>,
    file: Mapping,
    /// Zeros as large as the largest huge page, for huge-page regions.
    zeros: Option<Mapping>,
    host_page_size: usize,
    fault_around_bytes: usize,
    peer: Option<OwnedFd>,
    counts: ServeStats,
}

impl PageServer {
    /// Checks `regions` ([`validate_regions`]) against `memory_file` (each must lie inside it),
    /// maps the file, lists its holes per region, and makes `uffd` non-blocking (Firecracker
    /// creates it so already).
    pub fn new(uffd: Uffd, mut regions: Vec<GuestRegion>, memory_file: &File) -> Result<Self, PageServerError> {
        validate_regions(&regions)?;
        let file_len = memory_file.metadata().map_err(PageServerError::StatMemoryFile)?.len();
        for (index, r) in regions.iter().enumerate() {
            let end = r.offset + r.size as u64;
            if end > file_len {
                return Err(PageServerError::RegionBeyondFile { index, end, file_len });
            }
        }
        let file = Mapping::file(memory_file, file_len as usize)?;
        let host_page_size = host_page_size();
        let largest = regions.iter().map(|r| r.page_size).max().unwrap_or(host_page_size);
        let zeros = if largest > host_page_size { Some(Mapping::zeros(largest)?) } else { None };
        regions.sort_by_key(|r| r.base_host_virt_addr);
        let regions = regions
            .into_iter()
            .map(|region| {
                let pages = region.size / region.page_size;
                let holes = hole_pages(memory_file, region.offset, pages, region.page_size)?;
                Ok(RegionState { region, pages, holes, removed: Bitmap::new(pages), filled: Bitmap::new(pages) })
            })
            .collect::<Result<Vec<_>, PageServerError>>()?;
        let flags = fcntl(uffd.as_fd(), FcntlArg::F_GETFL).map_err(PageServerError::NonBlocking)?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        fcntl(uffd.as_fd(), FcntlArg::F_SETFL(flags)).map_err(PageServerError::NonBlocking)?;
        Ok(PageServer {
            uffd,
            regions,
            file,
            zeros,
            host_page_size,
            fault_around_bytes: DEFAULT_FAULT_AROUND_BYTES,
            peer: None,
            counts: ServeStats::nothing(ServeEnd::Stopped),
        })
    }

    /// Sets how much one fault fills (at least the faulted page): 0 or anything up to one page
    /// means exactly the faulted page.
    pub fn with_fault_around(mut self, bytes: usize) -> Self {
        self.fault_around_bytes = bytes;
        self
    }

    /// Returns from [`run`](Self::run) with [`ServeEnd::VmExited`] once `pidfd` is readable.
    pub fn watch_peer(mut self, pidfd: OwnedFd) -> Self {
        self.peer = Some(pidfd);
        self
    }

    /// The fault loop; see the crate docs. Returns when the VM exits, `stop` is given or the
    /// userfaultfd reads end of file; an error leaves the VM's faulting threads waiting.
    pub fn run(&mut self, stop: &StopSignal) -> Result<ServeStats, PageServerError> {
        let mut buf = EventBuffer::new(EVENT_BATCH);
        let mut faults: Vec<u64> = Vec::new();
        let mut removes: Vec<(u64, u64)> = Vec::new();
        let mut deferred: Vec<u64> = Vec::new();
        loop {
            let timeout = if deferred.is_empty() { PollTimeout::NONE } else { PollTimeout::from(RETRY_AFTER_MS) };
            let (stopped, exited) = {
                // The stop signal stands in for a missing peer: the slice leaves it out.
                let peer = self.peer.as_ref().map_or(stop.as_fd(), |p| p.as_fd());
                let mut all = [
                    PollFd::new(self.uffd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(stop.as_fd(), PollFlags::POLLIN),
                    PollFd::new(peer, PollFlags::POLLIN),
                ];
                let fds = &mut all[..if self.peer.is_some() { 3 } else { 2 }];
                match poll(fds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(PageServerError::Poll(e)),
                }
                let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[1]), fds.get(2).is_some_and(ready))
            };
            if stopped {
                return Ok(self.finish(ServeEnd::Stopped));
            }
            if exited {
                return Ok(self.finish(ServeEnd::VmExited));
            }
            loop {
                let events = match self.uffd.read_events(&mut buf) {
                    Ok(events) => events,
                    Err(userfaultfd::Error::ReadEof) => return Ok(self.finish(ServeEnd::UffdClosed)),
                    Err(e) => return Err(PageServerError::ReadEvents(e)),
                };
                let mut read = 0;
                for event in events {
                    read += 1;
                    match event.map_err(PageServerError::ReadEvents)? {
                        Event::Pagefault { addr, .. } => faults.push(addr as u64),
                        Event::Remove { start, end } => removes.push((start as u64, end as u64)),
                        Event::Remap { from, to, len } => {
                            return Err(PageServerError::Remapped { from: from as u64, to: to as u64, len });
                        }
                        // Not asked for by Firecracker; an unmapped range simply never faults
                        // again, and a forked child's userfaultfd is closed here.
                        Event::Unmap { .. } | Event::Fork { .. } => {}
                    }
                }
                if read < EVENT_BATCH {
                    break;
                }
            }
            self.counts.faults += faults.len() as u64;
            for (start, end) in removes.drain(..) {
                self.counts.remove_events += 1;
                self.mark_removed(start, end);
            }
            let retry = std::mem::take(&mut deferred);
            for addr in retry.into_iter().chain(faults.drain(..)) {
                match self.answer(addr)? {
                    Answer::Done => {}
                    Answer::Again => {
                        self.counts.retried += 1;
                        deferred.push(addr);
                    }
                    Answer::VmGone => return Ok(self.finish(ServeEnd::VmExited)),
                }
            }
        }
    }

    fn finish(&mut self, end: ServeEnd) -> ServeStats {
        self.counts.end = end;
        self.counts
    }

    fn region_of(&self, addr: u64) -> Option<usize> {
        let i = self.regions.partition_point(|r| r.region.base_host_virt_addr <= addr).checked_sub(1)?;
        self.regions[i].region.contains(addr).then_some(i)
    }

    /// Remembers `[start, end)` as removed in every region it touches.
    fn mark_removed(&mut self, start: u64, end: u64) {
        for r in &mut self.regions {
            let (base, size) = (r.region.base_host_virt_addr, r.region.size as u64);
            let (from, to) = (start.max(base), end.min(base + size));
            if from >= to {
                continue;
            }
            let ps = r.region.page_size as u64;
            for page in ((from - base) / ps) as usize..((to - base).div_ceil(ps)) as usize {
                r.removed.set(page);
                r.filled.clear(page);
            }
        }
    }

    /// Fills the page holding `addr` and the alike, never-filled pages after it (up to the
    /// fault-around size), waking the faulting thread.
    fn answer(&mut self, addr: u64) -> Result<Answer, PageServerError> {
        let i = self.region_of(addr).ok_or(PageServerError::FaultOutsideRegions { addr })?;
        let host_page_size = self.host_page_size;
        let r = &self.regions[i];
        let ps = r.region.page_size;
        let page = ((addr - r.region.base_host_virt_addr) / ps as u64) as usize;
        let zero = r.zero(page);
        let huge = ps > host_page_size;
        let most = if zero && huge { 1 } else { (self.fault_around_bytes / ps).max(1) };
        let mut count = 1;
        while count < most && page + count < r.pages && !r.filled.get(page + count) && r.zero(page + count) == zero {
            count += 1;
        }
        let dst = r.region.base_host_virt_addr + (page * ps) as u64;
        let len = count * ps;
        let result = if zero && !huge {
            // SAFETY: `dst..dst + len` lies in a region the VM registered with this userfaultfd
            // (checked above); UFFDIO_ZEROPAGE only maps zero pages where none is mapped, in the VM
            // process, and touches no memory of ours.
            unsafe { self.uffd.zeropage(dst as *mut c_void, len, true) }
        } else {
            let src = match (&self.zeros, zero) {
                (Some(zeros), true) => zeros.at(0),
                _ => self.file.at(r.region.offset + (page * ps) as u64),
            };
            // SAFETY: `src..src + len` is inside one of our read-only mappings (the memory file,
            // which the region fits in as checked by `new`, or the zero mapping, at least one
            // page long), and `dst..dst + len` lies in a region the VM registered; UFFDIO_COPY
            // reads the one and fills missing pages of the other, in the VM process.
            unsafe { self.uffd.copy(src, dst as *mut c_void, len, true) }
        };
        let filled = match result {
            Ok(bytes) => bytes,
            // Some pages went in before one that was already there (or a remove event came):
            // the faulted page, first, is among them.
            Err(userfaultfd::Error::PartiallyCopied(bytes)) if (bytes as i64) > 0 => bytes,
            Err(userfaultfd::Error::PartiallyCopied(_)) => return Ok(Answer::Again),
            Err(userfaultfd::Error::CopyFailed(e) | userfaultfd::Error::ZeropageFailed(e)) => {
                match Errno::from_raw(e as i32) {
                    Errno::EEXIST => return self.wake_present(i, page, dst),
                    Errno::EAGAIN => return Ok(Answer::Again),
                    Errno::ESRCH => return Ok(Answer::VmGone),
                    source if zero && !huge => return Err(PageServerError::ZeroPage { addr: dst, len, source }),
                    source => return Err(PageServerError::Copy { addr: dst, len, source }),
                }
            }
            Err(e) => {
                let source = match e {
                    userfaultfd::Error::SystemError(e) => Errno::from_raw(e as i32),
                    _ => Errno::UnknownErrno,
                };
                return Err(PageServerError::Copy { addr: dst, len, source });
            }
        };
        let pages = (filled / ps).max(1);
        let r = &mut self.regions[i];
        for p in page..page + pages {
            r.filled.set(p);
        }
        if zero {
            self.counts.pages_zeroed += pages as u64;
        } else {
            self.counts.pages_copied += pages as u64;
        }
        self.counts.pages_ahead += pages as u64 - 1;
        Ok(Answer::Done)
    }

    /// The faulted page is there already (a racing fault filled it): wake whoever waits on it.
    fn wake_present(&mut self, region: usize, page: usize, dst: u64) -> Result<Answer, PageServerError> {
        let len = self.regions[region].region.page_size;
        match self.uffd.wake(dst as *mut c_void, len) {
            Ok(()) => {}
            Err(userfaultfd::Error::SystemError(e)) if e as i32 == libc::ESRCH => return Ok(Answer::VmGone),
            Err(userfaultfd::Error::SystemError(e)) => {
                return Err(PageServerError::Wake { addr: dst, len, source: Errno::from_raw(e as i32) });
            }
            Err(_) => return Err(PageServerError::Wake { addr: dst, len, source: Errno::UnknownErrno }),
        }
        self.regions[region].filled.set(page);
        self.counts.already_present += 1;
        Ok(Answer::Done)
    }
}

/// Serves what `handshake` handed over from `memory_file` until the VM exits or `stop` is given,
/// filling [`DEFAULT_FAULT_AROUND_BYTES`] per fault.
pub fn serve(handshake: Handshake, memory_file: &File, stop: &StopSignal) -> Result<ServeStats, PageServerError> {
    let mut server = PageServer::new(handshake.uffd, handshake.regions, memory_file)?;
    if let Some(pidfd) = handshake.peer_pidfd {
        server = server.watch_peer(pidfd);
    }
    server.run(stop)
}

/// Listens on `socket_path`, takes one VM's handshake, and serves `memory_file_path` to it until
/// the VM exits. The socket file is removed on return.
pub fn serve_socket(socket_path: &Path, memory_file_path: &Path) -> Result<ServeStats, PageServerError> {
    serve_socket_until(socket_path, memory_file_path, &StopSignal::new()?)
}

/// [`serve_socket`], also ending when `stop` is given, whether the VM has connected or not.
pub fn serve_socket_until(
    socket_path: &Path,
    memory_file_path: &Path,
    stop: &StopSignal,
) -> Result<ServeStats, PageServerError> {
    let memory_file = File::open(memory_file_path)
        .map_err(|source| PageServerError::OpenMemoryFile { path: memory_file_path.to_path_buf(), source })?;
    let listener = UnixListener::bind(socket_path)
        .map_err(|source| PageServerError::Bind { path: socket_path.to_path_buf(), source })?;
    let _remove = RemoveOnDrop(socket_path.to_path_buf());
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN), PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(PageServerError::Poll(e)),
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return Ok(ServeStats::nothing(ServeEnd::Stopped));
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            break;
        }
    }
    let (stream, _) = listener.accept().map_err(PageServerError::Accept)?;
    let handshake = read_handshake(&stream)?;
    serve(handshake, &memory_file, stop)
}

/// Removes a socket file this process bound.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
