//! Kernel module resolution from a `/lib/modules/<version>` tree, the way `modprobe` reads it.
//!
//! `modules.dep` holds one line per loadable module: `path.ko[.xz|.zst|.gz]: dep.ko other.ko`,
//! paths relative to the tree, each line listing the module's full dependency closure.
//! `modules.builtin` lists modules compiled into the kernel, one path a line. Wanted names match
//! a module's file name with `-` and `_` treated alike. The result puts dependencies first and
//! names each module once, in a stable order; compressed modules are decompressed on the host so
//! the guest needs no decompressor.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// The dependency index inside a modules tree.
pub const MODULES_DEP_FILE: &str = "modules.dep";
/// The list of built-in modules inside a modules tree.
pub const MODULES_BUILTIN_FILE: &str = "modules.builtin";
/// Largest decompressed module accepted, in bytes (the biggest real modules are a few MiB).
pub const MAX_MODULE_BYTES: u64 = 256 * 1024 * 1024;
/// The directory under which a guest finds modules, as in the host layout.
pub const GUEST_MODULES_ROOT: &str = "lib/modules";

/// Errors from resolving or reading kernel modules.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The modules directory has no usable final component to take the kernel version from.
    #[error("cannot take a kernel version from modules directory {dir:?}")]
    BadModulesDir {
        /// The directory given.
        dir: PathBuf,
    },
    /// An index file (`modules.dep`, `modules.builtin`) could not be read.
    #[error("reading {path:?}")]
    ReadIndex {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A `modules.dep` line had no `:` after the module path.
    #[error("{path:?} line {line_no}: no ':' in {line:?}")]
    BadDepLine {
        /// The index file.
        path: PathBuf,
        /// The 1-based line number.
        line_no: usize,
        /// The line.
        line: String,
    },
    /// A listed file does not end in `.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz`.
    #[error("{file:?} is not a kernel module file name")]
    NotAModule {
        /// The listed path.
        file: String,
    },
    /// A listed path leaves the modules tree (`..`, or absolute outside it).
    #[error("module path {file:?} leaves the modules tree")]
    UnsafePath {
        /// The listed path.
        file: String,
    },
    /// A wanted module is neither loadable nor built in.
    #[error("kernel module {name:?} is neither in {MODULES_DEP_FILE} nor in {MODULES_BUILTIN_FILE} of {dir:?}")]
    NotFound {
        /// The wanted name, as given.
        name: String,
        /// The modules directory searched.
        dir: PathBuf,
    },
    /// A module's dependency has no line of its own in `modules.dep`.
    #[error("module {module:?} depends on {dependency:?}, which {MODULES_DEP_FILE} does not list")]
    DependencyNotListed {
        /// The depending module's path.
        module: String,
        /// The dependency's path.
        dependency: String,
    },
    /// Dependencies form a cycle through this module.
    #[error("dependency cycle through module {module:?}")]
    DependencyCycle {
        /// A module on the cycle.
        module: String,
    },
    /// A module file could not be read.
    #[error("reading module {path:?}")]
    ReadModule {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An xz-compressed module did not decompress.
    #[error("decompressing xz module {path:?}")]
    Xz {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: lzma_rs::error::Error,
    },
    /// A zstd-compressed module had a bad frame header.
    #[error("decompressing zstd module {path:?}")]
    Zstd {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ruzstd::decoding::errors::FrameDecoderError,
    },
    /// A gzip- or zstd-compressed module failed while streaming.
    #[error("decompressing {compression:?} module {path:?}")]
    Decompress {
        /// The file.
        path: PathBuf,
        /// Its compression.
        compression: Compression,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A module decompressed to more than [`MAX_MODULE_BYTES`].
    #[error("module {path:?} decompresses to more than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
}

/// How a module file is compressed, from its suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain `.ko`.
    None,
    /// `.ko.xz`.
    Xz,
    /// `.ko.zst`.
    Zstd,
    /// `.ko.gz`.
    Gzip,
}

impl Compression {
    const SUFFIXES: [(&'static str, Compression); 4] = [
        (".ko", Compression::None),
        (".ko.xz", Compression::Xz),
        (".ko.zst", Compression::Zstd),
        (".ko.gz", Compression::Gzip),
    ];

    /// Splits a module path into the part before `.ko` and its compression.
    fn split(path: &str) -> Option<(&str, Compression)> {
        Self::SUFFIXES.iter().find_map(|(suffix, compression)| {
            path.strip_suffix(suffix)
                .filter(|stem| !stem.is_empty() && !stem.ends_with('/'))
                .map(|stem| (stem, *compression))
        })
    }
}

/// One loadable module picked for the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModule {
    /// Its canonical name (`-` written as `_`), e.g. `virtio_rng`.
    pub name: String,
    /// Its path relative to the modules tree, as listed, e.g. `kernel/drivers/virtio/virtio.ko.xz`.
    pub rel_path: String,
    /// Where the file is on the host.
    pub source: PathBuf,
    /// How the file is compressed.
    pub compression: Compression,
}

impl ResolvedModule {
    /// The relative path the plain module is stored at: `rel_path` with any compression
    /// suffix dropped, ending in `.ko`.
    pub fn stored_rel_path(&self) -> String {
        match Compression::split(&self.rel_path) {
            Some((stem, _)) => format!("{stem}.ko"),
            None => self.rel_path.clone(),
        }
    }

    /// Reads the module file as stored on the host (possibly compressed).
    pub fn read_raw(&self) -> Result<Vec<u8>, ModuleError> {
        fs::read(&self.source).map_err(|source| ModuleError::ReadModule { path: self.source.clone(), source })
    }

    /// Decompresses bytes read by [`ResolvedModule::read_raw`] into the plain ELF module.
    pub fn decompress(&self, raw: &[u8]) -> Result<Vec<u8>, ModuleError> {
        let path = || self.source.clone();
        let limited = |reader: &mut dyn Read| -> Result<Vec<u8>, ModuleError> {
            let mut out = Vec::new();
            reader.take(MAX_MODULE_BYTES + 1).read_to_end(&mut out).map_err(|source| ModuleError::Decompress {
                path: path(),
                compression: self.compression,
                source,
            })?;
            Ok(out)
        };
        let out = match self.compression {
            Compression::None => raw.to_vec(),
            Compression::Xz => {
                let mut out = Vec::new();
                lzma_rs::xz_decompress(&mut io::BufReader::new(raw), &mut out)
                    .map_err(|source| ModuleError::Xz { path: path(), source })?;
                out
            }
            Compression::Zstd => {
                let mut decoder = ruzstd::decoding::StreamingDecoder::new(raw)
                    .map_err(|source| ModuleError::Zstd { path: path(), source })?;
                limited(&mut decoder)?
            }
            Compression::Gzip => limited(&mut flate2::read::MultiGzDecoder::new(raw))?,
        };
        if out.len() as u64 > MAX_MODULE_BYTES {
            return Err(ModuleError::TooLarge { path: path(), limit: MAX_MODULE_BYTES });
        }
        Ok(out)
    }
}

/// The modules picked for an image, in load order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The kernel version: the modules directory's final component.
    pub kernel_version: String,
    /// Loadable modules, dependencies first, each once.
    pub modules: Vec<ResolvedModule>,
    /// Wanted names (canonical) skipped because the kernel has them built in.
    pub builtin: Vec<String>,
}

