//! Images for sandboxes' root disks, under `$NESTBOX_HOME/images/rootfs`: building them
//! ([`debian`]), importing them from what `nestbox-image` reads, and naming, listing and
//! removing them. Every root filesystem image gets the guest agent at `/.nestbox/agent` and its
//! config at `/.nestbox/image.json`; the guest boots the default initramfs, which switches to
//! the image (`nestbox.root=/dev/vda`), so any image works unchanged.
//!
//! A cloud image (a whole disk, raw or qcow2) is stored as it is and booted by firmware; its
//! sandboxes get the agent through their cloud-init seed (see [`crate::cloud`]).

pub mod debian;

use std::path::Path;

use nestbox_image::ext4::{self, Ext4Options};
use nestbox_image::store::{ImageKind, ImageMeta, ImageStore, NewImage};
use serde::{Deserialize, Serialize};

use crate::sandbox::{ImageChoice, Sandboxes};
use crate::{EngineError, Home, agent_binary};

/// What a sandbox takes from its image by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDefaults {
    /// `KEY=VALUE` pairs.
    #[serde(default, alias = "Env")]
    pub env: Vec<String>,
    /// The working directory.
    #[serde(default, alias = "WorkingDir", skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The user.
    #[serde(default, alias = "User", skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The entrypoint.
    #[serde(default, alias = "Entrypoint")]
    pub entrypoint: Vec<String>,
    /// The command.
    #[serde(default, alias = "Cmd")]
    pub cmd: Vec<String>,
}

impl ImageDefaults {
    /// The defaults an image's stored config gives (missing fields are empty).
    pub fn of(meta: &ImageMeta) -> Self {
        serde_json::from_value(meta.config.clone()).unwrap_or_default()
    }

    /// The environment as pairs.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }
}

/// Prefixes of the work directories image builds make in the store's directory; `gc` removes
/// those whose lock nobody holds.
pub const WORK_PREFIXES: [&str; 4] = [".import-", ".pull-", ".debian-", ".cloud-"];

/// A work directory in `store`, flocked while it lives so `gc` leaves it alone.
struct WorkDir {
    dir: tempfile::TempDir,
    _lock: std::fs::File,
}

impl WorkDir {
    fn new(store: &ImageStore, prefix: &str) -> Result<Self, EngineError> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(store.dir())
            .map_err(EngineError::io("cannot make a build directory"))?;
        let lock = std::fs::File::open(dir.path()).map_err(EngineError::io("cannot open the build directory"))?;
        if !try_flock(&lock) {
            return Err(EngineError::Io {
                context: format!("cannot lock {}", dir.path().display()),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self { dir, _lock: lock })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Takes an exclusive `flock` on `file` without waiting; whether it was taken.
pub fn try_flock(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an open descriptor has no memory effects.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// The name a pulled image gets by default: the reference without its registry and digest
/// (`docker.io/library/alpine:3.20` → `library/alpine:3.20`).
fn default_name(reference: &str) -> String {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    let path = match no_digest.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => rest,
        _ => no_digest,
    };
    path.to_ascii_lowercase()
}

/// Called with the bytes read so far of each layer file an import unpacks.
pub type UnpackProgressFn = std::sync::Arc<dyn Fn(nestbox_image::UnpackProgress) + Send + Sync>;

/// The images under one `$NESTBOX_HOME`.
#[derive(Clone)]
pub struct Images {
    home: Home,
    notify: Option<crate::Notify>,
    progress: Option<UnpackProgressFn>,
}

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Images").field("home", &self.home).finish_non_exhaustive()
    }
}

impl Images {
    /// The images under `home`.
    pub fn new(home: Home) -> Self {
        Self { home, notify: None, progress: None }
    }

    /// Sends a line to `notify` as each phase of long work starts (unpacking, building ext4).
    pub fn with_notify(mut self, notify: crate::Notify) -> Self {
        self.notify = Some(notify);
        self
    }

