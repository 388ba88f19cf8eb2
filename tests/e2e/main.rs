//! End-to-end tests: the real `nestbox` binary booting real microVMs under QEMU.
//!
//! They need `qemu-system-x86_64`, a guest kernel (found as `nestbox run` finds one) and a
//! static busybox; a host without them reports each test as skipped (a line on stderr) instead
//! of passing silently. `make test` installs all three. Each test gets its own `NESTBOX_HOME`;
//! the kernel, image and probe caches are shared through symlinks so each is built once.

mod cloud;
mod common;
mod concurrency;
mod doctor;
mod failures;
mod hypervisors;
mod images;
mod lifecycle;
mod rootfs;
mod run;
mod sandbox_faults;
mod sandboxes;
mod snapshots;
mod stress;
