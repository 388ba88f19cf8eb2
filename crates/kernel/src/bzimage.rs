//! The x86 bzImage format (Linux boot protocol, `Documentation/arch/x86/boot.rst`): the setup
//! header fields needed to find the compressed payload and the version string, and
//! [`extract_vmlinux`], which turns a bzImage (or an ELF, passed through) into the ELF vmlinux.
//!
//! Layout: `setup_sects` 512-byte sectors of real-mode setup after the boot sector, then the
//! protected-mode code, `payload_length` bytes at `payload_offset` into which are the compressed
//! vmlinux (boot protocol 2.08+).

use crate::KernelError;
use crate::bytes::{head, slice, u8_at, u16_le, u32_le};
use crate::decompress::decompress;
use crate::elf::{check_header, is_elf};

/// Offset of `setup_sects`.
pub const SETUP_SECTS_OFFSET: usize = 0x1f1;
/// Offset of `boot_flag` (0xAA55).
pub const BOOT_FLAG_OFFSET: usize = 0x1fe;
/// Offset of the "HdrS" magic.
pub const HEADER_MAGIC_OFFSET: usize = 0x202;
/// The setup header magic.
pub const HEADER_MAGIC: [u8; 4] = *b"HdrS";
/// Offset of the boot protocol `version`.
pub const PROTOCOL_OFFSET: usize = 0x206;
/// Offset of `kernel_version`, a pointer to the version string minus 0x200.
pub const KERNEL_VERSION_OFFSET: usize = 0x20e;
/// Offset of `payload_offset`.
pub const PAYLOAD_OFFSET_OFFSET: usize = 0x248;
/// Offset of `payload_length`.
pub const PAYLOAD_LENGTH_OFFSET: usize = 0x24c;
/// Bytes up to and including `payload_length`.
pub const SETUP_HEADER_END: usize = 0x250;
/// First boot protocol with `payload_offset`/`payload_length`.
pub const MIN_PAYLOAD_PROTOCOL: u16 = 0x0208;
/// Sector size of the setup code.
pub const SECTOR_BYTES: usize = 512;
/// `setup_sects` value that old kernels leave at 0, meaning 4.
pub const DEFAULT_SETUP_SECTS: u8 = 4;
/// Longest version string read from the header.
const MAX_VERSION_STRING: usize = 256;
/// Longest version token accepted.
const MAX_VERSION_BYTES: usize = 64;
/// The banner every kernel carries in `.rodata` (`linux_banner`).
const BANNER: &[u8] = b"Linux version ";
/// How many leading bytes an unknown-image error shows.
const HEAD_BYTES: usize = 8;

/// The setup header fields this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupHeader {
    /// Setup sectors (0 already replaced by [`DEFAULT_SETUP_SECTS`]).
    pub setup_sects: u8,
    /// Boot protocol version, major in the high byte.
    pub protocol: u16,
    /// `kernel_version` (0: none).
    pub kernel_version: u16,
    /// Payload offset from the start of the protected-mode code.
    pub payload_offset: u32,
    /// Payload length.
    pub payload_length: u32,
}

impl SetupHeader {
    /// File offset of the protected-mode code.
    pub fn protected_mode_offset(&self) -> usize {
        (usize::from(self.setup_sects) + 1) * SECTOR_BYTES
    }
}

/// Whether `image` has the bzImage setup header magic.
pub fn is_bzimage(image: &[u8]) -> bool {
    slice(image, HEADER_MAGIC_OFFSET, 4) == Some(&HEADER_MAGIC[..])
}

