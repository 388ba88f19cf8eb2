//! Applying one layer (a tar stream: plain, gzip or zstd) onto a root directory, the way an
//! overlay would see it: entries in order, `.wh.NAME` whiteouts, `.wh..wh..opq` opaque
//! directories, and never a write outside the root.
//!
//! Rules for hostile input, each a typed [`LayerError`] naming the entry:
//! - An absolute path (`/etc/passwd`) is made relative to the root, as docker does; the same for
//!   an absolute hard-link target. It cannot escape, so it is not refused.
//! - `..` is resolved lexically (`a/../b` is `b`); one that would climb above the root is refused.
//! - No existing parent component of an entry may be a symlink: a symlink planted by an earlier
//!   entry or layer (`evil -> /tmp`) cannot redirect a later write (`evil/x`). Well-formed layers
//!   never write through a symlink (layer diffs record real paths), so this refuses only attacks
//!   and broken images. The final component is replaced, never followed (`O_EXCL|O_NOFOLLOW`).
//! - A hard link must point inside the root, at something already extracted.
//!
//! Device nodes and fifos are created only when running as root (skipped with a debug log
//! otherwise); ownership likewise. Directory mtimes are set after the whole layer, as later
//! entries inside a directory would change them.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use thiserror::Error;
use tracing::debug;

/// The name prefix that marks a whiteout.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name that marks its directory opaque.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Look at the first bytes: gzip `1f 8b`, zstd `28 b5 2f fd`, else a plain tar.
    #[default]
    Detect,
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// What a layer held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Regular files written (hard links not included).
    pub files: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links created.
    pub hardlinks: u64,
    /// Device nodes and fifos created.
    pub devices: u64,
    /// Device nodes and fifos skipped for lack of privilege.
    pub devices_skipped: u64,
    /// Whiteouts and opaque markers honoured.
    pub whiteouts: u64,
}

/// Why a layer could not be applied.
#[derive(Debug, Error)]
pub enum LayerError {
    /// The stream (or its decompression) failed: a truncated gzip or zstd stream, or a bad tar.
    #[error("reading the layer")]
    Read(#[source] io::Error),
    /// The zstd frame header could not be read.
    #[error("reading the layer's zstd frame header")]
    ZstdHeader(#[source] ruzstd::decoding::errors::FrameDecoderError),
    /// A file's data ended early.
    #[error("layer is truncated: {entry:?} has {got} of its {expected} bytes")]
    Truncated {
        /// The entry's path in the tar.
        entry: PathBuf,
        /// Its size in the header.
        expected: u64,
        /// The bytes the stream had.
        got: u64,
    },
    /// A `..` would climb above the root.
    #[error("entry {entry:?} escapes the root with '..'")]
    EscapesRoot {
        /// The entry's path in the tar.
        entry: PathBuf,
    },
    /// A path with a Windows prefix or another unusable component.
    #[error("entry {entry:?} has an unusable path")]
    BadPath {
        /// The entry's path in the tar.
        entry: PathBuf,
    },
    /// An existing parent component is a symlink.
    #[error("entry {entry:?} goes through the symlink {component:?}")]
    ThroughSymlink {
        /// The entry's path in the tar.
        entry: PathBuf,
        /// The symlink, relative to the root.
        component: PathBuf,
    },
    /// An existing parent component is not a directory.
    #[error("entry {entry:?} needs {component:?} to be a directory, and it is not")]
    NotADirectory {
        /// The entry's path in the tar.
        entry: PathBuf,
        /// The component, relative to the root.
        component: PathBuf,
    },
    /// A hard link to something outside the root.
    #[error("hard link {entry:?} points outside the root, at {target:?}")]
    HardLinkOutside {
        /// The entry's path in the tar.
        entry: PathBuf,
        /// The link target as written in the tar.
        target: PathBuf,
    },
    /// A hard link to something not (yet) extracted.
    #[error("hard link {entry:?} points at {target:?}, which is not in the root")]
    HardLinkTargetMissing {
        /// The entry's path in the tar.
        entry: PathBuf,
        /// The link target, relative to the root.
        target: PathBuf,
    },
    /// A link entry without a target.
    #[error("link {entry:?} has no target")]
    NoLinkTarget {
        /// The entry's path in the tar.
        entry: PathBuf,
    },
    /// A file-system operation failed.
    #[error("{op} {entry:?}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The entry's path in the tar.
        entry: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, entry: &'a Path) -> impl FnOnce(io::Error) -> LayerError + 'a {
    move |source| LayerError::Io { op, entry: entry.to_owned(), source }
}

/// Applies the layer read from `reader` onto `root` (an existing directory). See the module
/// documentation for the rules. On error, `root` is left partly written: the caller deletes it.
pub fn apply_layer(root: &Path, reader: impl Read, compression: Compression) -> Result<LayerStats, LayerError> {
    let mut reader = reader;
    let mut head = [0u8; 4];
    let mut got = 0;
    if compression == Compression::Detect {
        while got < head.len() {
            match reader.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LayerError::Read(e)),
            }
        }
    }
    let compression = match compression {
        Compression::Detect => detect(&head[..got]),
        other => other,
    };
    let stream = io::Cursor::new(head[..got].to_vec()).chain(reader);
    let decompressed: Box<dyn Read + '_> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Compression::Zstd => Box::new(ruzstd::decoding::StreamingDecoder::new(stream).map_err(LayerError::ZstdHeader)?),
        Compression::None | Compression::Detect => Box::new(stream),
    };
    Applier::new(root).apply(decompressed)
}

