//! Content digests: `sha256:<64 lowercase hex>` values ([`Digest`]), readers that hash what passes
//! through them and check it against an expected digest and size ([`VerifyingReader`]), and
//! [`sha256_file`].
//!
//! Only sha256 is accepted: it is what OCI images and `docker save` archives use, and refusing
//! other algorithms is clearer than carrying code nobody exercises.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// A sha256 content digest, kept in its canonical text form `sha256:<64 lowercase hex>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// A string that is not a `sha256:<64 hex>` digest.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("bad digest {value:?}: {reason}")]
pub struct DigestParseError {
    /// The text that was given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Digest {
    /// Parses `sha256:<64 hex>`; upper-case hex is refused, as the OCI spec requires lower case.
    pub fn parse(value: &str) -> Result<Self, DigestParseError> {
        let bad = |reason| DigestParseError { value: value.to_owned(), reason };
        let (algorithm, hex) = value.split_once(':').ok_or_else(|| bad("expected sha256:<64 hex digits>"))?;
        if algorithm != "sha256" {
            return Err(bad("only sha256 digests are supported"));
        }
        Self::from_hex(hex).map_err(|e| DigestParseError { value: value.to_owned(), reason: e.reason })
    }

    /// Takes the bare 64 lowercase hex digits of a sha256 digest.
    pub fn from_hex(hex: &str) -> Result<Self, DigestParseError> {
        let bad = |reason| DigestParseError { value: hex.to_owned(), reason };
        if hex.len() != 64 {
            return Err(bad("a sha256 digest has 64 hex digits"));
        }
        if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad("a digest is lowercase hex digits only"));
        }
        Ok(Self { hex: hex.to_owned() })
    }

    /// The digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    fn from_hasher(hasher: Sha256) -> Self {
        Self { hex: hex::encode(hasher.finalize()) }
    }

    /// The 64 hex digits, without the `sha256:` prefix (the blob's file name in an OCI layout).
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Content that does not match what it was expected to be. Reaches callers of
/// [`VerifyingReader`] inside an [`io::Error`] of kind [`io::ErrorKind::InvalidData`]; get it back
/// with [`VerifyError::from_io`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The bytes hash to another digest.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the content was named by.
        expected: Digest,
        /// The digest of the bytes read.
        actual: Digest,
    },
    /// More or fewer bytes than the descriptor said.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The digest the content was named by.
        digest: Digest,
        /// The size the content was described with.
        expected: u64,
        /// The bytes read (so far, when there were too many).
        actual: u64,
    },
}

impl VerifyError {
    /// The verification failure inside an I/O error from a [`VerifyingReader`], if that is what it is.
    pub fn from_io(error: &io::Error) -> Option<&VerifyError> {
        error.get_ref().and_then(|inner| inner.downcast_ref::<VerifyError>())
    }
}

impl From<VerifyError> for io::Error {
    fn from(error: VerifyError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }
}

/// Hashes everything read through it; at end of input, checks the digest (and the size, when one
/// was given) and turns a mismatch into an error from `read` instead of the end of the stream.
///
/// A consumer that may stop before the end (a tar reader stops at the end-of-archive blocks, a
/// decompressor at the end of its frame) must call [`VerifyingReader::finish`], which drains the
/// rest and verifies; without it, a blob with trailing garbage would pass unverified.
#[derive(Debug)]
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    expected: Digest,
    expected_size: Option<u64>,
    read: u64,
    verified: bool,
}

impl<R: Read> VerifyingReader<R> {
    /// Checks `inner` against `expected`, and against `expected_size` bytes when given.
    pub fn new(inner: R, expected: Digest, expected_size: Option<u64>) -> Self {
        Self { inner, hasher: Sha256::new(), expected, expected_size, read: 0, verified: false }
    }

    /// The bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Reads to the end and verifies; returns the inner reader.
    pub fn finish(mut self) -> io::Result<R> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.inner)
    }

    fn verify(&mut self) -> Result<(), VerifyError> {
        if let Some(expected) = self.expected_size
            && expected != self.read
        {
            return Err(VerifyError::SizeMismatch { digest: self.expected.clone(), expected, actual: self.read });
        }
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if actual != self.expected {
            return Err(VerifyError::DigestMismatch { expected: self.expected.clone(), actual });
        }
        self.verified = true;
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.verified {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.verify()?;
            return Ok(0);
        }
        self.read += n as u64;
        if let Some(expected) = self.expected_size
            && self.read > expected
        {
            return Err(VerifyError::SizeMismatch { digest: self.expected.clone(), expected, actual: self.read }.into());
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A reader that hashes what passes through it, for content whose digest is learned rather than
/// checked (a tarball's identity).
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    /// Hashes what is read from `inner`.
    pub fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256::new(), read: 0 }
    }

    /// Reads to the end and returns the digest of everything read, and the byte count.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_hasher(self.hasher), self.read))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// The sha256 digest of a file's contents.
pub fn sha256_file(path: &Path) -> io::Result<Digest> {
    Ok(HashingReader::new(File::open(path)?).finish()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_displays_the_canonical_form() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::of_bytes(b""));
        assert_eq!(d.hex(), &EMPTY[7..]);
    }

    #[test]
    fn bad_digests_are_refused_naming_the_value() {
        for bad in [
            "sha512:abc",
            "e3b0c442",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:12",
        ] {
            let err = Digest::parse(bad).unwrap_err();
            assert_eq!(err.value, bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn verifying_reader_passes_matching_content() {
        let data = b"hello layer";
        let mut r = VerifyingReader::new(&data[..], Digest::of_bytes(data), Some(data.len() as u64));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn verifying_reader_reports_a_mismatch_at_the_end_naming_both_digests() {
        let expected = Digest::of_bytes(b"something else");
        let mut r = VerifyingReader::new(&b"hello"[..], expected.clone(), None);
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        let verify = VerifyError::from_io(&err).unwrap();
        assert_eq!(verify, &VerifyError::DigestMismatch { expected, actual: Digest::of_bytes(b"hello") });
        let text = err.to_string();
        assert!(text.contains(&Digest::of_bytes(b"hello").to_string()), "{text}");
    }

    #[test]
    fn verifying_reader_checks_the_size_both_ways() {
        let d = Digest::of_bytes(b"hello");
        let err = VerifyingReader::new(&b"hello"[..], d.clone(), Some(3)).finish().unwrap_err();
        assert!(matches!(VerifyError::from_io(&err), Some(VerifyError::SizeMismatch { expected: 3, .. })));
        let err = VerifyingReader::new(&b"hello"[..], d, Some(9)).finish().unwrap_err();
        assert!(matches!(VerifyError::from_io(&err), Some(VerifyError::SizeMismatch { expected: 9, actual: 5, .. })));
    }

    #[test]
    fn sha256_file_hashes_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap().to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