/// Parses the setup header of a bzImage.
pub fn parse_header(image: &[u8]) -> Result<SetupHeader, KernelError> {
    if !is_bzimage(image) {
        return Err(KernelError::UnknownImage { head: head(image, HEAD_BYTES) });
    }
    let truncated = || KernelError::TruncatedSetupHeader { len: image.len() };
    let protocol = u16_le(image, PROTOCOL_OFFSET).ok_or_else(truncated)?;
    let kernel_version = u16_le(image, KERNEL_VERSION_OFFSET).ok_or_else(truncated)?;
    let setup_sects = match u8_at(image, SETUP_SECTS_OFFSET).ok_or_else(truncated)? {
        0 => DEFAULT_SETUP_SECTS,
        n => n,
    };
    if protocol < MIN_PAYLOAD_PROTOCOL {
        return Err(KernelError::OldBootProtocol { version: protocol });
    }
    let payload_offset = u32_le(image, PAYLOAD_OFFSET_OFFSET).ok_or_else(truncated)?;
    let payload_length = u32_le(image, PAYLOAD_LENGTH_OFFSET).ok_or_else(truncated)?;
    Ok(SetupHeader { setup_sects, protocol, kernel_version, payload_offset, payload_length })
}

/// The (still compressed) payload of a bzImage.
pub fn payload(image: &[u8]) -> Result<&[u8], KernelError> {
    let header = parse_header(image)?;
    let offset = header.protected_mode_offset() as u64 + u64::from(header.payload_offset);
    usize::try_from(offset)
        .ok()
        .and_then(|off| slice(image, off, header.payload_length as usize))
        .ok_or(KernelError::PayloadOutOfBounds { offset, length: header.payload_length, file_len: image.len() })
}

/// Turns a bzImage into its ELF vmlinux by decompressing the payload; an ELF passes through.
/// The result is a checked ELF64 x86-64 header; whether it has a PVH note is [`crate::pvh_entry`]'s call.
pub fn extract_vmlinux(image: &[u8]) -> Result<Vec<u8>, KernelError> {
    if is_elf(image) {
        check_header(image)?;
        return Ok(image.to_vec());
    }
    let payload = payload(image)?;
    let vmlinux = if is_elf(payload) { payload.to_vec() } else { decompress(payload)? };
    if !is_elf(&vmlinux) {
        return Err(KernelError::PayloadNotElf { head: head(&vmlinux, HEAD_BYTES) });
    }
    check_header(&vmlinux)?;
    Ok(vmlinux)
}

/// The kernel release (`uname -r`) of an image: from the bzImage header's version string, or
/// from the "Linux version " banner of an uncompressed kernel.
pub fn kernel_version(image: &[u8]) -> Option<String> {
    if is_bzimage(image) {
        return header_version(image);
    }
    banner_version(image)
}

fn header_version(image: &[u8]) -> Option<String> {
    let pointer = u16_le(image, KERNEL_VERSION_OFFSET)?;
    if pointer == 0 {
        return None;
    }
    let start = usize::from(pointer) + 0x200;
    let text = image.get(start..)?;
    let text = &text[..text.len().min(MAX_VERSION_STRING)];
    let end = text.iter().position(|&b| b == 0)?;
    version_token(&text[..end])
}

fn banner_version(image: &[u8]) -> Option<String> {
    let mut rest = image;
    while let Some(at) = find(rest, BANNER) {
        let after = &rest[at + BANNER.len()..];
        if let Some(version) = version_token(&after[..after.len().min(MAX_VERSION_STRING)]) {
            return Some(version);
        }
        rest = after;
    }
    None
}

