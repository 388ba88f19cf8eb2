//! Cloud images end to end: a Debian cloud image (GPT, EFI system partition with systemd-boot,
//! cloud-init), built by `tests/fixtures/build-cloud-image.sh` as the distribution's own are laid
//! out, boots under QEMU with OVMF. Its seed names the host, authorizes a key, mounts a volume
//! and starts the agent; the disk grows to `--disk-size`; stop presses the ACPI power button; the
//! agent comes back after a restart. Bad input is refused before anything is made.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Home, ok, shared_cache, stderr};
use crate::require_vm;

/// Why the cloud image cannot be built or booted here, if it cannot.
fn missing_cloud_prerequisite() -> Option<String> {
    for (tool, package) in [
        ("mmdebstrap", "mmdebstrap"),
        ("sfdisk", "fdisk"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("qemu-img", "qemu-utils"),
    ] {
        if nestbox_supervise::find_program(tool).is_none() {
            return Some(format!("{tool} is not installed (package {package})"));
        }
    }
    if !Path::new("/usr/share/ovmf/OVMF.fd").exists() {
        return Some("OVMF is not installed (package ovmf)".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("building the cloud image needs root (mmdebstrap --mode=root)".into());
    }
    None
}

/// The test cloud image, built once per target directory.
fn cloud_image() -> PathBuf {
    let image = shared_cache().join("debian-cloud.qcow2");
    if !image.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/build-cloud-image.sh");
        let out = Command::new("bash").arg(script).arg(&image).output().unwrap();
        assert!(out.status.success(), "building the cloud image: {}", String::from_utf8_lossy(&out.stderr));
    }
    image
}

/// An ext4 volume holding `marker`.
fn volume(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("marker"), "on the volume\n").unwrap();
    let file = dir.join("vol.ext4");
    let out = Command::new("mkfs.ext4").args(["-q", "-d"]).arg(&tree).arg(&file).arg("16M").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    file
}

