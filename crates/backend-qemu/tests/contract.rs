//! Contracts: the argv for a corpus of specs (golden), and every QMP command we send exists in
//! the checked-in `query-qmp-schema` dump of the QEMU we support.

use std::path::PathBuf;

use nestbox_backend::VmDirs;
use nestbox_backend_qemu::qmp::COMMANDS_USED;
use nestbox_backend_qemu::{Accel, QemuArgs};
use nestbox_model::{Boot, Device, VmSpec};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn spec() -> VmSpec {
    VmSpec {
        vcpus: 2,
        memory_mib: 512,
        boot: Boot::Linux {
            kernel: "/k/vmlinux".into(),
            initrd: Some("/k/initrd.cpio".into()),
            cmdline: "console=ttyS0 quiet".into(),
        },
        devices: vec![
            Device::VirtioBlk { id: "root".into(), path: "/d/root,1.img".into(), readonly: true },
            Device::VirtioNet { id: "net0".into(), tap: "tap0".into(), mac: Some("02:00:00:00:00:01".into()) },
            Device::Vsock { cid: 3, socket: None },
            Device::Balloon { deflate_on_oom: true, free_page_reporting: false },
            Device::Rng,
        ],
    }
}

#[test]
fn test_argv_golden() {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/argv-tcg.txt");
    let argv = QemuArgs {
        name: "nestbox-abc".into(),
        accel: Accel::Tcg,
        tsc_khz: 2_600_000,
        agent: true,
        memory: None,
        incoming: false,
    }
    .build(&spec(), &VmDirs::new("/h/sandboxes/abc"))
    .unwrap();
    let text = argv.join("\n") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).expect("golden file (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(text, expected, "argv changed; review and rerun with UPDATE_GOLDEN=1");
}

#[test]
fn test_qmp_commands_exist_in_schema() {
    let dump = workspace().join("spec/qmp/qemu-7.2-query-qmp-schema.json");
    let schema: serde_json::Value = serde_json::from_slice(&std::fs::read(&dump).unwrap()).unwrap();
    let commands: Vec<&str> = schema
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["meta-type"] == "command")
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(commands.len() > 100, "schema dump looks truncated");
    for used in COMMANDS_USED {
        assert!(commands.contains(used), "QMP command {used} is not in QEMU 7.2's schema");
    }
}
