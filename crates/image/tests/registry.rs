//! Registry pulls against a real OCI distribution server: Debian's `docker-registry` (the CNCF
//! distribution registry), started per test on a loopback port with its storage in a temporary
//! directory, fed with images these tests build and push themselves through `oci-client`.
//!
//! Each test prints `skipped: …` and passes when `docker-registry` is not installed
//! (`scripts/install-deps.sh` installs it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nestbox_image::oci::{
    Descriptor, ImageIndex, ImageManifest, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, Platform, REF_NAME_ANNOTATION,
};
use nestbox_image::{Digest, PullOptions, PullProgress, RegistryError, Source, pull_to_layout, unpack};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const USER: &str = "nestbox";
const PASSWORD: &str = "secret";
/// bcrypt (cost 4) of [`PASSWORD`], made once with Python's `crypt.crypt("secret",
/// crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))`: the registry's htpasswd backend wants bcrypt.
const PASSWORD_BCRYPT: &str = "$2b$04$/szBaZyVRYt2OaRrE1pNkO49VUH.7UrEYhgIy4l5DjdGTiOZhVbyG";

/// A registry for one test, with the calls these tests make on it.
struct Registry(nestbox_testkit::registry::Registry);

impl Registry {
    /// Starts a registry, with htpasswd auth for [`USER`]/[`PASSWORD`] when `auth`; `None` (after
    /// printing why) when the binary is not installed.
    fn start(test: &str, auth: bool) -> Option<Self> {
        let htpasswd = format!("{USER}:{PASSWORD_BCRYPT}");
        let started = nestbox_testkit::registry::Registry::start(auth.then_some(htpasswd.as_str()));
        if started.is_none() {
            println!("skipped: {test}: docker-registry is not installed (apt-get install docker-registry)");
        }
        started.map(Self)
    }

    fn host(&self) -> String {
        self.0.host().to_owned()
    }

    fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.host())
    }

    fn options(&self) -> PullOptions {
        PullOptions { insecure_registries: vec![self.host()], ..PullOptions::default() }
    }

    fn client(&self) -> Client {
        nestbox_image::registry::install_crypto_provider();
        Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(vec![self.host()]),
            ..ClientConfig::default()
        })
    }
}

/// A gzip tar layer holding `files`; returns (compressed bytes, diff id).
fn layer(files: &[(&str, &str)]) -> (Vec<u8>, Digest) {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, contents.as_bytes()).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let diff_id = Digest::of_bytes(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: Digest::of_bytes(bytes),
        size: bytes.len() as u64,
        platform: None,
        annotations: Default::default(),
    }
}

/// A pushed image: its manifest (digest and size) and its layers' descriptors.
struct Pushed {
    manifest: Descriptor,
    layers: Vec<Descriptor>,
}

/// Pushes an image for linux/`arch` with `layers` (lowest first) to `repo`, tagged `tag` when
/// given (else only by digest).
async fn push_image(
    registry: &Registry,
    repo: &str,
    tag: Option<&str>,
    arch: &str,
    layers: &[&[(&str, &str)]],
    auth: &RegistryAuth,
) -> Pushed {
    let client = registry.client();
    let (built, diff_ids): (Vec<Vec<u8>>, Vec<Digest>) = layers.iter().map(|files| layer(files)).unzip();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["GREETING=hello"], "Cmd": ["/bin/sh"], "WorkingDir": "/srv"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let by_repo = Reference::with_tag(registry.host(), repo.to_owned(), "x".to_owned());
    client.store_auth_if_needed(&registry.host(), auth).await;
    client.auth(&by_repo, auth, oci_client::RegistryOperation::Push).await.unwrap();
    let config_desc = descriptor(OCI_CONFIG, &config);
    client.push_blob(&by_repo, config.clone(), &config_desc.digest.to_string()).await.unwrap();
    let mut layer_descs = Vec::new();
    for bytes in &built {
        let desc = descriptor(LAYER_GZIP, bytes);
        client.push_blob(&by_repo, bytes.clone(), &desc.digest.to_string()).await.unwrap();
        layer_descs.push(desc);
    }
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_owned()),
        config: config_desc,
        layers: layer_descs.clone(),
    };
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_desc = descriptor(OCI_MANIFEST, &manifest);
    let target = match tag {
        Some(tag) => Reference::with_tag(registry.host(), repo.to_owned(), tag.to_owned()),
        None => Reference::with_digest(registry.host(), repo.to_owned(), manifest_desc.digest.to_string()),
    };
    client.push_manifest_raw(&target, manifest, http::HeaderValue::from_static(OCI_MANIFEST)).await.unwrap();
    Pushed { manifest: manifest_desc, layers: layer_descs }
}

