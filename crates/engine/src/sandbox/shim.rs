//! The shim: one detached process per running sandbox (`nestbox shim --home H --id ID`).
//!
//! It boots the VM into the sandbox's directory, opens the one session with the guest agent and
//! shares it on `agent.sock` (`nestbox_shim::mux`), serves `control.sock` (pause, resume, stop,
//! kill, status, console), marks the record `running`, and then waits for the VM to end. However
//! it ends, the shim writes `exit.json`, moves the record to `stopped` or `crashed` (with the
//! reason), removes its sockets and exits. The hypervisor dies with the shim
//! (`PR_SET_PDEATHSIG`), so a killed shim never leaves a VM running unaccounted for.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nestbox_backend::{ExitReport, VmDirs, VmHandle};
use nestbox_shim::control::{self, AfterSnapshot, Reply, Request, SnapshotReply, Status};
use nestbox_shim::mux::{self, Mux};
use nestbox_store::{SandboxError, SandboxId, SandboxState, ShimProcess, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::reconcile::ExitRecord;
use super::{SandboxConfig, fault, files, proc};
use crate::guest::CONSOLE_TAIL_LINES;
use crate::run::connect_agent_with;
use crate::{EngineError, Home, Runner};

/// How long the shim waits for in-flight control replies before it exits.
const REPLY_GRACE: Duration = Duration::from_secs(2);
/// How long a VM whose agent connection ended may take to exit by itself.
const AGENT_LOSS_GRACE: Duration = Duration::from_secs(3);

/// A file removed when this drops.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Why the VM is ending, when someone asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Stop,
    Kill,
}

/// Runs the shim of sandbox `id` under `home` until its VM ends.
pub async fn run(home: Home, id: &str) -> Result<(), EngineError> {
    let id = SandboxId::parse(id).map_err(|e| EngineError::BadReference { input: id.into(), reason: e.to_string() })?;
    let sandboxes = super::Sandboxes::new(home.clone(), PathBuf::new());
    let dir = sandboxes.dir(&id);
    let mut store = sandboxes.store()?;
    let record = store.get(&id)?;
    if record.state != SandboxState::Starting {
        return Err(EngineError::InvalidState { id: id.to_string(), verb: "start", state: record.state.to_string() });
    }
    // The VM's memory file (QEMU) goes when the shim does, however it ends.
    let _memory = RemovedOnDrop(super::memory_file(&home, id.as_str()));
    if let Some(me) = proc::ProcessId::of(std::process::id()) {
        store.set_shim(&id, Some(ShimProcess { pid: me.pid, start_time: me.start_time }))?;
    }
    let config: SandboxConfig = serde_json::from_value(record.spec.clone()).map_err(|e| EngineError::Io {
        context: format!("sandbox {id} has an unreadable configuration"),
        source: std::io::Error::other(e),
    })?;
    fault::point("shim.booting");
    let booted = match boot(&home, &config, &dir, id.as_str(), record.name.as_str()).await {
        Ok(booted) => booted,
        Err((e, vm)) => {
            let reason = one_line(&e.to_string());
            tracing::error!("start failed: {e}");
            if let Some(vm) = vm {
                vm.kill();
                vm.wait().await;
            }
            finish(
                &mut store,
                &id,
                &dir,
                ExitRecord { state: "crashed".into(), reason: Some(reason), exit_code: None },
            );
            return Err(e);
        }
    };
    fault::point("shim.booted");
    let Booted { vm, mux } = booted;
    let (finalized_tx, finalized) = watch::channel(false);
    let handler = Arc::new(ShimHandler {
        vm: vm.clone(),
        mux: mux.clone(),
        ending: Mutex::new(None),
        finalized,
        in_flight: AtomicUsize::new(0),
        firmware: config.is_cloud(),
    });
    let control = bind(&dir.join(files::CONTROL_SOCKET))?;
    let server = tokio::spawn(control::serve(control, handler.clone()));
    fault::point("shim.serving");
    if let Err(e) = store.update_state(&id, &SandboxState::Starting, SandboxState::Running) {
        // Someone gave up on this start (a reconcile, an rm): do not run a VM nobody owns.
        tracing::error!("cannot mark the sandbox running: {e}");
        vm.kill();
        let report = vm.wait().await;
        server.abort();
        let reason = Some("stopped while it was starting".to_owned());
        let exit_code = report.code.or(report.signal.map(|s| 128 + s));
        finish(&mut store, &id, &dir, ExitRecord { state: "stopped".into(), reason, exit_code });
        return Err(e.into());
    }
    tracing::info!(vm_pid = vm.pid(), "sandbox running");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(EngineError::io("cannot handle SIGTERM"))?;
    let report = tokio::select! {
        report = vm.wait() => report,
        _ = mux.ended() => {
            // The agent's connection ended. During a stop that is the guest powering off, and
            // the stop kills the VM after its grace period; otherwise a guest that lost its
            // init is going down, or hung.
            let grace = if handler.ending().is_some() { Duration::MAX } else { AGENT_LOSS_GRACE };
            match tokio::time::timeout(grace, vm.wait()).await {
                Ok(report) => report,
                Err(_) => {
                    vm.kill();
                    let report = vm.wait().await;
                    let reason = "the guest agent's connection ended; the VM was killed".to_owned();
                    finish(&mut store, &id, &dir, ExitRecord { state: "crashed".into(), reason: Some(reason), exit_code: None });
                    handler.settle(finalized_tx, server).await;
                    tracing::info!(%report, "sandbox crashed");
                    return Ok(());
                }
            }
        }
        _ = term.recv() => {
            handler.set_ending(Ending::Stop);
            handler.power_off(super::DEFAULT_STOP_TIMEOUT).await
        }
    };
    let exit = ending_record(handler.ending(), &report, vm.crash_reason());
    tracing::info!(%report, state = %exit.state, "VM ended");
    if exit.state == "crashed" {
        for line in vm.console_tail(CONSOLE_TAIL_LINES) {
            tracing::info!("console: {line}");
        }
    }
    finish(&mut store, &id, &dir, exit);
    handler.settle(finalized_tx, server).await;
    Ok(())
}

