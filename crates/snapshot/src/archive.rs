//! The portable snapshot archive: a zstd-compressed tar of a snapshot directory, `manifest.json`
//! first, then every listed file in the manifest's order; sparse files (guest memory, disks) as
//! old-GNU sparse entries holding only their data regions. Owns [`export`] and [`import`], the
//! latter safe on hostile input: it unpacks into a fresh `.import-*` directory inside the
//! snapshots directory, accepts only regular files with plain names that the manifest lists,
//! refuses sizes over [`ImportLimits`] before writing them, recreates holes as holes, checks
//! every file's size and SHA-256, and only then renames the directory to the snapshot's id.
//! On any failure nothing is left behind.
//!
//! GNU tar reads these archives: `zstd -dc snap.tar.zst | tar -xSf -`.

mod tarfmt;

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::sync::mpsc;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, RenameFlags, renameat2};
use sha2::{Digest as _, Sha256};

pub use self::tarfmt::MAX_SPARSE_REGIONS;
use crate::error::SnapshotError;
use crate::manifest::{MANIFEST_FILE, MAX_MANIFEST_BYTES, Manifest, open_listed, sync_dir};
use crate::sparse::{self, CHUNK};

/// The zstd level archives are written with: fast, and most of a snapshot is either holes
/// (never compressed) or guest memory that compresses well at any level.
pub const ZSTD_LEVEL: i32 = 1;
/// The largest zstd window an import accepts (2^27 = 128 MiB, zstd's default limit), which
/// bounds a decompressor's memory.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// The prefix of the temporary directories [`import`] unpacks into; whatever a killed import
/// left behind is safe to remove.
pub const IMPORT_DIR_PREFIX: &str = ".import-";

/// What [`export`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportStats {
    /// Entries in the archive, `manifest.json` included.
    pub files: u64,
    /// The listed files' logical sizes added up (holes included).
    pub logical_bytes: u64,
    /// Bytes of file data stored (holes excluded), before compression.
    pub data_bytes: u64,
    /// Bytes written to `out`: the archive's size.
    pub archive_bytes: u64,
}

/// How much an [`import`] accepts. Sizes are logical (holes count), as a hostile archive could
/// otherwise claim a huge sparse file that costs little disk but much time to hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// The most bytes all files together may hold, `manifest.json` included.
    pub max_total_bytes: u64,
    /// The most files the archive may hold, `manifest.json` included.
    pub max_files: u64,
}

impl Default for ImportLimits {
    /// 1 TiB and 64 files.
    fn default() -> Self {
        ImportLimits { max_total_bytes: 1 << 40, max_files: 64 }
    }
}

