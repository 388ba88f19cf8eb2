//! Every message survives encode → decode and the blocking frame helpers.

mod common;

use nestbox_agent_protocol::{ErrorCode, Message, decode, encode, read_frame, write_frame};
use proptest::prelude::*;

#[test]
fn test_every_message_round_trips_through_decode() {
    for (stream, msg) in common::samples() {
        let mut buf = Vec::new();
        encode(stream, &msg, &mut buf);
        let (s, m, used) = decode(&buf).unwrap().expect("complete frame");
        assert_eq!((s, &m, used), (stream, &msg, buf.len()), "{}", msg.name());
    }
}

#[test]
fn test_every_message_round_trips_through_read_write_frame() {
    let samples = common::samples();
    let mut wire = Vec::new();
    for (stream, msg) in &samples {
        write_frame(&mut wire, *stream, msg).unwrap();
    }
    let mut r = wire.as_slice();
    for (stream, msg) in &samples {
        assert_eq!(read_frame(&mut r).unwrap(), Some((*stream, msg.clone())));
    }
    assert_eq!(read_frame(&mut r).unwrap(), None);
}

#[test]
fn test_decode_many_frames_from_one_buffer() {
    let mut buf = Vec::new();
    for (stream, msg) in common::samples() {
        encode(stream, &msg, &mut buf);
    }
    let mut off = 0;
    let mut n = 0;
    while let Some((_, _, used)) = decode(&buf[off..]).unwrap() {
        off += used;
        n += 1;
    }
    assert_eq!((off, n), (buf.len(), common::samples().len()));
}

#[test]
fn test_error_code_uses_snake_case_names() {
    let mut buf = Vec::new();
    ciborium::into_writer(&ErrorCode::UnsupportedVersion, &mut buf).unwrap();
    let v: ciborium::Value = ciborium::from_reader(buf.as_slice()).unwrap();
    assert_eq!(v.as_text(), Some("unsupported_version"));
}

proptest! {
    #[test]
    fn test_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        let _ = read_frame(&mut bytes.as_slice());
    }

    #[test]
    fn test_decode_never_panics_with_valid_header(
        stream in any::<u32>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut buf = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(&stream.to_be_bytes());
        buf.extend_from_slice(&body);
        if let Ok(Some((s, _, used))) = decode(&buf) {
            prop_assert_eq!(s, stream);
            prop_assert_eq!(used, buf.len());
        }
    }

    #[test]
    fn test_stdout_chunks_round_trip(stream in any::<u32>(), data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let msg = Message::ExecStdout { data: serde_bytes::ByteBuf::from(data) };
        let mut buf = Vec::new();
        encode(stream, &msg, &mut buf);
        let (s, m, _) = decode(&buf).unwrap().unwrap();
        prop_assert_eq!(s, stream);
        prop_assert_eq!(m, msg);
    }
}
