//! The `.xz` container (xz file format 1.0.4) as the kernel build writes it:
//! `xz --check=crc32 --x86 --lzma2=...` followed by the appended size. `lzma-rs` decodes the
//! LZMA2 data; this module walks the stream and block headers, undoes the x86 BCJ filter and
//! verifies CRC32 checks. It stops at the index: nothing after the last block is needed.

use std::io::Cursor;

use super::DecompressError;
use crate::bytes::{align_up, array, slice, u8_at, u32_le};

const MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
const STREAM_HEADER_BYTES: usize = 12;
const FILTER_X86: u64 = 0x04;
const FILTER_LZMA2: u64 = 0x21;
const CHECK_CRC32: u8 = 0x01;
/// Block flags bits that must be zero.
const BLOCK_FLAGS_RESERVED: u8 = 0x3c;
const BLOCK_HAS_COMPRESSED_SIZE: u8 = 0x40;
const BLOCK_HAS_UNCOMPRESSED_SIZE: u8 = 0x80;
/// The longest multibyte integer is 9 bytes (63 bits).
const MAX_VARINT_BYTES: usize = 9;

/// What is wrong with an xz stream.
#[derive(Debug, thiserror::Error)]
pub enum XzError {
    /// The stream does not start with the xz magic.
    #[error("missing xz magic")]
    BadMagic,
    /// Reserved stream flag bits are set.
    #[error("unsupported xz stream flags {flags:02x?}")]
    BadStreamFlags {
        /// The two flag bytes.
        flags: [u8; 2],
    },
    /// A header's CRC32 does not match.
    #[error("{what} CRC32 mismatch")]
    HeaderCrc {
        /// Which header.
        what: &'static str,
    },
    /// The data ends inside a structure.
    #[error("xz stream truncated in {what} at offset {offset}")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Where it starts.
        offset: usize,
    },
    /// Reserved block flag bits are set.
    #[error("unsupported xz block flags {flags:#04x}")]
    BadBlockFlags {
        /// The flags byte.
        flags: u8,
    },
    /// A filter chain other than `[x86 BCJ...] LZMA2`.
    #[error("unsupported xz filter {id:#x} at position {position} of the chain")]
    UnsupportedFilter {
        /// The filter id.
        id: u64,
        /// Its index in the chain.
        position: usize,
    },
    /// Filter properties of the wrong size.
    #[error("xz filter {id:#x} has {len} property bytes")]
    BadFilterProperties {
        /// The filter id.
        id: u64,
        /// How many property bytes it has.
        len: usize,
    },
    /// The LZMA2 data of a block is corrupt.
    #[error("xz block at offset {offset} has corrupt LZMA2 data")]
    Lzma2 {
        /// The block's offset.
        offset: usize,
        /// The decoder's complaint.
        #[source]
        source: lzma_rs::error::Error,
    },
    /// A block's CRC32 check does not match its data.
    #[error("xz block at offset {offset}: CRC32 {actual:#010x}, expected {expected:#010x}")]
    CheckMismatch {
        /// The block's offset.
        offset: usize,
        /// Stored check.
        expected: u32,
        /// Computed over the decoded data.
        actual: u32,
    },
}

impl From<XzError> for DecompressError {
    fn from(e: XzError) -> Self {
        DecompressError::Xz(e)
    }
}

