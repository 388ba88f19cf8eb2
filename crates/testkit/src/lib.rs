//! Test support shared across crates: spec validators for the hypervisor APIs and fake
//! Firecracker / Cloud Hypervisor API servers that keep the real state machines.
//!
//! - [`spec`]: [`spec::SpecValidator`], requests and replies checked against the official specs.
//! - [`fake`]: [`FakeServer`] and [`Recorded`], the spec-checking, recording socket server.
//! - [`firecracker`], [`chv`]: the fakes' state machines and `serve` functions.
//! - [`guest`]: the real agent served behind a fake's vsock socket (`FAKE_AGENT`).
//! - [`registry`]: a real OCI registry (`docker-registry`) on loopback.
//! - [`fake_binary`]: the stand-in executables (`fake-firecracker`, `fake-cloud-hypervisor`)
//!   for launch and supervision tests of other crates.

pub mod chv;
pub mod fake;
pub mod firecracker;
pub mod guest;
pub mod registry;
pub mod spec;

pub use fake::{FakeServer, Recorded};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// Subdirectory of the test profile directory where [`fake_binary`] builds the fakes.
pub const FAKES_TARGET_SUBDIR: &str = "nestbox-fakes";

/// Why a fake binary could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum FakeBinaryError {
    /// The running executable's path is unknown.
    #[error("cannot locate the running test executable")]
    CurrentExe(#[source] std::io::Error),
    /// cargo could not be started.
    #[error("cannot run {cargo} to build {name}")]
    Spawn {
        /// The cargo command.
        cargo: String,
        /// The binary.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// cargo failed.
    #[error("cargo build of {name} failed ({status}): {stderr}")]
    Build {
        /// The binary.
        name: String,
        /// cargo's exit status.
        status: std::process::ExitStatus,
        /// The tail of cargo's stderr.
        stderr: String,
    },
    /// cargo succeeded but the binary is not where it should be.
    #[error("{} was not produced by cargo", path.display())]
    Missing {
        /// Where it was expected.
        path: PathBuf,
    },
}

/// Path of one of this crate's stand-in executables (`fake-firecracker`,
/// `fake-cloud-hypervisor`), for tests of other crates. Panics when it cannot be provided.
///
/// See [`try_fake_binary`].
pub fn fake_binary(name: &str) -> PathBuf {
    try_fake_binary(name).unwrap_or_else(|e| panic!("fake binary {name}: {e}"))
}

/// Path of a stand-in executable: the one next to the running test executable
/// (`target/debug/<name>`) when it is newer than every source it is built from, otherwise one
/// built now with `cargo build -p nestbox-testkit --bin <name>`. The build goes to its own
/// target directory (`target/debug/nestbox-fakes`), because the `cargo test` that runs us holds
/// the lock on the main one; cargo makes repeated builds no-ops. Done once per name and process.
pub fn try_fake_binary(name: &str) -> Result<PathBuf, FakeBinaryError> {
    static BUILT: OnceLock<Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    // Held across the build so two tests of one process do not build at once.
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().map_err(FakeBinaryError::CurrentExe)?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let exe_dir = exe.parent().unwrap_or(Path::new("."));
    let profile_dir =
        if exe_dir.file_name().is_some_and(|n| n == "deps") { exe_dir.parent().unwrap_or(exe_dir) } else { exe_dir };
    let beside = profile_dir.join(name);
    let path = if is_fresh(&beside) { beside } else { build(name, &profile_dir.join(FAKES_TARGET_SUBDIR))? };
    built.push((name.to_owned(), path.clone()));
    Ok(path)
}

/// The files and directories whose contents go into the fake binaries.
fn sources() -> [PathBuf; 4] {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    let uds = testkit.join("../uds-http");
    [testkit.join("src"), testkit.join("Cargo.toml"), uds.join("src"), uds.join("Cargo.toml")]
}

fn newest_mtime(path: &Path, newest: &mut SystemTime) {
    let Ok(entries) = std::fs::read_dir(path) else {
        if let Ok(m) = std::fs::metadata(path).and_then(|m| m.modified())
            && m > *newest
        {
            *newest = m;
        }
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() {
            newest_mtime(&path, newest);
        } else if let Ok(m) = meta.modified()
            && m > *newest
        {
            *newest = m;
        }
    }
}

/// True when `binary` exists and is newer than every source file of the fakes.
fn is_fresh(binary: &Path) -> bool {
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else {
        return false;
    };
    let mut newest = SystemTime::UNIX_EPOCH;
    for path in sources() {
        newest_mtime(&path, &mut newest);
    }
    built >= newest
}

fn build(name: &str, target_dir: &Path) -> Result<PathBuf, FakeBinaryError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let output = Command::new(&cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(&workspace)
        .args(["-p", "nestbox-testkit", "--bin", name, "--target-dir"])
        .arg(target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .map_err(|source| FakeBinaryError::Spawn { cargo: cargo.clone(), name: name.to_owned(), source })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(FakeBinaryError::Build {
            name: name.to_owned(),
            status: output.status,
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let path = target_dir.join("debug").join(name);
    if path.is_file() { Ok(path) } else { Err(FakeBinaryError::Missing { path }) }
}
