//! Pulling an image from an OCI registry (`registry/repo:tag` or `registry/repo@sha256:…`) into
//! an OCI image layout on disk, so that [`crate::Source::OciLayout`] and [`crate::unpack`] do the
//! rest.
//!
//! The wire work (the distribution API, token and basic auth, TLS) is `oci-client`'s; what we own
//! is the choice of manifest for a platform (an image index or Docker manifest list is resolved
//! here, another platform only is an error listing what is there), the size limit checked before
//! any layer is fetched, the check of every blob's digest and size against what named it, the
//! progress reports, and errors that say in one line what went wrong (401, 404, no such
//! platform, too large, corrupt, network).
//!
//! TLS goes through rustls with the `ring` provider (no aws-lc). Registries named in
//! [`PullOptions::insecure_registries`] are spoken to over plain HTTP.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use crate::digest::{Digest, VerifyError};
use crate::oci::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Descriptor, ImageIndex, ImageManifest, LAYOUT_VERSION, MAX_JSON_BLOB_BYTES,
    OCI_INDEX, OCI_MANIFEST, OciImageConfig, Platform, REF_NAME_ANNOTATION, blob_name,
};

/// The manifest media types we ask a registry for.
const ACCEPTED_MANIFESTS: &[&str] = &[OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// How far a layer download has got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// The layer.
    pub layer: Digest,
    /// Bytes received so far.
    pub done: u64,
    /// The layer's size.
    pub total: u64,
}

/// A progress callback.
pub type ProgressFn = Box<dyn Fn(PullProgress) + Send + Sync>;

/// How to pull.
#[derive(Default)]
pub struct PullOptions {
    /// Registries (`host:port`, as written in references) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Basic credentials (user, password); anonymous when `None`.
    pub auth: Option<(String, String)>,
    /// Refuse an image whose layers add up to more bytes than this, before downloading any.
    pub max_bytes: Option<u64>,
    /// Called as layer bytes arrive: once at 0 and at least once at the layer's total.
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullOptions")
            .field("insecure_registries", &self.insecure_registries)
            .field("auth", &self.auth.as_ref().map(|(user, _)| (user, "<password>")))
            .field("max_bytes", &self.max_bytes)
            .field("progress", &self.progress.as_ref().map(|_| "<callback>"))
            .finish()
    }
}

