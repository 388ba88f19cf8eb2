//! Contract: every request body the driver builds validates against Firecracker's own Swagger
//! spec (shared/specs/firecracker.yaml), every (method, path) it calls is in the spec, and the
//! response shapes it decodes are the spec's. Bodies come from a hand-written corpus of specs
//! and from property-generated ones.

use std::path::PathBuf;

use nestbox_backend::VmDirs;
use nestbox_backend_firecracker::client::OPERATIONS_USED;
use nestbox_backend_firecracker::map::{MAX_VCPUS, MIN_VCPUS};
use nestbox_backend_firecracker::process::{JailerConfig, Layout};
use nestbox_backend_firecracker::wire::*;
use nestbox_backend_firecracker::{MapError, MapOptions, Plan, Transport};
use nestbox_model::{Boot, Device, VmSpec};
use nestbox_testkit::spec::SpecValidator;
use proptest::prelude::*;
use serde::Serialize;
use serde_json::Value;

fn options(transport: Transport) -> MapOptions {
    MapOptions { transport, vsock_path: "/h/sandboxes/abc/vsock.sock".into() }
}

fn json<T: Serialize>(body: &T) -> Value {
    serde_json::to_value(body).unwrap()
}

/// Checks every request of the plan against the spec.
fn check_plan(validator: &SpecValidator, plan: &Plan) -> Result<(), String> {
    for request in &plan.requests {
        let body: Value = serde_json::from_slice(&request.body()).map_err(|e| e.to_string())?;
        validator.check_request(request.method(), &request.path(), Some(&body))?;
    }
    Ok(())
}

fn linux(initrd: bool, cmdline: &str) -> Boot {
    Boot::Linux {
        kernel: "/k/vmlinux".into(),
        initrd: initrd.then(|| PathBuf::from("/k/initrd.cpio")),
        cmdline: cmdline.into(),
    }
}

fn corpus() -> Vec<VmSpec> {
    let all_devices = vec![
        Device::VirtioBlk { id: "root".into(), path: "/d/root.img".into(), readonly: true },
        Device::VirtioBlk { id: "data_1".into(), path: "/d/data 1.img".into(), readonly: false },
        Device::VirtioNet { id: "net0".into(), tap: "tap0".into(), mac: Some("02:00:00:00:00:01".into()) },
        Device::VirtioNet { id: "net-1".into(), tap: "nbtap1".into(), mac: None },
        Device::Vsock { cid: 3, socket: None },
        Device::Balloon { deflate_on_oom: true, free_page_reporting: true },
        Device::Rng,
    ];
    vec![
        VmSpec {
            vcpus: 1,
            memory_mib: 128,
            boot: linux(true, "console=ttyS0 quiet panic=-1 rdinit=/init"),
            devices: vec![],
        },
        VmSpec { vcpus: 2, memory_mib: 512, boot: linux(true, ""), devices: all_devices.clone() },
        VmSpec { vcpus: 32, memory_mib: 65536, boot: linux(false, "root=/dev/vda ro"), devices: all_devices },
        VmSpec {
            vcpus: 3,
            memory_mib: 64,
            boot: linux(false, "init=/sbin/init"),
            devices: vec![Device::Balloon { deflate_on_oom: false, free_page_reporting: false }],
        },
    ]
}

#[test]
fn test_corpus_bodies_validate_against_spec() {
    let validator = SpecValidator::firecracker();
    for transport in [Transport::Mmio, Transport::Pci] {
        for (i, spec) in corpus().iter().enumerate() {
            let plan = Plan::new(spec, &options(transport)).unwrap_or_else(|e| panic!("corpus[{i}]: {e}"));
            check_plan(&validator, &plan).unwrap_or_else(|e| panic!("corpus[{i}] {transport:?}: {e}"));
        }
    }
}

#[test]
fn test_jailed_plan_validates_against_spec() {
    let validator = SpecValidator::firecracker();
    let tmp = tempfile::tempdir().unwrap();
    let kernel = tmp.path().join("vmlinux");
    let disk = tmp.path().join("disk.img");
    std::fs::write(&kernel, b"\x7fELF").unwrap();
    std::fs::write(&disk, [0u8; 512]).unwrap();
    let uid = nix_uid();
    let mut jailer = JailerConfig::new("/usr/bin/jailer", uid.0, uid.1);
    jailer.chroot_base = tmp.path().join("jail");
    let layout =
        Layout::jailed(&VmDirs::new(tmp.path().join("vm")), &jailer, std::path::Path::new("/x/firecracker")).unwrap();
    let spec = VmSpec {
        vcpus: 2,
        memory_mib: 256,
        boot: Boot::Linux { kernel, initrd: None, cmdline: String::new() },
        devices: vec![Device::VirtioBlk { id: "root".into(), path: disk, readonly: false }],
    };
    let mut plan =
        Plan::new(&spec, &MapOptions { transport: Transport::Pci, vsock_path: layout.vsock_socket_in_vmm.clone() })
            .unwrap();
    layout.jail.as_ref().unwrap().prepare(&mut plan).unwrap();
    check_plan(&validator, &plan).unwrap();
}

