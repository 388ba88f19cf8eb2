//! The snapshot manifest (`manifest.json`): what a snapshot directory holds and what it needs of
//! a host. Owns its format and validation, atomic writing, the per-file size and SHA-256 (computed
//! reading only a sparse file's data), and checking a directory against it.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

use crate::error::SnapshotError;
use crate::sparse;

/// The manifest's file name inside a snapshot directory (and first entry of an archive).
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest format version this build writes, and the newest it reads.
pub const MANIFEST_VERSION: u32 = 1;
/// The largest `manifest.json` read, on disk or in an archive.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The longest file name (what a tar header holds without extensions).
pub const MAX_FILE_NAME_LEN: usize = 100;

/// What a snapshot directory holds and what restoring it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version, [`MANIFEST_VERSION`] when written by this build.
    pub version: u32,
    /// Snapshot id: 12 to 64 lower-case hex digits; also its directory's name.
    pub id: String,
    /// A name the user gave it.
    pub name: Option<String>,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The hypervisor that took it: "qemu", "firecracker" or "cloud-hypervisor".
    pub backend: String,
    /// That hypervisor's version, e.g. "7.2.19".
    pub backend_version: String,
    /// "kvm" or "tcg".
    pub accel: String,
    /// The host's CPU (under KVM) or the emulated model (under TCG).
    pub cpu: CpuInfo,
    /// The guest kernel, where nestbox booted one directly.
    pub kernel: Option<KernelInfo>,
    /// The host's page size when it was taken, in bytes.
    pub page_size: u64,
    /// Guest memory.
    pub memory: MemoryLayout,
    /// The sandbox's configuration; opaque to this crate.
    pub sandbox: serde_json::Value,
    /// Every file of the snapshot besides `manifest.json`.
    pub files: Vec<FileEntry>,
}

/// A CPU: its model name and feature flags, as `/proc/cpuinfo` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuInfo {
    /// "model name", e.g. "AMD EPYC 7B13", or the emulated model ("max") under TCG.
    pub model: String,
    /// "flags", e.g. ["fpu", "sse2", "avx2"].
    pub flags: Vec<String>,
}

/// The guest kernel a snapshot was booted from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelInfo {
    /// Its release string, where known.
    pub version: Option<String>,
    /// SHA-256 of the image booted, lower-case hex.
    pub sha256: String,
}

/// Guest memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryLayout {
    /// Guest RAM, in bytes.
    pub size_bytes: u64,
    /// The listed file that holds it.
    pub file: String,
}

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Its name in the snapshot directory: a plain name (see [`validate_file_name`]).
    pub name: String,
    /// What it holds.
    pub kind: FileKind,
    /// Its logical size in bytes (holes included).
    pub size: u64,
    /// SHA-256 of its logical content (holes read as zeros), lower-case hex.
    pub sha256: String,
}

/// What a snapshot file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// Guest memory.
    Memory,
    /// The hypervisor's device and vCPU state.
    State,
    /// A disk of the sandbox.
    Disk,
    /// Anything else.
    Other,
}

/// Just the version, read before the rest so that a newer manifest, whose fields this build
/// does not know, is refused for its version and not for an unknown field.
#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

impl Manifest {
    /// Reads `dir/manifest.json` and validates it (see [`Manifest::validate`]).
    pub fn read(dir: &Path) -> Result<Manifest, SnapshotError> {
        Self::read_with_bytes(dir).map(|(manifest, _)| manifest)
    }

    /// [`Manifest::read`], also returning the file's bytes.
    pub(crate) fn read_with_bytes(dir: &Path) -> Result<(Manifest, Vec<u8>), SnapshotError> {
        let path = dir.join(MANIFEST_FILE);
        let file = open_regular(&path).map_err(SnapshotError::io("open", &path))?;
        let size = file.metadata().map_err(SnapshotError::io("stat", &path))?.len();
        if size > MAX_MANIFEST_BYTES {
            return Err(SnapshotError::ManifestTooLarge { size, limit: MAX_MANIFEST_BYTES });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes).map_err(SnapshotError::io("read", &path))?;
        let manifest = Self::from_json(&bytes, &path)?;
        Ok((manifest, bytes))
    }

