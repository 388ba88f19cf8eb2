//! Images by content in one directory (the caller passes e.g. `$NESTBOX_HOME/images/rootfs`).
//!
//! ```text
//! <dir>/<id>.ext4       a root filesystem image; never replaced once there (overlays name it
//!                       as their base)
//! <dir>/<id>.raw        a cloud image (a whole disk booted by firmware), raw
//! <dir>/<id>.qcow2      … or qcow2, as it was imported
//! <dir>/<id>.json       its metadata, the kind included: the commit point of its existence
//! <dir>/names.json      every name (`name:tag`) → id, one file so a name moves atomically
//! <dir>/.lock           flock(2) taken by every writer, across processes
//! <dir>/.build-*/       a build in progress (see [`ImageStore::put`]), flocked by its builder
//! ```
//!
//! The id is the SHA-256 (hex) of the source's identity, chosen by the caller. Every file is
//! written under a temporary name and renamed into place, and writers hold `<dir>/.lock`, so a
//! crash leaves the old or the new state of each file. Across files the order makes every crash
//! point harmless: an import renames the ext4, then writes `<id>.json`, then `names.json` (a crash
//! in between leaves an orphan ext4, invisible, or the new image without its names yet, which
//! keep their old image); a removal deletes `<id>.json` first, then the names and the ext4.
//! Readers take no lock; names pointing at a missing image are ignored and dropped on the next
//! write, and [`ImageStore::prune`] sweeps orphans and abandoned builds.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Extension of root filesystem images.
pub const IMAGE_EXTENSION: &str = "ext4";
/// Extensions of every kind of image file.
const IMAGE_EXTENSIONS: [&str; 3] = [IMAGE_EXTENSION, "raw", "qcow2"];
/// Extension of metadata files.
pub const META_EXTENSION: &str = "json";
/// The names index.
pub const NAMES_FILE: &str = "names.json";
/// The writers' lock.
pub const LOCK_FILE: &str = ".lock";
/// The tag a reference without one gets.
pub const DEFAULT_TAG: &str = "latest";
/// Longest name (without the tag), as registries allow.
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag.
pub const MAX_TAG_LEN: usize = 128;
/// The file a [`ImageStore::put`] build writes, inside its build directory.
pub const BUILD_OUTPUT: &str = "image.ext4";
/// Prefix of build directories.
const BUILD_PREFIX: &str = ".build-";
/// Prefix of temporary files of atomic writes (only created under the lock).
const TMP_PREFIX: &str = ".tmp-";
/// Length of an id: SHA-256 in hex.
const ID_LEN: usize = 64;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A name is not a valid `name[:tag]`.
    #[error("invalid image name {reference:?}: {reason}")]
    InvalidReference {
        /// What was given.
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An id is not 64 lower-case hex digits.
    #[error("invalid image id {id:?}: expected 64 lower-case hex digits (sha256)")]
    InvalidId {
        /// What was given.
        id: String,
    },
    /// No image has this name, id or id prefix.
    #[error("no image {reference:?}")]
    NotFound {
        /// What was looked up.
        reference: String,
    },
    /// An id prefix matches several images.
    #[error("image id prefix {prefix:?} is ambiguous: it matches {}", .candidates.join(", "))]
    Ambiguous {
        /// The prefix.
        prefix: String,
        /// The matching ids, each with its names.
        candidates: Vec<String>,
    },
    /// The image is used by sandboxes or snapshots.
    #[error("image {id} is in use by {}; remove them first", .users.join(", "))]
    InUse {
        /// The image.
        id: String,
        /// Who uses it, as the caller named them.
        users: Vec<String>,
    },
    /// The finished image is on another filesystem than the store.
    #[error("cannot move {from} into the image store {dir}: another filesystem (build it with ImageStore::put)")]
    CrossDevice {
        /// The image that was handed over.
        from: PathBuf,
        /// The store.
        dir: PathBuf,
    },
    /// A [`ImageStore::put`] build failed.
    #[error("image build failed")]
    Build(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A metadata file is not what we wrote.
    #[error("corrupt image metadata {path}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// A file operation failed.
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
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { action, path, source }
}

/// A validated image name: `name[:tag]`, the tag defaulting to [`DEFAULT_TAG`]. The name is
/// lower-case path components (`[a-z0-9]+` joined by `.`, `_`, `__` or dashes), the first of
/// several may be a registry host with a port (`localhost:5000/app`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    name: String,
    tag: String,
}

