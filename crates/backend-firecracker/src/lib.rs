//! The Firecracker driver.