/// Our own uid and gid, so that the jail's chown needs no privilege.
fn nix_uid() -> (u32, u32) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u32 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("Uid:"), field("Gid:"))
}

#[test]
fn test_runtime_bodies_validate_against_spec() {
    let v = SpecValidator::firecracker();
    for action in [ActionType::InstanceStart, ActionType::SendCtrlAltDel, ActionType::FlushMetrics] {
        v.check_request("PUT", "/actions", Some(&json(&InstanceActionInfo { action_type: action }))).unwrap();
    }
    for state in [VmRunState::Paused, VmRunState::Resumed] {
        v.check_request("PATCH", "/vm", Some(&json(&Vm { state }))).unwrap();
    }
    v.check_request("PATCH", "/balloon", Some(&json(&BalloonUpdate { amount_mib: 64 }))).unwrap();
    v.check_request("PATCH", "/balloon/statistics", Some(&json(&BalloonStatsUpdate { stats_polling_interval_s: 1 })))
        .unwrap();
    v.check_request(
        "PATCH",
        "/balloon/hinting/start",
        Some(&json(&BalloonStartCmd { acknowledge_on_stop: Some(true) })),
    )
    .unwrap();
    v.check_request("PATCH", "/balloon/hinting/stop", None).unwrap();
    v.check_request(
        "PUT",
        "/balloon",
        Some(&json(&Balloon {
            amount_mib: 0,
            deflate_on_oom: true,
            stats_polling_interval_s: Some(5),
            free_page_hinting: Some(true),
            free_page_reporting: Some(true),
        })),
    )
    .unwrap();
    for snapshot_type in [None, Some(SnapshotType::Full), Some(SnapshotType::Diff)] {
        let body =
            SnapshotCreateParams { mem_file_path: "/s/mem".into(), snapshot_path: "/s/state".into(), snapshot_type };
        v.check_request("PUT", "/snapshot/create", Some(&json(&body))).unwrap();
    }
    for (backend_type, path) in [(MemoryBackendType::File, "/s/mem"), (MemoryBackendType::Uffd, "/s/uffd.sock")] {
        let body = SnapshotLoadParams {
            snapshot_path: "/s/state".into(),
            mem_backend: Some(MemoryBackend { backend_type, backend_path: path.into() }),
            mem_file_path: None,
            enable_diff_snapshots: None,
            track_dirty_pages: Some(true),
            resume_vm: Some(true),
            network_overrides: vec![NetworkOverride { iface_id: "net0".into(), host_dev_name: "tap9".into() }],
            vsock_override: Some(VsockOverride { uds_path: "/h/new/vsock.sock".into() }),
            clock_realtime: Some(false),
        };
        v.check_request("PUT", "/snapshot/load", Some(&json(&body))).unwrap();
    }
    let bucket = TokenBucket { size: 1 << 20, one_time_burst: Some(0), refill_time: 100 };
    let limiter = RateLimiter { bandwidth: Some(bucket), ops: Some(TokenBucket { one_time_burst: None, ..bucket }) };
    v.check_request(
        "PATCH",
        "/drives/root",
        Some(&json(&PartialDrive {
            drive_id: "root".into(),
            path_on_host: Some("/d/new.img".into()),
            rate_limiter: Some(limiter.clone()),
        })),
    )
    .unwrap();
    v.check_request(
        "PATCH",
        "/network-interfaces/net0",
        Some(&json(&PartialNetworkInterface {
            iface_id: "net0".into(),
            rx_rate_limiter: Some(limiter.clone()),
            tx_rate_limiter: None,
        })),
    )
    .unwrap();
    v.check_request(
        "PUT",
        "/drives/data",
        Some(&json(&Drive {
            drive_id: "data".into(),
            partuuid: None,
            is_root_device: false,
            cache_type: Some(CacheType::Writeback),
            is_read_only: Some(false),
            path_on_host: Some("/d/data.img".into()),
            rate_limiter: Some(limiter.clone()),
            io_engine: Some(IoEngine::Async),
            socket: None,
        })),
    )
    .unwrap();
    v.check_request("PUT", "/entropy", Some(&json(&EntropyDevice { rate_limiter: Some(limiter) }))).unwrap();
    v.check_request(
        "PUT",
        "/logger",
        Some(&json(&Logger {
            level: Some(LogLevel::Debug),
            log_path: Some("/h/fc.log".into()),
            show_level: Some(true),
            show_log_origin: Some(false),
            module: None,
        })),
    )
    .unwrap();
    v.check_request("PUT", "/metrics", Some(&json(&Metrics { metrics_path: "/h/metrics.fifo".into() }))).unwrap();
    v.check_request(
        "PUT",
        "/machine-config",
        Some(&json(&MachineConfiguration {
            vcpu_count: 2,
            mem_size_mib: 256,
            smt: Some(false),
            track_dirty_pages: Some(true),
            cpu_template: Some(CpuTemplate::None),
            huge_pages: Some(HugePages::Huge2M),
        })),
    )
    .unwrap();
}