/// The compression that `head` (the first bytes of a stream) announces.
pub fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Turns a tar path into one relative to the root: leading `/` and `.` dropped, `..` resolved
/// lexically; `None` if it climbs above the root.
fn normalize(path: &Path) -> Option<Result<PathBuf, ()>> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) => return Some(Err(())),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(name) => out.push(name),
        }
    }
    Some(Ok(out))
}

struct Applier<'a> {
    root: &'a Path,
    privileged: bool,
    /// Paths (relative to the root) this layer wrote: an opaque marker keeps them.
    written: HashSet<PathBuf>,
    /// Directory mtimes to set once the layer is done.
    dir_times: Vec<(PathBuf, i64)>,
    stats: LayerStats,
}

impl<'a> Applier<'a> {
    fn new(root: &'a Path) -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let privileged = unsafe { libc::geteuid() } == 0;
        Self { root, privileged, written: HashSet::new(), dir_times: Vec::new(), stats: LayerStats::default() }
    }

    fn apply(mut self, stream: impl Read) -> Result<LayerStats, LayerError> {
        let mut archive = tar::Archive::new(stream);
        for entry in archive.entries().map_err(LayerError::Read)? {
            let entry = entry.map_err(LayerError::Read)?;
            self.entry(entry)?;
        }
        for (path, mtime) in self.dir_times.iter().rev() {
            let full = self.root.join(path);
            set_mtime(&full, mtime.to_owned()).map_err(io_err("setting the mtime of", path))?;
        }
        Ok(self.stats)
    }

    fn relative(&self, entry: &Path, path: &Path) -> Result<PathBuf, LayerError> {
        match normalize(path) {
            None => Err(LayerError::EscapesRoot { entry: entry.to_owned() }),
            Some(Err(())) => Err(LayerError::BadPath { entry: entry.to_owned() }),
            Some(Ok(rel)) => Ok(rel),
        }
    }

