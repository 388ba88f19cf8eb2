//! `nestbox run`: output, exit codes, signals, streams, environment.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::common::{Home, stderr, stdout};
use crate::require_vm;

#[test]
fn test_run_prints_guest_kernel_line() {
    require_vm!();
    let home = Home::new();
    let out = home.output(["run", "--", "uname", "-a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("Linux nestbox "), "{}", stdout(&out));
    home.assert_clean();
}

#[test]
fn test_run_exit_code_and_output() {
    require_vm!();
    let home = Home::new();
    let out = home.output(["run", "--", "sh", "-c", "echo hi; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    assert!(stderr(&out).ends_with("err\n"), "{}", stderr(&out));
    home.assert_clean();
}

#[test]
fn test_run_signal_exit_is_128_plus_n() {
    require_vm!();
    let home = Home::new();
    let out = home.output(["run", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    home.assert_clean();
}

#[test]
fn test_run_command_not_found_is_127_with_guest_message() {
    require_vm!();
    let home = Home::new();
    let out = home.output(["run", "--", "no-such-command", "x"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such-command"), "{}", stderr(&out));
    home.assert_clean();
}

#[test]
fn test_run_env_and_workdir() {
    require_vm!();
    let home = Home::new();
    let out = home.output([
        "run",
        "--env",
        "GREETING=hello world",
        "-e",
        "EMPTY=",
        "--workdir",
        "/tmp",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING\"; echo \"[$EMPTY]\"; pwd",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello world\n[]\n/tmp\n");
    home.assert_clean();
}

#[test]
fn test_run_timeout_kills_the_command() {
    require_vm!();
    let home = Home::new();
    let out = home.output(["run", "--timeout", "1s", "--", "sleep", "30"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(stderr(&out).contains("timed out after 1s"), "{}", stderr(&out));
    home.assert_clean();
}

#[test]
fn test_run_forwards_stdin() {
    require_vm!();
    let home = Home::new();
    let input: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut child = home
        .nestbox(["run", "--", "sh", "-c", "cat; echo done >&2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input, "stdin came back changed");
    assert!(stderr(&out).ends_with("done\n"));
    home.assert_clean();
}

#[test]
fn test_run_64_mib_through_stdout_with_checksum() {
    require_vm!();
    let home = Home::new();
    let script = "head -c 67108864 /dev/urandom > /tmp/blob && sha256sum /tmp/blob >&2 && cat /tmp/blob";
    let mut child = home
        .nestbox(["run", "--memory", "512M", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut hasher = Sha256::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n;
    }
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(total, 64 << 20);
    let ours = hex::encode(hasher.finalize());
    assert!(err.contains(&format!("{ours}  /tmp/blob")), "guest sum differs from ours ({ours}): {err}");
    home.assert_clean();
}

#[test]
fn test_run_streams_output_live() {
    require_vm!();
    let home = Home::new();
    let mut child = home
        .nestbox(["run", "--", "sh", "-c", "echo first; sleep 3; echo second"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    let first_at = Instant::now();
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    // "first" arrived while the command was still sleeping, not at its exit.
    assert!(first_at.elapsed() >= Duration::from_secs(2), "output was buffered until exit");
    assert!(child.wait().unwrap().success());
    home.assert_clean();
}

fn interrupt_run(signal: i32, expected: i32) {
    let home = Home::new();
    let mut child = home
        .nestbox(["run", "--", "sh", "-c", "echo ready; sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // SAFETY: kill with a valid pid of our own child and a valid signal number.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(expected));
    assert!(started.elapsed() < Duration::from_secs(30), "teardown took {:?}", started.elapsed());
    home.assert_clean();
}

#[test]
fn test_run_sigint_tears_down_with_130() {
    require_vm!();
    interrupt_run(libc::SIGINT, 130);
}

#[test]
fn test_run_sigterm_tears_down_with_143() {
    require_vm!();
    interrupt_run(libc::SIGTERM, 143);
}

#[test]
fn test_run_with_two_cpus_sees_two() {
    require_vm!();
    let home = Home::new();
    let out =
        home.output(["run", "--cpus", "2", "--memory", "256M", "--", "sh", "-c", "nproc; grep MemTotal /proc/meminfo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("2\n"), "{text}");
    let kib: u64 = text.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!((150_000..=262_144).contains(&kib), "MemTotal {kib} kB for 256M");
    home.assert_clean();
}
