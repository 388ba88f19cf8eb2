//! Contracts against Cloud Hypervisor's official API spec (`shared/specs/cloud-hypervisor.yaml`,
//! OpenAPI 3.0.1): every endpoint we call exists there with our method; every body we build —
//! `vm.create` from a corpus of specs (hand-written and property-generated), and the snapshot,
//! restore, resize, add-disk and remove-device bodies — validates against its schema; what the
//! client actually puts on the socket validates too. Plus the argv golden.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nestbox_backend::VmDirs;
use nestbox_backend_chv::client::{API_BASE, ChvClient, Endpoint};
use nestbox_backend_chv::map::{self, MapError};
use nestbox_backend_chv::process::ChvArgs;
use nestbox_backend_chv::wire::{
    DiskConfig, MemoryRestoreMode, PciDeviceInfo, RestoreConfig, VmConfig, VmInfo, VmRemoveDevice, VmResize,
    VmSnapshotConfig, VmState, VmmPingResponse,
};
use nestbox_model::{Boot, Device, VmSpec};
use nestbox_testkit::spec::SpecValidator;
use nestbox_uds_http::server::{Handler, Reply, Request, Server};
use proptest::prelude::*;
use serde::Serialize;
use serde_json::Value;

fn validator() -> SpecValidator {
    SpecValidator::cloud_hypervisor()
}

fn dirs() -> VmDirs {
    VmDirs::new("/var/lib/nestbox/sandboxes/abc")
}

fn value<T: Serialize>(body: &T) -> Value {
    serde_json::to_value(body).unwrap()
}

fn check(endpoint: Endpoint, body: Option<&Value>) {
    if let Err(e) = validator().check_request(endpoint.method().as_str(), &endpoint.path(), body) {
        panic!("{e}\nbody: {}", body.map(Value::to_string).unwrap_or_default());
    }
    if let Some(body) = body {
        let schema = request_schema(endpoint);
        let mut undeclared = Vec::new();
        undeclared_fields(&schema, body, "", &mut undeclared);
        assert!(undeclared.is_empty(), "{endpoint}: fields not in the schema {undeclared:?}; body: {body}");
    }
}

/// The spec document as JSON.
fn document() -> &'static Value {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let path = nestbox_testkit::spec::specs_dir().join(nestbox_testkit::spec::CLOUD_HYPERVISOR_SPEC);
        serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    })
}

/// Follows a `$ref` to its schema.
fn resolve(schema: &Value) -> &'static Value {
    let reference = schema["$ref"].as_str().expect("a $ref");
    let pointer = reference.strip_prefix('#').expect("a local $ref");
    document().pointer(pointer).unwrap_or_else(|| panic!("dangling {reference}"))
}

/// The request body schema of an endpoint.
fn request_schema(endpoint: Endpoint) -> Value {
    let op = &document()["paths"][format!("/{}", endpoint.name())][endpoint.method().as_str().to_ascii_lowercase()];
    op["requestBody"]["content"]["application/json"]["schema"].clone()
}

