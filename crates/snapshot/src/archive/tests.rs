use std::cell::RefCell;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::Command;

use tar::{EntryType, Header};

use super::*;
use crate::manifest::tests::{ID, sample};
use crate::manifest::{FileEntry, FileKind};

const MIB: u64 = 1 << 20;

/// Deterministic bytes that do not compress (xorshift).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A snapshot directory: a 64 MiB memory file with three data regions, a dense state file, a
/// sparse disk, and the manifest describing them.
fn snapshot_dir() -> (tempfile::TempDir, Manifest) {
    let dir = tempfile::tempdir().unwrap();
    let mem = File::create(dir.path().join("memory.bin")).unwrap();
    mem.set_len(64 * MIB).unwrap();
    mem.write_all_at(&noise(1, 256 * 1024), 0).unwrap();
    mem.write_all_at(&noise(2, MIB as usize), 17 * MIB).unwrap();
    mem.write_all_at(&noise(3, 64 * 1024), 63 * MIB).unwrap();
    fs::write(dir.path().join("state.bin"), noise(4, 300_001)).unwrap();
    let disk = File::create(dir.path().join("disk.raw")).unwrap();
    disk.set_len(8 * MIB + 100).unwrap();
    disk.write_all_at(b"boot sector", 0).unwrap();
    let files = [("memory.bin", FileKind::Memory), ("state.bin", FileKind::State), ("disk.raw", FileKind::Disk)]
        .map(|(name, kind)| FileEntry::compute(dir.path(), name, kind).unwrap())
        .to_vec();
    let m = sample(files);
    m.write(dir.path()).unwrap();
    (dir, m)
}

fn export_to_vec(dir: &Path) -> (Vec<u8>, ExportStats) {
    let mut out = Vec::new();
    let stats = export(dir, &mut out, None).unwrap();
    (out, stats)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn export_import_round_trip_keeps_content_and_holes() {
    let (src, manifest) = snapshot_dir();
    let src_mem = fs::metadata(src.path().join("memory.bin")).unwrap();
    assert!(src_mem.blocks() * 512 < 8 * MIB, "the test file system must keep holes: {} blocks", src_mem.blocks());

    let calls = RefCell::new(Vec::new());
    let progress = |done, total| calls.borrow_mut().push((done, total));
    let mut archive = Vec::new();
    let stats = export(src.path(), &mut archive, Some(&progress)).unwrap();
    let total = manifest.total_size();
    assert_eq!(stats.files, 4);
    assert_eq!(stats.logical_bytes, total);
    assert_eq!(stats.archive_bytes, archive.len() as u64);
    assert!(stats.data_bytes < 4 * MIB, "{stats:?}");
    // Holes are not stored: the archive is about the size of the data, which does not compress.
    assert!(archive.len() < 3 * MIB as usize, "archive is {} bytes", archive.len());
    let calls = calls.into_inner();
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "progress went backwards");
    assert_eq!(calls.last(), Some(&(total, total)));

    let snapshots = tempfile::tempdir().unwrap();
    let imported = import(&archive[..], snapshots.path(), &ImportLimits::default()).unwrap();
    assert_eq!(imported, manifest);
    assert_eq!(listing(snapshots.path()), [ID]);
    let dest = snapshots.path().join(ID);
    assert_eq!(listing(&dest), ["disk.raw", "manifest.json", "memory.bin", "state.bin"]);
    assert_eq!(fs::read(dest.join(MANIFEST_FILE)).unwrap(), fs::read(src.path().join(MANIFEST_FILE)).unwrap());
    imported.verify(&dest).unwrap();
    for name in ["memory.bin", "state.bin", "disk.raw"] {
        assert_eq!(fs::read(dest.join(name)).unwrap(), fs::read(src.path().join(name)).unwrap(), "{name}");
    }
    let mem = fs::metadata(dest.join("memory.bin")).unwrap();
    assert_eq!(mem.len(), 64 * MIB);
    assert!(mem.blocks() * 512 < 4 * MIB, "holes were filled: {} blocks", mem.blocks());
    let disk = fs::metadata(dest.join("disk.raw")).unwrap();
    assert_eq!(disk.len(), 8 * MIB + 100);
    assert!(disk.blocks() * 512 < MIB, "holes were filled: {} blocks", disk.blocks());
    assert_eq!(mem.mode() & 0o777, 0o600);
}

