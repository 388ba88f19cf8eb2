//! What the fault loop copies from: the memory file mapped read-only once, a zero source for huge
//! pages (`UFFDIO_ZEROPAGE` does not take hugetlbfs ranges), the file's holes, and the page
//! bitmaps.

use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use libc::c_void;
use nix::errno::Errno;
use nix::sys::mman::{self, MapFlags, ProtFlags};
use nix::unistd::{Whence, lseek};

use crate::PageServerError;

/// A read-only private mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; sharing its address between
// threads is no more than sharing a `&[u8]`.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps all `len` bytes of `file` (`PROT_READ`, `MAP_PRIVATE`, `MAP_NORESERVE`).
    pub(crate) fn file(file: &File, len: usize) -> Result<Self, PageServerError> {
        let length =
            NonZeroUsize::new(len).ok_or(PageServerError::Map { what: "the memory file", source: Errno::EINVAL })?;
        // SAFETY: a fresh mapping at an address of the kernel's choosing touches no existing
        // memory; it is read-only, so whatever the file holds is only ever read through it.
        let ptr = unsafe {
            mman::mmap(
                None,
                length,
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
                file.as_fd(),
                0,
            )
        }
        .map_err(|source| PageServerError::Map { what: "the memory file", source })?;
        Ok(Mapping { ptr, len })
    }

    /// `len` bytes that read as zeros (an untouched private anonymous mapping).
    pub(crate) fn zeros(len: usize) -> Result<Self, PageServerError> {
        let length =
            NonZeroUsize::new(len).ok_or(PageServerError::Map { what: "a zero page", source: Errno::EINVAL })?;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing touches no
        // existing memory.
        let ptr = unsafe {
            mman::mmap_anonymous(None, length, ProtFlags::PROT_READ, MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE)
        }
        .map_err(|source| PageServerError::Map { what: "a zero page", source })?;
        Ok(Mapping { ptr, len })
    }

    /// The address of byte `offset`, which must be inside the mapping.
    pub(crate) fn at(&self, offset: u64) -> *const c_void {
        assert!(offset < self.len as u64, "offset {offset:#x} outside a mapping of {:#x} bytes", self.len);
        // SAFETY: `offset` is inside the mapping (checked above), so the result points into it.
        unsafe { self.ptr.as_ptr().cast::<u8>().add(offset as usize).cast() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no reference into the mapping
        // outlives `self` (only raw addresses handed to ioctls that have returned).
        let _ = unsafe { mman::munmap(self.ptr, self.len) };
    }
}

/// A fixed-size set of page indices.
#[derive(Debug, Clone)]
pub(crate) struct Bitmap {
    words: Vec<u64>,
}

impl Bitmap {
    pub(crate) fn new(bits: usize) -> Self {
        Bitmap { words: vec![0; bits.div_ceil(64)] }
    }

    pub(crate) fn get(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    pub(crate) fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    pub(crate) fn clear(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// The pages of the file range `[offset, offset + pages * page_size)` that lie wholly in a hole,
/// found with `SEEK_DATA`/`SEEK_HOLE`. A file system that cannot tell (`EINVAL`) has no holes.
pub(crate) fn hole_pages(file: &File, offset: u64, pages: usize, page_size: usize) -> Result<Bitmap, PageServerError> {
    let mut holes = Bitmap::new(pages);
    let end = offset + (pages * page_size) as u64;
    let seek = |from: u64, whence: Whence| -> Result<Option<u64>, PageServerError> {
        match lseek(file.as_fd(), from as i64, whence) {
            Ok(at) => Ok(Some(at as u64)),
            // ENXIO: no data at or after `from` (SEEK_DATA), or `from` is past the end.
            Err(Errno::ENXIO) => Ok(None),
            Err(source) => Err(PageServerError::HoleMap { offset: from, source }),
        }
    };
    let mut mark = |hole_start: u64, hole_end: u64| {
        let first = (hole_start.max(offset) - offset).div_ceil(page_size as u64) as usize;
        let last = ((hole_end.min(end) - offset) / page_size as u64) as usize;
        for page in first..last {
            holes.set(page);
        }
    };
    let mut at = offset;
    while at < end {
        let data = match seek(at, Whence::SeekData) {
            Ok(data) => data.unwrap_or(end),
            Err(PageServerError::HoleMap { source: Errno::EINVAL, .. }) => return Ok(Bitmap::new(pages)),
            Err(e) => return Err(e),
        };
        if data > at {
            mark(at, data.min(end));
        }
        if data >= end {
            break;
        }
        at = seek(data, Whence::SeekHole)?.unwrap_or(end);
    }
    Ok(holes)
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    const PAGE: usize = 4096;

    #[test]
    fn test_bitmap_sets_clears_and_counts() {
        let mut b = Bitmap::new(130);
        for i in [0, 63, 64, 129] {
            b.set(i);
        }
        assert!(b.get(63) && b.get(64) && b.get(129) && !b.get(1));
        b.clear(64);
        assert!(!b.get(64));
        assert_eq!(b.count(), 3);
    }

    #[test]
    fn test_holes_are_found_page_by_page() {
        // Pages 0-1 data, 2-5 hole, 6 data, 7-9 hole (file ends at page 10 with set_len).
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1u8; 2 * PAGE]).unwrap();
        f.seek(SeekFrom::Start(6 * PAGE as u64)).unwrap();
        f.write_all(&[2u8; PAGE]).unwrap();
        f.set_len(10 * PAGE as u64).unwrap();
        let holes = hole_pages(&f, 0, 10, PAGE).unwrap();
        let got: Vec<usize> = (0..10).filter(|&p| holes.get(p)).collect();
        assert_eq!(got, vec![2, 3, 4, 5, 7, 8, 9]);
        // The same file seen from offset 2 pages on, 5 pages long.
        let holes = hole_pages(&f, 2 * PAGE as u64, 5, PAGE).unwrap();
        let got: Vec<usize> = (0..5).filter(|&p| holes.get(p)).collect();
        assert_eq!(got, vec![0, 1, 2, 3]);
    }

    #[test]
    fn test_a_file_without_holes_has_none() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; 4 * PAGE]).unwrap();
        assert_eq!(hole_pages(&f, 0, 4, PAGE).unwrap().count(), 0);
    }

    #[test]
    fn test_a_hole_shorter_than_a_page_is_data() {
        // 2 MiB pages: a 1 MiB hole inside the first does not make it a hole.
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1u8; PAGE]).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[1u8; PAGE]).unwrap();
        f.set_len(4 << 20).unwrap();
        let holes = hole_pages(&f, 0, 2, 2 << 20).unwrap();
        assert!(!holes.get(0));
        assert!(holes.get(1));
    }
}
