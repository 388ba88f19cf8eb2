//! `nestbox snapshot`, `restore` and `clone`: flags → engine calls; tables, JSON and progress.

use std::io::Write;

use anyhow::Context;
use nestbox_engine::sandbox::snapshot::SnapshotInfo;
use nestbox_shim::control::AfterSnapshot;

use crate::cli::{CloneArgs, Format, RestoreArgs, SnapshotArgs, SnapshotCommand};
use crate::sandbox::{manager, progress_while};

/// The largest archive `snapshot import` reads (1 TiB of logical content).
const IMPORT_MAX_BYTES: u64 = 1 << 40;

fn print(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// `nestbox snapshot …`.
pub async fn snapshot(args: SnapshotArgs) -> anyhow::Result<i32> {
    let mgr = manager()?;
    let Some(command) = args.command else {
        let sandbox = args.sandbox.expect("clap requires SB without a subcommand");
        let then = if args.stop {
            AfterSnapshot::Stop
        } else if args.pause {
            AfterSnapshot::Pause
        } else {
            AfterSnapshot::Resume
        };
        let snap = progress_while(format!("snapshotting {sandbox}"), mgr.snapshot(&sandbox, args.name, then)).await?;
        match args.format {
            Format::Table => print(&snap.manifest.id),
            Format::Json => print(&serde_json::to_string_pretty(&snap)?),
        }
        return Ok(0);
    };
    match command {
        SnapshotCommand::Ls(a) => {
            let all = mgr.snapshots()?;
            match a.format {
                Format::Json => print(&serde_json::to_string_pretty(&all)?),
                Format::Table => {
                    print(&format!("{:<14}  {:<20}  {:<10}  {:>9}  SANDBOX", "ID", "NAME", "BACKEND", "SIZE"));
                    for s in all {
                        print(&table_row(&s));
                    }
                }
            }
        }
        SnapshotCommand::Inspect(a) => print(&serde_json::to_string_pretty(&mgr.find_snapshot(&a.snapshot)?)?),
        SnapshotCommand::Rm(a) => {
            for s in &a.snapshots {
                print(&mgr.remove_snapshot(s)?.manifest.id);
            }
        }
        SnapshotCommand::Export(a) => {
            let snap = mgr.find_snapshot(&a.snapshot)?;
            let progress = crate::progress::Progress::new();
            let shown = progress.clone();
            let what = format!("exporting snapshot {}", &snap.manifest.id[..12.min(snap.manifest.id.len())]);
            let report = move |done: u64, total: u64| shown.transfer(&what, done, total);
            let stats = if a.output.as_os_str() == "-" {
                nestbox_snapshot::export(&snap.dir, std::io::stdout().lock(), Some(&report))?
            } else {
                let file = std::fs::File::create(&a.output)
                    .with_context(|| format!("invalid value for --output: cannot create {}", a.output.display()))?;
                let written = nestbox_snapshot::export(&snap.dir, std::io::BufWriter::new(file), Some(&report));
                if written.is_err() {
                    let _ = std::fs::remove_file(&a.output);
                }
                written?
            };
            progress.finish();
            tracing::debug!(?stats, "exported");
        }
        SnapshotCommand::Import(a) => {
            let dir = mgr.snapshots_dir();
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let limits = nestbox_snapshot::ImportLimits { max_total_bytes: IMPORT_MAX_BYTES, ..Default::default() };
            let manifest = if a.file.as_os_str() == "-" {
                nestbox_snapshot::import(std::io::stdin().lock(), &dir, &limits)?
            } else {
                let file = std::fs::File::open(&a.file)
                    .with_context(|| format!("invalid value for FILE: cannot open {}", a.file.display()))?;
                nestbox_snapshot::import(std::io::BufReader::new(file), &dir, &limits)?
            };
            print(&manifest.id);
        }
    }
    Ok(0)
}

fn table_row(s: &SnapshotInfo) -> String {
    let m = &s.manifest;
    let size: u64 = m.files.iter().map(|f| f.size).sum();
    let sandbox = m.sandbox.get("hypervisor").and_then(|h| h.as_str()).unwrap_or("?");
    format!(
        "{:<14}  {:<20}  {:<10}  {:>8}M  {sandbox}",
        &m.id[..12.min(m.id.len())],
        m.name.as_deref().unwrap_or("<none>"),
        m.backend,
        size >> 20
    )
}

/// `nestbox restore SB S`.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<i32> {
    let mgr = manager()?;
    let what = format!("restoring {} to {}", args.sandbox, args.snapshot);
    let sb = progress_while(what, mgr.restore_snapshot(&args.sandbox, &args.snapshot)).await?;
    print(sb.id().as_str());
    Ok(0)
}

/// `nestbox clone S`.
pub async fn clone(args: CloneArgs) -> anyhow::Result<i32> {
    let mgr = manager()?;
    let what = format!("cloning {} ×{}", args.snapshot, args.count);
    let made =
        progress_while(what, mgr.clone_snapshot(&args.snapshot, args.name, args.count, args.restore_mode)).await?;
    match args.format {
        Format::Table => {
            for sb in &made {
                print(sb.id().as_str());
            }
        }
        Format::Json => print(&serde_json::to_string_pretty(&made)?),
    }
    Ok(0)
}
