//! Building an ext4 image from a root directory, and putting the guest agent into that directory.
//!
//! [`build_ext4`] runs `mkfs.ext4 -d` from e2fsprogs (no maintained pure-Rust ext4 writer exists)
//! on a sparse file: `-q -F -t ext4 -b 4096 -L LABEL -N INODES -E root_owner=0:0 -d ROOT OUT
//! BLOCKS`. The size is measured from the tree (each file's bytes rounded up to 4 KiB blocks, one
//! block per directory and per long symlink, hard links once, 256 bytes per inode) plus
//! [`HEADROOM_PERCENT`] and [`HEADROOM_BYTES`], or [`Ext4Options::size`] when given. The image is
//! written under a temporary name next to `out` and renamed into place only when `mkfs.ext4`
//! succeeded, so a failure (a size too small, a full disk, a killed build) never leaves a partial
//! image at `out`; a killed process may leave a `.<name>.tmp-*` file, which
//! [`crate::store::ImageStore::prune`] sweeps with its build directory when the build ran inside
//! [`crate::store::ImageStore::put`].
//!
//! The journal is kept by default ([`Ext4Options::journal`]): every sandbox writes to a
//! copy-on-write overlay of this image, and a guest that is killed (stop's timeout, a host crash)
//! must come back without an fsck. It costs 4 to 128 MiB of the image's size, which mkfs leaves
//! sparse, so the base image on the host grows only by what mkfs writes.
//!
//! Ownership, modes, symlinks, hard links, device nodes and extended attributes come from the
//! tree as `mkfs.ext4 -d` reads them; only the root directory is forced to `0:0`. A tree unpacked
//! by a non-root user therefore carries that user's uid; the unpacking side owns that problem.
//!
//! [`inject_agent`] writes `/.nestbox/agent` (the guest's `init=`) and `/.nestbox/image.json` (the
//! image's config) into the root before the build.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Block size of the images we build.
pub const BLOCK_SIZE: u64 = 4096;
/// Free space added to the measured tree, in percent of it.
pub const HEADROOM_PERCENT: u64 = 30;
/// Free space added to the measured tree, in bytes (covers the journal, group descriptors and
/// bitmaps of a small tree).
pub const HEADROOM_BYTES: u64 = 64 << 20;
/// Spare inodes beyond the tree's entries, so the guest can create files.
pub const INODE_HEADROOM: u64 = 16_384;
/// Bytes of image per inode when the tree itself needs fewer (mke2fs's default ratio).
pub const BYTES_PER_INODE: u64 = 16_384;
/// On-disk size of one inode (mke2fs's default for ext4).
pub const INODE_SIZE: u64 = 256;
/// Default volume label.
pub const DEFAULT_LABEL: &str = "nestbox-root";
/// Longest ext4 volume label, in bytes.
pub const MAX_LABEL_BYTES: usize = 16;
/// The package that provides `mkfs.ext4` and `debugfs`.
pub const E2FSPROGS_PACKAGE: &str = "e2fsprogs";
/// The directory in the guest's root that belongs to nestbox.
pub const NESTBOX_DIR: &str = ".nestbox";
/// The agent inside the guest (`init=` points here).
pub const GUEST_AGENT_PATH: &str = "/.nestbox/agent";
/// The image's config inside the guest.
pub const GUEST_IMAGE_CONFIG_PATH: &str = "/.nestbox/image.json";
/// Symlinks shorter than this live in the inode ("fast symlinks") and take no block.
const FAST_SYMLINK_MAX: u64 = 60;
/// Mode of the finished image: the VMM may run as another user and only reads it.
const IMAGE_MODE: u32 = 0o644;

/// How to build an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Options {
    /// Volume label (at most [`MAX_LABEL_BYTES`] bytes).
    pub label: String,
    /// Size in bytes (rounded up to [`BLOCK_SIZE`]); `None` measures the tree and adds headroom.
    pub size: Option<u64>,
    /// Keep the ext4 journal (default `true`; see the module doc).
    pub journal: bool,
    /// The `mkfs.ext4` to run; `None` looks it up on `PATH`.
    pub mkfs: Option<PathBuf>,
}

impl Default for Ext4Options {
    fn default() -> Self {
        Self { label: DEFAULT_LABEL.to_owned(), size: None, journal: true, mkfs: None }
    }
}

