//! Busybox checks: only a statically linked ELF is accepted.

use std::fs;
use std::path::Path;

use nestbox_initramfs::busybox::{Busybox, BusyboxError, interpreter};
use nestbox_initramfs::{DEFAULT_MODULES, ImageInputs, InitramfsError, build_default};

/// The host's `/bin/true`: a dynamically linked executable on any normal distribution.
const DYNAMIC_BINARY: &str = "/bin/true";

fn dynamic_binary() -> Option<&'static Path> {
    let path = Path::new(DYNAMIC_BINARY);
    let bytes = fs::read(path).ok()?;
    match interpreter(&bytes) {
        Ok(Some(_)) => Some(path),
        _ => None,
    }
}

#[test]
fn test_dynamic_busybox_rejected_with_package_hint() {
    let Some(dynamic) = dynamic_binary() else {
        eprintln!("skipped: {DYNAMIC_BINARY} is missing or not dynamically linked");
        return;
    };
    let err = Busybox::load(Some(dynamic)).unwrap_err();
    assert!(
        matches!(&err, BusyboxError::NotStatic { path, interpreter }
            if path == dynamic && interpreter.contains("ld")),
        "{err:?}"
    );
    assert!(err.to_string().contains("busybox-static"), "{err}");

    let cache = tempfile::tempdir().unwrap();
    let inputs = ImageInputs { agent: b"agent", busybox: Some(dynamic), modules_dir: None, modules: DEFAULT_MODULES };
    assert!(matches!(
        build_default(&inputs, cache.path()),
        Err(InitramfsError::Busybox(BusyboxError::NotStatic { .. }))
    ));
    assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[test]
fn test_non_elf_busybox_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("busybox");
    fs::write(&script, b"#!/bin/sh\necho hi\n").unwrap();
    assert!(matches!(
        Busybox::load(Some(&script)),
        Err(BusyboxError::NotElf { path }) if path == script
    ));
    let missing = dir.path().join("absent");
    assert!(matches!(
        Busybox::load(Some(&missing)),
        Err(BusyboxError::Read { path, .. }) if path == missing
    ));
}
