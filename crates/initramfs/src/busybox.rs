//! The busybox that gives the guest its shell and tools: finding it on the host, proving it is
//! statically linked (the image has no dynamic loader or libc), and listing its applet links.
//!
//! "Static" means an ELF file without a `PT_INTERP` program header; static-pie binaries pass.
//! Applet links come from `busybox --list-full`, which prints paths such as `bin/sh` and
//! `usr/bin/env` relative to the root.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// Where a busybox is looked for when none is given, in order.
pub const BUSYBOX_SEARCH_PATHS: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];
/// Where busybox is installed in the image (no leading `/`).
pub const BUSYBOX_IMAGE_PATH: &str = "bin/busybox";
/// The target of every applet symlink.
pub const BUSYBOX_LINK_TARGET: &str = "/bin/busybox";
/// The Debian package that provides a static busybox.
pub const BUSYBOX_STATIC_PACKAGE: &str = "busybox-static";
/// The argument that makes busybox print its applets' install paths.
pub const LIST_FULL_ARG: &str = "--list-full";

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const PT_INTERP: u32 = 3;

/// Errors from finding, checking or querying busybox.
#[derive(Debug, thiserror::Error)]
pub enum BusyboxError {
    /// No busybox was given and none was found at the usual places.
    #[error("no busybox found at {searched:?}; install the {BUSYBOX_STATIC_PACKAGE} package")]
    NotFound {
        /// The paths tried.
        searched: Vec<PathBuf>,
    },
    /// The busybox file could not be read.
    #[error("reading busybox {path:?}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not a well-formed ELF executable.
    #[error("busybox {path:?} is not an ELF executable")]
    NotElf {
        /// The file.
        path: PathBuf,
    },
    /// The file asks for a dynamic loader, which the image does not have.
    #[error(
        "busybox {path:?} is dynamically linked (interpreter {interpreter:?}); install the {BUSYBOX_STATIC_PACKAGE} package"
    )]
    NotStatic {
        /// The file.
        path: PathBuf,
        /// The requested program interpreter, e.g. `/lib64/ld-linux-x86-64.so.2`.
        interpreter: String,
    },
    /// `busybox --list-full` could not be started.
    #[error("running {path:?} {LIST_FULL_ARG}")]
    Spawn {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `busybox --list-full` exited unsuccessfully.
    #[error("{path:?} {LIST_FULL_ARG} failed ({status}): {stderr}")]
    ListFailed {
        /// The file.
        path: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// `busybox --list-full` printed a path that is not a plain relative path.
    #[error("{path:?} {LIST_FULL_ARG} printed an unusable applet path {applet:?}")]
    BadAppletPath {
        /// The file.
        path: PathBuf,
        /// The printed line.
        applet: String,
    },
}

/// A busybox binary that was checked to be static.
#[derive(Debug, Clone)]
pub struct Busybox {
    /// Where it is on the host.
    pub path: PathBuf,
    /// Its contents.
    pub bytes: Vec<u8>,
}

impl Busybox {
    /// Reads `explicit`, or the first of [`BUSYBOX_SEARCH_PATHS`] that exists, and checks
    /// that it is a static ELF executable.
    pub fn load(explicit: Option<&Path>) -> Result<Self, BusyboxError> {
        let path = match explicit {
            Some(path) => path.to_owned(),
            None => locate(BUSYBOX_SEARCH_PATHS.iter().map(Path::new))?,
        };
        let bytes = fs::read(&path).map_err(|source| BusyboxError::Read { path: path.clone(), source })?;
        match interpreter(&bytes) {
            Err(NotElf) => Err(BusyboxError::NotElf { path }),
            Ok(Some(interpreter)) => Err(BusyboxError::NotStatic { path, interpreter }),
            Ok(None) => Ok(Self { path, bytes }),
        }
    }

    /// Runs `busybox --list-full` and returns the applet paths (relative, e.g. `bin/sh`),
    /// sorted and deduplicated.
    pub fn applet_paths(&self) -> Result<Vec<String>, BusyboxError> {
        let output = Command::new(&self.path)
            .arg(LIST_FULL_ARG)
            .output()
            .map_err(|source| BusyboxError::Spawn { path: self.path.clone(), source })?;
        if !output.status.success() {
            return Err(BusyboxError::ListFailed {
                path: self.path.clone(),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        parse_applet_list(&String::from_utf8_lossy(&output.stdout))
            .map_err(|applet| BusyboxError::BadAppletPath { path: self.path.clone(), applet })
    }
}

fn locate<'a>(candidates: impl Iterator<Item = &'a Path>) -> Result<PathBuf, BusyboxError> {
    let mut searched = Vec::new();
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate.to_owned());
        }
        searched.push(candidate.to_owned());
    }
    Err(BusyboxError::NotFound { searched })
}

