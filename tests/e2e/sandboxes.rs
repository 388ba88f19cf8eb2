//! Persistent sandboxes, end to end: the whole life of one under QEMU.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Home, ok, stderr, stdout};
use crate::require_vm;

fn ps(home: &Home) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(home, &["ps", "-a", "--format", "json"])).unwrap()
}

fn state_of(home: &Home, sb: &str) -> String {
    let info: serde_json::Value = serde_json::from_str(&ok(home, &["inspect", sb])).unwrap();
    info["state"].as_str().unwrap().to_owned()
}

#[test]
fn test_sandbox_whole_life() {
    require_vm!();
    let home = Home::new();
    let id = ok(
        &home,
        &["create", "--name", "web", "--memory", "256M", "-e", "GREETING=hello", "-l", "app=shop", "-l", "tier=front"],
    )
    .trim()
    .to_owned();
    assert_eq!(id.len(), 12, "create prints the id: {id:?}");
    let list = ps(&home);
    assert_eq!(list.len(), 1);
    assert_eq!((list[0]["name"].as_str(), list[0]["state"].as_str()), (Some("web"), Some("created")));
    assert!(ok(&home, &["ps"]).lines().count() == 1, "ps without -a lists running sandboxes only");
    assert!(home.path().join("sandboxes").join(&id).join("spec.json").exists());

    // Start by id prefix; the agent answers through the shim.
    ok(&home, &["start", &id[..6]]);
    assert_eq!(state_of(&home, "web"), "running");
    let table = ok(&home, &["ps"]);
    assert!(table.contains("web") && table.contains("running"), "{table}");

    // exec: output, exit code, the sandbox's environment, flags.
    let out = home.output(["exec", "web", "--", "sh", "-c", "echo $GREETING $EXTRA; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stdout(&out), "hello\n");
    assert_eq!(stderr(&out), "err\n");
    let out = ok(&home, &["exec", "-e", "EXTRA=x", "-w", "/proc", "web", "--", "sh", "-c", "echo $EXTRA; pwd"]);
    assert_eq!(out, "x\n/proc\n");
    let out = home.output(["exec", "web", "--", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127));

    // -i forwards stdin; without it the command sees none.
    let mut child = home
        .nestbox(["exec", "-i", "web", "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SHOUT\n");
    assert_eq!(ok(&home, &["exec", "web", "--", "cat"]), "");

    // -t: a terminal in the guest (24x80 when ours is not one).
    let out = ok(&home, &["exec", "-t", "web", "--", "sh", "-c", "tty; stty size"]);
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("24 80"), "{out:?}");
    let out = ok(&home, &["exec", "-u", "1000:1000", "web", "--", "id", "-u"]);
    assert_eq!(out.trim(), "1000");

    // Several CLIs at once share the shim's one agent connection.
    let children: Vec<_> = (0..6)
        .map(|i| {
            home.nestbox(["exec", "web", "--", "sh", "-c", &format!("sleep 0.3; echo {i}")])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), i.to_string());
    }

    // pause refuses exec; resume brings it back.
    ok(&home, &["pause", "web"]);
    assert_eq!(state_of(&home, "web"), "paused");
    let out = home.output(["exec", "web", "--", "true"]);
    assert_eq!(out.status.code(), Some(118), "{}", stderr(&out));
    assert!(stderr(&out).contains("it is paused"), "{}", stderr(&out));
    let out = home.output(["pause", "web"]);
    assert_eq!(out.status.code(), Some(118));
    ok(&home, &["resume", "web"]);
    assert_eq!(ok(&home, &["exec", "web", "--", "echo", "back"]), "back\n");

    // Labels filter; inspect tells all.
    let filtered: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&home, &["ps", "--filter", "label=tier=front", "--format", "json"])).unwrap();
    assert_eq!(filtered.len(), 1);
    let none: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&home, &["ps", "--filter", "label=tier=back", "--format", "json"])).unwrap();
    assert!(none.is_empty());
    let info: serde_json::Value = serde_json::from_str(&ok(&home, &["inspect", "web"])).unwrap();
    assert_eq!(info["labels"]["app"], "shop");
    assert!(info["vm_pid"].as_u64().is_some(), "{info}");
    assert!(info["shim"]["pid"].as_u64().is_some(), "{info}");

    // stop powers the guest off; the console log keeps its last words.
    let t = Instant::now();
    ok(&home, &["stop", "web"]);
    assert!(t.elapsed() < Duration::from_secs(10), "a graceful stop took {:?}", t.elapsed());
    assert_eq!(state_of(&home, "web"), "stopped");
    let out = home.output(["exec", "web", "--", "true"]);
    assert_eq!(out.status.code(), Some(118));
    let logs = ok(&home, &["logs", "--tail", "5", "web"]);
    assert!(logs.contains("Power down"), "{logs}");
    assert!(logs.lines().count() <= 5);
    let dir = home.path().join("sandboxes").join(&id);
    for socket in ["agent.sock", "control.sock", "vm-agent.sock", "api.sock"] {
        assert!(!dir.join(socket).exists(), "{socket} outlived the VM");
    }

    // A stopped sandbox starts again; kill ends it at once.
    ok(&home, &["start", "web"]);
    assert_eq!(ok(&home, &["exec", "web", "--", "echo", "again"]), "again\n");
    ok(&home, &["kill", "web"]);
    let info: serde_json::Value = serde_json::from_str(&ok(&home, &["inspect", "web"])).unwrap();
    assert_eq!((info["state"].as_str(), info["exit_code"].as_i64()), (Some("stopped"), Some(137)));

    ok(&home, &["rm", "web"]);
    assert!(ps(&home).is_empty());
    home.assert_clean();
    assert!(!home.path().join("locks").join(format!("{id}.lock")).exists());
}

