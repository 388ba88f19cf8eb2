//! An HTTP/1.1 client over Unix sockets, shared by the Firecracker and Cloud Hypervisor drivers.