/// What a build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Stats {
    /// The image's size (its apparent length; most of it is sparse).
    pub size_bytes: u64,
    /// Bytes the tree's files occupy, rounded up to blocks.
    pub tree_bytes: u64,
    /// Entries in the tree (files, directories, symlinks, others; hard links once).
    pub entries: u64,
    /// Inodes asked of mkfs.
    pub inodes: u64,
    /// Whether the image has a journal.
    pub journal: bool,
    /// How long `mkfs.ext4` took.
    pub mkfs_elapsed: Duration,
}

/// Why an image could not be built or the agent not injected.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// `mkfs.ext4` is not on `PATH` (or not at the given path).
    #[error("mkfs.ext4 not found{}; install the package {package}", at_path(.path))]
    MkfsMissing {
        /// The path that was tried, when one was given.
        path: Option<PathBuf>,
        /// The package that provides it.
        package: &'static str,
    },
    /// The label does not fit in the superblock.
    #[error("ext4 label {label:?} is longer than {MAX_LABEL_BYTES} bytes")]
    LabelTooLong {
        /// The label.
        label: String,
    },
    /// The root is not a directory.
    #[error("image root {path} is not a directory")]
    NotADirectory {
        /// The root.
        path: PathBuf,
    },
    /// Reading the tree, creating the image file or writing into the root failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The filesystem holding the output has too little free space.
    #[error("no space left on the device holding {dir} to build the ext4 image (needs about {needed} bytes)")]
    NoSpace {
        /// The output's directory.
        dir: PathBuf,
        /// What the build needs, about.
        needed: u64,
    },
    /// `mkfs.ext4` failed; `message` is its stderr on one line.
    #[error("mkfs.ext4 failed ({status}): {message}")]
    Mkfs {
        /// Its exit status.
        status: String,
        /// Its stderr on one line.
        message: String,
    },
}

fn at_path(path: &Option<PathBuf>) -> String {
    path.as_ref().map(|p| format!(" at {}", p.display())).unwrap_or_else(|| " on PATH".to_owned())
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Ext4Error {
    let path = path.to_path_buf();
    move |source| Ext4Error::Io { action, path, source }
}

/// The tree's measure, as [`build_ext4`] sizes an image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeSize {
    /// Bytes of data blocks: files rounded up to blocks, a block per directory and long symlink.
    pub bytes: u64,
    /// Entries (inodes), hard links counted once, the root included.
    pub entries: u64,
}

/// Measures `root` without following symlinks.
pub fn measure_tree(root: &Path) -> Result<TreeSize, Ext4Error> {
    let mut size = TreeSize::default();
    let mut seen_links = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        size.entries += 1;
        let meta = fs::symlink_metadata(&dir).map_err(io_err("cannot stat", &dir))?;
        size.bytes += round_up(meta.len().max(1), BLOCK_SIZE);
        for entry in fs::read_dir(&dir).map_err(io_err("cannot list", &dir))? {
            let entry = entry.map_err(io_err("cannot list", &dir))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err("cannot stat", &path))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if meta.nlink() > 1 && !seen_links.insert((meta.dev(), meta.ino())) {
                continue;
            }
            size.entries += 1;
            if kind.is_file() {
                size.bytes += round_up(meta.len(), BLOCK_SIZE);
            } else if kind.is_symlink() && meta.len() >= FAST_SYMLINK_MAX {
                size.bytes += BLOCK_SIZE;
            }
        }
    }
    Ok(size)
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// The image size [`build_ext4`] picks for a tree, and the inode count it asks for.
pub fn plan_size(tree: TreeSize, size: Option<u64>) -> (u64, u64) {
    let tree_inodes = tree.entries + tree.entries * HEADROOM_PERCENT / 100;
    match size {
        // A given size gets mkfs's default ratio, and at least the tree's inodes: a size too small
        // for the tree then fails on the tree, not on spare inodes.
        Some(size) => {
            let size = round_up(size, BLOCK_SIZE);
            (size, tree_inodes.max(size / BYTES_PER_INODE))
        }
        None => {
            let inodes = tree_inodes + INODE_HEADROOM;
            let base = tree.bytes + inodes * INODE_SIZE;
            let size = round_up(base + base * HEADROOM_PERCENT / 100 + HEADROOM_BYTES, BLOCK_SIZE);
            (size, inodes.max(size / BYTES_PER_INODE))
        }
    }
}

