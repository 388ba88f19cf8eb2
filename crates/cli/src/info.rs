//! `nestbox info`: what nestbox would use on this host, as a table or JSON.

use serde::Serialize;

use crate::cli::{Format, InfoArgs};
use nestbox_engine::{Home, accel};

#[derive(Debug, Serialize)]
struct Info {
    home: String,
    qemu: Option<String>,
    kernel: Option<KernelInfo>,
    kernel_error: Option<String>,
    accel: Option<String>,
    accel_note: Option<String>,
}

#[derive(Debug, Serialize)]
struct KernelInfo {
    source: String,
    vmlinux: String,
    version: Option<String>,
    modules_dir: Option<String>,
}

/// Prints the host report; exit code 0 when a run could work, 125 otherwise.
pub async fn info(args: InfoArgs) -> anyhow::Result<i32> {
    let home = Home::from_env();
    let qemu = nestbox_backend_qemu::vm::locate_binary().ok();
    let kernel = nestbox_kernel::resolve(args.kernel.as_deref(), home.root());
    let decision = match (&qemu, &kernel) {
        (Some(q), Ok(k)) => accel::choose(accel::AccelChoice::Auto, &home.cache(), q, k).await.ok(),
        _ => None,
    };
    let info = Info {
        home: home.root().display().to_string(),
        qemu: qemu.as_ref().map(|p| p.display().to_string()),
        kernel_error: kernel.as_ref().err().map(|e| e.to_string()),
        kernel: kernel.as_ref().ok().map(|k| KernelInfo {
            source: k.source.display().to_string(),
            vmlinux: k.vmlinux.display().to_string(),
            version: k.version.clone(),
            modules_dir: k.modules_dir.as_ref().map(|p| p.display().to_string()),
        }),
        accel: decision.as_ref().map(|d| d.accel.to_string()),
        accel_note: decision.and_then(|d| d.note),
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&info)?),
        Format::Table => {
            let none = || "-".to_string();
            println!("home:     {}", info.home);
            println!(
                "qemu:     {}",
                info.qemu
                    .clone()
                    .unwrap_or_else(|| format!("not found (install {})", nestbox_backend_qemu::QEMU_PACKAGE))
            );
            match (&info.kernel, &info.kernel_error) {
                (Some(k), _) => {
                    println!("kernel:   {} ({})", k.source, k.version.clone().unwrap_or_else(none));
                    println!("vmlinux:  {}", k.vmlinux);
                    println!("modules:  {}", k.modules_dir.clone().unwrap_or_else(|| "none (drivers built in)".into()));
                }
                (None, Some(e)) => println!("kernel:   {e}"),
                (None, None) => println!("kernel:   -"),
            }
            println!("accel:    {}", info.accel.clone().unwrap_or_else(none));
            if let Some(note) = &info.accel_note {
                println!("          {note}");
            }
        }
    }
    Ok(if info.qemu.is_some() && info.kernel.is_some() { 0 } else { crate::exit::FAILURE })
}
