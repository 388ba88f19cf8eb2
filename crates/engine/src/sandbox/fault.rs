//! Fault injection for the crash tests: `NESTBOX_FAULT=<step>` makes the process kill itself with
//! SIGKILL when it reaches that step, as `kill -9` at that moment would. Every step a create,
//! start or shim passes is listed in [`STEPS`], so a test can try each one.

/// The environment variable naming the step to die at.
pub const FAULT_ENV: &str = "NESTBOX_FAULT";

/// Every step, in the order a `create` then `start` reaches them.
pub const STEPS: &[&str] = &[
    "create.record",
    "create.dir",
    "create.spec",
    "start.starting",
    "start.spawned",
    "start.recorded",
    "shim.booting",
    "shim.booted",
    "shim.serving",
];

/// Dies here if `NESTBOX_FAULT` names `step`.
pub fn point(step: &str) {
    debug_assert!(STEPS.contains(&step), "unlisted fault step {step}");
    if std::env::var(FAULT_ENV).is_ok_and(|s| s == step) {
        tracing::warn!("fault injection: killing myself at {step}");
        // SAFETY: kill has no memory effects; we signal ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
