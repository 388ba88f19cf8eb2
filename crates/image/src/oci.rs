//! The OCI image layout and `docker save` archives: wire types for what we read (index,
//! manifest, image config, descriptors, platforms — OCI and Docker media types alike), the
//! platform and reference choice, and blobs read with their size and digest checked.
//!
//! Blobs come from a [`BlobStore`]: a directory (an OCI layout on disk) or a plain tar read in
//! place, entry by entry, without extracting it (a `docker save` archive, legacy or OCI-shaped).
//! Names inside a store are checked: one that climbs out (`../x`) or is absolute is refused, so a
//! hostile `manifest.json` cannot make us read files outside the layout.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::debug;

use crate::digest::{Digest, DigestParseError, VerifyError, VerifyingReader};

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker manifest list (an index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Layer media types we apply (compression is detected from the bytes either way).
pub const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];
/// The annotation that names an image in an index (`--ref`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The one `imageLayoutVersion` there is.
pub const LAYOUT_VERSION: &str = "1.0.0";
/// The largest JSON blob (index, manifest, config) we read into memory.
pub const MAX_JSON_BLOB_BYTES: u64 = 16 << 20;
const MAX_INDEX_DEPTH: usize = 4;

/// Where an image should run: `os/architecture[/variant]` in OCI naming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v8` for arm64, `v7` for arm, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Linux on this machine's architecture.
    pub fn host() -> Self {
        Self { os: "linux".to_owned(), architecture: oci_arch(std::env::consts::ARCH).to_owned(), variant: None }
    }

    /// Whether an image for `self` runs where `wanted` is asked for. No variant asked matches
    /// any; arm64 without a variant is `v8`.
    pub fn satisfies(&self, wanted: &Platform) -> bool {
        if self.os != wanted.os || self.architecture != wanted.architecture {
            return false;
        }
        match (&wanted.variant, &self.variant) {
            (None, _) => true,
            (Some(w), Some(have)) => w == have,
            (Some(w), None) => self.architecture == "arm64" && w == "v8",
        }
    }
}

impl Default for Platform {
    fn default() -> Self {
        Self::host()
    }
}

/// Rust's name for an architecture in OCI's (Go's) naming.
pub fn oci_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A string that is not `os/arch[/variant]`.
#[derive(Debug, Error)]
#[error("bad platform {0:?}: expected os/arch or os/arch/variant, e.g. linux/arm64")]
pub struct PlatformParseError(pub String);

impl FromStr for Platform {
    type Err = PlatformParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => {
                Ok(Self { os: (*os).to_owned(), architecture: (*arch).to_owned(), variant: None })
            }
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => {
                Ok(Self { os: (*os).to_owned(), architecture: (*arch).to_owned(), variant: Some((*v).to_owned()) })
            }
            _ => Err(PlatformParseError(s.to_owned())),
        }
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the blob is; some tools leave it out of index entries.
    #[serde(default)]
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// On index entries: the platform the manifest is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations (`org.opencontainers.image.ref.name`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (`index.json`, or a Docker manifest list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// 2.
    pub schema_version: u32,
    /// [`OCI_INDEX`] or [`DOCKER_MANIFEST_LIST`]; optional in `index.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Manifests (or nested indexes).
    pub manifests: Vec<Descriptor>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// 2.
    pub schema_version: u32,
    /// [`OCI_MANIFEST`] or [`DOCKER_MANIFEST`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// Layers, lowest first.
    pub layers: Vec<Descriptor>,
}

/// The image config blob ([`OCI_CONFIG`] or [`DOCKER_CONFIG`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OciImageConfig {
    /// The CPU architecture the binaries are for.
    #[serde(default)]
    pub architecture: String,
    /// The operating system.
    #[serde(default)]
    pub os: String,
    /// The CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The defaults for a container run from the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    /// The layers' uncompressed digests.
    #[serde(default)]
    pub rootfs: RootFs,
}

impl OciImageConfig {
    /// The platform this config says the image is for.
    pub fn platform(&self) -> Platform {
        Platform { os: self.os.clone(), architecture: self.architecture.clone(), variant: self.variant.clone() }
    }
}

