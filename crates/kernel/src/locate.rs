//! Where the guest kernel comes from. In order: the explicit path (`--kernel`), then
//! `<home>/kernels/vmlinux`, then the host's `/boot/vmlinuz-<version>`, newest version first,
//! preferring one whose `/lib/modules/<version>` exists. The `/boot` and `/lib/modules` roots are
//! injectable ([`SearchRoots`]) so tests can fake a host.

use std::cmp::Ordering;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::KernelError;
use crate::cache::KERNELS_DIR;

/// The host's boot directory.
pub const DEFAULT_BOOT_DIR: &str = "/boot";
/// The host's module tree.
pub const DEFAULT_MODULES_DIR: &str = "/lib/modules";
/// File name prefix of the host's kernels in the boot directory.
pub const BOOT_KERNEL_PREFIX: &str = "vmlinuz-";
/// File name of a user-provided kernel under `<home>/kernels/`.
pub const HOME_KERNEL_FILE: &str = "vmlinux";
/// Name suffixes of package-manager leftovers and backups, never booted.
const IGNORED_SUFFIXES: &[&str] = &[".old", ".bak", ".sig"];

/// The host directories the search looks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRoots {
    /// Holds `vmlinuz-<version>` files.
    pub boot: PathBuf,
    /// Holds `<version>/` module trees.
    pub modules: PathBuf,
}

impl SearchRoots {
    /// The real host: `/boot` and `/lib/modules`.
    pub fn host() -> Self {
        Self { boot: PathBuf::from(DEFAULT_BOOT_DIR), modules: PathBuf::from(DEFAULT_MODULES_DIR) }
    }

    /// `<modules>/<version>` when that directory exists.
    pub fn modules_dir(&self, version: &str) -> Option<PathBuf> {
        let dir = self.modules.join(version);
        dir.is_dir().then_some(dir)
    }
}

impl Default for SearchRoots {
    fn default() -> Self {
        Self::host()
    }
}

/// Which rule found the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelOrigin {
    /// Passed explicitly.
    Explicit,
    /// `<home>/kernels/vmlinux`.
    Home,
    /// The host's boot directory.
    Boot,
}

/// A kernel file chosen by [`locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundKernel {
    /// The file.
    pub path: PathBuf,
    /// Which rule found it.
    pub origin: KernelOrigin,
    /// The release, when the file name says it (boot directory only).
    pub version: Option<String>,
}

/// `<home>/kernels/vmlinux`.
pub fn home_kernel(home: &Path) -> PathBuf {
    home.join(KERNELS_DIR).join(HOME_KERNEL_FILE)
}

/// Picks the kernel to boot; see the module docs for the order.
pub fn locate(explicit: Option<&Path>, home: &Path, roots: &SearchRoots) -> Result<FoundKernel, KernelError> {
    if let Some(path) = explicit {
        return Ok(FoundKernel { path: path.to_path_buf(), origin: KernelOrigin::Explicit, version: None });
    }
    let home_path = home_kernel(home);
    if home_path.is_file() {
        return Ok(FoundKernel { path: home_path, origin: KernelOrigin::Home, version: None });
    }
    let candidates = boot_kernels(&roots.boot)?;
    let chosen =
        candidates.iter().find(|(_, version)| roots.modules_dir(version).is_some()).or_else(|| candidates.first());
    match chosen {
        Some((path, version)) => {
            Ok(FoundKernel { path: path.clone(), origin: KernelOrigin::Boot, version: Some(version.clone()) })
        }
        None => {
            Err(KernelError::NotFound { searched: vec![home_path, roots.boot.join(format!("{BOOT_KERNEL_PREFIX}*"))] })
        }
    }
}

