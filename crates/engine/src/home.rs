//! `$NESTBOX_HOME`: the one root under which nestbox keeps its state.
//!
//! ```text
//! $NESTBOX_HOME           root: /var/lib/nestbox; others: $XDG_DATA_HOME/nestbox
//!   kernels/              PVH vmlinux files extracted from bzImages, by content hash
//!   images/initramfs/     built default guest images (initramfs), by content hash
//!   images/rootfs/        root filesystem images (ext4) for sandboxes, by content hash
//!   cache/                host probes (is KVM usable?)
//!   state.db              the sandbox index (SQLite, WAL)
//!   locks/<id>.lock       one flock per sandbox, serializing operations on it
//!   sandboxes/<id>/       one persistent sandbox: spec.json, shim.log, control.sock, agent.sock
//!                         (the shim's), vm-agent.sock, api.sock, console.log, hypervisor.log,
//!                         vm.pid, exit.json
//!   run/<id>/             one `nestbox run` VM, removed when the run ends
//! ```

use std::path::{Path, PathBuf};

/// The state root when running as root.
pub const SYSTEM_HOME: &str = "/var/lib/nestbox";
/// The environment variable that overrides the state root.
pub const HOME_ENV: &str = "NESTBOX_HOME";

/// The state root and the well-known directories below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Uses `root` as the state root.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$NESTBOX_HOME`, else the default for this user.
    pub fn from_env() -> Self {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        // SAFETY: geteuid has no preconditions and cannot fail.
        let is_root = unsafe { libc::geteuid() } == 0;
        Self::new(Self::pick(env(HOME_ENV), is_root, env("XDG_DATA_HOME"), env("HOME")))
    }

    fn pick(explicit: Option<PathBuf>, is_root: bool, xdg: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
        explicit.unwrap_or_else(|| {
            if is_root {
                PathBuf::from(SYSTEM_HOME)
            } else {
                xdg.or_else(|| home.map(|h| h.join(".local/share"))).unwrap_or_else(std::env::temp_dir).join("nestbox")
            }
        })
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Extracted kernels.
    pub fn kernels(&self) -> PathBuf {
        self.root.join("kernels")
    }
    /// Images: `initramfs/` (the built default guest images) and `rootfs/` (root filesystem
    /// images for sandboxes).
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    /// The built default guest images (initramfs), by content.
    pub fn initramfs_cache(&self) -> PathBuf {
        self.images().join("initramfs")
    }
    /// Root filesystem images for sandboxes, by content.
    pub fn rootfs_images(&self) -> PathBuf {
        self.images().join("rootfs")
    }
    /// Host probe results.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }
    /// Persistent sandboxes' directories.
    pub fn sandboxes(&self) -> PathBuf {
        self.root.join("sandboxes")
    }
    /// The directories of `nestbox run`'s throw-away VMs.
    pub fn ephemeral(&self) -> PathBuf {
        self.root.join("run")
    }
    /// The sandbox index.
    pub fn state_db(&self) -> PathBuf {
        self.root.join("state.db")
    }
    /// Per-sandbox lock files.
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Where running QEMU sandboxes keep their guest memory (shared files a snapshot copies):
    /// `$NESTBOX_MEMORY_DIR`, else a directory of this home's in `/dev/shm` (memory, no
    /// writeback to disk), else `<root>/memory`.
    pub fn memory_dir(&self) -> PathBuf {
        if let Some(dir) = std::env::var_os("NESTBOX_MEMORY_DIR") {
            return PathBuf::from(dir);
        }
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            let digest = nestbox_image::digest::Digest::of_bytes(self.root.as_os_str().as_encoded_bytes());
            return shm.join(format!("nestbox-{}", &digest.hex()[..12]));
        }
        self.root.join("memory")
    }

    /// Per-sandbox lock files.
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_pick_follows_the_documented_order() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(Home::pick(p("/x"), true, p("/xdg"), p("/h")), PathBuf::from("/x"));
        assert_eq!(Home::pick(None, true, p("/xdg"), p("/h")), PathBuf::from(SYSTEM_HOME));
        assert_eq!(Home::pick(None, false, p("/xdg"), p("/h")), PathBuf::from("/xdg/nestbox"));
        assert_eq!(Home::pick(None, false, None, p("/h")), PathBuf::from("/h/.local/share/nestbox"));
    }
}
