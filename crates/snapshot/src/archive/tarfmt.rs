//! The tar subset a snapshot archive uses, written and read with the `tar` crate's header types:
//! GNU headers for regular files and old-GNU sparse files (a sparse map in the header, continued
//! in extension blocks, then only the data regions). The reader is strict and bounded: it
//! accepts nothing else, checks every header's checksum and sparse map, and reads a sparse map
//! of at most [`MAX_SPARSE_REGIONS`] entries.

use std::io::{self, Read, Write};
use std::ops::Range;

use tar::{EntryType, GnuExtSparseHeader, Header};

use crate::error::SnapshotError;

/// The tar block size.
pub(crate) const BLOCK: u64 = 512;
/// The most sparse-map entries one archive entry may have (16 bytes each when read).
pub const MAX_SPARSE_REGIONS: u64 = 1 << 22;
/// The most zero bytes accepted after the end-of-archive block (tar pads to its record size).
const MAX_TRAILING_ZEROS: u64 = 1 << 20;

/// Entry metadata every header gets: owned by root, readable by its owner only (guest memory
/// is secret), stamped with the snapshot's creation time so that an archive is reproducible.
fn base_header(name: &str, mtime: u64) -> io::Result<Header> {
    let mut h = Header::new_gnu();
    h.set_path(name)?;
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    Ok(h)
}

/// Writes the header of a regular file of `size` bytes.
pub(crate) fn write_regular_header(out: &mut dyn Write, name: &str, size: u64, mtime: u64) -> io::Result<()> {
    let mut h = base_header(name, mtime)?;
    h.set_entry_type(EntryType::Regular);
    h.set_size(size);
    h.set_cksum();
    out.write_all(h.as_bytes())
}

/// Writes the header and sparse map of a sparse file of `size` logical bytes whose data lies in
/// `regions` (in order, not overlapping, 512-aligned but for one ending at `size`). The data of
/// the regions, concatenated and padded to a block, is to follow.
pub(crate) fn write_sparse_header(
    out: &mut dyn Write,
    name: &str,
    size: u64,
    regions: &[Range<u64>],
    mtime: u64,
) -> io::Result<()> {
    // As GNU tar does, the map ends with an empty region at the end of the file, which says
    // where a trailing hole ends.
    let map: Vec<(u64, u64)> =
        regions.iter().map(|r| (r.start, r.end - r.start)).chain(std::iter::once((size, 0))).collect();
    let data: u64 = regions.iter().map(|r| r.end - r.start).sum();
    let mut h = base_header(name, mtime)?;
    h.set_entry_type(EntryType::GNUSparse);
    h.set_size(data);
    let gnu = h.as_gnu_mut().expect("a GNU header");
    gnu.set_real_size(size);
    let in_header = gnu.sparse.len();
    for (slot, &(offset, len)) in gnu.sparse.iter_mut().zip(&map) {
        slot.set_offset(offset);
        slot.set_length(len);
    }
    gnu.set_is_extended(map.len() > in_header);
    h.set_cksum();
    out.write_all(h.as_bytes())?;
    let mut rest = map[map.len().min(in_header)..].chunks(GnuExtSparseHeader::new().sparse.len()).peekable();
    while let Some(chunk) = rest.next() {
        let mut ext = GnuExtSparseHeader::new();
        for (slot, &(offset, len)) in ext.sparse.iter_mut().zip(chunk) {
            slot.set_offset(offset);
            slot.set_length(len);
        }
        ext.set_is_extended(rest.peek().is_some());
        out.write_all(ext.as_bytes())?;
    }
    Ok(())
}

/// Writes zeros up to the next block boundary after `len` bytes of data.
pub(crate) fn write_padding(out: &mut dyn Write, len: u64) -> io::Result<()> {
    let pad = padding(len);
    out.write_all(&[0; BLOCK as usize][..pad as usize])
}

/// Writes the end-of-archive marker: two zero blocks.
pub(crate) fn write_end(out: &mut dyn Write) -> io::Result<()> {
    out.write_all(&[0; 2 * BLOCK as usize])
}