/// The `config` object of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `NAME=value` entries.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// The command's fixed prefix.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// The default arguments (or command, without an entrypoint).
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// The working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`.
    #[serde(default)]
    pub user: Option<String>,
}

/// The `rootfs` object of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RootFs {
    /// `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The digests of the uncompressed layers, lowest first.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerArchiveEntry {
    /// The config file's name in the archive.
    pub config: String,
    /// `repo:tag` names.
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// The layer files' names in the archive, lowest first.
    pub layers: Vec<String>,
}

/// Why an image could not be read from a layout or archive.
#[derive(Debug, Error)]
pub enum OciError {
    /// A file could not be read.
    #[error("reading {path:?}")]
    Io {
        /// The file (inside the layout or archive).
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A directory without an `oci-layout` file.
    #[error("{dir:?} is not an OCI image layout: it has no oci-layout file")]
    NotALayout {
        /// The directory.
        dir: PathBuf,
    },
    /// An `imageLayoutVersion` other than 1.0.0.
    #[error("unsupported OCI layout version {found:?} (expected {LAYOUT_VERSION})")]
    LayoutVersion {
        /// The version found.
        found: String,
    },
    /// A JSON document that does not parse.
    #[error("parsing {what}")]
    Json {
        /// Which document.
        what: String,
        /// The failure.
        #[source]
        source: serde_json::Error,
    },
    /// A name that the layout or archive does not hold.
    #[error("{name:?} is missing from the image")]
    Missing {
        /// The name inside the layout or archive.
        name: String,
    },
    /// A name that climbs out of the layout or archive.
    #[error("{name:?} points outside the image")]
    BadName {
        /// The name as written.
        name: String,
    },
    /// A JSON blob too large to be honest.
    #[error("{digest} is {size} bytes, more than the {MAX_JSON_BLOB_BYTES} a manifest or config may have")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
    },
    /// A blob whose bytes are not what its descriptor says.
    #[error("blob {name:?} is corrupt")]
    Verify {
        /// The blob's name inside the layout or archive.
        name: String,
        /// The mismatch.
        #[source]
        source: VerifyError,
    },
    /// No manifest for the platform asked for.
    #[error("no image for {wanted}; the image has {}", list(.present))]
    NoMatchingPlatform {
        /// The platform asked for.
        wanted: Platform,
        /// The platforms present.
        present: Vec<Platform>,
    },
    /// No manifest with the reference asked for.
    #[error("no image named {reference:?}; the image has {}", list(.available))]
    NoSuchReference {
        /// The reference asked for.
        reference: String,
        /// The references present.
        available: Vec<String>,
    },
    /// A manifest, index or layer of a kind we do not read.
    #[error("unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// The media type.
        media_type: String,
    },
    /// Indexes nested deeper than anyone builds them.
    #[error("image indexes nest more than {MAX_INDEX_DEPTH} deep")]
    TooDeep,
    /// A `docker save` manifest whose layers and diff ids disagree.
    #[error("the archive lists {layers} layers but its config has {diff_ids} diff ids")]
    LayerCount {
        /// Layers in `manifest.json`.
        layers: usize,
        /// `rootfs.diff_ids` in the config.
        diff_ids: usize,
    },
    /// A `docker save` archive without images.
    #[error("the archive's manifest.json lists no images")]
    NoImages,
    /// A digest in a name that does not parse.
    #[error(transparent)]
    Digest(#[from] DigestParseError),
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Where the files of a layout or archive come from.
#[derive(Debug)]
pub enum BlobStore {
    /// A directory.
    Dir(PathBuf),
    /// A plain tar file, read in place.
    Tar {
        /// The tar file.
        path: PathBuf,
        /// Regular files: name → (offset of the data, size).
        files: HashMap<String, (u64, u64)>,
        /// Links: name → the name they point at.
        links: HashMap<String, String>,
    },
}

/// Normalizes a relative name inside a store; `None` if it is absolute or climbs out.
fn clean_name(base: &Path, name: &str) -> Option<String> {
    let mut out: Vec<String> = Vec::new();
    for component in base.join(name).components() {
        match component {
            Component::Normal(c) => out.push(c.to_str()?.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out.join("/"))
}

impl BlobStore {
    /// Indexes a plain tar file (a `docker save` archive) without extracting it.
    pub fn open_tar(path: &Path) -> Result<Self, OciError> {
        let io_err = |source| OciError::Io { path: path.to_owned(), source };
        let file = File::open(path).map_err(io_err)?;
        let mut archive = tar::Archive::new(file);
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        for entry in archive.entries_with_seek().map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let raw = entry.path().map_err(io_err)?.to_string_lossy().into_owned();
            let Some(name) = clean_name(Path::new(""), &raw) else {
                debug!(entry = raw, "skipping an archive entry that points outside it");
                continue;
            };
            let kind = entry.header().entry_type();
            if kind.is_file() {
                files.insert(name, (entry.raw_file_position(), entry.size()));
            } else if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name().map_err(io_err)? else { continue };
                let target = target.to_string_lossy().into_owned();
                // A symlink is relative to its own directory, a hard link to the archive's root.
                let base =
                    if kind.is_symlink() { Path::new(&name).parent().unwrap_or(Path::new("")) } else { Path::new("") };
                if let Some(target) = clean_name(base, &target) {
                    links.insert(name, target);
                }
            }
        }
        Ok(Self::Tar { path: path.to_owned(), files, links })
    }

    fn io_path(&self, name: &str) -> PathBuf {
        match self {
            Self::Dir(dir) => dir.join(name),
            Self::Tar { path, .. } => path.join(name),
        }
    }

    /// Whether the store holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Self::Dir(dir) => clean_name(Path::new(""), name).is_some_and(|n| dir.join(n).is_file()),
            Self::Tar { files, links, .. } => {
                clean_name(Path::new(""), name).is_some_and(|n| files.contains_key(&n) || links.contains_key(&n))
            }
        }
    }

    /// Opens `name` for reading.
    pub fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, OciError> {
        Ok(self.open_sized(name)?.0)
    }

    /// Opens `name` for reading, with its size in bytes.
    pub fn open_sized(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64), OciError> {
        let clean = clean_name(Path::new(""), name).ok_or_else(|| OciError::BadName { name: name.to_owned() })?;
        match self {
            Self::Dir(dir) => {
                let io_err = |source| OciError::Io { path: dir.join(&clean), source };
                let file = match File::open(dir.join(&clean)) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(OciError::Missing { name: name.to_owned() });
                    }
                    Err(source) => return Err(io_err(source)),
                };
                let size = file.metadata().map_err(io_err)?.len();
                Ok((Box::new(file), size))
            }
            Self::Tar { path, files, links } => {
                let mut current = clean;
                for _ in 0..8 {
                    if let Some(&(offset, size)) = files.get(&current) {
                        let io_err = |source| OciError::Io { path: path.join(name), source };
                        let mut file = File::open(path).map_err(io_err)?;
                        file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
                        return Ok((Box::new(file.take(size)), size));
                    }
                    match links.get(&current) {
                        Some(next) => current = next.clone(),
                        None => break,
                    }
                }
                Err(OciError::Missing { name: name.to_owned() })
            }
        }
    }

    /// Reads a small file (`oci-layout`, `index.json`, `manifest.json`) whole.
    pub fn read_small(&self, name: &str) -> Result<Vec<u8>, OciError> {
        let mut out = Vec::new();
        self.open(name)?
            .take(MAX_JSON_BLOB_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|source| OciError::Io { path: self.io_path(name), source })?;
        Ok(out)
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, OciError> {
    serde_json::from_slice(bytes).map_err(|source| OciError::Json { what: what.to_owned(), source })
}

/// The name of a blob inside a layout.
pub fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// An OCI image layout, on disk or inside a `docker save` tar.
#[derive(Debug)]
pub struct OciLayout {
    store: BlobStore,
    index: ImageIndex,
}

/// The image chosen from a layout.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The manifest's digest: the image's identity.
    pub manifest_digest: Digest,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The image config.
    pub config: OciImageConfig,
    /// The platform it is for.
    pub platform: Platform,
    /// Its `org.opencontainers.image.ref.name`, if any.
    pub reference: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutFile {
    image_layout_version: String,
}

impl OciLayout {
    /// Opens the layout in `dir`: checks `oci-layout` and reads `index.json`.
    pub fn open(dir: &Path) -> Result<Self, OciError> {
        if !dir.join("oci-layout").is_file() {
            return Err(OciError::NotALayout { dir: dir.to_owned() });
        }
        Self::from_store(BlobStore::Dir(dir.to_owned()))
    }

    /// Opens the layout held by `store` (a directory or a tar).
    pub fn from_store(store: BlobStore) -> Result<Self, OciError> {
        let layout: LayoutFile = parse_json("oci-layout", &store.read_small("oci-layout")?)?;
        if layout.image_layout_version != LAYOUT_VERSION {
            return Err(OciError::LayoutVersion { found: layout.image_layout_version });
        }
        let index = parse_json("index.json", &store.read_small("index.json")?)?;
        Ok(Self { store, index })
    }

    /// The top-level index.
    pub fn index(&self) -> &ImageIndex {
        &self.index
    }

    /// Opens a blob; reading it to the end checks its size and digest ([`VerifyingReader::finish`]).
    pub fn open_blob(&self, descriptor: &Descriptor) -> Result<VerifyingReader<Box<dyn Read + Send>>, OciError> {
        let reader = self.store.open(&blob_name(&descriptor.digest))?;
        Ok(VerifyingReader::new(reader, descriptor.digest.clone(), Some(descriptor.size)))
    }

    /// Reads and parses a JSON blob, verified.
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, descriptor: &Descriptor) -> Result<T, OciError> {
        let name = blob_name(&descriptor.digest);
        if descriptor.size > MAX_JSON_BLOB_BYTES {
            return Err(OciError::TooLarge { digest: descriptor.digest.clone(), size: descriptor.size });
        }
        let mut bytes = Vec::new();
        self.open_blob(descriptor)?.read_to_end(&mut bytes).map_err(|e| blob_error(&name, e))?;
        parse_json(&name, &bytes)
    }

    /// Chooses the image for `platform`, and with the ref-name annotation `reference` when given.
    pub fn resolve(&self, platform: &Platform, reference: Option<&str>) -> Result<ResolvedImage, OciError> {
        let mut candidates = Vec::new();
        self.collect(&self.index, None, 0, &mut candidates)?;
        if let Some(reference) = reference {
            let available: Vec<String> = {
                let mut refs: Vec<String> = candidates.iter().filter_map(|(_, r)| r.clone()).collect();
                refs.sort();
                refs.dedup();
                refs
            };
            candidates.retain(|(_, r)| r.as_deref() == Some(reference));
            if candidates.is_empty() {
                return Err(OciError::NoSuchReference { reference: reference.to_owned(), available });
            }
        }
        let mut present = Vec::new();
        for (descriptor, reference) in candidates {
            let (candidate_platform, loaded) = match &descriptor.platform {
                Some(p) => (p.clone(), None),
                None => {
                    let (manifest, config) = self.load(&descriptor)?;
                    (config.platform(), Some((manifest, config)))
                }
            };
            if !candidate_platform.satisfies(platform) {
                if !present.contains(&candidate_platform) {
                    present.push(candidate_platform);
                }
                continue;
            }
            let (manifest, config) = match loaded {
                Some(loaded) => loaded,
                None => self.load(&descriptor)?,
            };
            return Ok(ResolvedImage {
                manifest_digest: descriptor.digest,
                manifest,
                config,
                platform: candidate_platform,
                reference,
            });
        }
        Err(OciError::NoMatchingPlatform { wanted: platform.clone(), present })
    }

    fn load(&self, descriptor: &Descriptor) -> Result<(ImageManifest, OciImageConfig), OciError> {
        let manifest: ImageManifest = self.read_json(descriptor)?;
        let config: OciImageConfig = self.read_json(&manifest.config)?;
        Ok((manifest, config))
    }

    /// Flattens nested indexes into (manifest descriptor, ref name) pairs, in index order.
    fn collect(
        &self,
        index: &ImageIndex,
        inherited: Option<&str>,
        depth: usize,
        out: &mut Vec<(Descriptor, Option<String>)>,
    ) -> Result<(), OciError> {
        if depth > MAX_INDEX_DEPTH {
            return Err(OciError::TooDeep);
        }
        for descriptor in &index.manifests {
            let reference =
                descriptor.annotations.get(REF_NAME_ANNOTATION).map(String::as_str).or(inherited).map(str::to_owned);
            match descriptor.media_type.as_str() {
                OCI_INDEX | DOCKER_MANIFEST_LIST => {
                    let nested: ImageIndex = self.read_json(descriptor)?;
                    self.collect(&nested, reference.as_deref(), depth + 1, out)?;
                }
                OCI_MANIFEST | DOCKER_MANIFEST | "" => out.push((descriptor.clone(), reference)),
                other => {
                    debug!(media_type = other, digest = %descriptor.digest, "skipping an index entry that is not an image")
                }
            }
        }
        Ok(())
    }
}