impl Reference {
    /// Parses and validates `name[:tag]`.
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let bad = |reason| StoreError::InvalidReference { reference: s.to_owned(), reason };
        if s.contains('@') {
            return Err(bad("digest references (@sha256:…) name an image to pull; name a stored image by tag or id"));
        }
        let last_slash = s.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match s[last_slash..].rfind(':') {
            Some(i) => (&s[..last_slash + i], &s[last_slash + i + 1..]),
            None => (s, DEFAULT_TAG),
        };
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(bad("name longer than 255 characters"));
        }
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("names must be lower-case"));
        }
        let components: Vec<&str> = name.split('/').collect();
        for (i, component) in components.iter().enumerate() {
            let component = match component.split_once(':') {
                Some((host, port)) if i == 0 && components.len() > 1 => {
                    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad("a registry port must be digits"));
                    }
                    host
                }
                Some(_) => return Err(bad("':' may only separate the tag or a registry port")),
                None => component,
            };
            if !valid_component(component) {
                return Err(bad(
                    "each path component must be lower-case letters and digits, separated by '.', '_', '__' or '-'",
                ));
            }
        }
        if tag.is_empty() || tag.len() > MAX_TAG_LEN {
            return Err(bad("a tag must be 1 to 128 characters"));
        }
        let first = tag.as_bytes()[0];
        if !(first.is_ascii_alphanumeric() || first == b'_')
            || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(bad("a tag must be letters, digits, '_', '.' and '-', not starting with '.' or '-'"));
        }
        Ok(Self { name: name.to_owned(), tag: tag.to_owned() })
    }

    /// The name, without the tag.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or one or more `-`.
fn valid_component(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

impl FromStr for Reference {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// What an image is, which decides how a sandbox boots it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageKind {
    /// An ext4 root filesystem with the agent injected: the default initramfs switches to it.
    #[default]
    Rootfs,
    /// A whole raw disk (partition table, bootloader, root) booted by UEFI firmware; cloud-init
    /// starts the agent from the sandbox's seed disk.
    CloudRaw,
    /// The same, as qcow2.
    CloudQcow2,
}

impl ImageKind {
    /// The image file's extension.
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Rootfs => IMAGE_EXTENSION,
            ImageKind::CloudRaw => "raw",
            ImageKind::CloudQcow2 => "qcow2",
        }
    }

    /// Whether it boots through firmware (a cloud image).
    pub fn is_cloud(self) -> bool {
        self != ImageKind::Rootfs
    }

    /// The disk format QEMU and qemu-img know it by.
    pub fn disk_format(self) -> &'static str {
        match self {
            ImageKind::Rootfs | ImageKind::CloudRaw => "raw",
            ImageKind::CloudQcow2 => "qcow2",
        }
    }
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageKind::Rootfs => "rootfs",
            ImageKind::CloudRaw => "cloud-raw",
            ImageKind::CloudQcow2 => "cloud-qcow2",
        })
    }
}

/// A stored image, as `list`, `resolve` and `inspect` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMeta {
    /// SHA-256 (hex) of the source's identity.
    pub id: String,
    /// What it is.
    #[serde(default)]
    pub kind: ImageKind,
    /// Its names, `name:tag`, sorted.
    pub names: Vec<String>,
    /// When it was stored, in ms since the Unix epoch.
    pub created_at_ms: u64,
    /// The ext4 file's length (its apparent size; most of it is sparse).
    pub size_bytes: u64,
    /// Where it came from, for people.
    pub source: String,
    /// The image's config (env, working dir, user, entrypoint, cmd), as the source gave it.
    pub config: serde_json::Value,
}

/// What the caller says about an image it stores.
#[derive(Debug, Clone, PartialEq)]
pub struct NewImage {
    /// SHA-256 (hex) of the source's identity.
    pub id: String,
    /// What it is.
    pub kind: ImageKind,
    /// Names to give it (`name[:tag]`); each moves here from any image that had it.
    pub names: Vec<String>,
    /// Where it came from, for people.
    pub source: String,
    /// The image's config.
    pub config: serde_json::Value,
}

/// `<id>.json`: everything but the names, which live in `names.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredMeta {
    id: String,
    #[serde(default)]
    kind: ImageKind,
    created_at_ms: u64,
    size_bytes: u64,
    source: String,
    config: serde_json::Value,
}

/// `names.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct NamesFile {
    names: BTreeMap<String, String>,
}

/// The image store. Cheap to open; holds no file open.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    format!("{}-{}", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn validate_id(id: &str) -> Result<(), StoreError> {
    if id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(StoreError::InvalidId { id: id.to_owned() })
    }
}