/// The sandbox's final state, from why it ended and how the hypervisor exited.
fn ending_record(ending: Option<Ending>, report: &ExitReport, crash: Option<String>) -> ExitRecord {
    let exit_code = report.code.or(report.signal.map(|s| 128 + s));
    match (ending, crash) {
        (Some(Ending::Kill), _) => ExitRecord { state: "stopped".into(), reason: Some("killed".into()), exit_code },
        (Some(Ending::Stop), _) => ExitRecord { state: "stopped".into(), reason: None, exit_code },
        // The guest powered itself off.
        (None, None) if report.success() => ExitRecord { state: "stopped".into(), reason: None, exit_code },
        (None, crash) => {
            let how = if report.code.is_some() {
                format!("the hypervisor {report}")
            } else {
                format!("the hypervisor was {report}")
            };
            let reason = match crash {
                Some(crash) => format!("{how}: {crash}"),
                None => how,
            };
            ExitRecord { state: "crashed".into(), reason: Some(reason), exit_code }
        }
    }
}

struct Booted {
    vm: Arc<dyn VmHandle>,
    mux: Mux,
}

/// Prepares and launches the VM, connects to its agent and starts sharing it on `agent.sock`.
/// On failure, returns the VM (if one was launched) so the caller can kill it.
async fn boot(
    home: &Home,
    config: &SandboxConfig,
    dir: &Path,
    id: &str,
    name: &str,
) -> Result<Booted, (EngineError, Option<Arc<dyn VmHandle>>)> {
    let runner = Runner::new(home.clone());
    let mut prepared = runner.prepare(&config.boot_request(dir, id, name)).await.map_err(|e| (e, None))?;
    // QEMU keeps a persistent sandbox's memory in a shared file, so that it can be snapshotted.
    if let crate::Launcher::Qemu(qemu) = &mut prepared.launcher {
        let memory = home.memory_dir();
        std::fs::create_dir_all(&memory)
            .map_err(|e| (EngineError::io(format!("cannot create {}", memory.display()))(e), None))?;
        qemu.memory_file = Some(super::memory_file(home, id));
    }
    let backend = prepared.launcher.backend();
    let restore = super::read_restore(dir).map_err(|e| (e, None))?;
    let launched = match &restore {
        None => backend.launch(&prepared.spec, &VmDirs::new(dir)).await,
        Some(from) => backend.restore(&prepared.spec, &VmDirs::new(dir), from).await,
    };
    let vm: Arc<dyn VmHandle> = Arc::from(launched.map_err(|e| (EngineError::from(e), None))?);
    if restore.is_some() {
        // Restored paused: run it, and boot cold next time.
        if let Err(e) = vm.resume_vcpus().await {
            return Err((e.into(), Some(vm)));
        }
        let _ = std::fs::remove_file(dir.join(files::RESTORE));
    }
    let _ = std::fs::write(dir.join(files::VM_PID), vm.pid().to_string());
    let _ = std::fs::write(dir.join(files::VM_ACCEL), prepared.accel.accel.as_str());
    let connected = connect_agent_with(&*vm, prepared.boot_timeout, |mut stream| async move {
        let welcome = mux::handshake(&mut stream).await.map_err(|e| e.to_string())?;
        Ok((stream, welcome))
    })
    .await;
    let (stream, welcome) = match connected {
        Ok(c) => c,
        Err(e) => return Err((e, Some(vm))),
    };
    let listener = match bind(&dir.join(files::AGENT_SOCKET)) {
        Ok(l) => l,
        Err(e) => return Err((e, Some(vm))),
    };
    tracing::debug!(agent = welcome.agent_version, version = welcome.version, "agent ready");
    Ok(Booted { vm, mux: Mux::start(stream, welcome, listener) })
}

