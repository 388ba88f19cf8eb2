//! [`resolve`]: from "which kernel?" to a cached PVH vmlinux that QEMU and Firecracker boot,
//! with its release and module tree. Ties [`crate::locate`], [`crate::bzimage`] and
//! [`crate::cache`] together.

use std::fs;
use std::path::{Path, PathBuf};

use crate::KernelError;
use crate::bzimage::{extract_vmlinux, kernel_version};
use crate::cache::{self, sha256_hex};
use crate::elf::{ElfError, find_pvh_entry};
use crate::index;
use crate::locate::{SearchRoots, locate};

/// A guest kernel ready for direct boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKernel {
    /// The cached ELF with a PVH note, under `<home>/kernels/`.
    pub vmlinux: PathBuf,
    /// What was found or passed (bzImage or ELF).
    pub source: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub version: Option<String>,
    /// `/lib/modules/<version>` when it exists (`None`: drivers must be built in).
    pub modules_dir: Option<PathBuf>,
    /// The 32-bit PVH entry point.
    pub pvh_entry: u32,
    /// Hex SHA-256 of the vmlinux bytes.
    pub sha256: String,
}

/// Finds the kernel (see [`crate::locate`]) on the real host and prepares it.
pub fn resolve(explicit: Option<&Path>, home: &Path) -> Result<ResolvedKernel, KernelError> {
    resolve_with(explicit, home, &SearchRoots::host())
}

/// [`resolve`] with the host's `/boot` and `/lib/modules` replaced.
pub fn resolve_with(explicit: Option<&Path>, home: &Path, roots: &SearchRoots) -> Result<ResolvedKernel, KernelError> {
    resolve_using(explicit, home, roots, &extract_vmlinux)
}

/// The extraction step, injectable so tests can see whether the cache was used.
type Extract<'a> = &'a dyn Fn(&[u8]) -> Result<Vec<u8>, KernelError>;

fn resolve_using(
    explicit: Option<&Path>,
    home: &Path,
    roots: &SearchRoots,
    extract: Extract<'_>,
) -> Result<ResolvedKernel, KernelError> {
    let found = locate(explicit, home, roots)?;
    let path = found.path;
    // Fast path: the same file as last time resolves to the same vmlinux, without reading it.
    let index_path = index::entry_path(home, &path);
    if let Some(hit) = index_path.as_deref().and_then(index::load) {
        let version = found.version.or(hit.version);
        let modules_dir = version.as_deref().and_then(|v| roots.modules_dir(v));
        return Ok(ResolvedKernel {
            vmlinux: hit.vmlinux,
            source: path,
            version,
            modules_dir,
            pvh_entry: hit.pvh_entry,
            sha256: hit.sha256,
        });
    }
    let source = fs::read(&path).map_err(|source| KernelError::Read { path: path.clone(), source })?;
    let vmlinux_path = cache::vmlinux_path(home, &sha256_hex(&source));
    let (vmlinux, pvh_entry) = match cache::load(&vmlinux_path) {
        Some(hit) => hit,
        None => {
            let vmlinux = extract(&source).map_err(|e| image_error(&path, e))?;
            let entry = find_pvh_entry(&vmlinux).map_err(|e| image_error(&path, e.into()))?;
            cache::store(&vmlinux_path, &vmlinux)?;
            (vmlinux, entry)
        }
    };
    let version = found.version.or_else(|| kernel_version(&source)).or_else(|| kernel_version(&vmlinux));
    let modules_dir = version.as_deref().and_then(|v| roots.modules_dir(v));
    let sha256 = sha256_hex(&vmlinux);
    if let Some(index_path) = &index_path {
        let entry = index::Entry {
            vmlinux: vmlinux_path.clone(),
            vmlinux_len: vmlinux.len() as u64,
            pvh_entry,
            sha256: sha256.clone(),
            version: version.clone(),
        };
        index::store(index_path, &entry);
    }
    Ok(ResolvedKernel { vmlinux: vmlinux_path, source: path, version, modules_dir, pvh_entry, sha256 })
}

