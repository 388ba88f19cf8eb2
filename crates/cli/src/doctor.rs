//! `nestbox doctor`: each backend's binary, version and usability here, and the kernel's needs.

use nestbox_engine::{Home, doctor};

use crate::cli::{DoctorArgs, Format};

/// Prints the report; exit 0 when at least one backend can run a VM, 125 otherwise.
pub async fn doctor(args: DoctorArgs) -> anyhow::Result<i32> {
    let home = Home::from_env();
    let kernel = nestbox_kernel::resolve(args.kernel.as_deref(), home.root()).map_err(|e| e.to_string());
    let report =
        doctor::diagnose(&home.cache(), kernel.as_ref().map_err(Clone::clone), std::path::Path::new("/boot")).await;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            println!("{:<17} {:<7} {:<38} VERSION", "BACKEND", "USABLE", "BINARY");
            for b in &report.backends {
                let binary = b.binary.as_ref().map_or("-".into(), |p| p.display().to_string());
                let usable = if b.usable { "yes" } else { "no" };
                println!(
                    "{:<17} {:<7} {:<38} {}",
                    b.backend.to_string(),
                    usable,
                    binary,
                    b.version.as_deref().unwrap_or("-")
                );
                if let Some(note) = &b.note {
                    println!("{:<17} {note}", "");
                }
            }
            match (&report.kernel, &report.kernel_error) {
                (Some(k), _) => {
                    println!();
                    println!("kernel: {} ({})", k.source.display(), k.version.as_deref().unwrap_or("unknown version"));
                    println!(
                        "  firecracker transport: {} — {}",
                        k.firecracker_transport.as_deref().unwrap_or("unknown"),
                        k.transport_note
                    );
                }
                (None, Some(e)) => println!("\nkernel: {e}"),
                (None, None) => {}
            }
        }
    }
    Ok(if report.backends.iter().any(|b| b.usable) { 0 } else { crate::exit::FAILURE })
}