    /// Checks that every existing parent of `rel` is a real directory, creating missing ones.
    fn prepare_parents(&mut self, entry: &Path, rel: &Path) -> Result<(), LayerError> {
        let mut prefix = PathBuf::new();
        let Some(parent) = rel.parent() else { return Ok(()) };
        for component in parent.components() {
            prefix.push(component);
            let full = self.root.join(&prefix);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(LayerError::ThroughSymlink { entry: entry.to_owned(), component: prefix });
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(LayerError::NotADirectory { entry: entry.to_owned(), component: prefix }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&full).map_err(io_err("creating the parent directory of", entry))?;
                    self.written.insert(prefix.clone());
                }
                Err(e) => return Err(io_err("inspecting the parents of", entry)(e)),
            }
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), LayerError> {
        let name = entry.path().map_err(LayerError::Read)?.into_owned();
        let rel = self.relative(&name, &name)?;
        if rel.as_os_str().is_empty() {
            debug!(entry = ?name, "skipping the root's own entry");
            return Ok(());
        }
        self.prepare_parents(&name, &rel)?;
        let file_name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if file_name == OPAQUE_MARKER {
            let dir = rel.parent().unwrap_or(Path::new("")).to_owned();
            self.make_opaque(&name, &dir)?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            let target = rel.with_file_name(hidden);
            // A whiteout hides what lower layers put there, not this layer's own entries.
            if !self.written.contains(&target) {
                remove_any(&self.root.join(&target)).map_err(io_err("removing the whited-out", &name))?;
            }
            self.stats.whiteouts += 1;
            return Ok(());
        }

        let full = self.root.join(&rel);
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(LayerError::Read)? & 0o7777;
        let uid = header.uid().map_err(LayerError::Read)?;
        let gid = header.gid().map_err(LayerError::Read)?;
        let mtime = header.mtime().map_err(LayerError::Read)? as i64;

        let existing = match fs::symlink_metadata(&full) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("inspecting", &name)(e)),
        };
        // A directory over a directory merges; anything else replaces what was there.
        match (&existing, kind.is_dir()) {
            (Some(meta), true) if meta.is_dir() => {}
            (Some(_), _) => remove_any(&full).map_err(io_err("replacing", &name))?,
            (None, _) => {}
        }

        use tar::EntryType as T;
        match kind {
            T::Directory => {
                if !full.is_dir() {
                    fs::create_dir(&full).map_err(io_err("creating the directory", &name))?;
                }
                self.stats.dirs += 1;
                self.own(&full, &name, uid, gid)?;
                fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                    .map_err(io_err("setting the mode of", &name))?;
                self.dir_times.push((rel.clone(), mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&full)
                    .map_err(io_err("creating the file", &name))?;
                let expected = entry.size();
                let got = io::copy(&mut entry, &mut file).map_err(LayerError::Read)?;
                if got != expected {
                    return Err(LayerError::Truncated { entry: name, expected, got });
                }
                drop(file);
                self.stats.files += 1;
                self.stats.bytes += got;
                self.own(&full, &name, uid, gid)?;
                fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                    .map_err(io_err("setting the mode of", &name))?;
                set_mtime(&full, mtime).map_err(io_err("setting the mtime of", &name))?;
            }
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(LayerError::Read)?
                    .ok_or_else(|| LayerError::NoLinkTarget { entry: name.clone() })?;
                std::os::unix::fs::symlink(&target, &full).map_err(io_err("creating the symlink", &name))?;
                self.stats.symlinks += 1;
                self.own(&full, &name, uid, gid)?;
                set_mtime(&full, mtime).map_err(io_err("setting the mtime of", &name))?;
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(LayerError::Read)?
                    .ok_or_else(|| LayerError::NoLinkTarget { entry: name.clone() })?
                    .into_owned();
                let target_rel = match normalize(&target) {
                    Some(Ok(rel)) if !rel.as_os_str().is_empty() => rel,
                    _ => return Err(LayerError::HardLinkOutside { entry: name, target }),
                };
                // The target's parents must be real directories too, or the link could reach out.
                self.check_parents_exist(&name, &target_rel)?;
                let target_full = self.root.join(&target_rel);
                match fs::symlink_metadata(&target_full) {
                    Ok(meta) if !meta.is_dir() => {}
                    Ok(_) => return Err(LayerError::HardLinkOutside { entry: name, target }),
                    Err(_) => return Err(LayerError::HardLinkTargetMissing { entry: name, target: target_rel }),
                }
                fs::hard_link(&target_full, &full).map_err(io_err("creating the hard link", &name))?;
                self.stats.hardlinks += 1;
            }
            T::Char | T::Block | T::Fifo => {
                if !self.privileged {
                    debug!(entry = ?name, "skipping a device node or fifo: not running as root");
                    self.stats.devices_skipped += 1;
                    return Ok(());
                }
                let major = header.device_major().map_err(LayerError::Read)?.unwrap_or(0);
                let minor = header.device_minor().map_err(LayerError::Read)?.unwrap_or(0);
                let file_type = match kind {
                    T::Char => libc::S_IFCHR,
                    T::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                mknod(&full, file_type | mode, libc::makedev(major, minor))
                    .map_err(io_err("creating the node", &name))?;
                self.stats.devices += 1;
                self.own(&full, &name, uid, gid)?;
                fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                    .map_err(io_err("setting the mode of", &name))?;
                set_mtime(&full, mtime).map_err(io_err("setting the mtime of", &name))?;
            }
            other => {
                debug!(entry = ?name, kind = ?other, "skipping a tar entry of a kind a root filesystem does not use");
                return Ok(());
            }
        }
        // The entry and its parents belong to this layer: an opaque marker keeps them.
        let mut path = Some(rel.as_path());
        while let Some(p) = path.filter(|p| !p.as_os_str().is_empty()) {
            self.written.insert(p.to_owned());
            path = p.parent();
        }
        Ok(())
    }

    /// Like [`Self::prepare_parents`], but creates nothing: for a hard link's target.
    fn check_parents_exist(&self, entry: &Path, rel: &Path) -> Result<(), LayerError> {
        let mut prefix = PathBuf::new();
        let Some(parent) = rel.parent() else { return Ok(()) };
        for component in parent.components() {
            prefix.push(component);
            match fs::symlink_metadata(self.root.join(&prefix)) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(LayerError::ThroughSymlink { entry: entry.to_owned(), component: prefix });
                }
                Ok(meta) if meta.is_dir() => {}
                _ => return Err(LayerError::HardLinkTargetMissing { entry: entry.to_owned(), target: rel.to_owned() }),
            }
        }
        Ok(())
    }

    /// Removes from `dir` what lower layers put there, keeping this layer's entries.
    fn make_opaque(&mut self, entry: &Path, dir: &Path) -> Result<(), LayerError> {
        let full = self.root.join(dir);
        let meta = fs::symlink_metadata(&full).map_err(io_err("inspecting the opaque directory of", entry))?;
        if !meta.is_dir() {
            return Err(LayerError::NotADirectory { entry: entry.to_owned(), component: dir.to_owned() });
        }
        self.clear_lower(entry, dir)
    }

    fn clear_lower(&self, entry: &Path, dir: &Path) -> Result<(), LayerError> {
        let full = self.root.join(dir);
        for child in fs::read_dir(&full).map_err(io_err("listing the opaque directory of", entry))? {
            let child = child.map_err(io_err("listing the opaque directory of", entry))?;
            let rel = dir.join(child.file_name());
            if self.written.contains(&rel) {
                let is_dir = child.file_type().map_err(io_err("inspecting", entry))?.is_dir();
                if is_dir {
                    self.clear_lower(entry, &rel)?;
                }
            } else {
                remove_any(&child.path()).map_err(io_err("clearing the opaque directory of", entry))?;
            }
        }
        Ok(())
    }

    fn own(&self, path: &Path, entry: &Path, uid: u64, gid: u64) -> Result<(), LayerError> {
        if !self.privileged {
            return Ok(());
        }
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            debug!(entry = ?entry, uid, gid, "ownership out of range; left as root");
            return Ok(());
        };
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_err("setting the owner of", entry))
    }
}