#[test]
fn test_a_cloud_image_boots_with_its_seed_grows_stops_on_acpi_and_restarts() {
    require_vm!();
    if let Some(why) = missing_cloud_prerequisite() {
        eprintln!("skipped: {why}");
        return;
    }
    let home = Home::new();
    let image = cloud_image();
    let id = ok(&home, &["image", "import", image.to_str().unwrap(), "--name", "cloud"]).trim().to_owned();
    let ls = ok(&home, &["image", "ls"]);
    assert!(ls.lines().any(|l| l.contains("cloud:latest") && l.contains("cloud-qcow2")), "{ls}");
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2eTestKeyForNestboxCloudImages0000000000 test@nestbox";
    let vol = volume(home.path());
    let volume_arg = format!("{}:/data:ro", vol.display());
    let sb = ok(
        &home,
        &[
            "run",
            "-d",
            "--name",
            "web_1",
            "--image",
            "cloud",
            "--memory",
            "1G",
            "--disk-size",
            "2G",
            "--ssh-key",
            key,
            "-v",
            &volume_arg,
        ],
    )
    .trim()
    .to_owned();
    let inspect: serde_json::Value = serde_json::from_str(&ok(&home, &["inspect", &sb])).unwrap();
    assert_eq!(inspect["config"]["disk"]["image"], id.as_str(), "{inspect}");
    assert_eq!(inspect["config"]["disk"]["kind"], "cloud-qcow2", "{inspect}");

    // cloud-init finishes after the agent is up: wait for it, then look at what the seed did.
    let facts = ok(
        &home,
        &[
            "exec",
            &sb,
            "--",
            "sh",
            "-c",
            "cloud-init status --wait >/dev/null; hostname; cat /var/lib/cloud/data/instance-id; \
             cat /root/.ssh/authorized_keys; cat /data/marker; df -m --output=size / | tail -n1",
        ],
    );
    let lines: Vec<&str> = facts.lines().collect();
    assert_eq!(lines[0], "web-1", "the hostname is the sandbox name made valid: {facts}");
    assert_eq!(lines[1], sb, "the instance id is the sandbox id: {facts}");
    assert!(facts.contains(key), "the key is authorized: {facts}");
    assert!(facts.contains("on the volume"), "the volume is mounted: {facts}");
    let root_mib: u64 = lines.last().unwrap().trim().parse().unwrap();
    assert!(root_mib > 1500, "the root filesystem grew to the 2G disk: {root_mib} MiB\n{facts}");

    // Stop presses the power button; the guest's logind answers it with an orderly shutdown.
    ok(&home, &["stop", &sb]);
    let exit: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.path().join("sandboxes").join(&sb).join("exit.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(exit["state"], "stopped", "{exit}");

    // The agent comes back on the next boot, and the journal of the last one shows the button.
    ok(&home, &["start", &sb]);
    let journal = ok(&home, &["exec", &sb, "--", "journalctl", "-b", "-1", "--no-pager", "-o", "cat"]);
    assert!(journal.contains("Power key pressed"), "the last boot ended on the power button");
    let out = home.output(["rm", "-f", &sb]);
    assert!(out.status.success(), "{}", stderr(&out));
    home.assert_clean();
}

/// A raw "cloud image" that only has to be recognized: an MBR signature, nothing bootable.
fn fake_raw_disk(dir: &Path) -> PathBuf {
    let mut disk = vec![0u8; 1 << 20];
    disk[510] = 0x55;
    disk[511] = 0xaa;
    let path = dir.join("disk.raw");
    std::fs::write(&path, disk).unwrap();
    path
}

#[test]
fn test_cloud_image_bad_input_is_refused_before_anything_is_made() {
    require_vm!();
    let home = Home::new();
    let raw = fake_raw_disk(home.path());
    ok(&home, &["image", "import", raw.to_str().unwrap(), "--name", "fake"]);
    let ls = ok(&home, &["image", "ls"]);
    assert!(ls.contains("cloud-raw"), "{ls}");

    let fake_fc = home.path().join("firecracker");
    std::fs::write(&fake_fc, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&fake_fc, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cases: Vec<(Vec<String>, &str, i32)> = vec![
        (
            vec!["--hypervisor".into(), "firecracker".into(), "--hypervisor-bin".into(), fake_fc.display().to_string()],
            "firmware",
            125,
        ),
        (vec!["--firmware".into(), "/nonexistent/OVMF.fd".into()], "/nonexistent/OVMF.fd", 125),
        (vec!["--ssh-key".into(), "/nonexistent/key.pub".into()], "--ssh-key", 125),
    ];
    for (extra, named, code) in cases {
        let mut args = vec!["create".to_owned(), "--image".into(), "fake".into()];
        args.extend(extra);
        let out = home.output(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(named), "{args:?} must name {named}: {err}");
    }
    let ps = ok(&home, &["ps", "-a", "--format", "json"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&ps).unwrap(), serde_json::json!([]), "nothing was made");

    // Cloud-only flags on a root filesystem image are a usage error.
    let rootfs = home.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hostname"), "x\n").unwrap();
    ok(&home, &["image", "import", rootfs.to_str().unwrap(), "--name", "plain"]);
    let out = home.output(["create", "--image", "plain", "--ssh-key", "ssh-ed25519 AAAA k"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cloud images"), "{}", stderr(&out));

    // A qcow2 that needs its backing file is not stored.
    if nestbox_supervise::find_program("qemu-img").is_some() {
        let layered = home.path().join("layered.qcow2");
        let made = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&raw)
            .arg(&layered)
            .status()
            .unwrap();
        assert!(made.success());
        let out = home.output(["image", "import", layered.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(125));
        assert!(stderr(&out).contains("backing file"), "{}", stderr(&out));
        let images: serde_json::Value = serde_json::from_str(&ok(&home, &["image", "ls", "--format", "json"])).unwrap();
        assert_eq!(images.as_array().map(Vec::len), Some(2), "only the two good images: {images}");
    }
}
