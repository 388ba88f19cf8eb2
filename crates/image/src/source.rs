//! What a user can name as an image — a directory, a tarball (plain, gzip, zstd), an OCI image
//! layout, a `docker save` archive — and turning it into a root directory plus its config.
//!
//! Each source has an identity digest, [`ImageConfig::identity`]:
//! - an OCI layout (or an OCI-shaped `docker save`): the chosen manifest's digest;
//! - a legacy `docker save` archive: the config file's digest (Docker's image id);
//! - a tarball: the sha256 of the file's bytes, as they are (compressed or not);
//! - a directory: the sha256 of a deterministic tar stream of it (entries sorted by name, with
//!   modes, owners, mtimes and contents), which is also what gets unpacked.
//!
//! Every layer goes through [`apply_layer`], with its digest checked. A failed [`unpack`] leaves
//! `root_dir` partly written: the caller deletes it. [`unpack_with`] also reports, per layer file
//! (a tarball, a layer blob), the bytes read so far ([`UnpackProgress`]); a directory reports none.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::debug;

use crate::digest::{Digest, HashingReader, VerifyError, VerifyingReader};
use crate::layer::{Compression, LayerError, LayerStats, apply_layer, detect};
use crate::oci::{BlobStore, DockerArchive, OciError, OciImageConfig, OciLayout, Platform, is_layer_media_type};

/// An image source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A directory used as the root filesystem.
    Dir(PathBuf),
    /// A tar of the root filesystem, plain, gzip or zstd.
    Tarball(PathBuf),
    /// An OCI image layout directory, with the `org.opencontainers.image.ref.name` to pick.
    OciLayout {
        /// The layout directory.
        dir: PathBuf,
        /// The ref name to pick, if any.
        reference: Option<String>,
    },
    /// A (plain tar) `docker save` archive, legacy or OCI-shaped. A compressed one must be
    /// decompressed first: it is read in place, which needs seeking.
    DockerArchive(PathBuf),
}