    /// Sends `progress` the bytes read of each layer file while an import (or a pull's import)
    /// unpacks it (see [`nestbox_image::unpack_with`]).
    pub fn with_progress(mut self, progress: UnpackProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    fn phase(&self, what: &str) {
        if let Some(notify) = &self.notify {
            notify(what);
        }
    }

    /// The store, created on first use.
    pub fn store(&self) -> Result<ImageStore, EngineError> {
        let dir = self.home.rootfs_images();
        std::fs::create_dir_all(&dir).map_err(EngineError::io(format!("cannot create {}", dir.display())))?;
        Ok(ImageStore::open(dir)?)
    }

    /// Builds a minimal Debian `suite` (with python3) from the package mirror and stores it as
    /// `name`.
    pub fn build_debian(
        &self,
        name: &str,
        suite: &str,
        mirror: Option<&str>,
        progress: bool,
    ) -> Result<ImageMeta, EngineError> {
        let store = self.store()?;
        nestbox_image::store::Reference::parse(name)?;
        let work = WorkDir::new(&store, WORK_PREFIXES[2])?;
        let root = work.path().join("root");
        self.phase(&format!("installing Debian {suite} with mmdebstrap"));
        debian::build_root(&root, suite, mirror, progress)?;
        let defaults = ImageDefaults {
            env: vec![format!("PATH={}", crate::guest::IMAGE_PATH)],
            cmd: vec!["/bin/bash".into()],
            ..ImageDefaults::default()
        };
        let source = format!("mmdebstrap {suite} (minbase + {})", debian::PACKAGES.join(", "));
        self.store_root(&store, &root, work.path(), vec![name.to_owned()], source, &defaults)
    }

    /// Imports `path` (a directory, a tarball, an OCI image layout or a `docker save` archive;
    /// `reference` picks an image of a layout by its ref name) for `platform`, as `names`. A
    /// cloud image (a qcow2 or partitioned raw disk) is stored as it is.
    pub fn import(
        &self,
        path: &Path,
        reference: Option<&str>,
        platform: &nestbox_image::Platform,
        names: Vec<String>,
    ) -> Result<ImageMeta, EngineError> {
        self.import_as(path, reference, platform, names, None)
    }

    /// [`import`](Self::import), recording `source` (else the path) as where it came from.
    fn import_as(
        &self,
        path: &Path,
        reference: Option<&str>,
        platform: &nestbox_image::Platform,
        names: Vec<String>,
        recorded: Option<String>,
    ) -> Result<ImageMeta, EngineError> {
        let store = self.store()?;
        for name in &names {
            nestbox_image::store::Reference::parse(name)?;
        }
        if let Some(kind) = crate::cloud::detect(path) {
            return self.import_cloud(&store, path, kind, names);
        }
        let mut source = nestbox_image::Source::detect(path)?;
        if let (nestbox_image::Source::OciLayout { reference: slot, .. }, Some(r)) = (&mut source, reference) {
            *slot = Some(r.to_owned());
        }
        let work = WorkDir::new(&store, WORK_PREFIXES[0])?;
        let root = work.path().join("root");
        std::fs::create_dir(&root).map_err(EngineError::io(format!("cannot create {}", root.display())))?;
        self.phase(&format!("unpacking {}", path.display()));
        let progress = self.progress.as_deref().map(|f| f as &dyn Fn(nestbox_image::UnpackProgress));
        let config = nestbox_image::unpack_with(&source, &root, platform, progress)?;
        let defaults = ImageDefaults {
            env: config.env.clone(),
            workdir: config.workdir.clone(),
            user: config.user.clone(),
            entrypoint: config.entrypoint.clone(),
            cmd: config.cmd.clone(),
        };
        let what = match (recorded, &config.identity) {
            (Some(recorded), _) => recorded,
            (None, Some(digest)) => format!("{} ({digest})", path.display()),
            (None, None) => path.display().to_string(),
        };
        self.store_root(&store, &root, work.path(), names, what, &defaults)
    }

    /// Pulls `reference` (`registry/repo:tag` or `…@sha256:…`) for `platform` and stores it as
    /// `names` (the reference itself when none are given).
    pub async fn pull(
        &self,
        reference: &str,
        platform: &nestbox_image::Platform,
        opts: &nestbox_image::registry::PullOptions,
        names: Vec<String>,
    ) -> Result<ImageMeta, EngineError> {
        let store = self.store()?;
        let names = if names.is_empty() { vec![default_name(reference)] } else { names };
        for name in &names {
            nestbox_image::store::Reference::parse(name)?;
        }
        let work = WorkDir::new(&store, WORK_PREFIXES[1])?;
        let layout = work.path().join("layout");
        let digest = nestbox_image::registry::pull_to_layout(reference, platform, &layout, opts).await?;
        let this = self.clone();
        let source = format!("{reference} ({digest})");
        let platform = platform.clone();
        tokio::task::spawn_blocking(move || {
            let imported = this.import_as(&layout, None, &platform, names, Some(source));
            drop(work);
            imported
        })
        .await
        .map_err(|e| EngineError::Io {
            context: "importing the pulled image".into(),
            source: std::io::Error::other(e),
        })?
    }

    /// Stores the cloud image `path` of `kind` as it is, under the hash of its content.
    fn import_cloud(
        &self,
        store: &ImageStore,
        path: &Path,
        kind: ImageKind,
        names: Vec<String>,
    ) -> Result<ImageMeta, EngineError> {
        let refuse = |reason: String| EngineError::CloudImage { path: path.to_path_buf(), reason };
        if kind == ImageKind::CloudQcow2 {
            check_standalone_qcow2(path).map_err(refuse)?;
        }
        let work = WorkDir::new(store, WORK_PREFIXES[3])?;
        let copy = work.path().join("disk");
        self.phase(&format!("copying the cloud image {}", path.display()));
        crate::disk::raw_copy(path, &copy)?;
        self.phase("hashing the cloud image");
        let id = nestbox_image::digest::sha256_file(&copy)
            .map_err(EngineError::io(format!("cannot read {}", copy.display())))?
            .hex()
            .to_owned();
        self.phase("storing the image");
        let source = format!("{} (cloud image, {})", path.display(), kind.disk_format());
        let new = NewImage { id, kind, names, source, config: serde_json::json!({}) };
        Ok(store.import(&copy, new)?)
    }

    /// Injects the agent into `root`, builds its ext4 in `work` and stores it under the
    /// content hash of that ext4, with `names`.
    fn store_root(
        &self,
        store: &ImageStore,
        root: &Path,
        work: &Path,
        names: Vec<String>,
        source: String,
        defaults: &ImageDefaults,
    ) -> Result<ImageMeta, EngineError> {
        let config = serde_json::to_value(defaults).expect("defaults serialize");
        ext4::inject_agent(root, agent_binary::AGENT, &config)?;
        let out = work.join("image.ext4");
        let tree = ext4::measure_tree(root)?;
        self.phase(&format!("building the ext4 image ({} MiB in {} files)", tree.bytes >> 20, tree.entries));
        ext4::build_ext4(root, &out, &Ext4Options::default())?;
        self.phase("storing the image");
        let id = nestbox_image::digest::sha256_file(&out)
            .map_err(EngineError::io(format!("cannot read {}", out.display())))?
            .hex()
            .to_owned();
        Ok(store.import(&out, NewImage { id, kind: ImageKind::Rootfs, names, source, config })?)
    }

    /// The image `reference` names (a name, `name:tag`, or an id prefix).
    pub fn resolve(&self, reference: &str) -> Result<ImageMeta, EngineError> {
        Ok(self.store()?.resolve(reference)?)
    }

    /// What a sandbox needs to run on the image `reference` names.
    pub fn choice(&self, reference: &str) -> Result<(ImageChoice, ImageDefaults), EngineError> {
        let store = self.store()?;
        let meta = store.resolve(reference)?;
        let defaults = ImageDefaults::of(&meta);
        Ok((
            ImageChoice {
                id: meta.id.clone(),
                name: Some(reference.to_owned()),
                base: store.path_of(&meta),
                kind: meta.kind,
            },
            defaults,
        ))
    }

    /// Every image.
    pub fn list(&self) -> Result<Vec<ImageMeta>, EngineError> {
        Ok(self.store()?.list()?)
    }

    /// The sandboxes and snapshots whose disks are over image `id`.
    pub fn users(&self, sandboxes: &Sandboxes, id: &str) -> Result<Vec<String>, EngineError> {
        let all = sandboxes.list(&nestbox_store::ListFilter::default())?;
        let mut users: Vec<String> = all
            .into_iter()
            .filter(|sb| sb.config.as_ref().and_then(|c| c.disk.as_ref()).is_some_and(|d| d.image == id))
            .map(|sb| format!("sandbox {}", sb.record.name))
            .collect();
        for snap in sandboxes.snapshots()? {
            if snap.manifest.sandbox["disk"]["image"].as_str() == Some(id) {
                let name = snap.manifest.name.clone().unwrap_or_else(|| snap.manifest.id.clone());
                users.push(format!("snapshot {name}"));
            }
        }
        Ok(users)
    }

    /// Removes the image `reference` names, unless a sandbox uses it.
    pub fn remove(&self, sandboxes: &Sandboxes, reference: &str) -> Result<ImageMeta, EngineError> {
        let store = self.store()?;
        let meta = store.resolve(reference)?;
        let users = self.users(sandboxes, &meta.id)?;
        Ok(store.remove(&meta.id, &users)?)
    }

    /// Removes unnamed images no sandbox uses.
    pub fn prune(&self, sandboxes: &Sandboxes) -> Result<Vec<ImageMeta>, EngineError> {
        let store = self.store()?;
        let mut used: Vec<String> = sandboxes
            .list(&nestbox_store::ListFilter::default())?
            .into_iter()
            .filter_map(|sb| sb.config.and_then(|c| c.disk).map(|d| d.image))
            .collect();
        for snap in sandboxes.snapshots()? {
            if let Some(image) = snap.manifest.sandbox["disk"]["image"].as_str() {
                used.push(image.to_owned());
            }
        }
        Ok(store.prune(|meta| used.contains(&meta.id))?)
    }
}

/// Refuses a qcow2 file that needs another file (a backing file, an external data file): the
/// store keeps single files.
fn check_standalone_qcow2(path: &Path) -> Result<(), String> {
    let Some(qemu_img) = nestbox_supervise::find_program("qemu-img") else {
        return Err("qemu-img is needed to read qcow2 images: install qemu-utils".into());
    };
    let out = std::process::Command::new(qemu_img)
        .args(["info", "--output=json", "-f", "qcow2"])
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run qemu-img: {e}"))?;
    if !out.status.success() {
        return Err(format!("not a readable qcow2 image: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("unexpected qemu-img output: {e}"))?;
    if let Some(backing) = info["backing-filename"].as_str() {
        return Err(format!(
            "it has a backing file ({backing}); flatten it first with qemu-img convert -O qcow2 {} OUT",
            path.display()
        ));
    }
    if info["format-specific"]["data"]["data-file"].is_string() {
        return Err("it keeps its data in an external file; flatten it first with qemu-img convert".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_default_name_drops_the_registry_and_digest() {
        assert_eq!(default_name("docker.io/library/alpine:3.20"), "library/alpine:3.20");
        assert_eq!(default_name("127.0.0.1:5000/app/web:1"), "app/web:1");
        assert_eq!(default_name("localhost/x"), "x");
        assert_eq!(default_name("app/web@sha256:abc"), "app/web");
        assert_eq!(default_name("Alpine"), "alpine");
    }

    #[test]
    fn test_defaults_read_oci_and_our_own_keys() {
        let meta = |config| ImageMeta {
            id: "0".repeat(64),
            kind: ImageKind::Rootfs,
            names: vec![],
            created_at_ms: 0,
            size_bytes: 0,
            source: String::new(),
            config,
        };
        let oci = ImageDefaults::of(&meta(serde_json::json!({"Env": ["A=1"], "WorkingDir": "/w", "User": "u"})));
        assert_eq!(
            (oci.env_pairs(), oci.workdir.as_deref(), oci.user.as_deref()),
            (vec![("A".into(), "1".into())], Some("/w"), Some("u"))
        );
        let ours = ImageDefaults::of(&meta(serde_json::json!({"env": ["B=2=3"], "cmd": ["sh"]})));
        assert_eq!((ours.env_pairs(), ours.cmd), (vec![("B".into(), "2=3".into())], vec!["sh".to_owned()]));
    }
}