#[test]
fn export_refuses_a_file_whose_size_changed() {
    let (src, _) = snapshot_dir();
    fs::write(src.path().join("state.bin"), b"short").unwrap();
    let mut out = Vec::new();
    let err = export(src.path(), &mut out, None).unwrap_err();
    assert!(
        matches!(&err, SnapshotError::SizeMismatch { name, expected: 300_001, actual: 5 } if name == "state.bin"),
        "{err:?}"
    );
    assert!(out.is_empty());
}

#[test]
fn gnu_tar_extracts_the_archive_with_its_holes() {
    let have = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !have("tar") || !have("zstd") {
        eprintln!("skipped: GNU tar or zstd is not installed");
        return;
    }
    let (src, _) = snapshot_dir();
    let archive = tempfile::NamedTempFile::new().unwrap();
    export(src.path(), archive.as_file(), None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dcq {} | tar -xSf - -C {}", archive.path().display(), out.path().display()))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(listing(out.path()), ["disk.raw", "manifest.json", "memory.bin", "state.bin"]);
    for name in ["memory.bin", "state.bin", "disk.raw"] {
        assert_eq!(fs::read(out.path().join(name)).unwrap(), fs::read(src.path().join(name)).unwrap(), "{name}");
    }
}

#[test]
fn imports_what_gnu_tar_writes() {
    let have = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !have("tar") || !have("zstd") {
        eprintln!("skipped: GNU tar or zstd is not installed");
        return;
    }
    let (src, manifest) = snapshot_dir();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar --format=gnu --sparse -cf - -C {} manifest.json memory.bin state.bin disk.raw | zstd -1 -q -c",
            src.path().display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    let snapshots = tempfile::tempdir().unwrap();
    assert_eq!(import(&out.stdout[..], snapshots.path(), &ImportLimits::default()).unwrap(), manifest);
    let mem = fs::metadata(snapshots.path().join(ID).join("memory.bin")).unwrap();
    assert!(mem.blocks() * 512 < 4 * MIB, "holes were filled: {} blocks", mem.blocks());
}

#[test]
fn import_refuses_an_existing_snapshot() {
    let (src, _) = snapshot_dir();
    let (archive, _) = export_to_vec(src.path());
    let snapshots = tempfile::tempdir().unwrap();
    import(&archive[..], snapshots.path(), &ImportLimits::default()).unwrap();
    let err = import(&archive[..], snapshots.path(), &ImportLimits::default()).unwrap_err();
    assert!(matches!(&err, SnapshotError::AlreadyExists { id } if id == ID), "{err:?}");
    assert_eq!(err.to_string(), format!("snapshot {ID} already exists"));
    assert_eq!(listing(snapshots.path()), [ID]);
}

// Hostile archives, built by hand with the tar crate's header types.

/// A small valid snapshot's parts: its manifest's JSON and its one file.
fn small() -> (Vec<u8>, Vec<u8>) {
    let data = b"device state".to_vec();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("memory.bin"), &data).unwrap();
    let entry = FileEntry::compute(dir.path(), "memory.bin", FileKind::Memory).unwrap();
    (serde_json::to_vec(&sample(vec![entry])).unwrap(), data)
}

/// Appends an entry whose header holds `name` verbatim (the tar crate's `set_path` would
/// refuse the hostile ones).
fn raw_entry(ar: &mut Vec<u8>, name: &[u8], kind: EntryType, data: &[u8]) {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o600);
    h.set_cksum();
    ar.extend_from_slice(h.as_bytes());
    ar.extend_from_slice(data);
    ar.resize(ar.len().div_ceil(512) * 512, 0);
}

fn end(mut ar: Vec<u8>) -> Vec<u8> {
    ar.extend_from_slice(&[0; 1024]);
    ar
}

fn zst(tar: &[u8]) -> Vec<u8> {
    zstd::encode_all(tar, 1).unwrap()
}

/// The valid small archive, uncompressed.
fn small_tar() -> Vec<u8> {
    let (manifest, data) = small();
    let mut ar = Vec::new();
    raw_entry(&mut ar, b"manifest.json", EntryType::Regular, &manifest);
    raw_entry(&mut ar, b"memory.bin", EntryType::Regular, &data);
    end(ar)
}

/// Imports `archive` into a fresh snapshots directory, expects an error, and checks that the
/// directory is left empty.
fn refused(archive: &[u8], limits: ImportLimits) -> SnapshotError {
    let snapshots = tempfile::tempdir().unwrap();
    let err = import(archive, snapshots.path(), &limits).expect_err("a hostile archive was imported");
    assert_eq!(listing(snapshots.path()), Vec::<String>::new(), "left behind after {err:?}");
    err
}

fn refused_tar(tar: &[u8]) -> SnapshotError {
    refused(&zst(tar), ImportLimits::default())
}

