//! A guest on a root filesystem from a disk: the agent hands over from the initramfs to an ext4
//! image, and each sandbox writes to its own copy-on-write overlay of the shared base.

use std::path::Path;
use std::process::Command;

use nestbox_agent_client::{AgentClient, ExecRequest};
use nestbox_backend::BackendKind;
use nestbox_engine::Teardown;
use sha2::Digest;

use crate::common::{Home, boot_sandbox_with};
use crate::require_vm;

/// A tiny root: a static busybox and a marker file, as an ext4 image.
fn base_image(dir: &Path) -> Option<std::path::PathBuf> {
    let mkfs = nestbox_supervise::find_program("mkfs.ext4")?;
    nestbox_supervise::find_program("qemu-img")?;
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).exists())?;
    std::fs::copy(busybox, tree.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "sync", "grep"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet)).unwrap();
    }
    std::fs::write(tree.join("etc/marker"), "from the image\n").unwrap();
    let image = dir.join("base.ext4");
    let status = Command::new(mkfs)
        .args(["-q", "-F", "-t", "ext4", "-E", "root_owner=0:0", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("64M")
        .status()
        .unwrap();
    assert!(status.success());
    Some(image)
}

async fn sh(agent: &AgentClient, script: &str) -> String {
    let out = agent.exec(ExecRequest::new(["sh", "-c", script])).await.unwrap().output().await.unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn sha256(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test]
async fn test_sandboxes_boot_on_an_ext4_root_each_with_its_own_overlay() {
    require_vm!();
    let work = tempfile::tempdir().unwrap();
    let Some(base) = base_image(work.path()) else {
        eprintln!("skipped: mkfs.ext4, qemu-img or a static busybox is missing");
        return;
    };
    let before = sha256(&base);
    let home = Home::new();
    let (disk_a, disk_b) = (work.path().join("a.qcow2"), work.path().join("b.qcow2"));
    for disk in [&disk_a, &disk_b] {
        let kind =
            nestbox_engine::disk::overlay(&nestbox_engine::disk::Base::raw(&base), disk, BackendKind::Qemu, None)
                .unwrap();
        assert_eq!(kind, nestbox_engine::disk::OverlayKind::Qcow2);
    }

    let a = boot_sandbox_with(&home, Some(disk_a)).await;
    assert_eq!(sh(a.agent(), "cat /etc/marker").await, "from the image\n");
    let mounts = sh(a.agent(), "cat /proc/mounts").await;
    assert!(mounts.lines().any(|l| l.starts_with("/dev/vda / ext4")), "{mounts}");
    sh(a.agent(), "echo mine > /etc/marker; sync").await;

    let b = boot_sandbox_with(&home, Some(disk_b)).await;
    assert_eq!(sh(b.agent(), "cat /etc/marker").await, "from the image\n", "a write in one sandbox shows in another");
    assert_eq!(sh(a.agent(), "cat /etc/marker").await, "mine\n");

    a.teardown(Teardown::Graceful).await;
    b.teardown(Teardown::Graceful).await;
    assert_eq!(sha256(&base), before, "the base image was written");
    home.assert_clean();
}

#[test]
fn test_volumes_are_mounted_read_write_or_read_only() {
    require_vm!();
    let Some(mkfs) = nestbox_supervise::find_program("mkfs.ext4") else {
        eprintln!("skipped: mkfs.ext4 is missing");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("hello"), "from the volume\n").unwrap();
    let vol = work.path().join("data.ext4");
    let made =
        Command::new(mkfs).args(["-q", "-F", "-E", "root_owner=0:0", "-d"]).arg(&tree).arg(&vol).arg("16M").status();
    assert!(made.unwrap().success());
    let home = Home::new();
    let spec = format!("{}:/data", vol.display());
    let run = |args: &[&str]| home.output([&["run", "--memory", "256M"][..], args].concat());

    let out = run(&["--volume", &spec, "--", "sh", "-c", "cat /data/hello; echo kept > /data/new; sync"]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    assert_eq!(crate::common::stdout(&out), "from the volume\n");
    let out = run(&["--volume", &format!("{spec}:ro"), "--", "sh", "-c", "cat /data/new; echo x > /data/other"]);
    assert_eq!(crate::common::stdout(&out), "kept\n", "a write to a volume lasts");
    assert_ne!(out.status.code(), Some(0), "a read-only volume took a write");

    let out = home.output(["run", "--volume", "/no/such/disk:/data", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(crate::common::stderr(&out).contains("--volume"), "{}", crate::common::stderr(&out));
    let out = home.output(["run", "--volume", &format!("{}:data", vol.display()), "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "a relative guest path is refused");
    home.assert_clean();
}
