//! `nestbox console` (attach to the serial console; Ctrl-] detaches) and `nestbox logs` (the
//! console log, `-f` to follow it across rotation).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use nestbox_backend::VmDirs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{LogsArgs, SandboxArg};
use crate::exec::RawMode;

/// The byte that detaches from the console: Ctrl-] (as telnet and virsh).
pub const DETACH_KEY: u8 = 0x1d;
/// How often `logs -f` looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// `nestbox console`.
pub async fn console(args: SandboxArg) -> anyhow::Result<i32> {
    let mgr = crate::sandbox::manager()?;
    let (stream, sb) = mgr.console(&args.sandbox).await?;
    eprintln!("nestbox: connected to the console of sandbox {} ({}); detach with Ctrl-]", sb.record.name, sb.id());
    let raw = RawMode::enter();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let to_guest = async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 1024];
        loop {
            let n = match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            let (data, detach) = split_at_detach(&buf[..n]);
            if wr.write_all(data).await.is_err() {
                return false;
            }
            if detach {
                return true;
            }
        }
    };
    let from_guest = async move {
        let mut out = tokio::io::stdout();
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let _ = out.flush().await;
                }
            }
        }
    };
    let detached = tokio::select! {
        detached = to_guest => detached,
        () = from_guest => false,
    };
    drop(raw);
    eprintln!();
    if detached {
        eprintln!("nestbox: detached from sandbox {}", sb.record.name);
    } else {
        eprintln!("nestbox: the console of sandbox {} closed", sb.record.name);
    }
    Ok(0)
}

/// The bytes before the detach key, and whether it was there.
fn split_at_detach(data: &[u8]) -> (&[u8], bool) {
    match data.iter().position(|b| *b == DETACH_KEY) {
        Some(i) => (&data[..i], true),
        None => (data, false),
    }
}

/// `nestbox logs`.
pub async fn logs(args: LogsArgs) -> anyhow::Result<i32> {
    let mgr = crate::sandbox::manager()?;
    let sb = mgr.resolve(&args.sandbox)?;
    let path = VmDirs::new(&sb.dir).console_log();
    let mut text = Vec::new();
    // The previous generation first, when the log rotated.
    for p in [path.with_extension("log.1"), path.clone()] {
        if let Ok(mut f) = std::fs::File::open(&p) {
            let _ = f.read_to_end(&mut text);
        }
    }
    let mut out = std::io::stdout().lock();
    out.write_all(tail(&text, args.tail))?;
    out.flush()?;
    drop(out);
    if !args.follow {
        return Ok(0);
    }
    let mut offset = std::fs::metadata(&path).map_or(0, |m| m.len());
    let id = sb.id().to_string();
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        offset = print_new(&path, offset)?;
        // Follow while the sandbox runs, as `docker logs -f` does.
        if !mgr.resolve(&id).is_ok_and(|sb| sb.state().is_active()) {
            print_new(&path, offset)?;
            return Ok(0);
        }
    }
}

/// Prints what `path` gained after `offset`; starts over when it was rotated (shrank).
fn print_new(path: &Path, offset: u64) -> std::io::Result<u64> {
    let Ok(mut f) = std::fs::File::open(path) else { return Ok(offset) };
    let len = f.metadata()?.len();
    let from = if len < offset { 0 } else { offset };
    if len == from {
        return Ok(len);
    }
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(len - from).read_to_end(&mut buf)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)?;
    out.flush()?;
    Ok(len)
}

/// The last `n` lines of `text` (all of it for `None`).
fn tail(text: &[u8], n: Option<usize>) -> &[u8] {
    let Some(n) = n else { return text };
    if n == 0 {
        return &[];
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tail_counts_lines_from_the_end() {
        assert_eq!(tail(b"a\nb\nc\n", Some(2)), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", Some(1)), b"c");
        assert_eq!(tail(b"a\nb\n", Some(5)), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", Some(0)), b"");
        assert_eq!(tail(b"a\nb\n", None), b"a\nb\n");
    }

    #[test]
    fn test_detach_key_cuts_the_input() {
        assert_eq!(split_at_detach(b"ls\r"), (&b"ls\r"[..], false));
        assert_eq!(split_at_detach(b"ls\x1dmore"), (&b"ls"[..], true));
    }

    #[test]
    fn test_print_new_follows_growth_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(print_new(&p, 0).unwrap(), 3);
        assert_eq!(print_new(&p, 3).unwrap(), 3);
        std::fs::write(&p, b"x").unwrap();
        assert_eq!(print_new(&p, 3).unwrap(), 1, "a shorter file was rotated: read it from the start");
    }
}