/// Writes the snapshot in `dir` to `out` as a zstd-compressed tar (level [`ZSTD_LEVEL`],
/// compressed on as many threads as there are CPUs): `manifest.json` as it is on disk, then
/// every listed file, sparse files as GNU sparse entries whose holes are neither read nor
/// stored. `progress`, if given, is called as the files' logical bytes are done (holes count
/// when skipped), with the total. The manifest is validated and each file's size checked
/// before anything is written; checksums are not computed here but checked on import (use
/// [`Manifest::verify`] first for an archive known to be good).
pub fn export(dir: &Path, out: impl Write, progress: Option<&dyn Fn(u64, u64)>) -> Result<ExportStats, SnapshotError> {
    let (manifest, manifest_bytes) = Manifest::read_with_bytes(dir)?;
    let mut sources = Vec::with_capacity(manifest.files.len());
    for f in &manifest.files {
        let file = open_listed(dir, &f.name)?;
        let path = dir.join(&f.name);
        let actual = file.metadata().map_err(SnapshotError::io("stat", &path))?.len();
        if actual != f.size {
            return Err(SnapshotError::SizeMismatch { name: f.name.clone(), expected: f.size, actual });
        }
        let regions = sparse::data_regions(&file, f.size).map_err(SnapshotError::io("find the data of", &path))?;
        sources.push((f, file, sparse::align_regions(regions, f.size)));
    }

    let total = manifest.total_size();
    let mtime = manifest.created_at_ms / 1000;
    let mut enc = zstd::stream::write::Encoder::new(Counting { inner: out, count: 0 }, ZSTD_LEVEL)
        .map_err(SnapshotError::ArchiveWrite)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(64) as u32;
    enc.multithread(threads).map_err(SnapshotError::ArchiveWrite)?;
    enc.include_checksum(true).map_err(SnapshotError::ArchiveWrite)?;

    let w = SnapshotError::ArchiveWrite;
    tarfmt::write_regular_header(&mut enc, MANIFEST_FILE, manifest_bytes.len() as u64, mtime).map_err(w)?;
    enc.write_all(&manifest_bytes).map_err(w)?;
    tarfmt::write_padding(&mut enc, manifest_bytes.len() as u64).map_err(w)?;

    let mut stats = ExportStats { files: 1, logical_bytes: total, data_bytes: 0, archive_bytes: 0 };
    let mut done = 0u64;
    let mut buf = vec![0u8; CHUNK];
    for (f, file, regions) in &sources {
        let dense = f.size == 0 || (regions.len() == 1 && regions[0] == (0..f.size));
        if dense {
            tarfmt::write_regular_header(&mut enc, &f.name, f.size, mtime).map_err(w)?;
        } else {
            tarfmt::write_sparse_header(&mut enc, &f.name, f.size, regions, mtime).map_err(w)?;
        }
        let mut data = 0u64;
        let mut pos = 0u64;
        for r in regions {
            done += r.start - pos;
            let mut off = r.start;
            while off < r.end {
                let n = (r.end - off).min(CHUNK as u64) as usize;
                file.read_exact_at(&mut buf[..n], off).map_err(SnapshotError::io("read", dir.join(&f.name)))?;
                enc.write_all(&buf[..n]).map_err(w)?;
                off += n as u64;
                done += n as u64;
                if let Some(p) = progress {
                    p(done, total);
                }
            }
            data += r.end - r.start;
            pos = r.end;
        }
        done += f.size - pos;
        if let Some(p) = progress {
            p(done, total);
        }
        tarfmt::write_padding(&mut enc, data).map_err(w)?;
        stats.files += 1;
        stats.data_bytes += data;
    }
    tarfmt::write_end(&mut enc).map_err(w)?;
    let mut counting = enc.finish().map_err(w)?;
    counting.flush().map_err(w)?;
    stats.archive_bytes = counting.count;
    Ok(stats)
}

/// Reads a snapshot archive from `input` and registers it as `snapshots_dir/<id>`, returning
/// its manifest. See the module documentation for what is checked; a snapshot of the same id
/// already there is refused ([`SnapshotError::AlreadyExists`]). On failure `snapshots_dir` is
/// left as it was.
pub fn import(input: impl Read, snapshots_dir: &Path, limits: &ImportLimits) -> Result<Manifest, SnapshotError> {
    let tmp = tempfile::Builder::new()
        .prefix(IMPORT_DIR_PREFIX)
        .tempdir_in(snapshots_dir)
        .map_err(SnapshotError::io("create a directory in", snapshots_dir))?;
    // On any error below, dropping `tmp` removes it and what was unpacked into it.
    let manifest = unpack(input, tmp.path(), snapshots_dir, limits)?;
    let dest = snapshots_dir.join(&manifest.id);
    match renameat2(AT_FDCWD, tmp.path(), AT_FDCWD, &dest, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => {}
        Err(Errno::EEXIST | Errno::ENOTEMPTY) => return Err(SnapshotError::AlreadyExists { id: manifest.id }),
        // A file system without RENAME_NOREPLACE: check, then rename (a race loses only to
        // another import of the same id, and rename refuses a non-empty target).
        Err(Errno::EINVAL | Errno::ENOSYS) => {
            if dest.symlink_metadata().is_ok() {
                return Err(SnapshotError::AlreadyExists { id: manifest.id });
            }
            std::fs::rename(tmp.path(), &dest).map_err(SnapshotError::io("rename into place", &dest))?;
        }
        Err(e) => return Err(SnapshotError::Io { op: "rename into place", path: dest, source: e.into() }),
    }
    // It is in place now: the temporary directory is gone, nothing to clean up.
    let _ = tmp.keep();
    // Best effort: the snapshot is complete and registered either way.
    let _ = sync_dir(snapshots_dir);
    Ok(manifest)
}

