//! Starting a process: the [`CommandSpec`] that describes it, the [`Spawner`] trait that starts
//! it (so engines can be tested with a fake), the real [`OsSpawner`], and [`find_program`] for
//! locating hypervisor binaries on `PATH`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::{Result, SuperviseError};
use crate::log::LogFile;
use crate::process::Supervised;
use crate::stdin::{self, PtyWriter, StdinMode, StdinWriter};

/// What to run and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program: a path, or a bare name looked up on `PATH` by the OS.
    pub program: PathBuf,
    /// Arguments, not including the program name.
    pub args: Vec<OsString>,
    /// Variables added to (or overriding) the inherited environment.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory; the caller's when `None`.
    pub cwd: Option<PathBuf>,
    /// Where to keep stdout beyond the in-memory tail; memory only when `None`.
    pub stdout_log: Option<LogSpec>,
    /// Where to keep stderr beyond the in-memory tail; memory only when `None`. May name the
    /// same file as `stdout_log`: both streams then share it (and `stdout_log`'s limit).
    pub stderr_log: Option<LogSpec>,
    /// Have the kernel SIGKILL the child when its parent dies (`PR_SET_PDEATHSIG`).
    ///
    /// The kernel fires this when the *thread* that spawned the child exits, not the process:
    /// spawn from a thread that lives as long as the supervisor (a tokio worker thread, not a
    /// `spawn_blocking` thread, which is retired when idle).
    pub die_with_parent: bool,
    /// Put the child in a new process group of its own; signals then go to the whole group.
    pub new_process_group: bool,
    /// The child's stdin: `/dev/null` unless asked for; a pipe or a pseudo-terminal is written
    /// through [`Supervised::stdin`].
    pub stdin: StdinMode,
}

