//! `nestbox image …`: build, list, inspect, remove and prune root filesystem images.

use std::io::Write;

use nestbox_engine::Home;
use nestbox_engine::images::Images;

use crate::cli::{Format, ImageBuild, ImageCommand};
use crate::progress::Progress;

/// Runs one `image` subcommand.
pub async fn image(cmd: ImageCommand) -> anyhow::Result<i32> {
    let progress = Progress::new();
    let (shown, unpacking) = (progress.clone(), progress.clone());
    let images = Images::new(Home::from_env())
        .with_notify(std::sync::Arc::new(move |what: &str| shown.phase(what)))
        .with_progress(std::sync::Arc::new(move |p: nestbox_image::UnpackProgress| unpacking.unpacking(&p)));
    let result = run(cmd, images, &progress).await;
    // The display goes before the output, so the two never share a line.
    progress.finish();
    let _ = std::io::stdout().lock().write_all(result?.as_bytes());
    Ok(0)
}

/// Does the work; returns what to print.
async fn run(cmd: ImageCommand, images: Images, progress: &Progress) -> anyhow::Result<String> {
    let mut out = Vec::new();
    match cmd {
        ImageCommand::Build(ImageBuild::Debian(args)) => {
            let meta = tokio::task::spawn_blocking(move || {
                // mmdebstrap's own chatter stays quiet: the phase lines say what happens.
                images.build_debian(&args.name, &args.suite, args.mirror.as_deref(), false).map_err(anyhow::Error::from)
            })
            .await??;
            let _ = writeln!(out, "{}", meta.id);
        }
        ImageCommand::Pull(args) => {
            let platform = platform(&args.platform);
            let mut opts = nestbox_image::registry::PullOptions {
                insecure_registries: args.insecure,
                max_bytes: args.max_size.map(|m| u64::from(m) << 20),
                ..Default::default()
            };
            if let Some(user) = args.username {
                let password = std::env::var("NESTBOX_REGISTRY_PASSWORD").unwrap_or_default();
                opts.auth = Some((user, password));
            }
            let shown = progress.clone();
            opts.progress = Some(Box::new(move |p: nestbox_image::registry::PullProgress| shown.layer(&p)));
            progress.phase(&format!("pulling {}", args.reference));
            let meta = images.pull(&args.reference, &platform, &opts, args.names).await?;
            let _ = writeln!(out, "{}", meta.id);
        }
        ImageCommand::Import(args) => {
            let platform = platform(&args.platform);

            let meta = tokio::task::spawn_blocking(move || {
                images.import(&args.path, args.reference.as_deref(), &platform, args.names).map_err(anyhow::Error::from)
            })
            .await??;
            let _ = writeln!(out, "{}", meta.id);
        }
        ImageCommand::Ls(args) => {
            let list = images.list()?;
            match args.format {
                Format::Json => {
                    let _ = writeln!(out, "{}", serde_json::to_string_pretty(&list)?);
                }
                Format::Table => {
                    let _ = writeln!(out, "{:<14}  {:<30}  {:<11}  {:>9}  SOURCE", "ID", "NAMES", "KIND", "SIZE");
                    for m in list {
                        let names = if m.names.is_empty() { "<none>".to_owned() } else { m.names.join(",") };
                        let size = format!("{}M", m.size_bytes >> 20);
                        let id = &m.id[..12.min(m.id.len())];
                        let kind = m.kind.to_string();
                        let _ = writeln!(out, "{id:<14}  {names:<30}  {kind:<11}  {size:>9}  {}", m.source);
                    }
                }
            }
        }
        ImageCommand::Inspect(args) => {
            let meta = images.resolve(&args.image)?;
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(&meta)?);
        }
        ImageCommand::Rm(args) => {
            let sandboxes = crate::sandbox::manager()?;
            for image in &args.images {
                let meta = images.remove(&sandboxes, image)?;
                let _ = writeln!(out, "{}", meta.id);
            }
        }
        ImageCommand::Prune(args) => {
            let removed = images.prune(&crate::sandbox::manager()?)?;
            match args.format {
                Format::Json => {
                    let _ = writeln!(out, "{}", serde_json::to_string_pretty(&removed)?);
                }
                Format::Table => {
                    for m in &removed {
                        let _ = writeln!(out, "removed {}", m.id);
                    }
                }
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `--platform`'s value, or a usage error naming it.
fn platform(value: &str) -> nestbox_image::Platform {
    match value.parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("nestbox: invalid value {value:?} for --platform: {e}");
            crate::exit::exit(crate::exit::USAGE);
        }
    }
}