/// The schemas allow unknown properties, so a misspelt field would validate: walk the body
/// and name every key its schema does not declare.
fn undeclared_fields(schema: &Value, body: &Value, at: &str, out: &mut Vec<String>) {
    let schema = if schema.get("$ref").is_some() { resolve(schema) } else { schema };
    match body {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, value) in fields {
                let child = format!("{at}.{key}");
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(sub), _) | (None, Some(sub)) => undeclared_fields(sub, value, &child, out),
                    (None, None) => out.push(child),
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    undeclared_fields(sub, item, &format!("{at}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn linux(cmdline: &str) -> Boot {
    Boot::Linux {
        kernel: "/var/lib/nestbox/kernels/vmlinux".into(),
        initrd: Some("/var/lib/nestbox/images/agent.cpio".into()),
        cmdline: cmdline.into(),
    }
}

/// Hand-written specs: the minimum, every device kind, firmware boot, the most vCPUs.
fn corpus() -> Vec<VmSpec> {
    vec![
        VmSpec { vcpus: 1, memory_mib: 64, boot: linux(""), devices: vec![] },
        VmSpec {
            vcpus: 2,
            memory_mib: 512,
            boot: linux("console=ttyS0 quiet"),
            devices: vec![
                Device::VirtioBlk { id: "root".into(), path: "/images/root.ext4".into(), readonly: true },
                Device::VirtioBlk { id: "scratch".into(), path: "/images/scratch.img".into(), readonly: false },
                Device::VirtioNet { id: "net0".into(), tap: "nbx0".into(), mac: Some("02:00:00:00:00:01".into()) },
                Device::VirtioNet { id: "net1".into(), tap: "nbx1".into(), mac: None },
                Device::Vsock { cid: 3, socket: None },
                Device::Balloon { deflate_on_oom: true, free_page_reporting: true },
                Device::Rng,
            ],
        },
        VmSpec {
            vcpus: 4,
            memory_mib: 2048,
            boot: Boot::Firmware { path: "/usr/share/cloud-hypervisor/hypervisor-fw".into() },
            devices: vec![Device::Balloon { deflate_on_oom: false, free_page_reporting: false }],
        },
        VmSpec {
            vcpus: 254,
            memory_mib: 1024 * 1024,
            boot: Boot::Linux { kernel: "/k".into(), initrd: None, cmdline: "root=/dev/vda".into() },
            devices: vec![Device::Vsock { cid: 3, socket: Some(dirs().root().join(map::VSOCK_SOCKET_NAME)) }],
        },
    ]
}

/// Checks one `vm.create` body and the choices every body must carry.
fn check_vm_create(spec: &VmSpec, config: &VmConfig) {
    let body = value(config);
    check(Endpoint::VmCreate, Some(&body));
    assert_eq!(body["memory"]["thp"], Value::Bool(false), "thp must be serialized as false: {body}");
    assert_eq!(body["memory"]["shared"], Value::Bool(true), "{body}");
    assert_eq!(body["memory"]["size"], u64::from(spec.memory_mib) << 20);
    assert_eq!(body["vsock"]["cid"], 3);
    assert_eq!(body["vsock"]["socket"], "/var/lib/nestbox/sandboxes/abc/vsock.sock");
    if let Boot::Linux { .. } = spec.boot {
        let cmdline = body["payload"]["cmdline"].as_str().unwrap();
        assert!(cmdline.split(' ').any(|w| w == "nestbox.agent=vsock:1024"), "{cmdline}");
    }
}

#[test]
fn test_every_endpoint_we_call_is_in_the_spec() {
    let validator = validator();
    let operations = validator.operations();
    for endpoint in Endpoint::ALL {
        let path = endpoint.path();
        assert!(path.starts_with(API_BASE));
        let method = endpoint.method();
        assert!(
            validator.template_of(method.as_str(), &path).is_some(),
            "{method} {path} is not in the spec; it has {operations:?}"
        );
        if !endpoint.has_body() {
            check(endpoint, None);
        }
    }
}

#[test]
fn test_vm_create_bodies_of_the_corpus_validate() {
    for spec in corpus() {
        let config = map::vm_config(&spec, &dirs()).unwrap_or_else(|e| panic!("{e}: {spec:?}"));
        check_vm_create(&spec, &config);
    }
}

#[test]
fn test_thp_is_serialized_as_false() {
    let config = map::vm_config(&corpus()[0], &dirs()).unwrap();
    let text = serde_json::to_string(&config).unwrap();
    assert!(text.contains(r#""thp":false"#), "{text}");
    assert!(text.contains(r#""shared":true"#), "{text}");
}

#[test]
fn test_other_bodies_validate() {
    check(Endpoint::VmSnapshot, Some(&value(&VmSnapshotConfig { destination_url: "file:///snap/1".into() })));
    for mode in [MemoryRestoreMode::Copy, MemoryRestoreMode::OnDemand] {
        for resume in [None, Some(false), Some(true)] {
            let restore = RestoreConfig {
                source_url: "file:///snap/1".into(),
                prefault: Some(resume.is_some()),
                memory_restore_mode: Some(mode),
                resume,
            };
            check(Endpoint::VmRestore, Some(&value(&restore)));
        }
    }
    for resize in [
        VmResize { desired_balloon: Some(0), ..VmResize::default() },
        VmResize { desired_balloon: Some(256 << 20), ..VmResize::default() },
        VmResize { desired_vcpus: Some(2), desired_ram: Some(1 << 30), desired_balloon: None },
    ] {
        check(Endpoint::VmResize, Some(&value(&resize)));
    }
    let disk = DiskConfig {
        path: Some("/images/extra.img".into()),
        readonly: true,
        id: Some("extra".into()),
        ..DiskConfig::default()
    };
    check(Endpoint::VmAddDisk, Some(&value(&disk)));
    check(Endpoint::VmRemoveDevice, Some(&value(&VmRemoveDevice { id: "extra".into() })));
}

#[test]
fn test_undeclared_field_check_is_not_vacuous() {
    let mut body = value(&map::vm_config(&corpus()[1], &dirs()).unwrap());
    body["memory"]["transparent_huge_pages"] = Value::Bool(false);
    body["net"][0]["queues"] = Value::from(2);
    let mut out = Vec::new();
    undeclared_fields(&request_schema(Endpoint::VmCreate), &body, "", &mut out);
    assert_eq!(out, [".memory.transparent_huge_pages", ".net[0].queues"]);
}

#[test]
fn test_spec_rejects_what_we_must_not_send() {
    // The validator is not vacuous: a vsock CID below 3 and a string vCPU count are refused.
    let mut body = value(&map::vm_config(&corpus()[1], &dirs()).unwrap());
    body["vsock"]["cid"] = Value::from(2);
    assert!(validator().check_request("PUT", "/api/v1/vm.create", Some(&body)).is_err());
    let mut body = value(&map::vm_config(&corpus()[1], &dirs()).unwrap());
    body["cpus"]["boot_vcpus"] = Value::from("2");
    assert!(validator().check_request("PUT", "/api/v1/vm.create", Some(&body)).is_err());
    assert!(validator().check_request("PUT", "/api/v1/vm.frobnicate", None).is_err());
}

#[test]
fn test_map_errors_name_backend_and_field() {
    let fs = VmSpec {
        vcpus: 1,
        memory_mib: 128,
        boot: linux(""),
        devices: vec![Device::VirtioFs { tag: "src".into(), path: "/src".into() }],
    };
    let err = map::vm_config(&fs, &dirs()).unwrap_err();
    assert!(matches!(err, MapError::Unsupported { .. }));
    assert!(err.to_string().starts_with("cloud-hypervisor does not support devices[0]"), "{err}");

    let two_rng = VmSpec { devices: vec![Device::Rng, Device::Rng], ..fs.clone() };
    assert_eq!(
        map::vm_config(&two_rng, &dirs()).unwrap_err().to_string(),
        "cloud-hypervisor has one rng device; devices[1] is a second"
    );
    let other_vsock = VmSpec { devices: vec![Device::Vsock { cid: 9, socket: None }], ..fs };
    assert!(map::vm_config(&other_vsock, &dirs()).unwrap_err().to_string().contains("devices[0] asks for cid 9"));
}

#[test]
fn test_argv_golden() {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/argv-default.txt");
    let verbose = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/argv-logfile-verbose.txt");
    let args = ChvArgs::for_dirs(&VmDirs::new("/h/sandboxes/abc"));
    let logged = ChvArgs { log_file: Some("/h/sandboxes/abc/ch.log".into()), verbosity: 2, ..args.clone() };
    for (path, args) in [(golden, args), (verbose, logged)] {
        let argv: Vec<String> = args.build().unwrap().into_iter().map(|a| a.into_string().unwrap()).collect();
        let text = argv.join("\n") + "\n";
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let expected = std::fs::read_to_string(&path).expect("golden file (UPDATE_GOLDEN=1 writes it)");
        assert_eq!(text, expected, "argv changed; review and rerun with UPDATE_GOLDEN=1");
    }
}

// ---- what the client really sends -------------------------------------------------------------

/// A server that records every request and answers with a spec-shaped success.
async fn recording_server(socket: &Path) -> (Server, Arc<Mutex<Vec<Request>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let ping = serde_json::to_vec(&VmmPingResponse {
        version: "53.0.0".into(),
        build_version: Some("v53.0".into()),
        pid: Some(1),
        features: Some(vec!["kvm".into()]),
    })
    .unwrap();
    let config = map::vm_config(&corpus()[1], &dirs()).unwrap();
    let info =
        serde_json::to_vec(&VmInfo { config, state: VmState::Running, memory_actual_size: None, device_tree: None })
            .unwrap();
    let disk = serde_json::to_vec(&PciDeviceInfo { id: "extra".into(), bdf: "0000:00:06.0".into() }).unwrap();
    let handler: Handler = Arc::new(move |request: Request| {
        let reply = match request.path.as_str() {
            "/api/v1/vmm.ping" => Reply::json(200, ping.clone()),
            "/api/v1/vm.info" => Reply::json(200, info.clone()),
            "/api/v1/vm.counters" => Reply::json(200, br#"{"_disk0":{"read_bytes":4096}}"#.to_vec()),
            "/api/v1/vm.add-disk" => Reply::json(200, disk.clone()),
            _ => Reply::empty(204),
        };
        record.lock().unwrap().push(request);
        reply
    });
    (Server::bind(socket, handler).await.unwrap(), seen)
}

#[tokio::test]
async fn test_client_requests_on_the_wire_validate() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let (server, seen) = recording_server(&socket).await;
    let client = ChvClient::new(&socket);

    assert_eq!(client.ping().await.unwrap().version, "53.0.0");
    for spec in corpus() {
        client.create(&map::vm_config(&spec, &dirs()).unwrap()).await.unwrap();
    }
    client.boot().await.unwrap();
    client.pause().await.unwrap();
    client.snapshot(&VmSnapshotConfig { destination_url: "file:///snap/1".into() }).await.unwrap();
    client.resume().await.unwrap();
    client.resize(&VmResize { desired_balloon: Some(64 << 20), ..VmResize::default() }).await.unwrap();
    assert_eq!(client.info().await.unwrap().state, VmState::Running);
    assert_eq!(client.counters().await.unwrap()["_disk0"]["read_bytes"], 4096);
    let disk = DiskConfig { path: Some("/x.img".into()), ..DiskConfig::default() };
    assert_eq!(client.add_disk(&disk).await.unwrap().unwrap().bdf, "0000:00:06.0");
    client.remove_device(&VmRemoveDevice { id: "extra".into() }).await.unwrap();
    client.power_button().await.unwrap();
    client.shutdown().await.unwrap();
    client
        .restore(&RestoreConfig {
            source_url: "file:///snap/1".into(),
            prefault: None,
            memory_restore_mode: Some(MemoryRestoreMode::OnDemand),
            resume: Some(true),
        })
        .await
        .unwrap();
    client.vmm_shutdown().await.unwrap();
    server.shutdown();

    let seen = seen.lock().unwrap().clone();
    let mut called = std::collections::HashSet::new();
    for request in &seen {
        let body: Option<Value> =
            (!request.body.is_empty()).then(|| serde_json::from_slice(&request.body).expect("a JSON body"));
        validator().check_request(&request.method, &request.path, body.as_ref()).unwrap_or_else(|e| panic!("{e}"));
        let endpoint = Endpoint::ALL.into_iter().find(|e| e.path() == request.path).expect("a known endpoint");
        check(endpoint, body.as_ref());
        called.insert((request.method.clone(), request.path.clone()));
    }
    for endpoint in Endpoint::ALL {
        assert!(
            called.contains(&(endpoint.method().to_string(), endpoint.path())),
            "{endpoint} was not exercised on the wire"
        );
    }
}

// ---- property-generated specs -----------------------------------------------------------------

fn any_text() -> impl Strategy<Value = String> {
    "[ -~]{1,24}"
}

fn any_path() -> impl Strategy<Value = PathBuf> {
    "/[a-zA-Z0-9._/-]{1,40}".prop_map(PathBuf::from)
}

fn any_device() -> impl Strategy<Value = Device> {
    prop_oneof![
        (any_text(), any_path(), any::<bool>()).prop_map(|(id, path, readonly)| Device::VirtioBlk {
            id,
            path,
            readonly
        }),
        ("[a-z0-9]{1,15}", proptest::option::of("02:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}"))
            .prop_map(|(tap, mac)| Device::VirtioNet { id: format!("net-{tap}"), tap, mac }),
        (any::<bool>(), any::<bool>())
            .prop_map(|(deflate_on_oom, free_page_reporting)| Device::Balloon { deflate_on_oom, free_page_reporting }),
        Just(Device::Rng),
        Just(Device::Vsock { cid: 3, socket: None }),
    ]
}

fn any_spec() -> impl Strategy<Value = VmSpec> {
    let boot = prop_oneof![
        (any_path(), proptest::option::of(any_path()), "[ -~]{0,200}")
            .prop_map(|(kernel, initrd, cmdline)| Boot::Linux { kernel, initrd, cmdline }),
        any_path().prop_map(|path| Boot::Firmware { path }),
    ];
    (1u8..=254, 64u32..=1024 * 1024, boot, proptest::collection::vec(any_device(), 0..8))
        .prop_map(|(vcpus, memory_mib, boot, devices)| VmSpec { vcpus, memory_mib, boot, devices })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn test_generated_vm_create_bodies_validate(spec in any_spec()) {
        match map::vm_config(&spec, &dirs()) {
            Ok(config) => check_vm_create(&spec, &config),
            // The only refusals a generated spec can hit: a second balloon or rng.
            Err(MapError::Duplicate { kind, index }) => {
                prop_assert!(kind == "balloon" || kind == "rng");
                prop_assert!(index < spec.devices.len());
            }
            Err(other) => prop_assert!(false, "unexpected refusal {other}"),
        }
    }
}
