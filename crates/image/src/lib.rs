//! Root filesystems for sandboxes.
//!
//! - [`digest`]: `sha256:<hex>` digests and readers that verify them.
//! - [`oci`]: the OCI image layout and `docker save` archives: index, manifest, config, the
//!   platform choice.
//! - [`layer`]: applying a layer (a tar stream, plain, gzip or zstd) onto a root directory, with
//!   whiteouts and opaque directories, never writing outside the root.
//! - [`source`]: what a user can name as an image (a directory, a tarball, an OCI layout, a
//!   `docker save` archive) and turning it into a root directory plus its config.
//! - [`registry`]: pulling `registry/repo:tag` (or `@sha256:…`) into an OCI layout, the platform
//!   chosen from the index, every blob verified.
//! - [`ext4`]: building an ext4 image from a root directory (`mkfs.ext4 -d`), with the guest
//!   agent injected.
//! - [`store`]: images by content under `$NESTBOX_HOME/images`, their names and metadata.

pub mod digest;
pub mod ext4;
pub mod layer;
pub mod oci;
pub mod registry;
pub mod source;
pub mod store;

pub use digest::{Digest, DigestParseError, VerifyError, VerifyingReader, sha256_file};
pub use layer::{Compression, LayerError, LayerStats, apply_layer};
pub use oci::{OciError, OciLayout, Platform};
pub use registry::{PullOptions, PullProgress, RegistryError, pull_to_layout};
pub use source::{ImageConfig, Source, SourceError, UnpackProgress, unpack, unpack_with};
