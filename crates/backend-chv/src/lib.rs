//! The Cloud Hypervisor driver.
