//! Hybrid vsock: reaching a guest's AF_VSOCK port through the Unix socket that Firecracker and
//! Cloud Hypervisor listen on for host-initiated connections.
//!
//! The host connects to the VMM's Unix socket and writes `CONNECT <port>\n`; once the guest
//! accepts, the VMM answers `OK <host_port>\n` and from then on relays bytes both ways. When
//! nothing listens on the port, the VMM closes the connection instead. The guest may send bytes
//! right behind the `OK` line (they can arrive in the same read), so the reply is read through a
//! buffered reader and the stream keeps reading through that same reader afterwards.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::UnixStream;

/// The longest reply line accepted, newline included (`OK 4294967295\n` is 14 bytes).
pub const MAX_REPLY_LINE: usize = 64;

/// How long connecting, sending `CONNECT` and reading the reply may take together.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors from [`connect_hybrid_vsock`].
#[derive(Debug, Error)]
pub enum TransportError {
    /// The VMM's Unix socket could not be connected.
    #[error("connect to hybrid vsock socket {}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why connecting failed.
        source: io::Error,
    },
    /// Writing `CONNECT` or reading the reply failed.
    #[error("hybrid vsock handshake on {} failed", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The i/o error.
        source: io::Error,
    },
    /// The VMM closed the connection without a reply: the guest refused the port.
    #[error("nothing listens on vsock port {port} in the guest")]
    NotListening {
        /// The guest port asked for.
        port: u32,
    },
    /// The connection ended in the middle of the reply line.
    #[error("hybrid vsock reply to CONNECT {port} cut short after {partial:?}")]
    Truncated {
        /// The guest port asked for.
        port: u32,
        /// What arrived before the end.
        partial: String,
    },
    /// The reply line is not `OK <host_port>`.
    #[error("unexpected hybrid vsock reply to CONNECT {port}: {reply:?}")]
    Refused {
        /// The guest port asked for.
        port: u32,
        /// The reply line, without its newline.
        reply: String,
    },
    /// No newline within [`MAX_REPLY_LINE`] bytes.
    #[error("hybrid vsock reply to CONNECT {port} longer than {limit} bytes")]
    LineTooLong {
        /// The guest port asked for.
        port: u32,
        /// The limit that was passed.
        limit: usize,
    },
    /// The handshake took longer than [`HANDSHAKE_TIMEOUT`].
    #[error("hybrid vsock handshake for port {port} on {} timed out after {after:?}", path.display())]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The guest port asked for.
        port: u32,
        /// The deadline that passed.
        after: Duration,
    },
}

/// A connection to a guest vsock port through a hybrid vsock socket. Reads go through the
/// buffered reader that read the `OK` line, so nothing the guest sent behind it is lost; writes
/// go straight to the socket.
#[derive(Debug)]
pub struct HybridVsockStream {
    io: BufReader<UnixStream>,
    host_port: u32,
}

impl HybridVsockStream {
    /// The host-side port number the VMM reported in its `OK` line.
    pub fn host_port(&self) -> u32 {
        self.host_port
    }
}

impl AsyncRead for HybridVsockStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for HybridVsockStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Connects to guest vsock `port` through the hybrid vsock socket at `path` (`CONNECT <port>\n`,
/// then `OK <host_port>\n`), within [`HANDSHAKE_TIMEOUT`]. No retries: a guest whose agent is
/// not listening yet answers [`TransportError::NotListening`], and the caller decides.
pub async fn connect_hybrid_vsock(path: &Path, port: u32) -> Result<HybridVsockStream, TransportError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(path, port))
        .await
        .unwrap_or_else(|_| Err(TransportError::Timeout { path: path.to_owned(), port, after: HANDSHAKE_TIMEOUT }))
}

async fn handshake(path: &Path, port: u32) -> Result<HybridVsockStream, TransportError> {
    let io_err = |source| TransportError::Io { path: path.to_owned(), source };
    let mut sock =
        UnixStream::connect(path).await.map_err(|source| TransportError::Connect { path: path.to_owned(), source })?;
    sock.write_all(format!("CONNECT {port}\n").as_bytes()).await.map_err(io_err)?;
    let mut io = BufReader::new(sock);
    let mut line = Vec::with_capacity(MAX_REPLY_LINE);
    // `take` only limits this read: bytes behind the newline stay in `io`'s buffer.
    (&mut io).take(MAX_REPLY_LINE as u64).read_until(b'\n', &mut line).await.map_err(io_err)?;
    let host_port = parse_reply(&line, port)?;
    Ok(HybridVsockStream { io, host_port })
}

/// Checks one reply line as read (at most [`MAX_REPLY_LINE`] bytes, up to and including `\n`).
fn parse_reply(line: &[u8], port: u32) -> Result<u32, TransportError> {
    let Some(body) = line.strip_suffix(b"\n") else {
        return Err(match line.len() {
            0 => TransportError::NotListening { port },
            n if n >= MAX_REPLY_LINE => TransportError::LineTooLong { port, limit: MAX_REPLY_LINE },
            _ => TransportError::Truncated { port, partial: String::from_utf8_lossy(line).into_owned() },
        });
    };
    let text = String::from_utf8_lossy(body);
    text.strip_prefix("OK ")
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| TransportError::Refused { port, reply: text.into_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_reply_accepts_ok_with_port() {
        assert_eq!(parse_reply(b"OK 1073741824\n", 1024).unwrap(), 1_073_741_824);
        assert_eq!(parse_reply(b"OK 0\n", 1).unwrap(), 0);
    }

    #[test]
    fn test_parse_reply_rejects_everything_else() {
        assert!(matches!(parse_reply(b"", 7), Err(TransportError::NotListening { port: 7 })));
        assert!(
            matches!(parse_reply(b"OK 12", 7), Err(TransportError::Truncated { port: 7, partial }) if partial == "OK 12")
        );
        for bad in [&b"ERR\n"[..], b"OK\n", b"OK x\n", b"ok 5\n", b"OK 5 \n", b"OK -1\n", b"OK 4294967296\n"] {
            assert!(matches!(parse_reply(bad, 7), Err(TransportError::Refused { port: 7, .. })), "{bad:?}");
        }
        let long = [b'O'; MAX_REPLY_LINE];
        assert!(matches!(parse_reply(&long, 7), Err(TransportError::LineTooLong { port: 7, limit: MAX_REPLY_LINE })));
    }

    #[test]
    fn test_messages_name_the_port() {
        assert_eq!(
            TransportError::NotListening { port: 1024 }.to_string(),
            "nothing listens on vsock port 1024 in the guest"
        );
    }
}
