//! The JSON form of `VmSpec`: a golden document, round trips, and `deny_unknown_fields`.

use std::path::PathBuf;

use nestbox_model::{Boot, Device, VmSpec};
use serde_json::json;

fn sample() -> VmSpec {
    VmSpec {
        vcpus: 2,
        memory_mib: 1024,
        boot: Boot::Linux {
            kernel: PathBuf::from("/boot/vmlinux"),
            initrd: Some(PathBuf::from("/boot/initrd")),
            cmdline: "console=ttyS0".to_owned(),
        },
        devices: vec![
            Device::VirtioBlk { id: "root".to_owned(), path: PathBuf::from("/var/root.img"), readonly: true },
            Device::VirtioNet {
                id: "net0".to_owned(),
                tap: "tap0".to_owned(),
                mac: Some("02:00:00:00:00:01".to_owned()),
            },
            Device::Vsock { cid: 3, socket: None },
            Device::Balloon { deflate_on_oom: true, free_page_reporting: false },
            Device::Rng,
            Device::VirtioFs { tag: "share".to_owned(), path: PathBuf::from("/srv") },
        ],
    }
}

fn golden() -> serde_json::Value {
    json!({
        "vcpus": 2,
        "memory_mib": 1024,
        "boot": {
            "kind": "linux",
            "kernel": "/boot/vmlinux",
            "initrd": "/boot/initrd",
            "cmdline": "console=ttyS0"
        },
        "devices": [
            {"type": "virtio-blk", "id": "root", "path": "/var/root.img", "readonly": true},
            {"type": "virtio-net", "id": "net0", "tap": "tap0", "mac": "02:00:00:00:00:01"},
            {"type": "vsock", "cid": 3},
            {"type": "balloon", "deflate_on_oom": true, "free_page_reporting": false},
            {"type": "rng"},
            {"type": "virtio-fs", "tag": "share", "path": "/srv"}
        ]
    })
}

#[test]
fn test_json_golden() {
    assert_eq!(serde_json::to_value(sample()).unwrap(), golden());
    assert_eq!(serde_json::from_value::<VmSpec>(golden()).unwrap(), sample());
}

#[test]
fn test_json_round_trip_firmware() {
    let spec = VmSpec { boot: Boot::Firmware { path: PathBuf::from("/fw.fd") }, devices: vec![], ..sample() };
    let text = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<VmSpec>(&text).unwrap(), spec);
    assert_eq!(serde_json::to_value(&spec).unwrap()["boot"], json!({"kind": "firmware", "path": "/fw.fd"}));
}

#[test]
fn test_json_defaults() {
    let spec: VmSpec = serde_json::from_value(json!({
        "vcpus": 1,
        "memory_mib": 512,
        "boot": {"kind": "linux", "kernel": "/k"}
    }))
    .unwrap();
    assert_eq!(spec.devices, vec![]);
    assert_eq!(spec.boot, Boot::Linux { kernel: PathBuf::from("/k"), initrd: None, cmdline: String::new() });
    let blk: Device = serde_json::from_value(json!({"type": "virtio-blk", "id": "a", "path": "/x"})).unwrap();
    assert_eq!(blk, Device::VirtioBlk { id: "a".to_owned(), path: PathBuf::from("/x"), readonly: false });
}

/// Sets `value` at `pointer` in the golden document and expects it to be refused naming `word`.
fn refused(pointer: &str, key: &str, word: &str) {
    let mut doc = golden();
    doc.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer}"))
        .as_object_mut()
        .unwrap()
        .insert(key.to_owned(), json!(1));
    let err =
        serde_json::from_value::<VmSpec>(doc).expect_err(&format!("{pointer}/{key} should be refused")).to_string();
    assert!(err.contains(word), "{pointer}/{key}: {err}");
}

#[test]
fn test_json_denies_unknown_fields() {
    refused("", "vcpu", "unknown field `vcpu`");
    refused("/boot", "kernal", "unknown field `kernal`");
    for i in 0..6 {
        refused(&format!("/devices/{i}"), "extra", "unknown field `extra`");
    }
}

#[test]
fn test_json_denies_unknown_fields_on_firmware() {
    let doc = json!({
        "vcpus": 1, "memory_mib": 512,
        "boot": {"kind": "firmware", "path": "/fw", "cmdline": "x"}
    });
    let err = serde_json::from_value::<VmSpec>(doc).unwrap_err().to_string();
    assert!(err.contains("unknown field `cmdline`"), "{err}");
}

#[test]
fn test_json_refuses_unknown_kinds_and_bad_types() {
    let mut doc = golden();
    doc["devices"][0]["type"] = json!("virtio-gpu");
    let err = serde_json::from_value::<VmSpec>(doc).unwrap_err().to_string();
    assert!(err.contains("unknown variant `virtio-gpu`"), "{err}");

    let mut doc = golden();
    doc["vcpus"] = json!(256);
    assert!(serde_json::from_value::<VmSpec>(doc).is_err());

    let mut doc = golden();
    doc["boot"]["kind"] = json!("pxe");
    assert!(serde_json::from_value::<VmSpec>(doc).is_err());
}