fn padding(len: u64) -> u64 {
    (BLOCK - len % BLOCK) % BLOCK
}

/// One accepted archive entry, its header and sparse map read, its data not yet.
#[derive(Debug)]
pub(crate) struct EntryHead {
    /// A plain name (no `/`, not `.` or `..`, only `[A-Za-z0-9._-]`).
    pub name: String,
    /// Logical size.
    pub size: u64,
    /// Where its data goes, in order: the bytes that follow the header are these regions'
    /// contents, concatenated; the rest of the file is holes. A regular file is one region.
    pub regions: Vec<Range<u64>>,
    /// Bytes of data that follow (the regions' lengths added up).
    pub data: u64,
}

/// Reads the accepted subset of tar from a stream, strictly.
pub(crate) struct TarReader<R> {
    inner: R,
    /// Entries seen so far (headers, not extension blocks), for error messages.
    entries: u64,
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        TarReader { inner, entries: 0 }
    }

    /// Reads the next entry's header (and sparse map), or `None` at the end-of-archive marker.
    /// `check_size` sees the name and logical size as soon as the main header is read, before
    /// any sparse map, and may refuse the entry.
    pub(crate) fn next_entry(
        &mut self,
        check_size: &mut dyn FnMut(&str, u64) -> Result<(), SnapshotError>,
    ) -> Result<Option<EntryHead>, SnapshotError> {
        let mut block = [0u8; BLOCK as usize];
        let n = self.entries + 1;
        if !self.read_block_or_eof(&mut block, || format!("in the header of entry {n}"))? {
            return Err(if self.entries == 0 {
                SnapshotError::EmptyArchive
            } else {
                SnapshotError::Truncated { context: "no end-of-archive marker".into() }
            });
        }
        if block.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        self.entries = n;
        let header = Header::from_byte_slice(&block);
        let bad = |reason: String| SnapshotError::BadHeader { entry: n, reason };
        check_checksum(header).map_err(bad)?;
        let name_bytes = header.path_bytes();
        let lossy = String::from_utf8_lossy(&name_bytes).into_owned();
        let entry_type = header.entry_type();
        if !(entry_type.is_file() || entry_type.is_gnu_sparse()) {
            return Err(SnapshotError::UnsupportedEntryType { name: lossy, kind: describe(entry_type) });
        }
        if !is_plain_name(&name_bytes) {
            return Err(SnapshotError::UnsafeEntryName { name: lossy });
        }
        let name = lossy;
        let data = header.entry_size().map_err(|e| bad(format!("size: {e}")))?;
        if entry_type.is_file() {
            check_size(&name, data)?;
            let regions = if data == 0 { Vec::new() } else { std::iter::once(0..data).collect() };
            return Ok(Some(EntryHead { name, size: data, regions, data }));
        }

        let gnu = header.as_gnu().ok_or_else(|| bad("a sparse entry without a GNU header".into()))?;
        let size = gnu.real_size().map_err(|e| bad(format!("real size: {e}")))?;
        check_size(&name, size)?;
        if data > size {
            return Err(bad(format!("sparse entry has {data} bytes of data for a {size}-byte file")));
        }
        let mut map = SparseMap::new(&name, size);
        map.add_slots(&gnu.sparse).map_err(|e| e.into_error(n))?;
        let mut extended = gnu.is_extended();
        while extended {
            let mut ext = GnuExtSparseHeader::new();
            self.read_block(ext.as_mut_bytes(), || format!("in the sparse map of {name}"))?;
            map.add_slots(&ext.sparse).map_err(|e| e.into_error(n))?;
            extended = ext.is_extended();
        }
        let regions = map.regions;
        let held: u64 = regions.iter().map(|r| r.end - r.start).sum();
        if held != data {
            return Err(bad(format!("sparse map of {name} covers {held} bytes, its header says {data}")));
        }
        Ok(Some(EntryHead { name, size, regions, data }))
    }

    /// Reads exactly `buf.len()` bytes of the current entry's data.
    pub(crate) fn read_data(&mut self, buf: &mut [u8], name: &str) -> Result<(), SnapshotError> {
        read_exact(&mut self.inner, buf, || format!("in the data of {name}"))
    }

    /// Skips the padding after `data` bytes of an entry's data.
    pub(crate) fn skip_padding(&mut self, data: u64, name: &str) -> Result<(), SnapshotError> {
        let mut pad = [0u8; BLOCK as usize];
        let n = padding(data) as usize;
        read_exact(&mut self.inner, &mut pad[..n], || format!("in the data of {name}"))
    }

    /// After the first end-of-archive block: reads the stream to its end, which may hold only
    /// zeros (the second marker block and record padding), at most [`MAX_TRAILING_ZEROS`].
    pub(crate) fn finish(mut self) -> Result<(), SnapshotError> {
        let mut buf = [0u8; 64 * 1024];
        let mut seen = 0u64;
        loop {
            let n = match self.inner.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e, || "after the end-of-archive marker".into())),
            };
            seen += n as u64;
            if seen > MAX_TRAILING_ZEROS || buf[..n].iter().any(|&b| b != 0) {
                return Err(SnapshotError::TrailingData);
            }
        }
    }

    fn read_block(&mut self, buf: &mut [u8], context: impl FnOnce() -> String) -> Result<(), SnapshotError> {
        read_exact(&mut self.inner, buf, context)
    }

    /// Reads a whole block; `false` if the stream ended cleanly before it.
    fn read_block_or_eof(&mut self, buf: &mut [u8], context: impl FnOnce() -> String) -> Result<bool, SnapshotError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(SnapshotError::Truncated { context: context() }),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e, context)),
            }
        }
        Ok(true)
    }
}

