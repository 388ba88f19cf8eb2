//! The one message Firecracker sends a `Uffd` page server: a JSON array of guest memory regions,
//! with the userfaultfd attached as `SCM_RIGHTS`. Both halves: [`accept_handshake`] /
//! [`read_handshake`] for the page server, [`send_handshake`] for the VMM.

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, sockopt};
use nix::unistd::{SysconfVar, sysconf};
use serde::{Deserialize, Serialize};
use userfaultfd::Uffd;

use crate::PageServerError;

/// How long [`read_handshake`] waits for the whole message once the VM has connected.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest handshake body accepted (a region takes about 100 bytes of JSON).
pub const MAX_HANDSHAKE_BYTES: usize = 1 << 20;
/// Room for descriptors in the first read: Firecracker sends one, or three in its guest_memfd
/// mode; more than this is refused as truncated.
const FD_ROOM: usize = 8;
/// What `/proc/self/fd/N` reads for a userfaultfd.
const UFFD_LINK: &str = "anon_inode:[userfaultfd]";

/// One guest memory region as Firecracker describes it: `size` bytes of guest memory mapped at
/// `base_host_virt_addr` in the VM process, whose contents are at `offset` in the memory file,
/// in pages of `page_size` bytes (4 KiB, or 2 MiB with hugetlbfs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireRegion", into = "WireRegion")]
pub struct GuestRegion {
    /// Where the region starts in the VM process's address space.
    pub base_host_virt_addr: u64,
    /// Its length in bytes.
    pub size: usize,
    /// Where its contents start in the memory file.
    pub offset: u64,
    /// Its page size in bytes.
    pub page_size: usize,
}

impl GuestRegion {
    /// One past the region's last host address (validated regions do not wrap).
    pub fn end(&self) -> u64 {
        self.base_host_virt_addr.wrapping_add(self.size as u64)
    }

    /// Whether `addr` lies in the region.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base_host_virt_addr && addr - self.base_host_virt_addr < self.size as u64
    }
}

/// A region as it travels: `page_size` in current Firecracker, the same byte count under the
/// misnamed `page_size_kib` in older ones (Firecracker's own note on the field says it always held
/// bytes), neither in the oldest.
#[derive(Serialize, Deserialize)]
struct WireRegion {
    base_host_virt_addr: u64,
    size: usize,
    offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_size_kib: Option<usize>,
}

impl TryFrom<WireRegion> for GuestRegion {
    type Error = String;

    fn try_from(w: WireRegion) -> Result<Self, String> {
        let page_size = match (w.page_size, w.page_size_kib) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "region at {:#x}: page_size {a} and page_size_kib {b} disagree",
                    w.base_host_virt_addr
                ));
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => host_page_size(),
        };
        Ok(GuestRegion { base_host_virt_addr: w.base_host_virt_addr, size: w.size, offset: w.offset, page_size })
    }
}

impl From<GuestRegion> for WireRegion {
    /// Both names, as Firecracker sends them, so page servers of either generation understand.
    fn from(r: GuestRegion) -> Self {
        WireRegion {
            base_host_virt_addr: r.base_host_virt_addr,
            size: r.size,
            offset: r.offset,
            page_size: Some(r.page_size),
            page_size_kib: Some(r.page_size),
        }
    }
}

/// What the VM handed over: the userfaultfd its guest memory is registered with, the regions, and
/// a pidfd of the VM process when the kernel could give one (it tells the fault loop that the VM
/// has exited).
#[derive(Debug)]
pub struct Handshake {
    /// The VM's userfaultfd.
    pub uffd: Uffd,
    /// The guest memory regions, validated, in the order sent.
    pub regions: Vec<GuestRegion>,
    /// The VM process's pid as the kernel saw it at `connect`, if visible from here.
    pub peer_pid: Option<i32>,
    /// A pidfd of the VM process; readable once it has exited.
    pub peer_pidfd: Option<OwnedFd>,
}

/// The host's base page size.
pub fn host_page_size() -> usize {
    match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as usize,
        _ => 4096,
    }
}