#[test]
fn test_console_attach_types_into_the_guest_shell_and_detaches() {
    require_vm!();
    let home = Home::new();
    let id = ok(&home, &["run", "-d", "--memory", "256M"]).trim().to_owned();
    let mut child = home
        .nestbox(["console", &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The shell may still be starting: say it twice, a moment apart.
    stdin.write_all(b"\recho marker-$((20+22))\r").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stdin.write_all(b"echo marker-$((20+22))\r").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stdin.write_all(&[0x1d]).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("marker-42"), "console said: {:?}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("detach with Ctrl-]"), "{err}");
    assert!(err.contains("detached"), "{err}");
    // Detaching leaves the sandbox running.
    assert_eq!(state_of(&home, &id), "running");
    ok(&home, &["rm", "-f", &id]);
    home.assert_clean();
}

#[test]
fn test_logs_follow_ends_when_the_sandbox_stops() {
    require_vm!();
    let home = Home::new();
    let id = ok(&home, &["run", "-d", "--name", "chatty", "--memory", "256M"]).trim().to_owned();
    let follower = home.nestbox(["logs", "-f", "chatty"]).stdout(Stdio::piped()).spawn().unwrap();
    ok(&home, &["exec", "chatty", "--", "sh", "-c", "echo from-the-guest > /dev/console"]);
    std::thread::sleep(Duration::from_millis(500));
    ok(&home, &["stop", "chatty"]);
    let out = follower.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("from-the-guest"), "{text}");
    assert!(text.contains("Power down"), "{text}");
    ok(&home, &["rm", &id]);
    home.assert_clean();
}

