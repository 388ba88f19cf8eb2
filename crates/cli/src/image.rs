//! `nestbox image …`: build, list, inspect, remove and prune root filesystem images.

use std::io::Write;

use nestbox_engine::Home;
use nestbox_engine::images::Images;

use crate::cli::{Format, ImageBuild, ImageCommand};

/// Runs one `image` subcommand.
pub async fn image(cmd: ImageCommand) -> anyhow::Result<i32> {
    let images = Images::new(Home::from_env());
    let mut out = std::io::stdout().lock();
    match cmd {
        ImageCommand::Build(ImageBuild::Debian(args)) => {
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            if tty {
                eprintln!("nestbox: building {} from Debian {} (mmdebstrap; a minute or so)", args.name, args.suite);
            }
            let meta = tokio::task::spawn_blocking(move || {
                images.build_debian(&args.name, &args.suite, args.mirror.as_deref(), tty).map_err(anyhow::Error::from)
            })
            .await??;
            let _ = writeln!(out, "{}", meta.id);
        }
        ImageCommand::Pull(args) => {
            let platform = platform(&args.platform);
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let mut opts = nestbox_image::registry::PullOptions {
                insecure_registries: args.insecure,
                max_bytes: args.max_size.map(|m| u64::from(m) << 20),
                ..Default::default()
            };
            if let Some(user) = args.username {
                let password = std::env::var("NESTBOX_REGISTRY_PASSWORD").unwrap_or_default();
                opts.auth = Some((user, password));
            }
            if tty {
                opts.progress = Some(Box::new(|p: nestbox_image::registry::PullProgress| {
                    let short = &p.layer.hex()[..12];
                    eprint!("\r\x1b[Knestbox: layer {short}: {} / {} MiB", p.done >> 20, p.total.div_ceil(1 << 20));
                    if p.done == p.total {
                        eprintln!();
                    }
                }));
            }
            let meta = images.pull(&args.reference, &platform, &opts, args.names).await?;
            let _ = writeln!(out, "{}", meta.id);
        }
        ImageCommand::Import(args) => {
            let platform = platform(&args.platform);
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!("nestbox: importing {}", args.path.display());
            }
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
                    let _ = writeln!(out, "{:<14}  {:<30}  {:>9}  SOURCE", "ID", "NAMES", "SIZE");
                    for m in list {
                        let names = if m.names.is_empty() { "<none>".to_owned() } else { m.names.join(",") };
                        let size = format!("{}M", m.size_bytes >> 20);
                        let _ =
                            writeln!(out, "{:<14}  {names:<30}  {size:>9}  {}", &m.id[..12.min(m.id.len())], m.source);
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
    Ok(0)
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