/// Binds a socket the shim serves, owner-only.
fn bind(path: &Path) -> Result<UnixListener, EngineError> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(EngineError::io(format!("cannot listen on {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(EngineError::io(format!("cannot restrict {}", path.display())))?;
    Ok(listener)
}

/// Records how the sandbox ended: `exit.json` first (so a reconcile finds it even if the store
/// update is lost), then the record, then the sockets go.
fn finish(store: &mut Store, id: &SandboxId, dir: &Path, exit: ExitRecord) {
    if let Ok(json) = serde_json::to_vec(&exit) {
        let _ = std::fs::write(dir.join(files::EXIT), json);
    }
    let to = exit.sandbox_state();
    for _ in 0..10 {
        let current = match store.get(id) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot read the record: {e}");
                break;
            }
        };
        if !current.state.is_active() {
            break;
        }
        match store.update_state(id, &current.state, to.clone()) {
            Ok(_) => {
                let _ = store.set_exit_code(id, exit.exit_code);
                break;
            }
            Err(SandboxError::StateConflict { .. }) => continue,
            Err(e) => {
                tracing::error!("cannot record the end of the sandbox: {e}");
                break;
            }
        }
    }
    remove_sockets(dir);
}

fn remove_sockets(dir: &Path) {
    let vm = VmDirs::new(dir);
    for path in [
        dir.join(files::AGENT_SOCKET),
        dir.join(files::CONTROL_SOCKET),
        dir.join(files::VM_PID),
        vm.api_socket(),
        vm.agent_socket(),
    ] {
        let _ = std::fs::remove_file(path);
    }
}

/// The first line of an error, for a record's reason.
fn one_line(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    first.split_once("; last console lines").map_or(first, |(head, _)| head).to_owned()
}

struct ShimHandler {
    vm: Arc<dyn VmHandle>,
    mux: Mux,
    ending: Mutex<Option<Ending>>,
    finalized: watch::Receiver<bool>,
    in_flight: AtomicUsize,
    /// A cloud image: stopped by its ACPI power button, which its own init answers.
    firmware: bool,
}