impl Resolution {
    /// The path of a module inside the image, without a leading `/`:
    /// `lib/modules/<version>/<stored_rel_path>`.
    pub fn image_path(&self, module: &ResolvedModule) -> String {
        format!("{GUEST_MODULES_ROOT}/{}/{}", self.kernel_version, module.stored_rel_path())
    }
}

/// Writes a module name the way the kernel compares them: `-` becomes `_`.
pub fn canonical_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The canonical module name of a listed path, e.g. `virtio_rng` for
/// `kernel/drivers/char/hw_random/virtio-rng.ko.xz`.
pub fn module_name(rel_path: &str) -> Option<String> {
    let (stem, _) = Compression::split(rel_path)?;
    let base = stem.rsplit('/').next()?;
    Some(canonical_name(base))
}

/// Resolves `wanted` module names against the tree at `modules_dir`.
///
/// A name found in `modules.dep` brings its dependencies along; a name found only in
/// `modules.builtin` is skipped; a name in neither is an error naming it. A missing
/// `modules.builtin` counts as empty; a missing `modules.dep` is an error.
pub fn resolve(modules_dir: &Path, wanted: &[&str]) -> Result<Resolution, ModuleError> {
    let kernel_version = modules_dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ModuleError::BadModulesDir { dir: modules_dir.to_owned() })?
        .to_owned();

    let dep_path = modules_dir.join(MODULES_DEP_FILE);
    let dep_text = read_index(&dep_path)?;
    let deps = parse_modules_dep(&dep_path, &dep_text, modules_dir)?;
    let builtin_path = modules_dir.join(MODULES_BUILTIN_FILE);
    let builtin = match fs::read_to_string(&builtin_path) {
        Ok(text) => parse_modules_builtin(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
        Err(source) => {
            return Err(ModuleError::ReadIndex { path: builtin_path, source });
        }
    };

    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut by_path: HashMap<&str, usize> = HashMap::new();
    for (i, line) in deps.iter().enumerate() {
        // depmod lists the winning copy of a name first; keep it.
        by_name.entry(line.name.clone()).or_insert(i);
        by_path.entry(line.path.as_str()).or_insert(i);
    }

    let mut order = Vec::new();
    let mut state = vec![Visit::New; deps.len()];
    let mut skipped = Vec::new();
    for name in wanted {
        let canonical = canonical_name(name);
        if let Some(&index) = by_name.get(&canonical) {
            visit(index, &deps, &by_path, &mut state, &mut order)?;
        } else if builtin.contains(&canonical) {
            if !skipped.contains(&canonical) {
                skipped.push(canonical);
            }
        } else {
            return Err(ModuleError::NotFound { name: (*name).to_owned(), dir: modules_dir.to_owned() });
        }
    }

    let modules = order
        .into_iter()
        .map(|i| {
            let line = &deps[i];
            ResolvedModule {
                name: line.name.clone(),
                rel_path: line.path.clone(),
                source: modules_dir.join(&line.path),
                compression: line.compression,
            }
        })
        .collect();
    Ok(Resolution { kernel_version, modules, builtin: skipped })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    New,
    InProgress,
    Done,
}

