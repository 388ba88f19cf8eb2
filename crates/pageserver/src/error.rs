//! Every way the handshake or the fault loop can fail, one variant each, naming the value at fault.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// A failure of the page server.
#[derive(Debug, thiserror::Error)]
pub enum PageServerError {
    /// The socket the VM connects to could not be bound.
    #[error("cannot listen on {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    /// Waiting for the VM to connect failed.
    #[error("cannot accept the VM's connection: {0}")]
    Accept(#[source] io::Error),
    /// The VM's side (for [`crate::send_handshake`]: the page server) could not be reached.
    #[error("cannot connect to the page server at {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    /// Setting up or reading the handshake socket failed.
    #[error("cannot read the handshake: {0}")]
    HandshakeRead(#[source] io::Error),
    /// Sending the handshake failed.
    #[error("cannot send the handshake: {0}")]
    HandshakeSend(#[source] Errno),
    /// The peer closed the connection before the handshake was complete.
    #[error("the VM closed the connection after {received} bytes of handshake")]
    HandshakeClosed { received: usize },
    /// The peer sent nothing, or not all of it, in time.
    #[error("no complete handshake within {seconds} s ({received} bytes received)")]
    HandshakeTimeout { seconds: u64, received: usize },
    /// The handshake body grew past the limit without becoming valid JSON.
    #[error("the handshake is longer than {limit} bytes")]
    HandshakeTooLarge { limit: usize },
    /// The handshake carried more descriptors than there was room for.
    #[error("the handshake's ancillary data was truncated (more than {room} descriptors)")]
    ControlTruncated { room: usize },
    /// The handshake carried no descriptor.
    #[error("the handshake carried no userfaultfd (body: {body})")]
    NoUffd { body: String },
    /// The handshake carried more than one descriptor (Firecracker's guest_memfd mode, which this
    /// server does not speak).
    #[error("the handshake carried {count} descriptors, expected one userfaultfd")]
    ExtraFds { count: usize },
    /// The descriptor sent is not a userfaultfd.
    #[error("the descriptor sent is {target}, not a userfaultfd")]
    NotAUserfaultfd { target: String },
    /// The handshake body is not the JSON array of regions.
    #[error("bad handshake JSON ({source}): {body}")]
    BadJson { body: String, source: serde_json::Error },
    /// The region list is empty.
    #[error("the handshake lists no guest memory regions")]
    NoRegions,
    /// A region has size 0.
    #[error("region {index} (at {base:#x}) has size 0")]
    ZeroSizeRegion { index: usize, base: u64 },
    /// A region's page size is not a power of two at least the host's page size.
    #[error("region {index} has page size {page_size}, not a power of two of at least {host_page_size}")]
    BadPageSize { index: usize, page_size: usize, host_page_size: usize },
    /// A region's address, size or offset is not a multiple of its page size.
    #[error("region {index}'s {field} {value:#x} is not a multiple of its page size {page_size:#x}")]
    Misaligned { index: usize, field: &'static str, value: u64, page_size: usize },
    /// A region's end does not fit in 64 bits.
    #[error("region {index} ({field} {start:#x} + size {size:#x}) wraps around")]
    RegionWraps { index: usize, field: &'static str, start: u64, size: usize },
    /// Two regions share host addresses.
    #[error(
        "region {first} [{first_start:#x}, {first_end:#x}) overlaps region {second} [{second_start:#x}, {second_end:#x})"
    )]
    OverlappingRegions {
        first: usize,
        first_start: u64,
        first_end: u64,
        second: usize,
        second_start: u64,
        second_end: u64,
    },
    /// The memory file could not be opened.
    #[error("cannot open the memory file {path}: {source}")]
    OpenMemoryFile { path: PathBuf, source: io::Error },
    /// The memory file's size could not be read.
    #[error("cannot stat the memory file: {0}")]
    StatMemoryFile(#[source] io::Error),
    /// A region reaches past the end of the memory file.
    #[error("region {index} needs the memory file up to byte {end:#x}, but it is {file_len:#x} bytes long")]
    RegionBeyondFile { index: usize, end: u64, file_len: u64 },
    /// Mapping the memory file (or the zero source for huge pages) failed.
    #[error("cannot map {what}: {source}")]
    Map { what: &'static str, source: Errno },
    /// Looking for holes in the memory file failed.
    #[error("cannot list the memory file's holes at offset {offset:#x}: {source}")]
    HoleMap { offset: u64, source: Errno },
    /// The userfaultfd could not be made non-blocking.
    #[error("cannot make the userfaultfd non-blocking: {0}")]
    NonBlocking(#[source] Errno),
    /// The stop signal's eventfd could not be created.
    #[error("cannot create the stop signal: {0}")]
    StopSignal(#[source] Errno),
    /// Waiting for events failed.
    #[error("poll failed: {0}")]
    Poll(#[source] Errno),
    /// Reading userfaultfd events failed.
    #[error("cannot read userfaultfd events: {0}")]
    ReadEvents(#[source] userfaultfd::Error),
    /// A fault at an address outside every region the handshake described.
    #[error("page fault at {addr:#x}, outside every guest memory region")]
    FaultOutsideRegions { addr: u64 },
    /// The VM moved guest memory (`mremap`), which a page server cannot follow.
    #[error("the VM remapped {len:#x} bytes of guest memory from {from:#x} to {to:#x}")]
    Remapped { from: u64, to: u64, len: usize },
    /// `UFFDIO_COPY` failed.
    #[error("UFFDIO_COPY of {len:#x} bytes to {addr:#x} failed: {source}")]
    Copy { addr: u64, len: usize, source: Errno },
    /// `UFFDIO_ZEROPAGE` failed.
    #[error("UFFDIO_ZEROPAGE of {len:#x} bytes at {addr:#x} failed: {source}")]
    ZeroPage { addr: u64, len: usize, source: Errno },
    /// `UFFDIO_WAKE` failed.
    #[error("UFFDIO_WAKE of {len:#x} bytes at {addr:#x} failed: {source}")]
    Wake { addr: u64, len: usize, source: Errno },
}
