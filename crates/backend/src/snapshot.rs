//! What backends exchange with the engine about snapshots: the files a snapshot leaves, and how
//! a restore maps the guest's memory. The snapshot's manifest, its checksums and archives are the
//! engine's (crate `snapshot`); a backend only writes and reads its own files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Operation;

/// How a restored VM gets its memory from the snapshot's memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestoreMode {
    /// All memory is read (copied) before the guest resumes.
    Copy,
    /// Pages are served on first touch through userfaultfd.
    Lazy,
    /// The memory file is mapped copy-on-write: nothing is copied, writes stay private.
    Shared,
}

impl RestoreMode {
    /// The capability a backend needs for this mode.
    pub fn operation(self) -> Operation {
        match self {
            RestoreMode::Copy => Operation::RestoreCopy,
            RestoreMode::Lazy => Operation::RestoreLazy,
            RestoreMode::Shared => Operation::RestoreShared,
        }
    }
}

impl std::fmt::Display for RestoreMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RestoreMode::Copy => "copy",
            RestoreMode::Lazy => "lazy",
            RestoreMode::Shared => "shared",
        })
    }
}

impl std::str::FromStr for RestoreMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "copy" => Ok(RestoreMode::Copy),
            "lazy" => Ok(RestoreMode::Lazy),
            "shared" => Ok(RestoreMode::Shared),
            other => Err(format!("unknown restore mode {other:?}: expected copy, lazy or shared")),
        }
    }
}

/// The files a backend wrote for a snapshot, in the directory it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFiles {
    /// The guest memory, when it is a file of its own (else it is inside `state`).
    pub memory: Option<PathBuf>,
    /// The device state (and, without `memory`, the memory too).
    pub state: PathBuf,
}

/// Where a restore reads from, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSource {
    /// The snapshot's files.
    pub files: SnapshotFiles,
    /// How memory is mapped.
    pub mode: RestoreMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_modes_parse_display_and_need_their_operation() {
        for mode in [RestoreMode::Copy, RestoreMode::Lazy, RestoreMode::Shared] {
            assert_eq!(mode.to_string().parse::<RestoreMode>(), Ok(mode));
        }
        assert!("eager".parse::<RestoreMode>().unwrap_err().contains("eager"));
        assert_eq!(RestoreMode::Lazy.operation(), Operation::RestoreLazy);
    }
}