/// Checks what a page server relies on: at least one region; each one non-empty, with a page size
/// that is a power of two no smaller than the host's, its address, size and file offset multiples
/// of that page size, and no end past 2^64; no two regions sharing host addresses.
pub fn validate_regions(regions: &[GuestRegion]) -> Result<(), PageServerError> {
    if regions.is_empty() {
        return Err(PageServerError::NoRegions);
    }
    let host = host_page_size();
    for (index, r) in regions.iter().enumerate() {
        if r.size == 0 {
            return Err(PageServerError::ZeroSizeRegion { index, base: r.base_host_virt_addr });
        }
        if !r.page_size.is_power_of_two() || r.page_size < host {
            return Err(PageServerError::BadPageSize { index, page_size: r.page_size, host_page_size: host });
        }
        let mask = r.page_size as u64 - 1;
        for (field, value) in [("address", r.base_host_virt_addr), ("size", r.size as u64), ("offset", r.offset)] {
            if value & mask != 0 {
                return Err(PageServerError::Misaligned { index, field, value, page_size: r.page_size });
            }
        }
        for (field, start) in [("address", r.base_host_virt_addr), ("offset", r.offset)] {
            if start.checked_add(r.size as u64).is_none() {
                return Err(PageServerError::RegionWraps { index, field, start, size: r.size });
            }
        }
    }
    let mut order: Vec<usize> = (0..regions.len()).collect();
    order.sort_by_key(|&i| regions[i].base_host_virt_addr);
    for pair in order.windows(2) {
        let (a, b) = (&regions[pair[0]], &regions[pair[1]]);
        if a.end() > b.base_host_virt_addr {
            return Err(PageServerError::OverlappingRegions {
                first: pair[0],
                first_start: a.base_host_virt_addr,
                first_end: a.end(),
                second: pair[1],
                second_start: b.base_host_virt_addr,
                second_end: b.end(),
            });
        }
    }
    Ok(())
}

/// Waits for the VM to connect to `listener` and reads its handshake ([`read_handshake`]).
pub fn accept_handshake(listener: &UnixListener) -> Result<Handshake, PageServerError> {
    let (stream, _) = listener.accept().map_err(PageServerError::Accept)?;
    read_handshake(&stream)
}

/// Reads the handshake from a connected VM: one `recvmsg` for the body's start and the
/// descriptor, further reads while the JSON is incomplete (all within [`HANDSHAKE_TIMEOUT`]),
/// then checks the descriptor and the regions.
pub fn read_handshake(stream: &UnixStream) -> Result<Handshake, PageServerError> {
    let started = Instant::now();
    let mut body = vec![0u8; 64 * 1024];
    let (received, fds) = recv_with_fds(stream, &mut body)?;
    body.truncate(received);
    if received == 0 {
        return Err(PageServerError::HandshakeClosed { received: 0 });
    }
    let regions = read_regions(stream, &mut body, started)?;
    let uffd_fd = match fds.len() {
        0 => return Err(PageServerError::NoUffd { body: excerpt(&body) }),
        1 => fds.into_iter().next().expect("one descriptor"),
        count => return Err(PageServerError::ExtraFds { count }),
    };
    check_is_uffd(uffd_fd.as_fd())?;
    validate_regions(&regions)?;
    let (peer_pid, peer_pidfd) = peer_process(stream);
    // SAFETY: `uffd_fd` is a descriptor we own (received through SCM_RIGHTS) and that the kernel
    // says is a userfaultfd; `Uffd` takes over closing it.
    let uffd = unsafe { Uffd::from_raw_fd(uffd_fd.into_raw_fd()) };
    Ok(Handshake { uffd, regions, peer_pid, peer_pidfd })
}

/// One `recvmsg` with room for [`FD_ROOM`] descriptors, each returned owned (so an unwanted one is
/// closed on drop), close-on-exec.
fn recv_with_fds(stream: &UnixStream, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>), PageServerError> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(PageServerError::HandshakeRead)?;
    let mut cmsg = nix::cmsg_space!([RawFd; FD_ROOM]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match socket::recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                return Err(PageServerError::HandshakeTimeout { seconds: HANDSHAKE_TIMEOUT.as_secs(), received: 0 });
            }
            Err(e) => return Err(PageServerError::HandshakeRead(e.into())),
            Ok(msg) => break msg,
        }
    };
    let bytes = msg.bytes;
    let cmsgs = msg.cmsgs().map_err(|_| PageServerError::ControlTruncated { room: FD_ROOM })?;
    let mut fds = Vec::new();
    for c in cmsgs {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel installed this descriptor in our table for this message;
                // nothing else refers to it, so it is ours to own and close.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok((bytes, fds))
}

