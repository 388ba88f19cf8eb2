//! Exit codes, and the one-line error format.
//!
//! | code | meaning |
//! |---|---|
//! | the command's | the command ran and exited |
//! | 128+N | the command was killed by signal N, or nestbox got SIGINT (130) / SIGTERM (143) |
//! | 124 | the command hit `--timeout` |
//! | 2 | bad flags or values |
//! | 118 | the sandbox's state does not allow the operation |
//! | 119 | the sandbox name is taken |
//! | 120 | the sandbox ID prefix is ambiguous |
//! | 121 | no such sandbox |
//! | 122 | malformed sandbox name or ID |
//! | 123 | another operation held the sandbox's lock too long |
//! | 125 | nestbox itself failed (no kernel, QEMU missing, boot failed, …) |
//!
//! `cli::SANDBOX_EXIT_CODES` shows the same table in `--help`.

use nestbox_engine::EngineError;
use nestbox_store::{ResolveError, SandboxError};

/// Bad flags or values.
pub const USAGE: i32 = 2;
/// The sandbox's state does not allow the operation.
pub const INVALID_STATE: i32 = 118;
/// The name is taken.
pub const NAME_TAKEN: i32 = 119;
/// The ID prefix matches several sandboxes.
pub const AMBIGUOUS: i32 = 120;
/// No sandbox matches.
pub const NO_SUCH_SANDBOX: i32 = 121;
/// The name or ID is malformed.
pub const MALFORMED: i32 = 122;
/// The sandbox stayed locked by another operation.
pub const BUSY: i32 = 123;
/// nestbox itself failed.
pub const FAILURE: i32 = 125;

/// The exit code for a failure, by what failed.
pub fn code_for(e: &anyhow::Error) -> i32 {
    let Some(e) = e.downcast_ref::<EngineError>() else { return FAILURE };
    match e {
        EngineError::InvalidState { .. }
        | EngineError::Transition(_)
        | EngineError::Store(SandboxError::Transition(_) | SandboxError::StateConflict { .. }) => INVALID_STATE,
        EngineError::Store(SandboxError::NameTaken { .. }) => NAME_TAKEN,
        EngineError::Resolve(ResolveError::Ambiguous { .. }) => AMBIGUOUS,
        EngineError::Resolve(ResolveError::Unknown { .. }) | EngineError::Store(SandboxError::NotFound { .. }) => {
            NO_SUCH_SANDBOX
        }
        EngineError::Resolve(ResolveError::Empty) | EngineError::BadReference { .. } | EngineError::Name(_) => {
            MALFORMED
        }
        EngineError::Lock(nestbox_store::LockError::Timeout { .. }) => BUSY,
        _ => FAILURE,
    }
}

/// Prints a clap error as one line (help and version print as usual) and exits.
pub fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    eprintln!("nestbox: {}", one_line(&e.render().to_string()));
    std::process::exit(USAGE);
}

/// Prints `e` with its causes on one line and exits with its code ([`code_for`]).
pub fn fail(e: &anyhow::Error) -> ! {
    eprintln!("nestbox: {e:#}");
    std::process::exit(code_for(e));
}

/// Flushes and exits with `code`.
pub fn exit(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// clap's message without its usage and hint lines, joined into one line.
fn one_line(rendered: &str) -> String {
    let text = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let text = text.trim_start_matches("error: ");
    if text.is_empty() { "invalid arguments".into() } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_one_line_drops_usage_and_hint() {
        let rendered = "error: the following required arguments were not provided:\n  <CMD>...\n\nUsage: nestbox run -- <CMD>...\n\nFor more information, try '--help'.\n";
        assert_eq!(super::one_line(rendered), "the following required arguments were not provided: <CMD>...");
        assert_eq!(
            super::one_line("error: invalid value 'x' for '--cpus <N>': bad\n"),
            "invalid value 'x' for '--cpus <N>': bad"
        );
    }
}