/// Depth-first post-order walk: a module goes out after all it depends on.
///
/// `modules.dep` lists dependencies so that the last must load first (modprobe loads them in
/// reverse), so they are visited in reverse; every dependency is also visited through its own
/// line, which keeps the order right even for a hand-written index.
fn visit(
    index: usize,
    deps: &[DepLine],
    by_path: &HashMap<&str, usize>,
    state: &mut [Visit],
    order: &mut Vec<usize>,
) -> Result<(), ModuleError> {
    match state[index] {
        Visit::Done => return Ok(()),
        Visit::InProgress => {
            return Err(ModuleError::DependencyCycle { module: deps[index].path.clone() });
        }
        Visit::New => {}
    }
    state[index] = Visit::InProgress;
    for dep in deps[index].deps.iter().rev() {
        let &dep_index = by_path.get(dep.as_str()).ok_or_else(|| ModuleError::DependencyNotListed {
            module: deps[index].path.clone(),
            dependency: dep.clone(),
        })?;
        visit(dep_index, deps, by_path, state, order)?;
    }
    state[index] = Visit::Done;
    order.push(index);
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DepLine {
    path: String,
    name: String,
    compression: Compression,
    deps: Vec<String>,
}

fn read_index(path: &Path) -> Result<String, ModuleError> {
    fs::read_to_string(path).map_err(|source| ModuleError::ReadIndex { path: path.to_owned(), source })
}

fn parse_modules_dep(index_path: &Path, text: &str, modules_dir: &Path) -> Result<Vec<DepLine>, ModuleError> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (module, rest) = line.split_once(':').ok_or_else(|| ModuleError::BadDepLine {
            path: index_path.to_owned(),
            line_no: i + 1,
            line: raw.to_owned(),
        })?;
        let path = relative_module_path(module.trim(), modules_dir)?;
        let deps =
            rest.split_whitespace().map(|d| relative_module_path(d, modules_dir)).collect::<Result<Vec<_>, _>>()?;
        let (_, compression) =
            Compression::split(&path).ok_or_else(|| ModuleError::NotAModule { file: path.clone() })?;
        let name = module_name(&path).ok_or_else(|| ModuleError::NotAModule { file: path.clone() })?;
        lines.push(DepLine { path, name, compression, deps });
    }
    Ok(lines)
}

fn parse_modules_builtin(text: &str) -> BTreeSet<String> {
    text.lines().map(str::trim).filter_map(module_name).collect()
}

/// Makes a listed path relative to the tree (old depmods wrote absolute paths) and refuses
/// anything that would escape it once stored in the image.
fn relative_module_path(listed: &str, modules_dir: &Path) -> Result<String, ModuleError> {
    let unsafe_path = || ModuleError::UnsafePath { file: listed.to_owned() };
    let path = Path::new(listed);
    let rel = if path.is_absolute() { path.strip_prefix(modules_dir).map_err(|_| unsafe_path())? } else { path };
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(unsafe_path());
    }
    rel.to_str().map(str::to_owned).ok_or_else(unsafe_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_module_name_handles_suffixes_and_dashes() {
        assert_eq!(module_name("kernel/drivers/char/hw_random/virtio-rng.ko").as_deref(), Some("virtio_rng"));
        assert_eq!(module_name("a/b/c.ko.zst").as_deref(), Some("c"));
        assert_eq!(module_name("a/b/c.ko.gz").as_deref(), Some("c"));
        assert_eq!(module_name("a/b/c.ko.xz").as_deref(), Some("c"));
        assert_eq!(module_name("a/b/c.o"), None);
        assert_eq!(module_name("a/.ko"), None);
    }

    #[test]
    fn test_stored_rel_path_drops_compression() {
        let m = ResolvedModule {
            name: "x".into(),
            rel_path: "kernel/x.ko.zst".into(),
            source: PathBuf::from("/m/kernel/x.ko.zst"),
            compression: Compression::Zstd,
        };
        assert_eq!(m.stored_rel_path(), "kernel/x.ko");
    }

    #[test]
    fn test_relative_module_path_rejects_escapes() {
        let dir = Path::new("/lib/modules/1.0");
        assert_eq!(relative_module_path("/lib/modules/1.0/kernel/a.ko", dir).unwrap(), "kernel/a.ko");
        assert!(matches!(relative_module_path("/elsewhere/a.ko", dir), Err(ModuleError::UnsafePath { .. })));
        assert!(matches!(relative_module_path("kernel/../../a.ko", dir), Err(ModuleError::UnsafePath { .. })));
    }

    #[test]
    fn test_parse_modules_dep_rejects_line_without_colon() {
        let err = parse_modules_dep(Path::new("dep"), "a.ko: b.ko\nbroken.ko\n", Path::new("/m")).unwrap_err();
        assert!(matches!(err, ModuleError::BadDepLine { line_no: 2, .. }));
    }
}