/// Parses the body, reading on while the JSON is merely incomplete.
fn read_regions(
    stream: &UnixStream,
    body: &mut Vec<u8>,
    started: Instant,
) -> Result<Vec<GuestRegion>, PageServerError> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match serde_json::from_slice::<Vec<GuestRegion>>(body) {
            Ok(regions) => return Ok(regions),
            Err(e) if e.is_eof() => {}
            Err(source) => return Err(PageServerError::BadJson { body: excerpt(body), source }),
        }
        if body.len() >= MAX_HANDSHAKE_BYTES {
            return Err(PageServerError::HandshakeTooLarge { limit: MAX_HANDSHAKE_BYTES });
        }
        let left = HANDSHAKE_TIMEOUT.saturating_sub(started.elapsed());
        let timeout =
            || PageServerError::HandshakeTimeout { seconds: HANDSHAKE_TIMEOUT.as_secs(), received: body.len() };
        if left.is_zero() {
            return Err(timeout());
        }
        stream.set_read_timeout(Some(left)).map_err(PageServerError::HandshakeRead)?;
        let mut reader = stream;
        match reader.read(&mut chunk) {
            Ok(0) => return Err(PageServerError::HandshakeClosed { received: body.len() }),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Err(timeout()),
            Err(e) => return Err(PageServerError::HandshakeRead(e)),
        }
    }
}

/// The body for an error message: lossy UTF-8, at most 200 characters.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

/// Refuses a descriptor that `/proc/self/fd` names as something other than a userfaultfd. Where
/// `/proc` cannot tell (not mounted), the first ioctl will.
fn check_is_uffd(fd: BorrowedFd<'_>) -> Result<(), PageServerError> {
    match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        Ok(target) if target.as_os_str() != UFFD_LINK => {
            Err(PageServerError::NotAUserfaultfd { target: target.to_string_lossy().into_owned() })
        }
        _ => Ok(()),
    }
}

/// The peer's pid and a pidfd of it: `SO_PEERPIDFD` (Linux 6.5) names the very process that
/// connected; before that, `SO_PEERCRED`'s pid and `pidfd_open` (a pid reused in between would
/// be a wrong process, a window of microseconds). Either may be missing: a peer in a pid namespace
/// we cannot see has pid 0 here.
fn peer_process(stream: &UnixStream) -> (Option<i32>, Option<OwnedFd>) {
    let pid = socket::getsockopt(stream, sockopt::PeerCredentials).ok().map(|c| c.pid()).filter(|&p| p > 0);
    if let Ok(pidfd) = socket::getsockopt(stream, sockopt::PeerPidfd) {
        return (pid, Some(pidfd));
    }
    let Some(pid) = pid else { return (None, None) };
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory is
    // passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return (Some(pid), None);
    }
    // SAFETY: pidfd_open succeeded, so `fd` is a fresh descriptor that nothing else owns.
    (Some(pid), Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
}

