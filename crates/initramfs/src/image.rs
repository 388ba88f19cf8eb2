//! The default guest image: our agent as `/init`, a static busybox with its applet links, a
//! minimal root layout, and the virtio modules the guest loads, listed in load order at
//! [`MODULE_LIST_PATH`]. Built once per distinct input set and kept in the image cache.
//!
//! Entries are collected into a sorted tree first, so parents precede children and the same
//! inputs always give byte-identical output.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::busybox::{BUSYBOX_IMAGE_PATH, BUSYBOX_LINK_TARGET, Busybox, BusyboxError};
use crate::cache::{self, CacheKey};
use crate::cpio::{CpioError, NewcWriter};
use crate::modules::{self, ModuleError, Resolution};

/// The modules a guest needs on a kernel that builds its virtio drivers as modules.
/// `virtio_pci` is the transport Firecracker (with `--enable-pci`) and Cloud Hypervisor use; the
/// vsock transport carries the agent there.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_console",
    "virtio_blk",
    "virtio_net",
    "virtio_balloon",
    "virtio_rng",
    "vmw_vsock_virtio_transport",
];
/// In the image: the modules to load, one a line, in load order: an absolute in-guest path,
/// then optionally a condition: ` pci` when the module is only needed if the guest has PCI
/// devices, ` virtio=ID[,ID…]` when it is only needed if the guest has a virtio device of one
/// of those types. Lines without a condition come first, then `pci` ones (the transport that
/// makes PCI-attached virtio devices appear), then `virtio=` ones.
pub const MODULE_LIST_PATH: &str = "etc/nestbox/modules";
/// Transports a guest needs only when it has a PCI bus with devices (microvm has none).
pub const PCI_TRANSPORTS: &[&str] = &["virtio_pci"];
/// Virtio drivers a guest needs only when it has such a device: (module, virtio device ids).
/// A module not listed here (the transport, the console the agent talks over) always loads;
/// so does a dependency of one that always loads.
pub const VIRTIO_DRIVERS: &[(&str, &[u32])] = &[
    ("virtio_net", &[1]),
    ("virtio_blk", &[2]),
    ("virtio_rng", &[4]),
    ("virtio_balloon", &[5]),
    ("virtio_scsi", &[8]),
    ("vmw_vsock_virtio_transport", &[19]),
    ("virtiofs", &[26]),
];
/// Where the agent goes; the kernel runs `/init` from an initramfs.
pub const INIT_PATH: &str = "init";
/// Permissions of executables in the image.
pub const EXEC_MODE: u32 = 0o755;
/// Permissions of plain files in the image.
pub const FILE_MODE: u32 = 0o644;
/// Permissions of directories not listed in [`LAYOUT_DIRS`].
pub const DIR_MODE: u32 = 0o755;
/// The root layout: directories and their permissions.
pub const LAYOUT_DIRS: &[(&str, u32)] = &[
    ("bin", DIR_MODE),
    ("sbin", DIR_MODE),
    ("usr/bin", DIR_MODE),
    ("usr/sbin", DIR_MODE),
    ("etc", DIR_MODE),
    ("etc/nestbox", DIR_MODE),
    ("proc", DIR_MODE),
    ("sys", DIR_MODE),
    ("dev", DIR_MODE),
    ("dev/pts", DIR_MODE),
    ("tmp", 0o1777),
    ("run", DIR_MODE),
    ("root", 0o700),
    ("lib/modules", DIR_MODE),
    ("var", DIR_MODE),
];
/// Character devices the kernel needs before `/init` runs: (path, permissions, major, minor).
pub const LAYOUT_DEVICES: &[(&str, u32, u32, u32)] = &[("dev/console", 0o600, 5, 1), ("dev/null", 0o666, 1, 3)];
/// Small configuration files: (path, contents).
pub const LAYOUT_FILES: &[(&str, &str)] =
    &[("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n"), ("etc/hostname", "nestbox\n")];

/// What goes into the default image.
#[derive(Debug, Clone, Copy)]
pub struct ImageInputs<'a> {
    /// The static guest agent binary, installed as `/init` (mode 0755).
    pub agent: &'a [u8],
    /// A static busybox; `None` looks at `/bin/busybox`, then `/usr/bin/busybox`.
    pub busybox: Option<&'a Path>,
    /// `/lib/modules/<version>`; `None` when the kernel has its drivers built in.
    pub modules_dir: Option<&'a Path>,
    /// Wanted module names, e.g. [`DEFAULT_MODULES`]; ignored without `modules_dir`.
    pub modules: &'a [&'a str],
}

