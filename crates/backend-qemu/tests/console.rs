//! The guest's serial console through a real QEMU (skipped when it is not installed), under TCG,
//! with a few instructions of guest code booted as a PVH ELF and the backend's own command line:
//! keystrokes written to the console reach the guest's UART and come back on the live feed, and
//! QEMU neither spins nor exits while its stdin stays silent or after it closes.

use std::path::Path;
use std::time::Duration;

use nestbox_backend::{Backend, VmDirs};
use nestbox_backend_qemu::qmp::{QmpClient, RunStatus};
use nestbox_backend_qemu::{Accel, QemuBackend, QemuConfig};
use nestbox_model::{Boot, VmSpec};
use nestbox_supervise::{OsSpawner, Spawner, Stream};

const DEADLINE: Duration = Duration::from_secs(30);

/// 32-bit PVH entry code: print "R\n" on COM1, then forever echo every byte received.
///
/// ```text
///        mov dx, 0x3f8 ; mov al, 'R' ; out dx, al ; mov al, 10 ; out dx, al
/// poll:  mov dx, 0x3fd ; in al, dx ; test al, 1 ; jz poll      ; line status: data ready?
///        mov dx, 0x3f8 ; in al, dx ; out dx, al ; jmp poll     ; read it, write it back
/// ```
const ECHO: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, 0xb0, b'R', 0xee, 0xb0, b'\n', 0xee, // banner
    0x66, 0xba, 0xfd, 0x03, 0xec, 0xa8, 0x01, 0x74, 0xf7, // poll
    0x66, 0xba, 0xf8, 0x03, 0xec, 0xee, 0xeb, 0xef, // echo
];

/// `hlt` with interrupts off, forever: a guest that costs QEMU nothing.
const HALT: &[u8] = &[0xf4, 0xeb, 0xfd];

fn qemu_config() -> Option<QemuConfig> {
    match QemuConfig::new(Accel::Tcg) {
        Ok(mut config) => {
            config.start_timeout = DEADLINE;
            Some(config)
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// A VM directory with `code` as its kernel, and the spec that boots it.
fn guest(code: &[u8]) -> (tempfile::TempDir, VmDirs, VmSpec) {
    let tmp = tempfile::tempdir().unwrap();
    let kernel = tmp.path().join("guest.elf");
    std::fs::write(&kernel, nestbox_kernel::tiny_pvh_elf(code)).unwrap();
    let root = tmp.path().join("vm");
    std::fs::create_dir(&root).unwrap();
    let spec = VmSpec {
        vcpus: 1,
        memory_mib: 32,
        boot: Boot::Linux { kernel, initrd: None, cmdline: String::new() },
        devices: vec![],
    };
    (tmp, VmDirs::new(root), spec)
}

/// CPU time (user + system, in clock ticks) `pid` has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // Fields 14 and 15 of proc(5), counted from field 3 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// CPU ticks `pid` uses over one second.
async fn ticks_per_second(pid: u32) -> u64 {
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cpu_ticks(pid) - before
}

async fn status(api_socket: &Path) -> RunStatus {
    QmpClient::connect(api_socket).await.unwrap().status().await.unwrap()
}

#[tokio::test]
async fn test_keystrokes_reach_the_guest_and_its_echo_comes_back() {
    let Some(config) = qemu_config() else { return };
    let (_tmp, dirs, spec) = guest(ECHO);
    let vm = QemuBackend::new(config).launch(&spec, &dirs).await.unwrap();
    // The log is written after the live feed, so once it has the whole banner, so has the feed.
    let booted = async {
        while std::fs::read(dirs.console_log()).unwrap_or_default() != b"R\n" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(DEADLINE, booted).await.expect("the guest did not print its banner");
    let mut console = vm.console().expect("QEMU has a console");
    let input = console.input.clone().expect("QEMU takes console input");
    input.write(b"ping\n").await.unwrap();
    let mut got = Vec::new();
    let echoed = async {
        while !got.ends_with(b"ping\n") {
            got.extend_from_slice(&console.output.recv().await.unwrap());
        }
    };
    tokio::time::timeout(DEADLINE, echoed).await.expect("the guest did not echo");
    // The banner came before the subscription, so only the log has it; the log has the echo too.
    assert_eq!(got, b"ping\n");
    assert_eq!(vm.console_tail(2), ["R", "ping"]);
    // A second attachment types into the same port and sees the same output.
    let mut second = vm.console().unwrap();
    second.input.as_ref().unwrap().write(b"pong").await.unwrap();
    let mut both = (Vec::new(), Vec::new());
    let heard = async {
        while !both.0.ends_with(b"pong") || !both.1.ends_with(b"pong") {
            tokio::select! {
                chunk = console.output.recv() => both.0.extend_from_slice(&chunk.unwrap()),
                chunk = second.output.recv() => both.1.extend_from_slice(&chunk.unwrap()),
            }
        }
    };
    tokio::time::timeout(DEADLINE, heard).await.expect("the second attachment's keystrokes were not echoed");
    vm.kill();
    vm.wait().await;
}

#[tokio::test]
async fn test_qemu_idles_with_a_silent_stdin_and_runs_on_after_it_closes() {
    let Some(config) = qemu_config() else { return };
    let (_tmp, dirs, spec) = guest(HALT);
    let backend = QemuBackend::new(config);
    let cmd = backend.command(&spec, &dirs, true).unwrap();
    let child = OsSpawner.spawn(&cmd).unwrap();
    child.wait_for_socket(&dirs.api_socket(), DEADLINE).await.unwrap();
    assert_eq!(status(&dirs.api_socket()).await, RunStatus::Running);
    // Past start-up, a halted guest and a silent stdin cost QEMU next to nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let silent = ticks_per_second(child.pid()).await;
    child.stdin().unwrap().close().await;
    let closed = ticks_per_second(child.pid()).await;
    assert_eq!(child.try_wait(), None, "QEMU exited when its stdin closed: {:?}", child.log_tail(Stream::Stderr, 5));
    assert_eq!(status(&dirs.api_socket()).await, RunStatus::Running);
    // A spinning main loop would use about 100 ticks a second.
    assert!(silent < 40 && closed < 40, "QEMU used {silent} then {closed} ticks a second");
    child.kill();
    child.wait().await;
}