/// The small manifest, then `extra` entries, then the end.
fn after_manifest(extra: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let (manifest, _) = small();
    let mut ar = Vec::new();
    raw_entry(&mut ar, b"manifest.json", EntryType::Regular, &manifest);
    extra(&mut ar);
    end(ar)
}

#[test]
fn the_small_archive_imports() {
    let snapshots = tempfile::tempdir().unwrap();
    let m = import(&zst(&small_tar())[..], snapshots.path(), &ImportLimits::default()).unwrap();
    assert_eq!(fs::read(snapshots.path().join(&m.id).join("memory.bin")).unwrap(), b"device state");
}

#[test]
fn hostile_parent_path() {
    let err = refused_tar(&after_manifest(|ar| raw_entry(ar, b"../escape", EntryType::Regular, b"x")));
    assert!(matches!(&err, SnapshotError::UnsafeEntryName { name } if name == "../escape"), "{err:?}");
    let err = refused_tar(&after_manifest(|ar| raw_entry(ar, b"sub/../../escape", EntryType::Regular, b"x")));
    assert!(matches!(&err, SnapshotError::UnsafeEntryName { .. }), "{err:?}");
}

#[test]
fn hostile_absolute_path() {
    let err = refused_tar(&after_manifest(|ar| raw_entry(ar, b"/tmp/evil", EntryType::Regular, b"x")));
    assert!(matches!(&err, SnapshotError::UnsafeEntryName { name } if name == "/tmp/evil"), "{err:?}");
}

#[test]
fn hostile_symlink() {
    let mut b = tar::Builder::new(Vec::new());
    let (manifest, _) = small();
    let mut h = Header::new_gnu();
    h.set_size(manifest.len() as u64);
    h.set_cksum();
    b.append_data(&mut h, "manifest.json", &manifest[..]).unwrap();
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "memory.bin", "/etc/shadow").unwrap();
    let err = refused_tar(&b.into_inner().unwrap());
    assert!(
        matches!(&err, SnapshotError::UnsupportedEntryType { name, kind } if name == "memory.bin" && kind == "symbolic link"),
        "{err:?}"
    );
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[test]
fn hostile_hard_link() {
    let err = refused_tar(&after_manifest(|ar| raw_entry(ar, b"memory.bin", EntryType::Link, b"")));
    assert!(matches!(&err, SnapshotError::UnsupportedEntryType { kind, .. } if kind == "hard link"), "{err:?}");
}

#[test]
fn hostile_device() {
    let err = refused_tar(&after_manifest(|ar| raw_entry(ar, b"memory.bin", EntryType::Char, b"")));
    assert!(matches!(&err, SnapshotError::UnsupportedEntryType { kind, .. } if kind == "character device"), "{err:?}");
    let err = refused_tar(&after_manifest(|ar| raw_entry(ar, b"memory.bin", EntryType::Block, b"")));
    assert!(matches!(&err, SnapshotError::UnsupportedEntryType { kind, .. } if kind == "block device"), "{err:?}");
}

#[test]
fn hostile_directory_and_extension_headers() {
    let err = refused_tar(&after_manifest(|ar| raw_entry(ar, b"memory.bin", EntryType::Directory, b"")));
    assert!(matches!(&err, SnapshotError::UnsupportedEntryType { kind, .. } if kind == "directory"), "{err:?}");
    let err = refused_tar(&after_manifest(|ar| raw_entry(ar, b"pax", EntryType::XHeader, b"20 path=../../evil\n")));
    assert!(matches!(&err, SnapshotError::UnsupportedEntryType { kind, .. } if kind == "pax extension header"));
    let err = refused_tar(&after_manifest(|ar| raw_entry(ar, b"././@LongLink", EntryType::GNULongName, b"x\0")));
    assert!(matches!(&err, SnapshotError::UnsupportedEntryType { kind, .. } if kind == "GNU long-name extension"));
}

#[test]
fn hostile_manifest_not_first() {
    let (manifest, data) = small();
    let mut ar = Vec::new();
    raw_entry(&mut ar, b"memory.bin", EntryType::Regular, &data);
    raw_entry(&mut ar, b"manifest.json", EntryType::Regular, &manifest);
    let err = refused_tar(&end(ar));
    assert!(matches!(&err, SnapshotError::ManifestNotFirst { first } if first == "memory.bin"), "{err:?}");
}

#[test]
fn hostile_file_not_in_manifest() {
    let err = refused_tar(&after_manifest(|ar| raw_entry(ar, b"authorized_keys", EntryType::Regular, b"ssh-rsa")));
    assert!(matches!(&err, SnapshotError::NotInManifest { name } if name == "authorized_keys"), "{err:?}");
}