/// Turns a read error of a verified blob into the right error.
pub(crate) fn blob_error(name: &str, error: io::Error) -> OciError {
    match VerifyError::from_io(&error) {
        Some(verify) => OciError::Verify { name: name.to_owned(), source: verify.clone() },
        None => OciError::Io { path: PathBuf::from(name), source: error },
    }
}

/// Whether layers of `media_type` can be applied.
pub fn is_layer_media_type(media_type: &str) -> bool {
    LAYER_MEDIA_TYPES.contains(&media_type)
}

/// A legacy `docker save` archive: `manifest.json` plus config and layer files.
#[derive(Debug)]
pub struct DockerArchive {
    store: BlobStore,
    images: Vec<DockerArchiveEntry>,
}

/// The image chosen from a `docker save` archive.
#[derive(Debug, Clone)]
pub struct DockerImage {
    /// The config file's digest: Docker's image id, and the image's identity.
    pub config_digest: Digest,
    /// The image config.
    pub config: OciImageConfig,
    /// The layer files, lowest first, each with the digest its bytes must have.
    pub layers: Vec<(String, Digest)>,
    /// The `repo:tag` names.
    pub repo_tags: Vec<String>,
}

impl DockerArchive {
    /// Reads `manifest.json` from `store`.
    pub fn from_store(store: BlobStore) -> Result<Self, OciError> {
        let images: Vec<DockerArchiveEntry> = parse_json("manifest.json", &store.read_small("manifest.json")?)?;
        if images.is_empty() {
            return Err(OciError::NoImages);
        }
        Ok(Self { store, images })
    }

