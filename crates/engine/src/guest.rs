//! The guest side of the defaults: kernel command line and deadlines.

use std::time::Duration;

/// The command line every default-image guest boots with. `quiet` keeps the emulated UART
/// (slow under TCG) out of the boot path; `panic=-1` with QEMU's `-no-reboot` turns a guest
/// panic into a prompt exit instead of a hang.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 quiet panic=-1 rdinit=/init";
/// How long the guest may take from launch to a ready agent.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a powered-off guest may take to end its hypervisor before it is stopped by force.
pub const POWEROFF_GRACE: Duration = Duration::from_secs(3);
/// Console lines shown when a boot fails.
pub const CONSOLE_TAIL_LINES: usize = 20;

/// The `PATH` an image gets when it names none (the agent's default for every exec).
pub const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
