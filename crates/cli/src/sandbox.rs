//! The persistent-sandbox commands: flags → `nestbox_engine::Sandboxes` → output.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use nestbox_engine::images::Images;
use nestbox_engine::sandbox::{SandboxConfig, gc, shim};
use nestbox_engine::{CreateRequest, Home, SandboxInfo, Sandboxes};
use nestbox_store::{ListFilter, ListScope};

use crate::cli::{CreateArgs, Format, GcArgs, InspectArgs, PsArgs, RunArgs, ShimArgs, VmArgs};
use crate::exit;

/// `println!` that ignores a closed stdout (`nestbox ps | head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that ignores a closed stdout.
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// The sandboxes of `$NESTBOX_HOME`, whose shims are this binary.
pub fn manager() -> anyhow::Result<Sandboxes> {
    let exe = std::env::current_exe().context("cannot find the nestbox binary for the shim")?;
    Ok(Sandboxes::new(Home::from_env(), exe))
}

/// The stored configuration for `vm`.
pub fn config(vm: &VmArgs) -> SandboxConfig {
    SandboxConfig {
        hypervisor: vm.hypervisor,
        hypervisor_binary: vm.hypervisor_bin.clone(),
        vcpus: vm.cpus,
        memory_mib: vm.memory,
        kernel: vm.kernel.clone(),
        kernel_args: vm.kernel_args.clone(),
        accel: vm.accel,
        boot_timeout_ms: millis(vm.boot_timeout.unwrap_or(crate::cli::DEFAULT_BOOT_TIMEOUT)),
        env: vm.env.iter().map(|e| (e.key.clone(), e.value.clone())).collect(),
        workdir: None,
        user: None,
        volumes: vm.volumes.clone(),
        disk: None,
        firmware: vm.firmware.clone(),
        ssh_keys: Vec::new(),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `KEY=VALUE` labels, each checked.
fn labels(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(raw.iter().map(|l| nestbox_store::parse_label(l).unwrap_or_else(|e| usage(&format!("--label: {e}")))).collect())
}

/// A usage error found after parsing: printed as one line with exit code 2.
fn usage(msg: &str) -> ! {
    eprintln!("nestbox: {msg}");
    exit::exit(exit::USAGE)
}

/// The create request for `vm` with `name` and `labels`: the image's defaults come first, the
/// flags' after.
fn create_request(vm: &VmArgs, name: Option<String>, raw_labels: &[String]) -> anyhow::Result<CreateRequest> {
    let mut config = config(vm);
    let mut image = None;
    if let Some(reference) = &vm.image {
        let (choice, defaults) = Images::new(Home::from_env()).choice(reference)?;
        let mut env = defaults.env_pairs();
        env.extend(config.env);
        config.env = env;
        config.workdir = defaults.workdir.filter(|w| !w.is_empty());
        config.user = defaults.user.filter(|u| !u.is_empty());
        if choice.kind.is_cloud() {
            config.ssh_keys = nestbox_engine::cloud::read_ssh_keys(&vm.ssh_keys)?;
            if vm.boot_timeout.is_none() {
                config.boot_timeout_ms = millis(nestbox_engine::cloud::DEFAULT_BOOT_TIMEOUT);
            }
        } else if !vm.ssh_keys.is_empty() || vm.firmware.is_some() {
            usage(&format!("--ssh-key and --firmware are for cloud images; {reference} is a root filesystem image"));
        }
        image = Some(choice);
    }
    Ok(CreateRequest { name, config, labels: labels(raw_labels)?, image, disk_size_mib: vm.disk_size })
}

/// `nestbox create`.
pub async fn create(args: CreateArgs) -> anyhow::Result<i32> {
    let mgr = manager()?;
    let req = create_request(&args.vm, args.name, &args.labels)?;
    let sb = mgr.create(req)?;
    match args.format {
        Format::Table => out!("{}", sb.id()),
        Format::Json => out!("{}", serde_json::to_string_pretty(&sb)?),
    }
    Ok(0)
}

/// `nestbox run -d` and `nestbox run --name`: a sandbox in the index. Detached, it is left
/// running and its ID printed; otherwise CMD runs in it and it is removed afterwards.
pub async fn run_persistent(args: RunArgs) -> anyhow::Result<i32> {
    if args.detach && !args.command.is_empty() {
        usage("run -d starts a sandbox and runs no command in it: use `nestbox exec SB -- CMD` next");
    }
    let mgr = manager()?;
    let req = create_request(&args.vm, args.name.clone(), &args.labels)?;
    let sb = mgr.create(req)?;
    let id = sb.id().to_string();
    let started = progress_while(format!("starting sandbox {}", sb.record.name), mgr.start(&id)).await;
    if let Err(e) = started {
        // A failed start of a throw-away sandbox leaves nothing behind.
        if !args.detach {
            let _ = mgr.remove(&id, true).await;
        }
        return Err(e.into());
    }
    if args.detach {
        out!("{id}");
        return Ok(0);
    }
    let exec = crate::exec::ExecOptions {
        sandbox: id.clone(),
        interactive: true,
        tty: false,
        env: Vec::new(),
        workdir: args.workdir,
        user: None,
        timeout: args.timeout,
        command: args.command,
    };
    let code = crate::exec::exec_in(&mgr, exec).await;
    let _ = mgr.remove(&id, true).await;
    code
}

/// Shows `what` on a terminal while `fut` runs.
pub async fn progress_while<T>(what: String, fut: impl std::future::Future<Output = T>) -> T {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if tty {
        eprint!("nestbox: {what}…");
        let _ = std::io::stderr().flush();
    }
    let out = fut.await;
    if tty {
        eprint!("\r\x1b[K");
    }
    out
}

/// What `act` does to each sandbox.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// `nestbox start`.
    Start,
    /// `nestbox stop`, with the grace period.
    Stop(std::time::Duration),
    /// `nestbox kill`.
    Kill,
    /// `nestbox pause`.
    Pause,
    /// `nestbox resume`.
    Resume,
    /// `nestbox rm`, `-f` or not.
    Remove {
        /// Kill a running one first.
        force: bool,
    },
}

/// `nestbox start|stop|kill|pause|resume|rm SB…`.
pub async fn act(sandboxes: Vec<String>, action: Action) -> anyhow::Result<i32> {
    let mgr = manager()?;
    each(&sandboxes, |sb| {
        let mgr = mgr.clone();
        async move {
            match action {
                Action::Start => progress_while(format!("starting {sb}"), mgr.start(&sb)).await.map(drop),
                Action::Stop(grace) => mgr.stop(&sb, grace).await.map(drop),
                Action::Kill => mgr.kill(&sb).await.map(drop),
                Action::Pause => mgr.pause(&sb).await.map(drop),
                Action::Resume => mgr.resume(&sb).await.map(drop),
                Action::Remove { force } => mgr.remove(&sb, force).await.map(drop),
            }
        }
    })
    .await
}

/// Runs `op` on every sandbox in order, printing each one done (as docker does) and each error
/// on its own line; the exit code is the first failure's.
async fn each<F, Fut>(sandboxes: &[String], op: F) -> anyhow::Result<i32>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), nestbox_engine::EngineError>>,
{
    let mut code = 0;
    for sb in sandboxes {
        match op(sb.clone()).await {
            Ok(()) => out!("{sb}"),
            Err(e) => {
                let e = anyhow::Error::from(e);
                eprintln!("nestbox: {e:#}");
                if code == 0 {
                    code = exit::code_for(&e);
                }
            }
        }
    }
    Ok(code)
}