    /// The store the archive's files come from.
    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// Chooses an image: the one tagged `reference` when given, else the first; checks its platform.
    pub fn resolve(&self, platform: &Platform, reference: Option<&str>) -> Result<DockerImage, OciError> {
        let entry = match reference {
            None => &self.images[0],
            Some(reference) => {
                self.images.iter().find(|i| i.repo_tags.iter().flatten().any(|t| t == reference)).ok_or_else(|| {
                    OciError::NoSuchReference {
                        reference: reference.to_owned(),
                        available: self.images.iter().flat_map(|i| i.repo_tags.iter().flatten().cloned()).collect(),
                    }
                })?
            }
        };
        let bytes = self.store.read_small(&entry.config)?;
        let config_digest = Digest::of_bytes(&bytes);
        if let Some(named) = digest_in_name(&entry.config)
            && named != config_digest
        {
            return Err(OciError::Verify {
                name: entry.config.clone(),
                source: VerifyError::DigestMismatch { expected: named, actual: config_digest },
            });
        }
        let config: OciImageConfig = parse_json(&entry.config, &bytes)?;
        if !config.platform().satisfies(platform) {
            return Err(OciError::NoMatchingPlatform { wanted: platform.clone(), present: vec![config.platform()] });
        }
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(OciError::LayerCount { layers: entry.layers.len(), diff_ids: config.rootfs.diff_ids.len() });
        }
        // A layer stored as a blob is checked against its blob name; a legacy `<id>/layer.tar`
        // is an uncompressed tar, so its bytes hash to its diff id.
        let layers = entry
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(name, diff_id)| (name.clone(), digest_in_name(name).unwrap_or_else(|| diff_id.clone())))
            .collect();
        Ok(DockerImage { config_digest, config, layers, repo_tags: entry.repo_tags.clone().unwrap_or_default() })
    }
}