/// An image in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The cpio file, `<cache_dir>/<key>.cpio`.
    pub path: PathBuf,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
    /// The lines of [`MODULE_LIST_PATH`]: in-guest module paths with their conditions, in load order.
    pub modules: Vec<String>,
    /// Whether the image was already in the cache.
    pub cached: bool,
}

/// Errors from building the default image.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// The agent binary was empty.
    #[error("agent binary is empty")]
    EmptyAgent,
    /// Busybox could not be used.
    #[error(transparent)]
    Busybox(#[from] BusyboxError),
    /// Modules could not be resolved or read.
    #[error(transparent)]
    Modules(#[from] ModuleError),
    /// The archive could not be written.
    #[error(transparent)]
    Cpio(#[from] CpioError),
    /// Two entries want the same path, or a path's parent is not a directory.
    #[error("image path {path:?} is wanted as two different entries")]
    PathConflict {
        /// The path.
        path: String,
    },
    /// The cache directory could not be created.
    #[error("creating cache directory {dir:?}")]
    CreateCacheDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A cached image could not be read.
    #[error("reading cached image {path:?}")]
    ReadCached {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The image could not be stored.
    #[error("storing image {path:?}")]
    Store {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Builds the default image into `cache_dir`, or finds it there already.
pub fn build_default(inputs: &ImageInputs, cache_dir: &Path) -> Result<BuiltImage, InitramfsError> {
    if inputs.agent.is_empty() {
        return Err(InitramfsError::EmptyAgent);
    }
    // Fast path: the same inputs as last time (the same agent, and busybox and module files
    // that have not changed on disk) name the same image, without reading or hashing them.
    let quick = quick_key(inputs);
    if let Some(hit) = quick.as_deref().and_then(|k| index_load(cache_dir, k)) {
        return Ok(hit);
    }
    let busybox = Busybox::load(inputs.busybox)?;
    let resolution = inputs.modules_dir.map(|dir| modules::resolve(dir, inputs.modules)).transpose()?;

    let mut key = CacheKey::new();
    key.field("agent", inputs.agent).field("busybox", &busybox.bytes);
    // (in-image path, raw bytes) per module, in load order.
    let mut raw_modules = Vec::new();
    if let Some(resolution) = &resolution {
        for module in &resolution.modules {
            let raw = module.read_raw()?;
            let image_path = resolution.image_path(module);
            key.field("module-path", image_path.as_bytes()).field("module", &raw);
            raw_modules.push((image_path, raw));
        }
    }
    let module_list = match (inputs.modules_dir, &resolution) {
        (Some(dir), Some(resolution)) => module_list(dir, inputs.modules, resolution)?,
        _ => Vec::new(),
    };
    for line in &module_list {
        key.field("module-list", line.as_bytes());
    }

    fs::create_dir_all(cache_dir)
        .map_err(|source| InitramfsError::CreateCacheDir { dir: cache_dir.to_owned(), source })?;
    let path = cache::image_path(cache_dir, &key.finish());
    if path.is_file() {
        let bytes = fs::read(&path).map_err(|source| InitramfsError::ReadCached { path: path.clone(), source })?;
        let built = BuiltImage { sha256: cache::sha256_hex(&bytes), path, modules: module_list, cached: true };
        if let Some(k) = &quick {
            index_store(cache_dir, k, &built);
        }
        return Ok(built);
    }

    let mut tree = Tree::default();
    for (dir, mode) in LAYOUT_DIRS {
        tree.insert(dir, Node::Dir(*mode))?;
    }
    for (dev, mode, major, minor) in LAYOUT_DEVICES {
        tree.insert(dev, Node::CharDevice(*mode, *major, *minor))?;
    }
    for (file, contents) in LAYOUT_FILES {
        tree.insert(file, Node::File(FILE_MODE, contents.as_bytes().to_vec()))?;
    }
    tree.insert(INIT_PATH, Node::File(EXEC_MODE, inputs.agent.to_vec()))?;
    tree.insert(BUSYBOX_IMAGE_PATH, Node::File(EXEC_MODE, busybox.bytes.clone()))?;
    if let Some(resolution) = &resolution {
        add_modules(&mut tree, resolution, raw_modules)?;
    }
    let list: String = module_list.iter().map(|m| format!("{m}\n")).collect();
    tree.insert(MODULE_LIST_PATH, Node::File(FILE_MODE, list.into_bytes()))?;
    for applet in busybox.applet_paths()? {
        // Applets never displace a real entry (/init above all) nor go under a non-directory.
        tree.insert_if_free(&applet, Node::Symlink(BUSYBOX_LINK_TARGET.to_owned()));
    }

    let bytes = tree.write()?;
    cache::store_atomically(&path, &bytes).map_err(|source| InitramfsError::Store { path: path.clone(), source })?;
    let built = BuiltImage { sha256: cache::sha256_hex(&bytes), path, modules: module_list, cached: false };
    if let Some(k) = &quick {
        index_store(cache_dir, k, &built);
    }
    Ok(built)
}

/// Identifies the inputs by the agent's bytes and the on-disk identity (device, inode, size,
/// times) of busybox, the modules directory and its index; `None` when one cannot be stat'ed.
fn quick_key(inputs: &ImageInputs) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let identity = |path: &Path| -> Option<String> {
        let m = fs::metadata(path).ok()?;
        Some(format!(
            "{}:{}:{}:{}:{}.{}:{}.{}",
            path.display(),
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ))
    };
    let busybox = match inputs.busybox {
        Some(path) => path.to_owned(),
        None => crate::busybox::BUSYBOX_SEARCH_PATHS.iter().map(PathBuf::from).find(|p| p.is_file())?,
    };
    let mut key = CacheKey::new();
    key.field("quick-agent", inputs.agent).field("quick-busybox", identity(&busybox)?.as_bytes());
    if let Some(dir) = inputs.modules_dir {
        key.field("quick-modules-dir", identity(dir)?.as_bytes());
        key.field("quick-modules-dep", identity(&dir.join("modules.dep"))?.as_bytes());
    }
    for name in inputs.modules {
        key.field("quick-wanted", name.as_bytes());
    }
    Some(key.finish())
}

/// `<cache>/index/<quick key>`: image path, its size, sha256, then the module list lines.
fn index_load(cache_dir: &Path, quick: &str) -> Option<BuiltImage> {
    let text = fs::read_to_string(cache_dir.join("index").join(quick)).ok()?;
    let mut lines = text.lines();
    let path = PathBuf::from(lines.next()?);
    let len: u64 = lines.next()?.parse().ok()?;
    let sha256 = lines.next()?.to_owned();
    let modules = lines.map(str::to_owned).collect();
    (fs::metadata(&path).ok()?.len() == len).then_some(BuiltImage { path, sha256, modules, cached: true })
}

/// Records `built` under `quick`; a failure only costs a slower next build.
fn index_store(cache_dir: &Path, quick: &str, built: &BuiltImage) {
    let Ok(len) = fs::metadata(&built.path).map(|m| m.len()) else { return };
    let mut text = format!("{}\n{len}\n{}\n", built.path.display(), built.sha256);
    for line in &built.modules {
        text.push_str(line);
        text.push('\n');
    }
    let dir = cache_dir.join("index");
    if fs::create_dir_all(&dir).is_ok() {
        let _ = cache::store_atomically(&dir.join(quick), text.as_bytes());
    }
}

/// When a module is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Need {
    Always,
    Pci,
    Devices(std::collections::BTreeSet<u32>),
}

impl Need {
    fn merge(self, other: Need) -> Need {
        match (self, other) {
            (Need::Devices(mut a), Need::Devices(b)) => {
                a.extend(b);
                Need::Devices(a)
            }
            (Need::Pci, Need::Pci) => Need::Pci,
            _ => Need::Always,
        }
    }
}

/// The lines of [`MODULE_LIST_PATH`]: each resolved module with the condition under which the
/// guest needs it, unconditional ones first (their dependencies are unconditional too, so the
/// order stays dependencies-first).
fn module_list(dir: &Path, wanted: &[&str], resolution: &Resolution) -> Result<Vec<String>, InitramfsError> {
    let mut needs: BTreeMap<String, Need> = BTreeMap::new();
    for name in wanted {
        let canonical = modules::canonical_name(name);
        let need = match VIRTIO_DRIVERS.iter().find(|(driver, _)| *driver == canonical) {
            Some((_, ids)) => Need::Devices(ids.iter().copied().collect()),
            None if PCI_TRANSPORTS.contains(&canonical.as_str()) => Need::Pci,
            None => Need::Always,
        };
        for module in modules::resolve(dir, &[name])?.modules {
            let entry = needs.remove(&module.name).map_or(need.clone(), |old| old.merge(need.clone()));
            needs.insert(module.name, entry);
        }
    }
    // (rank, line): 0 always, 1 PCI, 2 a virtio device; a stable sort keeps dependencies first.
    let line = |module: &modules::ResolvedModule| -> (u8, String) {
        let path = format!("/{}", resolution.image_path(module));
        match needs.get(&module.name) {
            Some(Need::Devices(ids)) => {
                let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
                (2, format!("{path} virtio={}", ids.join(",")))
            }
            Some(Need::Pci) => (1, format!("{path} pci")),
            _ => (0, path),
        }
    };
    let mut lines: Vec<(u8, String)> = resolution.modules.iter().map(line).collect();
    lines.sort_by_key(|(rank, _)| *rank);
    Ok(lines.into_iter().map(|(_, l)| l).collect())
}

fn add_modules(
    tree: &mut Tree,
    resolution: &Resolution,
    raw_modules: Vec<(String, Vec<u8>)>,
) -> Result<(), InitramfsError> {
    for (module, (image_path, raw)) in resolution.modules.iter().zip(raw_modules) {
        let plain = module.decompress(&raw)?;
        tree.insert(&image_path, Node::File(FILE_MODE, plain))?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(String),
    CharDevice(u32, u32, u32),
}

/// Image entries by path. Byte order of `String` keys puts every directory before the
/// entries under it, as a prefix sorts before its extensions.
#[derive(Debug, Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    /// Adds `node` at `path`, creating missing parent directories; an identical existing
    /// entry is fine, a different one a conflict.
    fn insert(&mut self, path: &str, node: Node) -> Result<(), InitramfsError> {
        let conflict = |p: &str| InitramfsError::PathConflict { path: p.to_owned() };
        for parent in parents(path) {
            match self.nodes.get(parent) {
                None => {
                    self.nodes.insert(parent.to_owned(), Node::Dir(DIR_MODE));
                }
                Some(Node::Dir(_)) => {}
                Some(_) => return Err(conflict(parent)),
            }
        }
        match self.nodes.get(path) {
            None => {
                self.nodes.insert(path.to_owned(), node);
                Ok(())
            }
            Some(existing) if *existing == node => Ok(()),
            Some(_) => Err(conflict(path)),
        }
    }

    /// Adds `node` unless `path` is taken or a parent exists as something other than a
    /// directory; returns whether it was added.
    fn insert_if_free(&mut self, path: &str, node: Node) -> bool {
        let blocked = self.nodes.contains_key(path)
            || parents(path).any(|p| matches!(self.nodes.get(p), Some(n) if !matches!(n, Node::Dir(_))));
        !blocked && self.insert(path, node).is_ok()
    }

    fn write(&self) -> Result<Vec<u8>, CpioError> {
        let mut writer = NewcWriter::new(Vec::new());
        for (path, node) in &self.nodes {
            match node {
                Node::Dir(mode) => writer.add_dir(path, *mode)?,
                Node::File(mode, data) => writer.add_file(path, *mode, data)?,
                Node::Symlink(target) => writer.add_symlink(path, target)?,
                Node::CharDevice(mode, major, minor) => writer.add_char_device(path, *mode, *major, *minor)?,
            }
        }
        writer.finish()
    }
}

/// The proper ancestors of a relative path, outermost first: `a`, `a/b` for `a/b/c`.
fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::{EntryKind, read_newc};

    #[test]
    fn test_parents_outermost_first() {
        assert_eq!(parents("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(parents("a").count(), 0);
    }

    #[test]
    fn test_tree_orders_parents_first_and_detects_conflicts() {
        let mut tree = Tree::default();
        tree.insert("usr/bin/x", Node::File(FILE_MODE, b"x".to_vec())).unwrap();
        tree.insert("usr-x", Node::Dir(DIR_MODE)).unwrap();
        tree.insert("usr", Node::Dir(DIR_MODE)).unwrap();
        assert!(matches!(
            tree.insert("usr/bin", Node::Symlink("/x".into())),
            Err(InitramfsError::PathConflict { path }) if path == "usr/bin"
        ));
        assert!(matches!(
            tree.insert("usr/bin/x/y", Node::Dir(DIR_MODE)),
            Err(InitramfsError::PathConflict { path }) if path == "usr/bin/x"
        ));
        assert!(!tree.insert_if_free("usr/bin/x", Node::Symlink("/bin/busybox".into())));
        assert!(!tree.insert_if_free("usr/bin/x/z", Node::Symlink("/bin/busybox".into())));
        assert!(tree.insert_if_free("usr/bin/y", Node::Symlink("/bin/busybox".into())));

        let entries = read_newc(&tree.write().unwrap()).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["usr", "usr-x", "usr/bin", "usr/bin/x", "usr/bin/y"]);
        assert_eq!(entries[2].kind(), EntryKind::Directory);
        assert_eq!(entries[3].data, b"x");
    }

    #[test]
    fn test_build_default_rejects_empty_agent() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = ImageInputs { agent: b"", busybox: None, modules_dir: None, modules: DEFAULT_MODULES };
        assert!(matches!(build_default(&inputs, dir.path()), Err(InitramfsError::EmptyAgent)));
    }
}
