//! Handing over from the initramfs to a root filesystem on a disk (`nestbox.root=/dev/vda`).
//!
//! The initramfs has loaded the block driver; the agent then mounts the disk (ext4) at
//! `/newroot`, moves the kernel filesystems it mounted (`/dev`, `/proc`, `/sys`, `/run`, `/tmp`)
//! onto it, makes it `/` (`MS_MOVE` + `chroot`, as `switch_root` does) and carries on as PID 1
//! there: execs then find the image's own programs. The image needs nothing from nestbox; the
//! directories the moves need are created when missing.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{MsFlags, mount};

use crate::log;

/// The kernel argument naming the root disk.
pub const ROOT_PARAM: &str = "nestbox.root=";
/// Where the disk is mounted before it becomes `/`.
const NEW_ROOT: &str = "/newroot";
/// Mounts of the initramfs that move to the new root.
const MOVED: [&str; 5] = ["/dev", "/proc", "/sys", "/run", "/tmp"];
/// How long the disk may take to appear after its driver loaded.
const DEVICE_WAIT: Duration = Duration::from_secs(10);

/// The root device `cmdline` names, if any.
pub fn root_device(cmdline: &str) -> Option<&str> {
    cmdline.split_whitespace().rev().find_map(|w| w.strip_prefix(ROOT_PARAM)).filter(|d| d.starts_with("/dev/"))
}

/// Switches to the root disk `/proc/cmdline` names; does nothing without one. A failure is
/// fatal for the guest (the caller powers off): a sandbox must not run on the wrong root.
pub fn switch_from_cmdline() -> Result<(), String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let Some(device) = root_device(&cmdline) else { return Ok(()) };
    let deadline = Instant::now() + DEVICE_WAIT;
    while !Path::new(device).exists() {
        if Instant::now() > deadline {
            return Err(format!("root disk {device} did not appear within {DEVICE_WAIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::create_dir_all(NEW_ROOT).map_err(|e| format!("mkdir {NEW_ROOT}: {e}"))?;
    mount(Some(device), NEW_ROOT, Some("ext4"), MsFlags::empty(), None::<&str>)
        .map_err(|e| format!("mount {device} on {NEW_ROOT}: {e}"))?;
    for m in MOVED {
        let target = format!("{NEW_ROOT}{m}");
        let _ = std::fs::create_dir_all(&target);
        if let Err(e) = mount(Some(m), target.as_str(), None::<&str>, MsFlags::MS_MOVE, None::<&str>) {
            log::error(&format!("move {m}: {e}"));
        }
    }
    std::env::set_current_dir(NEW_ROOT).map_err(|e| format!("chdir {NEW_ROOT}: {e}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("move the new root: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    log::trace("switched root");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_root_device_takes_the_last_dev_path() {
        assert_eq!(root_device("console=ttyS0 nestbox.root=/dev/vda quiet"), Some("/dev/vda"));
        assert_eq!(root_device("nestbox.root=/dev/vda nestbox.root=/dev/vdb"), Some("/dev/vdb"));
        assert_eq!(root_device("console=ttyS0"), None);
        assert_eq!(root_device("nestbox.root=vda"), None, "only device paths");
    }
}
