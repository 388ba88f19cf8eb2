//! Framing: `u32 BE length | u32 BE stream | CBOR body`.
//!
//! The length counts the bytes that follow it (stream id and body) and is at
//! most [`MAX_FRAME_SIZE`]. [`decode`] works on a byte buffer for callers that
//! do their own reading; [`read_frame`] and [`write_frame`] block on `std::io`.

use std::io::{self, Read, Write};

use thiserror::Error;

use crate::message::Message;

/// Largest allowed value of the length prefix (1 MiB).
pub const MAX_FRAME_SIZE: u32 = 1024 * 1024;

/// Largest data chunk in `exec.stdin` / `exec.stdout` / `exec.stderr` (64 KiB).
pub const MAX_CHUNK: usize = 64 * 1024;

/// Bytes before the CBOR body: length and stream id.
pub const FRAME_HEADER_LEN: usize = 8;

/// Length of the stream id, which the length prefix counts.
const STREAM_ID_LEN: u32 = 4;

/// Errors from encoding, decoding or moving frames.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// The length prefix exceeds [`MAX_FRAME_SIZE`].
    #[error("frame of {len} bytes exceeds the {max} byte limit")]
    FrameTooLarge {
        /// The announced or encoded length.
        len: u64,
        /// [`MAX_FRAME_SIZE`].
        max: u32,
    },
    /// The length prefix is too short to hold a stream id.
    #[error("frame of {len} bytes is too short for a stream id")]
    FrameTooShort {
        /// The announced length.
        len: u32,
    },
    /// The body is not a valid CBOR `Message`; the frame is `consumed` bytes long,
    /// so a tolerant reader can skip it.
    #[error("bad message body on stream {stream}")]
    BadBody {
        /// The frame's stream.
        stream: u32,
        /// Total frame length including the header.
        consumed: usize,
        /// The CBOR error.
        #[source]
        source: ciborium::de::Error<io::Error>,
    },
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame")]
    Truncated,
    /// Reading or writing failed.
    #[error("frame i/o failed")]
    Io(#[from] io::Error),
}

/// Appends the frame for `msg` on `stream` to `out`.
///
/// Never fails; a message larger than [`MAX_FRAME_SIZE`] (possible only with
/// oversized data chunks) is rejected by the receiver. Use [`encode_checked`]
/// to refuse it up front.
pub fn encode(stream: u32, msg: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&stream.to_be_bytes());
    ciborium::into_writer(msg, &mut *out).expect("CBOR encoding of a Message into a Vec");
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Like [`encode`] but leaves `out` untouched and fails when the frame is too large.
pub fn encode_checked(stream: u32, msg: &Message, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let start = out.len();
    encode(stream, msg, out);
    let len = (out.len() - start - 4) as u64;
    if len > u64::from(MAX_FRAME_SIZE) {
        out.truncate(start);
        return Err(ProtocolError::FrameTooLarge { len, max: MAX_FRAME_SIZE });
    }
    Ok(())
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds no complete frame yet, otherwise the
/// stream, the message and the number of bytes consumed.
pub fn decode(buf: &[u8]) -> Result<Option<(u32, Message, usize)>, ProtocolError> {
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes"));
    check_len(len)?;
    let total = 4 + len as usize;
    let Some(frame) = buf.get(4..total) else {
        return Ok(None);
    };
    let stream = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes"));
    let msg = decode_body(stream, &frame[4..], total)?;
    Ok(Some((stream, msg, total)))
}

fn check_len(len: u32) -> Result<(), ProtocolError> {
    if len > MAX_FRAME_SIZE {
        return Err(ProtocolError::FrameTooLarge { len: u64::from(len), max: MAX_FRAME_SIZE });
    }
    if len < STREAM_ID_LEN {
        return Err(ProtocolError::FrameTooShort { len });
    }
    Ok(())
}

fn decode_body(stream: u32, body: &[u8], consumed: usize) -> Result<Message, ProtocolError> {
    let mut reader = body;
    let msg: Message =
        ciborium::from_reader(&mut reader).map_err(|source| ProtocolError::BadBody { stream, consumed, source })?;
    if !reader.is_empty() {
        return Err(ProtocolError::BadBody {
            stream,
            consumed,
            source: ciborium::de::Error::Semantic(None, "trailing bytes after message".into()),
        });
    }
    Ok(msg)
}

/// Reads one frame, blocking. Returns `Ok(None)` on a clean end of stream
/// between frames.
pub fn read_frame(r: &mut impl Read) -> Result<Option<(u32, Message)>, ProtocolError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ProtocolError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
    check_len(len)?;
    let stream = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
    let mut body = vec![0u8; (len - STREAM_ID_LEN) as usize];
    r.read_exact(&mut body).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ProtocolError::Truncated,
        _ => ProtocolError::Io(e),
    })?;
    let msg = decode_body(stream, &body, 4 + len as usize)?;
    Ok(Some((stream, msg)))
}

/// Writes one frame, blocking, and flushes.
pub fn write_frame(w: &mut impl Write, stream: u32, msg: &Message) -> Result<(), ProtocolError> {
    let mut buf = Vec::new();
    encode_checked(stream, msg, &mut buf)?;
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;

    use super::*;

    #[test]
    fn test_decode_needs_more_bytes() {
        let mut buf = Vec::new();
        encode(7, &Message::ExecStdinClose, &mut buf);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let (stream, msg, used) = decode(&buf).unwrap().unwrap();
        assert_eq!((stream, msg, used), (7, Message::ExecStdinClose, buf.len()));
    }

    #[test]
    fn test_decode_rejects_oversize_prefix() {
        let buf = (MAX_FRAME_SIZE + 1).to_be_bytes();
        assert!(matches!(
            decode(&buf),
            Err(ProtocolError::FrameTooLarge { len, .. }) if len == u64::from(MAX_FRAME_SIZE) + 1
        ));
    }

    #[test]
    fn test_decode_rejects_short_prefix() {
        let buf = [0, 0, 0, 2, 0, 0];
        assert!(matches!(decode(&buf), Err(ProtocolError::FrameTooShort { len: 2 })));
    }

    #[test]
    fn test_decode_bad_body_reports_frame_length() {
        let mut buf = vec![0, 0, 0, 6, 0, 0, 0, 3, 0xff, 0xff];
        buf.extend_from_slice(b"next");
        match decode(&buf) {
            Err(ProtocolError::BadBody { stream: 3, consumed: 10, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn test_encode_checked_refuses_huge_chunk() {
        let msg = Message::ExecStdout { data: ByteBuf::from(vec![0u8; MAX_FRAME_SIZE as usize]) };
        let mut buf = vec![1, 2, 3];
        assert!(matches!(encode_checked(1, &msg, &mut buf), Err(ProtocolError::FrameTooLarge { .. })));
        assert_eq!(buf, [1, 2, 3]);
    }

    #[test]
    fn test_read_frame_eof_and_truncation() {
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty).unwrap().is_none());
        let mut buf = Vec::new();
        encode(1, &Message::ExecSignal { signal: 2 }, &mut buf);
        let mut cut: &[u8] = &buf[..buf.len() - 1];
        assert!(matches!(read_frame(&mut cut), Err(ProtocolError::Truncated)));
        let mut full: &[u8] = &buf;
        assert_eq!(read_frame(&mut full).unwrap(), Some((1, Message::ExecSignal { signal: 2 })));
    }
}
