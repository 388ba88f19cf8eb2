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

/// The kernel argument naming a data disk and where it goes: `DEVICE:PATH:ro|rw`.
pub const VOLUME_PARAM: &str = "nestbox.volume=";

/// A data disk to mount.
#[derive(Debug, PartialEq, Eq)]
pub struct VolumeMount<'a> {
    device: &'a str,
    path: &'a str,
    readonly: bool,
}

/// The data disks `cmdline` names, in order; malformed ones are skipped.
pub fn volumes(cmdline: &str) -> Vec<VolumeMount<'_>> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix(VOLUME_PARAM))
        .filter_map(|v| {
            let mut parts = v.split(':');
            let (device, path, mode) = (parts.next()?, parts.next()?, parts.next().unwrap_or("rw"));
            (device.starts_with("/dev/") && path.starts_with('/')).then_some(VolumeMount {
                device,
                path,
                readonly: mode == "ro",
            })
        })
        .collect()
}

/// Mounts the data disks `/proc/cmdline` names (ext4), after the root is in place. A volume
/// that cannot be mounted is logged; the guest runs on without it.
pub fn mount_volumes_from_cmdline() {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for v in volumes(&cmdline) {
        let deadline = Instant::now() + DEVICE_WAIT;
        while !Path::new(v.device).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = std::fs::create_dir_all(v.path);
        let flags = if v.readonly { MsFlags::MS_RDONLY } else { MsFlags::empty() };
        let mut mounted = mount(Some(v.device), v.path, Some("ext4"), flags, None::<&str>);
        if mounted.is_err() && v.readonly {
            // A disk whose last user did not unmount it has a journal to replay, which a
            // read-only device cannot do: mount what was checkpointed.
            mounted = mount(Some(v.device), v.path, Some("ext4"), flags, Some("noload"));
        }
        match mounted {
            Ok(()) => log::trace(&format!("mounted {} on {}", v.device, v.path)),
            Err(e) => log::error(&format!("mount {} on {}: {e}", v.device, v.path)),
        }
    }
}

/// Unmounts the data disks and remounts a disk root read-only, before power-off: what is not
/// unmounted cleanly leaves a journal to replay, and a read-only disk cannot replay it.
pub fn unmount_all() {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for v in volumes(&cmdline).iter().rev() {
        if let Err(e) = nix::mount::umount(v.path) {
            log::error(&format!("umount {}: {e}", v.path));
            let _ = mount(None::<&str>, v.path, None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>);
        }
    }
    if root_device(&cmdline).is_some() {
        let ro = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, "/", None::<&str>, ro, None::<&str>) {
            log::error(&format!("remount / read-only: {e}"));
        }
    }
}

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
    // A disk made larger than its image (`--disk-size`): the filesystem follows, online.
    if let Err(e) = grow_to_device(NEW_ROOT, device) {
        log::error(&format!("growing the root filesystem: {e}"));
    }
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

nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

/// Grows the ext4 filesystem mounted at `mountpoint` to fill `device`, when the device is
/// larger (the kernel resizes it online: `EXT4_IOC_RESIZE_FS`).
fn grow_to_device(mountpoint: &str, device: &str) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let name = Path::new(device).file_name().and_then(|n| n.to_str()).ok_or("no device name")?;
    let sectors: u64 = std::fs::read_to_string(format!("/sys/block/{name}/size"))
        .map_err(|e| format!("size of {device}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("size of {device}: {e}"))?;
    let mut superblock = [0u8; 1024];
    let mut dev = std::fs::File::open(device).map_err(|e| format!("open {device}: {e}"))?;
    dev.seek(SeekFrom::Start(1024))
        .and_then(|_| dev.read_exact(&mut superblock))
        .map_err(|e| format!("read {device}: {e}"))?;
    let (blocks, block_size) = ext4_size(&superblock).ok_or("not an ext4 superblock")?;
    let fits = sectors * 512 / block_size;
    if fits <= blocks {
        return Ok(());
    }
    let dir = std::fs::File::open(mountpoint).map_err(|e| format!("open {mountpoint}: {e}"))?;
    // SAFETY: the ioctl reads one u64 we own; the descriptor is open on the mounted filesystem.
    unsafe { ext4_resize_fs(std::os::fd::AsRawFd::as_raw_fd(&dir), &fits) }
        .map_err(|e| format!("resize to {fits} blocks: {e}"))?;
    log::trace(&format!("root filesystem grown from {blocks} to {fits} blocks"));
    Ok(())
}

/// The block count and block size an ext4 superblock (the 1024 bytes at offset 1024) gives.
fn ext4_size(sb: &[u8; 1024]) -> Option<(u64, u64)> {
    let u32_at = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().expect("4 bytes"));
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return None;
    }
    let incompat_64bit = u32_at(0x60) & 0x80 != 0;
    let hi = if incompat_64bit { u64::from(u32_at(0x150)) } else { 0 };
    let blocks = (hi << 32) | u64::from(u32_at(0x4));
    let block_size = 1024u64 << u32_at(0x18);
    Some((blocks, block_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ext4_size_reads_the_superblock() {
        let mut sb = [0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[0x4..0x8].copy_from_slice(&1000u32.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(ext4_size(&sb), Some((1000, 4096)));
        sb[0x60..0x64].copy_from_slice(&0x80u32.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(ext4_size(&sb), Some(((1 << 32) + 1000, 4096)));
        sb[0x38] = 0;
        assert_eq!(ext4_size(&sb), None);
    }

    #[test]
    fn test_ext4_size_matches_what_mkfs_made() {
        let Ok(dir) = tempfile::tempdir() else { return };
        let img = dir.path().join("fs.ext4");
        let made =
            std::process::Command::new("mkfs.ext4").args(["-q", "-F", "-b", "4096"]).arg(&img).arg("64M").status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mkfs.ext4 is not available");
            return;
        }
        let bytes = std::fs::read(&img).unwrap();
        let sb: [u8; 1024] = bytes[1024..2048].try_into().unwrap();
        assert_eq!(ext4_size(&sb), Some((16384, 4096)));
    }

    #[test]
    fn test_volumes_read_device_path_and_mode() {
        let got =
            volumes("quiet nestbox.volume=/dev/vdb:/data:ro nestbox.volume=/dev/vdc:/srv/x:rw nestbox.volume=bad");
        assert_eq!(
            got,
            vec![
                VolumeMount { device: "/dev/vdb", path: "/data", readonly: true },
                VolumeMount { device: "/dev/vdc", path: "/srv/x", readonly: false },
            ]
        );
    }

    #[test]
    fn test_root_device_takes_the_last_dev_path() {
        assert_eq!(root_device("console=ttyS0 nestbox.root=/dev/vda quiet"), Some("/dev/vda"));
        assert_eq!(root_device("nestbox.root=/dev/vda nestbox.root=/dev/vdb"), Some("/dev/vdb"));
        assert_eq!(root_device("console=ttyS0"), None);
        assert_eq!(root_device("nestbox.root=vda"), None, "only device paths");
    }
}
