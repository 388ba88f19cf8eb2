//! The content-addressed image cache: a key from everything that goes into an image, and
//! atomic stores, so a reader sees either no image or a whole one.
//!
//! Key = SHA-256 over [`IMAGE_FORMAT_VERSION`], the agent, busybox, and each module's in-image
//! path and raw (possibly compressed) bytes, every field length-prefixed so that no two
//! different inputs hash the same stream. Images live at `<cache_dir>/<key>.cpio`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Bump when the image layout or the writer changes, so old cache entries are not reused.
pub const IMAGE_FORMAT_VERSION: u32 = 2;
/// The file name suffix of cached images.
pub const IMAGE_SUFFIX: &str = ".cpio";
/// Permissions of a stored image (readable by the VMM whatever user it runs as).
pub const IMAGE_FILE_MODE: u32 = 0o644;

/// Incremental builder of a cache key.
#[derive(Debug, Clone)]
pub struct CacheKey {
    hasher: Sha256,
}

impl CacheKey {
    /// A key seeded with [`IMAGE_FORMAT_VERSION`].
    pub fn new() -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"nestbox-initramfs");
        hasher.update(IMAGE_FORMAT_VERSION.to_le_bytes());
        Self { hasher }
    }

    /// Adds one labelled field.
    pub fn field(&mut self, label: &str, bytes: &[u8]) -> &mut Self {
        for part in [label.as_bytes(), bytes] {
            self.hasher.update((part.len() as u64).to_le_bytes());
            self.hasher.update(part);
        }
        self
    }

    /// The key as lower-case hex.
    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl Default for CacheKey {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the image with this key is stored.
pub fn image_path(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join(format!("{key}{IMAGE_SUFFIX}"))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` to `dest` through a synced temporary file in the same directory and a
/// rename, so `dest` never holds a partial image.
pub fn store_atomically(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".partial-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().set_permissions(fs::Permissions::from_mode(IMAGE_FILE_MODE))?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_key_depends_on_field_boundaries() {
        let mut a = CacheKey::new();
        a.field("x", b"ab").field("y", b"c");
        let mut b = CacheKey::new();
        b.field("x", b"a").field("y", b"bc");
        let mut c = CacheKey::new();
        c.field("x", b"ab").field("y", b"c");
        let (a, b, c) = (a.finish(), b.finish(), c.finish());
        assert_ne!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn test_store_atomically_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = image_path(dir.path(), "k");
        store_atomically(&dest, b"one").unwrap();
        store_atomically(&dest, b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, IMAGE_FILE_MODE);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["k.cpio"]);
    }

    #[test]
    fn test_sha256_hex_known_value() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