/// Unpacks and checks an archive into `dir` (empty); returns its manifest.
fn unpack(
    input: impl Read,
    dir: &Path,
    snapshots_dir: &Path,
    limits: &ImportLimits,
) -> Result<Manifest, SnapshotError> {
    let mut decoder = zstd::stream::read::Decoder::new(input).map_err(SnapshotError::ArchiveRead)?;
    decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(SnapshotError::ArchiveRead)?;
    let mut tar = tarfmt::TarReader::new(decoder);

    // The manifest, first, small, and within the limits.
    let mut check_manifest = |name: &str, size: u64| {
        if name != MANIFEST_FILE {
            return Err(SnapshotError::ManifestNotFirst { first: name.to_owned() });
        }
        if size > MAX_MANIFEST_BYTES {
            return Err(SnapshotError::ManifestTooLarge { size, limit: MAX_MANIFEST_BYTES });
        }
        if size > limits.max_total_bytes {
            return Err(SnapshotError::TooLarge { total: size, limit: limits.max_total_bytes });
        }
        Ok(())
    };
    let head = tar.next_entry(&mut check_manifest)?.ok_or(SnapshotError::EmptyArchive)?;
    if head.regions.len() > 1 || head.data != head.size {
        // A sparse manifest: legal tar, but not what export writes; refuse rather than expand.
        return Err(SnapshotError::UnsupportedEntryType { name: head.name, kind: "sparse file".into() });
    }
    let mut manifest_bytes = vec![0u8; head.size as usize];
    tar.read_data(&mut manifest_bytes, MANIFEST_FILE)?;
    tar.skip_padding(head.data, MANIFEST_FILE)?;
    let manifest = Manifest::from_json(&manifest_bytes, Path::new(MANIFEST_FILE))?;
    let count = manifest.files.len() as u64 + 1;
    if count > limits.max_files {
        return Err(SnapshotError::TooManyFiles { count, limit: limits.max_files });
    }
    let total = manifest.total_size().saturating_add(head.size);
    if total > limits.max_total_bytes {
        return Err(SnapshotError::TooLarge { total, limit: limits.max_total_bytes });
    }
    if snapshots_dir.join(&manifest.id).symlink_metadata().is_ok() {
        return Err(SnapshotError::AlreadyExists { id: manifest.id });
    }
    let manifest_file = create(dir, MANIFEST_FILE)?;
    manifest_file.write_all_at(&manifest_bytes, 0).map_err(SnapshotError::io("write", dir.join(MANIFEST_FILE)))?;
    manifest_file.sync_all().map_err(SnapshotError::io("sync", dir.join(MANIFEST_FILE)))?;

    // Then the listed files, each once, each of its listed size, refused before any byte of
    // it is written if not.
    let mut received: HashSet<String> = HashSet::with_capacity(manifest.files.len());
    let mut written = Vec::with_capacity(manifest.files.len());
    loop {
        let mut check_file = |name: &str, size: u64| {
            if name == MANIFEST_FILE || received.contains(name) {
                return Err(SnapshotError::DuplicateEntry { name: name.to_owned() });
            }
            let listed = manifest.file(name).ok_or_else(|| SnapshotError::NotInManifest { name: name.to_owned() })?;
            if size != listed.size {
                return Err(SnapshotError::SizeMismatch { name: name.to_owned(), expected: listed.size, actual: size });
            }
            Ok(())
        };
        let Some(head) = tar.next_entry(&mut check_file)? else { break };
        let listed = manifest.file(&head.name).expect("checked by check_file");
        let file = create(dir, &head.name)?;
        let path = dir.join(&head.name);
        let sha256 = unpack_data(&mut tar, &head, &file, &path)?;
        tar.skip_padding(head.data, &head.name)?;
        if sha256 != listed.sha256 {
            return Err(SnapshotError::ChecksumMismatch {
                name: head.name,
                expected: listed.sha256.clone(),
                actual: sha256,
            });
        }
        received.insert(head.name);
        written.push((file, path));
    }
    tar.finish()?;
    if let Some(missing) = manifest.files.iter().find(|f| !received.contains(&f.name)) {
        return Err(SnapshotError::MissingEntry { name: missing.name.clone() });
    }
    // Flushed together at the end, so that the disk writes of one file overlap the next's.
    for (file, path) in written {
        file.sync_all().map_err(SnapshotError::io("sync", path))?;
    }
    sync_dir(dir)?;
    Ok(manifest)
}

