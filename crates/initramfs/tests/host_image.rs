//! Builds the real default image from this host's busybox and kernel modules and reads it
//! back. Skipped where the host lacks a static busybox or the modules tree.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use nestbox_initramfs::cpio::{Entry, EntryKind, read_newc};
use nestbox_initramfs::{DEFAULT_MODULES, ImageInputs, MODULE_LIST_PATH, build_default};

const HOST_BUSYBOX: &str = "/bin/busybox";
const HOST_MODULES_DIR: &str = "/lib/modules/6.1.0-56-cloud-amd64";
const AGENT: &[u8] = b"\x7fELF dummy nestbox agent";

fn host_inputs() -> Option<(&'static Path, &'static Path)> {
    let busybox = Path::new(HOST_BUSYBOX);
    let modules = Path::new(HOST_MODULES_DIR);
    if !busybox.is_file() {
        eprintln!("skipped: no {HOST_BUSYBOX} (install busybox-static)");
        return None;
    }
    if !modules.join("modules.dep").is_file() {
        eprintln!("skipped: no {HOST_MODULES_DIR}/modules.dep");
        return None;
    }
    Some((busybox, modules))
}

fn by_name(entries: &[Entry]) -> HashMap<&str, &Entry> {
    entries.iter().map(|e| (e.name.as_str(), e)).collect()
}

fn position(list: &[&str], suffix: &str) -> usize {
    list.iter()
        .position(|m| m.split(' ').next().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("{suffix} not in module list {list:?}"))
}