/// The defaults an image gives to `run` and `exec`, and what identifies it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `NAME=value` entries.
    pub env: Vec<String>,
    /// The command's fixed prefix.
    pub entrypoint: Vec<String>,
    /// The default arguments (or command, without an entrypoint).
    pub cmd: Vec<String>,
    /// The working directory.
    pub workdir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`.
    pub user: Option<String>,
    /// What identifies the source's content (see the module documentation).
    pub identity: Option<Digest>,
    /// The platform the image says it is for (images with a config only).
    pub platform: Option<Platform>,
    /// Layers applied.
    pub layers: usize,
    /// Regular files written, over all layers.
    pub files: u64,
    /// Bytes of file content written, over all layers.
    pub bytes: u64,
}

impl ImageConfig {
    fn from_oci(config: &OciImageConfig) -> Self {
        let c = config.config.clone().unwrap_or_default();
        Self {
            env: c.env.unwrap_or_default(),
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            workdir: c.working_dir.filter(|w| !w.is_empty()),
            user: c.user.filter(|u| !u.is_empty()),
            platform: Some(config.platform()),
            ..Self::default()
        }
    }

    fn add(&mut self, stats: LayerStats) {
        self.layers += 1;
        self.files += stats.files;
        self.bytes += stats.bytes;
    }
}

/// How far the unpacking of one layer file has got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackProgress {
    /// The layer: its digest (`sha256:…`), or a tarball's path.
    pub layer: String,
    /// Bytes of the layer file (compressed, as stored) read so far.
    pub done: u64,
    /// The layer file's size.
    pub total: u64,
}

/// Bytes read between two progress reports of one layer, at most.
const PROGRESS_STEP: u64 = 1 << 20;

/// Counts the bytes read through it and reports them to a callback: once at 0, after each
/// [`PROGRESS_STEP`] more, and once at the end of the input (or on reaching the total).
struct ProgressReader<'a, R> {
    inner: R,
    layer: &'a str,
    total: u64,
    done: u64,
    reported: Option<u64>,
    progress: Option<&'a dyn Fn(UnpackProgress)>,
}

impl<'a, R: Read> ProgressReader<'a, R> {
    fn new(inner: R, layer: &'a str, total: u64, progress: Option<&'a dyn Fn(UnpackProgress)>) -> Self {
        let mut reader = Self { inner, layer, total, done: 0, reported: None, progress };
        reader.report();
        reader
    }

    fn report(&mut self) {
        if let Some(progress) = self.progress
            && self.reported != Some(self.done)
        {
            progress(UnpackProgress { layer: self.layer.to_owned(), done: self.done, total: self.total });
            self.reported = Some(self.done);
        }
    }

    /// Reads to the end (what a tar reader or decompressor left, checked by the inner reader) and
    /// returns the inner reader.
    fn finish(mut self) -> io::Result<R> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.inner)
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        let last = self.reported.unwrap_or(0);
        if (n == 0 && !buf.is_empty()) || self.done == self.total || self.done - last >= PROGRESS_STEP {
            self.report();
        }
        Ok(n)
    }
}

/// Why an image could not be unpacked.
#[derive(Debug, Error)]
pub enum SourceError {
    /// A file of the source could not be read.
    #[error("reading {path:?}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The path is neither a directory nor a tar.
    #[error("{path:?} is not an image: not a directory, an OCI layout, or a tar")]
    NotAnImage {
        /// The path.
        path: PathBuf,
        /// Why the tar reader refused it.
        #[source]
        source: io::Error,
    },
    /// The layout or archive is wrong.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// A layer of a media type we do not apply (an encrypted layer, an artifact).
    #[error("layer {digest} has the unsupported media type {media_type:?}")]
    UnsupportedLayer {
        /// The layer.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// A layer's bytes are not what the image says.
    #[error("layer {layer} is corrupt")]
    LayerDigest {
        /// The layer's name or digest.
        layer: String,
        /// The mismatch.
        #[source]
        source: VerifyError,
    },
    /// A layer could not be applied.
    #[error("applying layer {layer}")]
    Layer {
        /// The layer's name or digest.
        layer: String,
        /// The failure.
        #[source]
        source: LayerError,
    },
    /// Building the tar stream of a directory source failed.
    #[error("reading the directory {dir:?}")]
    DirWalk {
        /// The directory.
        dir: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

impl Source {
    /// Decides what `path` is: a directory with `oci-layout` is an OCI layout, another directory
    /// a root filesystem; a gzip or zstd file is a tarball; a plain tar with `manifest.json`, or
    /// with `index.json` and `oci-layout`, is a `docker save` archive; another tar a tarball.
    pub fn detect(path: &Path) -> Result<Self, SourceError> {
        let io_err = |source| SourceError::Io { path: path.to_owned(), source };
        let meta = fs::metadata(path).map_err(io_err)?;
        if meta.is_dir() {
            return Ok(if path.join("oci-layout").is_file() {
                Self::OciLayout { dir: path.to_owned(), reference: None }
            } else {
                Self::Dir(path.to_owned())
            });
        }
        let mut head = Vec::with_capacity(4);
        File::open(path).map_err(io_err)?.take(4).read_to_end(&mut head).map_err(io_err)?;
        if detect(&head) != Compression::None {
            return Ok(Self::Tarball(path.to_owned()));
        }
        let store = match BlobStore::open_tar(path) {
            Ok(store) => store,
            Err(OciError::Io { source, .. }) => return Err(SourceError::NotAnImage { path: path.to_owned(), source }),
            Err(other) => return Err(other.into()),
        };
        if store.contains("manifest.json") || (store.contains("index.json") && store.contains("oci-layout")) {
            Ok(Self::DockerArchive(path.to_owned()))
        } else {
            Ok(Self::Tarball(path.to_owned()))
        }
    }
}

/// Unpacks `source` into `root_dir` (an existing, empty directory) for `platform`, and returns
/// the image's config. On error `root_dir` is left partly written: the caller deletes it.
pub fn unpack(source: &Source, root_dir: &Path, platform: &Platform) -> Result<ImageConfig, SourceError> {
    unpack_with(source, root_dir, platform, None)
}

/// [`unpack`], reporting to `progress` the bytes read of each layer file as it is applied: at 0,
/// about every MiB, and at its end (where `done` is `total`). A directory source reports nothing.
pub fn unpack_with(
    source: &Source,
    root_dir: &Path,
    platform: &Platform,
    progress: Option<&dyn Fn(UnpackProgress)>,
) -> Result<ImageConfig, SourceError> {
    match source {
        Source::Dir(dir) => unpack_dir(dir, root_dir),
        Source::Tarball(path) => {
            let io_err = |source| SourceError::Io { path: path.clone(), source };
            let file = File::open(path).map_err(io_err)?;
            let total = file.metadata().map_err(io_err)?.len();
            let layer = path.display().to_string();
            let mut reader = ProgressReader::new(HashingReader::new(file), &layer, total, progress);
            let stats = apply_layer(root_dir, &mut reader, Compression::Detect)
                .map_err(|source| SourceError::Layer { layer: layer.clone(), source })?;
            let (digest, _) = reader.finish().and_then(HashingReader::finish).map_err(io_err)?;
            let mut config = ImageConfig { identity: Some(digest), ..ImageConfig::default() };
            config.add(stats);
            Ok(config)
        }
        Source::OciLayout { dir, reference } => {
            unpack_layout(&OciLayout::open(dir)?, reference.as_deref(), root_dir, platform, progress)
        }
        Source::DockerArchive(path) => {
            let store = BlobStore::open_tar(path)?;
            if store.contains("oci-layout") && store.contains("index.json") {
                return unpack_layout(&OciLayout::from_store(store)?, None, root_dir, platform, progress);
            }
            let archive = DockerArchive::from_store(store)?;
            let image = archive.resolve(platform, None)?;
            let mut config = ImageConfig::from_oci(&image.config);
            config.identity = Some(image.config_digest.clone());
            for (name, digest) in &image.layers {
                let (file, size) = archive.store().open_sized(name)?;
                let reader = VerifyingReader::new(file, digest.clone(), None);
                let shown = digest.to_string();
                config.add(apply_verified(root_dir, reader, name, ProgressReport { layer: &shown, size, progress })?);
            }
            Ok(config)
        }
    }
}

fn unpack_layout(
    layout: &OciLayout,
    reference: Option<&str>,
    root_dir: &Path,
    platform: &Platform,
    progress: Option<&dyn Fn(UnpackProgress)>,
) -> Result<ImageConfig, SourceError> {
    let image = layout.resolve(platform, reference)?;
    debug!(manifest = %image.manifest_digest, platform = %image.platform, "unpacking an OCI image");
    for layer in &image.manifest.layers {
        if !is_layer_media_type(&layer.media_type) {
            return Err(SourceError::UnsupportedLayer {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            });
        }
    }
    let mut config = ImageConfig::from_oci(&image.config);
    config.identity = Some(image.manifest_digest.clone());
    for layer in &image.manifest.layers {
        let name = layer.digest.to_string();
        let report = ProgressReport { layer: &name, size: layer.size, progress };
        config.add(apply_verified(root_dir, layout.open_blob(layer)?, &name, report)?);
    }
    Ok(config)
}

/// What to report a layer's progress as.
struct ProgressReport<'a> {
    /// The layer's name in the reports.
    layer: &'a str,
    /// Its file's size.
    size: u64,
    progress: Option<&'a dyn Fn(UnpackProgress)>,
}

/// Applies a layer through its verifying reader, then drains and verifies what is left.
fn apply_verified<R: Read>(
    root_dir: &Path,
    reader: VerifyingReader<R>,
    layer: &str,
    report: ProgressReport<'_>,
) -> Result<LayerStats, SourceError> {
    let mut reader = ProgressReader::new(reader, report.layer, report.size, report.progress);
    let stats = apply_layer(root_dir, &mut reader, Compression::Detect).map_err(|source| match source {
        LayerError::Read(error) => read_error(layer, error),
        source => SourceError::Layer { layer: layer.to_owned(), source },
    })?;
    reader.finish().and_then(VerifyingReader::finish).map_err(|error| read_error(layer, error))?;
    Ok(stats)
}

/// A read error of a verified layer: a digest or size mismatch, or a plain read failure.
fn read_error(layer: &str, error: io::Error) -> SourceError {
    match VerifyError::from_io(&error) {
        Some(verify) => SourceError::LayerDigest { layer: layer.to_owned(), source: verify.clone() },
        None => SourceError::Layer { layer: layer.to_owned(), source: LayerError::Read(error) },
    }
}

/// Unpacks a directory by streaming a deterministic tar of it through [`apply_layer`]; the
/// stream's digest is the identity.
fn unpack_dir(dir: &Path, root_dir: &Path) -> Result<ImageConfig, SourceError> {
    let (reader, writer) = io::pipe().map_err(|source| SourceError::DirWalk { dir: dir.to_owned(), source })?;
    let src = dir.to_owned();
    let producer = std::thread::spawn(move || -> io::Result<Digest> {
        let mut hashing = HashingWriter::new(writer);
        let mut builder = tar::Builder::new(&mut hashing);
        builder.follow_symlinks(false);
        write_tree(&mut builder, &src, Path::new(""))?;
        builder.finish()?;
        drop(builder);
        Ok(hashing.digest())
    });
    let applied = apply_layer(root_dir, reader, Compression::None);
    let produced = producer.join().unwrap_or_else(|_| Err(io::Error::other("the directory walker panicked")));
    // The walker's error is the cause when both fail (the applier then saw a broken stream).
    let digest = produced.map_err(|source| SourceError::DirWalk { dir: dir.to_owned(), source })?;
    let stats = applied.map_err(|source| SourceError::Layer { layer: dir.display().to_string(), source })?;
    let mut config = ImageConfig { identity: Some(digest), ..ImageConfig::default() };
    config.add(stats);
    Ok(config)
}

fn write_tree<W: Write>(builder: &mut tar::Builder<W>, base: &Path, rel: &Path) -> io::Result<()> {
    let mut names: Vec<_> =
        fs::read_dir(base.join(rel))?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let child = rel.join(&name);
        let full = base.join(&child);
        builder.append_path_with_name(&full, &child)?;
        if fs::symlink_metadata(&full)?.is_dir() {
            write_tree(builder, base, &child)?;
        }
    }
    Ok(())
}

struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        use sha2::Digest as _;
        Self { inner, hasher: sha2::Sha256::new() }
    }

    fn digest(self) -> Digest {
        use sha2::Digest as _;
        Digest::from_hex(&hex::encode(self.hasher.finalize())).expect("sha256 output is 64 hex digits")
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tests::{TarBuilder, gzip};
    use crate::oci::tests::LayoutBuilder;
    use crate::oci::{ContainerConfig, RootFs, blob_name};

    fn amd64() -> Platform {
        "linux/amd64".parse().unwrap()
    }

    fn docker_save(layers: &[Vec<u8>], arch: &str) -> Vec<u8> {
        let config = OciImageConfig {
            architecture: arch.to_owned(),
            os: "linux".to_owned(),
            variant: None,
            config: Some(ContainerConfig {
                cmd: Some(vec!["/bin/sh".to_owned()]),
                working_dir: Some("/home".to_owned()),
                ..ContainerConfig::default()
            }),
            rootfs: RootFs {
                kind: "layers".to_owned(),
                diff_ids: layers.iter().map(|l| Digest::of_bytes(l)).collect(),
            },
        };
        let config = serde_json::to_vec(&config).unwrap();
        let config_name = format!("{}.json", Digest::of_bytes(&config).hex());
        let layer_names: Vec<String> = (0..layers.len()).map(|i| format!("layer{i}/layer.tar")).collect();
        let manifest = serde_json::json!([{"Config": config_name, "RepoTags": ["t:latest"], "Layers": layer_names}]);
        let mut b =
            TarBuilder::new().file("manifest.json", manifest.to_string().as_bytes()).file(&config_name, &config);
        for (name, layer) in layer_names.iter().zip(layers) {
            b = b.dir(name.split('/').next().unwrap()).file(name, layer);
        }
        b.build()
    }

    #[test]
    fn a_docker_save_archive_with_two_layers_unpacks_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let l1 = TarBuilder::new().dir("etc/").file("etc/a", b"one").file("etc/b", b"one").build();
        let l2 = TarBuilder::new().file("etc/a", b"two").file("etc/.wh.b", b"").build();
        let archive = dir.path().join("image.tar");
        fs::write(&archive, docker_save(&[l1, l2], "amd64")).unwrap();
        let source = Source::detect(&archive).unwrap();
        assert_eq!(source, Source::DockerArchive(archive.clone()));
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let config = unpack(&source, &root, &amd64()).unwrap();
        assert_eq!(fs::read_to_string(root.join("etc/a")).unwrap(), "two");
        assert!(!root.join("etc/b").exists());
        assert_eq!(config.layers, 2);
        assert_eq!(config.cmd, ["/bin/sh"]);
        assert_eq!(config.workdir.as_deref(), Some("/home"));

        // A corrupted layer is caught by its diff id.
        let l1 = TarBuilder::new().file("a", b"one").build();
        let mut bytes = docker_save(&[l1], "amd64");
        let pos = bytes.windows(3).rposition(|w| w == b"one").unwrap();
        bytes[pos] = b'X';
        fs::write(&archive, bytes).unwrap();
        let root = dir.path().join("root2");
        fs::create_dir(&root).unwrap();
        let err = unpack(&Source::DockerArchive(archive), &root, &amd64()).unwrap_err();
        assert!(matches!(err, SourceError::LayerDigest { source: VerifyError::DigestMismatch { .. }, .. }), "{err:?}");
    }

    #[test]
    fn a_docker_save_archive_for_another_platform_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("image.tar");
        fs::write(&archive, docker_save(&[TarBuilder::new().file("a", b"a").build()], "arm64")).unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let err = unpack(&Source::DockerArchive(archive), &root, &amd64()).unwrap_err();
        assert!(err.to_string().contains("linux/arm64"), "{err}");
    }

    #[test]
    fn an_oci_layout_unpacks_with_config_and_manifest_identity_and_inside_a_tar_too() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let b = LayoutBuilder::new(&layout);
        let container = ContainerConfig {
            env: Some(vec!["PATH=/bin".to_owned()]),
            entrypoint: Some(vec!["/entry".to_owned()]),
            cmd: Some(vec!["arg".to_owned()]),
            working_dir: Some("/w".to_owned()),
            user: Some("1000".to_owned()),
        };
        let m = b.image(
            "amd64",
            &[
                TarBuilder::new().dir("d/").file("d/old", b"x").build(),
                TarBuilder::new().file("d/.wh..wh..opq", b"").file("d/new", b"y").build(),
            ],
            container,
        );
        b.index(vec![m.clone()]);
        let source = Source::detect(&layout).unwrap();
        assert_eq!(source, Source::OciLayout { dir: layout.clone(), reference: None });
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let config = unpack(&source, &root, &amd64()).unwrap();
        assert_eq!(config.identity.as_ref(), Some(&m.digest));
        assert_eq!(config.env, ["PATH=/bin"]);
        assert_eq!(config.entrypoint, ["/entry"]);
        assert_eq!(config.cmd, ["arg"]);
        assert_eq!(config.workdir.as_deref(), Some("/w"));
        assert_eq!(config.user.as_deref(), Some("1000"));
        assert!(!root.join("d/old").exists());
        assert!(root.join("d/new").exists());

        // The same layout in a tar (a newer `docker save`).
        let mut tb = tar::Builder::new(Vec::new());
        tb.append_dir_all(".", &layout).unwrap();
        let archive = dir.path().join("oci.tar");
        fs::write(&archive, tb.into_inner().unwrap()).unwrap();
        let source = Source::detect(&archive).unwrap();
        assert_eq!(source, Source::DockerArchive(archive));
        let root = dir.path().join("root2");
        fs::create_dir(&root).unwrap();
        assert_eq!(unpack(&source, &root, &amd64()).unwrap().identity.as_ref(), Some(&m.digest));
        assert!(root.join("d/new").exists());
    }

    #[test]
    fn an_oci_layer_whose_digest_does_not_match_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let b = LayoutBuilder::new(&layout);
        let m = b.image("amd64", &[TarBuilder::new().file("f", b"content").build()], ContainerConfig::default());
        b.index(vec![m.clone()]);
        let manifest: crate::oci::ImageManifest =
            serde_json::from_slice(&fs::read(layout.join(blob_name(&m.digest))).unwrap()).unwrap();
        let layer = &manifest.layers[0];
        // Same size, still a valid gzip (its header's mtime changed): only the digest can tell.
        let path = layout.join(blob_name(&layer.digest));
        let mut bytes = fs::read(&path).unwrap();
        bytes[4] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let err = unpack(&Source::OciLayout { dir: layout, reference: None }, &root, &amd64()).unwrap_err();
        assert!(
            matches!(&err, SourceError::LayerDigest { source: VerifyError::DigestMismatch { expected, .. }, .. }
                if *expected == layer.digest),
            "{err:?}"
        );
    }

    #[test]
    fn tarballs_are_detected_and_identified_by_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = gzip(&TarBuilder::new().file("bin/sh", b"#!").build());
        let path = dir.path().join("root.tar.gz");
        fs::write(&path, &tgz).unwrap();
        let source = Source::detect(&path).unwrap();
        assert_eq!(source, Source::Tarball(path.clone()));
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let config = unpack(&source, &root, &amd64()).unwrap();
        assert_eq!(config.identity, Some(Digest::of_bytes(&tgz)));
        assert_eq!(fs::read(root.join("bin/sh")).unwrap(), b"#!");

        let plain = dir.path().join("root.tar");
        fs::write(&plain, TarBuilder::new().file("x", b"1").build()).unwrap();
        assert_eq!(Source::detect(&plain).unwrap(), Source::Tarball(plain));

        let junk = dir.path().join("junk");
        fs::write(&junk, vec![b'z'; 1024]).unwrap();
        assert!(matches!(Source::detect(&junk), Err(SourceError::NotAnImage { .. })));
    }

    /// `len` bytes gzip cannot shrink (xorshift), so a layer's file is that big.
    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Unpacks `source` collecting its progress reports, grouped per layer in the order they
    /// came; checks each layer's reports start at 0, rise, end at its total, and are throttled.
    fn unpack_reporting(source: &Source, root: &Path) -> Vec<(String, Vec<u64>, u64)> {
        let reports = std::cell::RefCell::new(Vec::<UnpackProgress>::new());
        let record = |p: UnpackProgress| reports.borrow_mut().push(p);
        unpack_with(source, root, &amd64(), Some(&record)).unwrap();
        let mut layers: Vec<(String, Vec<u64>, u64)> = Vec::new();
        for p in reports.into_inner() {
            match layers.last_mut() {
                Some((layer, done, total)) if *layer == p.layer => {
                    assert_eq!(*total, p.total, "{layer}'s total changed");
                    done.push(p.done);
                }
                _ => {
                    assert!(layers.iter().all(|(l, _, _)| *l != p.layer), "{} reported again later", p.layer);
                    layers.push((p.layer, vec![p.done], p.total));
                }
            }
        }
        for (layer, done, total) in &layers {
            assert_eq!(done.first(), Some(&0), "{layer}: {done:?}");
            assert_eq!(done.last(), Some(total), "{layer}: {done:?}");
            assert!(done.windows(2).all(|w| w[0] < w[1]), "{layer} not rising: {done:?}");
            assert!(done.len() as u64 <= total / PROGRESS_STEP + 2, "{layer} not throttled: {done:?}");
        }
        layers
    }

    #[test]
    fn unpacking_an_oci_layout_reports_each_layers_bytes_up_to_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let b = LayoutBuilder::new(&layout);
        let big = noise(3 << 20);
        let m = b.image(
            "amd64",
            &[TarBuilder::new().file("big", &big).build(), TarBuilder::new().file("small", b"s").build()],
            ContainerConfig::default(),
        );
        b.index(vec![m.clone()]);
        let manifest: crate::oci::ImageManifest =
            serde_json::from_slice(&fs::read(layout.join(blob_name(&m.digest))).unwrap()).unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let layers = unpack_reporting(&Source::OciLayout { dir: layout, reference: None }, &root);
        let expected: Vec<(String, u64)> = manifest.layers.iter().map(|l| (l.digest.to_string(), l.size)).collect();
        let got: Vec<(String, u64)> = layers.iter().map(|(l, _, total)| (l.clone(), *total)).collect();
        assert_eq!(got, expected);
        assert!(layers[0].2 > 3 << 20, "the big layer is {} bytes", layers[0].2);
        assert!(layers[0].1.len() >= 4, "no reports on the way: {:?}", layers[0].1);
        assert_eq!(fs::read(root.join("big")).unwrap(), big);
        assert_eq!(layers[1].1, [0, layers[1].2]);

        // Without a callback, the same unpack works (and reports nothing, having nowhere to).
        let root = dir.path().join("root2");
        fs::create_dir(&root).unwrap();
        let layout = dir.path().join("layout");
        assert_eq!(unpack(&Source::OciLayout { dir: layout, reference: None }, &root, &amd64()).unwrap().layers, 2);
    }

    #[test]
    fn unpacking_a_tarball_or_docker_archive_reports_its_file_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = gzip(&TarBuilder::new().file("big", &noise(2 << 20)).build());
        let path = dir.path().join("root.tar.gz");
        fs::write(&path, &tgz).unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let layers = unpack_reporting(&Source::Tarball(path.clone()), &root);
        assert_eq!(layers.len(), 1);
        assert_eq!((layers[0].0.as_str(), layers[0].2), (path.to_str().unwrap(), tgz.len() as u64));
        assert!(layers[0].1.len() >= 3, "{:?}", layers[0].1);

        let l1 = TarBuilder::new().file("a", &noise(1 << 20)).build();
        let l2 = TarBuilder::new().file("b", b"b").build();
        let sizes = [l1.len() as u64, l2.len() as u64];
        let digests = [Digest::of_bytes(&l1).to_string(), Digest::of_bytes(&l2).to_string()];
        let archive = dir.path().join("image.tar");
        fs::write(&archive, docker_save(&[l1, l2], "amd64")).unwrap();
        let root = dir.path().join("root2");
        fs::create_dir(&root).unwrap();
        let layers = unpack_reporting(&Source::DockerArchive(archive), &root);
        let got: Vec<(&str, u64)> = layers.iter().map(|(l, _, total)| (l.as_str(), *total)).collect();
        assert_eq!(got, [(digests[0].as_str(), sizes[0]), (digests[1].as_str(), sizes[1])]);

        // A directory has no layer file: nothing to report.
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), b"f").unwrap();
        let root = dir.path().join("root3");
        fs::create_dir(&root).unwrap();
        assert!(unpack_reporting(&Source::Dir(src), &root).is_empty());
    }

    #[test]
    fn directories_copy_and_hash_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("etc")).unwrap();
        fs::write(src.join("etc/hostname"), b"box").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", src.join("link")).unwrap();
        assert_eq!(Source::detect(&src).unwrap(), Source::Dir(src.clone()));
        let unpack_new = |name: &str| {
            let root = dir.path().join(name);
            fs::create_dir(&root).unwrap();
            (unpack(&Source::Dir(src.clone()), &root, &amd64()).unwrap(), root)
        };
        let (a, root) = unpack_new("a");
        let (b, _) = unpack_new("b");
        assert_eq!(a.identity, b.identity);
        assert_eq!(fs::read(root.join("etc/hostname")).unwrap(), b"box");
        assert_eq!(fs::read_link(root.join("link")).unwrap(), Path::new("/etc/hostname"));
        fs::write(src.join("etc/hostname"), b"other").unwrap();
        let (c, _) = unpack_new("c");
        assert_ne!(a.identity, c.identity);
    }
}
