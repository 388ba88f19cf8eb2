//! Sparse files: where a file's data lies (`SEEK_DATA`/`SEEK_HOLE`), and its SHA-256 computed
//! over the logical content while only the data regions are read (holes hash as zeros).

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};
use sha2::{Digest as _, Sha256};

/// Bytes read or written per call when copying file data.
pub(crate) const CHUNK: usize = 1 << 20;

/// Zeros fed to the hasher for holes.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// The data regions of the first `size` bytes of `file`, in order, not overlapping, none empty.
/// Holes are what lies between. Where the file system cannot tell (no `SEEK_DATA`), the whole
/// file is one region. Regions follow the file system's allocation, so they start and end on
/// its block boundaries, except the last, which may end at `size`.
pub(crate) fn data_regions(file: &File, size: u64) -> io::Result<Vec<Range<u64>>> {
    let fd = file.as_fd();
    let mut regions = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        let start = match lseek(fd, to_off(pos)?, Whence::SeekData) {
            Ok(off) => off as u64,
            // No data at or after `pos`: the rest is a hole.
            Err(Errno::ENXIO) => break,
            // The file system has no SEEK_DATA: call it all data.
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) if pos == 0 => return Ok(whole(size)),
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match lseek(fd, to_off(start)?, Whence::SeekHole) {
            Ok(off) => (off as u64).min(size),
            Err(Errno::ENXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if end <= start {
            return Err(io::Error::other(format!("SEEK_HOLE at {start} did not advance; did the file change?")));
        }
        regions.push(start..end);
        pos = end;
    }
    Ok(regions)
}

fn whole(size: u64) -> Vec<Range<u64>> {
    if size == 0 { Vec::new() } else { std::iter::once(0..size).collect() }
}

fn to_off(pos: u64) -> io::Result<i64> {
    i64::try_from(pos).map_err(|_| io::Error::other(format!("offset {pos} is out of range")))
}

/// Widens each region to 512-byte boundaries (the tar block size; the end no further than
/// `size`) and merges regions that then touch.
pub(crate) fn align_regions(regions: Vec<Range<u64>>, size: u64) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::with_capacity(regions.len());
    for r in regions {
        let start = r.start & !511;
        let end = r.end.div_ceil(512).saturating_mul(512).min(size);
        match out.last_mut() {
            Some(last) if start <= last.end => last.end = last.end.max(end),
            _ => out.push(start..end),
        }
    }
    out
}

/// Feeds `len` zero bytes to `hasher`.
pub(crate) fn hash_zeros(hasher: &mut Sha256, mut len: u64) {
    while len > 0 {
        let n = len.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..n]);
        len -= n as u64;
    }
}

/// The size of `file` and the SHA-256 (lower-case hex) of its content, reading only its data
/// regions.
pub(crate) fn sha256_file(file: &File) -> io::Result<(u64, String)> {
    let size = file.metadata()?.len();
    let regions = data_regions(file, size)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0;
    for r in regions {
        hash_zeros(&mut hasher, r.start - pos);
        let mut off = r.start;
        while off < r.end {
            let n = (r.end - off).min(CHUNK as u64) as usize;
            file.read_exact_at(&mut buf[..n], off)?;
            hasher.update(&buf[..n]);
            off += n as u64;
        }
        pos = r.end;
    }
    hash_zeros(&mut hasher, size - pos);
    Ok((size, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn regions_of_a_sparse_file() {
        let f = tempfile::tempfile().unwrap();
        let size = 16 << 20;
        f.set_len(size).unwrap();
        f.write_all_at(&[1; 4096], 1 << 20).unwrap();
        f.write_all_at(&[2; 8192], 8 << 20).unwrap();
        let regions = data_regions(&f, size).unwrap();
        // File systems may allocate more than was written, but not everything, and never miss data.
        let covered: u64 = regions.iter().map(|r| r.end - r.start).sum();
        assert!(covered < size / 2, "{regions:?}");
        for at in [1 << 20, (8 << 20) + 8191] {
            assert!(regions.iter().any(|r| r.contains(&at)), "{at} not in {regions:?}");
        }
    }

    #[test]
    fn a_dense_file_is_one_region_and_an_empty_one_none() {
        let f = tempfile::tempfile().unwrap();
        (&f).write_all(&[7; 10_000]).unwrap();
        assert_eq!(data_regions(&f, 10_000).unwrap(), vec![0..10_000]);
        let empty = tempfile::tempfile().unwrap();
        assert_eq!(data_regions(&empty, 0).unwrap(), vec![]);
    }

    #[test]
    fn aligning_widens_to_512_and_merges() {
        let got = align_regions(vec![100..600, 1000..1100, 4096..5000], 4500);
        assert_eq!(got, vec![0..1536, 4096..4500]);
    }

    #[test]
    fn hash_covers_holes_as_zeros() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(3 << 20).unwrap();
        f.write_all_at(b"hello", 2 << 20).unwrap();
        let mut dense = vec![0u8; 3 << 20];
        dense[2 << 20..(2 << 20) + 5].copy_from_slice(b"hello");
        assert_eq!(sha256_file(&f).unwrap(), (3 << 20, hex::encode(Sha256::digest(&dense))));
    }
}
