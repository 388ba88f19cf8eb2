//! The resolve index: remembers what a source file resolved to, keyed by the file's identity
//! (`dev`, inode, size, mtime, ctime), so a repeated `resolve` of an unchanged kernel reads
//! and hashes nothing. A changed file, or a cache entry whose size no longer matches, misses.
//!
//! `<home>/kernels/index/<sha256 of the identity>`: five lines — vmlinux path, its size, PVH
//! entry, vmlinux SHA-256, and version (empty when unknown).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::cache::{kernels_dir, sha256_hex};

/// What a source file resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub vmlinux: PathBuf,
    pub vmlinux_len: u64,
    pub pvh_entry: u32,
    pub sha256: String,
    pub version: Option<String>,
}

/// The index file for `source` as it is now, or `None` if it cannot be stat'ed.
pub(crate) fn entry_path(home: &Path, source: &Path) -> Option<PathBuf> {
    let meta = fs::metadata(source).ok()?;
    let canonical = fs::canonicalize(source).ok()?;
    let identity = format!(
        "{}\0{}\0{}\0{}\0{}.{}\0{}.{}",
        canonical.display(),
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    );
    Some(kernels_dir(home).join("index").join(sha256_hex(identity.as_bytes())))
}

/// The entry at `path`, if it is well-formed and its vmlinux still has the recorded size.
pub(crate) fn load(path: &Path) -> Option<Entry> {
    let text = fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let entry = Entry {
        vmlinux: PathBuf::from(lines.next()?),
        vmlinux_len: lines.next()?.parse().ok()?,
        pvh_entry: lines.next()?.parse().ok()?,
        sha256: lines.next().filter(|s| s.len() == 64)?.to_owned(),
        version: lines.next().filter(|s| !s.is_empty()).map(str::to_owned),
    };
    (fs::metadata(&entry.vmlinux).ok()?.len() == entry.vmlinux_len).then_some(entry)
}

/// Records `entry` at `path`; failures only cost a slower next resolve.
pub(crate) fn store(path: &Path, entry: &Entry) {
    let Some(dir) = path.parent() else { return };
    if fs::create_dir_all(dir).is_err() {
        return;
    }
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n",
        entry.vmlinux.display(),
        entry.vmlinux_len,
        entry.pvh_entry,
        entry.sha256,
        entry.version.as_deref().unwrap_or("")
    );
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    if fs::write(&tmp, text).is_ok() && fs::rename(&tmp, path).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_entry_round_trips_and_checks_size() {
        let home = tempfile::tempdir().unwrap();
        let source = home.path().join("vmlinuz");
        fs::write(&source, b"kernel").unwrap();
        let vmlinux = home.path().join("vmlinux");
        fs::write(&vmlinux, b"12345").unwrap();
        let path = entry_path(home.path(), &source).unwrap();
        let entry =
            Entry { vmlinux, vmlinux_len: 5, pvh_entry: 7, sha256: "a".repeat(64), version: Some("6.1".into()) };
        store(&path, &entry);
        assert_eq!(load(&path), Some(entry.clone()));
        fs::write(&entry.vmlinux, b"123456").unwrap();
        assert_eq!(load(&path), None, "a resized vmlinux must miss");
    }

    #[test]
    fn test_identity_changes_with_the_file() {
        let home = tempfile::tempdir().unwrap();
        let source = home.path().join("vmlinuz");
        fs::write(&source, b"kernel").unwrap();
        let before = entry_path(home.path(), &source).unwrap();
        fs::write(&source, b"kernel, rebuilt").unwrap();
        assert_ne!(entry_path(home.path(), &source).unwrap(), before);
        assert_eq!(entry_path(home.path(), &home.path().join("missing")), None);
    }
}
