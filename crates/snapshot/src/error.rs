//! The crate's error type: every way reading, checking, exporting or importing a snapshot fails,
//! each variant carrying the offending values (file names, sizes, checksums, limits).

use std::io;
use std::path::PathBuf;

/// Why a snapshot operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A file-system call failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done ("read", "create", "rename", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `manifest.json` is not valid JSON of the manifest's shape.
    #[error("{path} is not a valid snapshot manifest")]
    ManifestJson {
        /// The manifest's path (or `manifest.json` inside an archive).
        path: PathBuf,
        /// What serde found.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest is of a format version newer than this build understands.
    #[error("snapshot manifest version {found} is newer than this nestbox supports (version {supported})")]
    NewerVersion {
        /// The manifest's version.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The manifest's version is not one this build ever wrote (0).
    #[error("snapshot manifest version {found} is not a valid version")]
    InvalidVersion {
        /// The manifest's version.
        found: u32,
    },
    /// The snapshot id is not 12 to 64 lower-case hex digits.
    #[error("snapshot id {id:?} is not 12 to 64 lower-case hex digits")]
    InvalidId {
        /// The id as found.
        id: String,
    },
    /// A file name is empty, too long, or has a character outside `[A-Za-z0-9._-]`.
    #[error("snapshot file name {name:?} is not a plain name of 1 to 100 characters from [A-Za-z0-9._-]")]
    InvalidFileName {
        /// The name as found.
        name: String,
    },
    /// A file name is `.`, `..` or `manifest.json`.
    #[error("snapshot file name {name:?} is reserved")]
    ReservedFileName {
        /// The name as found.
        name: String,
    },
    /// Two file entries share a name.
    #[error("snapshot file {name:?} is listed twice")]
    DuplicateFile {
        /// The repeated name.
        name: String,
    },
    /// `memory.file` names no listed file.
    #[error("snapshot memory file {name:?} is not among the listed files")]
    MemoryFileNotListed {
        /// The name `memory.file` holds.
        name: String,
    },
    /// A listed checksum is not 64 lower-case hex digits.
    #[error("checksum of snapshot file {name:?} is not 64 lower-case hex digits: {sha256:?}")]
    InvalidChecksum {
        /// The file.
        name: String,
        /// The checksum as found.
        sha256: String,
    },
    /// A listed file is not in the snapshot directory.
    #[error("snapshot file {name:?} is missing")]
    MissingFile {
        /// The file.
        name: String,
    },
    /// The snapshot directory holds something the manifest does not list.
    #[error("snapshot directory holds {name:?}, which the manifest does not list")]
    ExtraFile {
        /// What was found.
        name: String,
    },
    /// A listed file is a symbolic link, a directory or another non-regular file.
    #[error("snapshot file {name:?} is not a regular file")]
    NotRegularFile {
        /// The file.
        name: String,
    },
    /// A file's size differs from the manifest's.
    #[error("snapshot file {name:?} is {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        /// The file.
        name: String,
        /// The manifest's size.
        expected: u64,
        /// The size found.
        actual: u64,
    },
    /// A file's SHA-256 differs from the manifest's.
    #[error("snapshot file {name:?} has sha256 {actual}, the manifest says {expected}")]
    ChecksumMismatch {
        /// The file.
        name: String,
        /// The manifest's checksum.
        expected: String,
        /// The checksum computed.
        actual: String,
    },
    /// Writing the archive to its destination failed.
    #[error("cannot write the snapshot archive")]
    ArchiveWrite(#[source] io::Error),
    /// Reading or decompressing the archive failed (not zstd, corrupt, or an I/O error).
    #[error("cannot read the snapshot archive (it must be a zstd-compressed tar)")]
    ArchiveRead(#[source] io::Error),
    /// The archive holds no entry at all.
    #[error("snapshot archive is empty")]
    EmptyArchive,
    /// The archive stream ends in the middle of something.
    #[error("snapshot archive is truncated ({context})")]
    Truncated {
        /// Where it ended: "in the header of entry 3", "in the data of memory.bin", ...
        context: String,
    },
    /// A tar header is malformed (bad checksum, bad number, bad sparse map).
    #[error("snapshot archive entry {entry}: malformed tar header: {reason}")]
    BadHeader {
        /// The entry's position, from 1.
        entry: u64,
        /// What is wrong.
        reason: String,
    },
    /// An archive entry's name is not a plain file name.
    #[error("snapshot archive entry {name:?} is not a plain file name (no paths, no links)")]
    UnsafeEntryName {
        /// The name as found (lossily decoded).
        name: String,
    },
    /// An archive entry is not a regular file (link, device, directory, extension header, ...).
    #[error("snapshot archive entry {name:?} is a {kind}; only regular files are accepted")]
    UnsupportedEntryType {
        /// The entry's name.
        name: String,
        /// What it is ("symbolic link", "hard link", "character device", ...).
        kind: String,
    },
    /// The archive's first entry is not `manifest.json`.
    #[error("snapshot archive must begin with manifest.json, it begins with {first:?}")]
    ManifestNotFirst {
        /// The first entry's name.
        first: String,
    },
    /// The archive holds a file its manifest does not list.
    #[error("snapshot archive holds {name:?}, which its manifest does not list")]
    NotInManifest {
        /// The entry's name.
        name: String,
    },
    /// The archive holds a file twice.
    #[error("snapshot archive holds {name:?} twice")]
    DuplicateEntry {
        /// The entry's name.
        name: String,
    },
    /// The archive ends before a listed file came.
    #[error("snapshot archive ends without {name:?}, which its manifest lists")]
    MissingEntry {
        /// The missing file.
        name: String,
    },
    /// Something other than zero padding follows the end of the tar stream.
    #[error("snapshot archive has data after its end")]
    TrailingData,
    /// `manifest.json` in the archive is larger than any manifest may be.
    #[error("snapshot archive's manifest.json is {size} bytes, more than the {limit} allowed")]
    ManifestTooLarge {
        /// The size its header claims.
        size: u64,
        /// The most allowed.
        limit: u64,
    },
    /// The snapshot is larger than the import limit.
    #[error("snapshot holds {total} bytes, more than the import limit of {limit}")]
    TooLarge {
        /// The logical size the manifest (or a header) claims.
        total: u64,
        /// [`crate::ImportLimits::max_total_bytes`].
        limit: u64,
    },
    /// The snapshot has more files than the import limit.
    #[error("snapshot holds {count} files, more than the import limit of {limit}")]
    TooManyFiles {
        /// Files in the archive, manifest.json included.
        count: u64,
        /// [`crate::ImportLimits::max_files`].
        limit: u64,
    },
    /// A sparse file's map has more regions than an import accepts.
    #[error("snapshot archive entry {name:?} has more than {limit} sparse regions")]
    TooManyRegions {
        /// The entry's name.
        name: String,
        /// The most accepted.
        limit: u64,
    },
    /// A snapshot with the imported id is already registered.
    #[error("snapshot {id} already exists")]
    AlreadyExists {
        /// The snapshot id.
        id: String,
    },
}

impl SnapshotError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}
