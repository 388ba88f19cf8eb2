//! Freezes the wire bytes of protocol version 1.
//!
//! `schema/v1.hex` holds one line per message: `<name> <hex of the whole frame>`.
//! A change to names, field names, field order or encoding fails this test.
//! If the change is intended *and* the protocol version was bumped, regenerate
//! with `UPDATE_GOLDEN=1 cargo test -p nestbox-agent-protocol --test schema_snapshot`.

mod common;

use std::path::PathBuf;

use nestbox_agent_protocol::{PROTOCOL_VERSION, decode, encode};

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("schema/v{PROTOCOL_VERSION}.hex"))
}

fn render() -> String {
    let mut out = String::new();
    for (stream, msg) in common::samples() {
        let mut buf = Vec::new();
        encode(stream, &msg, &mut buf);
        out.push_str(&format!("{} {}\n", msg.name(), hex::encode(&buf)));
    }
    out
}

#[test]
fn test_schema_snapshot_matches_golden() {
    let path = golden_path();
    let rendered = render();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).unwrap();
        println!("updated {}", path.display());
        return;
    }
    let golden = std::fs::read_to_string(&path).unwrap();
    for (want, got) in golden.lines().zip(rendered.lines()) {
        assert_eq!(got, want, "wire bytes changed; see the module docs");
    }
    assert_eq!(golden.lines().count(), rendered.lines().count());
}

#[test]
fn test_golden_frames_still_decode() {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        println!("skipped: UPDATE_GOLDEN is rewriting the golden file");
        return;
    }
    let golden = std::fs::read_to_string(golden_path()).unwrap();
    let samples = common::samples();
    assert_eq!(golden.lines().count(), samples.len());
    for (line, (stream, msg)) in golden.lines().zip(samples) {
        let (name, hex_frame) = line.split_once(' ').unwrap();
        let bytes = hex::decode(hex_frame).unwrap();
        let (s, m, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!((name, s, &m, used), (msg.name(), stream, &msg, bytes.len()));
    }
}
