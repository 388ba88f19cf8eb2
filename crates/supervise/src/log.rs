//! Output capture for a supervised process.
//!
//! Each of the child's stdout and stderr is a pipe drained by one task ([`capture`]). Every chunk
//! read goes to an in-memory ring of the most recent bytes ([`LogRing`], read line-wise through
//! `Supervised::log_tail`), to the live subscribers of the stream (a broadcast channel, see
//! `Supervised::subscribe`) and, when a [`LogSpec`](crate::LogSpec) asks for it, to a size-bounded
//! log file ([`LogFile`]): once the file would exceed its limit it is renamed to `<path>.1`
//! (replacing the previous generation) and a fresh file is started, cutting at a line boundary
//! when one is at hand. Log files are created with mode 0600.
//!
//! The pipe is drained even when the log file fails, so a full pipe never stalls the child. A
//! subscriber never stalls it either: sending to the channel does not wait, and one that falls
//! more than [`SUBSCRIBER_BACKLOG_CHUNKS`] chunks behind loses the oldest (it is told how many).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::Permissions;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, watch};

use crate::error::{Result, SuperviseError};
use crate::spawn::LogSpec;

/// Bytes of recent output kept in memory per stream for `Supervised::log_tail`.
pub const DEFAULT_LOG_RING_BYTES: usize = 64 * 1024;

/// Size of the buffer a capture task reads the pipe with: the largest chunk a subscriber gets.
pub const CAPTURE_READ_BYTES: usize = 16 * 1024;

/// Chunks of output a subscriber may fall behind by before it loses the oldest ones (so at most
/// this many times [`CAPTURE_READ_BYTES`] are held for it).
pub const SUBSCRIBER_BACKLOG_CHUNKS: usize = 256;

/// Mode of the log files we create.
const LOG_FILE_MODE: u32 = 0o600;

/// One of the child's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// The most recent bytes of one stream, bounded to a fixed capacity.
#[derive(Debug)]
pub(crate) struct LogRing {
    buf: VecDeque<u8>,
    capacity: usize,
    /// Whether the bound cut the oldest line, so that it lacks its beginning.
    partial_first: bool,
}

impl LogRing {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { buf: VecDeque::with_capacity(capacity), capacity, partial_first: false }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        if data.len() >= self.capacity {
            let start = data.len() - self.capacity;
            self.buf.clear();
            self.buf.extend(&data[start..]);
            if start > 0 {
                self.partial_first = data[start - 1] != b'\n';
            }
            return;
        }
        let overflow = (self.buf.len() + data.len()).saturating_sub(self.capacity);
        if overflow > 0 {
            self.partial_first = self.buf.drain(..overflow).next_back() != Some(b'\n');
        }
        self.buf.extend(data);
    }

    /// The last `lines` lines, oldest first, decoded lossily, without line terminators. A line
    /// still being written (no newline yet) counts as the last line.
    pub(crate) fn tail(&self, lines: usize) -> Vec<String> {
        if lines == 0 || self.buf.is_empty() {
            return Vec::new();
        }
        let (front, back) = self.buf.as_slices();
        let bytes = [front, back].concat();
        let text = String::from_utf8_lossy(&bytes);
        let mut parts: Vec<&str> = text.split('\n').collect();
        if parts.last() == Some(&"") {
            parts.pop();
        }
        // The oldest line lost its beginning to the bound; keep it only if it is all there is.
        if self.partial_first && parts.len() > 1 {
            parts.remove(0);
        }
        let skip = parts.len().saturating_sub(lines);
        parts[skip..].iter().map(|line| line.strip_suffix('\r').unwrap_or(line).to_owned()).collect()
    }
}

/// A log file shared by the streams that write to it (stdout and stderr may name the same file).
pub(crate) type SharedLog = Arc<tokio::sync::Mutex<LogFile>>;

/// A log file bounded to `max_bytes`, with one rotated generation at `<path>.1`.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    rotated: PathBuf,
    file: tokio::fs::File,
    size: u64,
    max_bytes: u64,
}

impl LogFile {
    /// Opens (appending) or creates the log file; output already there counts towards the bound.
    pub(crate) fn open(spec: &LogSpec) -> Result<Self> {
        if spec.max_bytes == 0 {
            return Err(SuperviseError::ZeroLogLimit { path: spec.path.clone() });
        }
        let io_err = |source| SuperviseError::Io { action: "open log file", path: spec.path.clone(), source };
        let file = open_log_file(&spec.path).map_err(io_err)?;
        let size = file.metadata().map_err(io_err)?.len();
        Ok(Self {
            path: spec.path.clone(),
            rotated: rotated_path(&spec.path),
            file: tokio::fs::File::from_std(file),
            size,
            max_bytes: spec.max_bytes,
        })
    }

    /// Opens the file for sharing between streams.
    pub(crate) fn open_shared(spec: &LogSpec) -> Result<SharedLog> {
        Self::open(spec).map(|log| Arc::new(tokio::sync::Mutex::new(log)))
    }

    pub(crate) async fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = usize::try_from(self.max_bytes.saturating_sub(self.size)).unwrap_or(usize::MAX);
            if data.len() <= room {
                self.append(data).await?;
                break;
            }
            // Fill this file up to the last whole line that fits; start a fresh file for the rest.
            // A line longer than the whole limit is split.
            let cut = match data[..room].iter().rposition(|&b| b == b'\n') {
                Some(newline) => newline + 1,
                None if self.size > 0 => 0,
                None => room,
            };
            self.append(&data[..cut]).await?;
            self.rotate().await?;
            data = &data[cut..];
        }
        self.file.flush().await
    }

    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        self.file.flush().await
    }

    async fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if !data.is_empty() {
            self.file.write_all(data).await?;
            self.size += data.len() as u64;
        }
        Ok(())
    }

    async fn rotate(&mut self) -> io::Result<()> {
        self.file.flush().await?;
        tokio::fs::rename(&self.path, &self.rotated).await?;
        let path = self.path.clone();
        let file = tokio::task::spawn_blocking(move || open_log_file(&path)).await.map_err(io::Error::other)??;
        self.file = tokio::fs::File::from_std(file);
        self.size = 0;
        Ok(())
    }
}