/// Builds an ext4 image of `root` at `out` (replacing it) and says what it built. See the module doc.
pub fn build_ext4(root: &Path, out: &Path, opts: &Ext4Options) -> Result<Ext4Stats, Ext4Error> {
    if opts.label.len() > MAX_LABEL_BYTES {
        return Err(Ext4Error::LabelTooLong { label: opts.label.clone() });
    }
    let mkfs = match &opts.mkfs {
        Some(path) => nestbox_supervise::find_program(&path.to_string_lossy())
            .ok_or_else(|| Ext4Error::MkfsMissing { path: Some(path.clone()), package: E2FSPROGS_PACKAGE })?,
        None => nestbox_supervise::find_program("mkfs.ext4")
            .ok_or(Ext4Error::MkfsMissing { path: None, package: E2FSPROGS_PACKAGE })?,
    };
    let meta = fs::metadata(root).map_err(io_err("cannot stat", root))?;
    if !meta.is_dir() {
        return Err(Ext4Error::NotADirectory { path: root.to_path_buf() });
    }
    let tree = measure_tree(root)?;
    let (size, inodes) = plan_size(tree, opts.size);
    let dir = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // mkfs writes the tree's data and the inode tables it uses; the rest stays sparse.
    let needed = tree.bytes + tree.entries * INODE_SIZE;
    if let Some(free) = free_bytes(&dir)
        && free < needed
    {
        return Err(Ext4Error::NoSpace { dir, needed });
    }

    let tmp = TempFile::create(&dir, out)?;
    tmp.file.set_len(size).map_err(io_err("cannot size", &tmp.path))?;
    let mut cmd = Command::new(&mkfs);
    cmd.args(["-q", "-F", "-t", "ext4", "-b"])
        .arg(BLOCK_SIZE.to_string())
        .arg("-L")
        .arg(&opts.label)
        .arg("-N")
        .arg(inodes.to_string())
        .args(["-E", "root_owner=0:0"]);
    if !opts.journal {
        cmd.args(["-O", "^has_journal"]);
    }
    cmd.arg("-d").arg(root).arg(&tmp.path).arg((size / BLOCK_SIZE).to_string());
    tracing::debug!(?cmd, size, inodes, "building ext4 image");
    let started = Instant::now();
    let output = cmd.output().map_err(io_err("cannot run", &mkfs))?;
    let mkfs_elapsed = started.elapsed();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No space left on device") {
            return Err(Ext4Error::NoSpace { dir, needed });
        }
        let message = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
        return Err(Ext4Error::Mkfs { status: output.status.to_string(), message });
    }
    tmp.file.set_permissions(fs::Permissions::from_mode(IMAGE_MODE)).map_err(io_err("cannot chmod", &tmp.path))?;
    tmp.file.sync_all().map_err(sync_err(&dir, needed, &tmp.path))?;
    tmp.persist(out)?;
    Ok(Ext4Stats {
        size_bytes: size,
        tree_bytes: tree.bytes,
        entries: tree.entries,
        inodes,
        journal: opts.journal,
        mkfs_elapsed,
    })
}

fn sync_err(dir: &Path, needed: u64, path: &Path) -> impl FnOnce(io::Error) -> Ext4Error {
    let (dir, path) = (dir.to_path_buf(), path.to_path_buf());
    move |source| {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            Ext4Error::NoSpace { dir, needed }
        } else {
            Ext4Error::Io { action: "cannot sync", path, source }
        }
    }
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`, when it can be asked.
fn free_bytes(dir: &Path) -> Option<u64> {
    let c_dir = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data, so all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_dir` is a NUL-terminated path and `st` a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(c_dir.as_ptr(), &mut st) };
    // The fields are narrower than u64 on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    (rc == 0).then(|| u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// A file under a temporary name next to its final one, removed on drop unless persisted.