/// Why a pull failed. Each message is one line naming what was asked for.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// A reference that does not parse.
    #[error("bad image reference {reference:?}: {reason}")]
    BadReference {
        /// The text given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry answered 401 (or its token service refused).
    #[error("registry {registry} refused access to {repository} (401 unauthorized): {}",
        if *.with_credentials { "the credentials given were refused" } else { "credentials are needed" })]
    Unauthorized {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// Whether credentials were sent.
        with_credentials: bool,
    },
    /// The registry answered 404.
    #[error("{what} not found on registry {registry} (404)")]
    NotFound {
        /// The registry.
        registry: String,
        /// `repo:tag`, `repo@digest` or the blob.
        what: String,
    },
    /// No manifest for the platform asked for.
    #[error("{reference} has no image for {wanted}; it has {}", list(.present))]
    Platform {
        /// The reference pulled.
        reference: String,
        /// The platform asked for.
        wanted: Platform,
        /// The platforms present.
        present: Vec<Platform>,
    },
    /// The layers add up to more than the limit.
    #[error("{reference} is {size} bytes (compressed layers), more than the limit of {limit} bytes")]
    TooLarge {
        /// The reference pulled.
        reference: String,
        /// The layers' total size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A manifest or blob whose bytes are not what named it.
    #[error("{blob} from the registry is corrupt: {detail}")]
    DigestMismatch {
        /// The manifest or blob.
        blob: String,
        /// The mismatch.
        detail: String,
    },
    /// A manifest or config that we cannot use.
    #[error("{reference}: {reason}")]
    BadManifest {
        /// The reference pulled.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// Talking to the registry failed (connection, TLS, a 5xx, a protocol error).
    #[error("pulling {reference} from {registry}: {cause}")]
    Network {
        /// The registry.
        registry: String,
        /// The reference pulled.
        reference: String,
        /// The failure and its causes, joined.
        cause: String,
    },
    /// Writing the layout failed.
    #[error("writing {path:?}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// An error and its sources on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// One pull: the client and what errors need to name.
struct Puller<'a> {
    client: Client,
    auth: RegistryAuth,
    reference: Reference,
    text: String,
    opts: &'a PullOptions,
}

impl Puller<'_> {
    fn registry(&self) -> String {
        self.reference.resolve_registry().to_owned()
    }

    /// `repo:tag` or `repo@digest`, as the user will recognise it.
    fn image_name(&self) -> String {
        match (self.reference.tag(), self.reference.digest()) {
            (_, Some(digest)) => format!("{}@{digest}", self.reference.repository()),
            (Some(tag), None) => format!("{}:{tag}", self.reference.repository()),
            (None, None) => self.reference.repository().to_owned(),
        }
    }

    fn by_digest(&self, digest: &Digest) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            digest.to_string(),
        )
    }

    /// Turns a client error into ours; `what` is the thing a 404 would be about.
    fn error(&self, error: OciDistributionError, what: &str) -> RegistryError {
        let unauthorized = || RegistryError::Unauthorized {
            registry: self.registry(),
            repository: self.reference.repository().to_owned(),
            with_credentials: self.opts.auth.is_some(),
        };
        let not_found = || RegistryError::NotFound { registry: self.registry(), what: what.to_owned() };
        match &error {
            OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
                return unauthorized();
            }
            OciDistributionError::ImageManifestNotFoundError(_) => return not_found(),
            OciDistributionError::ServerError { code: 401, .. } => return unauthorized(),
            OciDistributionError::ServerError { code: 404, .. } => return not_found(),
            OciDistributionError::RegistryError { envelope, .. } => {
                if envelope.errors.iter().any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                    return unauthorized();
                }
                if envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown
                    )
                }) {
                    return not_found();
                }
            }
            OciDistributionError::DigestError(e) => {
                return RegistryError::DigestMismatch { blob: what.to_owned(), detail: e.to_string() };
            }
            _ => {}
        }
        RegistryError::Network { registry: self.registry(), reference: self.text.clone(), cause: chain(&error) }
    }

    /// Fetches a manifest (or index) by the reference given, or by digest; checks the digest.
    async fn manifest(&self, digest: Option<&Digest>) -> Result<(Vec<u8>, Digest), RegistryError> {
        let (reference, what) = match digest {
            Some(d) => (self.by_digest(d), format!("{}@{d}", self.reference.repository())),
            None => (self.reference.clone(), self.image_name()),
        };
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&reference, &self.auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| self.error(e, &what))?;
        if bytes.len() as u64 > MAX_JSON_BLOB_BYTES {
            return Err(self.bad(format!("its manifest is {} bytes, more than {MAX_JSON_BLOB_BYTES}", bytes.len())));
        }
        let actual = Digest::of_bytes(&bytes);
        let expected = digest.cloned().or_else(|| reference.digest().and_then(|d| Digest::parse(d).ok()));
        if let Some(expected) = expected
            && expected != actual
        {
            let detail = VerifyError::DigestMismatch { expected, actual }.to_string();
            return Err(RegistryError::DigestMismatch { blob: format!("manifest {what}"), detail });
        }
        Ok((bytes.to_vec(), actual))
    }

    /// Fetches a small blob (a config) whole, verified.
    async fn small_blob(&self, descriptor: &Descriptor) -> Result<Vec<u8>, RegistryError> {
        if descriptor.size > MAX_JSON_BLOB_BYTES {
            return Err(self.bad(format!(
                "config {} is {} bytes, more than the {MAX_JSON_BLOB_BYTES} a config may have",
                descriptor.digest, descriptor.size
            )));
        }
        let mut out = Vec::new();
        let what = format!("blob {}", descriptor.digest);
        self.client
            .pull_blob(&self.by_digest(&descriptor.digest), &wire_descriptor(descriptor), &mut out)
            .await
            .map_err(|e| self.error(e, &what))?;
        check(descriptor, Digest::of_bytes(&out), out.len() as u64)?;
        Ok(out)
    }

    fn bad(&self, reason: String) -> RegistryError {
        RegistryError::BadManifest { reference: self.text.clone(), reason }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> Result<T, RegistryError> {
        serde_json::from_slice(bytes).map_err(|e| self.bad(format!("parsing its {what}: {e}")))
    }

    /// Streams a layer into `path`, hashing and counting as it goes.
    async fn layer(&self, descriptor: &Descriptor, path: &Path) -> Result<(), RegistryError> {
        let io_err = |source| RegistryError::Io { path: path.to_owned(), source };
        let what = format!("blob {}", descriptor.digest);
        let report = |done| {
            if let Some(progress) = &self.opts.progress {
                progress(PullProgress { layer: descriptor.digest.clone(), done, total: descriptor.size });
            }
        };
        report(0);
        let mut stream = self
            .client
            .pull_blob_stream(&self.by_digest(&descriptor.digest), &wire_descriptor(descriptor))
            .await
            .map_err(|e| self.error(e, &what))?;
        let mut file = tokio::fs::File::create(path).await.map_err(io_err)?;
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                if let Some(digest_error) =
                    e.get_ref().and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
                {
                    return RegistryError::DigestMismatch { blob: what.clone(), detail: digest_error.to_string() };
                }
                RegistryError::Network { registry: self.registry(), reference: self.text.clone(), cause: chain(&e) }
            })?;
            done += chunk.len() as u64;
            if done > descriptor.size {
                let detail = VerifyError::SizeMismatch {
                    digest: descriptor.digest.clone(),
                    expected: descriptor.size,
                    actual: done,
                };
                return Err(RegistryError::DigestMismatch { blob: what, detail: detail.to_string() });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io_err)?;
            report(done);
        }
        file.flush().await.map_err(io_err)?;
        file.sync_all().await.map_err(io_err)?;
        let actual = Digest::from_hex(&hex::encode(hasher.finalize())).expect("sha256 is 64 hex digits");
        check(descriptor, actual, done)
    }
}