    /// Parses and validates a manifest; `path` only names it in errors.
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Manifest, SnapshotError> {
        let json_err = |source| SnapshotError::ManifestJson { path: path.to_path_buf(), source };
        let probe: VersionProbe = serde_json::from_slice(bytes).map_err(json_err)?;
        check_version(probe.version)?;
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(json_err)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the rules a manifest obeys: a version this build reads; an id of 12 to 64
    /// lower-case hex digits; file names that are plain (see [`validate_file_name`]), not
    /// reserved (`.`, `..`, `manifest.json`) and unique; checksums of 64 lower-case hex digits;
    /// a memory file that is listed.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        check_version(self.version)?;
        validate_id(&self.id)?;
        let mut seen = HashSet::with_capacity(self.files.len());
        for f in &self.files {
            validate_file_name(&f.name)?;
            if !seen.insert(f.name.as_str()) {
                return Err(SnapshotError::DuplicateFile { name: f.name.clone() });
            }
            if !is_lower_hex(&f.sha256, 64..=64) {
                return Err(SnapshotError::InvalidChecksum { name: f.name.clone(), sha256: f.sha256.clone() });
            }
        }
        if !seen.contains(self.memory.file.as_str()) {
            return Err(SnapshotError::MemoryFileNotListed { name: self.memory.file.clone() });
        }
        Ok(())
    }

    /// Validates, then writes `dir/manifest.json` atomically: a temporary file in `dir`,
    /// flushed to disk, renamed over the old one, and the directory flushed.
    pub fn write(&self, dir: &Path) -> Result<(), SnapshotError> {
        self.validate()?;
        let mut json = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        json.push(b'\n');
        let path = dir.join(MANIFEST_FILE);
        let mut tmp = tempfile::Builder::new()
            .prefix(".manifest.json.")
            .tempfile_in(dir)
            .map_err(SnapshotError::io("create a temporary file in", dir))?;
        tmp.write_all(&json).map_err(SnapshotError::io("write", tmp.path()))?;
        tmp.as_file().sync_all().map_err(SnapshotError::io("sync", tmp.path()))?;
        tmp.persist(&path).map_err(|e| SnapshotError::Io { op: "rename onto", path: path.clone(), source: e.error })?;
        sync_dir(dir)
    }

    /// The listed file called `name`.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// The logical size of every listed file together, in bytes (saturating).
    pub fn total_size(&self) -> u64 {
        self.files.iter().fold(0u64, |sum, f| sum.saturating_add(f.size))
    }