#[test]
fn test_a_body_outside_the_spec_is_caught() {
    // The validator is not vacuous: the shapes the driver must never send fail.
    let v = SpecValidator::firecracker();
    let zero_vcpus = MachineConfiguration {
        vcpu_count: 0,
        mem_size_mib: 128,
        smt: None,
        track_dirty_pages: None,
        cpu_template: None,
        huge_pages: None,
    };
    assert!(v.check_request("PUT", "/machine-config", Some(&json(&zero_vcpus))).is_err());
    let low_cid = Vsock { guest_cid: 2, uds_path: "/v.sock".into(), vsock_id: None };
    assert!(v.check_request("PUT", "/vsock", Some(&json(&low_cid))).is_err());
    assert!(v.check_request("PUT", "/vm", Some(&json(&Vm { state: VmRunState::Paused }))).is_err());
}

#[test]
fn test_every_operation_used_is_in_spec() {
    let v = SpecValidator::firecracker();
    let ops = v.operations();
    for (method, template) in OPERATIONS_USED {
        assert!(
            ops.iter().any(|(m, t)| m == method && t == template),
            "{method} {template} is not in firecracker.yaml"
        );
    }
}

#[test]
fn test_response_shapes_match_spec() {
    let v = SpecValidator::firecracker();
    let info = InstanceInfo {
        app_name: "Firecracker".into(),
        id: "abc".into(),
        state: InstanceState::NotStarted,
        vmm_version: "1.16.1".into(),
    };
    v.check_response("GET", "/", 200, Some(&json(&info))).unwrap();
    let plan = Plan::new(&corpus()[2], &options(Transport::Mmio)).unwrap();
    let mut config = FullVmConfiguration::default();
    for request in &plan.requests {
        match request {
            nestbox_backend_firecracker::Request::MachineConfig(m) => config.machine_config = Some(m.clone()),
            nestbox_backend_firecracker::Request::BootSource(b) => config.boot_source = Some(b.clone()),
            nestbox_backend_firecracker::Request::Drive(d) => config.drives.push(d.clone()),
            nestbox_backend_firecracker::Request::NetworkInterface(n) => config.network_interfaces.push(n.clone()),
            nestbox_backend_firecracker::Request::Vsock(s) => config.vsock = Some(s.clone()),
            nestbox_backend_firecracker::Request::Balloon(b) => config.balloon = Some(b.clone()),
            nestbox_backend_firecracker::Request::Entropy(e) => config.entropy = Some(e.clone()),
        }
    }
    v.check_response("GET", "/vm/config", 200, Some(&json(&config))).unwrap();
    let stats = BalloonStats {
        target_pages: 1,
        actual_pages: 1,
        target_mib: 4,
        actual_mib: 4,
        oom_kill: Some(0),
        ..Default::default()
    };
    v.check_response("GET", "/balloon/statistics", 200, Some(&json(&stats))).unwrap();
    v.check_response("GET", "/version", 200, Some(&json(&FirecrackerVersion { firecracker_version: "1.16.1".into() })))
        .unwrap();
    v.check_response(
        "GET",
        "/balloon/hinting/status",
        200,
        Some(&json(&BalloonHintingStatus { host_cmd: 1, guest_cmd: None })),
    )
    .unwrap();
    let fault = nestbox_backend_firecracker::wire::Error { fault_message: Some("bad".into()) };
    v.check_response("PUT", "/actions", 400, Some(&json(&fault))).unwrap();
}

// ---- property-generated specs ----

