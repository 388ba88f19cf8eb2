//! Error reporting: the kernel log (`/dev/kmsg`) in init mode, stderr otherwise.
//!
//! Boot speed matters, so the agent only logs failures.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static TO_KMSG: AtomicBool = AtomicBool::new(false);
static TRACE: AtomicBool = AtomicBool::new(false);

/// The kernel command-line word that turns on boot-phase tracing.
pub const TRACE_PARAM: &str = "nestbox.trace";

/// Turns on [`trace`] when the kernel command line has [`TRACE_PARAM`] (needs `/proc`).
pub fn enable_trace_from_cmdline() {
    let on = std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| c.split_whitespace().any(|w| w == TRACE_PARAM));
    TRACE.store(on, Ordering::Relaxed);
}

/// Logs a boot phase with the kernel's uptime, only when tracing is on (`nestbox.trace`).
pub fn trace(phase: &str) {
    if TRACE.load(Ordering::Relaxed) {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok();
        let uptime = now.map_or_else(|| "?".to_owned(), |t| format!("{}.{:06}", t.tv_sec(), t.tv_nsec() / 1000));
        let line = format!("nestbox-agent: trace {uptime} {phase}\n");
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

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
