//! The embedded default guest image: a newc cpio initramfs with the guest agent as `/init`, a
//! static busybox with its applet links, and the virtio kernel modules the guest loads, resolved
//! with their dependencies from `modules.dep`. Images are cached by content.
#![warn(missing_docs)]

mod cache;
mod image;
mod script;

pub mod busybox;
pub mod cpio;
pub mod modules;

pub use cache::IMAGE_FORMAT_VERSION;
pub use image::{
    BuiltImage, DEFAULT_MODULES, ImageInputs, InitramfsError, MODULE_LIST_PATH, PCI_TRANSPORTS, VIRTIO_DRIVERS,
    build_default,
};
pub use script::script_image;