#[test]
fn hostile_checksum_mismatch() {
    let err = refused_tar(&after_manifest(|ar| raw_entry(ar, b"memory.bin", EntryType::Regular, b"device STATE")));
    assert!(matches!(&err, SnapshotError::ChecksumMismatch { name, .. } if name == "memory.bin"), "{err:?}");
}

#[test]
fn hostile_size_other_than_listed() {
    let err = refused_tar(&after_manifest(|ar| raw_entry(ar, b"memory.bin", EntryType::Regular, b"device state!")));
    assert!(
        matches!(&err, SnapshotError::SizeMismatch { name, expected: 12, actual: 13 } if name == "memory.bin"),
        "{err:?}"
    );
}

#[test]
fn hostile_duplicate_and_missing_entries() {
    let (_, data) = small();
    let err = refused_tar(&after_manifest(|ar| {
        raw_entry(ar, b"memory.bin", EntryType::Regular, &data);
        raw_entry(ar, b"memory.bin", EntryType::Regular, &data);
    }));
    assert!(matches!(&err, SnapshotError::DuplicateEntry { name } if name == "memory.bin"), "{err:?}");
    let (manifest, _) = small();
    let err = refused_tar(&after_manifest(|ar| raw_entry(ar, b"manifest.json", EntryType::Regular, &manifest)));
    assert!(matches!(&err, SnapshotError::DuplicateEntry { name } if name == "manifest.json"), "{err:?}");
    let err = refused_tar(&after_manifest(|_| {}));
    assert!(matches!(&err, SnapshotError::MissingEntry { name } if name == "memory.bin"), "{err:?}");
}

#[test]
fn hostile_oversize_claims_are_refused_before_reading_on() {
    // The manifest claims a 1 TiB memory file; the limit is 1 GiB. The stream ends right after
    // the manifest: an importer that read on would call it truncated instead.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("memory.bin"), b"").unwrap();
    let mut entry = FileEntry::compute(dir.path(), "memory.bin", FileKind::Memory).unwrap();
    entry.size = 1 << 40;
    let manifest = serde_json::to_vec(&sample(vec![entry])).unwrap();
    let mut ar = Vec::new();
    raw_entry(&mut ar, b"manifest.json", EntryType::Regular, &manifest);
    let limits = ImportLimits { max_total_bytes: 1 << 30, max_files: 8 };
    let err = refused(&zst(&ar), limits);
    assert!(matches!(err, SnapshotError::TooLarge { total, limit: 1073741824 } if total > 1 << 40), "{err:?}");

    // A header claims more than the manifest lists, and no data follows it.
    let mut ar = after_manifest(|_| {});
    ar.truncate(ar.len() - 1024);
    let mut h = Header::new_gnu();
    h.set_path("memory.bin").unwrap();
    h.set_size(1 << 40);
    h.set_cksum();
    ar.extend_from_slice(h.as_bytes());
    let err = refused_tar(&ar);
    assert!(matches!(err, SnapshotError::SizeMismatch { expected: 12, actual: 1099511627776, .. }), "{err:?}");

    // A manifest larger than any manifest may be, claimed by its header alone.
    let mut h = Header::new_gnu();
    h.set_path("manifest.json").unwrap();
    h.set_size(1 << 40);
    h.set_cksum();
    let err = refused_tar(h.as_bytes());
    assert!(matches!(err, SnapshotError::ManifestTooLarge { size: 1099511627776, .. }), "{err:?}");

    // The limit counts the manifest too, and files.
    let err = refused(&zst(&small_tar()), ImportLimits { max_total_bytes: 100, max_files: 8 });
    assert!(matches!(err, SnapshotError::TooLarge { limit: 100, .. }), "{err:?}");
    let err = refused(&zst(&small_tar()), ImportLimits { max_total_bytes: 1 << 30, max_files: 1 });
    assert!(matches!(err, SnapshotError::TooManyFiles { count: 2, limit: 1 }), "{err:?}");
}

#[test]
fn hostile_sparse_claim_beyond_limits() {
    // A sparse entry whose real size is huge: refused from its header, before its map.
    let mut ar = after_manifest(|_| {});
    ar.truncate(ar.len() - 1024);
    tarfmt::write_sparse_header(&mut ar, "memory.bin", 1 << 50, &[], 0).unwrap();
    let err = refused_tar(&ar);
    assert!(matches!(err, SnapshotError::SizeMismatch { actual: 1125899906842624, .. }), "{err:?}");
}