/// The digest a name carries: `blobs/sha256/<hex>` or `<hex>.json`.
fn digest_in_name(name: &str) -> Option<Digest> {
    let file = name.rsplit('/').next()?;
    let hex = file.strip_suffix(".json").unwrap_or(file);
    if let Some(rest) = name.strip_suffix(file)
        && (rest.ends_with("sha256/") || file.ends_with(".json"))
    {
        return Digest::from_hex(hex).ok();
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::layer::tests::{TarBuilder, gzip};
    use std::fs;

    /// Builds OCI layouts in a directory, for tests here and in `source`.
    pub(crate) struct LayoutBuilder {
        pub(crate) dir: PathBuf,
    }

    impl LayoutBuilder {
        pub(crate) fn new(dir: &Path) -> Self {
            fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
            fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
            Self { dir: dir.to_owned() }
        }

        pub(crate) fn blob(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
            let digest = Digest::of_bytes(bytes);
            fs::write(self.dir.join(blob_name(&digest)), bytes).unwrap();
            Descriptor {
                media_type: media_type.to_owned(),
                digest,
                size: bytes.len() as u64,
                platform: None,
                annotations: BTreeMap::new(),
            }
        }

        /// An image with `layers` (tar bytes, gzipped here) and a config, returns its manifest descriptor.
        pub(crate) fn image(&self, arch: &str, layers: &[Vec<u8>], container: ContainerConfig) -> Descriptor {
            let layer_descs: Vec<Descriptor> =
                layers.iter().map(|l| self.blob("application/vnd.oci.image.layer.v1.tar+gzip", &gzip(l))).collect();
            let config = OciImageConfig {
                architecture: arch.to_owned(),
                os: "linux".to_owned(),
                variant: None,
                config: Some(container),
                rootfs: RootFs {
                    kind: "layers".to_owned(),
                    diff_ids: layers.iter().map(|l| Digest::of_bytes(l)).collect(),
                },
            };
            let config = self.blob(OCI_CONFIG, &serde_json::to_vec(&config).unwrap());
            let manifest = ImageManifest {
                schema_version: 2,
                media_type: Some(OCI_MANIFEST.to_owned()),
                config,
                layers: layer_descs,
            };
            let mut d = self.blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap());
            d.platform = Some(Platform { os: "linux".to_owned(), architecture: arch.to_owned(), variant: None });
            d
        }

        pub(crate) fn index(&self, manifests: Vec<Descriptor>) {
            let index = ImageIndex { schema_version: 2, media_type: Some(OCI_INDEX.to_owned()), manifests };
            fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        }
    }

    fn amd64() -> Platform {
        "linux/amd64".parse().unwrap()
    }

    #[test]
    fn a_layout_with_only_arm64_is_refused_listing_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let b = LayoutBuilder::new(dir.path());
        let m = b.image("arm64", &[TarBuilder::new().file("a", b"a").build()], ContainerConfig::default());
        b.index(vec![m]);
        let layout = OciLayout::open(dir.path()).unwrap();
        let err = layout.resolve(&amd64(), None).unwrap_err();
        assert!(matches!(&err, OciError::NoMatchingPlatform { present, .. } if present.len() == 1), "{err:?}");
        assert_eq!(err.to_string(), "no image for linux/amd64; the image has linux/arm64");
    }

    #[test]
    fn an_index_of_two_platforms_picks_the_one_asked_for_through_a_nested_index() {
        let dir = tempfile::tempdir().unwrap();
        let b = LayoutBuilder::new(dir.path());
        let arm = b.image("arm64", &[TarBuilder::new().file("arch", b"arm64").build()], ContainerConfig::default());
        let amd = b.image("amd64", &[TarBuilder::new().file("arch", b"amd64").build()], ContainerConfig::default());
        let nested =
            ImageIndex { schema_version: 2, media_type: Some(OCI_INDEX.to_owned()), manifests: vec![arm, amd.clone()] };
        let mut nested = b.blob(OCI_INDEX, &serde_json::to_vec(&nested).unwrap());
        nested.annotations.insert(REF_NAME_ANNOTATION.to_owned(), "v1".to_owned());
        b.index(vec![nested]);
        let layout = OciLayout::open(dir.path()).unwrap();
        let image = layout.resolve(&amd64(), None).unwrap();
        assert_eq!(image.manifest_digest, amd.digest);
        assert_eq!(image.config.architecture, "amd64");
        assert_eq!(image.reference.as_deref(), Some("v1"));
        let arm = layout.resolve(&"linux/arm64/v8".parse().unwrap(), Some("v1")).unwrap();
        assert_eq!(arm.config.architecture, "arm64");
        let err = layout.resolve(&amd64(), Some("v2")).unwrap_err();
        assert!(matches!(&err, OciError::NoSuchReference { available, .. } if available == &["v1"]), "{err:?}");
    }

    #[test]
    fn a_blob_whose_digest_does_not_match_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let b = LayoutBuilder::new(dir.path());
        let m = b.image("amd64", &[], ContainerConfig::default());
        b.index(vec![m.clone()]);
        // Same size, other bytes.
        let path = dir.path().join(blob_name(&m.digest));
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 1;
        fs::write(&path, bytes).unwrap();
        let err = OciLayout::open(dir.path()).unwrap().resolve(&amd64(), None).unwrap_err();
        assert!(
            matches!(&err, OciError::Verify { source: VerifyError::DigestMismatch { expected, .. }, .. } if *expected == m.digest),
            "{err:?}"
        );
    }

    #[test]
    fn config_parsing_reads_env_cmd_entrypoint_workdir_user() {
        let json = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin","A=b"],
            "Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"WorkingDir":"/srv","User":"1000:1000","Labels":{"x":"y"}},
            "rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}}"#;
        let config: OciImageConfig = serde_json::from_str(json).unwrap();
        let c = config.config.unwrap();
        assert_eq!(c.env.unwrap(), ["PATH=/usr/bin", "A=b"]);
        assert_eq!(c.entrypoint.unwrap(), ["/bin/sh", "-c"]);
        assert_eq!(c.cmd.unwrap(), ["echo hi"]);
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(config.rootfs.diff_ids.len(), 1);
        // Nulls (as Docker writes them) are absent values.
        let config: OciImageConfig =
            serde_json::from_str(r#"{"os":"linux","config":{"Cmd":null,"Env":null}}"#).unwrap();
        assert_eq!(config.config.unwrap().cmd, None);
    }

    #[test]
    fn platforms_parse_and_match() {
        let p: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert!("linux".parse::<Platform>().is_err());
        let arm64: Platform = "linux/arm64".parse().unwrap();
        assert!(arm64.satisfies(&"linux/arm64/v8".parse().unwrap()));
        assert!(!p.satisfies(&"linux/arm/v6".parse().unwrap()));
        assert!(!amd64().satisfies(&arm64));
    }

    #[test]
    fn store_names_cannot_climb_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::Dir(dir.path().join("layout"));
        assert!(matches!(store.open("../secret"), Err(OciError::BadName { .. })));
        assert!(matches!(store.open("/etc/passwd"), Err(OciError::BadName { .. })));
    }

    #[test]
    fn digests_in_names() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(digest_in_name(&format!("blobs/sha256/{hex}")).unwrap().hex(), hex);
        assert_eq!(digest_in_name(&format!("{hex}.json")).unwrap().hex(), hex);
        assert_eq!(digest_in_name(&format!("{hex}/layer.tar")), None);
    }
}