/// A sparse map being read: regions in order, none overlapping, inside the file.
struct SparseMap<'a> {
    name: &'a str,
    size: u64,
    regions: Vec<Range<u64>>,
    /// Where the last region ended.
    end: u64,
    /// Map entries read, empty ones included.
    count: u64,
}

enum MapError {
    Bad(String),
    TooMany { name: String },
}

impl MapError {
    fn into_error(self, entry: u64) -> SnapshotError {
        match self {
            MapError::Bad(reason) => SnapshotError::BadHeader { entry, reason },
            MapError::TooMany { name } => SnapshotError::TooManyRegions { name, limit: MAX_SPARSE_REGIONS },
        }
    }
}

impl<'a> SparseMap<'a> {
    fn new(name: &'a str, size: u64) -> Self {
        SparseMap { name, size, regions: Vec::new(), end: 0, count: 0 }
    }

    /// Adds a header's slots: filled ones first, then unused (all-NUL) ones only.
    fn add_slots(&mut self, slots: &[tar::GnuSparseHeader]) -> Result<(), MapError> {
        let name = self.name;
        let mut unused = false;
        for slot in slots {
            if slot.is_empty() {
                unused = true;
                continue;
            }
            if unused {
                return Err(MapError::Bad(format!("sparse map of {name} has an entry after an unused slot")));
            }
            self.count += 1;
            if self.count > MAX_SPARSE_REGIONS {
                return Err(MapError::TooMany { name: name.to_owned() });
            }
            let offset = slot.offset().map_err(|e| MapError::Bad(format!("sparse map of {name}: {e}")))?;
            let len = slot.length().map_err(|e| MapError::Bad(format!("sparse map of {name}: {e}")))?;
            let end = offset.checked_add(len).filter(|&end| end <= self.size).ok_or_else(|| {
                MapError::Bad(format!(
                    "sparse map of {name} has a region at {offset}+{len}, past its size {}",
                    self.size
                ))
            })?;
            if offset < self.end {
                return Err(MapError::Bad(format!("sparse map of {name} has regions out of order or overlapping")));
            }
            if len > 0 {
                self.regions.push(offset..end);
                self.end = end;
            }
        }
        Ok(())
    }
}

fn check_checksum(h: &Header) -> Result<(), String> {
    let bytes = h.as_bytes();
    let sum: u64 = bytes[..148].iter().chain(&[b' '; 8]).chain(&bytes[156..]).map(|&b| u64::from(b)).sum();
    let stored = h.cksum().map_err(|e| format!("checksum field: {e}"))?;
    if u64::from(stored) != sum {
        return Err(format!("checksum is {stored}, the header sums to {sum}"));
    }
    Ok(())
}