/// The `vmlinuz-<version>` files in `boot` with their versions, newest first. A missing
/// directory has none.
pub fn boot_kernels(boot: &Path) -> Result<Vec<(PathBuf, String)>, KernelError> {
    let list_err = |source| KernelError::ListDir { path: boot.to_path_buf(), source };
    let entries = match fs::read_dir(boot) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(list_err(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(list_err)?;
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(|n| n.strip_prefix(BOOT_KERNEL_PREFIX)) else {
            continue;
        };
        let ignored =
            version.is_empty() || version.contains(".dpkg-") || IGNORED_SUFFIXES.iter().any(|s| version.ends_with(s));
        let path = entry.path();
        if ignored || !path.is_file() {
            continue;
        }
        found.push((path, version.to_owned()));
    }
    found.sort_by(|a, b| compare_versions(&b.1, &a.1));
    Ok(found)
}

/// Orders kernel releases: runs of digits compare as numbers, letters as text, a number sorts
/// after text (`6.1.0-10` > `6.1.0-9` > `6.1.0-rc1`), separators only split.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (chunks(a), chunks(b));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (is_number(x), is_number(y)) {
                    (true, true) => compare_numbers(x, y),
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    (false, false) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// Splits into maximal runs of ASCII digits and of other alphanumerics; separators (`.`, `-`,
/// `+`, ...) only split.
fn chunks(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(|c: char| !c.is_alphanumeric());
        let first = rest.chars().next()?;
        let digit = first.is_ascii_digit();
        let end = rest.find(|c: char| !c.is_alphanumeric() || c.is_ascii_digit() != digit).unwrap_or(rest.len());
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

fn is_number(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// Compares digit strings of any length without parsing them.
fn compare_numbers(x: &str, y: &str) -> Ordering {
    let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"k").unwrap();
    }

    fn roots(dir: &Path) -> SearchRoots {
        SearchRoots { boot: dir.join("boot"), modules: dir.join("modules") }
    }

    #[test]
    fn test_compare_versions_numeric() {
        let mut v = vec!["6.1.0-9-amd64", "6.10.0-1-amd64", "6.1.0-56-cloud-amd64", "6.9.12", "6.1.0-rc1", "5.19"];
        v.sort_by(|a, b| compare_versions(b, a));
        assert_eq!(v, ["6.10.0-1-amd64", "6.9.12", "6.1.0-56-cloud-amd64", "6.1.0-9-amd64", "6.1.0-rc1", "5.19"]);
        assert_eq!(compare_versions("6.1", "6.1.0"), Ordering::Less);
        assert_eq!(compare_versions("6.01", "6.1"), Ordering::Equal);
        assert_eq!(compare_versions("1.99999999999999999999999", "1.100000000000000000000000"), Ordering::Less);
    }

    #[test]
    fn test_locate_explicit_wins_even_if_missing() {
        let dir = tempfile::tempdir().unwrap();
        let r = roots(dir.path());
        touch(&home_kernel(dir.path()));
        let found = locate(Some(Path::new("/nonexistent/k")), dir.path(), &r).unwrap();
        assert_eq!(found.origin, KernelOrigin::Explicit);
        assert_eq!(found.path, Path::new("/nonexistent/k"));
    }

    #[test]
    fn test_locate_home_kernel_before_boot() {
        let dir = tempfile::tempdir().unwrap();
        let r = roots(dir.path());
        touch(&r.boot.join("vmlinuz-6.1.0"));
        touch(&home_kernel(dir.path()));
        let found = locate(None, dir.path(), &r).unwrap();
        assert_eq!(found.origin, KernelOrigin::Home);
        assert_eq!(found.version, None);
    }

    #[test]
    fn test_locate_boot_prefers_newest_with_modules() {
        let dir = tempfile::tempdir().unwrap();
        let r = roots(dir.path());
        for v in ["6.1.0-9-amd64", "6.1.0-10-amd64", "6.1.0-11-amd64", "6.1.0-12-amd64.old"] {
            touch(&r.boot.join(format!("vmlinuz-{v}")));
        }
        touch(&r.boot.join("config-6.1.0-99"));
        fs::create_dir_all(r.boot.join("vmlinuz-7.0-a-directory")).unwrap();

        // No module trees: the newest file wins.
        let found = locate(None, dir.path(), &r).unwrap();
        assert_eq!(found.version.as_deref(), Some("6.1.0-11-amd64"));
        assert_eq!(found.origin, KernelOrigin::Boot);

        // Modules only for older ones: the newest of those wins.
        fs::create_dir_all(r.modules.join("6.1.0-9-amd64")).unwrap();
        fs::create_dir_all(r.modules.join("6.1.0-10-amd64")).unwrap();
        let found = locate(None, dir.path(), &r).unwrap();
        assert_eq!(found.version.as_deref(), Some("6.1.0-10-amd64"));
        assert_eq!(found.path, r.boot.join("vmlinuz-6.1.0-10-amd64"));
    }

    #[test]
    fn test_locate_not_found_lists_searched_places() {
        let dir = tempfile::tempdir().unwrap();
        let r = roots(dir.path());
        let err = locate(None, dir.path(), &r).unwrap_err();
        let KernelError::NotFound { searched } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(searched, &[home_kernel(dir.path()), r.boot.join("vmlinuz-*")]);
        assert!(err.to_string().contains("linux-image-cloud-amd64"));
    }

    #[test]
    fn test_boot_kernels_reports_unlistable_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        touch(&file);
        assert!(matches!(boot_kernels(&file), Err(KernelError::ListDir { .. })));
    }
}