/// The VMM's half, as Firecracker does it: connects to the page server at `socket_path` and sends
/// `regions` as JSON with `uffd` attached, in one `sendmsg`. Returns the connection; keep it open
/// for as long as the page server should consider the VM connected (Firecracker never closes it).
pub fn send_handshake(
    socket_path: &Path,
    regions: &[GuestRegion],
    uffd: BorrowedFd<'_>,
) -> Result<UnixStream, PageServerError> {
    let stream = UnixStream::connect(socket_path)
        .map_err(|source| PageServerError::Connect { path: socket_path.to_path_buf(), source })?;
    let body = serde_json::to_vec(regions).expect("regions always serialize");
    let fds = [uffd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let mut sent = socket::sendmsg::<()>(stream.as_raw_fd(), &[IoSlice::new(&body)], &cmsg, MsgFlags::empty(), None)
        .map_err(PageServerError::HandshakeSend)?;
    // A stream socket may take a long body in parts; the descriptor went with the first.
    while sent < body.len() {
        sent += socket::send(stream.as_raw_fd(), &body[sent..], MsgFlags::empty())
            .map_err(PageServerError::HandshakeSend)?;
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(base: u64, size: usize, offset: u64) -> GuestRegion {
        GuestRegion { base_host_virt_addr: base, size, offset, page_size: 4096 }
    }

    #[test]
    fn test_current_firecracker_body_parses() {
        let body = r#"[{"base_host_virt_addr":140000000000000,"size":2097152,"offset":0,"page_size":4096,"page_size_kib":4096},
                       {"base_host_virt_addr":140000002097152,"size":4096,"offset":2097152,"page_size":4096,"page_size_kib":4096}]"#;
        let regions: Vec<GuestRegion> = serde_json::from_str(body).unwrap();
        assert_eq!(regions, vec![region(140000000000000, 2 << 20, 0), region(140000002097152, 4096, 2 << 20)]);
        validate_regions(&regions).unwrap();
    }

    #[test]
    fn test_page_size_kib_alone_is_read_as_bytes() {
        let body = r#"[{"base_host_virt_addr":1073741824,"size":4194304,"offset":0,"page_size_kib":2097152}]"#;
        let regions: Vec<GuestRegion> = serde_json::from_str(body).unwrap();
        assert_eq!(regions[0].page_size, 2 << 20);
    }

    #[test]
    fn test_no_page_size_means_the_hosts() {
        let body = r#"[{"base_host_virt_addr":4096,"size":8192,"offset":0}]"#;
        let regions: Vec<GuestRegion> = serde_json::from_str(body).unwrap();
        assert_eq!(regions[0].page_size, host_page_size());
    }

    #[test]
    fn test_disagreeing_page_sizes_are_refused() {
        let body = r#"[{"base_host_virt_addr":4096,"size":8192,"offset":0,"page_size":4096,"page_size_kib":4}]"#;
        let err = serde_json::from_str::<Vec<GuestRegion>>(body).unwrap_err().to_string();
        assert!(err.contains("page_size 4096 and page_size_kib 4 disagree"), "{err}");
    }

    #[test]
    fn test_serialized_region_carries_both_names() {
        let json = serde_json::to_value(region(8192, 4096, 0)).unwrap();
        assert_eq!(json["page_size"], 4096);
        assert_eq!(json["page_size_kib"], 4096);
    }

    #[test]
    fn test_validation_names_the_bad_region() {
        assert!(matches!(validate_regions(&[]), Err(PageServerError::NoRegions)));
        let zero = [region(4096, 4096, 0), region(1 << 20, 0, 4096)];
        assert!(matches!(validate_regions(&zero), Err(PageServerError::ZeroSizeRegion { index: 1, base: 0x100000 })));
        let bad_page = [GuestRegion { page_size: 4, ..region(4096, 4096, 0) }];
        assert!(matches!(
            validate_regions(&bad_page),
            Err(PageServerError::BadPageSize { index: 0, page_size: 4, .. })
        ));
        let odd_page = [GuestRegion { page_size: 12288, ..region(12288, 12288, 0) }];
        assert!(matches!(validate_regions(&odd_page), Err(PageServerError::BadPageSize { page_size: 12288, .. })));
        let misaligned = [region(4096 + 512, 4096, 0)];
        let err = validate_regions(&misaligned).unwrap_err();
        assert!(matches!(err, PageServerError::Misaligned { index: 0, field: "address", value: 0x1200, .. }), "{err}");
        let odd_size = [region(4096, 6000, 0)];
        assert!(matches!(validate_regions(&odd_size), Err(PageServerError::Misaligned { field: "size", .. })));
        let odd_offset = [region(4096, 4096, 100)];
        assert!(matches!(validate_regions(&odd_offset), Err(PageServerError::Misaligned { field: "offset", .. })));
        let wraps = [region(u64::MAX - 4095, 8192, 0)];
        assert!(matches!(validate_regions(&wraps), Err(PageServerError::RegionWraps { field: "address", .. })));
    }

    #[test]
    fn test_overlap_is_found_whatever_the_order() {
        let regions =
            [region(0x10_0000, 0x1000, 0), region(0x20_0000, 0x10_0000, 0x1000), region(0x2f_f000, 0x2000, 0)];
        let err = validate_regions(&regions).unwrap_err();
        assert!(
            matches!(
                err,
                PageServerError::OverlappingRegions {
                    first: 1,
                    second: 2,
                    first_end: 0x30_0000,
                    second_start: 0x2f_f000,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("region 1 [0x200000, 0x300000) overlaps region 2"), "{err}");
        let touching = [region(0x2000, 0x1000, 0), region(0x1000, 0x1000, 0x1000)];
        validate_regions(&touching).unwrap();
    }
}
