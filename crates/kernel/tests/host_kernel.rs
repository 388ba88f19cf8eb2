//! The host's own kernels (`/boot/vmlinuz-*`, e.g. Debian's LZ4-compressed
//! `vmlinuz-6.1.0-56-cloud-amd64`): each must extract to an ELF whose PVH entry lies in a
//! loadable segment, and `resolve` must pick one and cache it. Skipped where /boot has none.

use std::fs;
use std::path::{Path, PathBuf};

use nestbox_kernel::bzimage::{is_bzimage, payload};
use nestbox_kernel::locate::boot_kernels;
use nestbox_kernel::{Compression, SearchRoots, extract_vmlinux, kernel_version, pvh_entry, resolve};

/// Host kernels this process can read, or `None` (with a note) when there are none.
fn readable_host_kernels() -> Option<Vec<(PathBuf, String)>> {
    let kernels: Vec<_> = boot_kernels(Path::new("/boot"))
        .unwrap_or_default()
        .into_iter()
        .filter(|(path, _)| fs::File::open(path).is_ok())
        .collect();
    if kernels.is_empty() {
        eprintln!("skipped: no readable /boot/vmlinuz-* on this host");
        return None;
    }
    Some(kernels)
}

/// Physical ranges `[paddr, paddr + memsz)` of the PT_LOAD segments of an ELF64.
fn load_segments(elf: &[u8]) -> Vec<(u64, u64)> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let phoff = u64_at(32) as usize;
    let (size, count) = (usize::from(u16_at(54)), usize::from(u16_at(56)));
    (0..count)
        .map(|i| phoff + i * size)
        .filter(|&ph| u32_at(ph) == 1)
        .map(|ph| (u64_at(ph + 24), u64_at(ph + 24) + u64_at(ph + 40)))
        .collect()
}

#[test]
fn test_host_kernels_extract_with_pvh_entry_in_a_segment() {
    let Some(kernels) = readable_host_kernels() else {
        return;
    };
    for (path, version) in kernels {
        let image = fs::read(&path).unwrap();
        assert!(is_bzimage(&image), "{}", path.display());
        let format = Compression::detect(payload(&image).unwrap());
        let vmlinux = extract_vmlinux(&image).unwrap_or_else(|e| panic!("{} ({format:?}): {e:?}", path.display()));
        assert!(vmlinux.len() > image.len(), "the vmlinux is bigger than its compressed image");
        let entry = u64::from(pvh_entry(&vmlinux).unwrap());
        let segments = load_segments(&vmlinux);
        assert!(
            segments.iter().any(|&(start, end)| (start..end).contains(&entry)),
            "PVH entry {entry:#x} outside {segments:x?}"
        );
        // Both version sources agree with the file name.
        assert_eq!(kernel_version(&image).as_deref(), Some(version.as_str()));
        assert_eq!(kernel_version(&vmlinux).as_deref(), Some(version.as_str()));
        eprintln!("{}: {format:?}, {} -> {} bytes, PVH entry {entry:#x}", path.display(), image.len(), vmlinux.len());
    }
}

#[test]
fn test_resolve_host_kernel_into_cache_then_hit() {
    let Some(kernels) = readable_host_kernels() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let first = resolve(None, home.path()).unwrap();
    assert!(kernels.iter().any(|(path, _)| *path == first.source));
    assert!(first.vmlinux.starts_with(home.path().join("kernels")));
    let version = first.version.clone().unwrap();
    assert!(first.source.ends_with(format!("vmlinuz-{version}")));
    assert_eq!(first.modules_dir, SearchRoots::host().modules_dir(&version));
    let mtime = fs::metadata(&first.vmlinux).unwrap().modified().unwrap();

    let second = resolve(None, home.path()).unwrap();
    assert_eq!(second, first);
    let again = fs::metadata(&second.vmlinux).unwrap().modified().unwrap();
    assert_eq!(again, mtime, "a cache hit must not rewrite the vmlinux");
    eprintln!("resolved {first:?}");
}
