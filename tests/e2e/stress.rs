//! Boots never hang at random: 20 VMs in a row while another process keeps a core busy.
//!
//! Under TCG on a loaded host the guest's TSC calibration against the PIT can hang the kernel
//! for good; `tsc_early_khz=` on the command line avoids it. Without it this test fails.

use std::process::{Command, Stdio};

use crate::common::{Home, stderr};
use crate::require_vm;

/// Kills the busy loop when the test ends, however it ends.
struct Busy(std::process::Child);

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn test_twenty_boots_in_a_row_under_load() {
    require_vm!();
    let _busy = Busy(Command::new("sh").args(["-c", "while :; do :; done"]).stdin(Stdio::null()).spawn().unwrap());
    let home = Home::new();
    for i in 0..20 {
        let out = home.output(["run", "--boot-timeout", "60s", "--", "true"]);
        assert!(out.status.success(), "boot {i} failed: {}", stderr(&out));
    }
    home.assert_clean();
}
