//! A minimal image for probes and benchmarks: a static busybox and a shell-script `/init`.
//!
//! Used where something must boot a guest without the agent: the KVM usability probe (does a
//! real kernel reach userspace under KVM here?) and the boot benchmark's baseline.

use crate::InitramfsError;
use crate::busybox::Busybox;
use crate::cpio::NewcWriter;

/// A newc archive with `/bin/busybox`, `/dev/console` and `/init` = `#!/bin/busybox sh` + `script`.
/// Commands in `script` must be called as `/bin/busybox APPLET` (there are no applet links).
pub fn script_image(busybox: &Busybox, script: &str) -> Result<Vec<u8>, InitramfsError> {
    let mut w = NewcWriter::new(Vec::new());
    w.add_dir("bin", 0o755)?;
    w.add_dir("dev", 0o755)?;
    w.add_char_device("dev/console", 0o600, 5, 1)?;
    w.add_file("bin/busybox", 0o755, &busybox.bytes)?;
    w.add_file("init", 0o755, format!("#!/bin/busybox sh\n{script}\n").as_bytes())?;
    Ok(w.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::read_newc;

    #[test]
    fn test_script_image_has_init_and_busybox() {
        let busybox = Busybox { path: "/bin/busybox".into(), bytes: b"\x7fELF fake".to_vec() };
        let image = script_image(&busybox, "/bin/busybox poweroff -f").unwrap();
        let entries = read_newc(&image).unwrap();
        let init = entries.iter().find(|e| e.name == "init").unwrap();
        assert_eq!(init.data, b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n");
        assert_eq!(init.permissions(), 0o755);
        assert!(entries.iter().any(|e| e.name == "bin/busybox" && e.data == busybox.bytes));
        assert!(entries.iter().any(|e| e.name == "dev/console"));
    }
}
