//! The userfaultfd page server behind Firecracker's `Uffd` memory backend: the process that
//! fills a restored VM's guest memory from the snapshot memory file lazily, one fault at a time.
//!
//! **Handshake** ([`accept_handshake`]). The page server listens on a Unix stream socket.
//! Firecracker, on `PUT /snapshot/load` with `mem_backend: {backend_type: "Uffd", backend_path}`,
//! creates a userfaultfd, registers every guest memory region with it (missing-page mode),
//! connects, and sends one message: its body is a JSON array of [`GuestRegion`]s
//! (`{"base_host_virt_addr", "size", "offset", "page_size"}`; older versions send the same
//! byte count under the misnamed `page_size_kib`, and the oldest no page size at all, which means
//! the host's) and its ancillary data (`SCM_RIGHTS`) carries the userfaultfd. `offset` is where the
//! region's bytes start in the memory file. Nothing else is ever said on that socket. A message
//! without exactly one descriptor, a descriptor that is not a userfaultfd, JSON that does not
//! parse, and regions that are empty, overlap or are not aligned to their page size are each a
//! [`PageServerError`] naming the value at fault. [`send_handshake`] is the VMM's half, as
//! Firecracker does it.
//!
//! **Fault loop** ([`PageServer::run`]). The memory file is mapped read-only once (`MAP_PRIVATE`);
//! its holes (`SEEK_HOLE`) are listed per region at start. A page fault in a region is answered
//! with `UFFDIO_COPY` of the page from the mapping, or `UFFDIO_ZEROPAGE` where the file has a hole
//! (a copy from zeros for huge pages, which that ioctl does not take), which also wakes the
//! faulting thread; up to [`DEFAULT_FAULT_AROUND_BYTES`] of the following
//! pages that were never filled are filled in the same call, as the kernel's own fault-around
//! does for file mappings. A fault on a page that is already there (another fault raced it in)
//! only wakes the waiter. A fault outside every region is an error: the VM registered memory it
//! did not describe, and nothing can fill it.
//!
//! **Remove events.** When the VM drops guest memory (balloon inflation: `madvise(MADV_DONTNEED)`)
//! the kernel sends `UFFD_EVENT_REMOVE`; the range is remembered as removed, and a later fault
//! there gets a zero page, never the snapshot's bytes. While such an event is unread the kernel
//! refuses copies (`EAGAIN`); those faults are retried after the next read, and the removals read
//! in one batch take effect before the faults of that batch are served.
//!
//! **When the VM exits.** A userfaultfd says nothing when the process that registered memory
//! exits, so the handshake takes a pidfd of the peer (`SO_PEERPIDFD`, else `SO_PEERCRED` and
//! `pidfd_open`); the loop returns [`ServeEnd::VmExited`] when it becomes readable, or when the
//! kernel answers a copy with `ESRCH` (the address space is gone). A [`StopSignal`] ends it from
//! another thread ([`ServeEnd::Stopped`]). If the page server itself dies, the VM's faulting
//! threads wait forever; whoever runs both must kill the VM then.

mod error;
mod handshake;
mod mapping;
mod server;

pub use error::PageServerError;
pub use handshake::{
    GuestRegion, HANDSHAKE_TIMEOUT, Handshake, MAX_HANDSHAKE_BYTES, accept_handshake, host_page_size, read_handshake,
    send_handshake, validate_regions,
};
pub use server::{
    DEFAULT_FAULT_AROUND_BYTES, PageServer, ServeEnd, ServeStats, StopSignal, serve, serve_socket, serve_socket_until,
};