/// What an entry that is not a regular file is, in words.
fn describe(t: EntryType) -> String {
    match t {
        EntryType::Link => "hard link".into(),
        EntryType::Symlink => "symbolic link".into(),
        EntryType::Char => "character device".into(),
        EntryType::Block => "block device".into(),
        EntryType::Directory => "directory".into(),
        EntryType::Fifo => "fifo".into(),
        EntryType::Continuous => "contiguous file".into(),
        EntryType::GNULongName | EntryType::GNULongLink => "GNU long-name extension".into(),
        EntryType::XHeader | EntryType::XGlobalHeader => "pax extension header".into(),
        other => format!("entry of type {:?}", other.as_byte() as char),
    }
}

/// A plain file name: 1 to 100 bytes from `[A-Za-z0-9._-]`, not `.` or `..`. (No `/`, so no
/// absolute path, no directory and no `..` component.)
fn is_plain_name(name: &[u8]) -> bool {
    let plain = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    !name.is_empty() && name.len() <= 100 && name.iter().all(plain) && name != b"." && name != b".."
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], context: impl FnOnce() -> String) -> Result<(), SnapshotError> {
    r.read_exact(buf).map_err(|e| read_error(e, context))
}

/// A stream that ends early (or a zstd frame that does) is truncated; anything else is a read
/// or decompression error.
fn read_error(e: io::Error, context: impl FnOnce() -> String) -> SnapshotError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        SnapshotError::Truncated { context: context() }
    } else {
        SnapshotError::ArchiveRead(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> Result<Vec<EntryHead>, SnapshotError> {
        let mut r = TarReader::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry(&mut |_, _| Ok(()))? {
            let mut data = vec![0; e.data as usize];
            r.read_data(&mut data, &e.name)?;
            r.skip_padding(e.data, &e.name)?;
            out.push(e);
        }
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn writes_a_sparse_map_that_the_tar_crate_reads_back() {
        // 30 regions: 4 in the header, 21 in the first extension block, 5 (and the end) in a second.
        let regions: Vec<Range<u64>> = (0..30u64).map(|i| i * 8192..i * 8192 + 512).collect();
        let size = 30 * 8192 + 100;
        let mut ar = Vec::new();
        write_sparse_header(&mut ar, "memory.bin", size, &regions, 7).unwrap();
        for i in 0..30u8 {
            ar.extend_from_slice(&[i + 1; 512]);
        }
        write_regular_header(&mut ar, "state.bin", 3, 7).unwrap();
        ar.extend_from_slice(b"abc");
        write_padding(&mut ar, 3).unwrap();
        write_end(&mut ar).unwrap();

        let mut archive = tar::Archive::new(&ar[..]);
        let mut entries = archive.entries().unwrap();
        let mut mem = entries.next().unwrap().unwrap();
        assert_eq!(mem.header().entry_type(), EntryType::GNUSparse);
        let mut content = Vec::new();
        mem.read_to_end(&mut content).unwrap();
        assert_eq!(content.len() as u64, size);
        for i in 0..30usize {
            assert_eq!(content[i * 8192], i as u8 + 1);
            assert_eq!(content[i * 8192 + 511], i as u8 + 1);
            assert_eq!(content[i * 8192 + 512], 0);
        }
        drop(mem);
        let mut state = entries.next().unwrap().unwrap();
        let mut s = String::new();
        state.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");

        let heads = read_all(&ar).unwrap();
        assert_eq!(heads[0].regions, regions);
        assert_eq!((heads[0].size, heads[0].data), (size, 30 * 512));
        assert_eq!((heads[1].name.as_str(), heads[1].size), ("state.bin", 3));
    }

    #[test]
    fn a_fully_sparse_file_has_only_the_end_region() {
        let mut ar = Vec::new();
        write_sparse_header(&mut ar, "hole", 1 << 30, &[], 0).unwrap();
        write_end(&mut ar).unwrap();
        let heads = read_all(&ar).unwrap();
        assert_eq!((heads[0].size, heads[0].data, heads[0].regions.len()), (1 << 30, 0, 0));
    }

    #[test]
    fn sizes_and_offsets_past_8_gib_round_trip() {
        // Octal header fields stop at 8 GiB; past that the tar crate writes base-256.
        let size = 16u64 << 30;
        let at = 12u64 << 30;
        let regions = Vec::from_iter(std::iter::once(at..at + 512));
        let mut ar = Vec::new();
        write_sparse_header(&mut ar, "memory.bin", size, &regions, 0).unwrap();
        ar.extend_from_slice(&[9; 512]);
        write_end(&mut ar).unwrap();
        let heads = read_all(&ar).unwrap();
        assert_eq!(heads[0].size, size);
        assert_eq!(heads[0].regions, regions);
    }

    #[test]
    fn a_corrupt_checksum_is_refused() {
        let mut ar = Vec::new();
        write_regular_header(&mut ar, "a", 0, 0).unwrap();
        ar[0] = b'b';
        write_end(&mut ar).unwrap();
        assert!(matches!(read_all(&ar), Err(SnapshotError::BadHeader { entry: 1, .. })));
    }

    fn sparse_with_map(map: &[(u64, u64)], size: u64, data: u64) -> Vec<u8> {
        let mut h = base_header("m", 0).unwrap();
        h.set_entry_type(EntryType::GNUSparse);
        h.set_size(data);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.set_real_size(size);
        for (slot, &(o, l)) in gnu.sparse.iter_mut().zip(map) {
            slot.set_offset(o);
            slot.set_length(l);
        }
        h.set_cksum();
        let mut ar = h.as_bytes().to_vec();
        ar.resize(ar.len() + (data.div_ceil(512) * 512) as usize, 1);
        write_end(&mut ar).unwrap();
        ar
    }

    #[test]
    fn bad_sparse_maps_are_refused() {
        let bad = |map: &[(u64, u64)], size, data| {
            let err = read_all(&sparse_with_map(map, size, data)).unwrap_err();
            assert!(matches!(err, SnapshotError::BadHeader { .. }), "{map:?}: {err:?}");
        };
        bad(&[(1024, 512), (0, 512)], 4096, 1024); // out of order
        bad(&[(0, 1024), (512, 512)], 4096, 1536); // overlapping
        bad(&[(4000, 512)], 4096, 512); // past the end
        bad(&[(u64::MAX - 10, 512)], 4096, 512); // overflowing
        bad(&[(0, 512)], 4096, 1024); // data the map does not place
        bad(&[(0, 512)], 256, 512); // more data than the file
        read_all(&sparse_with_map(&[(0, 512), (2048, 100), (4096, 0)], 4096, 612)).unwrap();
    }

    #[test]
    fn eof_before_the_end_marker_is_truncation() {
        let mut ar = Vec::new();
        write_regular_header(&mut ar, "a", 1, 0).unwrap();
        ar.push(b'x');
        write_padding(&mut ar, 1).unwrap();
        assert!(matches!(read_all(&ar), Err(SnapshotError::Truncated { .. })));
        assert!(matches!(read_all(&ar[..700]), Err(SnapshotError::Truncated { .. })));
        assert!(matches!(read_all(&ar[..100]), Err(SnapshotError::Truncated { .. })));
        assert!(matches!(read_all(&[]), Err(SnapshotError::EmptyArchive)));
    }

    #[test]
    fn only_zeros_may_follow_the_end() {
        let mut ar = Vec::new();
        write_end(&mut ar).unwrap();
        ar.extend_from_slice(&[0; 9216]);
        read_all(&ar).unwrap();
        ar.push(1);
        assert!(matches!(read_all(&ar), Err(SnapshotError::TrailingData)));
    }

    #[test]
    fn plain_names() {
        for ok in ["manifest.json", "a", "disk-0.qcow2", "A_b"] {
            assert!(is_plain_name(ok.as_bytes()), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "sp ace", "x\u{e9}"] {
            assert!(!is_plain_name(bad.as_bytes()), "{bad}");
        }
    }
}