/// Checks a blob's digest and size against its descriptor.
fn check(descriptor: &Descriptor, actual: Digest, size: u64) -> Result<(), RegistryError> {
    let blob = format!("blob {}", descriptor.digest);
    if size != descriptor.size {
        let detail =
            VerifyError::SizeMismatch { digest: descriptor.digest.clone(), expected: descriptor.size, actual: size };
        return Err(RegistryError::DigestMismatch { blob, detail: detail.to_string() });
    }
    if actual != descriptor.digest {
        let detail = VerifyError::DigestMismatch { expected: descriptor.digest.clone(), actual };
        return Err(RegistryError::DigestMismatch { blob, detail: detail.to_string() });
    }
    Ok(())
}

fn wire_descriptor(descriptor: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: descriptor.media_type.clone(),
        digest: descriptor.digest.to_string(),
        size: i64::try_from(descriptor.size).unwrap_or(i64::MAX),
        ..OciDescriptor::default()
    }
}

/// The media type a manifest says it has, or what its shape says it is.
fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    probe.media_type.or_else(|| match (probe.manifests, probe.layers) {
        (Some(_), None) => Some(OCI_INDEX.to_owned()),
        (None, Some(_)) => Some(OCI_MANIFEST.to_owned()),
        _ => None,
    })
}

fn io_write(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    std::fs::write(path, bytes).map_err(|source| RegistryError::Io { path: path.to_owned(), source })
}

