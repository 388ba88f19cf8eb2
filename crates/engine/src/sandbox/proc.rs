//! Processes nestbox started, found again later: a pid is only trusted together with its start
//! time (field 22 of `/proc/<pid>/stat`), so a reused pid is never signalled.

use std::path::Path;

use nestbox_supervise::parse_start_time;

/// A process, identified by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The pid.
    pub pid: u32,
    /// Its start time, in clock ticks after boot.
    pub start_time: u64,
}

impl ProcessId {
    /// The live process `pid`, if there is one.
    pub fn of(pid: u32) -> Option<Self> {
        Some(Self { pid, start_time: start_time(pid)? })
    }

    /// Whether this very process still exists (and is not a zombie).
    pub fn is_alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        parse_start_time(&stat) == Some(self.start_time) && parse_state(&stat) != Some('Z')
    }

    /// Sends SIGKILL, only if it is still this process.
    pub fn kill(&self) -> bool {
        if !self.is_alive() {
            return false;
        }
        let Ok(pid) = i32::try_from(self.pid) else { return false };
        // SAFETY: kill has no memory effects; the pid was checked against its start time.
        unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
    }
}

/// The start time of `pid`, if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 3 (`state`).
fn parse_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].split_ascii_whitespace().next()?.chars().next()
}

/// Every process of this user whose command line mentions `needle`, with its start time.
pub fn processes_mentioning(needle: &str) -> Vec<(ProcessId, Vec<String>)> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let own = std::process::id();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == own || !owned_by(&entry.path(), me) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let argv: Vec<String> =
            raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if argv.iter().any(|a| a.contains(needle))
            && let Some(id) = ProcessId::of(pid)
        {
            found.push((id, argv));
        }
    }
    found
}

/// The sandbox id of a shim's command line (`… shim --home HOME --id ID`) under `home`.
pub fn shim_of(argv: &[String], home: &str) -> Option<String> {
    let value = |flag: &str| argv.windows(2).find(|w| w[0] == flag).map(|w| w[1].clone());
    let is_shim = argv.iter().any(|a| a == "shim") && value("--home").as_deref() == Some(home);
    is_shim.then(|| value("--id")).flatten()
}

/// Every live shim process of sandboxes under `home`, with the sandbox's id.
pub fn shims(home: &str) -> Vec<(ProcessId, Vec<String>, String)> {
    processes_mentioning(home)
        .into_iter()
        .filter_map(|(p, argv)| shim_of(&argv, home).map(|id| (p, argv, id)))
        .collect()
}

fn owned_by(proc_dir: &Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(proc_dir).is_ok_and(|m| m.uid() == uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_fields_after_a_name_with_spaces_and_parens() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 2 3";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_state(stat), Some('S'));
    }

    #[test]
    fn test_shim_of_reads_the_id_for_this_home_only() {
        let argv = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            shim_of(&argv("/bin/nestbox shim --home /h --id 0123456789ab"), "/h").as_deref(),
            Some("0123456789ab")
        );
        assert_eq!(shim_of(&argv("/bin/nestbox shim --home /other --id 0123456789ab"), "/h"), None);
        assert_eq!(shim_of(&argv("/bin/nestbox run --home /h --id 0123456789ab"), "/h"), None);
        assert_eq!(shim_of(&argv("/bin/nestbox shim --home /h"), "/h"), None);
    }

    #[test]
    fn test_a_live_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = ProcessId::of(std::process::id()).unwrap();
        assert!(me.is_alive());
        let impostor = ProcessId { start_time: me.start_time + 1, ..me };
        assert!(!impostor.is_alive());
        assert!(!impostor.kill(), "a pid with another start time is never signalled");
    }

    #[test]
    fn test_processes_mentioning_finds_a_child_by_its_arguments() {
        let marker = format!("nestbox-proc-test-{}", std::process::id());
        // The marker is `$0` of the shell, so it shows in the command line.
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("sleep 30")
            .arg(&marker)
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Until the child has exec'd, its command line is ours: look again for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut found = processes_mentioning(&marker);
        while !found.iter().any(|(p, _)| p.pid == child.id()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            found = processes_mentioning(&marker);
        }
        let pgid = i32::try_from(child.id()).unwrap();
        // SAFETY: kill has no memory effects; the group is the child's own.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
        assert!(found.iter().any(|(p, _)| p.pid == child.id()), "{found:?}");
    }
}
