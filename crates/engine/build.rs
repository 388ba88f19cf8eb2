//! Builds the guest agent as a static binary and hands its path to the engine, which embeds it.
//!
//! The agent runs as PID 1 inside the guest, where no host library exists, so it is linked
//! statically (`+crt-static` on glibc). Cargo cannot build one package for two link modes in a
//! single invocation, so this runs a nested `cargo build` of `nestbox-agent` for the explicit
//! target triple (which keeps `+crt-static` off build scripts and proc macros) into its own
//! target directory (so it never waits on the outer build's lock).
//!
//! `NESTBOX_AGENT_BIN=/path/to/nestbox-agent` skips the nested build and embeds that file.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    println!("cargo:rerun-if-env-changed=NESTBOX_AGENT_BIN");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dest = out.join("nestbox-agent");
    if let Some(prebuilt) = env::var_os("NESTBOX_AGENT_BIN") {
        println!("cargo:rerun-if-changed={}", Path::new(&prebuilt).display());
        std::fs::copy(&prebuilt, &dest).expect("copy NESTBOX_AGENT_BIN");
        return;
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().and_then(Path::parent).expect("workspace root").to_path_buf();
    for dir in ["crates/agent", "crates/agent-protocol"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).join("src").display());
        println!("cargo:rerun-if-changed={}", workspace.join(dir).join("Cargo.toml").display());
    }
    println!("cargo:rerun-if-changed={}", workspace.join("Cargo.lock").display());

    // <target-dir>/<profile>/build/<pkg>/out → <target-dir>/agent
    let target_dir = out.ancestors().nth(4).map(|p| p.join("agent")).unwrap_or_else(|| out.join("agent-target"));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--release", "--locked", "-p", "nestbox-agent", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    // Build-script variables of the outer build must not leak into the inner one.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key == "RUSTFLAGS" || key == "RUSTC_WRAPPER" {
            cmd.env_remove(&key);
        }
    }
    // Static (no dynamic loader in the guest), not position-independent (no start-up
    // relocation), stripped and LTO'd: the agent ships in every guest image, and under
    // emulation every byte unpacked and every relocation applied costs boot time.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static\x1f-Crelocation-model=static\x1f-Cstrip=symbols")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1");
    let status = cmd.status().expect("run cargo for the guest agent");
    assert!(status.success(), "building the static guest agent failed ({status})");
    let built = target_dir.join(TARGET).join("release").join("nestbox-agent");
    std::fs::copy(&built, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
}