/// Decodes every block of the first stream in `data`.
pub(super) fn decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    if !data.starts_with(&MAGIC) {
        return Err(XzError::BadMagic.into());
    }
    let (Some(flags), Some(stored_crc)) = (array::<2>(data, 6), u32_le(data, 8)) else {
        return Err(truncated("stream header", 0));
    };
    if crc32(&flags) != stored_crc {
        return Err(XzError::HeaderCrc { what: "stream header" }.into());
    }
    if flags[0] != 0 || flags[1] & 0xf0 != 0 {
        return Err(XzError::BadStreamFlags { flags }.into());
    }
    let check_id = flags[1] & 0x0f;
    let check_bytes = check_size(check_id);

    let mut out = Vec::new();
    let mut pos = STREAM_HEADER_BYTES;
    loop {
        let size_byte = u8_at(data, pos).ok_or_else(|| truncated("block header", pos))?;
        if size_byte == 0 {
            // Index indicator: no more blocks.
            break;
        }
        let header_len = (usize::from(size_byte) + 1) * 4;
        let header = slice(data, pos, header_len).ok_or_else(|| truncated("block header", pos))?;
        let chain = parse_block_header(header, pos)?;

        let start = pos + header_len;
        let compressed = data.get(start..).unwrap_or_default();
        let mut cursor = Cursor::new(compressed);
        let mut block = Vec::new();
        lzma_rs::lzma2_decompress(&mut cursor, &mut block).map_err(|source| XzError::Lzma2 { offset: pos, source })?;
        for start_offset in chain.x86_start_offsets.iter().rev() {
            bcj_x86_decode(&mut block, *start_offset);
        }

        let compressed_len = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
        let check_at = align_up(compressed_len, 4)
            .and_then(|len| start.checked_add(len))
            .ok_or_else(|| truncated("block padding", start))?;
        let check = slice(data, check_at, check_bytes).ok_or_else(|| truncated("block check", check_at))?;
        if check_id == CHECK_CRC32 {
            let expected = u32_le(check, 0).unwrap_or_default();
            let actual = crc32(&block);
            if expected != actual {
                return Err(XzError::CheckMismatch { offset: pos, expected, actual }.into());
            }
        }
        if out.len().saturating_add(block.len()) > limit {
            return Err(DecompressError::TooLarge { limit });
        }
        out.extend_from_slice(&block);
        pos = check_at + check_bytes;
    }
    Ok(out)
}

/// The decoding steps a block needs after LZMA2: x86 BCJ passes, in encoding order.
struct FilterChain {
    x86_start_offsets: Vec<u32>,
}

fn parse_block_header(header: &[u8], offset: usize) -> Result<FilterChain, DecompressError> {
    let (body, crc) = header.split_at(header.len() - 4);
    if u32_le(crc, 0) != Some(crc32(body)) {
        return Err(XzError::HeaderCrc { what: "block header" }.into());
    }
    let flags = u8_at(body, 1).ok_or_else(|| truncated("block header", offset))?;
    if flags & BLOCK_FLAGS_RESERVED != 0 {
        return Err(XzError::BadBlockFlags { flags }.into());
    }
    let mut p = 2;
    for present in [BLOCK_HAS_COMPRESSED_SIZE, BLOCK_HAS_UNCOMPRESSED_SIZE] {
        if flags & present != 0 {
            varint(body, &mut p).ok_or_else(|| truncated("block sizes", offset))?;
        }
    }
    let filters = usize::from(flags & 0x03) + 1;
    let mut chain = FilterChain { x86_start_offsets: Vec::new() };
    for position in 0..filters {
        let id = varint(body, &mut p).ok_or_else(|| truncated("filter flags", offset))?;
        let props_len = varint(body, &mut p)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| truncated("filter flags", offset))?;
        let props = slice(body, p, props_len).ok_or_else(|| truncated("filter flags", offset))?;
        p += props_len;
        let last = position + 1 == filters;
        match (id, last) {
            (FILTER_LZMA2, true) if props_len == 1 => {}
            (FILTER_X86, false) if props_len == 0 => chain.x86_start_offsets.push(0),
            (FILTER_X86, false) if props_len == 4 => {
                chain.x86_start_offsets.push(u32_le(props, 0).unwrap_or_default());
            }
            (FILTER_LZMA2, true) | (FILTER_X86, false) => {
                return Err(XzError::BadFilterProperties { id, len: props_len }.into());
            }
            _ => return Err(XzError::UnsupportedFilter { id, position }.into()),
        }
    }
    Ok(chain)
}