    /// Checks `dir` against the manifest: it holds nothing unlisted besides `manifest.json`,
    /// and every listed file is there, regular, of its size and SHA-256. Cheap checks (names,
    /// sizes) come before any file is hashed.
    pub fn verify(&self, dir: &Path) -> Result<(), SnapshotError> {
        let listed: HashSet<&str> = self.files.iter().map(|f| f.name.as_str()).collect();
        for entry in fs::read_dir(dir).map_err(SnapshotError::io("list", dir))? {
            let entry = entry.map_err(SnapshotError::io("list", dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name != MANIFEST_FILE && !listed.contains(&*name) {
                return Err(SnapshotError::ExtraFile { name: name.into_owned() });
            }
        }
        let mut opened = Vec::with_capacity(self.files.len());
        for f in &self.files {
            let file = open_listed(dir, &f.name)?;
            let path = dir.join(&f.name);
            let actual = file.metadata().map_err(SnapshotError::io("stat", &path))?.len();
            if actual != f.size {
                return Err(SnapshotError::SizeMismatch { name: f.name.clone(), expected: f.size, actual });
            }
            opened.push((f, file, path));
        }
        for (f, file, path) in opened {
            let (actual_size, actual) = sparse::sha256_file(&file).map_err(SnapshotError::io("read", &path))?;
            if actual_size != f.size {
                return Err(SnapshotError::SizeMismatch {
                    name: f.name.clone(),
                    expected: f.size,
                    actual: actual_size,
                });
            }
            if actual != f.sha256 {
                return Err(SnapshotError::ChecksumMismatch {
                    name: f.name.clone(),
                    expected: f.sha256.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }
}

impl FileEntry {
    /// Describes `dir/name`: its size and the SHA-256 of its logical content, reading only its
    /// data regions (holes are hashed as zeros without being read). `name` must be a plain
    /// name and the file a regular one (not a symbolic link).
    pub fn compute(dir: &Path, name: &str, kind: FileKind) -> Result<FileEntry, SnapshotError> {
        validate_file_name(name)?;
        let file = open_listed(dir, name)?;
        let (size, sha256) = sparse::sha256_file(&file).map_err(SnapshotError::io("read", dir.join(name)))?;
        Ok(FileEntry { name: name.to_owned(), kind, size, sha256 })
    }
}

/// Checks that `name` may name a snapshot file: 1 to [`MAX_FILE_NAME_LEN`] characters from
/// `[A-Za-z0-9._-]`, and not `.`, `..` or `manifest.json`.
pub fn validate_file_name(name: &str) -> Result<(), SnapshotError> {
    if matches!(name, "." | ".." | MANIFEST_FILE) {
        return Err(SnapshotError::ReservedFileName { name: name.to_owned() });
    }
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if name.is_empty() || name.len() > MAX_FILE_NAME_LEN || !name.bytes().all(plain) {
        return Err(SnapshotError::InvalidFileName { name: name.to_owned() });
    }
    Ok(())
}

/// Checks that `id` is a snapshot id: 12 to 64 lower-case hex digits.
pub fn validate_id(id: &str) -> Result<(), SnapshotError> {
    if is_lower_hex(id, 12..=64) { Ok(()) } else { Err(SnapshotError::InvalidId { id: id.to_owned() }) }
}

fn check_version(found: u32) -> Result<(), SnapshotError> {
    match found {
        0 => Err(SnapshotError::InvalidVersion { found }),
        v if v > MANIFEST_VERSION => Err(SnapshotError::NewerVersion { found, supported: MANIFEST_VERSION }),
        _ => Ok(()),
    }
}

fn is_lower_hex(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Opens `path` for reading without following a final symbolic link, and only if it is a
/// regular file.
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new().read(true).custom_flags(OFlag::O_NOFOLLOW.bits()).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// Opens the listed file `dir/name`, naming it in the error if it is missing or not regular.
pub(crate) fn open_listed(dir: &Path, name: &str) -> Result<File, SnapshotError> {
    let path = dir.join(name);
    open_regular(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => SnapshotError::MissingFile { name: name.to_owned() },
        // ELOOP: a symbolic link, refused by O_NOFOLLOW.
        _ if e.kind() == io::ErrorKind::InvalidInput || e.raw_os_error() == Some(nix::libc::ELOOP) => {
            SnapshotError::NotRegularFile { name: name.to_owned() }
        }
        _ => SnapshotError::Io { op: "open", path, source: e },
    })
}

/// Flushes a directory's entries to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(SnapshotError::io("sync", dir))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::FileExt as _;

    use super::*;

    pub(crate) const ID: &str = "0123456789abcdef";

    /// A valid manifest for files that are not there; `files` names them.
    pub(crate) fn sample(files: Vec<FileEntry>) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            id: ID.into(),
            name: Some("before-upgrade".into()),
            created_at_ms: 1_760_000_000_000,
            backend: "qemu".into(),
            backend_version: "7.2.19".into(),
            accel: "kvm".into(),
            cpu: CpuInfo { model: "AMD EPYC 7B13".into(), flags: vec!["fpu".into(), "sse2".into(), "avx2".into()] },
            kernel: Some(KernelInfo { version: Some("6.12.1".into()), sha256: "ab".repeat(32) }),
            page_size: 4096,
            memory: MemoryLayout { size_bytes: 64 << 20, file: "memory.bin".into() },
            sandbox: serde_json::json!({"vcpus": 2, "memory_mib": 64}),
            files,
        }
    }

    fn entry(name: &str, kind: FileKind) -> FileEntry {
        FileEntry { name: name.into(), kind, size: 0, sha256: "00".repeat(32) }
    }

    fn valid() -> Manifest {
        sample(vec![entry("memory.bin", FileKind::Memory), entry("state.bin", FileKind::State)])
    }

    /// Writes files, describes them with `FileEntry::compute`, writes the manifest.
    fn snapshot_dir(files: &[(&str, FileKind, &[u8])]) -> (tempfile::TempDir, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        let mut entries = Vec::new();
        for (name, kind, data) in files {
            fs::write(dir.path().join(name), data).unwrap();
            entries.push(FileEntry::compute(dir.path(), name, *kind).unwrap());
        }
        let m = sample(entries);
        m.write(dir.path()).unwrap();
        (dir, m)
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = valid();
        m.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);
        // Only the manifest is left: the temporary file was renamed, not copied.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [MANIFEST_FILE]);
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join(MANIFEST_FILE)).unwrap()).unwrap();
        assert_eq!(json["files"][0]["kind"], "memory");
        assert_eq!(json["kernel"]["version"], "6.12.1");
    }

