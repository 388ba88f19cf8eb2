//! Persistent sandboxes under faults and races: kill -9 at every step, dead shims and hypervisors,
//! racing CLIs, bad references.