/// Removes whatever is at `path` (a directory with its contents), without following a symlink;
/// nothing there is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Sets access and modification times to `mtime` without following a symlink.
fn set_mtime(path: &Path, mtime: i64) -> io::Result<()> {
    let c = c_path(path)?;
    let time = libc::timespec { tv_sec: mtime as libc::time_t, tv_nsec: 0 };
    let times = [time, time];
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `times` points at two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn mknod(path: &Path, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A tar built entry by entry, for tests here and in the other modules.
    pub(crate) struct TarBuilder(tar::Builder<Vec<u8>>);

    impl TarBuilder {
        pub(crate) fn new() -> Self {
            Self(tar::Builder::new(Vec::new()))
        }

        fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            h
        }

        pub(crate) fn file(mut self, path: &str, data: &[u8]) -> Self {
            let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
            // set_path refuses `..`; write the raw name so hostile names reach the tar.
            set_raw_name(&mut h, path);
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }

        pub(crate) fn dir(mut self, path: &str) -> Self {
            let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
            set_raw_name(&mut h, path);
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }

        pub(crate) fn link(mut self, kind: tar::EntryType, path: &str, target: &str) -> Self {
            let mut h = Self::header(kind, 0o777, 0);
            set_raw_name(&mut h, path);
            let name = h.as_old_mut().linkname.as_mut();
            name.fill(0);
            name[..target.len()].copy_from_slice(target.as_bytes());
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }

        pub(crate) fn build(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn set_raw_name(h: &mut tar::Header, path: &str) {
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn read(root: &Path, rel: &str) -> String {
        fs::read_to_string(root.join(rel)).unwrap()
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts_and_opaque_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let lower = TarBuilder::new()
            .dir("etc/")
            .file("etc/hostname", b"lower")
            .file("etc/gone", b"x")
            .dir("etc/gone-dir/")
            .file("etc/gone-dir/f", b"x")
            .dir("opq/")
            .file("opq/old", b"old")
            .dir("opq/sub/")
            .file("opq/sub/old", b"old")
            .build();
        let stats = apply_layer(root, &lower[..], Compression::Detect).unwrap();
        assert_eq!(stats.files, 5);
        assert_eq!(stats.dirs, 4);

        let upper = TarBuilder::new()
            .file("etc/hostname", b"upper")
            .file("etc/.wh.gone", b"")
            .file("etc/.wh.gone-dir", b"")
            .file("opq/new", b"new")
            .file("opq/sub/new", b"new")
            .file("opq/.wh..wh..opq", b"")
            .build();
        let stats = apply_layer(root, &gzip(&upper)[..], Compression::Detect).unwrap();
        assert_eq!(stats.whiteouts, 3);

        assert_eq!(read(root, "etc/hostname"), "upper");
        assert!(!root.join("etc/gone").exists());
        assert!(!root.join("etc/gone-dir").exists());
        assert!(!root.join("etc/.wh.gone").exists());
        assert_eq!(read(root, "opq/new"), "new");
        assert_eq!(read(root, "opq/sub/new"), "new");
        assert!(!root.join("opq/old").exists(), "lower content of an opaque dir must go");
        assert!(!root.join("opq/sub/old").exists(), "lower content below an opaque dir must go");
        assert!(!root.join("opq/.wh..wh..opq").exists());
    }

    #[test]
    fn zstd_layers_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let tar = TarBuilder::new().file("a", b"zstd!").build();
        let compressed = ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest);
        apply_layer(dir.path(), &compressed[..], Compression::Detect).unwrap();
        assert_eq!(read(dir.path(), "a"), "zstd!");
    }

    #[test]
    fn dot_dot_that_escapes_is_refused() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        fs::create_dir(&root).unwrap();
        let tar = TarBuilder::new().file("a/../../x", b"evil").build();
        let err = apply_layer(&root, &tar[..], Compression::Detect).unwrap_err();
        assert!(matches!(&err, LayerError::EscapesRoot { entry } if entry == Path::new("a/../../x")), "{err:?}");
        assert!(!outer.path().join("x").exists());
        // `..` that stays inside is resolved.
        let tar = TarBuilder::new().file("a/../b", b"fine").build();
        apply_layer(&root, &tar[..], Compression::Detect).unwrap();
        assert_eq!(read(&root, "b"), "fine");
    }

    #[test]
    fn absolute_paths_land_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let tar = TarBuilder::new().file("/etc/passwd", b"root:x:0:0::/root:/bin/sh\n").build();
        apply_layer(dir.path(), &tar[..], Compression::Detect).unwrap();
        assert!(read(dir.path(), "etc/passwd").starts_with("root:x"));
    }

    #[test]
    fn a_planted_symlink_does_not_redirect_later_writes() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap();
        let tar = TarBuilder::new().link(tar::EntryType::Symlink, "evil", target).file("evil/x", b"escaped").build();
        let err = apply_layer(dir.path(), &tar[..], Compression::Detect).unwrap_err();
        assert!(
            matches!(&err, LayerError::ThroughSymlink { entry, component }
                if entry == Path::new("evil/x") && component == Path::new("evil")),
            "{err:?}"
        );
        assert!(!outside.path().join("x").exists());

        // Across layers too: the symlink from a lower layer is no way out.
        let dir = tempfile::tempdir().unwrap();
        let lower = TarBuilder::new().link(tar::EntryType::Symlink, "evil", target).build();
        apply_layer(dir.path(), &lower[..], Compression::Detect).unwrap();
        let upper = TarBuilder::new().file("evil/y", b"escaped").build();
        assert!(apply_layer(dir.path(), &upper[..], Compression::Detect).is_err());
        assert!(!outside.path().join("y").exists());
    }

    #[test]
    fn replacing_a_symlink_with_a_file_does_not_follow_it() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"original").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tar = TarBuilder::new()
            .link(tar::EntryType::Symlink, "f", victim.to_str().unwrap())
            .file("f", b"overwritten?")
            .build();
        apply_layer(dir.path(), &tar[..], Compression::Detect).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"original");
        assert_eq!(read(dir.path(), "f"), "overwritten?");
    }

    #[test]
    fn hard_links_inside_work_and_outside_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tar = TarBuilder::new().file("a", b"same").link(tar::EntryType::Link, "b", "a").build();
        let stats = apply_layer(dir.path(), &tar[..], Compression::Detect).unwrap();
        assert_eq!(stats.hardlinks, 1);
        assert_eq!(read(dir.path(), "b"), "same");

        let outer = tempfile::tempdir().unwrap();
        fs::write(outer.path().join("secret"), b"s").unwrap();
        let root = outer.path().join("root");
        fs::create_dir(&root).unwrap();
        let tar = TarBuilder::new().link(tar::EntryType::Link, "stolen", "../secret").build();
        let err = apply_layer(&root, &tar[..], Compression::Detect).unwrap_err();
        assert!(matches!(&err, LayerError::HardLinkOutside { entry, .. } if entry == Path::new("stolen")), "{err:?}");
        assert!(!root.join("stolen").exists());

        // A link through a planted symlink is refused as well.
        let tar = TarBuilder::new()
            .link(tar::EntryType::Symlink, "out", outer.path().to_str().unwrap())
            .link(tar::EntryType::Link, "stolen", "out/secret")
            .build();
        let err = apply_layer(&root, &tar[..], Compression::Detect).unwrap_err();
        assert!(matches!(err, LayerError::ThroughSymlink { .. }), "{err:?}");
        assert!(!root.join("stolen").exists());

        let tar = TarBuilder::new().link(tar::EntryType::Link, "dangling", "nowhere").build();
        let err = apply_layer(&root, &tar[..], Compression::Detect).unwrap_err();
        assert!(matches!(err, LayerError::HardLinkTargetMissing { .. }), "{err:?}");
    }

    #[test]
    fn truncated_streams_are_clear_errors() {
        let tar = TarBuilder::new().file("big", &[7u8; 100_000]).build();
        let gz = gzip(&tar);
        let dir = tempfile::tempdir().unwrap();
        let err = apply_layer(dir.path(), &gz[..gz.len() / 2], Compression::Detect).unwrap_err();
        assert!(matches!(err, LayerError::Read(_) | LayerError::Truncated { .. }), "{err:?}");

        let zst = ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest);
        let dir = tempfile::tempdir().unwrap();
        let err = apply_layer(dir.path(), &zst[..zst.len() / 2], Compression::Detect).unwrap_err();
        assert!(matches!(err, LayerError::Read(_) | LayerError::Truncated { .. }), "{err:?}");

        let dir = tempfile::tempdir().unwrap();
        let err = apply_layer(dir.path(), &tar[..10_000], Compression::Detect).unwrap_err();
        assert!(
            matches!(&err, LayerError::Truncated { entry, expected: 100_000, .. } if entry == Path::new("big"))
                || matches!(err, LayerError::Read(_)),
            "{err:?}"
        );
    }

    #[test]
    fn modes_and_mtimes_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_path("bin/tool").unwrap();
        h.set_mode(0o751);
        h.set_size(2);
        h.set_mtime(1_234_567_890);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append(&h, &b"#!"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        apply_layer(dir.path(), &tar[..], Compression::Detect).unwrap();
        let meta = fs::metadata(dir.path().join("bin/tool")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o751);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.mtime(), 1_234_567_890);
    }
}
