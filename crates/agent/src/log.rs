//! Error reporting: the kernel log (`/dev/kmsg`) in init mode, stderr otherwise.
//!
//! Boot speed matters, so the agent only logs failures.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static TO_KMSG: AtomicBool = AtomicBool::new(false);

/// Sends later messages to `/dev/kmsg` (falling back to `/dev/console`).
pub fn use_kmsg() {
    TO_KMSG.store(true, Ordering::Relaxed);
}

/// Logs one error line.
pub fn error(msg: &str) {
    if TO_KMSG.load(Ordering::Relaxed) {
        // "<3>" is KERN_ERR.
        let line = format!("<3>nestbox-agent: {msg}\n");
        for dev in ["/dev/kmsg", "/dev/console"] {
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(dev)
                && f.write_all(line.as_bytes()).is_ok()
            {
                return;
            }
        }
    }
    let _ = writeln!(std::io::stderr(), "nestbox-agent: {msg}");
}
