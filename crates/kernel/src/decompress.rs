//! The compressed payload of a bzImage: format detection by magic and the decompressors.
//!
//! Formats are those Linux can build (`CONFIG_KERNEL_*`); each payload is the compressor's
//! stream followed by the 4-byte uncompressed size the kernel build appends (`size_append`),
//! which every decoder here must tolerate. LZ4 uses the legacy frame format (`lz4 -l`): a magic
//! then blocks of `[u32 LE compressed size][raw LZ4 block]`, each inflating to at most 8 MiB.
//! xz is parsed here (module `xz`) because kernels use the x86 BCJ filter, which `lzma-rs` lacks.

mod xz;

use std::fmt;
use std::io::{self, Read, Write};

pub use xz::XzError;

use crate::bytes::{head, slice, u32_le};

/// Most bytes a payload may inflate to; real kernels are tens of MiB.
pub const MAX_DECOMPRESSED_BYTES: usize = 512 << 20;
/// Magic of the legacy LZ4 format, little-endian.
pub const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Largest output of one legacy LZ4 block.
pub const LZ4_LEGACY_BLOCK_BYTES: usize = 8 << 20;
/// Largest compressed size of one legacy LZ4 block (`LZ4_compressBound` of 8 MiB).
const LZ4_LEGACY_MAX_COMPRESSED: usize = LZ4_LEGACY_BLOCK_BYTES + LZ4_LEGACY_BLOCK_BYTES / 255 + 16;
/// The uncompressed length the kernel build appends to the payload (`size_append`).
const SIZE_TRAILER_BYTES: usize = 4;
/// How many leading bytes an unknown-magic error shows.
const MAGIC_HEAD_BYTES: usize = 8;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
const LZMA_MAGIC: &[u8] = &[0x5d, 0, 0];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const BZIP2_MAGIC: &[u8] = b"BZh";
const LZO_MAGIC: &[u8] = &[0x89, b'L', b'Z', b'O'];

/// A kernel payload compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `CONFIG_KERNEL_GZIP`.
    Gzip,
    /// `CONFIG_KERNEL_XZ` (with the x86 BCJ filter).
    Xz,
    /// `CONFIG_KERNEL_LZMA` (`.lzma`, "lzma_alone").
    Lzma,
    /// `CONFIG_KERNEL_ZSTD`.
    Zstd,
    /// `CONFIG_KERNEL_LZ4` (legacy frame format).
    Lz4Legacy,
    /// `CONFIG_KERNEL_BZIP2` (detected, not supported).
    Bzip2,
    /// `CONFIG_KERNEL_LZO` (detected, not supported).
    Lzo,
}

impl Compression {
    /// The format whose magic `data` starts with.
    pub fn detect(data: &[u8]) -> Option<Self> {
        let formats = [
            (GZIP_MAGIC, Self::Gzip),
            (XZ_MAGIC, Self::Xz),
            (LZMA_MAGIC, Self::Lzma),
            (ZSTD_MAGIC, Self::Zstd),
            (&LZ4_LEGACY_MAGIC.to_le_bytes()[..], Self::Lz4Legacy),
            (BZIP2_MAGIC, Self::Bzip2),
            (LZO_MAGIC, Self::Lzo),
        ];
        formats.into_iter().find(|(magic, _)| data.starts_with(magic)).map(|(_, format)| format)
    }