/// `flock(fd, op)`, retried on EINTR.
fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: the fd is open for the duration of the call; flock touches no memory.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn sync_dir(dir: &Path) {
    // Best effort: a rename is durable once its directory is.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// A build directory, flocked while its builder lives and removed when dropped.
struct BuildDir {
    path: PathBuf,
    _lock: File,
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

impl ImageStore {
    /// Opens the store in `dir`, creating the directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        Ok(Self { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<id>.ext4`, the file of a root filesystem image.
    pub fn image_path(&self, id: &str) -> PathBuf {
        self.file_path(id, ImageKind::Rootfs)
    }

    /// The file of the image `id` of `kind`.
    pub fn file_path(&self, id: &str, kind: ImageKind) -> PathBuf {
        self.dir.join(format!("{id}.{}", kind.extension()))
    }

    /// The file of a stored image.
    pub fn path_of(&self, image: &ImageMeta) -> PathBuf {
        self.file_path(&image.id, image.kind)
    }

    /// `<dir>/<id>.json`.
    pub fn meta_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.{META_EXTENSION}"))
    }

    /// Takes the writers' lock, waiting for it; released when the file drops.
    fn lock(&self) -> Result<File, StoreError> {
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("cannot open lock file", &path))?;
        flock(&file, libc::LOCK_EX).map_err(io_err("cannot lock", &path))?;
        Ok(file)
    }

    /// Writes `bytes` to `<dir>/<name>` atomically. Called under the lock.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{TMP_PREFIX}{}-{name}", unique_suffix()));
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("cannot write", &path)(e));
        }
        sync_dir(&self.dir);
        Ok(())
    }

    fn read_stored(&self, id: &str) -> Result<Option<StoredMeta>, StoreError> {
        let path = self.meta_path(id);
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map(Some).map_err(|source| StoreError::Corrupt { path, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &path)(e)),
        }
    }

    fn read_names(&self) -> Result<NamesFile, StoreError> {
        let path = self.dir.join(NAMES_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(NamesFile::default()),
            Err(e) => Err(io_err("cannot read", &path)(e)),
        }
    }

    /// Writes the names, dropping those whose image is gone. Called under the lock.
    fn write_names(&self, mut names: NamesFile) -> Result<(), StoreError> {
        names.names.retain(|_, id| self.meta_path(id).exists());
        let bytes = serde_json::to_vec_pretty(&names).expect("names serialize");
        self.write_atomic(NAMES_FILE, &bytes)
    }

    fn with_names(stored: StoredMeta, names: &NamesFile) -> ImageMeta {
        let StoredMeta { id, kind, created_at_ms, size_bytes, source, config } = stored;
        let names = names.names.iter().filter(|(_, to)| **to == id).map(|(name, _)| name.clone()).collect();
        ImageMeta { id, kind, names, created_at_ms, size_bytes, source, config }
    }

    /// The image with this full id, if stored.
    pub fn get(&self, id: &str) -> Result<Option<ImageMeta>, StoreError> {
        validate_id(id)?;
        let Some(stored) = self.read_stored(id)? else { return Ok(None) };
        Ok(Some(Self::with_names(stored, &self.read_names()?)))
    }

    /// Every stored image, newest first.
    pub fn list(&self) -> Result<Vec<ImageMeta>, StoreError> {
        let names = self.read_names()?;
        let mut images = Vec::new();
        for id in self.ids_with(META_EXTENSION)? {
            // A removal between listing and reading is not an error.
            if let Some(stored) = self.read_stored(&id)? {
                images.push(Self::with_names(stored, &names));
            }
        }
        images.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then_with(|| a.id.cmp(&b.id)));
        Ok(images)
    }

    /// Ids of the `<id>.<extension>` files in the store.
    fn ids_with(&self, extension: &str) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("cannot list", &self.dir))? {
            let entry = entry.map_err(io_err("cannot list", &self.dir))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(extension)?.strip_suffix('.')) else { continue };
            if validate_id(id).is_ok() {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }

    /// The image named `s` (`name[:tag]`), else the one whose id starts with `s` (an optional
    /// `sha256:` prefix is ignored). Names win over id prefixes, as in docker.
    pub fn resolve(&self, s: &str) -> Result<ImageMeta, StoreError> {
        let not_found = || StoreError::NotFound { reference: s.to_owned() };
        if let Ok(reference) = Reference::parse(s)
            && let Some(id) = self.read_names()?.names.get(&reference.to_string())
            && let Some(image) = self.get(id)?
        {
            return Ok(image);
        }
        let prefix = s.strip_prefix("sha256:").unwrap_or(s);
        if prefix.is_empty() || prefix.len() > ID_LEN || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let prefix = prefix.to_ascii_lowercase();
        let mut matches: Vec<ImageMeta> = self.list()?.into_iter().filter(|i| i.id.starts_with(&prefix)).collect();
        match matches.len() {
            0 => Err(not_found()),
            1 => Ok(matches.remove(0)),
            _ => {
                matches.sort_by(|a, b| a.id.cmp(&b.id));
                let candidates =
                    matches
                        .iter()
                        .map(|i| {
                            if i.names.is_empty() { i.id.clone() } else { format!("{} ({})", i.id, i.names.join(", ")) }
                        })
                        .collect();
                Err(StoreError::Ambiguous { prefix: s.to_owned(), candidates })
            }
        }
    }

    fn parse_names(names: &[String]) -> Result<Vec<String>, StoreError> {
        names.iter().map(|n| Reference::parse(n).map(|r| r.to_string())).collect()
    }

    /// Moves the finished image file `ext4` (on the store's filesystem) into the store under
    /// `new.id`, records its metadata and gives it `new.names`. If the id is already stored, the
    /// stored image stays (overlays use it) and `ext4` is deleted; the names still move.
    pub fn import(&self, ext4: &Path, new: NewImage) -> Result<ImageMeta, StoreError> {
        validate_id(&new.id)?;
        let names = Self::parse_names(&new.names)?;
        let lock = self.lock()?;
        if self.read_stored(&new.id)?.is_some() {
            fs::remove_file(ext4).map_err(io_err("cannot remove", ext4))?;
        } else {
            let size_bytes = fs::metadata(ext4).map_err(io_err("cannot stat", ext4))?.len();
            let image = self.file_path(&new.id, new.kind);
            match fs::rename(ext4, &image) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    return Err(StoreError::CrossDevice { from: ext4.to_path_buf(), dir: self.dir.clone() });
                }
                Err(e) => return Err(io_err("cannot move into the store", &image)(e)),
            }
            let stored = StoredMeta {
                id: new.id.clone(),
                kind: new.kind,
                created_at_ms: now_ms(),
                size_bytes,
                source: new.source,
                config: new.config,
            };
            let bytes = serde_json::to_vec_pretty(&stored).expect("metadata serializes");
            if let Err(e) = self.write_atomic(&format!("{}.{META_EXTENSION}", new.id), &bytes) {
                let _ = fs::remove_file(&image);
                return Err(e);
            }
        }
        let mut file = self.read_names()?;
        for name in names {
            file.names.insert(name, new.id.clone());
        }
        self.write_names(file)?;
        drop(lock);
        self.get(&new.id)?.ok_or_else(|| StoreError::NotFound { reference: new.id.clone() })
    }

    /// Stores the image `new.id`, building it first unless it is already stored (then only the
    /// names move). `build` gets the path to write the ext4 to, in a private directory of the
    /// store (same filesystem, so the import is a rename); whatever it leaves there is removed
    /// when it fails, and the store is unchanged.
    pub fn put<E>(&self, new: NewImage, build: impl FnOnce(&Path) -> Result<(), E>) -> Result<ImageMeta, StoreError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        validate_id(&new.id)?;
        Self::parse_names(&new.names)?;
        if self.read_stored(&new.id)?.is_some() {
            let lock = self.lock()?;
            // Removed since we looked: build after all.
            if self.read_stored(&new.id)?.is_some() {
                let mut file = self.read_names()?;
                for name in Self::parse_names(&new.names)? {
                    file.names.insert(name, new.id.clone());
                }
                self.write_names(file)?;
                drop(lock);
                return self.get(&new.id)?.ok_or_else(|| StoreError::NotFound { reference: new.id.clone() });
            }
        }
        let build_dir = self.build_dir()?;
        let out = build_dir.path.join(BUILD_OUTPUT);
        build(&out).map_err(|e| StoreError::Build(e.into()))?;
        self.import(&out, new)
    }

    /// A fresh `.build-*` directory, flocked so that `prune` leaves it alone.
    fn build_dir(&self) -> Result<BuildDir, StoreError> {
        let path = self.dir.join(format!("{BUILD_PREFIX}{}", unique_suffix()));
        fs::create_dir(&path).map_err(io_err("cannot create", &path))?;
        let lock = File::open(&path).and_then(|f| flock(&f, libc::LOCK_EX | libc::LOCK_NB).map(|()| f));
        match lock {
            Ok(lock) => Ok(BuildDir { path, _lock: lock }),
            Err(e) => {
                let _ = fs::remove_dir_all(&path);
                Err(io_err("cannot lock", &path)(e))
            }
        }
    }

    /// Gives the image `id` the name `name` (moving it from any other image).
    pub fn tag(&self, id: &str, name: &str) -> Result<(), StoreError> {
        validate_id(id)?;
        let name = Reference::parse(name)?.to_string();
        let _lock = self.lock()?;
        if self.read_stored(id)?.is_none() {
            return Err(StoreError::NotFound { reference: id.to_owned() });
        }
        let mut file = self.read_names()?;
        file.names.insert(name, id.to_owned());
        self.write_names(file)
    }

    /// Takes the name `name` off its image; returns that image's id.
    pub fn untag(&self, name: &str) -> Result<String, StoreError> {
        let reference = Reference::parse(name)?.to_string();
        let _lock = self.lock()?;
        let mut file = self.read_names()?;
        let id = file.names.remove(&reference).ok_or_else(|| StoreError::NotFound { reference: name.to_owned() })?;
        self.write_names(file)?;
        Ok(id)
    }

    /// Removes the image `id` and its names, unless `users` (the sandboxes and snapshots the
    /// caller found using it) is non-empty.
    pub fn remove(&self, id: &str, users: &[String]) -> Result<ImageMeta, StoreError> {
        validate_id(id)?;
        if !users.is_empty() {
            return Err(StoreError::InUse { id: id.to_owned(), users: users.to_vec() });
        }
        let _lock = self.lock()?;
        let image = self.get(id)?.ok_or_else(|| StoreError::NotFound { reference: id.to_owned() })?;
        self.remove_locked(&image)?;
        self.write_names(self.read_names()?)?;
        Ok(image)
    }

    /// Deletes `<id>.json` (the commit point), then the image file. Called under the lock; the
    /// caller rewrites the names.
    fn remove_locked(&self, image: &ImageMeta) -> Result<(), StoreError> {
        let meta = self.meta_path(&image.id);
        fs::remove_file(&meta).map_err(io_err("cannot remove", &meta))?;
        sync_dir(&self.dir);
        let image = self.path_of(image);
        match fs::remove_file(&image) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove", &image)(e)),
        }
    }

    /// Removes every unnamed image for which `keep` is false (the caller keeps those that
    /// sandboxes or snapshots use), and sweeps what crashes left: ext4 files without metadata,
    /// temporary files and abandoned builds. Returns the images removed.
    pub fn prune(&self, keep: impl Fn(&ImageMeta) -> bool) -> Result<Vec<ImageMeta>, StoreError> {
        let _lock = self.lock()?;
        let mut removed = Vec::new();
        for image in self.list()? {
            if image.names.is_empty() && !keep(&image) {
                self.remove_locked(&image)?;
                removed.push(image);
            }
        }
        self.write_names(self.read_names()?)?;
        for extension in IMAGE_EXTENSIONS {
            for id in self.ids_with(extension)? {
                if !self.meta_path(&id).exists() {
                    let _ = fs::remove_file(self.dir.join(format!("{id}.{extension}")));
                }
            }
        }
        for entry in fs::read_dir(&self.dir).map_err(io_err("cannot list", &self.dir))? {
            let entry = entry.map_err(io_err("cannot list", &self.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TMP_PREFIX) {
                // Only written under the lock, which we hold: left by a crash.
                let _ = fs::remove_file(entry.path());
            } else if name.starts_with(BUILD_PREFIX) {
                // A live builder holds its directory's flock.
                let abandoned = File::open(entry.path()).and_then(|f| flock(&f, libc::LOCK_EX | libc::LOCK_NB)).is_ok();
                if abandoned {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn id(c: char) -> String {
        c.to_string().repeat(ID_LEN)
    }

    fn new(id: &str, names: &[&str]) -> NewImage {
        NewImage {
            id: id.to_owned(),
            kind: ImageKind::Rootfs,
            names: names.iter().map(|n| n.to_string()).collect(),
            source: format!("test {id}"),
            config: serde_json::json!({"Cmd": ["sh"]}),
        }
    }

    /// Imports a fake 4 KiB image.
    fn add(store: &ImageStore, id: &str, names: &[&str]) -> ImageMeta {
        let file = store.dir().join(format!("incoming-{id}"));
        fs::write(&file, vec![0u8; 4096]).unwrap();
        store.import(&file, new(id, names)).unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn test_reference_parse_accepts_registry_style_names() {
        let r = Reference::parse("debian").unwrap();
        assert_eq!((r.name(), r.tag(), r.to_string().as_str()), ("debian", "latest", "debian:latest"));
        assert_eq!(Reference::parse("library/debian:12.5-slim").unwrap().to_string(), "library/debian:12.5-slim");
        let r = Reference::parse("localhost:5000/my_app/web--x:v1").unwrap();
        assert_eq!((r.name(), r.tag()), ("localhost:5000/my_app/web--x", "v1"));
        assert_eq!(Reference::parse("a.b__c:_T").unwrap().tag(), "_T");
    }

    #[test]
    fn test_reference_parse_refuses_bad_names() {
        for bad in [
            "",
            ":tag",
            "Debian",
            "debian:",
            "debian:-x",
            "-debian",
            "debian-",
            "deb..ian",
            "a///b",
            "/abs",
            "a/b:c/d",
            "host:port/x",
            "debian@sha256:abcd",
            "a:b:c",
            "deb ian",
        ] {
            let err = Reference::parse(bad).unwrap_err();
            assert!(matches!(err, StoreError::InvalidReference { .. }), "{bad:?}: {err:?}");
        }
        let long = format!("x:{}", "t".repeat(129));
        assert!(Reference::parse(&long).is_err());
    }

    #[test]
    fn test_import_stores_image_metadata_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("rootfs")).unwrap();
        let a = id('a');
        let meta = add(&store, &a, &["debian", "debian:12"]);
        assert_eq!(meta.id, a);
        assert_eq!(meta.names, ["debian:12", "debian:latest"]);
        assert_eq!(meta.size_bytes, 4096);
        assert_eq!(meta.source, format!("test {a}"));
        assert_eq!(meta.config, serde_json::json!({"Cmd": ["sh"]}));
        assert!(meta.created_at_ms > 0);
        assert_eq!(fs::read(store.image_path(&a)).unwrap().len(), 4096);
        assert_eq!(
            entries(store.dir()),
            [".lock".to_owned(), format!("{a}.ext4"), format!("{a}.json"), NAMES_FILE.into()]
        );
        assert_eq!(store.list().unwrap(), std::slice::from_ref(&meta));
        assert_eq!(store.get(&a).unwrap(), Some(meta));
        assert_eq!(store.get(&id('b')).unwrap(), None);
        assert!(matches!(store.get("abc"), Err(StoreError::InvalidId { .. })));
    }

    #[test]
    fn test_import_refuses_bad_input_before_touching_anything() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let file = dir.path().join("incoming");
        fs::write(&file, "x").unwrap();
        let err = store.import(&file, new("ABC", &[])).unwrap_err();
        assert!(matches!(err, StoreError::InvalidId { .. }), "{err:?}");
        let err = store.import(&file, new(&id('a'), &["Bad"])).unwrap_err();
        assert!(matches!(err, StoreError::InvalidReference { .. }), "{err:?}");
        assert_eq!(entries(dir.path()), ["incoming"]);
    }

    #[test]
    fn test_a_name_moves_to_the_newer_image_and_the_older_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let (a, b) = (id('a'), id('b'));
        add(&store, &a, &["debian:12", "old:1"]);
        let newer = add(&store, &b, &["debian:12"]);
        assert_eq!(newer.names, ["debian:12"]);
        let older = store.get(&a).unwrap().unwrap();
        assert_eq!((older.id.as_str(), older.names.as_slice()), (a.as_str(), ["old:1".to_owned()].as_slice()));
        assert_eq!(store.resolve("debian:12").unwrap().id, b);
        assert_eq!(store.resolve("old:1").unwrap().id, a);
    }

    #[test]
    fn test_importing_a_stored_id_keeps_the_stored_image_and_moves_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let a = id('a');
        let first = add(&store, &a, &["x"]);
        let again = dir.path().join("again");
        fs::write(&again, "different bytes").unwrap();
        let second = store.import(&again, new(&a, &["y"])).unwrap();
        assert!(!again.exists(), "the handed-over file is consumed");
        assert_eq!(fs::read(store.image_path(&a)).unwrap().len(), 4096, "stored image untouched");
        assert_eq!(second.created_at_ms, first.created_at_ms);
        assert_eq!(second.names, ["x:latest", "y:latest"]);
    }

    #[test]
    fn test_resolve_by_name_id_and_prefix_and_ambiguity_lists_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let a1 = format!("ab{}", "1".repeat(62));
        let a2 = format!("ab{}", "2".repeat(62));
        add(&store, &a1, &["one"]);
        add(&store, &a2, &[]);
        assert_eq!(store.resolve("one").unwrap().id, a1);
        assert_eq!(store.resolve("one:latest").unwrap().id, a1);
        assert_eq!(store.resolve(&a2).unwrap().id, a2);
        assert_eq!(store.resolve("ab1").unwrap().id, a1);
        assert_eq!(store.resolve("sha256:AB2").unwrap().id, a2);
        let err = store.resolve("ab").unwrap_err();
        let StoreError::Ambiguous { candidates, .. } = &err else { panic!("{err:?}") };
        assert_eq!(candidates, &[format!("{a1} (one:latest)"), a2.clone()]);
        let text = err.to_string();
        assert!(text.contains("ambiguous") && text.contains(&a1) && text.contains(&a2), "{text}");
        for missing in ["two", "ac", "", "sha256:", "zz"] {
            assert!(matches!(store.resolve(missing), Err(StoreError::NotFound { .. })), "{missing:?}");
        }
    }

    #[test]
    fn test_a_name_wins_over_an_id_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let (a, b) = (id('a'), id('b'));
        add(&store, &a, &[]);
        add(&store, &b, &["aaa"]);
        assert_eq!(store.resolve("aaa").unwrap().id, b);
        assert_eq!(store.resolve("aaaa").unwrap().id, a);
    }

    #[test]
    fn test_remove_is_refused_naming_the_users_then_removes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let a = id('a');
        add(&store, &a, &["debian"]);
        let users = vec!["sandbox web1".to_owned(), "snapshot s1".to_owned()];
        let err = store.remove(&a, &users).unwrap_err();
        assert!(matches!(&err, StoreError::InUse { users: u, .. } if *u == users), "{err:?}");
        assert_eq!(err.to_string(), format!("image {a} is in use by sandbox web1, snapshot s1; remove them first"));
        assert!(store.image_path(&a).exists());
        assert_eq!(store.resolve("debian").unwrap().id, a);

        let removed = store.remove(&a, &[]).unwrap();
        assert_eq!(removed.names, ["debian:latest"]);
        assert_eq!(entries(dir.path()), [".lock", NAMES_FILE]);
        assert!(matches!(store.resolve("debian"), Err(StoreError::NotFound { .. })));
        assert!(matches!(store.remove(&a, &[]), Err(StoreError::NotFound { .. })));
    }

    #[test]
    fn test_tag_and_untag() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let (a, b) = (id('a'), id('b'));
        add(&store, &a, &["x"]);
        add(&store, &b, &[]);
        store.tag(&b, "x").unwrap();
        assert_eq!(store.resolve("x").unwrap().id, b);
        assert!(store.get(&a).unwrap().unwrap().names.is_empty());
        assert!(matches!(store.tag(&id('c'), "y"), Err(StoreError::NotFound { .. })));
        assert_eq!(store.untag("x:latest").unwrap(), b);
        assert!(matches!(store.untag("x"), Err(StoreError::NotFound { .. })));
    }

    #[test]
    fn test_prune_removes_unnamed_unkept_images_and_crash_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let (named, kept, dropped) = (id('a'), id('b'), id('c'));
        add(&store, &named, &["n"]);
        add(&store, &kept, &[]);
        add(&store, &dropped, &[]);
        // What crashes leave: an ext4 without metadata, a temp file, an abandoned build, and a
        // live build (its builder holds the flock) that must survive.
        let orphan = id('d');
        fs::write(store.image_path(&orphan), "orphan").unwrap();
        fs::write(store.file_path(&id('e'), ImageKind::CloudQcow2), "orphan").unwrap();
        fs::write(dir.path().join(format!("{TMP_PREFIX}1-names.json")), "{").unwrap();
        fs::create_dir(dir.path().join(format!("{BUILD_PREFIX}dead"))).unwrap();
        let live = store.build_dir().unwrap();
        assert_eq!(store.list().unwrap().len(), 3, "the orphan is invisible");

        let removed = store.prune(|image| image.id == kept).unwrap();
        assert_eq!(removed.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), [dropped]);
        let mut left: Vec<String> = store.list().unwrap().into_iter().map(|i| i.id).collect();
        left.sort();
        assert_eq!(left, [named.clone(), kept.clone()]);
        let live_name = live.path.file_name().unwrap().to_string_lossy().into_owned();
        let mut expected = vec![
            ".lock".to_owned(),
            live_name,
            format!("{named}.ext4"),
            format!("{named}.json"),
            format!("{kept}.ext4"),
            format!("{kept}.json"),
            NAMES_FILE.to_owned(),
        ];
        expected.sort();
        assert_eq!(entries(dir.path()), expected);
        drop(live);
    }

    #[test]
    fn test_put_builds_once_and_a_failed_build_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let a = id('a');
        let err = store
            .put(new(&a, &["x"]), |out| {
                fs::write(out, "partial").unwrap();
                fs::write(out.with_extension("tmp"), "scratch").unwrap();
                Err("mkfs.ext4 failed")
            })
            .unwrap_err();
        assert!(matches!(&err, StoreError::Build(e) if e.to_string() == "mkfs.ext4 failed"), "{err:?}");
        assert_eq!(entries(dir.path()), Vec::<String>::new());
        assert!(store.list().unwrap().is_empty());

        let meta = store.put(new(&a, &["x"]), |out| fs::write(out, "image")).unwrap();
        assert_eq!((meta.size_bytes, meta.names.as_slice()), (5, ["x:latest".to_owned()].as_slice()));
        assert_eq!(fs::read_to_string(store.image_path(&a)).unwrap(), "image");
        // Stored already: no build, the names still move.
        let meta = store.put(new(&a, &["y"]), |_| -> io::Result<()> { panic!("built twice") }).unwrap();
        assert_eq!(meta.names, ["x:latest", "y:latest"]);
        assert_eq!(
            entries(dir.path()),
            [".lock".to_owned(), format!("{a}.ext4"), format!("{a}.json"), NAMES_FILE.into()]
        );
    }

    #[test]
    fn test_put_with_a_build_that_writes_nothing_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let err = store.put(new(&id('a'), &[]), |_| io::Result::Ok(())).unwrap_err();
        assert!(matches!(err, StoreError::Io { action: "cannot stat", .. }), "{err:?}");
        assert_eq!(entries(dir.path()), [".lock"]);
    }

    #[test]
    fn test_writers_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let held = store.lock().unwrap();
        let other = File::open(dir.path().join(LOCK_FILE)).unwrap();
        let err = flock(&other, libc::LOCK_EX | libc::LOCK_NB).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EWOULDBLOCK));
        drop(held);
        flock(&other, libc::LOCK_EX | libc::LOCK_NB).unwrap();
    }

    #[test]
    fn test_dangling_names_are_ignored_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let a = id('a');
        add(&store, &a, &["x"]);
        // A crash after deleting the metadata but before rewriting the names.
        fs::remove_file(store.meta_path(&a)).unwrap();
        assert!(matches!(store.resolve("x"), Err(StoreError::NotFound { .. })));
        add(&store, &id('b'), &[]);
        assert!(!fs::read_to_string(dir.path().join(NAMES_FILE)).unwrap().contains("x:latest"));
    }

    #[test]
    fn test_put_with_build_ext4_stores_a_real_image_and_a_failed_one_leaves_nothing() {
        use crate::ext4::{Ext4Options, build_ext4};
        if nestbox_supervise::find_program("mkfs.ext4").is_none() {
            eprintln!("skipped: mkfs.ext4 not on PATH (install e2fsprogs)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("big"), vec![5u8; 3 << 20]).unwrap();
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        let too_small = Ext4Options { size: Some(1 << 20), ..Ext4Options::default() };
        let err = store.put(new(&id('a'), &["x"]), |out| build_ext4(&root, out, &too_small).map(drop)).unwrap_err();
        assert!(err.source().unwrap().to_string().contains("mkfs.ext4 failed"), "{err:?}");
        assert_eq!(entries(store.dir()), Vec::<String>::new());

        let meta =
            store.put(new(&id('a'), &["x"]), |out| build_ext4(&root, out, &Ext4Options::default()).map(drop)).unwrap();
        assert_eq!(meta.size_bytes, fs::metadata(store.image_path(&id('a'))).unwrap().len());
        assert!(meta.size_bytes > 3 << 20);
        assert_eq!(entries(store.dir()).len(), 4, "{:?}", entries(store.dir()));
    }

    #[test]
    fn test_a_cloud_image_keeps_its_kind_and_file_through_list_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let file = dir.path().join("incoming.qcow2");
        fs::write(&file, b"QFI\xfbdisk").unwrap();
        let stored =
            store.import(&file, NewImage { kind: ImageKind::CloudQcow2, ..new(&id('c'), &["cloud"]) }).unwrap();
        assert_eq!(stored.kind, ImageKind::CloudQcow2);
        assert_eq!(store.path_of(&stored), dir.path().join(format!("{}.qcow2", id('c'))));
        assert_eq!(fs::read(store.path_of(&stored)).unwrap(), b"QFI\xfbdisk");
        assert_eq!(store.resolve("cloud").unwrap().kind, ImageKind::CloudQcow2);
        store.remove(&stored.id, &[]).unwrap();
        assert!(!store.path_of(&stored).exists());
        assert_eq!(entries(dir.path()), [".lock".to_owned(), NAMES_FILE.to_owned()]);
    }

    #[test]
    fn test_metadata_written_before_kinds_existed_reads_as_rootfs() {
        let old = r#"{"id":"x","created_at_ms":1,"size_bytes":2,"source":"s","config":{}}"#;
        let meta: StoredMeta = serde_json::from_str(old).unwrap();
        assert_eq!(meta.kind, ImageKind::Rootfs);
    }
}
