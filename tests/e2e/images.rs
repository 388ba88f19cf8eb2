//! Images end to end: an OCI image layout the test builds itself is imported, booted, and given
//! to two sandboxes whose writes stay apart; the image cannot be removed while they use it. The
//! same layout, pushed to Debian's `docker-registry` on loopback, is pulled and run.

use std::io::Write;
use std::path::Path;

use sha2::Digest as _;

use crate::common::{Home, ok, stderr, stdout};
use crate::require_vm;

/// Progress lines (plain, as stderr is not a terminal) say what happened before the error; the
/// error is the last line, one line, naming `what`.
fn assert_one_error_after_progress(err: &str, what: &str) {
    let lines: Vec<&str> = err.lines().collect();
    let (last, progress) = lines.split_last().expect("an error line");
    assert!(last.contains(what), "{err}");
    for line in progress {
        assert!(
            line.starts_with("nestbox: unpacking") || line.starts_with("nestbox: pulling"),
            "only progress may come before the error: {err}"
        );
    }
}

/// Asserts the image store holds no image and no leftover of one (its lock and name index
/// may exist).
fn assert_store_empty(home: &Home, after: &str) {
    let rootfs = home.path().join("images/rootfs");
    let left: Vec<_> = std::fs::read_dir(&rootfs)
        .map(|d| {
            d.filter_map(Result::ok).map(|e| e.file_name()).filter(|n| n != ".lock" && n != "names.json").collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{after} left {left:?}");
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// Writes `data` as a blob of the layout and returns its descriptor.
fn blob(layout: &Path, media_type: &str, data: &[u8]) -> serde_json::Value {
    let hex = sha256_hex(data);
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    serde_json::json!({ "mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len() })
}

fn tar_with(entries: &[(&str, &[u8], u32)], links: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data, mode) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *data).unwrap();
    }
    for (path, target) in links {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        builder.append_link(&mut header, path, target).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A two-layer OCI layout: busybox and a marker, then a new marker and a whiteout.
fn oci_layout(dir: &Path) -> Option<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).exists())?;
    let busybox = std::fs::read(busybox).unwrap();
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let links: Vec<(String, String)> = ["sh", "cat", "echo", "sync", "ls", "pwd", "df", "tail"]
        .iter()
        .map(|a| (format!("bin/{a}"), "busybox".to_owned()))
        .collect();
    let links: Vec<(&str, &str)> = links.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let lower = tar_with(
        &[("bin/busybox", &busybox, 0o755), ("etc/marker", b"v1\n", 0o644), ("etc/gone", b"x", 0o644)],
        &links,
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&lower).unwrap();
    let lower_gz = gz.finish().unwrap();
    let upper = tar_with(&[("etc/marker", b"v2\n", 0o644), ("etc/.wh.gone", b"", 0o644)], &[]);
    let l1 = blob(dir, "application/vnd.oci.image.layer.v1.tar+gzip", &lower_gz);
    let l2 = blob(dir, "application/vnd.oci.image.layer.v1.tar", &upper);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Env": ["PATH=/bin", "GREETING=from-image"], "WorkingDir": "/etc", "Cmd": ["sh"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&lower)), format!("sha256:{}", sha256_hex(&upper))] }
    });
    let config = blob(dir, "application/vnd.oci.image.config.v1+json", config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": [l1, l2]
    });
    let mut manifest = blob(dir, "application/vnd.oci.image.manifest.v1+json", manifest.to_string().as_bytes());
    manifest["platform"] = serde_json::json!({ "os": "linux", "architecture": "amd64" });
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest] });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    Some(())
}

/// The test's OCI layout in `dir`, or `None` (the test skipped, saying why) when the tools to
/// import it or the busybox it holds are missing.
fn test_layout(dir: &Path) -> Option<std::path::PathBuf> {
    if nestbox_supervise::find_program("qemu-img").is_none() || nestbox_supervise::find_program("mkfs.ext4").is_none() {
        eprintln!("skipped: qemu-img or mkfs.ext4 is missing");
        return None;
    }
    let layout = dir.join("layout");
    if oci_layout(&layout).is_none() {
        eprintln!("skipped: no static busybox");
        return None;
    }
    Some(layout)
}