    /// Lower-case name, as in `CONFIG_KERNEL_<NAME>`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Lzma => "lzma",
            Self::Zstd => "zstd",
            Self::Lz4Legacy => "lz4",
            Self::Bzip2 => "bzip2",
            Self::Lzo => "lzo",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a payload could not be decompressed.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    /// No known magic.
    #[error("unknown payload compression (starts with {})", hex::encode(.head))]
    UnknownMagic {
        /// The first bytes of the payload.
        head: Vec<u8>,
    },
    /// A format Linux supports but this crate does not decode.
    #[error("{format} compressed kernels are not supported (use gzip, xz, lzma, zstd or lz4)")]
    Unsupported {
        /// The detected format.
        format: Compression,
    },
    /// The output would exceed [`MAX_DECOMPRESSED_BYTES`].
    #[error("payload inflates past {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Corrupt gzip data.
    #[error("gzip payload is corrupt")]
    Gzip(#[source] io::Error),
    /// Bad zstd frame header.
    #[error("zstd frame header is invalid")]
    ZstdFrame(#[source] ruzstd::decoding::errors::FrameDecoderError),
    /// Corrupt zstd data.
    #[error("zstd payload is corrupt")]
    Zstd(#[source] io::Error),
    /// Corrupt lzma data.
    #[error("lzma payload is corrupt")]
    Lzma(#[source] lzma_rs::error::Error),
    /// Corrupt xz data.
    #[error("xz payload is corrupt")]
    Xz(#[source] XzError),
    /// A corrupt legacy LZ4 block.
    #[error("lz4 block at payload offset {offset} is corrupt")]
    Lz4Block {
        /// Offset of the block's size field in the payload.
        offset: usize,
        /// The decoder's complaint.
        #[source]
        source: lz4_flex::block::DecompressError,
    },
    /// The legacy LZ4 stream holds no plausible block.
    #[error("lz4 payload has no blocks")]
    Lz4NoBlocks,
}

/// Decompresses a kernel payload, detecting its format by magic.
pub fn decompress(data: &[u8]) -> Result<Vec<u8>, DecompressError> {
    decompress_limited(data, MAX_DECOMPRESSED_BYTES)
}

/// [`decompress`] with an explicit output limit.
pub fn decompress_limited(data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let format = Compression::detect(data)
        .ok_or_else(|| DecompressError::UnknownMagic { head: head(data, MAGIC_HEAD_BYTES) })?;
    match format {
        Compression::Gzip => {
            read_limited(flate2::read::GzDecoder::new(data), limit).map_err(|e| e.or(DecompressError::Gzip))
        }
        Compression::Zstd => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(data).map_err(DecompressError::ZstdFrame)?;
            read_limited(decoder, limit).map_err(|e| e.or(DecompressError::Zstd))
        }
        Compression::Lzma => {
            // lzma-rs refuses bytes after the end marker, so try without the kernel's appended
            // size first, then the whole input (a stream made by hand has no trailer).
            let stripped = data.len().checked_sub(SIZE_TRAILER_BYTES).map(|n| &data[..n]);
            match stripped.map(|s| lzma(s, limit)) {
                Some(Ok(out)) => Ok(out),
                Some(Err(e @ DecompressError::TooLarge { .. })) => Err(e),
                _ => lzma(data, limit),
            }
        }
        Compression::Xz => xz::decompress(data, limit),
        Compression::Lz4Legacy => lz4_legacy(data, limit),
        Compression::Bzip2 | Compression::Lzo => Err(DecompressError::Unsupported { format }),
    }
}

fn lzma(data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let mut out = LimitedWriter::new(limit);
    let mut input = data;
    match lzma_rs::lzma_decompress(&mut input, &mut out) {
        Ok(()) => Ok(out.buf),
        Err(_) if out.exceeded => Err(DecompressError::TooLarge { limit }),
        Err(e) => Err(DecompressError::Lzma(e)),
    }
}

/// Either the limit was hit or the reader failed.
enum ReadFailure {
    TooLarge(usize),
    Io(io::Error),
}

impl ReadFailure {
    fn or(self, wrap: impl FnOnce(io::Error) -> DecompressError) -> DecompressError {
        match self {
            Self::TooLarge(limit) => DecompressError::TooLarge { limit },
            Self::Io(e) => wrap(e),
        }
    }
}

fn read_limited(reader: impl Read, limit: usize) -> Result<Vec<u8>, ReadFailure> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut out).map_err(ReadFailure::Io)?;
    if out.len() > limit {
        return Err(ReadFailure::TooLarge(limit));
    }
    Ok(out)
}

/// A `Vec` sink that refuses to grow past a limit, remembering that it did.
struct LimitedWriter {
    buf: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl LimitedWriter {
    fn new(limit: usize) -> Self {
        Self { buf: Vec::new(), limit, exceeded: false }
    }
}

impl Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("output limit reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Legacy LZ4: blocks until the data ends or a size field is not a plausible block (the
/// kernel's appended length, or padding). A repeated magic starts a concatenated stream.
fn lz4_legacy(data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    let mut pos = LZ4_LEGACY_MAGIC.to_le_bytes().len();
    let mut blocks = 0usize;
    while let Some(size) = u32_le(data, pos) {
        if size == LZ4_LEGACY_MAGIC {
            pos += 4;
            continue;
        }
        let size = size as usize;
        if size == 0 || size > LZ4_LEGACY_MAX_COMPRESSED {
            break;
        }
        let Some(block) = slice(data, pos + 4, size) else {
            break;
        };
        let base = out.len();
        out.resize(base + LZ4_LEGACY_BLOCK_BYTES, 0);
        let written = lz4_flex::block::decompress_into(block, &mut out[base..])
            .map_err(|source| DecompressError::Lz4Block { offset: pos, source })?;
        out.truncate(base + written);
        if out.len() > limit {
            return Err(DecompressError::TooLarge { limit });
        }
        blocks += 1;
        pos += 4 + size;
    }
    if blocks == 0 {
        return Err(DecompressError::Lz4NoBlocks);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The kernel build appends the uncompressed length to every payload.
    pub(crate) fn size_appended(mut stream: Vec<u8>, len: usize) -> Vec<u8> {
        stream.extend_from_slice(&(len as u32).to_le_bytes());
        stream
    }

    /// Compresses `data` in `format` the way the kernel build lays it out.
    pub(crate) fn compress(format: Compression, data: &[u8]) -> Vec<u8> {
        let stream = match format {
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                enc.write_all(data).unwrap();
                enc.finish().unwrap()
            }
            Compression::Zstd => ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest),
            Compression::Lzma => {
                let mut out = Vec::new();
                lzma_rs::lzma_compress(&mut &data[..], &mut out).unwrap();
                out
            }
            Compression::Xz => {
                let mut out = Vec::new();
                lzma_rs::xz_compress(&mut &data[..], &mut out).unwrap();
                out
            }
            Compression::Lz4Legacy => lz4_legacy_compress(data, LZ4_LEGACY_BLOCK_BYTES),
            Compression::Bzip2 | Compression::Lzo => panic!("no encoder for {format}"),
        };
        size_appended(stream, data.len())
    }

    pub(crate) fn lz4_legacy_compress(data: &[u8], block_bytes: usize) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in data.chunks(block_bytes) {
            let block = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(block.len() as u32).to_le_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    fn sample() -> Vec<u8> {
        let mut data = Vec::new();
        for i in 0..20_000u32 {
            data.extend_from_slice(&(i % 251).to_le_bytes());
            data.extend_from_slice(b"nestbox");
        }
        data
    }

    const SUPPORTED: [Compression; 5] =
        [Compression::Gzip, Compression::Xz, Compression::Lzma, Compression::Zstd, Compression::Lz4Legacy];

    #[test]
    fn test_decompress_round_trips_every_format_with_appended_size() {
        let data = sample();
        for format in SUPPORTED {
            let packed = compress(format, &data);
            assert_eq!(Compression::detect(&packed), Some(format));
            let out = decompress(&packed).unwrap_or_else(|e| panic!("{format}: {e}"));
            assert_eq!(out, data, "{format}");
        }
    }

    #[test]
    fn test_decompress_enforces_output_limit() {
        let data = vec![0u8; 1 << 20];
        for format in SUPPORTED {
            let packed = compress(format, &data);
            let err = decompress_limited(&packed, 1000).unwrap_err();
            assert!(matches!(err, DecompressError::TooLarge { limit: 1000 }), "{format}: {err:?}");
        }
    }

    #[test]
    fn test_decompress_truncated_streams_fail_without_panic() {
        let data = sample();
        for format in SUPPORTED {
            let packed = compress(format, &data);
            for cut in [packed.len() / 2, 16, 7, 5] {
                let res = decompress(&packed[..cut]);
                // A cut LZ4 stream may still decode its leading blocks; others must fail.
                if format != Compression::Lz4Legacy {
                    assert!(res.is_err(), "{format} cut at {cut} decoded");
                } else if let Ok(out) = res {
                    assert!(out.len() < data.len());
                }
            }
        }
    }

    #[test]
    fn test_lz4_legacy_multiple_blocks_and_concatenated_magic() {
        let data = sample();
        let mut packed = lz4_legacy_compress(&data[..50_000], 10_000);
        // A second stream glued on, as `cat a.lz4 b.lz4` would.
        packed.extend(lz4_legacy_compress(&data[50_000..], 8_000));
        let packed = size_appended(packed, data.len());
        assert_eq!(decompress(&packed).unwrap(), data);
    }

    #[test]
    fn test_lz4_legacy_stops_at_implausible_size_and_rejects_corrupt_block() {
        let mut packed = lz4_legacy_compress(b"hello hello hello hello", 1 << 20);
        packed.extend_from_slice(&u32::MAX.to_le_bytes());
        packed.extend_from_slice(&[0xAA; 32]);
        assert_eq!(decompress(&packed).unwrap(), b"hello hello hello hello");

        let mut only_magic = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        only_magic.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(decompress(&only_magic), Err(DecompressError::Lz4NoBlocks)));

        let mut corrupt = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        corrupt.extend_from_slice(&4u32.to_le_bytes());
        corrupt.extend_from_slice(&[0xF0, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(decompress(&corrupt), Err(DecompressError::Lz4Block { offset: 4, .. })));
    }

    #[test]
    fn test_decompress_unknown_and_unsupported_magic() {
        let err = decompress(b"\x01\x02\x03\x04\x05\x06\x07\x08\x09").unwrap_err();
        assert!(matches!(&err, DecompressError::UnknownMagic { head } if head.len() == 8));
        assert!(err.to_string().contains("0102030405060708"), "{err}");
        assert!(matches!(decompress(b"BZh91AY&SY"), Err(DecompressError::Unsupported { format: Compression::Bzip2 })));
        assert!(matches!(decompress(b"\x89LZO\0"), Err(DecompressError::Unsupported { format: Compression::Lzo })));
        assert!(matches!(decompress(b""), Err(DecompressError::UnknownMagic { .. })));
    }
}
