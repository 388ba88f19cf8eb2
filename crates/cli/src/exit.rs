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
    eprintln!("nestbox: {}", one_line(&e.render().to_string()));
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