/// Installs rustls's `ring` provider as the process default, unless one is installed already.
/// [`pull_to_layout`] calls it; code that builds its own `oci_client::Client` (tests pushing
/// images) must call it first.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing one is fine: any provider will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Pulls `reference` for `platform` into an OCI image layout at `dest` (created if missing):
/// `oci-layout`, `index.json` naming the chosen manifest, and `blobs/sha256/…` holding that
/// manifest, its config and its layers, each checked against its digest and size. Returns the
/// manifest's digest.
///
/// An image index (or Docker manifest list) is resolved to the manifest for `platform`; a single
/// manifest must have a config for `platform`. With [`PullOptions::max_bytes`], an image whose
/// layers add up to more is refused before any layer is fetched.
///
/// A failed pull may leave a partial layout at `dest`: removing it is the caller's job (pull into
/// a temporary directory).
pub async fn pull_to_layout(
    reference: &str,
    platform: &Platform,
    dest: &Path,
    opts: &PullOptions,
) -> Result<Digest, RegistryError> {
    let parsed: Reference = reference.parse().map_err(|e: oci_client::ParseError| RegistryError::BadReference {
        reference: reference.to_owned(),
        reason: e.to_string(),
    })?;
    if let Some(digest) = parsed.digest() {
        Digest::parse(digest).map_err(|e| RegistryError::BadReference {
            reference: reference.to_owned(),
            reason: e.reason.to_owned(),
        })?;
    }
    install_crypto_provider();
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(opts.insecure_registries.clone()),
        platform_resolver: None,
        ..ClientConfig::default()
    });
    let auth = match &opts.auth {
        Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
        None => RegistryAuth::Anonymous,
    };
    let puller = Puller { client, auth, reference: parsed, text: reference.to_owned(), opts };

    let (top, top_digest) = puller.manifest(None).await?;
    let top_type = media_type_of(&top).unwrap_or_default();
    let (manifest_bytes, manifest_digest, manifest, config_bytes, chosen_platform) =
        if top_type == OCI_INDEX || top_type == DOCKER_MANIFEST_LIST {
            let index: ImageIndex = puller.parse("image index", &top)?;
            choose(&puller, &index, platform).await?
        } else if top_type == OCI_MANIFEST || top_type == DOCKER_MANIFEST {
            let manifest: ImageManifest = puller.parse("manifest", &top)?;
            let config_bytes = puller.small_blob(&manifest.config).await?;
            let config: OciImageConfig = puller.parse("config", &config_bytes)?;
            if !config.platform().satisfies(platform) {
                return Err(RegistryError::Platform {
                    reference: reference.to_owned(),
                    wanted: platform.clone(),
                    present: vec![config.platform()],
                });
            }
            (top, top_digest, manifest, config_bytes, config.platform())
        } else {
            return Err(puller.bad(format!("unsupported manifest media type {top_type:?}")));
        };

    let total: u64 = manifest.layers.iter().map(|l| l.size).sum();
    if let Some(limit) = opts.max_bytes
        && total > limit
    {
        return Err(RegistryError::TooLarge { reference: reference.to_owned(), size: total, limit });
    }

    let blobs = dest.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|source| RegistryError::Io { path: blobs.clone(), source })?;
    io_write(&dest.join(blob_name(&manifest_digest)), &manifest_bytes)?;
    io_write(&dest.join(blob_name(&manifest.config.digest)), &config_bytes)?;
    for layer in &manifest.layers {
        let path = dest.join(blob_name(&layer.digest));
        if path.exists() {
            continue; // the same layer twice in one image
        }
        debug!(layer = %layer.digest, size = layer.size, "pulling layer");
        puller.layer(layer, &path).await?;
    }

    let mut annotations = std::collections::BTreeMap::new();
    if let Some(tag) = puller.reference.tag() {
        annotations.insert(REF_NAME_ANNOTATION.to_owned(), tag.to_owned());
    }
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(OCI_INDEX.to_owned()),
        manifests: vec![Descriptor {
            media_type: manifest.media_type.clone().unwrap_or_else(|| {
                if top_type == DOCKER_MANIFEST { DOCKER_MANIFEST.to_owned() } else { OCI_MANIFEST.to_owned() }
            }),
            digest: manifest_digest.clone(),
            size: manifest_bytes.len() as u64,
            platform: Some(chosen_platform),
            annotations,
        }],
    };
    let index_json = serde_json::to_vec_pretty(&index).expect("an index serializes");
    io_write(&dest.join("index.json"), &index_json)?;
    io_write(&dest.join("oci-layout"), format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}").as_bytes())?;
    Ok(manifest_digest)
}

type Chosen = (Vec<u8>, Digest, ImageManifest, Vec<u8>, Platform);

/// Picks the manifest for `platform` out of an index (entries without a platform are judged by
/// their config); nested indexes are not followed.
async fn choose(puller: &Puller<'_>, index: &ImageIndex, platform: &Platform) -> Result<Chosen, RegistryError> {
    let mut present = Vec::new();
    for entry in &index.manifests {
        if entry.media_type == OCI_INDEX || entry.media_type == DOCKER_MANIFEST_LIST {
            continue;
        }
        if let Some(p) = &entry.platform
            && !p.satisfies(platform)
        {
            if !present.contains(p) {
                present.push(p.clone());
            }
            continue;
        }
        let (bytes, digest) = puller.manifest(Some(&entry.digest)).await?;
        let manifest: ImageManifest = puller.parse("manifest", &bytes)?;
        let config_bytes = puller.small_blob(&manifest.config).await?;
        let config: OciImageConfig = puller.parse("config", &config_bytes)?;
        if entry.platform.is_none() && !config.platform().satisfies(platform) {
            if !present.contains(&config.platform()) {
                present.push(config.platform());
            }
            continue;
        }
        let chosen = entry.platform.clone().unwrap_or_else(|| config.platform());
        return Ok((bytes, digest, manifest, config_bytes, chosen));
    }
    Err(RegistryError::Platform { reference: puller.text.clone(), wanted: platform.clone(), present })
}