    fn json_with(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v = serde_json::to_value(valid()).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    fn parse(bytes: &[u8]) -> SnapshotError {
        Manifest::from_json(bytes, Path::new("m.json")).unwrap_err()
    }

    #[test]
    fn a_newer_version_is_refused_naming_it_even_with_fields_unknown_here() {
        let err = parse(&json_with(|v| {
            v["version"] = 2.into();
            v["new_field"] = true.into();
        }));
        assert!(matches!(err, SnapshotError::NewerVersion { found: 2, supported: 1 }), "{err:?}");
        assert!(err.to_string().contains("version 2"), "{err}");
        assert!(matches!(parse(&json_with(|v| v["version"] = 0.into())), SnapshotError::InvalidVersion { found: 0 }));
    }

    #[test]
    fn unknown_fields_and_bad_json_are_refused() {
        assert!(matches!(parse(&json_with(|v| v["extra"] = 1.into())), SnapshotError::ManifestJson { .. }));
        assert!(matches!(parse(b"{not json"), SnapshotError::ManifestJson { .. }));
        assert!(matches!(
            parse(&json_with(|v| v["files"][0]["kind"] = "swap".into())),
            SnapshotError::ManifestJson { .. }
        ));
    }

    #[test]
    fn id_must_be_12_to_64_lower_hex() {
        for bad in ["0123456789a", "0123456789ABCDEF", "0123456789abcdeg", &"a".repeat(65), "../../etc"] {
            let err = parse(&json_with(|v| v["id"] = bad.into()));
            assert!(matches!(&err, SnapshotError::InvalidId { id } if id == bad), "{bad}: {err:?}");
        }
        for good in ["0123456789ab", &"f".repeat(64)] {
            validate_id(good).unwrap();
        }
    }

    #[test]
    fn file_names_must_be_plain() {
        for bad in ["", "a/b", "/abs", "sp ace", "é", "a\0b", &"x".repeat(101)] {
            let err = parse(&json_with(|v| v["files"][1]["name"] = bad.into()));
            assert!(matches!(&err, SnapshotError::InvalidFileName { name } if name == bad), "{bad:?}: {err:?}");
        }
        validate_file_name(&"x".repeat(100)).unwrap();
        validate_file_name("disk-0.qcow2").unwrap();
    }

    #[test]
    fn reserved_names_are_refused() {
        for bad in [".", "..", MANIFEST_FILE] {
            let err = parse(&json_with(|v| v["files"][1]["name"] = bad.into()));
            assert!(matches!(&err, SnapshotError::ReservedFileName { name } if name == bad), "{bad}: {err:?}");
        }
    }

    #[test]
    fn names_must_be_unique() {
        let err = parse(&json_with(|v| v["files"][1]["name"] = "memory.bin".into()));
        assert!(matches!(&err, SnapshotError::DuplicateFile { name } if name == "memory.bin"), "{err:?}");
    }

    #[test]
    fn checksums_must_be_sha256_hex() {
        let err = parse(&json_with(|v| v["files"][0]["sha256"] = "AB".repeat(32).into()));
        assert!(matches!(&err, SnapshotError::InvalidChecksum { name, .. } if name == "memory.bin"), "{err:?}");
    }

    #[test]
    fn the_memory_file_must_be_listed() {
        let err = parse(&json_with(|v| v["memory"]["file"] = "ram.bin".into()));
        assert!(matches!(&err, SnapshotError::MemoryFileNotListed { name } if name == "ram.bin"), "{err:?}");
    }

    #[test]
    fn write_refuses_an_invalid_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = valid();
        m.id = "nope".into();
        assert!(matches!(m.write(dir.path()), Err(SnapshotError::InvalidId { .. })));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn read_refuses_a_symlinked_or_huge_manifest() {
        let (dir, _) = snapshot_dir(&[("memory.bin", FileKind::Memory, b"ram")]);
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(dir.path().join(MANIFEST_FILE), other.path().join(MANIFEST_FILE)).unwrap();
        assert!(matches!(Manifest::read(other.path()), Err(SnapshotError::Io { op: "open", .. })));
        let big = File::create(dir.path().join(MANIFEST_FILE)).unwrap();
        big.set_len(MAX_MANIFEST_BYTES + 1).unwrap();
        assert!(matches!(Manifest::read(dir.path()), Err(SnapshotError::ManifestTooLarge { .. })));
    }

    #[test]
    fn compute_hashes_logical_content_of_sparse_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("memory.bin")).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(b"data", 5 << 20).unwrap();
        let e = FileEntry::compute(dir.path(), "memory.bin", FileKind::Memory).unwrap();
        let mut dense = vec![0u8; 8 << 20];
        dense[5 << 20..(5 << 20) + 4].copy_from_slice(b"data");
        assert_eq!(e.size, 8 << 20);
        assert_eq!(e.sha256, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&dense)));
        assert_eq!(e.kind, FileKind::Memory);
    }

    #[test]
    fn compute_refuses_symlinks_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("real"), b"x").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        let err = FileEntry::compute(dir.path(), "link", FileKind::Other).unwrap_err();
        assert!(matches!(&err, SnapshotError::NotRegularFile { name } if name == "link"), "{err:?}");
        let err = FileEntry::compute(dir.path(), "gone", FileKind::Other).unwrap_err();
        assert!(matches!(&err, SnapshotError::MissingFile { name } if name == "gone"), "{err:?}");
        fs::create_dir(dir.path().join("sub")).unwrap();
        let err = FileEntry::compute(dir.path(), "sub", FileKind::Other).unwrap_err();
        assert!(matches!(&err, SnapshotError::NotRegularFile { name } if name == "sub"), "{err:?}");
    }

    #[test]
    fn verify_accepts_an_intact_snapshot() {
        let (dir, m) = snapshot_dir(&[("memory.bin", FileKind::Memory, b"ram"), ("state.bin", FileKind::State, b"s")]);
        m.verify(dir.path()).unwrap();
    }

    #[test]
    fn verify_catches_a_flipped_byte() {
        let (dir, m) = snapshot_dir(&[("memory.bin", FileKind::Memory, b"ram"), ("state.bin", FileKind::State, b"st")]);
        fs::write(dir.path().join("state.bin"), b"sT").unwrap();
        let err = m.verify(dir.path()).unwrap_err();
        let SnapshotError::ChecksumMismatch { name, expected, actual } = &err else { panic!("{err:?}") };
        assert_eq!(name, "state.bin");
        assert_eq!(expected, &m.files[1].sha256);
        assert_ne!(actual, expected);
        let msg = err.to_string();
        assert!(msg.contains("state.bin") && msg.contains(expected) && msg.contains(actual), "{msg}");
    }

    #[test]
    fn verify_catches_a_size_change() {
        let (dir, m) = snapshot_dir(&[("memory.bin", FileKind::Memory, b"ram")]);
        fs::write(dir.path().join("memory.bin"), b"ramm").unwrap();
        let err = m.verify(dir.path()).unwrap_err();
        assert!(
            matches!(&err, SnapshotError::SizeMismatch { name, expected: 3, actual: 4 } if name == "memory.bin"),
            "{err:?}"
        );
    }

    #[test]
    fn verify_catches_a_missing_file() {
        let (dir, m) = snapshot_dir(&[("memory.bin", FileKind::Memory, b"ram"), ("disk.qcow2", FileKind::Disk, b"d")]);
        fs::remove_file(dir.path().join("disk.qcow2")).unwrap();
        let err = m.verify(dir.path()).unwrap_err();
        assert!(matches!(&err, SnapshotError::MissingFile { name } if name == "disk.qcow2"), "{err:?}");
    }

    #[test]
    fn verify_catches_an_extra_file() {
        let (dir, m) = snapshot_dir(&[("memory.bin", FileKind::Memory, b"ram")]);
        fs::write(dir.path().join("stray.bin"), b"?").unwrap();
        let err = m.verify(dir.path()).unwrap_err();
        assert!(matches!(&err, SnapshotError::ExtraFile { name } if name == "stray.bin"), "{err:?}");
    }

    #[test]
    fn verify_refuses_a_listed_symlink() {
        let (dir, m) = snapshot_dir(&[("memory.bin", FileKind::Memory, b"ram")]);
        fs::rename(dir.path().join("memory.bin"), dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("elsewhere", dir.path().join("memory.bin")).unwrap();
        fs::remove_file(dir.path().join("elsewhere")).unwrap();
        let err = m.verify(dir.path()).unwrap_err();
        assert!(matches!(&err, SnapshotError::NotRegularFile { name } if name == "memory.bin"), "{err:?}");
    }
}