/// Pushes an image index tagged `tag` over `images` (manifest descriptor, its platform).
async fn push_index(registry: &Registry, repo: &str, tag: &str, images: Vec<(Descriptor, &str)>) -> Digest {
    let client = registry.client();
    let manifests = images
        .into_iter()
        .map(|(mut desc, platform)| {
            desc.platform = Some(platform.parse().unwrap());
            desc
        })
        .collect();
    let index = ImageIndex { schema_version: 2, media_type: Some(OCI_INDEX.to_owned()), manifests };
    let index = serde_json::to_vec(&index).unwrap();
    let target = Reference::with_tag(registry.host(), repo.to_owned(), tag.to_owned());
    client.store_auth_if_needed(&registry.host(), &RegistryAuth::Anonymous).await;
    client.push_manifest_raw(&target, index.clone(), http::HeaderValue::from_static(OCI_INDEX)).await.unwrap();
    Digest::of_bytes(&index)
}

fn amd64() -> Platform {
    "linux/amd64".parse().unwrap()
}

fn read(root: &Path, name: &str) -> String {
    std::fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Unpacks the layout at `dir` for `platform` into a fresh root.
fn unpack_layout(dir: &Path, platform: &Platform) -> (tempfile::TempDir, nestbox_image::ImageConfig) {
    let root = tempfile::tempdir().unwrap();
    let config = unpack(&Source::OciLayout { dir: dir.to_owned(), reference: None }, root.path(), platform).unwrap();
    (root, config)
}

const BASE: &[(&str, &str)] = &[("etc/hostname", "base\n"), ("srv/data.txt", "from the base layer\n")];
const TOP: &[(&str, &str)] = &[("srv/data.txt", "from the top layer\n"), ("srv/new.txt", "new\n")];

#[tokio::test]
async fn pull_by_tag_writes_a_layout_that_unpacks_to_the_files() {
    let Some(registry) = Registry::start("pull by tag", false) else { return };
    let pushed = push_image(&registry, "test/app", Some("v1"), "amd64", &[BASE, TOP], &RegistryAuth::Anonymous).await;
    let dest = tempfile::tempdir().unwrap();
    let digest =
        pull_to_layout(&registry.reference("test/app:v1"), &amd64(), dest.path(), &registry.options()).await.unwrap();
    assert_eq!(digest, pushed.manifest.digest);

    let index: ImageIndex = serde_json::from_slice(&std::fs::read(dest.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index.manifests.len(), 1);
    assert_eq!(index.manifests[0].digest, pushed.manifest.digest);
    assert_eq!(index.manifests[0].annotations.get(REF_NAME_ANNOTATION).map(String::as_str), Some("v1"));
    for layer in &pushed.layers {
        let blob = dest.path().join("blobs/sha256").join(layer.digest.hex());
        assert_eq!(nestbox_image::sha256_file(&blob).unwrap(), layer.digest);
    }

    let (root, config) = unpack_layout(dest.path(), &amd64());
    assert_eq!(read(root.path(), "etc/hostname"), "base\n");
    assert_eq!(read(root.path(), "srv/data.txt"), "from the top layer\n");
    assert_eq!(read(root.path(), "srv/new.txt"), "new\n");
    assert_eq!(config.env, ["GREETING=hello"]);
    assert_eq!(config.workdir.as_deref(), Some("/srv"));
}

#[tokio::test]
async fn pull_by_digest_gets_that_manifest() {
    let Some(registry) = Registry::start("pull by digest", false) else { return };
    let pushed = push_image(&registry, "test/bydigest", None, "amd64", &[BASE], &RegistryAuth::Anonymous).await;
    let dest = tempfile::tempdir().unwrap();
    let reference = registry.reference(&format!("test/bydigest@{}", pushed.manifest.digest));
    let digest = pull_to_layout(&reference, &amd64(), dest.path(), &registry.options()).await.unwrap();
    assert_eq!(digest, pushed.manifest.digest);
    let (root, _) = unpack_layout(dest.path(), &amd64());
    assert_eq!(read(root.path(), "srv/data.txt"), "from the base layer\n");

    // A digest nobody pushed is a 404 naming it.
    let other = Digest::of_bytes(b"not a manifest");
    let reference = registry.reference(&format!("test/bydigest@{other}"));
    let err = pull_to_layout(&reference, &amd64(), tempfile::tempdir().unwrap().path(), &registry.options())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(&other.to_string()), "{err}");
}

#[tokio::test]
async fn a_missing_tag_or_repository_is_not_found_naming_it() {
    let Some(registry) = Registry::start("missing tag", false) else { return };
    push_image(&registry, "test/app", Some("v1"), "amd64", &[BASE], &RegistryAuth::Anonymous).await;
    for missing in ["test/app:nope", "test/nothing:v1"] {
        let dest = tempfile::tempdir().unwrap();
        let err =
            pull_to_layout(&registry.reference(missing), &amd64(), dest.path(), &registry.options()).await.unwrap_err();
        assert!(matches!(&err, RegistryError::NotFound { registry: r, .. } if *r == registry.host()), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(missing) && text.contains("404"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
}

#[tokio::test]
async fn a_registry_that_wants_credentials_answers_401_without_them_and_serves_with_them() {
    let Some(registry) = Registry::start("registry auth", true) else { return };
    let creds = RegistryAuth::Basic(USER.to_owned(), PASSWORD.to_owned());
    let pushed = push_image(&registry, "private/app", Some("v1"), "amd64", &[BASE], &creds).await;
    let reference = registry.reference("private/app:v1");

    let err = pull_to_layout(&reference, &amd64(), tempfile::tempdir().unwrap().path(), &registry.options())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { with_credentials: false, .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("401") && text.contains(&registry.host()) && text.contains("credentials are needed"),
        "{text}"
    );

    let wrong = PullOptions { auth: Some((USER.to_owned(), "wrong".to_owned())), ..registry.options() };
    let err = pull_to_layout(&reference, &amd64(), tempfile::tempdir().unwrap().path(), &wrong).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { with_credentials: true, .. }), "{err:?}");
    assert!(err.to_string().contains("refused"), "{err}");

    let right = PullOptions { auth: Some((USER.to_owned(), PASSWORD.to_owned())), ..registry.options() };
    let dest = tempfile::tempdir().unwrap();
    let digest = pull_to_layout(&reference, &amd64(), dest.path(), &right).await.unwrap();
    assert_eq!(digest, pushed.manifest.digest);
    let (root, _) = unpack_layout(dest.path(), &amd64());
    assert_eq!(read(root.path(), "etc/hostname"), "base\n");
}

#[tokio::test]
async fn the_platform_is_chosen_from_an_index_and_a_missing_one_lists_what_is_there() {
    let Some(registry) = Registry::start("platform", false) else { return };
    let anon = RegistryAuth::Anonymous;
    let amd = push_image(&registry, "test/multi", None, "amd64", &[&[("arch", "amd64")]], &anon).await;
    let arm = push_image(&registry, "test/multi", None, "arm64", &[&[("arch", "arm64")]], &anon).await;
    push_index(
        &registry,
        "test/multi",
        "v1",
        vec![(amd.manifest.clone(), "linux/amd64"), (arm.manifest.clone(), "linux/arm64")],
    )
    .await;
    push_index(&registry, "test/multi", "armonly", vec![(arm.manifest.clone(), "linux/arm64")]).await;

    for (platform, pushed, arch) in [(amd64(), &amd, "amd64"), ("linux/arm64".parse().unwrap(), &arm, "arm64")] {
        let dest = tempfile::tempdir().unwrap();
        let digest = pull_to_layout(&registry.reference("test/multi:v1"), &platform, dest.path(), &registry.options())
            .await
            .unwrap();
        assert_eq!(digest, pushed.manifest.digest, "{platform}");
        let (root, _) = unpack_layout(dest.path(), &platform);
        assert_eq!(read(root.path(), "arch"), arch);
    }

    let dest = tempfile::tempdir().unwrap();
    let err = pull_to_layout(&registry.reference("test/multi:armonly"), &amd64(), dest.path(), &registry.options())
        .await
        .unwrap_err();
    assert!(matches!(&err, RegistryError::Platform { present, .. } if present.len() == 1), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("linux/amd64") && text.contains("linux/arm64"), "{text}");
    assert!(!dest.path().join("blobs/sha256").join(arm.layers[0].digest.hex()).exists(), "no layer was fetched");

    let riscv: Platform = "linux/riscv64".parse().unwrap();
    let err = pull_to_layout(&registry.reference("test/multi:v1"), &riscv, dest.path(), &registry.options())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("linux/riscv64") && text.contains("linux/amd64, linux/arm64"), "{text}");

    // A single-platform manifest for another platform is refused too.
    push_image(&registry, "test/armsingle", Some("v1"), "arm64", &[BASE], &anon).await;
    let err = pull_to_layout(&registry.reference("test/armsingle:v1"), &amd64(), dest.path(), &registry.options())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("linux/arm64"), "{err}");
}

