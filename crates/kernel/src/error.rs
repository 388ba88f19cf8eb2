//! [`KernelError`]: everything that can go wrong finding, unpacking and caching a guest kernel.

use std::io;
use std::path::PathBuf;

use crate::decompress::DecompressError;
use crate::elf::ElfError;

/// Why no bootable kernel could be produced.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Nothing to boot in any searched place.
    #[error(
        "no guest kernel found (searched {}); install the package linux-image-cloud-amd64 (Debian) \
         or linux-image-virtual (Ubuntu), or pass --kernel PATH",
        join_paths(.searched)
    )]
    NotFound {
        /// The places looked at, in order.
        searched: Vec<PathBuf>,
    },
    /// A kernel file could not be read.
    #[error("cannot read kernel {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A search directory could not be listed.
    #[error("cannot list {path}")]
    ListDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The cached vmlinux could not be written.
    #[error("cannot write kernel cache {path}")]
    CacheWrite {
        /// The cache file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The kernel has no PVH entry note.
    #[error("kernel {path} lacks PVH boot support (CONFIG_PVH) and cannot be booted directly")]
    NoPvhNote {
        /// The kernel that was found or passed.
        path: PathBuf,
    },
    /// A kernel file is not a usable image.
    #[error("cannot use kernel {path}")]
    Image {
        /// The kernel that was found or passed.
        path: PathBuf,
        /// What is wrong with its bytes.
        #[source]
        source: Box<KernelError>,
    },
    /// Neither an ELF nor a bzImage.
    #[error("not an ELF vmlinux nor a bzImage (starts with {})", hex::encode(.head))]
    UnknownImage {
        /// The first bytes of the file.
        head: Vec<u8>,
    },
    /// A bzImage too short to hold its setup header.
    #[error("bzImage setup header is truncated ({len} bytes)")]
    TruncatedSetupHeader {
        /// The file length.
        len: usize,
    },
    /// Boot protocols before 2.08 do not say where the payload is.
    #[error(
        "bzImage boot protocol {}.{:02} has no payload fields (need 2.08 or later)",
        .version >> 8, .version & 0xff
    )]
    OldBootProtocol {
        /// The protocol version, major in the high byte.
        version: u16,
    },
    /// `payload_offset`/`payload_length` point outside the file.
    #[error("bzImage payload ({length} bytes at offset {offset}) runs past the end ({file_len} bytes)")]
    PayloadOutOfBounds {
        /// File offset of the payload.
        offset: u64,
        /// `payload_length`.
        length: u32,
        /// The file length.
        file_len: usize,
    },
    /// The payload could not be decompressed.
    #[error("cannot decompress the bzImage payload")]
    Decompress(#[from] DecompressError),
    /// The decompressed payload is not an ELF.
    #[error("decompressed payload is not an ELF (starts with {})", hex::encode(.head))]
    PayloadNotElf {
        /// The first decompressed bytes.
        head: Vec<u8>,
    },
    /// The vmlinux is not a bootable ELF.
    #[error("invalid vmlinux")]
    Elf(#[from] ElfError),
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_not_found_lists_places_and_packages() {
        let err = KernelError::NotFound {
            searched: vec![PathBuf::from("/h/kernels/vmlinux"), PathBuf::from("/boot/vmlinuz-*")],
        };
        let msg = err.to_string();
        for part in
            ["/h/kernels/vmlinux, /boot/vmlinuz-*", "linux-image-cloud-amd64", "linux-image-virtual", "--kernel PATH"]
        {
            assert!(msg.contains(part), "{msg}");
        }
    }

    #[test]
    fn test_old_protocol_message_shows_version() {
        let msg = KernelError::OldBootProtocol { version: 0x0206 }.to_string();
        assert!(msg.contains("2.06"), "{msg}");
    }
}