/// `nestbox ps`.
pub async fn ps(args: PsArgs) -> anyhow::Result<i32> {
    let mut labels = BTreeMap::new();
    for f in &args.filter {
        let Some(label) = f.strip_prefix("label=") else {
            usage(&format!("--filter: unknown filter {f:?}: expected label=KEY=VALUE"));
        };
        let (k, v) = nestbox_store::parse_label(label).unwrap_or_else(|e| usage(&format!("--filter: {e}")));
        labels.insert(k, v);
    }
    let scope = if args.all { ListScope::All } else { ListScope::Active };
    let list = manager()?.list(&ListFilter { scope, labels })?;
    if args.quiet {
        for sb in &list {
            out!("{}", sb.id());
        }
        return Ok(0);
    }
    match args.format {
        Format::Json => out!("{}", serde_json::to_string_pretty(&list)?),
        Format::Table => out_raw!("{}", table(&list, now_ms())),
    }
    Ok(0)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The `ps` table.
fn table(list: &[SandboxInfo], now_ms: i64) -> String {
    let mut rows = vec![["ID", "NAME", "STATE", "HYPERVISOR", "CPUS", "MEMORY", "CREATED"].map(String::from).to_vec()];
    for sb in list {
        let (cpus, memory) = sb
            .config
            .as_ref()
            .map_or((String::new(), String::new()), |c| (c.vcpus.to_string(), format!("{}M", c.memory_mib)));
        let state = match sb.state().reason() {
            Some(reason) => format!("crashed ({reason})"),
            None => sb.state().to_string(),
        };
        rows.push(vec![
            sb.id().to_string(),
            sb.record.name.to_string(),
            state,
            sb.record.hypervisor.clone(),
            cpus,
            memory,
            format!("{} ago", age(now_ms - sb.record.created_at_ms)),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A short age: 5s, 3m, 2h, 4d.
fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `nestbox inspect`.
pub async fn inspect(args: InspectArgs) -> anyhow::Result<i32> {
    let sb = manager()?.resolve(&args.sandbox)?;
    match args.format {
        Format::Json => out!("{}", serde_json::to_string_pretty(&sb)?),
        Format::Table => {
            let value = serde_json::to_value(&sb)?;
            if let serde_json::Value::Object(map) = value {
                for (k, v) in map {
                    out!("{k}: {}", if let serde_json::Value::String(s) = &v { s.clone() } else { v.to_string() });
                }
            }
        }
    }
    Ok(0)
}

/// `nestbox gc`.
pub async fn gc(args: GcArgs) -> anyhow::Result<i32> {
    let mgr = manager()?;
    let removed = gc::collect(&mgr, args.dry_run, args.grace)?;
    match args.format {
        Format::Json => out!("{}", serde_json::to_string_pretty(&removed)?),
        Format::Table => {
            let verb = if args.dry_run { "would remove" } else { "removed" };
            for r in &removed {
                out!("{verb} {} {}: {}", r.kind, r.target, r.reason);
            }
            if removed.is_empty() {
                out!("nothing to remove");
            }
        }
    }
    Ok(0)
}

/// `nestbox shim`: runs until the sandbox's VM ends.
pub async fn shim(args: ShimArgs) -> anyhow::Result<i32> {
    shim::run(Home::new(args.home), &args.id).await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_age_picks_the_largest_whole_unit() {
        assert_eq!(age(4_999), "4s");
        assert_eq!(age(61_000), "1m");
        assert_eq!(age(7_200_000), "2h");
        assert_eq!(age(3 * 86_400_000), "3d");
        assert_eq!(age(-5), "0s");
    }
}
