//! Property tests: no input, however broken, makes the image parsers panic.

use nestbox_kernel::bzimage::synthetic_bzimage;
use nestbox_kernel::decompress::decompress;
use nestbox_kernel::{extract_vmlinux, kernel_version, pvh_entry, tiny_pvh_elf};
use proptest::prelude::*;

/// Stream prefixes of every format the decompressor knows.
const MAGICS: &[&[u8]] = &[
    &[0x1f, 0x8b, 0x08],
    &[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 1, 0x69, 0x22, 0xde, 0x36],
    &[0x5d, 0, 0, 0x80, 0],
    &[0x28, 0xb5, 0x2f, 0xfd],
    &[0x02, 0x21, 0x4c, 0x18],
    b"BZh9",
    b"\x89LZO",
];

/// A small valid bzImage around a gzip-compressed tiny ELF.
fn valid_bzimage() -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2_gzip();
    enc.write_all(&tiny_pvh_elf(&[0xf4; 64])).unwrap();
    let mut payload = enc.finish().unwrap();
    payload.extend_from_slice(&[0, 0x11, 0, 0]);
    synthetic_bzimage(&payload, "6.1.0-1 (x)")
}

fn flate2_gzip() -> flate2::write::GzEncoder<Vec<u8>> {
    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast())
}

proptest! {
    #[test]
    fn test_extract_vmlinux_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = extract_vmlinux(&bytes);
        let _ = kernel_version(&bytes);
        let _ = pvh_entry(&bytes);
    }

    #[test]
    fn test_synthetic_bzimage_with_arbitrary_payload_never_panics(
        magic in 0..MAGICS.len(),
        tail in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut payload = MAGICS[magic].to_vec();
        payload.extend_from_slice(&tail);
        let _ = decompress(&payload);
        let _ = extract_vmlinux(&synthetic_bzimage(&payload, "6.1"));
    }

    #[test]
    fn test_mutated_bzimage_never_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut image = valid_bzimage();
        for (at, value) in flips {
            let i = at.index(image.len());
            image[i] = value;
        }
        let len = cut.index(image.len() + 1);
        let _ = extract_vmlinux(&image[..len]);
        let _ = kernel_version(&image[..len]);
    }

    #[test]
    fn test_mutated_elf_never_panics(
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..8),
    ) {
        let mut elf = tiny_pvh_elf(&[0xf4]);
        for (at, value) in flips {
            elf[at] = value;
        }
        let _ = pvh_entry(&elf);
        let _ = extract_vmlinux(&elf);
    }
}

#[test]
fn test_valid_bzimage_fixture_extracts() {
    assert_eq!(extract_vmlinux(&valid_bzimage()).unwrap(), tiny_pvh_elf(&[0xf4; 64]));
}
