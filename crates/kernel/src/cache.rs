//! The vmlinux cache: `<home>/kernels/<sha256 of the source file>.vmlinux`, so each kernel is
//! decompressed once. Entries are written atomically (a temp file in the same directory, then
//! `rename`) and checked for a PVH note when read; a bad entry counts as a miss.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::KernelError;
use crate::elf::find_pvh_entry;

/// Directory under the nestbox home holding kernels.
pub const KERNELS_DIR: &str = "kernels";
/// Extension of cached vmlinux files.
pub const VMLINUX_EXTENSION: &str = "vmlinux";
/// Mode of cached files: the VMM may run as another user.
const CACHE_FILE_MODE: u32 = 0o644;

/// `<home>/kernels`.
pub fn kernels_dir(home: &Path) -> PathBuf {
    home.join(KERNELS_DIR)
}

/// The cache entry for a source file with this SHA-256 (hex).
pub fn vmlinux_path(home: &Path, source_sha256: &str) -> PathBuf {
    kernels_dir(home).join(format!("{source_sha256}.{VMLINUX_EXTENSION}"))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A cached vmlinux and its PVH entry, or `None` when absent, unreadable or not a PVH ELF.
pub fn load(path: &Path) -> Option<(Vec<u8>, u32)> {
    let bytes = fs::read(path).ok()?;
    let entry = find_pvh_entry(&bytes).ok()?;
    Some((bytes, entry))
}

/// Writes `bytes` to `path` atomically, creating the directory.
pub fn store(path: &Path, bytes: &[u8]) -> Result<(), KernelError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KernelError::CacheWrite { path, source }
    };
    fs::create_dir_all(dir).map_err(err(dir))?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").suffix(".vmlinux").tempfile_in(dir).map_err(err(dir))?;
    tmp.write_all(bytes).map_err(err(tmp.path()))?;
    tmp.as_file().set_permissions(fs::Permissions::from_mode(CACHE_FILE_MODE)).map_err(err(tmp.path()))?;
    tmp.as_file().sync_all().map_err(err(tmp.path()))?;
    tmp.persist(path).map_err(|e| err(path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tiny_pvh_elf;

    #[test]
    fn test_sha256_hex_known_vector() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn test_store_then_load_round_trips_without_leftovers() {
        let home = tempfile::tempdir().unwrap();
        let path = vmlinux_path(home.path(), "abc");
        assert_eq!(path, home.path().join("kernels/abc.vmlinux"));
        let elf = tiny_pvh_elf(&[0xf4]);
        store(&path, &elf).unwrap();
        assert_eq!(load(&path), Some((elf.clone(), 0x10_0000)));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, CACHE_FILE_MODE);
        // Replacing an entry works and leaves only the entry behind.
        store(&path, &elf).unwrap();
        let names: Vec<_> = fs::read_dir(kernels_dir(home.path())).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["abc.vmlinux"]);
    }

    #[test]
    fn test_load_treats_bad_entries_as_missing() {
        let home = tempfile::tempdir().unwrap();
        let path = vmlinux_path(home.path(), "bad");
        assert_eq!(load(&path), None);
        store(&path, b"\x7fELF truncated").unwrap();
        assert_eq!(load(&path), None);
    }

    #[test]
    fn test_store_reports_unwritable_directory() {
        let home = tempfile::tempdir().unwrap();
        let blocker = home.path().join("kernels");
        fs::write(&blocker, b"a file where the directory should be").unwrap();
        let err = store(&vmlinux_path(home.path(), "x"), b"data").unwrap_err();
        assert!(matches!(err, KernelError::CacheWrite { path, .. } if path == blocker));
    }
}