#[tokio::test]
async fn an_image_over_the_size_limit_is_refused_before_any_layer_is_fetched() {
    let Some(registry) = Registry::start("size limit", false) else { return };
    let pushed = push_image(&registry, "test/big", Some("v1"), "amd64", &[BASE, TOP], &RegistryAuth::Anonymous).await;
    let total: u64 = pushed.layers.iter().map(|l| l.size).sum();
    let calls = Arc::new(Mutex::new(0usize));
    let seen = calls.clone();
    let opts = PullOptions {
        max_bytes: Some(total - 1),
        progress: Some(Box::new(move |_| *seen.lock().unwrap() += 1)),
        ..registry.options()
    };
    let dest = tempfile::tempdir().unwrap();
    let err = pull_to_layout(&registry.reference("test/big:v1"), &amd64(), dest.path(), &opts).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::TooLarge { size, limit, .. } if size == total && limit == total - 1),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&total.to_string()) && text.contains(&(total - 1).to_string()), "{text}");
    assert_eq!(*calls.lock().unwrap(), 0, "no layer download started");
    for layer in &pushed.layers {
        assert!(!dest.path().join("blobs/sha256").join(layer.digest.hex()).exists());
    }

    // At the limit exactly, it is pulled.
    let opts = PullOptions { max_bytes: Some(total), ..registry.options() };
    pull_to_layout(&registry.reference("test/big:v1"), &amd64(), tempfile::tempdir().unwrap().path(), &opts)
        .await
        .unwrap();
}

