//! Module resolution and decompression against a synthetic `/lib/modules/<version>` tree.

use std::fs;
use std::io::Write;
use std::path::Path;

use nestbox_initramfs::modules::{Compression, ModuleError, resolve};

const VERSION: &str = "9.9.9-test";

const MODULES_DEP: &str = "\
kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/drivers/virtio/virtio.ko.zst: kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko.zst kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/char/hw_random/virtio-rng.ko.gz: kernel/drivers/virtio/virtio.ko.zst kernel/drivers/virtio/virtio_ring.ko.xz
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko.zst kernel/drivers/virtio/virtio_ring.ko.xz
";

const MODULES_BUILTIN: &str = "\
kernel/drivers/block/virtio_blk.ko
kernel/drivers/char/virtio_console.ko
";

/// The plain contents every fake module decompresses to.
fn payload(rel: &str) -> Vec<u8> {
    format!("\x7fELF fake module {rel}").repeat(20).into_bytes()
}

fn compress(rel: &str, plain: &[u8]) -> Vec<u8> {
    if rel.ends_with(".xz") {
        let mut out = Vec::new();
        lzma_rs::xz_compress(&mut &plain[..], &mut out).unwrap();
        out
    } else if rel.ends_with(".zst") {
        ruzstd::encoding::compress_to_vec(plain, ruzstd::encoding::CompressionLevel::Fastest)
    } else if rel.ends_with(".gz") {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(plain).unwrap();
        enc.finish().unwrap()
    } else {
        plain.to_vec()
    }
}

/// Writes the synthetic tree under `root/<VERSION>` and returns that directory.
fn synthetic_tree(root: &Path, dep: &str) -> std::path::PathBuf {
    let dir = root.join(VERSION);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("modules.dep"), dep).unwrap();
    fs::write(dir.join("modules.builtin"), MODULES_BUILTIN).unwrap();
    for line in dep.lines() {
        let rel = line.split(':').next().unwrap();
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, compress(rel, &payload(rel))).unwrap();
    }
    dir
}

#[test]
fn test_resolve_orders_dependencies_first_and_skips_builtins() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = synthetic_tree(tmp.path(), MODULES_DEP);
    let wanted = ["virtio-mmio", "virtio_console", "virtio_blk", "virtio_net", "virtio_rng"];
    let res = resolve(&dir, &wanted).unwrap();
    assert_eq!(res.kernel_version, VERSION);
    let names: Vec<_> = res.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["virtio_ring", "virtio", "virtio_mmio", "failover", "net_failover", "virtio_net", "virtio_rng"]);
    assert_eq!(res.builtin, ["virtio_console", "virtio_blk"]);
    let rng = res.modules.last().unwrap();
    assert_eq!(rng.rel_path, "kernel/drivers/char/hw_random/virtio-rng.ko.gz");
    assert_eq!(rng.compression, Compression::Gzip);
    assert_eq!(res.image_path(rng), format!("lib/modules/{VERSION}/kernel/drivers/char/hw_random/virtio-rng.ko"));
}

#[test]
fn test_resolve_names_each_module_once_in_stable_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = synthetic_tree(tmp.path(), MODULES_DEP);
    let wanted = ["virtio_ring", "virtio_rng", "virtio_mmio", "virtio_ring", "virtio-rng"];
    let first = resolve(&dir, &wanted).unwrap();
    let names: Vec<_> = first.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["virtio_ring", "virtio", "virtio_rng", "virtio_mmio"]);
    assert_eq!(first, resolve(&dir, &wanted).unwrap());
}

#[test]
fn test_resolve_names_the_missing_module() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = synthetic_tree(tmp.path(), MODULES_DEP);
    let err = resolve(&dir, &["virtio_mmio", "no-such_module"]).unwrap_err();
    match &err {
        ModuleError::NotFound { name, dir: d } => {
            assert_eq!(name, "no-such_module");
            assert_eq!(d, &dir);
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(err.to_string().contains("no-such_module"));
}

#[test]
fn test_resolve_without_builtin_file_treats_builtins_as_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = synthetic_tree(tmp.path(), MODULES_DEP);
    fs::remove_file(dir.join("modules.builtin")).unwrap();
    assert!(resolve(&dir, &["virtio_mmio"]).is_ok());
    assert!(matches!(
        resolve(&dir, &["virtio_blk"]),
        Err(ModuleError::NotFound { name, .. }) if name == "virtio_blk"
    ));
}

