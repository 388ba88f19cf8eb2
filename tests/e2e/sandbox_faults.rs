//! Persistent sandboxes under faults and races: kill -9 at every step, dead shims and hypervisors,
//! racing CLIs, bad references.
//!
//! After each fault, `ps -a` must tell the truth, and after `gc` (and `rm` for a record the user
//! still owns) nothing of the sandbox is left: no process, directory, socket, lock or record.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use nestbox_engine::sandbox::fault::{FAULT_ENV, STEPS};
use serde_json::Value;

use crate::common::{Home, processes_mentioning, stderr, stdout};
use crate::require_vm;

/// Small VMs: eight of them boot at once in the race test.
const MEMORY: &str = "128M";

/// `nestbox create --memory 128M EXTRA…`; returns the new id.
fn create(home: &Home, extra: &[&str]) -> String {
    let mut args = vec!["create", "--memory", MEMORY, "--boot-timeout", "120s"];
    args.extend_from_slice(extra);
    let out = home.output(&args);
    assert!(out.status.success(), "create {extra:?}: {}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert_eq!(id.len(), 12, "not an id: {id:?}");
    id
}

/// `nestbox ARGS`, which must succeed.
fn ok(home: &Home, args: &[&str]) -> Output {
    let out = home.output(args);
    assert!(out.status.success(), "{args:?} failed ({:?}): {}", out.status, stderr(&out));
    out
}

/// `nestbox ARGS`, which must fail with `code` and one line on stderr; returns that line.
fn fails(home: &Home, args: &[&str], code: i32) -> String {
    let out = home.output(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert_one_line(&err);
    err
}

fn assert_one_line(err: &str) {
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("nestbox: "), "{err:?}");
}

/// `ps -a --format json`.
fn ps_all(home: &Home) -> Vec<Value> {
    let out = ok(home, &["ps", "-a", "--format", "json"]);
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(list) => list,
        other => panic!("ps -a is not an array: {other}"),
    }
}

/// The record of `id` as `ps -a` shows it, if any.
fn record(home: &Home, id: &str) -> Option<Value> {
    ps_all(home).into_iter().find(|sb| sb["id"] == id)
}

fn state(sb: &Value) -> &str {
    sb["state"].as_str().unwrap()
}

fn reason(sb: &Value) -> &str {
    sb["reason"].as_str().unwrap_or_default()
}

