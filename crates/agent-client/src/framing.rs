//! Async frame I/O over tokio streams, mirroring the protocol's blocking helpers.

use nestbox_agent_protocol::{FRAME_HEADER_LEN, MAX_FRAME_SIZE, Message, ProtocolError, decode, encode_checked};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<(u32, Message)>, ProtocolError> {
    let mut buf = vec![0u8; FRAME_HEADER_LEN];
    let mut got = 0;
    while got < FRAME_HEADER_LEN {
        match r.read(&mut buf[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(ProtocolError::Truncated),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
    if len > MAX_FRAME_SIZE {
        return Err(ProtocolError::FrameTooLarge { len: u64::from(len), max: MAX_FRAME_SIZE });
    }
    // decode() below reports a too-short prefix.
    let total = 4 + len as usize;
    if total > FRAME_HEADER_LEN {
        buf.resize(total, 0);
        r.read_exact(&mut buf[FRAME_HEADER_LEN..]).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ProtocolError::Truncated,
            _ => ProtocolError::Io(e),
        })?;
    }
    match decode(&buf)? {
        Some((stream, msg, _)) => Ok(Some((stream, msg))),
        None => Err(ProtocolError::Truncated),
    }
}

/// Writes one frame and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, stream: u32, msg: &Message) -> Result<(), ProtocolError> {
    let mut buf = Vec::new();
    encode_checked(stream, msg, &mut buf)?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use nestbox_agent_protocol::encode;

    use super::*;

    #[tokio::test]
    async fn test_async_frames_round_trip_and_detect_truncation() {
        let mut wire = Vec::new();
        write_frame(&mut wire, 3, &Message::ExecSignal { signal: 9 }).await.unwrap();
        write_frame(&mut wire, 0, &Message::GuestPoweroff).await.unwrap();
        let mut r = wire.as_slice();
        assert_eq!(read_frame(&mut r).await.unwrap(), Some((3, Message::ExecSignal { signal: 9 })));
        assert_eq!(read_frame(&mut r).await.unwrap(), Some((0, Message::GuestPoweroff)));
        assert_eq!(read_frame(&mut r).await.unwrap(), None);

        let mut one = Vec::new();
        encode(1, &Message::ExecStdinClose, &mut one);
        let mut cut = &one[..one.len() - 2];
        assert!(matches!(read_frame(&mut cut).await, Err(ProtocolError::Truncated)));
        let mut short: &[u8] = &[0, 0, 0, 1, 0];
        assert!(matches!(
            read_frame(&mut short).await,
            Err(ProtocolError::Truncated | ProtocolError::FrameTooShort { .. })
        ));
    }
}
