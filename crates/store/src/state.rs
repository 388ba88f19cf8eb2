//! The sandbox life cycle: the states a sandbox can be in and the one function, [`transition`],
//! that decides which moves between them are legal.
//!
//! ```text
//! creating ─► created ─► starting ─► running ⇄ paused
//!                ▲          │           │        │
//!                │          ▼           ▼        ▼
//!   stopped/crashed ◄──── stopping ◄─────────────┘
//! ```
//!
//! Every state that has a live process (starting, running, paused, stopping) may also end in
//! `stopped` (the VM exited on its own) or `crashed` (with a reason). `stopped` and `crashed`
//! sandboxes can be started again. A move to the same state is illegal: pausing a paused
//! sandbox is an error, not a no-op.

use std::fmt;

use serde::Serialize;

/// Where a sandbox is in its life cycle.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SandboxState {
    /// The record exists; its directory and files are being made.
    Creating,
    /// Everything on disk exists; no process runs.
    Created,
    /// The shim and hypervisor are being launched.
    Starting,
    /// The guest runs.
    Running,
    /// The guest's vCPUs are paused.
    Paused,
    /// A shutdown was asked for and is in progress.
    Stopping,
    /// The VM is gone after a clean exit or a requested stop.
    Stopped,
    /// The VM or its shim died unexpectedly.
    Crashed {
        /// What went wrong, for `ps` and `inspect`.
        reason: String,
    },
}

/// A move between two states that [`transition`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {verb} sandbox {id}: it is {from}", verb = to.verb(from))]
pub struct TransitionError {
    /// The sandbox that was asked to move.
    pub id: String,
    /// The state it is in.
    pub from: SandboxState,
    /// The state it was asked to enter.
    pub to: SandboxState,
}

impl SandboxState {
    /// Every state name, in life-cycle order (as stored in the `state` column).
    pub const NAMES: [&'static str; 8] =
        ["creating", "created", "starting", "running", "paused", "stopping", "stopped", "crashed"];

    /// The state's name as stored and shown (`crashed` without its reason).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Created => "created",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Crashed { .. } => "crashed",
        }
    }

    /// Rebuilds a state from its stored name and reason; `None` for an unknown name.
    pub fn from_parts(name: &str, reason: Option<String>) -> Option<Self> {
        Some(match name {
            "creating" => Self::Creating,
            "created" => Self::Created,
            "starting" => Self::Starting,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "stopping" => Self::Stopping,
            "stopped" => Self::Stopped,
            "crashed" => Self::Crashed { reason: reason.unwrap_or_default() },
            _ => return None,
        })
    }

    /// The crash reason, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Crashed { reason } => Some(reason),
            _ => None,
        }
    }

    /// Whether a shim or hypervisor process is expected to be alive in this state
    /// (what `ps` without `-a` shows).
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Paused | Self::Stopping)
    }

    /// The verb a user would use to ask for a move into `self` from `from`, for error messages.
    fn verb(&self, from: &SandboxState) -> &'static str {
        match (from, self) {
            (Self::Paused, Self::Running) => "resume",
            (_, Self::Creating | Self::Created) => "create",
            (_, Self::Starting | Self::Running) => "start",
            (_, Self::Paused) => "pause",
            (_, Self::Stopping | Self::Stopped) => "stop",
            (_, Self::Crashed { .. }) => "mark as crashed",
        }
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Checks that `id` may move from `from` to `to`. This is the only place the life-cycle
/// rules live; the store calls it inside every state update.
pub fn transition(id: &str, from: &SandboxState, to: &SandboxState) -> Result<(), TransitionError> {
    use SandboxState as S;
    let legal = matches!(
        (from, to),
        (S::Creating, S::Created | S::Crashed { .. })
            | (S::Created, S::Starting)
            | (S::Starting, S::Running | S::Stopping | S::Stopped | S::Crashed { .. })
            | (S::Running, S::Paused | S::Stopping | S::Stopped | S::Crashed { .. })
            | (S::Paused, S::Running | S::Stopping | S::Stopped | S::Crashed { .. })
            | (S::Stopping, S::Stopped | S::Crashed { .. })
            | (S::Stopped | S::Crashed { .. }, S::Starting)
    );
    if legal { Ok(()) } else { Err(TransitionError { id: id.to_owned(), from: from.clone(), to: to.clone() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<SandboxState> {
        SandboxState::NAMES.iter().map(|n| SandboxState::from_parts(n, Some("boom".into())).unwrap()).collect()
    }

    /// The legal moves, written out by hand, independently of the `match` in `transition`.
    const LEGAL: &[(&str, &str)] = &[
        ("creating", "created"),
        ("creating", "crashed"),
        ("created", "starting"),
        ("starting", "running"),
        ("starting", "stopping"),
        ("starting", "stopped"),
        ("starting", "crashed"),
        ("running", "paused"),
        ("running", "stopping"),
        ("running", "stopped"),
        ("running", "crashed"),
        ("paused", "running"),
        ("paused", "stopping"),
        ("paused", "stopped"),
        ("paused", "crashed"),
        ("stopping", "stopped"),
        ("stopping", "crashed"),
        ("stopped", "starting"),
        ("crashed", "starting"),
    ];

    #[test]
    fn test_transition_every_pair() {
        let mut legal_seen = 0;
        for from in all() {
            for to in all() {
                let want = LEGAL.contains(&(from.name(), to.name()));
                let got = transition("abc123", &from, &to);
                assert_eq!(got.is_ok(), want, "{from} -> {to}");
                if want {
                    legal_seen += 1;
                } else {
                    let err = got.unwrap_err();
                    assert_eq!(err.from, from);
                    assert_eq!(err.to, to);
                    let msg = err.to_string();
                    assert!(msg.starts_with("cannot ") && msg.ends_with(&format!("abc123: it is {from}")), "{msg}");
                }
            }
        }
        assert_eq!(legal_seen, LEGAL.len());
    }

    #[test]
    fn test_transition_error_messages() {
        let e = transition("abc123", &SandboxState::Stopped, &SandboxState::Paused).unwrap_err();
        assert_eq!(e.to_string(), "cannot pause sandbox abc123: it is stopped");
        let e = transition("abc123", &SandboxState::Created, &SandboxState::Running).unwrap_err();
        assert_eq!(e.to_string(), "cannot start sandbox abc123: it is created");
        let e = transition("abc123", &SandboxState::Running, &SandboxState::Running).unwrap_err();
        assert_eq!(e.to_string(), "cannot start sandbox abc123: it is running");
        let e = transition("abc123", &SandboxState::Stopped, &SandboxState::Stopping).unwrap_err();
        assert_eq!(e.to_string(), "cannot stop sandbox abc123: it is stopped");
    }

    #[test]
    fn test_state_round_trips_through_parts() {
        for s in all() {
            let back = SandboxState::from_parts(s.name(), s.reason().map(str::to_owned)).unwrap();
            assert_eq!(back, s);
        }
        assert_eq!(SandboxState::from_parts("zombie", None), None);
    }

    #[test]
    fn test_state_active_set() {
        let active: Vec<_> = all().into_iter().filter(|s| s.is_active()).collect();
        let names: Vec<_> = active.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["starting", "running", "paused", "stopping"]);
    }
}