/// Attaches the kernel's path; a missing PVH note gets its own error.
fn image_error(path: &Path, e: KernelError) -> KernelError {
    match e {
        KernelError::Elf(ElfError::NoPvhNote) => KernelError::NoPvhNote { path: path.to_path_buf() },
        e => KernelError::Image { path: path.to_path_buf(), source: Box::new(e) },
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::bzimage::synthetic_bzimage;
    use crate::decompress::Compression;
    use crate::decompress::tests::compress;
    use crate::elf::tiny_pvh_elf;

    struct Host {
        dir: tempfile::TempDir,
        roots: SearchRoots,
    }

    impl Host {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let roots = SearchRoots { boot: dir.path().join("boot"), modules: dir.path().join("lib/modules") };
            fs::create_dir_all(&roots.boot).unwrap();
            Self { dir, roots }
        }

        fn home(&self) -> PathBuf {
            self.dir.path().join("home")
        }

        fn boot_kernel(&self, version: &str, image: &[u8]) -> PathBuf {
            let path = self.roots.boot.join(format!("vmlinuz-{version}"));
            fs::write(&path, image).unwrap();
            path
        }
    }

    fn bzimage(format: Compression, version: &str) -> Vec<u8> {
        synthetic_bzimage(&compress(format, &tiny_pvh_elf(&[0xf4])), version)
    }

    #[test]
    fn test_resolve_boot_kernel_with_modules_and_cache() {
        let host = Host::new();
        let source = host.boot_kernel("6.1.0-7-test", &bzimage(Compression::Lz4Legacy, "9.9 (x)"));
        fs::create_dir_all(host.roots.modules.join("6.1.0-7-test")).unwrap();

        let calls = Cell::new(0);
        let counting = |image: &[u8]| {
            calls.set(calls.get() + 1);
            extract_vmlinux(image)
        };
        let first = resolve_using(None, &host.home(), &host.roots, &counting).unwrap();
        assert_eq!(calls.get(), 1);
        assert_eq!(first.source, source);
        // The file name wins over the header's version string.
        assert_eq!(first.version.as_deref(), Some("6.1.0-7-test"));
        assert_eq!(first.modules_dir, Some(host.roots.modules.join("6.1.0-7-test")));
        assert_eq!(first.pvh_entry, 0x10_0000);
        let expected = cache::vmlinux_path(&host.home(), &sha256_hex(&fs::read(&source).unwrap()));
        assert_eq!(first.vmlinux, expected);
        let bytes = fs::read(&first.vmlinux).unwrap();
        assert_eq!(bytes, tiny_pvh_elf(&[0xf4]));
        assert_eq!(first.sha256, sha256_hex(&bytes));

        let second = resolve_using(None, &host.home(), &host.roots, &counting).unwrap();
        assert_eq!(calls.get(), 1, "a cache hit must not extract again");
        assert_eq!(second, first);

        // A damaged cache entry is rebuilt.
        fs::write(&first.vmlinux, b"junk").unwrap();
        let third = resolve_using(None, &host.home(), &host.roots, &counting).unwrap();
        assert_eq!(calls.get(), 2);
        assert_eq!(third, first);
    }

    #[test]
    fn test_resolve_explicit_bzimage_version_from_header() {
        let host = Host::new();
        host.boot_kernel("1.0", &bzimage(Compression::Gzip, "1.0"));
        let explicit = host.dir.path().join("my-kernel");
        fs::write(&explicit, bzimage(Compression::Zstd, "6.6.6-custom (me@here) #1")).unwrap();
        fs::create_dir_all(host.roots.modules.join("6.6.6-custom")).unwrap();
        let k = resolve_with(Some(&explicit), &host.home(), &host.roots).unwrap();
        assert_eq!(k.source, explicit);
        assert_eq!(k.version.as_deref(), Some("6.6.6-custom"));
        assert_eq!(k.modules_dir, Some(host.roots.modules.join("6.6.6-custom")));
    }

    #[test]
    fn test_resolve_home_elf_version_from_banner_without_modules() {
        let host = Host::new();
        let mut elf = tiny_pvh_elf(&[0xf4]);
        elf.extend_from_slice(b"\0Linux version 6.2.0-home (x) #1\0");
        let home_kernel = crate::locate::home_kernel(&host.home());
        fs::create_dir_all(home_kernel.parent().unwrap()).unwrap();
        fs::write(&home_kernel, &elf).unwrap();
        let k = resolve_with(None, &host.home(), &host.roots).unwrap();
        assert_eq!(k.source, home_kernel);
        assert_eq!(k.version.as_deref(), Some("6.2.0-home"));
        assert_eq!(k.modules_dir, None);
        assert_eq!(fs::read(&k.vmlinux).unwrap(), elf);
    }

    #[test]
    fn test_resolve_rejects_kernel_without_pvh_note_naming_it() {
        let host = Host::new();
        let mut elf = tiny_pvh_elf(&[0xf4]);
        elf[64 + 2 * 56 + 8] = 3; // the PVH note becomes some other note type
        let path = host.boot_kernel("6.1", &synthetic_bzimage(&compress(Compression::Xz, &elf), "6.1"));
        let err = resolve_with(None, &host.home(), &host.roots).unwrap_err();
        assert!(matches!(&err, KernelError::NoPvhNote { path: p } if *p == path), "{err:?}");
        assert!(err.to_string().contains("CONFIG_PVH"));
        assert!(
            !cache::kernels_dir(&host.home()).exists()
                || fs::read_dir(cache::kernels_dir(&host.home())).unwrap().next().is_none()
        );
    }

    #[test]
    fn test_resolve_wraps_image_errors_with_path() {
        let host = Host::new();
        let explicit = host.dir.path().join("garbage");
        fs::write(&explicit, b"definitely not a kernel").unwrap();
        let err = resolve_with(Some(&explicit), &host.home(), &host.roots).unwrap_err();
        let KernelError::Image { path, source } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(path, &explicit);
        assert!(matches!(**source, KernelError::UnknownImage { .. }));

        let missing = host.dir.path().join("missing");
        let err = resolve_with(Some(&missing), &host.home(), &host.roots).unwrap_err();
        assert!(matches!(err, KernelError::Read { path, .. } if path == missing));
    }

    #[test]
    fn test_resolve_nothing_found() {
        let host = Host::new();
        let err = resolve_with(None, &host.home(), &host.roots).unwrap_err();
        assert!(matches!(err, KernelError::NotFound { .. }));
    }
}