struct TempFile {
    file: File,
    path: PathBuf,
    keep: bool,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    fn create(dir: &Path, out: &Path) -> Result<Self, Ext4Error> {
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".to_owned());
        loop {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
            match OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path) {
                Ok(file) => return Ok(Self { file, path, keep: false }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    return Err(Ext4Error::NoSpace { dir: dir.to_path_buf(), needed: 0 });
                }
                Err(e) => return Err(io_err("cannot create", &path)(e)),
            }
        }
    }

    fn persist(mut self, to: &Path) -> Result<(), Ext4Error> {
        fs::rename(&self.path, to).map_err(io_err("cannot rename into place", to))?;
        self.keep = true;
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = File::open(dir)
        {
            // Best effort: the rename is durable once the directory is.
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes the agent to `<root>/.nestbox/agent` (mode 0755) and `config` to
/// `<root>/.nestbox/image.json`, creating `<root>/.nestbox` (0755). Whatever the image had at
/// those names (a symlink out of the root included) is replaced, never followed.
pub fn inject_agent(root: &Path, agent: &[u8], config: &serde_json::Value) -> Result<(), Ext4Error> {
    let dir = root.join(NESTBOX_DIR);
    match fs::symlink_metadata(&dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => fs::remove_file(&dir).map_err(io_err("cannot replace", &dir))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot stat", &dir)(e)),
    }
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("cannot create", &dir)(e)),
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(io_err("cannot chmod", &dir))?;
    let json = serde_json::to_vec_pretty(config).expect("a serde_json::Value always serializes");
    write_new(&dir.join("agent"), agent, 0o755)?;
    write_new(&dir.join("image.json"), &json, 0o644)?;
    Ok(())
}

/// Replaces `path` (a regular file, symlink or anything but a directory) with `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Ext4Error> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).map_err(io_err("cannot replace", path))?,
        Ok(_) => fs::remove_file(path).map_err(io_err("cannot replace", path))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot stat", path)(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("cannot create", path))?;
    file.write_all(bytes).map_err(io_err("cannot write", path))?;
    // The umask may have cut the mode.
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err("cannot chmod", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// `mkfs.ext4` and `debugfs`, or `None` (with the reason printed) when e2fsprogs is missing.
    fn e2fsprogs() -> Option<PathBuf> {
        let found = nestbox_supervise::find_program("mkfs.ext4").zip(nestbox_supervise::find_program("debugfs"));
        if found.is_none() {
            eprintln!("skipped: mkfs.ext4 or debugfs not on PATH (install {E2FSPROGS_PACKAGE})");
        }
        found.map(|(_, debugfs)| debugfs)
    }

    fn debugfs(debugfs: &Path, img: &Path, request: &str) -> String {
        let out = Command::new(debugfs).arg("-R").arg(request).arg(img).output().unwrap();
        assert!(out.status.success(), "debugfs -R {request}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// A tree with a file, a hard link, a short and a long symlink, a 0700 directory and (as root)
    /// a file owned by uid 1000.
    fn sample_tree(root: &Path) {
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/hostname"), "nestbox\n").unwrap();
        fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname.link")).unwrap();
        symlink("etc/hostname", root.join("short")).unwrap();
        symlink("x".repeat(100), root.join("long")).unwrap();
        fs::create_dir(root.join("private")).unwrap();
        fs::write(root.join("private/secret"), "s3cret").unwrap();
        fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(root.join("user-file"), "mine").unwrap();
        if is_root() {
            std::os::unix::fs::chown(root.join("user-file"), Some(1000), Some(1000)).unwrap();
        }
    }

    #[test]
    fn test_measure_tree_counts_hard_links_once_and_long_symlinks_as_a_block() {
        let dir = tempfile::tempdir().unwrap();
        sample_tree(dir.path());
        let size = measure_tree(dir.path()).unwrap();
        // root, etc, hostname (+ its link, once), short, long, private, secret, user-file.
        assert_eq!(size.entries, 8);
        let dir_bytes: u64 = ["", "etc", "private"]
            .iter()
            .map(|d| round_up(fs::metadata(dir.path().join(d)).unwrap().len().max(1), BLOCK_SIZE))
            .sum();
        // hostname, secret, user-file: one block each; the long symlink one block; the short none.
        assert_eq!(size.bytes, dir_bytes + 4 * BLOCK_SIZE);
    }

    #[test]
    fn test_plan_size_adds_headroom_or_takes_the_given_size() {
        let tree = TreeSize { bytes: 100 << 20, entries: 1000 };
        let (size, inodes) = plan_size(tree, None);
        assert_eq!(inodes, 1000 + 300 + INODE_HEADROOM);
        let base = (100 << 20) + inodes * INODE_SIZE;
        assert_eq!(size, round_up(base + base * 30 / 100 + HEADROOM_BYTES, BLOCK_SIZE));
        assert_eq!(size % BLOCK_SIZE, 0);
        // A given size is rounded up to a block; a big image gets mkfs's default inode ratio.
        assert_eq!(
            plan_size(tree, Some(10 << 30 | 1)),
            ((10 << 30) + BLOCK_SIZE, ((10 << 30) + BLOCK_SIZE) / BYTES_PER_INODE)
        );
        // A small given size still gets the tree's inodes, without the spare ones.
        assert_eq!(plan_size(tree, Some(1 << 20)), (1 << 20, 1300));
    }

    #[test]
    fn test_build_ext4_keeps_content_modes_owners_and_links() {
        let Some(dbg) = e2fsprogs() else { return };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        sample_tree(&root);
        let config = serde_json::json!({"Env": ["PATH=/usr/bin"], "Cmd": ["sh"]});
        inject_agent(&root, b"#!/bin/sh\necho agent\n", &config).unwrap();
        let out = dir.path().join("out/image.ext4");
        fs::create_dir(out.parent().unwrap()).unwrap();

        let stats = build_ext4(&root, &out, &Ext4Options::default()).unwrap();

        assert_eq!(names_in(out.parent().unwrap()), ["image.ext4"], "no temp file left");
        let meta = fs::metadata(&out).unwrap();
        assert_eq!(meta.len(), stats.size_bytes);
        assert_eq!(meta.permissions().mode() & 0o777, IMAGE_MODE);
        assert!(
            meta.blocks() * 512 < meta.len() / 2,
            "image is sparse: {} of {} bytes",
            meta.blocks() * 512,
            meta.len()
        );
        assert_eq!(stats.entries, 11, "sample tree plus .nestbox, agent and image.json");
        assert!(stats.journal);
        let features = debugfs(&dbg, &out, "features");
        assert!(features.contains("has_journal"), "{features}");

        let listing = debugfs(&dbg, &out, "ls -l /");
        for name in ["etc", "short", "long", "private", "user-file", ".nestbox"] {
            assert!(listing.contains(name), "{name} missing from {listing}");
        }
        assert_eq!(debugfs(&dbg, &out, "cat /etc/hostname"), "nestbox\n");
        assert_eq!(debugfs(&dbg, &out, "cat /private/secret"), "s3cret");
        assert_eq!(debugfs(&dbg, &out, "cat /.nestbox/agent"), "#!/bin/sh\necho agent\n");
        let image_json: serde_json::Value =
            serde_json::from_str(&debugfs(&dbg, &out, "cat /.nestbox/image.json")).unwrap();
        assert_eq!(image_json, config);

        let stat = |path: &str| debugfs(&dbg, &out, &format!("stat {path}"));
        assert!(stat("/private").contains("Mode:  0700"), "{}", stat("/private"));
        assert!(stat("/.nestbox").contains("Mode:  0755"));
        assert!(stat("/.nestbox/agent").contains("Mode:  0755"));
        assert!(stat("/").contains("User:     0   Group:     0"), "{}", stat("/"));
        assert!(stat("/short").contains("Fast link dest: \"etc/hostname\""), "{}", stat("/short"));
        assert!(stat("/etc/hostname").contains("Links: 2"), "{}", stat("/etc/hostname"));
        if is_root() {
            assert!(stat("/user-file").contains("User:  1000   Group:  1000"), "{}", stat("/user-file"));
        } else {
            eprintln!("not root: the uid 1000 check is skipped");
        }
    }

    #[test]
    fn test_build_ext4_without_journal() {
        let Some(dbg) = e2fsprogs() else { return };
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        let out = dir.path().join("img");
        let opts = Ext4Options { journal: false, label: "data".into(), ..Ext4Options::default() };
        build_ext4(&dir.path().join("root"), &out, &opts).unwrap();
        assert!(!debugfs(&dbg, &out, "features").contains("has_journal"));
        assert!(debugfs(&dbg, &out, "stats").contains("Filesystem volume name:   data"));
    }

    #[test]
    fn test_build_ext4_too_small_leaves_no_file_and_keeps_the_old_image() {
        let Some(_) = e2fsprogs() else { return };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("big"), vec![7u8; 3 << 20]).unwrap();
        let outdir = dir.path().join("out");
        fs::create_dir(&outdir).unwrap();

        let opts = Ext4Options { size: Some(1 << 20), ..Ext4Options::default() };
        let err = build_ext4(&root, &outdir.join("img"), &opts).unwrap_err();
        let Ext4Error::Mkfs { message, .. } = &err else { panic!("{err:?}") };
        assert!(message.contains("Could not allocate block"), "{message}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
        assert!(names_in(&outdir).is_empty(), "{:?}", names_in(&outdir));

        fs::write(outdir.join("img"), "old image").unwrap();
        build_ext4(&root, &outdir.join("img"), &opts).unwrap_err();
        assert_eq!(names_in(&outdir), ["img"]);
        assert_eq!(fs::read_to_string(outdir.join("img")).unwrap(), "old image");
    }

    #[test]
    fn test_missing_mkfs_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Ext4Options { mkfs: Some(dir.path().join("no/mkfs.ext4")), ..Ext4Options::default() };
        let err = build_ext4(dir.path(), &dir.path().join("img"), &opts).unwrap_err();
        assert!(matches!(err, Ext4Error::MkfsMissing { package: "e2fsprogs", path: Some(_) }), "{err:?}");
        assert!(err.to_string().contains("install the package e2fsprogs"), "{err}");
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn test_label_too_long_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Ext4Options { label: "x".repeat(17), ..Ext4Options::default() };
        let err = build_ext4(dir.path(), &dir.path().join("img"), &opts).unwrap_err();
        assert!(matches!(err, Ext4Error::LabelTooLong { .. }), "{err:?}");
    }

    /// A small tmpfs, unmounted on drop; `None` when we may not mount.
    struct SmallFs(PathBuf);

    impl SmallFs {
        fn mount(dir: &Path, size: &str) -> Option<Self> {
            let target = dir.join("smallfs");
            fs::create_dir(&target).unwrap();
            let ok = is_root()
                && Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                    .arg(&target)
                    .status()
                    .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            }
            ok.then_some(Self(target))
        }
    }

    impl Drop for SmallFs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }

    #[test]
    fn test_full_disk_is_reported_and_leaves_nothing() {
        let Some(_) = e2fsprogs() else { return };
        let dir = tempfile::tempdir().unwrap();
        let Some(small) = SmallFs::mount(dir.path(), "1m") else { return };
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("big"), vec![1u8; 3 << 20]).unwrap();
        let err = build_ext4(&root, &small.0.join("img"), &Ext4Options::default()).unwrap_err();
        assert!(matches!(err, Ext4Error::NoSpace { .. }), "{err:?}");
        assert!(err.to_string().contains("no space left"), "{err}");
        assert!(names_in(&small.0).is_empty(), "{:?}", names_in(&small.0));
        // A tree that passes the free-space check but not mkfs's metadata on top of it: mkfs's own
        // ENOSPC becomes the same error.
        fs::write(root.join("big"), vec![1u8; 1_000_000]).unwrap();
        let err = build_ext4(&root, &small.0.join("img"), &Ext4Options::default()).unwrap_err();
        assert!(matches!(err, Ext4Error::NoSpace { .. }), "{err:?}");
        assert!(names_in(&small.0).is_empty(), "{:?}", names_in(&small.0));
    }

    #[test]
    fn test_inject_agent_replaces_a_symlink_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        symlink(&outside, root.join(NESTBOX_DIR)).unwrap();
        inject_agent(&root, b"agent", &serde_json::json!({})).unwrap();
        assert!(names_in(&outside).is_empty(), "wrote through the symlink");
        let nb = root.join(NESTBOX_DIR);
        assert!(fs::symlink_metadata(&nb).unwrap().is_dir());
        // A second injection replaces files (a symlink planted at agent included).
        fs::remove_file(nb.join("agent")).unwrap();
        symlink(outside.join("evil"), nb.join("agent")).unwrap();
        inject_agent(&root, b"agent2", &serde_json::json!({"a": 1})).unwrap();
        assert!(!outside.join("evil").exists());
        assert_eq!(fs::read(nb.join("agent")).unwrap(), b"agent2");
        assert_eq!(fs::metadata(nb.join("agent")).unwrap().permissions().mode() & 0o7777, 0o755);
        assert_eq!(fs::read_to_string(nb.join("image.json")).unwrap(), "{\n  \"a\": 1\n}");
    }
}