#[tokio::test]
async fn progress_sees_every_layer_to_its_total() {
    let Some(registry) = Registry::start("progress", false) else { return };
    // A layer large enough to arrive in several chunks.
    let big: String = (0..200_000).map(|i| format!("{i:x}")).collect();
    let pushed = push_image(
        &registry,
        "test/progress",
        Some("v1"),
        "amd64",
        &[BASE, &[("srv/big.txt", big.as_str())]],
        &RegistryAuth::Anonymous,
    )
    .await;
    let events: Arc<Mutex<Vec<PullProgress>>> = Arc::default();
    let sink = events.clone();
    let opts = PullOptions { progress: Some(Box::new(move |p| sink.lock().unwrap().push(p))), ..registry.options() };
    let dest = tempfile::tempdir().unwrap();
    pull_to_layout(&registry.reference("test/progress:v1"), &amd64(), dest.path(), &opts).await.unwrap();
    let events = events.lock().unwrap();
    for layer in &pushed.layers {
        let mine: Vec<&PullProgress> = events.iter().filter(|p| p.layer == layer.digest).collect();
        assert!(!mine.is_empty(), "no progress for {}", layer.digest);
        assert_eq!(mine[0].done, 0);
        assert!(mine.iter().all(|p| p.total == layer.size));
        assert!(mine.windows(2).all(|w| w[0].done <= w[1].done), "progress goes forward");
        assert_eq!(mine.last().unwrap().done, layer.size, "{} reaches its total", layer.digest);
    }
    assert!(events.iter().all(|p| pushed.layers.iter().any(|l| l.digest == p.layer)));
}

#[tokio::test]
async fn a_bad_reference_is_refused_naming_it() {
    for bad in ["UPPER/Case:tag", "host/repo@sha256:12", ""] {
        let err =
            pull_to_layout(bad, &amd64(), &PathBuf::from("/nonexistent"), &PullOptions::default()).await.unwrap_err();
        assert!(matches!(err, RegistryError::BadReference { .. }), "{bad}: {err:?}");
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}