#[test]
fn test_an_oci_layout_is_imported_booted_and_shared_copy_on_write() {
    require_vm!();
    let work = tempfile::tempdir().unwrap();
    let Some(layout) = test_layout(work.path()) else { return };
    let home = Home::new();
    let out = home.output(["image", "import", "--name", "demo:1", layout.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");
    // Not on a terminal: the phases as plain lines.
    let phases = stderr(&out);
    assert!(phases.contains("nestbox: unpacking") && phases.contains("nestbox: building the ext4 image"), "{phases}");
    let ls = ok(&home, &["image", "ls"]);
    assert!(ls.contains("demo:1"), "{ls}");

    // The image's layers, whiteout, env and working directory.
    let out = ok(
        &home,
        &["run", "--image", "demo:1", "--memory", "256M", "--", "sh", "-c", "cat marker; echo $GREETING; pwd; ls /etc"],
    );
    assert_eq!(out, "v2\nfrom-image\n/etc\nmarker\n", "{out}");

    // Two sandboxes on one image: each its own disk.
    let base = home.path().join("images/rootfs").join(format!("{id}.ext4"));
    let before = sha256_hex(&std::fs::read(&base).unwrap());
    for name in ["a", "b"] {
        ok(&home, &["create", "--image", "demo:1", "--name", name, "--memory", "256M"]);
        ok(&home, &["start", name]);
    }
    ok(&home, &["exec", "a", "--", "sh", "-c", "echo changed > /etc/marker; sync"]);
    assert_eq!(ok(&home, &["exec", "a", "--", "cat", "/etc/marker"]), "changed\n");
    assert_eq!(ok(&home, &["exec", "b", "--", "cat", "/etc/marker"]), "v2\n", "a's write reached b");
    let info: serde_json::Value = serde_json::from_str(&ok(&home, &["inspect", "a"])).unwrap();
    assert_eq!(info["config"]["disk"]["overlay"], "qcow2", "{info}");
    assert_eq!(info["config"]["disk"]["image"], id.as_str());

    // In use: refused, naming the users.
    let out = home.output(["image", "rm", "demo:1"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("sandbox a") && stderr(&out).contains("sandbox b"), "{}", stderr(&out));
    ok(&home, &["stop", "a"]);
    ok(&home, &["start", "a"]);
    // A bigger disk than the image: the root filesystem grows to it; a smaller one is refused.
    ok(&home, &["create", "--image", "demo:1", "--disk-size", "1G", "--name", "big", "--memory", "256M"]);
    ok(&home, &["start", "big"]);
    let df = ok(&home, &["exec", "big", "--", "sh", "-c", "df -k / | tail -1"]);
    let total_kib: u64 = df.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(total_kib > 900 * 1024, "the root did not grow to the 1G disk: {df}");
    let out = home.output(["create", "--image", "demo:1", "--disk-size", "1M", "--name", "tiny"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("--disk-size"), "{}", stderr(&out));
    assert!(home.output(["inspect", "tiny"]).status.code() == Some(121), "a refused create left a record");
    ok(&home, &["rm", "-f", "big"]);
    assert_eq!(
        ok(&home, &["exec", "a", "--", "cat", "/etc/marker"]),
        "changed\n",
        "a's disk kept its write over a restart"
    );
    ok(&home, &["rm", "-f", "a", "b"]);
    assert_eq!(sha256_hex(&std::fs::read(&base).unwrap()), before, "the base image was written");
    ok(&home, &["image", "rm", "demo:1"]);
    assert!(!base.exists());
    home.assert_clean();
}

#[test]
fn test_importing_something_that_is_not_an_image_fails_cleanly() {
    let home = Home::new();
    let work = tempfile::tempdir().unwrap();
    let junk = work.path().join("junk.bin");
    std::fs::write(&junk, b"not a tar at all, just some bytes").unwrap();
    let out = home.output(["image", "import", "--name", "junk", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert_one_error_after_progress(&stderr(&out), "is not an image");
    let out = home.output(["image", "import", "--name", "Bad Name", junk.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    assert_store_empty(&home, "a failed import");
}

/// The built-in Debian image: slow (a minute or so: mmdebstrap from the package mirror), so one
/// test does it all.
#[test]
fn test_image_build_debian_runs_python() {
    require_vm!();
    if nestbox_supervise::find_program("mmdebstrap").is_none() || nestbox_supervise::find_program("qemu-img").is_none()
    {
        eprintln!("skipped: mmdebstrap or qemu-img is missing");
        return;
    }
    let home = Home::new();
    let id = ok(&home, &["image", "build", "debian", "--name", "deb"]).trim().to_owned();
    let meta: serde_json::Value = serde_json::from_str(&ok(&home, &["image", "inspect", "deb"])).unwrap();
    assert_eq!(meta["id"], id.as_str());
    assert_eq!(meta["names"], serde_json::json!(["deb:latest"]));
    let out = ok(&home, &["run", "--image", "deb", "--memory", "512M", "--", "python3", "-c", "print(1+1)"]);
    assert_eq!(out, "2\n");
    let os = ok(&home, &["run", "--image", "deb", "--", "sh", "-c", ". /etc/os-release; echo $ID"]);
    assert_eq!(os, "debian\n");
    ok(&home, &["image", "rm", "deb"]);
    home.assert_clean();
}

#[test]
fn test_a_pull_that_fails_says_why_in_one_line_and_leaves_nothing() {
    let home = Home::new();
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let reference = format!("127.0.0.1:{port}/app/web:1");
    let registry = format!("127.0.0.1:{port}");
    let out = home.output(["image", "pull", "--insecure-registry", &registry, &reference]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert_one_error_after_progress(&err, &registry);
    let out = home.output(["image", "pull", "not a reference"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a reference"), "{}", stderr(&out));
    let out = home.output(["image", "pull", "--platform", "plan9", "x/y:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_store_empty(&home, "a failed pull");
}

/// A registry the test pushes its image to.
struct Registry(nestbox_testkit::registry::Registry);

impl Registry {
    /// Pushes the one image of the OCI layout `layout` as `repo:tag`, through `oci-client`;
    /// returns its manifest.
    fn push_layout(&self, layout: &Path, repo: &str, tag: &str) -> serde_json::Value {
        let read_json =
            |path: &Path| -> serde_json::Value { serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap() };
        let blob_path = |desc: &serde_json::Value| {
            let digest = desc["digest"].as_str().unwrap();
            layout.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())
        };
        let index = read_json(&layout.join("index.json"));
        let manifest_desc = &index["manifests"][0];
        let manifest_bytes = std::fs::read(blob_path(manifest_desc)).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
        let blobs: Vec<&serde_json::Value> =
            std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap()).collect();
        nestbox_image::registry::install_crypto_provider();
        let client = oci_client::Client::new(oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::HttpsExcept(vec![self.0.host().to_owned()]),
            ..Default::default()
        });
        let target = oci_client::Reference::with_tag(self.0.host().to_owned(), repo.to_owned(), tag.to_owned());
        let media_type = http::HeaderValue::from_str(manifest_desc["mediaType"].as_str().unwrap()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let anonymous = oci_client::secrets::RegistryAuth::Anonymous;
            client.store_auth_if_needed(self.0.host(), &anonymous).await;
            for desc in blobs {
                let data = std::fs::read(blob_path(desc)).unwrap();
                client.push_blob(&target, data, desc["digest"].as_str().unwrap()).await.unwrap();
            }
            client.push_manifest_raw(&target, manifest_bytes, media_type).await.unwrap();
        });
        manifest
    }
}

#[test]
fn test_an_image_pulled_from_a_registry_runs_and_the_pull_shows_its_layers() {
    require_vm!();
    let work = tempfile::tempdir().unwrap();
    let Some(layout) = test_layout(work.path()) else { return };
    let Some(registry) = nestbox_testkit::registry::Registry::start(None).map(Registry) else {
        eprintln!("skipped: docker-registry is not installed (apt-get install docker-registry)");
        return;
    };
    let manifest = registry.push_layout(&layout, "test/app", "1");
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap()["sha256:".len()..][..12].to_owned())
        .collect();
    assert_eq!(layers.len(), 2);

    let home = Home::new();
    let reference = format!("{}/test/app:1", registry.0.host());
    let out = home.output(["image", "pull", "--insecure-registry", registry.0.host(), &reference]);
    assert!(out.status.success(), "{}\nregistry log:\n{}", stderr(&out), registry.0.log());
    drop(registry);
    let id = stdout(&out).trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");

    // Not on a terminal: plain lines, one per layer pulled and one per layer unpacked, in order,
    // besides the phases.
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with("nestbox: ")), "{err}");
    let at = |line: String| {
        let found: Vec<usize> =
            lines.iter().enumerate().filter(|(_, l)| l.starts_with(&line)).map(|(i, _)| i).collect();
        assert_eq!(found.len(), 1, "{line:?} once in:\n{err}");
        found[0]
    };
    let pulling = at(format!("nestbox: pulling {reference}"));
    let unpacking = at("nestbox: unpacking ".to_owned());
    let mut last = unpacking;
    for layer in &layers {
        let pulled = at(format!("nestbox: pulled layer {layer} ("));
        assert!(pulling < pulled && pulled < unpacking, "{err}");
        let unpacked = at(format!("nestbox: unpacked layer {layer} ("));
        assert!(unpacked > last, "the layers unpacked out of order:\n{err}");
        last = unpacked;
    }
    let building = at("nestbox: building the ext4 image".to_owned());
    assert!(building > last, "{err}");
    assert!(lines.len() <= 2 * layers.len() + 4, "more than the phases and a line per layer:\n{err}");

    let ls = ok(&home, &["image", "ls"]);
    assert!(ls.contains("test/app:1"), "{ls}");
    let meta: serde_json::Value = serde_json::from_str(&ok(&home, &["image", "inspect", "test/app:1"])).unwrap();
    assert_eq!(meta["id"], id.as_str(), "{meta}");

    // The pulled image's layers, whiteout, env and working directory, as imported ones.
    let out = ok(
        &home,
        &[
            "run",
            "--image",
            "test/app:1",
            "--memory",
            "256M",
            "--",
            "sh",
            "-c",
            "cat /etc/marker; echo $GREETING; pwd; ls /etc",
        ],
    );
    assert_eq!(out, "v2\nfrom-image\n/etc\nmarker\n", "{out}");
    ok(&home, &["image", "rm", "test/app:1"]);
    home.assert_clean();
}
