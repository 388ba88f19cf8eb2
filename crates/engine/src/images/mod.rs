//! Images for sandboxes' root disks: building them (`debian`) and, with `nestbox-image`,
//! importing and storing them.

pub mod debian;
