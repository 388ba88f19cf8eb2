//! Per-sandbox disks over a shared base image: the sandbox writes to its own copy-on-write disk,
//! the base is never written.
//!
//! - QEMU and Cloud Hypervisor: a qcow2 overlay whose backing file is the base, raw or qcow2
//!   (`qemu-img create -f qcow2 -F FORMAT -b BASE`), made in constant time whatever its size.
//! - Firecracker (raw disks only): a reflink copy where the filesystem can share extents
//!   (`FICLONE`), else a sparse copy.

use std::path::{Path, PathBuf};
use std::process::Command;

use nestbox_backend::BackendKind;
use serde::{Deserialize, Serialize};

use crate::EngineError;

/// How a sandbox's disk was made, for `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverlayKind {
    /// A qcow2 overlay backed by the base.
    Qcow2,
    /// A copy sharing the base's extents.
    Reflink,
    /// A copy of the base's data, holes kept.
    SparseCopy,
}

/// The image a sandbox's disk is made over.
#[derive(Debug, Clone, Copy)]
pub struct Base<'a> {
    /// Its file.
    pub path: &'a Path,
    /// Its format as qemu-img names it: `raw` or `qcow2`.
    pub format: &'a str,
}

impl<'a> Base<'a> {
    /// A raw image (a root filesystem).
    pub fn raw(path: &'a Path) -> Self {
        Self { path, format: "raw" }
    }
}

/// Makes `dest`, a disk for `backend` over `base`, of `size` bytes when given (at least the
/// base's; the guest grows its filesystem to fill it).
pub fn overlay(base: &Base, dest: &Path, backend: BackendKind, size: Option<u64>) -> Result<OverlayKind, EngineError> {
    check_size(base, size)?;
    match backend {
        BackendKind::Firecracker => {
            let kind = raw_copy(base.path, dest)?;
            if let Some(size) = size {
                let grow = std::fs::OpenOptions::new().write(true).open(dest).and_then(|f| f.set_len(size));
                grow.map_err(EngineError::io(format!("cannot grow {}", dest.display())))?;
            }
            Ok(kind)
        }
        _ => qcow2(base, dest, size).map(|()| OverlayKind::Qcow2),
    }
}

/// Refuses a disk `size` smaller than `base` (the image must fit).
pub fn check_size(base: &Base, size: Option<u64>) -> Result<(), EngineError> {
    let image = virtual_size(base)?;
    match size {
        Some(size) if size < image => Err(EngineError::DiskTooSmall { size, image }),
        _ => Ok(()),
    }
}

/// The size of the disk `base` holds: a raw file's length, or a qcow2 header's size field (a
/// big-endian u64 at byte 24).
pub fn virtual_size(base: &Base) -> Result<u64, EngineError> {
    use std::os::unix::fs::FileExt;
    let context = || format!("cannot read {}", base.path.display());
    let file = std::fs::File::open(base.path).map_err(|e| EngineError::io(context())(e))?;
    if base.format != "qcow2" {
        return Ok(file.metadata().map_err(|e| EngineError::io(context())(e))?.len());
    }
    let mut field = [0u8; 8];
    file.read_exact_at(&mut field, 24).map_err(|e| EngineError::io(context())(e))?;
    Ok(u64::from_be_bytes(field))
}

fn qcow2(base: &Base, dest: &Path, size: Option<u64>) -> Result<(), EngineError> {
    let qemu_img = nestbox_supervise::find_program("qemu-img").ok_or_else(|| {
        EngineError::from(nestbox_backend::BackendError::BinaryNotFound {
            binary: "qemu-img".into(),
            package: "qemu-utils".into(),
        })
    })?;
    let format = base.format;
    let base =
        std::fs::canonicalize(base.path).map_err(EngineError::io(format!("cannot find {}", base.path.display())))?;
    let out = Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
        .arg(&base)
        .arg(dest)
        .args(size.map(|s| s.to_string()))
        .output()
        .map_err(EngineError::io("cannot run qemu-img"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(dest);
        let text = String::from_utf8_lossy(&out.stderr);
        return Err(EngineError::Io {
            context: format!("qemu-img create {} over {}", dest.display(), base.display()),
            source: std::io::Error::other(text.trim().to_owned()),
        });
    }
    Ok(())
}

pub(crate) fn raw_copy(base: &Path, dest: &Path) -> Result<OverlayKind, EngineError> {
    match nestbox_backend::copy_file(base, dest) {
        Ok(nestbox_backend::CopyKind::Reflink) => Ok(OverlayKind::Reflink),
        Ok(nestbox_backend::CopyKind::Sparse) => Ok(OverlayKind::SparseCopy),
        Err(e) => {
            Err(EngineError::Io { context: format!("cannot copy {} to {}", base.display(), dest.display()), source: e })
        }
    }
}

/// The file a sandbox's root disk lives in.
pub fn disk_path(dir: &Path, kind: BackendKind) -> PathBuf {
    dir.join(if kind == BackendKind::Firecracker { "root.raw" } else { "root.qcow2" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_virtual_size_reads_a_qcow2_header() {
        if nestbox_supervise::find_program("qemu-img").is_none() {
            eprintln!("skipped: qemu-img is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("cloud.qcow2");
        let made = Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&image).arg("3G").status();
        assert!(made.unwrap().success());
        let base = Base { path: &image, format: "qcow2" };
        assert_eq!(virtual_size(&base).unwrap(), 3 << 30);
        assert!(matches!(check_size(&base, Some(2 << 30)), Err(EngineError::DiskTooSmall { .. })));
        // An overlay of a qcow2 base names the format.
        let dest = dir.path().join("root.qcow2");
        overlay(&base, &dest, BackendKind::Qemu, Some(4 << 30)).unwrap();
        let info = Command::new("qemu-img").args(["info", "--output=json"]).arg(&dest).output().unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(
            (info["virtual-size"].as_u64(), info["backing-filename-format"].as_str()),
            (Some(4 << 30), Some("qcow2"))
        );
    }

    #[test]
    fn test_qcow2_overlay_is_small_and_names_its_base() {
        if nestbox_supervise::find_program("qemu-img").is_none() {
            eprintln!("skipped: qemu-img is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.ext4");
        std::fs::File::create(&base).unwrap().set_len(512 << 20).unwrap();
        let dest = dir.path().join("root.qcow2");
        assert_eq!(overlay(&Base::raw(&base), &dest, BackendKind::Qemu, None).unwrap(), OverlayKind::Qcow2);
        assert!(std::fs::metadata(&dest).unwrap().len() < 1 << 20);
        let info = Command::new("qemu-img").arg("info").arg(&dest).output().unwrap();
        assert!(String::from_utf8_lossy(&info.stdout).contains("backing file"), "{info:?}");
        let missing =
            overlay(&Base::raw(&dir.path().join("nope")), &dir.path().join("x.qcow2"), BackendKind::Qemu, None);
        assert!(missing.is_err());
        // A bigger disk than the image: its virtual size says so.
        let big = dir.path().join("big.qcow2");
        overlay(&Base::raw(&base), &big, BackendKind::Qemu, Some(2 << 30)).unwrap();
        let info = Command::new("qemu-img").args(["info", "--output=json"]).arg(&big).output().unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["virtual-size"], 2u64 << 30);
        let small = overlay(&Base::raw(&base), &dir.path().join("small.qcow2"), BackendKind::Qemu, Some(1 << 20));
        assert!(matches!(small, Err(EngineError::DiskTooSmall { .. })), "{small:?}");
        assert!(!dir.path().join("small.qcow2").exists());
    }
}