#[test]
fn hostile_truncated_stream() {
    let (src, _) = snapshot_dir();
    let (archive, _) = export_to_vec(src.path());
    for cut in [archive.len() / 2, archive.len() - 1, 20] {
        let err = refused(&archive[..cut], ImportLimits::default());
        assert!(matches!(err, SnapshotError::Truncated { .. }), "cut at {cut}: {err:?}");
    }
    // A tar that stops without its end marker, in a complete zstd frame.
    let mut ar = small_tar();
    ar.truncate(ar.len() - 1024);
    let err = refused_tar(&ar);
    assert!(matches!(&err, SnapshotError::Truncated { context } if context.contains("end-of-archive")), "{err:?}");
}

#[test]
fn hostile_garbage() {
    let err = refused(b"this is not a zstd stream, nor a tar", ImportLimits::default());
    assert!(matches!(err, SnapshotError::ArchiveRead(_)), "{err:?}");
    // An uncompressed tar is not accepted either.
    let err = refused(&small_tar(), ImportLimits::default());
    assert!(matches!(err, SnapshotError::ArchiveRead(_)), "{err:?}");
    let err = refused(b"", ImportLimits::default());
    assert!(matches!(err, SnapshotError::Truncated { .. } | SnapshotError::EmptyArchive), "{err:?}");
    // zstd of nothing, and of bytes that are not tar.
    let err = refused(&zst(b""), ImportLimits::default());
    assert!(matches!(err, SnapshotError::EmptyArchive), "{err:?}");
    let err = refused(&zst(&noise(9, 4096)), ImportLimits::default());
    assert!(matches!(err, SnapshotError::BadHeader { entry: 1, .. }), "{err:?}");
}

#[test]
fn hostile_manifest_content() {
    let mut ar = Vec::new();
    raw_entry(&mut ar, b"manifest.json", EntryType::Regular, br#"{"version": 9}"#);
    let err = refused_tar(&end(ar));
    assert!(matches!(err, SnapshotError::NewerVersion { found: 9, .. }), "{err:?}");
    let (manifest, _) = small();
    let manifest = String::from_utf8(manifest).unwrap().replace(ID, "../../../etc");
    let mut ar = Vec::new();
    raw_entry(&mut ar, b"manifest.json", EntryType::Regular, manifest.as_bytes());
    let err = refused_tar(&end(ar));
    assert!(matches!(err, SnapshotError::InvalidId { .. }), "{err:?}");
}

#[test]
fn trailing_data_is_refused() {
    let mut ar = small_tar();
    ar.extend_from_slice(b"appended");
    let err = refused_tar(&ar);
    assert!(matches!(err, SnapshotError::TrailingData), "{err:?}");
}

#[test]
fn a_failed_import_removes_what_it_wrote() {
    // The checksum of the second file fails after the first was written in full.
    let (src, mut manifest) = snapshot_dir();
    manifest.files[1].sha256 = "00".repeat(32);
    manifest.write(src.path()).unwrap();
    let (archive, _) = export_to_vec(src.path());
    let err = refused(&archive, ImportLimits::default());
    assert!(matches!(&err, SnapshotError::ChecksumMismatch { name, .. } if name == "state.bin"), "{err:?}");
}

/// An input that lists the snapshots directory as it is read.
struct Spy<'a> {
    data: &'a [u8],
    dir: &'a Path,
    seen: Vec<String>,
}

impl Read for Spy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.seen.extend(listing(self.dir));
        self.data.read(buf)
    }
}

#[test]
fn import_unpacks_into_a_hidden_temporary_directory() {
    let snapshots = tempfile::tempdir().unwrap();
    let archive = zst(&small_tar());
    let mut spy = Spy { data: &archive, dir: snapshots.path(), seen: Vec::new() };
    import(&mut spy, snapshots.path(), &ImportLimits::default()).unwrap();
    assert!(!spy.seen.is_empty() && spy.seen.iter().all(|n| n.starts_with(IMPORT_DIR_PREFIX)), "{:?}", spy.seen);
    assert_eq!(listing(snapshots.path()), [ID]);
}

#[test]
fn import_into_a_snapshots_dir_that_is_not_one_fails_cleanly() {
    let snapshots = tempfile::tempdir().unwrap();
    let blocker: PathBuf = snapshots.path().join("not-a-dir");
    fs::write(&blocker, b"").unwrap();
    let err = import(&zst(&small_tar())[..], &blocker, &ImportLimits::default()).unwrap_err();
    assert!(matches!(err, SnapshotError::Io { op: "create a directory in", .. }), "{err:?}");
    assert_eq!(listing(snapshots.path()), ["not-a-dir"]);
}