/// Reads an xz multibyte integer at `*p`, advancing it.
fn varint(bytes: &[u8], p: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..MAX_VARINT_BYTES {
        let b = u8_at(bytes, *p)?;
        *p += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn check_size(check_id: u8) -> usize {
    match check_id {
        0 => 0,
        1..=3 => 4,
        4..=6 => 8,
        7..=9 => 16,
        10..=12 => 32,
        _ => 64,
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

fn truncated(what: &'static str, offset: usize) -> DecompressError {
    XzError::Truncated { what, offset }.into()
}

/// Undoes the x86 BCJ filter over a whole block (`start` is the filter's start offset): E8/E9
/// (call/jmp rel32) operands were turned from relative into absolute addresses for better
/// compression. A port of xz-embedded's `bcj_x86`; the last four bytes are never filtered.
pub(super) fn bcj_x86_decode(buf: &mut [u8], start: u32) {
    const MASK_TO_ALLOWED: [bool; 8] = [true, true, true, false, true, false, false, false];
    const MASK_TO_BIT_NUM: [u32; 8] = [0, 1, 2, 2, 3, 3, 3, 3];
    fn is_ms_byte(b: u8) -> bool {
        b == 0x00 || b == 0xff
    }

    if buf.len() <= 4 {
        return;
    }
    let end = buf.len() - 4;
    let mut prev_pos = usize::MAX;
    let mut prev_mask = 0u32;
    let mut i = 0;
    while i < end {
        if buf[i] & 0xfe != 0xe8 {
            i += 1;
            continue;
        }
        let distance = i.wrapping_sub(prev_pos);
        if distance > 3 {
            prev_mask = 0;
        } else {
            prev_mask = (prev_mask << (distance - 1)) & 7;
            if prev_mask != 0 {
                let b = buf[i + 4 - MASK_TO_BIT_NUM[prev_mask as usize] as usize];
                if !MASK_TO_ALLOWED[prev_mask as usize] || is_ms_byte(b) {
                    prev_pos = i;
                    prev_mask = (prev_mask << 1) | 1;
                    i += 1;
                    continue;
                }
            }
        }
        prev_pos = i;
        if is_ms_byte(buf[i + 4]) {
            let mut src = u32::from_le_bytes([buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4]]);
            let mut dest;
            loop {
                dest = src.wrapping_sub(start.wrapping_add(i as u32).wrapping_add(5));
                if prev_mask == 0 {
                    break;
                }
                let j = MASK_TO_BIT_NUM[prev_mask as usize] * 8;
                if !is_ms_byte((dest >> (24 - j)) as u8) {
                    break;
                }
                src = dest ^ ((1u32 << (32 - j)) - 1);
            }
            dest &= 0x01ff_ffff;
            dest |= 0u32.wrapping_sub(dest & 0x0100_0000);
            buf[i + 1..i + 5].copy_from_slice(&dest.to_le_bytes());
            i += 5;
        } else {
            prev_mask = (prev_mask << 1) | 1;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by `xz --format=xz --check=crc32 --x86 --lzma2=preset=6` from `bcj-x86.bin`; see
    /// `tests/fixtures/README.md`.
    const BCJ_XZ: &[u8] = include_bytes!("../../tests/fixtures/bcj-x86.bin.xz");
    const BCJ_RAW: &[u8] = include_bytes!("../../tests/fixtures/bcj-x86.bin");

    #[test]
    fn test_xz_with_x86_bcj_filter_matches_xz_utils() {
        let out = decompress(BCJ_XZ, usize::MAX).unwrap();
        assert_eq!(out.len(), BCJ_RAW.len());
        assert!(out == BCJ_RAW, "BCJ-decoded output differs from the original");
    }

    #[test]
    fn test_xz_detects_corruption_and_truncation() {
        let mut bad = BCJ_XZ.to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        assert!(decompress(&bad, usize::MAX).is_err());
        for cut in [0, 6, 11, 12, 13, 20, BCJ_XZ.len() / 2, BCJ_XZ.len() - 40] {
            assert!(decompress(&BCJ_XZ[..cut], usize::MAX).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn test_xz_rejects_bad_stream_header() {
        let mut bad = BCJ_XZ.to_vec();
        bad[7] ^= 0x01;
        assert!(matches!(
            decompress(&bad, usize::MAX),
            Err(DecompressError::Xz(XzError::HeaderCrc { what: "stream header" }))
        ));
    }

    #[test]
    fn test_varint_and_check_size() {
        let mut p = 0;
        assert_eq!(varint(&[0x80, 0x01], &mut p), Some(128));
        assert_eq!(p, 2);
        let mut p = 0;
        assert_eq!(varint(&[0xff; 12], &mut p), None);
        assert_eq!(check_size(1), 4);
        assert_eq!(check_size(4), 8);
        assert_eq!(check_size(10), 32);
    }

    #[test]
    fn test_bcj_x86_short_buffers_unchanged() {
        let mut b = [0xe8, 0, 0, 0];
        bcj_x86_decode(&mut b, 0);
        assert_eq!(b, [0xe8, 0, 0, 0]);
        // One call whose absolute target 0x105 maps back to relative 0x100.
        let mut call = [0xe8, 0x05, 0x01, 0x00, 0x00, 0x90, 0x90, 0x90, 0x90];
        bcj_x86_decode(&mut call, 0);
        assert_eq!(call, [0xe8, 0x00, 0x01, 0x00, 0x00, 0x90, 0x90, 0x90, 0x90]);
    }
}