impl CommandSpec {
    /// A spec for `program` with no arguments, no extra environment, memory-only output, not
    /// tied to the parent's life, and in the caller's process group.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdout_log: None,
            stderr_log: None,
            die_with_parent: false,
            new_process_group: false,
            stdin: StdinMode::Null,
        }
    }

    /// Gives the child a pipe as stdin, written through [`Supervised::stdin`].
    pub fn stdin_piped(mut self) -> Self {
        self.stdin = StdinMode::Piped;
        self
    }

    /// Gives the child a raw-mode pseudo-terminal as stdin, written through
    /// [`Supervised::stdin`]: for programs that read their stdin only when it is a terminal.
    pub fn stdin_pty(mut self) -> Self {
        self.stdin = StdinMode::Pty;
        self
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds one environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A size-bounded log file for one output stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpec {
    /// The live log file. Appended to if it exists; created with mode 0600 if not.
    pub path: PathBuf,
    /// Size limit of the live file. When a write would exceed it, the file is renamed to
    /// `<path>.1` (one generation; the older one is discarded) and a fresh file started, so at
    /// most about `2 * max_bytes` are kept. Must not be zero.
    pub max_bytes: u64,
}

/// Starts supervised processes. The real one is [`OsSpawner`]; tests can substitute a fake.
pub trait Spawner: Send + Sync + std::fmt::Debug {
    /// Starts `cmd` and returns its handle. Must be called inside a tokio runtime.
    fn spawn(&self, cmd: &CommandSpec) -> Result<Supervised>;
}

/// Spawns real processes with `tokio::process`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsSpawner;

impl Spawner for OsSpawner {
    fn spawn(&self, spec: &CommandSpec) -> Result<Supervised> {
        // Open the logs first, so a bad log path fails before anything runs.
        let stdout_log = spec.stdout_log.as_ref().map(LogFile::open_shared).transpose()?;
        let stderr_log = match (&spec.stderr_log, &spec.stdout_log, &stdout_log) {
            (Some(err), Some(out), Some(shared)) if err.path == out.path => Some(shared.clone()),
            (Some(err), _, _) => Some(LogFile::open_shared(err)?),
            (None, _, _) => None,
        };

        // Likewise the pseudo-terminal, before the child exists.
        let (stdin, pty) = match spec.stdin {
            StdinMode::Null => (Stdio::null(), None),
            StdinMode::Piped => (Stdio::piped(), None),
            StdinMode::Pty => {
                let io_err = |source| SuperviseError::Io { action: "open", path: "/dev/ptmx".into(), source };
                let (master, slave) = stdin::open_pty().map_err(io_err)?;
                (Stdio::from(slave), Some(PtyWriter::new(master).map_err(io_err)?))
            }
        };

        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Should the handle be lost without `Supervised`'s own drop (a runtime shutting down),
            // tokio still kills the child.
            .kill_on_drop(true);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        if spec.new_process_group {
            cmd.process_group(0);
        }
        if spec.die_with_parent {
            let parent = std::process::id();
            // SAFETY: the closure runs in the forked child before exec and calls only
            // async-signal-safe functions (prctl, getppid); it allocates nothing.
            unsafe {
                cmd.pre_exec(move || set_parent_death_signal(parent));
            }
        }
        let mut child =
            cmd.spawn().map_err(|source| SuperviseError::Spawn { program: spec.program.clone(), source })?;
        // Our copy of the pty's slave goes with the command: the child holds the only one.
        drop(cmd);
        let stdin = match pty {
            Some(pty) => Some(StdinWriter::new(pty)),
            None => child.stdin.take().map(StdinWriter::new),
        };
        Supervised::start(child, spec, stdin, stdout_log, stderr_log)
    }
}

/// In the forked child: ask for SIGKILL when the parent goes away, and fail if it already has.
fn set_parent_death_signal(parent: u32) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    // The parent may have died between fork and prctl; we have been reparented then.
    // SAFETY: getppid has no preconditions and cannot fail.
    let ppid = unsafe { libc::getppid() };
    if u32::try_from(ppid).ok() != Some(parent) {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Finds an executable named `name` on `PATH`, like a shell would. A name containing `/` is
/// checked as given. Only regular files with an execute bit count.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_program_in(name, &path)
}

fn find_program_in(name: &str, search_path: &OsStr) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        let candidate = PathBuf::from(name);
        return is_executable(&candidate).then_some(candidate);
    }
    std::env::split_paths(search_path)
        // An empty PATH entry means the current directory; we do not search it on purpose.
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use std::fs::Permissions;

    use super::*;

    fn write_file(path: &Path, mode: u32) {
        std::fs::write(path, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn test_find_program_in_skips_non_executables() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write_file(&a.path().join("qemu"), 0o644);
        write_file(&b.path().join("qemu"), 0o755);
        std::fs::create_dir(a.path().join("dir")).unwrap();
        let search = std::env::join_paths([a.path(), b.path()]).unwrap();
        assert_eq!(find_program_in("qemu", &search), Some(b.path().join("qemu")));
        assert_eq!(find_program_in("dir", &search), None);
        assert_eq!(find_program_in("missing", &search), None);
        assert_eq!(find_program_in("", &search), None);
    }

    #[test]
    fn test_find_program_in_takes_first_match() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write_file(&a.path().join("fc"), 0o700);
        write_file(&b.path().join("fc"), 0o755);
        let search = std::env::join_paths([a.path(), b.path()]).unwrap();
        assert_eq!(find_program_in("fc", &search), Some(a.path().join("fc")));
    }

    #[test]
    fn test_find_program_in_checks_paths_directly() {
        let a = tempfile::tempdir().unwrap();
        let exe = a.path().join("x");
        write_file(&exe, 0o755);
        let name = exe.to_str().unwrap();
        assert_eq!(find_program_in(name, OsStr::new("")), Some(exe.clone()));
        std::fs::set_permissions(&exe, Permissions::from_mode(0o600)).unwrap();
        assert_eq!(find_program_in(name, OsStr::new("")), None);
    }

    #[test]
    fn test_find_program_finds_sh() {
        let Some(sh) = find_program("sh") else {
            eprintln!("skipped: no sh on PATH");
            return;
        };
        assert!(sh.ends_with("sh"));
        assert!(is_executable(&sh));
    }
}