/// Parses `--list-full` output; returns the offending line when one is not a plain relative path.
fn parse_applet_list(text: &str) -> Result<Vec<String>, String> {
    let mut applets = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = Path::new(line);
        if !path.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(line.to_owned());
        }
        applets.push(line.to_owned());
    }
    applets.sort();
    applets.dedup();
    Ok(applets)
}

/// The bytes are not a well-formed ELF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotElf;

/// The program interpreter (`PT_INTERP`) an ELF file asks for, or `None` when it is static.
pub fn interpreter(bytes: &[u8]) -> Result<Option<String>, NotElf> {
    if bytes.get(..4) != Some(ELF_MAGIC) {
        return Err(NotElf);
    }
    let wide = match bytes.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err(NotElf),
    };
    let little = match bytes.get(5) {
        Some(1) => true,
        Some(2) => false,
        _ => return Err(NotElf),
    };
    let read = |at: u64, len: usize| -> Result<u64, NotElf> {
        let at = usize::try_from(at).map_err(|_| NotElf)?;
        let field = bytes.get(at..at.checked_add(len).ok_or(NotElf)?).ok_or(NotElf)?;
        let mut value = 0u64;
        for i in 0..len {
            let byte = if little { field[len - 1 - i] } else { field[i] };
            value = (value << 8) | u64::from(byte);
        }
        Ok(value)
    };
    let (phoff, phentsize, phnum) = if wide {
        (read(0x20, 8)?, read(0x36, 2)?, read(0x38, 2)?)
    } else {
        (read(0x1c, 4)?, read(0x2a, 2)?, read(0x2c, 2)?)
    };
    // p_offset and p_filesz positions inside one program header.
    let (offset_at, offset_len, size_at, size_len): (u64, usize, u64, usize) =
        if wide { (0x08, 8, 0x20, 8) } else { (0x04, 4, 0x10, 4) };
    if phentsize < size_at + size_len as u64 {
        return Err(NotElf);
    }
    for i in 0..phnum {
        let header = i.checked_mul(phentsize).and_then(|rel| rel.checked_add(phoff)).ok_or(NotElf)?;
        if read(header, 4)? != u64::from(PT_INTERP) {
            continue;
        }
        // header + size_at cannot overflow: read(header, 4) succeeded, so header < bytes.len().
        let offset = usize::try_from(read(header + offset_at, offset_len)?).map_err(|_| NotElf)?;
        let size = usize::try_from(read(header + size_at, size_len)?).map_err(|_| NotElf)?;
        let raw = bytes.get(offset..offset.checked_add(size).ok_or(NotElf)?).ok_or(NotElf)?;
        let text = raw.split(|&b| b == 0).next().unwrap_or_default();
        return Ok(Some(String::from_utf8_lossy(text).into_owned()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal little-endian ELF64 header with one program header of type `p_type`.
    fn elf64(p_type: u32) -> Vec<u8> {
        let mut b = vec![0u8; 0x40 + 0x38 + 16];
        b[..4].copy_from_slice(ELF_MAGIC);
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        b[0x40..0x44].copy_from_slice(&p_type.to_le_bytes());
        let interp_at = 0x40 + 0x38;
        b[0x40 + 0x08..0x40 + 0x10].copy_from_slice(&(interp_at as u64).to_le_bytes());
        b[0x40 + 0x20..0x40 + 0x28].copy_from_slice(&5u64.to_le_bytes());
        b[interp_at..interp_at + 5].copy_from_slice(b"/ld\0\0");
        b
    }

    #[test]
    fn test_interpreter_of_synthetic_elf() {
        assert_eq!(interpreter(&elf64(1)), Ok(None));
        assert_eq!(interpreter(&elf64(PT_INTERP)), Ok(Some("/ld".to_owned())));
        assert_eq!(interpreter(b"#!/bin/sh\n"), Err(NotElf));
        assert_eq!(interpreter(&elf64(PT_INTERP)[..0x50]), Err(NotElf));
    }

    #[test]
    fn test_parse_applet_list_sorts_and_rejects_escapes() {
        assert_eq!(
            parse_applet_list("usr/bin/env\nbin/sh\n\nbin/sh\nlinuxrc\n").unwrap(),
            ["bin/sh", "linuxrc", "usr/bin/env"]
        );
        assert_eq!(parse_applet_list("bin/sh\n../evil\n").unwrap_err(), "../evil");
        assert_eq!(parse_applet_list("/bin/sh").unwrap_err(), "/bin/sh");
    }

    #[test]
    fn test_locate_reports_every_path_tried() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let err = locate([a.as_path(), b.as_path()].into_iter()).unwrap_err();
        assert!(matches!(err, BusyboxError::NotFound { ref searched } if searched == &[a.clone(), b.clone()]));
        fs::write(&b, b"x").unwrap();
        assert_eq!(locate([a.as_path(), b.as_path()].into_iter()).unwrap(), b);
    }
}