#[test]
fn test_run_with_a_name_is_listed_then_removed_and_keeps_the_exit_code() {
    require_vm!();
    let home = Home::new();
    let out = home.output(["run", "--name", "once", "--memory", "256M", "--", "sh", "-c", "echo hi; exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    assert!(ps(&home).is_empty(), "a named run is removed afterwards");
    let out = home.output(["run", "-d", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "run -d takes no command");
    assert!(ps(&home).is_empty(), "nothing is made for a refused run");
    home.assert_clean();
}

#[test]
fn test_gc_dry_run_lists_then_gc_removes_what_no_sandbox_owns() {
    require_vm!();
    let home = Home::new();
    // A create killed after its directory and spec: the record is stuck in `creating`.
    let out = home.nestbox(["create", "--name", "half"]).env("NESTBOX_FAULT", "create.spec").output().unwrap();
    assert_eq!(out.status.signal(), Some(9));
    // A `nestbox run` killed mid-command leaves its directory (its QEMU dies with it).
    let mut run = home.nestbox(["run", "--memory", "256M", "--", "sleep", "60"]).spawn().unwrap();
    let run_dir = home.path().join("run");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&run_dir).map_or(0, |d| d.count()) == 0 {
        assert!(Instant::now() < deadline, "the run never made its directory");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    run.kill().unwrap();
    run.wait().unwrap();

    // An image build that died, and one that is still going (it holds its directory's lock).
    let rootfs = home.path().join("images/rootfs");
    std::fs::create_dir_all(rootfs.join(".import-dead/root")).unwrap();
    std::fs::create_dir_all(rootfs.join(".pull-live")).unwrap();
    let live = std::fs::File::open(rootfs.join(".pull-live")).unwrap();
    assert!(nestbox_engine::images::try_flock(&live));

    let dry = ok(&home, &["gc", "--dry-run", "--grace", "0s"]);
    assert!(dry.contains("an image build that died") && dry.contains(".import-dead"), "{dry}");
    assert!(!dry.contains(".pull-live"), "a build in progress is not garbage: {dry}");
    assert!(dry.contains("would remove record"), "{dry}");
    assert!(dry.contains("never fully created"), "{dry}");
    assert!(dry.contains("nestbox run"), "{dry}");
    assert_eq!(ps(&home).len(), 1, "a dry run removes nothing");
    assert_eq!(std::fs::read_dir(&run_dir).unwrap().count(), 1);

    // Without a grace of zero, a fresh half-made record is left alone (its creator may live).
    let kept: Vec<serde_json::Value> = serde_json::from_str(&ok(&home, &["gc", "--format", "json"])).unwrap();
    assert!(kept.iter().all(|r| r["kind"] != "record"), "{kept:?}");
    let removed: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&home, &["gc", "--grace", "0s", "--format", "json"])).unwrap();
    assert!(removed.iter().any(|r| r["kind"] == "record"), "{removed:?}");
    assert!(ps(&home).is_empty());
    assert!(!rootfs.join(".import-dead").exists());
    assert!(rootfs.join(".pull-live").exists());
    drop(live);
    std::fs::remove_dir(rootfs.join(".pull-live")).unwrap();
    assert_eq!(ok(&home, &["gc", "--grace", "0s"]).trim(), "nothing to remove");
    home.assert_clean();
}

#[test]
fn test_exec_tty_takes_the_terminal_size_and_follows_resizes() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    require_vm!();
    let home = Home::new();
    let id = ok(&home, &["run", "-d", "--memory", "256M"]).trim().to_owned();
    let size = |rows, cols| nix::pty::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&size(30, 100)), None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut cmd = home.nestbox(["exec", "-i", "-t", &id, "--", "sh", "-c", "stty size; read x; stty size"]);
    cmd.stdin(slave.try_clone().unwrap()).stdout(slave.try_clone().unwrap()).stderr(slave.try_clone().unwrap());
    // SAFETY: setsid and TIOCSCTTY touch no memory of the parent; the slave is our stdin by now.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(slave);
    let mut master = std::fs::File::from(pty.master);
    let mut seen = String::new();
    let mut read_until = |master: &mut std::fs::File, needle: &str| {
        let mut buf = [0u8; 1024];
        while !seen.contains(needle) {
            let n = master.read(&mut buf).unwrap_or(0);
            assert!(n > 0, "the terminal closed before {needle:?}; it showed {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    read_until(&mut master, "30 100");
    // A resize of our terminal reaches the guest's.
    let ws = size(40, 120);
    // SAFETY: TIOCSWINSZ reads one winsize from the struct we own.
    assert_eq!(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }, 0);
    std::thread::sleep(Duration::from_millis(500));
    // Raw mode here: the carriage return goes to the guest as typed, whose terminal ends the line.
    master.write_all(b"\r").unwrap();
    read_until(&mut master, "40 120");
    assert!(child.wait().unwrap().success());
    ok(&home, &["rm", "-f", &id]);
    home.assert_clean();
}

/// Spawns `cmd` with no output pipes, so its orphaned children hold none of ours.
fn quiet(cmd: &mut std::process::Command) -> std::process::Child {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

#[test]
fn test_gc_kills_processes_of_sandboxes_that_do_not_run() {
    let home = Home::new();
    let root = home.path().display().to_string();
    let ghost = "0123456789ab";
    // A stray hypervisor naming a sandbox directory, and a stray shim, of a sandbox without a record.
    let loop_ = "while :; do sleep 1; done";
    let hypervisor_arg = format!("{root}/sandboxes/{ghost}/api.sock");
    let mut strays = [
        quiet(std::process::Command::new("sh").args(["-c", loop_, &hypervisor_arg])),
        quiet(std::process::Command::new("sh").args(["-c", loop_, "shim", "--home", &root, "--id", ghost])),
    ];
    let dry = ok(&home, &["gc", "--dry-run"]);
    assert!(dry.contains(&format!("would remove process {}", strays[0].id())), "{dry}");
    assert!(dry.contains(&format!("would remove process {}", strays[1].id())), "{dry}");
    assert!(dry.contains(&format!("shim of sandbox {ghost}, which is not running")), "{dry}");
    assert!(strays.iter_mut().all(|c| c.try_wait().unwrap().is_none()), "a dry run signals nothing");
    let done = ok(&home, &["gc"]);
    assert!(done.contains("removed process"), "{done}");
    for child in &mut strays {
        assert_eq!(child.wait().unwrap().signal(), Some(9));
    }
    home.assert_clean();
}