/// Opens `path` for appending, creating it 0600, and forces 0600 on a file that was already there.
fn open_log_file(path: &Path) -> io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new().append(true).create(true).mode(LOG_FILE_MODE).open(path)?;
    file.set_permissions(Permissions::from_mode(LOG_FILE_MODE))?;
    Ok(file)
}

/// `<path>.1`: where the previous generation of a log file goes.
pub(crate) fn rotated_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".1");
    PathBuf::from(name)
}

/// Locks a ring, ignoring poisoning: a panic elsewhere leaves the bytes usable.
pub(crate) fn lock_ring(ring: &Mutex<LogRing>) -> std::sync::MutexGuard<'_, LogRing> {
    ring.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Drains `pipe` into `ring`, `live` and `file` until end of file, then sets `drained`. `live` is
/// dropped at the end, which ends every subscription.
pub(crate) async fn capture<R>(
    mut pipe: R,
    stream: Stream,
    ring: Arc<Mutex<LogRing>>,
    live: broadcast::Sender<Bytes>,
    mut file: Option<SharedLog>,
    drained: watch::Sender<bool>,
) where
    R: AsyncRead + Unpin,
{
    let mut buf = vec![0u8; CAPTURE_READ_BYTES];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                tracing::warn!(?stream, error = %err, "reading child output failed");
                break;
            }
        };
        lock_ring(&ring).push(&buf[..n]);
        if live.receiver_count() > 0 {
            // Never waits; fails only when the last subscriber has just gone.
            let _ = live.send(Bytes::copy_from_slice(&buf[..n]));
        }
        if let Some(shared) = &file {
            let mut log = shared.lock().await;
            if let Err(err) = log.write(&buf[..n]).await {
                tracing::warn!(?stream, path = %log.path.display(), error = %err,
                    "writing log file failed; keeping output in memory only");
                drop(log);
                file = None;
            }
        }
    }
    if let Some(shared) = &file
        && let mut log = shared.lock().await
        && let Err(err) = log.flush().await
    {
        tracing::warn!(?stream, path = %log.path.display(), error = %err, "flushing log file failed");
    }
    drained.send_replace(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ring_tail_returns_last_lines() {
        let mut ring = LogRing::new(1024);
        ring.push(b"one\ntwo\nthr");
        ring.push(b"ee\r\nfour");
        assert_eq!(ring.tail(2), ["three", "four"]);
        assert_eq!(ring.tail(10), ["one", "two", "three", "four"]);
        assert!(ring.tail(0).is_empty());
    }

    #[test]
    fn test_ring_drops_oldest_and_partial_first_line() {
        let mut ring = LogRing::new(10);
        ring.push(b"aaaa\nbbbb\n");
        ring.push(b"cccc\n");
        // The bound fell on a line boundary: "bbbb" is whole.
        assert_eq!(ring.tail(5), ["bbbb", "cccc"]);
        ring.push(b"dd\n");
        // Now "bbbb" lost its first three bytes and is not reported.
        assert_eq!(ring.buf.len(), 10);
        assert_eq!(ring.tail(5), ["cccc", "dd"]);
    }

    #[test]
    fn test_ring_keeps_tail_of_oversized_chunk() {
        let mut ring = LogRing::new(8);
        ring.push(b"0123456789abcdef");
        assert_eq!(ring.buf.len(), 8);
        assert_eq!(ring.tail(1), ["89abcdef"]);
    }

    #[test]
    fn test_rotated_path_appends_generation() {
        assert_eq!(rotated_path(Path::new("/run/x/qemu.log")), Path::new("/run/x/qemu.log.1"));
    }

    #[tokio::test]
    async fn test_log_file_rotates_at_line_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let mut log = LogFile::open(&LogSpec { path: path.clone(), max_bytes: 10 }).unwrap();
        log.write(b"abc\ndef\n").await.unwrap();
        log.write(b"ghi\n").await.unwrap();
        assert_eq!(std::fs::read(rotated_path(&path)).unwrap(), b"abc\ndef\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"ghi\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn test_log_file_splits_line_longer_than_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let mut log = LogFile::open(&LogSpec { path: path.clone(), max_bytes: 4 }).unwrap();
        log.write(b"0123456789").await.unwrap();
        assert_eq!(std::fs::read(rotated_path(&path)).unwrap(), b"4567");
        assert_eq!(std::fs::read(&path).unwrap(), b"89");
    }

    #[tokio::test]
    async fn test_log_file_counts_existing_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        std::fs::write(&path, b"old\n").unwrap();
        let mut log = LogFile::open(&LogSpec { path: path.clone(), max_bytes: 6 }).unwrap();
        log.write(b"new\n").await.unwrap();
        assert_eq!(std::fs::read(rotated_path(&path)).unwrap(), b"old\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
    }

    #[test]
    fn test_log_file_rejects_zero_limit() {
        let err = LogFile::open(&LogSpec { path: "/tmp/never".into(), max_bytes: 0 }).unwrap_err();
        assert!(matches!(err, SuperviseError::ZeroLogLimit { .. }), "{err:?}");
    }
}
