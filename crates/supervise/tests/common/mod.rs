//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Whether `pid` names a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(end) => !stat[end + 1..].trim_start().starts_with('Z'),
            None => false,
        },
        Err(_) => false,
    }
}

/// Field `n` (1-based, as in proc(5)) of `/proc/<pid>/stat`, for fields after the name.
pub fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(n - 3).map(str::to_owned)
}

/// Polls `cond` every 10 ms until it holds or `deadline` passes; returns whether it held.
pub async fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `sh -c script` as a spec.
pub fn sh(script: &str) -> nestbox_supervise::CommandSpec {
    nestbox_supervise::CommandSpec::new("sh").arg("-c").arg(script)
}