/// The first whitespace-separated token, when it looks like a kernel release: starts with a
/// digit, printable ASCII, no `/`, short enough to be a directory name.
fn version_token(text: &[u8]) -> Option<String> {
    let token = text.split(|b| b.is_ascii_whitespace() || *b == 0).next()?;
    let plausible = token.first().is_some_and(u8::is_ascii_digit)
        && token.len() <= MAX_VERSION_BYTES
        && token.iter().all(|b| b.is_ascii_graphic() && *b != b'/');
    plausible.then(|| String::from_utf8_lossy(token).into_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(i) = haystack.get(from..)?.iter().position(|&b| b == first) {
        let at = from + i;
        if haystack.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Builds a minimal bzImage around `payload` (boot protocol 2.15, one setup sector, the version
/// string in the setup area): what [`extract_vmlinux`] and [`kernel_version`] read, nothing
/// more. For tests that need a kernel file without a real kernel.
pub fn synthetic_bzimage(payload: &[u8], version: &str) -> Vec<u8> {
    const SETUP_SECTS: u8 = 1;
    const VERSION_AT: usize = 0x300;
    let pm_offset = (usize::from(SETUP_SECTS) + 1) * SECTOR_BYTES;
    // A little code before the payload, as in a real image.
    let payload_offset = 0x40u32;
    let mut image = vec![0u8; pm_offset + payload_offset as usize];
    image[SETUP_SECTS_OFFSET] = SETUP_SECTS;
    image[BOOT_FLAG_OFFSET..BOOT_FLAG_OFFSET + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
    image[HEADER_MAGIC_OFFSET..HEADER_MAGIC_OFFSET + 4].copy_from_slice(&HEADER_MAGIC);
    image[PROTOCOL_OFFSET..PROTOCOL_OFFSET + 2].copy_from_slice(&0x020fu16.to_le_bytes());
    let version_bytes = version.as_bytes();
    let room = pm_offset - VERSION_AT - 1;
    let version_bytes = &version_bytes[..version_bytes.len().min(room)];
    image[VERSION_AT..VERSION_AT + version_bytes.len()].copy_from_slice(version_bytes);
    let pointer = (VERSION_AT - 0x200) as u16;
    image[KERNEL_VERSION_OFFSET..KERNEL_VERSION_OFFSET + 2].copy_from_slice(&pointer.to_le_bytes());
    image[PAYLOAD_OFFSET_OFFSET..PAYLOAD_OFFSET_OFFSET + 4].copy_from_slice(&payload_offset.to_le_bytes());
    image[PAYLOAD_LENGTH_OFFSET..PAYLOAD_LENGTH_OFFSET + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    image.extend_from_slice(payload);
    // Trailing code after the payload, as in a real image.
    image.extend_from_slice(&[0xcc; 64]);
    image
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decompress::tests::compress;
    use crate::decompress::{Compression, DecompressError};
    use crate::elf::{ElfError, find_pvh_entry, tiny_pvh_elf};

    const VERSION: &str = "6.1.0-99-test-amd64 (nobody@example.invalid) #1 SMP";

    fn tiny() -> Vec<u8> {
        tiny_pvh_elf(&[0xfa, 0xf4, 0xeb, 0xfd])
    }

    #[test]
    fn test_extract_vmlinux_every_compression() {
        for format in [Compression::Gzip, Compression::Xz, Compression::Lzma, Compression::Zstd, Compression::Lz4Legacy]
        {
            let image = synthetic_bzimage(&compress(format, &tiny()), VERSION);
            let vmlinux = extract_vmlinux(&image).unwrap_or_else(|e| panic!("{format}: {e:?}"));
            assert_eq!(vmlinux, tiny(), "{format}");
            assert_eq!(find_pvh_entry(&vmlinux), Ok(0x10_0000));
        }
    }

    #[test]
    fn test_extract_vmlinux_passes_elf_and_uncompressed_payload_through() {
        assert_eq!(extract_vmlinux(&tiny()).unwrap(), tiny());
        let image = synthetic_bzimage(&tiny(), VERSION);
        assert_eq!(extract_vmlinux(&image).unwrap(), tiny());
    }

    #[test]
    fn test_extract_vmlinux_rejects_garbage_with_hex_head() {
        let err = extract_vmlinux(b"garbage!garbage!").unwrap_err();
        assert!(matches!(&err, KernelError::UnknownImage { head } if head == b"garbage!"));
        assert!(err.to_string().contains("6761726261676521"), "{err}");
        assert!(matches!(extract_vmlinux(&[]), Err(KernelError::UnknownImage { .. })));
    }

    #[test]
    fn test_extract_vmlinux_unknown_payload_compression_names_bytes() {
        let image = synthetic_bzimage(b"\xde\xad\xbe\xef\x01\x02\x03\x04\x05", VERSION);
        let err = extract_vmlinux(&image).unwrap_err();
        let KernelError::Decompress(DecompressError::UnknownMagic { head }) = &err else {
            panic!("{err:?}");
        };
        assert_eq!(head, b"\xde\xad\xbe\xef\x01\x02\x03\x04");
    }

    #[test]
    fn test_extract_vmlinux_rejects_non_elf_payload() {
        let image = synthetic_bzimage(&compress(Compression::Gzip, b"not an elf at all"), VERSION);
        assert!(matches!(
            extract_vmlinux(&image),
            Err(KernelError::PayloadNotElf { head }) if head == b"not an e"
        ));
    }

    #[test]
    fn test_extract_vmlinux_keeps_elf_without_pvh_but_pvh_lookup_fails() {
        let mut no_pvh = tiny();
        // Turn the PVH note's type into something else.
        let note_type_at = 64 + 2 * 56 + 8;
        no_pvh[note_type_at] = 3;
        let image = synthetic_bzimage(&compress(Compression::Zstd, &no_pvh), VERSION);
        let vmlinux = extract_vmlinux(&image).unwrap();
        assert_eq!(find_pvh_entry(&vmlinux), Err(ElfError::NoPvhNote));
    }

    #[test]
    fn test_parse_header_fields_and_errors() {
        let image = synthetic_bzimage(b"payload", VERSION);
        let header = parse_header(&image).unwrap();
        assert_eq!(header.setup_sects, 1);
        assert_eq!(header.protected_mode_offset(), 1024);
        assert_eq!(header.payload_offset, 0x40);
        assert_eq!(header.payload_length, 7);
        assert_eq!(payload(&image).unwrap(), b"payload");

        let mut old = image.clone();
        old[PROTOCOL_OFFSET..PROTOCOL_OFFSET + 2].copy_from_slice(&0x0206u16.to_le_bytes());
        assert!(matches!(parse_header(&old), Err(KernelError::OldBootProtocol { version: 0x0206 })));

        let mut zero_sects = image.clone();
        zero_sects[SETUP_SECTS_OFFSET] = 0;
        assert_eq!(parse_header(&zero_sects).unwrap().setup_sects, DEFAULT_SETUP_SECTS);

        let mut long = image.clone();
        long[PAYLOAD_LENGTH_OFFSET..PAYLOAD_LENGTH_OFFSET + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(payload(&long), Err(KernelError::PayloadOutOfBounds { length: u32::MAX, .. })));

        assert!(matches!(parse_header(&image[..0x220]), Err(KernelError::TruncatedSetupHeader { len: 0x220 })));
    }

    #[test]
    fn test_extract_vmlinux_truncated_images_fail_cleanly() {
        let payload = compress(Compression::Xz, &tiny());
        let image = synthetic_bzimage(&payload, VERSION);
        let payload_end = image.len() - 64;
        assert_eq!(&image[payload_end - payload.len()..payload_end], &payload[..]);
        for len in (0..payload_end).step_by(7) {
            assert!(extract_vmlinux(&image[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn test_kernel_version_from_header_and_banner() {
        let image = synthetic_bzimage(b"x", VERSION);
        assert_eq!(kernel_version(&image).as_deref(), Some("6.1.0-99-test-amd64"));

        let mut elf = tiny();
        elf.extend_from_slice(b"Linux version %s\0Linux version 6.12.3-arch1 (gcc) #1\0");
        assert_eq!(kernel_version(&elf).as_deref(), Some("6.12.3-arch1"));

        assert_eq!(kernel_version(b"nothing here"), None);
        assert_eq!(kernel_version(b"Linux version ../../etc x"), None);
        let mut no_version = image.clone();
        no_version[KERNEL_VERSION_OFFSET..KERNEL_VERSION_OFFSET + 2].copy_from_slice(&[0, 0]);
        assert_eq!(kernel_version(&no_version), None);
        let mut wild = image;
        wild[KERNEL_VERSION_OFFSET..KERNEL_VERSION_OFFSET + 2].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(kernel_version(&wild), None);
    }
}
