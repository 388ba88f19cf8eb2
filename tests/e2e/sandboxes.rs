//! Persistent sandboxes, end to end: the whole life of one under QEMU.