fn device() -> impl Strategy<Value = Device> {
    prop_oneof![
        4 => ("[a-z]{1,6}\\.img", any::<bool>())
            .prop_map(|(name, readonly)| Device::VirtioBlk { id: String::new(), path: format!("/d/{name}").into(), readonly }),
        3 => ("tap[0-9]{1,3}", proptest::option::of(any::<[u8; 5]>()))
            .prop_map(|(tap, mac)| Device::VirtioNet {
                id: String::new(),
                tap,
                mac: mac.map(|m| format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4])),
            }),
        1 => (3u32..6).prop_map(|cid| Device::Vsock { cid, socket: None }),
        2 => (any::<bool>(), any::<bool>())
            .prop_map(|(deflate_on_oom, free_page_reporting)| Device::Balloon { deflate_on_oom, free_page_reporting }),
        2 => Just(Device::Rng),
        1 => Just(Device::VirtioFs { tag: "share".into(), path: "/srv/share".into() }),
    ]
}

fn vm_spec() -> impl Strategy<Value = VmSpec> {
    let boot = prop_oneof![
        9 => (any::<bool>(), proptest::collection::vec("[a-z]{1,8}(=[a-z0-9/]{1,8})?", 0..5))
            .prop_map(|(initrd, words)| linux(initrd, &words.join(" "))),
        1 => Just(Boot::Firmware { path: "/fw/OVMF.fd".into() }),
    ];
    (0u8..=40, 64u32..=8192, boot, proptest::collection::vec(device(), 0..7)).prop_map(
        |(vcpus, memory_mib, boot, mut devices)| {
            // Unique ids, as the model requires.
            for (i, device) in devices.iter_mut().enumerate() {
                match device {
                    Device::VirtioBlk { id, .. } => *id = format!("blk{i}"),
                    Device::VirtioNet { id, .. } => *id = format!("net{i}"),
                    _ => {}
                }
            }
            VmSpec { vcpus, memory_mib, boot, devices }
        },
    )
}

/// What the mapping must refuse, found independently of it: the first rule a spec breaks.
fn expected_refusal(spec: &VmSpec) -> Option<MapError> {
    if !(MIN_VCPUS..=MAX_VCPUS).contains(&spec.vcpus) {
        return Some(MapError::Vcpus { vcpus: spec.vcpus });
    }
    if matches!(spec.boot, Boot::Firmware { .. }) {
        return Some(MapError::Unsupported { field: "boot.firmware".into() });
    }
    let (mut balloons, mut rngs) = (0, 0);
    for (index, device) in spec.devices.iter().enumerate() {
        match device {
            Device::Vsock { cid, .. } if *cid != 3 => return Some(MapError::VsockTaken { index, cid: *cid }),
            Device::Balloon { .. } => {
                balloons += 1;
                if balloons > 1 {
                    return Some(MapError::Duplicate { kind: "balloon", index });
                }
            }
            Device::Rng => {
                rngs += 1;
                if rngs > 1 {
                    return Some(MapError::Duplicate { kind: "rng", index });
                }
            }
            Device::VirtioFs { .. } => {
                return Some(MapError::Unsupported { field: format!("devices[{index}] (virtio-fs)") });
            }
            _ => {}
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn prop_generated_plans_validate_or_are_refused_by_rule(spec in vm_spec(), pci in any::<bool>()) {
        let transport = if pci { Transport::Pci } else { Transport::Mmio };
        let validator = SpecValidator::firecracker();
        match (Plan::new(&spec, &options(transport)), expected_refusal(&spec)) {
            (Ok(plan), None) => {
                if let Err(e) = check_plan(&validator, &plan) {
                    return Err(TestCaseError::fail(e));
                }
                let cmdline = match &plan.requests[1] {
                    nestbox_backend_firecracker::Request::BootSource(b) => b.boot_args.clone().unwrap_or_default(),
                    other => return Err(TestCaseError::fail(format!("second request is {other:?}"))),
                };
                prop_assert!(cmdline.contains("nestbox.agent=vsock:1024"));
                let user_sets_pci = match &spec.boot {
                    Boot::Linux { cmdline, .. } => cmdline.split_whitespace().any(|w| w.split('=').next() == Some("pci")),
                    Boot::Firmware { .. } => false,
                };
                if !user_sets_pci {
                    prop_assert_eq!(cmdline.split_whitespace().any(|w| w == "pci=off"), !pci);
                }
            }
            (Err(got), Some(want)) => prop_assert_eq!(got, want),
            (got, want) => return Err(TestCaseError::fail(format!("mapping gave {got:?}, expected refusal {want:?}"))),
        }
    }
}
