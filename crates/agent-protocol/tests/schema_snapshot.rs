//! Freezes the wire bytes of every protocol version.
//!
//! `schema/v<N>.hex` holds one line per message: `<name> <hex of the whole frame>`.
//! A change to names, field names, field order or encoding fails this test.
//! If the change is intended *and* the protocol version was bumped, write the new version's
//! file with `UPDATE_GOLDEN=1 cargo test -p nestbox-agent-protocol --test schema_snapshot`;
//! older versions' files are never rewritten, and their frames must still decode.

mod common;

use std::path::PathBuf;

use nestbox_agent_protocol::{MIN_PROTOCOL_VERSION, Message, PROTOCOL_VERSION, decode, encode};

fn golden_path(version: u16) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("schema/v{version}.hex"))
}

fn render(samples: &[(u32, Message)]) -> String {
    let mut out = String::new();
    for (stream, msg) in samples {
        let mut buf = Vec::new();
        encode(*stream, msg, &mut buf);
        out.push_str(&format!("{} {}\n", msg.name(), hex::encode(&buf)));
    }
    out
}

fn assert_same_lines(golden: &str, rendered: &str, what: &str) {
    for (want, got) in golden.lines().zip(rendered.lines()) {
        assert_eq!(got, want, "{what}; see the module docs");
    }
    assert_eq!(golden.lines().count(), rendered.lines().count(), "{what}");
}

/// Decodes every golden line and checks it against `samples`.
fn assert_golden_decodes(version: u16, samples: &[(u32, Message)]) {
    let golden = std::fs::read_to_string(golden_path(version)).unwrap();
    assert_eq!(golden.lines().count(), samples.len());
    for (line, (stream, msg)) in golden.lines().zip(samples) {
        let (name, hex_frame) = line.split_once(' ').unwrap();
        let bytes = hex::decode(hex_frame).unwrap();
        let (s, m, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!((name, s, &m, used), (msg.name(), *stream, msg, bytes.len()), "v{version} {name}");
    }
}

#[test]
fn test_schema_snapshot_matches_golden() {
    let path = golden_path(PROTOCOL_VERSION);
    let rendered = render(&common::samples());
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).unwrap();
        println!("updated {}", path.display());
        return;
    }
    let golden = std::fs::read_to_string(&path).unwrap();
    assert_same_lines(&golden, &rendered, "wire bytes changed");
}

#[test]
fn test_golden_frames_still_decode() {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        println!("skipped: UPDATE_GOLDEN is rewriting the golden file");
        return;
    }
    assert_golden_decodes(PROTOCOL_VERSION, &common::samples());
}

#[test]
fn test_v1_frames_decode_into_current_types() {
    assert_eq!(MIN_PROTOCOL_VERSION, 1, "v1 support was dropped: remove this test with it");
    assert_golden_decodes(1, &common::samples_v1());
}

#[test]
fn test_v1_messages_encode_to_v1_bytes() {
    // A host that uses nothing newer than v1 sends exactly what a v1 agent expects.
    let golden = std::fs::read_to_string(golden_path(1)).unwrap();
    assert_same_lines(&golden, &render(&common::samples_v1()), "v1 bytes changed");
    for (_, msg) in common::samples_v1() {
        assert_eq!(msg.min_version(), 1, "{}", msg.name());
    }
}

#[test]
fn test_every_version_has_a_golden_file() {
    for version in MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION {
        assert!(golden_path(version).is_file(), "schema/v{version}.hex is missing");
    }
}