impl ShimHandler {
    fn ending(&self) -> Option<Ending> {
        *self.ending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_ending(&self, ending: Ending) {
        let mut slot = self.ending.lock().unwrap_or_else(PoisonError::into_inner);
        // A kill overrides a stop in progress, not the other way round.
        if *slot != Some(Ending::Kill) {
            *slot = Some(ending);
        }
    }

    /// Asks the guest to power off (through the agent, or the ACPI power button for a cloud
    /// image); kills the VM after `grace`. Returns how it exited.
    async fn power_off(&self, grace: Duration) -> ExitReport {
        // A paused guest cannot act on the request.
        if matches!(self.vm.state().await, Ok(nestbox_backend::VmState::Paused)) {
            let _ = self.vm.resume().await;
        }
        if self.firmware {
            return self.vm.shutdown(grace).await;
        }
        if self.mux.poweroff().await
            && let Ok(report) = tokio::time::timeout(grace, self.vm.wait()).await
        {
            return report;
        }
        self.vm.kill();
        self.vm.wait().await
    }

    /// Snapshots the VM into `dest`, copies `disks` while it is paused, and then does `then`.
    async fn snapshot(
        &self,
        dest: &Path,
        disks: &[(PathBuf, PathBuf)],
        then: AfterSnapshot,
    ) -> Result<SnapshotReply, String> {
        let taken = async {
            let files = self.vm.snapshot(dest).await.map_err(|e| e.to_string())?;
            for (from, to) in disks {
                nestbox_backend::copy_file(from, to)
                    .map_err(|e| format!("cannot copy the disk {} to {}: {e}", from.display(), to.display()))?;
            }
            Ok::<_, String>(files)
        }
        .await;
        // Whatever happened, the VM goes on as asked (a failed snapshot resumes it).
        match (then, &taken) {
            (AfterSnapshot::Stop, Ok(_)) => {
                self.set_ending(Ending::Stop);
                self.vm.kill();
                self.vm.wait().await;
                self.finalized().await;
            }
            (AfterSnapshot::Pause, Ok(_)) => {}
            _ => {
                if let Err(e) = self.vm.resume_vcpus().await {
                    tracing::warn!("cannot resume after the snapshot: {e}");
                }
            }
        }
        let files = taken?;
        Ok(SnapshotReply { memory: files.memory, state: files.state })
    }

    /// Waits until the record holds the final state.
    async fn finalized(&self) {
        let mut rx = self.finalized.clone();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Announces the final state and lets in-flight replies go out before the process exits.
    async fn settle(&self, finalized: watch::Sender<bool>, server: tokio::task::JoinHandle<()>) {
        let _ = finalized.send(true);
        let deadline = tokio::time::Instant::now() + REPLY_GRACE;
        while self.in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.abort();
    }
}

#[async_trait::async_trait]
impl control::Handler for ShimHandler {
    async fn handle(&self, req: Request) -> Reply {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let reply = match req {
            Request::Status => match self.vm.state().await {
                Ok(state) => Reply {
                    status: Some(Status {
                        vm_pid: self.vm.pid(),
                        vm_state: format!("{state:?}").to_lowercase(),
                        agent_clients: self.mux.clients(),
                        execs: self.mux.execs(),
                    }),
                    ..Reply::ok()
                },
                Err(e) => Reply::error(e.to_string()),
            },
            Request::Pause => self.vm.pause().await.map_or_else(|e| Reply::error(e.to_string()), |()| Reply::ok()),
            Request::Resume => self.vm.resume().await.map_or_else(|e| Reply::error(e.to_string()), |()| Reply::ok()),
            Request::Stop { timeout_ms } => {
                self.set_ending(Ending::Stop);
                self.power_off(Duration::from_millis(timeout_ms)).await;
                self.finalized().await;
                Reply::ok()
            }
            Request::Kill => {
                self.set_ending(Ending::Kill);
                self.vm.kill();
                self.vm.wait().await;
                self.finalized().await;
                Reply::ok()
            }
            Request::Console => Reply::error("console is attached through its own request"),
            Request::Snapshot { dest, disks, then } => match self.snapshot(&dest, &disks, then).await {
                Ok(files) => Reply { snapshot: Some(files), ..Reply::ok() },
                Err(e) => Reply::error(e),
            },
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        reply
    }

    fn console_available(&self) -> Result<(), String> {
        match self.vm.console() {
            Some(_) => Ok(()),
            None => Err("this hypervisor offers no interactive console".into()),
        }
    }

    async fn console(&self, stream: BufReader<UnixStream>) {
        let Some(console) = self.vm.console() else { return };
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut output = console.output;
        let to_client = async move {
            loop {
                match output.recv().await {
                    Ok(chunk) => {
                        if wr.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let note = format!("\r\n[nestbox: {n} console chunks dropped: this client was too slow]\r\n");
                        if wr.write_all(note.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        };
        let input = console.input;
        let from_client = async move {
            let mut buf = vec![0u8; 4096];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some(input) = &input
                            && input.write(&buf[..n]).await.is_err()
                        {
                            break;
                        }
                    }
                }
            }
        };
        // Either side closing ends the attachment.
        tokio::select! {
            () = to_client => {}
            () = from_client => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(code: Option<i32>, signal: Option<i32>) -> ExitReport {
        ExitReport { code, signal }
    }

    #[test]
    fn test_ending_record_tells_a_stop_from_a_crash() {
        let off = ending_record(None, &report(Some(0), None), None);
        assert_eq!((off.state.as_str(), off.exit_code), ("stopped", Some(0)));
        let stop = ending_record(Some(Ending::Stop), &report(None, Some(9)), None);
        assert_eq!(stop.state, "stopped", "a stop that had to kill is still a stop");
        let kill = ending_record(Some(Ending::Kill), &report(None, Some(9)), None);
        assert_eq!(
            (kill.state.as_str(), kill.reason.as_deref(), kill.exit_code),
            ("stopped", Some("killed"), Some(137))
        );
        let crash = ending_record(None, &report(None, Some(9)), None);
        assert_eq!(crash.state, "crashed");
        assert_eq!(crash.reason.as_deref(), Some("the hypervisor was killed by SIGKILL"));
        let guest = ending_record(None, &report(Some(0), None), Some("guest panicked".into()));
        assert_eq!(
            guest.sandbox_state(),
            SandboxState::Crashed { reason: "the hypervisor exited with 0: guest panicked".into() }
        );
    }

    #[test]
    fn test_one_line_keeps_the_first_line() {
        assert_eq!(one_line("boot timed out; last console lines:\na\nb"), "boot timed out");
        assert_eq!(one_line(""), "");
    }
}
