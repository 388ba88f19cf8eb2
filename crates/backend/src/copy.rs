//! Copying large, sparse files (disks, guest memory) as cheaply as the filesystem allows: shared
//! extents where it can (`FICLONE`), else only the data regions (`SEEK_DATA`/`SEEK_HOLE`).

use std::io;
use std::path::Path;

/// How [`copy_file`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// The copy shares the source's extents (`FICLONE`).
    Reflink,
    /// The source's data regions were copied, holes kept.
    Sparse,
}

/// Copies `src` to the new file `dest` (never overwritten): a reflink where the filesystem can
/// share extents, else a sparse copy. A failed copy leaves no `dest`.
pub fn copy_file(src: &Path, dest: &Path) -> io::Result<CopyKind> {
    use std::os::fd::AsRawFd;
    let from = std::fs::File::open(src)?;
    let to = std::fs::File::create_new(dest)?;
    // SAFETY: FICLONE takes the source descriptor as its argument; both files are open.
    if unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0 {
        return Ok(CopyKind::Reflink);
    }
    if let Err(e) = sparse_copy(&from, &to) {
        let _ = std::fs::remove_file(dest);
        return Err(e);
    }
    Ok(CopyKind::Sparse)
}

/// Copies the data regions of `src` (found with `SEEK_DATA`/`SEEK_HOLE`), leaving holes as holes.
fn sparse_copy(src: &std::fs::File, dst: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let len = src.metadata()?.len();
    dst.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos: i64 = 0;
    let end = i64::try_from(len).map_err(io::Error::other)?;
    while pos < end {
        // SAFETY: lseek on an open descriptor has no memory effects.
        let data = unsafe { libc::lseek(src.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // no more data: the rest is a hole
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(src.as_raw_fd(), data, libc::SEEK_HOLE) }.min(end);
        let mut at = data;
        while at < hole {
            let n = usize::try_from((hole - at).min(buf.len() as i64)).map_err(io::Error::other)?;
            let offset = u64::try_from(at).map_err(io::Error::other)?;
            src.read_exact_at(&mut buf[..n], offset)?;
            dst.write_all_at(&buf[..n], offset)?;
            at += n as i64;
        }
        pos = hole;
    }
    dst.sync_all()
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    #[test]
    fn test_copy_keeps_data_and_holes_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut f = std::fs::File::create(&src).unwrap();
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(64 << 20)).unwrap();
        f.write_all(b"tail").unwrap();
        drop(f);
        let dest = dir.path().join("copy");
        let kind = copy_file(&src, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&src).unwrap());
        if kind == CopyKind::Sparse {
            use std::os::unix::fs::MetadataExt;
            let blocks = std::fs::metadata(&dest).unwrap().blocks();
            assert!(blocks * 512 < 1 << 20, "the 64 MiB hole was written out: {blocks} blocks");
        }
        assert!(copy_file(&src, &dest).is_err(), "an existing file is never overwritten");
    }
}