/// Writes an entry's data regions into `file` at their offsets, leaving holes between them
/// unwritten, sets its length, and returns the SHA-256 of its logical content. The hashing
/// runs on a second thread, fed the data as it is written (and the holes' lengths), so that
/// it overlaps decompression.
fn unpack_data<R: Read>(
    tar: &mut tarfmt::TarReader<R>,
    head: &tarfmt::EntryHead,
    file: &File,
    path: &Path,
) -> Result<String, SnapshotError> {
    let (to_hasher, pieces) = mpsc::sync_channel::<Piece>(HASH_BUFFERS);
    let (recycle, buffers) = mpsc::channel::<Vec<u8>>();
    for _ in 0..HASH_BUFFERS {
        recycle.send(vec![0u8; CHUNK]).expect("the receiver is here");
    }
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut hasher = Sha256::new();
            for piece in pieces {
                match piece {
                    Piece::Zeros(len) => sparse::hash_zeros(&mut hasher, len),
                    Piece::Data(buf, len) => {
                        hasher.update(&buf[..len]);
                        // The writer may be gone after an error; the buffer is then dropped.
                        let _ = recycle.send(buf);
                    }
                }
            }
            hex::encode(hasher.finalize())
        });
        let written = (|| {
            let mut pos = 0u64;
            for r in &head.regions {
                send(&to_hasher, Piece::Zeros(r.start - pos))?;
                let mut off = r.start;
                while off < r.end {
                    let mut buf = buffers.recv().map_err(|_| hasher_gone())?;
                    let n = (r.end - off).min(buf.len() as u64) as usize;
                    tar.read_data(&mut buf[..n], &head.name)?;
                    file.write_all_at(&buf[..n], off).map_err(SnapshotError::io("write", path))?;
                    send(&to_hasher, Piece::Data(buf, n))?;
                    off += n as u64;
                }
                pos = r.end;
            }
            send(&to_hasher, Piece::Zeros(head.size - pos))?;
            file.set_len(head.size).map_err(SnapshotError::io("resize", path))
        })();
        drop(to_hasher);
        let sha256 = hasher.join().map_err(|_| hasher_gone())?;
        written.map(|()| sha256)
    })
}

/// Buffers of [`CHUNK`] bytes in flight between the writer and the hasher.
const HASH_BUFFERS: usize = 4;

/// What the hasher is fed: a hole's length, or a buffer and how much of it is data.
enum Piece {
    Zeros(u64),
    Data(Vec<u8>, usize),
}

fn send(to_hasher: &mpsc::SyncSender<Piece>, piece: Piece) -> Result<(), SnapshotError> {
    to_hasher.send(piece).map_err(|_| hasher_gone())
}

fn hasher_gone() -> SnapshotError {
    SnapshotError::ArchiveWrite(io::Error::other("the hashing thread died"))
}

/// Creates `dir/name`, which must not exist, readable by its owner only.
fn create(dir: &Path, name: &str) -> Result<File, SnapshotError> {
    let path = dir.join(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .map_err(SnapshotError::io("create", path))
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests;
