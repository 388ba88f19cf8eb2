//! Exit codes, and the one-line error format.
//!
//! | code | meaning |
//! |---|---|
//! | the command's | the command ran and exited |
//! | 128+N | the command was killed by signal N, or nestbox got SIGINT (130) / SIGTERM (143) |
//! | 124 | the command hit `--timeout` |
//! | 2 | bad flags or values |
//! | 125 | nestbox itself failed (no kernel, QEMU missing, boot failed, …) |

/// Bad flags or values.
pub const USAGE: i32 = 2;
/// nestbox itself failed.
pub const FAILURE: i32 = 125;

/// Prints a clap error as one line (help and version print as usual) and exits.
pub fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let rendered = e.render().to_string();
    let line = rendered.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
    eprintln!("nestbox: {line}");
    std::process::exit(USAGE);
}

/// Prints `e` with its causes on one line and exits with [`FAILURE`].
pub fn fail(e: &anyhow::Error) -> ! {
    eprintln!("nestbox: {e:#}");
    std::process::exit(FAILURE);
}

/// Flushes and exits with `code`.
pub fn exit(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