/// Polls `id`'s record until `done` holds, for up to `within`; returns the last one seen.
fn wait_record(home: &Home, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let sb = record(home, id).unwrap_or_else(|| panic!("sandbox {id} vanished"));
        if done(&sb) || Instant::now() > deadline {
            return sb;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `inspect SB` as JSON.
fn inspect(home: &Home, sb: &str) -> Value {
    serde_json::from_slice(&ok(home, &["inspect", sb]).stdout).unwrap()
}

fn pid_alive(pid: u32) -> bool {
    // A zombie is dead: its parent just has not reaped it yet.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

fn wait_pid_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while pid_alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn sigkill(pid: u32) {
    let pid = i32::try_from(pid).unwrap();
    // SAFETY: kill has no memory effects; the pid is one the test just read from a live sandbox.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill -9 {pid}");
}

/// Processes of sandbox `id`: anything naming its directory, and its shim (`--id ID`).
fn processes_of(home: &Home, id: &str) -> Vec<(u32, String)> {
    let dir = home.path().join("sandboxes").join(id).display().to_string();
    let mut found = processes_mentioning(&dir);
    found.extend(processes_mentioning(&format!("--id {id}")));
    found
}

/// Waits until no process of `id` is left (SIGKILLed ones take a moment to be reaped).
fn wait_no_processes(home: &Home, id: &str, within: Duration) -> Vec<(u32, String)> {
    let deadline = Instant::now() + within;
    loop {
        let left = processes_of(home, id);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every socket under `dir`, not following symlinks (the shared caches are symlinks).
fn sockets_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_socket() {
            found.push(entry.path());
        } else if kind.is_dir() {
            found.extend(sockets_under(&entry.path()));
        }
    }
    found
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect()
}

/// Asserts nothing of any sandbox is left under `home`: no record, process, directory, socket or
/// lock file.
fn assert_nothing_left(home: &Home, ids: &[&str]) {
    let records = ps_all(home);
    assert!(records.is_empty(), "records left: {records:?}");
    for id in ids {
        let left = wait_no_processes(home, id, Duration::from_secs(5));
        assert!(left.is_empty(), "processes of {id} left: {left:?}");
    }
    assert_eq!(entries(&home.path().join("sandboxes")), Vec::<PathBuf>::new(), "sandbox directories left");
    assert_eq!(sockets_under(home.path()), Vec::<PathBuf>::new(), "sockets left");
    assert_eq!(entries(&home.path().join("locks")), Vec::<PathBuf>::new(), "lock files left");
    home.assert_clean();
}

/// `gc --grace 0s`, as JSON: what it removed.
fn gc(home: &Home) -> Vec<Value> {
    let out = ok(home, &["gc", "--grace", "0s", "--format", "json"]);
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(list) => list,
        other => panic!("gc output is not an array: {other}"),
    }
}

fn removed(gc: &[Value], kind: &str) -> Vec<String> {
    gc.iter().filter(|r| r["kind"] == kind).map(|r| r["target"].as_str().unwrap().to_owned()).collect()
}

/// Waits for `child` for up to `within`; kills it and fails if it hangs.
fn wait_child(mut child: Child, within: Duration, what: &str) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} hung for {within:?}: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// kill -9 of the CLI at a step of `create`.
fn fault_in_create(step: &str) {
    let home = Home::new();
    let out = home.nestbox(["create", "--memory", MEMORY, "--name", "victim"]).env(FAULT_ENV, step).output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{step}: create was not killed: {}", stderr(&out));
    // The record came first and says the create never finished.
    let records = ps_all(&home);
    assert_eq!(records.len(), 1, "{step}: {records:?}");
    let sb = &records[0];
    assert_eq!(state(sb), "creating", "{step}: {sb}");
    let id = sb["id"].as_str().unwrap().to_owned();
    let dir = home.path().join("sandboxes").join(&id);
    assert_eq!(dir.exists(), step != "create.record", "{step}: directory");
    assert_eq!(dir.join("spec.json").exists(), step == "create.spec", "{step}: spec.json");
    // Within the grace period the record may still be a create in progress: gc leaves it.
    let dry = ok(&home, &["gc", "--dry-run", "--format", "json"]);
    assert!(!stdout(&dry).contains(&id), "{step}: gc would remove a fresh create: {}", stdout(&dry));
    assert!(record(&home, &id).is_some(), "{step}: a dry run removed the record");

    let gone = gc(&home);
    assert_eq!(removed(&gone, "record"), vec![id.clone()], "{step}: {gone:?}");
    assert_nothing_left(&home, &[&id]);
}

/// kill -9 of the CLI (`start.*`) or of the shim (`shim.*`) at a step of `start`.
fn fault_in_start(step: &str) {
    let home = Home::new();
    let id = create(&home, &["--name", "victim"]);
    let out = home.nestbox(["start", &id]).env(FAULT_ENV, step).output().unwrap();
    let sb = match step {
        "start.starting" => {
            assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{step}: {}", stderr(&out));
            // No shim was spawned: the start is over, and said so.
            let sb = record(&home, &id).unwrap();
            assert_eq!(state(&sb), "crashed", "{step}: {sb}");
            assert!(reason(&sb).contains("interrupted"), "{step}: {sb}");
            assert!(processes_of(&home, &id).is_empty(), "{step}: {:?}", processes_of(&home, &id));
            sb
        }
        "start.spawned" | "start.recorded" => {
            assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{step}: {}", stderr(&out));
            // The shim outlives its CLI and carries on with the boot.
            let sb = wait_record(&home, &id, Duration::from_secs(120), |sb| state(sb) != "starting");
            assert_eq!(state(&sb), "running", "{step}: {sb}");
            let shim = u32::try_from(sb["shim"]["pid"].as_u64().unwrap()).unwrap();
            assert!(pid_alive(shim), "{step}: running, but its shim {shim} is dead");
            ok(&home, &["exec", &id, "--", "true"]);
            sb
        }
        "shim.booting" | "shim.booted" | "shim.serving" => {
            // The CLI lives and reports the start failed.
            assert_eq!(out.status.code(), Some(125), "{step}: {}", stderr(&out));
            let err = stderr(&out);
            assert_one_line(&err);
            assert!(err.contains("failed to start") && err.contains("shim"), "{step}: {err}");
            let sb = record(&home, &id).unwrap();
            assert_eq!(state(&sb), "crashed", "{step}: {sb}");
            assert!(reason(&sb).contains("shim"), "{step}: {sb}");
            // The hypervisor died with its shim.
            let left = wait_no_processes(&home, &id, Duration::from_secs(5));
            assert!(left.is_empty(), "{step}: {left:?}");
            sb
        }
        other => panic!("no expectation for fault step {other}: add one"),
    };
    let gone = gc(&home);
    // gc never takes a sandbox the user still owns: a running one keeps running.
    assert!(removed(&gone, "record").is_empty(), "{step}: {gone:?}");
    assert!(removed(&gone, "process").is_empty(), "{step}: gc killed a live sandbox's process: {gone:?}");
    let after = record(&home, &id).unwrap_or_else(|| panic!("{step}: gc removed the record"));
    assert_eq!(state(&after), state(&sb), "{step}: {after}");
    // A shim killed once its sockets were bound left them behind; gc takes them.
    if matches!(step, "shim.booted" | "shim.serving") {
        assert!(!removed(&gone, "socket").is_empty(), "{step}: gc found no sockets: {gone:?}");
    }
    // Nothing of a crashed sandbox listens any more.
    if state(&sb) == "crashed" {
        let sockets = sockets_under(&home.path().join("sandboxes"));
        assert!(sockets.is_empty(), "{step}: sockets after gc: {sockets:?}");
    }
    ok(&home, &["rm", "-f", &id]);
    assert_nothing_left(&home, &[&id]);
}

#[test]
fn test_kill_9_of_the_cli_or_shim_at_every_step_of_create_and_start() {
    require_vm!();
    for step in STEPS {
        let t = Instant::now();
        if step.starts_with("create.") {
            fault_in_create(step);
        } else {
            fault_in_start(step);
        }
        eprintln!("fault at {step}: {:?}", t.elapsed());
    }
}

/// A created and started sandbox; returns its id.
fn running(home: &Home, name: &str) -> String {
    let id = create(home, &["--name", name]);
    ok(home, &["start", &id]);
    id
}

#[test]
fn test_kill_9_of_the_hypervisor_marks_the_sandbox_crashed() {
    require_vm!();
    let home = Home::new();
    let id = running(&home, "vm-dies");
    let info = inspect(&home, &id);
    let vm = u32::try_from(info["vm_pid"].as_u64().unwrap_or_else(|| panic!("no vm_pid: {info}"))).unwrap();
    let pid_file = std::fs::read_to_string(home.path().join("sandboxes").join(&id).join("vm.pid")).unwrap();
    assert_eq!(pid_file.trim(), vm.to_string());
    sigkill(vm);
    let sb = wait_record(&home, &id, Duration::from_secs(15), |sb| state(sb) != "running");
    assert_eq!(state(&sb), "crashed", "{sb}");
    assert!(reason(&sb).contains("killed by SIGKILL"), "{sb}");
    // Its shim wrote that down and left.
    let shim = u32::try_from(sb["shim"]["pid"].as_u64().unwrap()).unwrap();
    assert!(wait_pid_gone(shim, Duration::from_secs(5)), "the shim {shim} outlived its VM");

    let err = fails(&home, &["exec", &id, "--", "true"], 118);
    assert!(err.contains("crashed"), "{err}");
    ok(&home, &["rm", &id]);
    assert_nothing_left(&home, &[&id]);
}

#[test]
fn test_kill_9_of_the_shim_takes_the_hypervisor_with_it() {
    require_vm!();
    let home = Home::new();
    let id = running(&home, "shim-dies");
    let info = inspect(&home, &id);
    let shim = u32::try_from(info["shim"]["pid"].as_u64().unwrap()).unwrap();
    let vm = u32::try_from(info["vm_pid"].as_u64().unwrap()).unwrap();
    sigkill(shim);
    assert!(wait_pid_gone(shim, Duration::from_secs(5)), "shim {shim} survived kill -9");
    let sb = record(&home, &id).unwrap();
    assert_eq!(state(&sb), "crashed", "{sb}");
    assert!(reason(&sb).contains("shim") && reason(&sb).contains(&shim.to_string()), "{sb}");
    assert!(wait_pid_gone(vm, Duration::from_secs(5)), "the hypervisor {vm} outlived its shim");

    let err = fails(&home, &["exec", &id, "--", "true"], 118);
    assert!(err.contains("crashed"), "{err}");
    ok(&home, &["rm", &id]);
    assert_nothing_left(&home, &[&id]);
}

#[test]
fn test_stop_against_a_long_exec() {
    require_vm!();
    let home = Home::new();
    let id = running(&home, "busy");
    let mut exec = home
        .nestbox(["exec", &id, "--", "sh", "-c", "echo up; sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(exec.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
    assert_eq!(first, "up\n");

    let t = Instant::now();
    ok(&home, &["stop", "--timeout", "5s", &id]);
    let stop_took = t.elapsed();
    let out = wait_child(exec, Duration::from_secs(20), "exec under stop");
    eprintln!("stop took {stop_took:?}; exec ended {:?} after it began: {:?}", t.elapsed(), out.status);
    // The command did not run to its end: either it was killed in the guest (its exit code) or
    // the connection ended under it (a one-line error saying the sandbox stopped).
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    if out.status.code() == Some(125) {
        assert_one_line(&err);
        assert!(err.contains("stopped"), "{err}");
    } else {
        let code = out.status.code().expect("exec died of a signal");
        assert!(code > 128, "exec exited {code}: {err}");
    }
    let sb = record(&home, &id).unwrap();
    assert_eq!(state(&sb), "stopped", "{sb}");
    let err = fails(&home, &["exec", &id, "--", "true"], 118);
    assert!(err.contains("stopped"), "{err}");
    ok(&home, &["rm", &id]);
    assert_nothing_left(&home, &[&id]);
}

#[test]
fn test_rm_against_start() {
    require_vm!();
    // rm a moment before start, both at once, and rm arriving while the VM boots.
    for (rm_first, delay) in [(true, 20), (false, 0), (false, 300)] {
        let home = Home::new();
        let id = create(&home, &["--name", "contested"]);
        let spawn = |args: &[&str]| home.nestbox(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (start, rm) = if rm_first {
            let rm = spawn(&["rm", "-f", &id]);
            std::thread::sleep(Duration::from_millis(delay));
            (spawn(&["start", &id]), rm)
        } else {
            let start = spawn(&["start", &id]);
            std::thread::sleep(Duration::from_millis(delay));
            (start, spawn(&["rm", "-f", &id]))
        };
        let start = wait_child(start, Duration::from_secs(150), "start racing rm");
        let rm = wait_child(rm, Duration::from_secs(150), "rm racing start");
        let order = if rm_first { "rm, then start" } else { "start, then rm" };
        eprintln!("{order} {delay} ms later: start {:?} {}", start.status, stderr(&start));
        eprintln!("  rm {:?} {}", rm.status, stderr(&rm));
        for (what, out) in [("start", &start), ("rm", &rm)] {
            if !out.status.success() {
                assert_one_line(&stderr(out));
                assert!([118, 121, 123, 125].contains(&out.status.code().unwrap_or(-1)), "{what}: {:?}", out.status);
            }
        }
        assert!(start.status.success() || rm.status.success(), "neither won");
        // The record tells the truth about whoever won.
        match record(&home, &id) {
            None => {
                assert!(rm.status.success(), "the record is gone, yet rm failed: {}", stderr(&rm));
                let left = wait_no_processes(&home, &id, Duration::from_secs(5));
                assert!(left.is_empty(), "removed, but processes live on: {left:?}");
            }
            Some(sb) => {
                assert!(!rm.status.success(), "rm succeeded, yet the record is there: {sb}");
                match state(&sb) {
                    "running" => {
                        assert!(start.status.success(), "{sb}");
                        ok(&home, &["exec", &id, "--", "true"]);
                    }
                    "created" | "stopped" | "crashed" => {
                        assert!(processes_of(&home, &id).is_empty(), "{sb}: {:?}", processes_of(&home, &id))
                    }
                    other => panic!("inconsistent state {other} after the race: {sb}"),
                }
                ok(&home, &["rm", "-f", &id]);
            }
        }
        gc(&home);
        assert_nothing_left(&home, &[&id]);
    }
}

#[test]
fn test_eight_parallel_create_and_start() {
    require_vm!();
    const N: usize = 8;
    let home = Home::new();
    let t = Instant::now();
    // Each outcome: the name, and the id started or the failing command's exit code and stderr.
    type Outcome = (String, Result<String, (&'static str, Option<i32>, String)>);
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let tasks: Vec<_> = (0..N)
            .map(|n| {
                let home = &home;
                s.spawn(move || {
                    let name = format!("par{n}");
                    let out = home.output(["create", "--memory", MEMORY, "--boot-timeout", "120s", "--name", &name]);
                    if !out.status.success() {
                        return (name, Err(("create", out.status.code(), stderr(&out))));
                    }
                    let id = stdout(&out).trim().to_owned();
                    let out = home.output(["start", &id]);
                    if out.status.success() {
                        (name, Ok(id))
                    } else {
                        (name, Err(("start", out.status.code(), stderr(&out))))
                    }
                })
            })
            .collect();
        tasks.into_iter().map(|t| t.join().unwrap()).collect()
    });
    eprintln!("{N} parallel create+start took {:?}: {outcomes:?}", t.elapsed());
    let records = ps_all(&home);
    let mut ids = Vec::new();
    for (name, outcome) in &outcomes {
        let sb = records.iter().find(|r| r["name"] == name.as_str());
        match (outcome, sb) {
            (Ok(id), Some(sb)) => {
                assert_eq!(sb["id"], id.as_str());
                assert_eq!(state(sb), "running", "{sb}");
                ok(&home, &["exec", id, "--", "true"]);
            }
            // A clear one-line failure, and a record that says so.
            (Err(("start", code, err)), Some(sb)) => {
                assert_one_line(err);
                assert_eq!(*code, Some(125), "{name}: {err}");
                assert_eq!(state(sb), "crashed", "{name}: {err}: {sb}");
            }
            (Err(("create", _, err)), None) => assert_one_line(err),
            (outcome, sb) => panic!("{name}: {outcome:?}, yet its record is {sb:?}"),
        }
        if let Some(sb) = sb {
            ids.push(sb["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(records.len(), ids.len(), "records nobody created: {records:?}");
    let running = outcomes.iter().filter(|(_, o)| o.is_ok()).count();
    assert!(running > 0, "none of {N} started: {outcomes:?}");
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    ok(&home, &rm);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_nothing_left(&home, &ids);
}

#[test]
fn test_bad_references_each_have_their_exit_code() {
    require_vm!();
    let home = Home::new();
    let id = create(&home, &["--name", "idle"]);

    // Unknown.
    for args in [&["inspect", "nosuch"][..], &["start", "nosuch"], &["exec", "nosuch", "--", "true"], &["rm", "nosuch"]]
    {
        let err = fails(&home, args, 121);
        assert!(err.contains("no such sandbox") && err.contains("nosuch"), "{err}");
    }
    // Malformed: never looked up, never a path.
    for bad in ["../x", "a b", "x/y", ""] {
        let err = fails(&home, &["inspect", bad], 122);
        assert!(err.contains("invalid") || err.contains("empty"), "{bad:?}: {err}");
        fails(&home, &["rm", "-f", bad], 122);
    }
    let err = fails(&home, &["create", "--name", "../escape"], 122);
    assert!(err.contains("../escape"), "{err}");
    // Taken.
    let err = fails(&home, &["create", "--name", "idle"], 119);
    assert!(err.contains("idle") && err.contains(&id), "{err}");
    // Not running.
    let err = fails(&home, &["exec", "idle", "--", "true"], 118);
    assert!(err.contains("created"), "{err}");
    let err = fails(&home, &["pause", "idle"], 118);
    assert!(err.contains("pause") && err.contains("created"), "{err}");
    // Failed operations changed nothing.
    let records = ps_all(&home);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(state(&records[0]), "created");
    assert!(!home.path().join("escape").exists() && !home.path().parent().unwrap().join("escape").exists());

    // Ambiguous: sixteen hex digits, so seventeen ids share a first one at the latest.
    let mut ids = vec![id];
    let (prefix, pair) = loop {
        let shared = ids.iter().enumerate().find_map(|(i, a)| {
            ids[i + 1..].iter().find(|b| a[..1] == b[..1]).map(|b| (a[..1].to_owned(), [a.clone(), b.clone()]))
        });
        if let Some(found) = shared {
            break found;
        }
        assert!(ids.len() <= 16, "17 ids without a shared first digit: {ids:?}");
        ids.push(create(&home, &[]));
    };
    let all_with_prefix: Vec<&String> = ids.iter().filter(|i| i.starts_with(&prefix)).collect();
    let err = fails(&home, &["inspect", &prefix], 120);
    for candidate in &all_with_prefix {
        assert!(err.contains(candidate.as_str()), "{err} does not list {candidate}");
    }
    assert!(err.contains("ambiguous"), "{err}");
    fails(&home, &["start", &prefix], 120);
    // A longer prefix that only one id has is fine.
    let one = ok(&home, &["inspect", &pair[0][..8]]);
    assert!(stdout(&one).contains(&pair[0]));

    let mut rm = vec!["rm"];
    rm.extend(ids.iter().map(String::as_str));
    ok(&home, &rm);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_nothing_left(&home, &ids);
}
