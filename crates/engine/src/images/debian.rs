//! `nestbox image build debian`: a minimal Debian root (with python3) from the host's package
//! mirror, by `mmdebstrap`. No network beyond the mirror is needed.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::EngineError;

/// The suite built when none is named.
pub const DEFAULT_SUITE: &str = "bookworm";
/// The mirror used when the host's apt sources name none.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// What the image holds beyond Debian's `minbase` variant.
pub const PACKAGES: &[&str] = &["python3-minimal", "ca-certificates"];
/// Where the host's deb822 apt sources are.
const HOST_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

/// Builds a Debian `suite` root into `dest` (which must not exist or be empty), from `mirror`
/// or the host's own. On a terminal, mmdebstrap's progress shows; otherwise only its errors.
pub fn build_root(dest: &Path, suite: &str, mirror: Option<&str>, show_progress: bool) -> Result<(), EngineError> {
    let mmdebstrap = nestbox_supervise::find_program("mmdebstrap").ok_or_else(|| {
        EngineError::from(nestbox_backend::BackendError::BinaryNotFound {
            binary: "mmdebstrap".into(),
            package: "mmdebstrap".into(),
        })
    })?;
    let mirror = mirror.map(str::to_owned).or_else(host_mirror).unwrap_or_else(|| DEFAULT_MIRROR.to_owned());
    let mut cmd = Command::new(mmdebstrap);
    cmd.args(["--variant=minbase", "--mode=root", "--format=directory"])
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(if show_progress { "--verbose" } else { "--quiet" })
        .arg(suite)
        .arg(dest)
        .arg(&mirror)
        .stdin(Stdio::null());
    if !show_progress {
        cmd.stdout(Stdio::null());
    }
    let out = cmd.stderr(if show_progress { Stdio::inherit() } else { Stdio::piped() }).output();
    let out = out.map_err(EngineError::io("cannot run mmdebstrap"))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim().to_owned();
        return Err(EngineError::Io {
            context: format!("mmdebstrap {suite} from {mirror} failed ({})", out.status),
            source: std::io::Error::other(last),
        });
    }
    Ok(())
}

/// The first Debian mirror in the host's apt sources, if any.
fn host_mirror() -> Option<String> {
    parse_mirror(&std::fs::read_to_string(HOST_SOURCES).ok()?)
}

/// The first `URIs:` of a deb822 sources file whose path ends in `/debian`.
fn parse_mirror(sources: &str) -> Option<String> {
    sources
        .lines()
        .filter_map(|l| l.trim().strip_prefix("URIs:"))
        .flat_map(str::split_whitespace)
        .find(|uri| uri.trim_end_matches('/').ends_with("/debian"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_mirror_takes_the_debian_archive_not_security() {
        let sources = "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: x\n\n\
                       Types: deb\n# a comment\nURIs: http://mirror.example/debian/\nSuites: bookworm\n";
        assert_eq!(parse_mirror(sources).as_deref(), Some("http://mirror.example/debian/"));
        assert_eq!(parse_mirror("Types: deb\n"), None);
    }
}