#[test]
fn test_resolve_requires_modules_dep() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(VERSION);
    fs::create_dir_all(&dir).unwrap();
    assert!(matches!(
        resolve(&dir, &["virtio_mmio"]),
        Err(ModuleError::ReadIndex { path, .. }) if path == dir.join("modules.dep")
    ));
}

#[test]
fn test_resolve_rejects_unlisted_dependency_and_cycles() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = synthetic_tree(tmp.path(), "a.ko: gone.ko\n");
    assert!(matches!(
        resolve(&dir, &["a"]),
        Err(ModuleError::DependencyNotListed { module, dependency })
            if module == "a.ko" && dependency == "gone.ko"
    ));

    let tmp = tempfile::tempdir().unwrap();
    let dir = synthetic_tree(tmp.path(), "a.ko: b.ko\nb.ko: a.ko\n");
    assert!(matches!(resolve(&dir, &["a"]), Err(ModuleError::DependencyCycle { .. })));
}

#[test]
fn test_decompress_every_supported_format() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = synthetic_tree(tmp.path(), MODULES_DEP);
    let res = resolve(&dir, &["virtio_mmio", "virtio_rng", "virtio_net"]).unwrap();
    let mut seen = Vec::new();
    for module in &res.modules {
        let plain = module.decompress(&module.read_raw().unwrap()).unwrap();
        assert_eq!(plain, payload(&module.rel_path), "{}", module.rel_path);
        assert!(module.stored_rel_path().ends_with(".ko"));
        seen.push(module.compression);
    }
    for c in [Compression::None, Compression::Xz, Compression::Zstd, Compression::Gzip] {
        assert!(seen.contains(&c), "{c:?} not exercised");
    }
}

#[test]
fn test_decompress_reports_corrupt_module() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = synthetic_tree(tmp.path(), MODULES_DEP);
    fs::write(dir.join("kernel/drivers/virtio/virtio_ring.ko.xz"), b"not xz").unwrap();
    let res = resolve(&dir, &["virtio_ring"]).unwrap();
    let module = &res.modules[0];
    assert!(matches!(module.decompress(&module.read_raw().unwrap()), Err(ModuleError::Xz { .. })));
}

#[test]
fn test_image_stores_compressed_modules_plain() {
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        eprintln!("skipped: no static busybox at /bin/busybox");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = synthetic_tree(tmp.path(), MODULES_DEP);
    let inputs = nestbox_initramfs::ImageInputs {
        agent: b"agent",
        busybox: Some(busybox),
        modules_dir: Some(&dir),
        modules: &["virtio_mmio", "virtio_rng", "virtio_blk"],
    };
    let built = nestbox_initramfs::build_default(&inputs, &tmp.path().join("cache")).unwrap();
    let prefix = format!("/lib/modules/{VERSION}/kernel/drivers");
    assert_eq!(
        built.modules,
        [
            format!("{prefix}/virtio/virtio_ring.ko"),
            format!("{prefix}/virtio/virtio.ko"),
            format!("{prefix}/virtio/virtio_mmio.ko"),
            format!("{prefix}/char/hw_random/virtio-rng.ko virtio=4"),
        ]
    );
    let entries = nestbox_initramfs::cpio::read_newc(&fs::read(&built.path).unwrap()).unwrap();
    let find = |name: &str| entries.iter().find(|e| e.name == name);
    let list = find(nestbox_initramfs::MODULE_LIST_PATH).unwrap();
    assert_eq!(list.data, (built.modules.join("\n") + "\n").into_bytes());
    for (listed, source) in built.modules.iter().zip([
        "kernel/drivers/virtio/virtio_ring.ko.xz",
        "kernel/drivers/virtio/virtio.ko.zst",
        "kernel/drivers/virtio/virtio_mmio.ko",
        "kernel/drivers/char/hw_random/virtio-rng.ko.gz",
    ]) {
        let path = listed.split(' ').next().unwrap();
        let entry = find(&path[1..]).unwrap_or_else(|| panic!("{listed} missing"));
        assert_eq!(entry.data, payload(source), "{listed}");
        assert_eq!(entry.permissions(), 0o644);
    }
    assert!(!entries.iter().any(|e| e.name.ends_with(".xz") || e.name.ends_with(".zst") || e.name.ends_with(".gz")));
}