#[test]
fn test_host_image_contents_and_cache() {
    let Some((busybox, modules_dir)) = host_inputs() else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let inputs =
        ImageInputs { agent: AGENT, busybox: Some(busybox), modules_dir: Some(modules_dir), modules: DEFAULT_MODULES };
    let built = build_default(&inputs, cache.path()).unwrap();
    assert!(!built.cached);
    assert_eq!(built.path.parent(), Some(cache.path()));
    let bytes = fs::read(&built.path).unwrap();
    assert_eq!(built.sha256, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)));

    let entries = read_newc(&bytes).unwrap();
    let map = by_name(&entries);

    let init = map["init"];
    assert_eq!(init.kind(), EntryKind::File);
    assert_eq!(init.permissions(), 0o755);
    assert_eq!(init.data, AGENT);
    let bb = map["bin/busybox"];
    assert_eq!(bb.data, fs::read(busybox).unwrap());
    assert_eq!(bb.permissions(), 0o755);
    assert_eq!(map["bin/sh"].symlink_target(), Some("/bin/busybox"));
    assert_eq!(map["usr/bin/env"].symlink_target(), Some("/bin/busybox"));

    let console = map["dev/console"];
    assert_eq!(console.kind(), EntryKind::CharDevice);
    assert_eq!((console.rdev_major, console.rdev_minor), (5, 1));
    assert_eq!(console.permissions(), 0o600);
    let null = map["dev/null"];
    assert_eq!((null.rdev_major, null.rdev_minor), (1, 3));
    assert_eq!(null.permissions(), 0o666);
    assert_eq!(map["tmp"].permissions(), 0o1777);
    assert_eq!(map["root"].permissions(), 0o700);
    for dir in ["proc", "sys", "dev/pts", "run", "var", "usr/sbin", "etc/nestbox"] {
        assert_eq!(map[dir].kind(), EntryKind::Directory, "{dir}");
    }
    assert_eq!(map["etc/passwd"].data, b"root:x:0:0:root:/root:/bin/sh\n");
    assert_eq!(map["etc/group"].data, b"root:x:0:\n");
    assert_eq!(map["etc/hostname"].data, b"nestbox\n");

    // Every entry root-owned with mtime 0, unique inodes, parents before children.
    let mut inodes = HashSet::new();
    let mut seen = HashSet::new();
    for e in &entries {
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0), "{}", e.name);
        assert!(inodes.insert(e.ino), "duplicate inode {}", e.ino);
        if let Some((parent, _)) = e.name.rsplit_once('/') {
            assert!(seen.contains(parent), "{} before its parent", e.name);
        }
        seen.insert(e.name.as_str());
    }

    // Module list: dependencies first, every listed module stored plain.
    let list = std::str::from_utf8(&map[MODULE_LIST_PATH].data).unwrap();
    let listed: Vec<&str> = list.lines().collect();
    assert_eq!(listed, built.modules);
    let ring = position(&listed, "/virtio_ring.ko");
    let virtio = position(&listed, "/virtio.ko");
    let mmio = position(&listed, "/virtio_mmio.ko");
    assert!(ring < virtio && virtio < mmio, "{listed:?}");
    for name in ["virtio_console.ko", "virtio_blk.ko", "virtio_net.ko", "virtio_balloon.ko"] {
        assert!(position(&listed, name) > virtio, "{name} before virtio");
    }
    assert_eq!(listed.len(), listed.iter().collect::<HashSet<_>>().len(), "module listed twice");
    // Drivers for devices a guest may lack carry their condition; the transport and the
    // console the agent needs always load, and come first.
    let condition = |suffix: &str| listed[position(&listed, suffix)].split_once(' ').map(|(_, c)| c.to_owned());
    assert_eq!(condition("/virtio_mmio.ko"), None);
    assert_eq!(condition("/virtio_console.ko"), None);
    assert_eq!(condition("/virtio_blk.ko").as_deref(), Some("virtio=2"));
    assert_eq!(condition("/failover.ko").as_deref(), Some("virtio=1"));
    assert_eq!(condition("/virtio_balloon.ko").as_deref(), Some("virtio=5"));
    assert!(position(&listed, "/virtio_console.ko") < position(&listed, "/virtio_blk.ko"));
    for module in &listed {
        let path = module.split(' ').next().unwrap();
        let rel = path.strip_prefix('/').expect("absolute in-guest path");
        let entry = map.get(rel).unwrap_or_else(|| panic!("{rel} listed but absent"));
        assert!(entry.data.starts_with(b"\x7fELF"), "{rel} is not plain ELF");
        assert!(rel.starts_with("lib/modules/6.1.0-56-cloud-amd64/kernel/"));
    }
    eprintln!("modules in load order: {listed:?}");

    // Same inputs: served from the cache, unchanged.
    let again = build_default(&inputs, cache.path()).unwrap();
    assert!(again.cached);
    assert_eq!(again.path, built.path);
    assert_eq!(again.sha256, built.sha256);
    assert_eq!(again.modules, built.modules);

    // With the quick index gone, the slow path finds the same image.
    std::fs::remove_dir_all(cache.path().join("index")).unwrap();
    let slow = build_default(&inputs, cache.path()).unwrap();
    assert!(slow.cached);
    assert_eq!(
        (slow.path, slow.sha256, slow.modules),
        (built.path.clone(), built.sha256.clone(), built.modules.clone())
    );

    // An index entry whose image changed size is not trusted: the slow path reads the file.
    let original = std::fs::read(&built.path).unwrap();
    std::fs::write(&built.path, b"truncated").unwrap();
    let reread = build_default(&inputs, cache.path()).unwrap();
    assert_ne!(reread.sha256, built.sha256, "a stale index entry was trusted");
    std::fs::write(&built.path, original).unwrap();

    // A fresh cache builds byte-identical output.
    let other = tempfile::tempdir().unwrap();
    let rebuilt = build_default(&inputs, other.path()).unwrap();
    assert!(!rebuilt.cached);
    assert_eq!(rebuilt.sha256, built.sha256);
    assert_eq!(rebuilt.path.file_name(), built.path.file_name(), "cache key must not depend on the cache dir");

    // A different agent is a different image.
    let changed = ImageInputs { agent: b"another agent", ..inputs };
    let changed = build_default(&changed, cache.path()).unwrap();
    assert!(!changed.cached);
    assert_ne!(changed.path, built.path);
}

#[test]
fn test_host_image_without_modules_has_empty_list() {
    let Some((busybox, _)) = host_inputs() else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let inputs = ImageInputs { agent: AGENT, busybox: Some(busybox), modules_dir: None, modules: DEFAULT_MODULES };
    let built = build_default(&inputs, cache.path()).unwrap();
    assert!(built.modules.is_empty());
    let entries = read_newc(&fs::read(&built.path).unwrap()).unwrap();
    let map = by_name(&entries);
    assert_eq!(map[MODULE_LIST_PATH].data, b"");
    assert_eq!(map["lib/modules"].kind(), EntryKind::Directory);
    assert!(!entries.iter().any(|e| e.name.starts_with("lib/modules/")));
}
