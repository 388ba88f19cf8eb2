//! The newc ("new ASCII", magic `070701`) cpio format the Linux kernel unpacks as an initramfs:
//! a streaming [`NewcWriter`] and a strict [`read_newc`] reader.
//!
//! Each entry is a 110-byte ASCII header (the magic, then 13 fields of 8 hex digits: ino, mode,
//! uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check),
//! the NUL-terminated name, zero padding to a multiple of 4, the data (for a symlink: its target),
//! and zero padding to a multiple of 4 again. The archive ends with an entry named `TRAILER!!!`.
//!
//! The writer stamps every entry with owner root, mtime 0 and inode numbers counting up from
//! [`FIRST_INODE`] in the order entries are added, so the same calls give the same bytes.

use std::io::{self, Write};

/// The magic opening every newc header (no checksum variant).
pub const NEWC_MAGIC: &[u8; 6] = b"070701";
/// The name of the entry that ends an archive.
pub const TRAILER_NAME: &str = "TRAILER!!!";
/// The size of a newc header: the magic and 13 fields of 8 hex digits.
pub const HEADER_LEN: usize = 6 + 13 * 8;
/// The inode number given to the first entry written.
pub const FIRST_INODE: u32 = 1;
/// `finish` pads the whole archive with zeros to a multiple of this (the classic cpio block).
pub const ARCHIVE_BLOCK: u64 = 512;
/// Mode given to symlinks (permission bits of a symlink are not used by Linux).
pub const SYMLINK_PERMISSIONS: u32 = 0o777;

const S_IFMT: u32 = 0o170_000;
const S_IFSOCK: u32 = 0o140_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFREG: u32 = 0o100_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFIFO: u32 = 0o010_000;
const PERMISSION_BITS: u32 = 0o7777;

/// Errors from writing or reading a newc archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// An entry name was empty.
    #[error("empty entry name")]
    EmptyName,
    /// An entry name contained a NUL byte, which the format uses as terminator.
    #[error("entry name {name:?} contains a NUL byte")]
    NameContainsNul {
        /// The offending name.
        name: String,
    },
    /// An entry name was absolute; initramfs names are relative to the root.
    #[error("entry name {name:?} is absolute")]
    AbsoluteName {
        /// The offending name.
        name: String,
    },
    /// An entry name had an empty, `.` or `..` component.
    #[error("entry name {name:?} has an empty, `.` or `..` component")]
    BadComponent {
        /// The offending name.
        name: String,
    },
    /// An entry was named like the trailer.
    #[error("entry name {TRAILER_NAME:?} is reserved for the trailer")]
    ReservedName,
    /// Permission bits outside 0o7777 were given.
    #[error("permissions {mode:#o} of {name:?} are outside 0o7777")]
    BadPermissions {
        /// The entry name.
        name: String,
        /// The mode given.
        mode: u32,
    },
    /// A symlink target was empty or contained a NUL byte.
    #[error("symlink {name:?} has an empty target or one containing NUL")]
    BadSymlinkTarget {
        /// The entry name.
        name: String,
    },
    /// Data larger than the 32-bit size field allows.
    #[error("{name:?} is {size} bytes, more than newc's 32-bit size field holds")]
    TooLarge {
        /// The entry name.
        name: String,
        /// Its size in bytes.
        size: u64,
    },
    /// More entries than 32-bit inode numbers allow.
    #[error("too many entries for 32-bit inode numbers")]
    TooManyEntries,
    /// Writing to the underlying writer failed.
    #[error("writing the archive")]
    Write(#[source] io::Error),
    /// The archive ended inside an entry.
    #[error("archive truncated at offset {offset}: {needed} more bytes needed")]
    Truncated {
        /// Where the missing bytes start.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// A header did not start with `070701`.
    #[error("bad magic {found:?} at offset {offset}")]
    BadMagic {
        /// Where the header starts.
        offset: usize,
        /// The six bytes found, lossily decoded.
        found: String,
    },
    /// A header field was not 8 hex digits.
    #[error("header field {field} at offset {offset} is not hex: {text:?}")]
    BadField {
        /// Where the header starts.
        offset: usize,
        /// The field's name.
        field: &'static str,
        /// Its text, lossily decoded.
        text: String,
    },
    /// A name's size field was 0 or its last byte was not NUL.
    #[error("name of the entry at offset {offset} is not NUL-terminated")]
    NameNotTerminated {
        /// Where the header starts.
        offset: usize,
    },
    /// A name was not UTF-8.
    #[error("name of the entry at offset {offset} is not UTF-8")]
    NonUtf8Name {
        /// Where the header starts.
        offset: usize,
    },
    /// The data ended without a `TRAILER!!!` entry.
    #[error("archive has no {TRAILER_NAME} entry")]
    MissingTrailer,
    /// Non-zero bytes followed the trailer.
    #[error("non-zero data after the trailer at offset {offset}")]
    TrailingData {
        /// The first non-zero byte.
        offset: usize,
    },
}

/// What an entry is, from the file type bits of its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file.
    File,
    /// A symbolic link; its data is the target.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// File type bits that name no known type.
    Unknown(u32),
}

/// One entry read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path, without the terminating NUL.
    pub name: String,
    /// Inode number.
    pub ino: u32,
    /// File type and permission bits.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u32,
    /// Major number of the device holding the file.
    pub dev_major: u32,
    /// Minor number of the device holding the file.
    pub dev_minor: u32,
    /// Major number of a device node.
    pub rdev_major: u32,
    /// Minor number of a device node.
    pub rdev_minor: u32,
    /// The contents (for a symlink: the target).
    pub data: Vec<u8>,
}

impl Entry {
    /// The entry's type.
    pub fn kind(&self) -> EntryKind {
        match self.mode & S_IFMT {
            S_IFDIR => EntryKind::Directory,
            S_IFREG => EntryKind::File,
            S_IFLNK => EntryKind::Symlink,
            S_IFCHR => EntryKind::CharDevice,
            S_IFBLK => EntryKind::BlockDevice,
            S_IFIFO => EntryKind::Fifo,
            S_IFSOCK => EntryKind::Socket,
            other => EntryKind::Unknown(other),
        }
    }

    /// The permission bits (including setuid, setgid and sticky).
    pub fn permissions(&self) -> u32 {
        self.mode & PERMISSION_BITS
    }

    /// The target of a symlink whose target is UTF-8; `None` for anything else.
    pub fn symlink_target(&self) -> Option<&str> {
        if self.kind() == EntryKind::Symlink { std::str::from_utf8(&self.data).ok() } else { None }
    }
}

/// Writes a newc archive entry by entry; [`NewcWriter::finish`] adds the trailer.
///
/// Callers give permission bits only; the writer adds the file type. Parent directories are
/// not created implicitly: add them first, as the kernel unpacks entries in order.
#[derive(Debug)]
pub struct NewcWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: Option<u32>,
}

impl<W: Write> NewcWriter<W> {
    /// A writer emitting into `out`.
    pub fn new(out: W) -> Self {
        Self { out, written: 0, next_ino: Some(FIRST_INODE) }
    }

    /// Adds a directory with the given permission bits.
    pub fn add_dir(&mut self, name: &str, permissions: u32) -> Result<(), CpioError> {
        check_permissions(name, permissions)?;
        self.add_entry(name, S_IFDIR | permissions, 2, (0, 0), &[])
    }

    /// Adds a regular file with the given permission bits and contents.
    pub fn add_file(&mut self, name: &str, permissions: u32, data: &[u8]) -> Result<(), CpioError> {
        check_permissions(name, permissions)?;
        self.add_entry(name, S_IFREG | permissions, 1, (0, 0), data)
    }

    /// Adds a symbolic link `name -> target`.
    pub fn add_symlink(&mut self, name: &str, target: &str) -> Result<(), CpioError> {
        if target.is_empty() || target.contains('\0') {
            return Err(CpioError::BadSymlinkTarget { name: name.to_owned() });
        }
        self.add_entry(name, S_IFLNK | SYMLINK_PERMISSIONS, 1, (0, 0), target.as_bytes())
    }

    /// Adds a character device node `major:minor` with the given permission bits.
    pub fn add_char_device(&mut self, name: &str, permissions: u32, major: u32, minor: u32) -> Result<(), CpioError> {
        check_permissions(name, permissions)?;
        self.add_entry(name, S_IFCHR | permissions, 1, (major, minor), &[])
    }

    /// Writes the trailer, pads the archive to [`ARCHIVE_BLOCK`] and returns the inner writer.
    pub fn finish(mut self) -> Result<W, CpioError> {
        self.write_header_and_name(TRAILER_NAME, 0, 0, 1, (0, 0), 0)?;
        let tail = (ARCHIVE_BLOCK - self.written % ARCHIVE_BLOCK) % ARCHIVE_BLOCK;
        self.write_zeros(tail as usize)?;
        self.out.flush().map_err(CpioError::Write)?;
        Ok(self.out)
    }

    fn add_entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) -> Result<(), CpioError> {
        check_name(name)?;
        let size = u32::try_from(data.len())
            .map_err(|_| CpioError::TooLarge { name: name.to_owned(), size: data.len() as u64 })?;
        let ino = self.next_ino.ok_or(CpioError::TooManyEntries)?;
        self.write_header_and_name(name, ino, mode, nlink, rdev, size)?;
        self.write_all(data)?;
        self.write_zeros(pad4(data.len()))?;
        self.next_ino = ino.checked_add(1);
        Ok(())
    }

    fn write_header_and_name(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        (rdev_major, rdev_minor): (u32, u32),
        size: u32,
    ) -> Result<(), CpioError> {
        let name_size = name.len() + 1;
        let fields: [u32; 13] = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            size,
            0, // devmajor
            0, // devminor
            rdev_major,
            rdev_minor,
            // check_name keeps names far below 4 GiB in practice; a name this long is a bug.
            u32::try_from(name_size)
                .map_err(|_| CpioError::TooLarge { name: name.to_owned(), size: name_size as u64 })?,
            0, // check
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + name_size);
        header.extend_from_slice(NEWC_MAGIC);
        for field in fields {
            header.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        let pad = pad4(header.len());
        header.resize(header.len() + pad, 0);
        self.write_all(&header)
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), CpioError> {
        self.out.write_all(bytes).map_err(CpioError::Write)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn write_zeros(&mut self, count: usize) -> Result<(), CpioError> {
        const ZEROS: [u8; ARCHIVE_BLOCK as usize] = [0; ARCHIVE_BLOCK as usize];
        let mut left = count;
        while left > 0 {
            let n = left.min(ZEROS.len());
            self.write_all(&ZEROS[..n])?;
            left -= n;
        }
        Ok(())
    }
}

/// Parses a whole newc archive, returning its entries in order, without the trailer.
///
/// Only zero bytes may follow the trailer.
pub fn read_newc(bytes: &[u8]) -> Result<Vec<Entry>, CpioError> {
    const FIELD_NAMES: [&str; 13] = [
        "ino",
        "mode",
        "uid",
        "gid",
        "nlink",
        "mtime",
        "filesize",
        "devmajor",
        "devminor",
        "rdevmajor",
        "rdevminor",
        "namesize",
        "check",
    ];
    let mut entries = Vec::new();
    let mut pos = 0usize;
    loop {
        let start = pos;
        if start == bytes.len() {
            return Err(CpioError::MissingTrailer);
        }
        let header = take(bytes, pos, HEADER_LEN)?;
        if &header[..6] != NEWC_MAGIC {
            return Err(CpioError::BadMagic {
                offset: start,
                found: String::from_utf8_lossy(&header[..6]).into_owned(),
            });
        }
        let mut fields = [0u32; 13];
        for (i, field) in fields.iter_mut().enumerate() {
            let text = &header[6 + i * 8..6 + (i + 1) * 8];
            *field = parse_hex(text).ok_or_else(|| CpioError::BadField {
                offset: start,
                field: FIELD_NAMES[i],
                text: String::from_utf8_lossy(text).into_owned(),
            })?;
        }
        let [
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            file_size,
            dev_major,
            dev_minor,
            rdev_major,
            rdev_minor,
            name_size,
            _check,
        ] = fields;
        pos += HEADER_LEN;
        let name_size = name_size as usize;
        let name_bytes = take(bytes, pos, name_size)?;
        let Some((&0, name_bytes)) = name_bytes.split_last() else {
            return Err(CpioError::NameNotTerminated { offset: start });
        };
        let name = std::str::from_utf8(name_bytes).map_err(|_| CpioError::NonUtf8Name { offset: start })?.to_owned();
        pos += name_size;
        pos += pad4(pos);
        if name == TRAILER_NAME {
            let rest = bytes.get(pos..).unwrap_or_default();
            if let Some(i) = rest.iter().position(|&b| b != 0) {
                return Err(CpioError::TrailingData { offset: pos + i });
            }
            return Ok(entries);
        }
        let data = take(bytes, pos, file_size as usize)?.to_vec();
        pos += data.len();
        pos += pad4(pos);
        entries.push(Entry {
            name,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            dev_major,
            dev_minor,
            rdev_major,
            rdev_minor,
            data,
        });
    }
}

fn take(bytes: &[u8], pos: usize, len: usize) -> Result<&[u8], CpioError> {
    let end = pos.checked_add(len);
    match end.and_then(|end| bytes.get(pos..end)) {
        Some(slice) => Ok(slice),
        None => Err(CpioError::Truncated {
            offset: pos.min(bytes.len()),
            needed: pos.saturating_add(len).saturating_sub(bytes.len()),
        }),
    }
}

fn parse_hex(text: &[u8]) -> Option<u32> {
    if !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(text).ok()?, 16).ok()
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn check_permissions(name: &str, mode: u32) -> Result<(), CpioError> {
    if mode & !PERMISSION_BITS != 0 {
        return Err(CpioError::BadPermissions { name: name.to_owned(), mode });
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), CpioError> {
    if name.is_empty() {
        return Err(CpioError::EmptyName);
    }
    if name.contains('\0') {
        return Err(CpioError::NameContainsNul { name: name.to_owned() });
    }
    if name == TRAILER_NAME {
        return Err(CpioError::ReservedName);
    }
    if name.starts_with('/') {
        return Err(CpioError::AbsoluteName { name: name.to_owned() });
    }
    if name.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Err(CpioError::BadComponent { name: name.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample_archive() -> Vec<u8> {
        let mut w = NewcWriter::new(Vec::new());
        w.add_dir("bin", 0o755).unwrap();
        w.add_dir("tmp", 0o1777).unwrap();
        w.add_file("init", 0o755, b"#!agent").unwrap();
        w.add_file("empty", 0o644, b"").unwrap();
        w.add_symlink("bin/sh", "/bin/busybox").unwrap();
        w.add_char_device("console", 0o600, 5, 1).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn test_writer_round_trips_every_kind() {
        let bytes = sample_archive();
        assert_eq!(bytes.len() as u64 % ARCHIVE_BLOCK, 0);
        let entries = read_newc(&bytes).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["bin", "tmp", "init", "empty", "bin/sh", "console"]);

        assert_eq!(entries[0].kind(), EntryKind::Directory);
        assert_eq!(entries[0].permissions(), 0o755);
        assert_eq!(entries[1].permissions(), 0o1777);
        assert_eq!(entries[2].kind(), EntryKind::File);
        assert_eq!(entries[2].data, b"#!agent");
        assert_eq!(entries[3].data, b"");
        assert_eq!(entries[4].kind(), EntryKind::Symlink);
        assert_eq!(entries[4].symlink_target(), Some("/bin/busybox"));
        assert_eq!(entries[2].symlink_target(), None);
        assert_eq!(entries[5].kind(), EntryKind::CharDevice);
        assert_eq!((entries[5].rdev_major, entries[5].rdev_minor), (5, 1));
        assert_eq!(entries[5].permissions(), 0o600);

        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.ino, FIRST_INODE + i as u32);
            assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0));
        }
    }

    #[test]
    fn test_writer_header_layout_is_newc() {
        let mut w = NewcWriter::new(Vec::new());
        w.add_file("ab", 0o644, b"xyz").unwrap();
        let bytes = w.finish().unwrap();
        let header = std::str::from_utf8(&bytes[..HEADER_LEN]).unwrap();
        assert_eq!(
            header,
            concat!(
                "070701", "00000001", "000081a4", "00000000", "00000000", "00000001", "00000000", "00000003",
                "00000000", "00000000", "00000000", "00000000", "00000003", "00000000"
            )
        );
        // 110 header + 3 name bytes = 113, padded to 116; data 3 bytes padded to 4.
        assert_eq!(&bytes[HEADER_LEN..116], b"ab\0\0\0\0");
        assert_eq!(&bytes[116..120], b"xyz\0");
        assert_eq!(&bytes[120..126], NEWC_MAGIC);
        let trailer_name = &bytes[120 + HEADER_LEN..120 + HEADER_LEN + 11];
        assert_eq!(trailer_name, b"TRAILER!!!\0");
    }

    #[test]
    fn test_writer_is_deterministic() {
        assert_eq!(sample_archive(), sample_archive());
    }

    #[test]
    fn test_writer_rejects_bad_names_and_modes() {
        let mut w = NewcWriter::new(Vec::new());
        assert!(matches!(w.add_dir("", 0o755), Err(CpioError::EmptyName)));
        assert!(matches!(w.add_dir("/abs", 0o755), Err(CpioError::AbsoluteName { .. })));
        assert!(matches!(w.add_dir("a/../b", 0o755), Err(CpioError::BadComponent { .. })));
        assert!(matches!(w.add_dir("a//b", 0o755), Err(CpioError::BadComponent { .. })));
        assert!(matches!(w.add_file("a\0b", 0o644, b""), Err(CpioError::NameContainsNul { .. })));
        assert!(matches!(w.add_file(TRAILER_NAME, 0o644, b""), Err(CpioError::ReservedName)));
        assert!(matches!(w.add_file("f", 0o100644, b""), Err(CpioError::BadPermissions { mode: 0o100644, .. })));
        assert!(matches!(w.add_symlink("l", ""), Err(CpioError::BadSymlinkTarget { .. })));
        // Nothing was written by the rejected calls.
        assert!(read_newc(&w.finish().unwrap()).unwrap().is_empty());
    }

    #[test]
    fn test_read_rejects_damaged_archives() {
        let bytes = sample_archive();
        let mut bad_magic = bytes.clone();
        bad_magic[5] = b'2';
        assert!(matches!(read_newc(&bad_magic), Err(CpioError::BadMagic { offset: 0, .. })));

        let mut bad_hex = bytes.clone();
        bad_hex[6] = b'g';
        assert!(matches!(read_newc(&bad_hex), Err(CpioError::BadField { field: "ino", .. })));

        assert!(matches!(read_newc(&bytes[..200]), Err(CpioError::Truncated { .. })));

        let mut no_trailer = NewcWriter::new(Vec::new());
        no_trailer.add_dir("d", 0o755).unwrap();
        assert!(matches!(read_newc(&no_trailer.out), Err(CpioError::MissingTrailer)));

        let mut trailing = bytes.clone();
        let last = trailing.len() - 1;
        trailing[last] = 1;
        assert!(matches!(
            read_newc(&trailing),
            Err(CpioError::TrailingData { offset }) if offset == last
        ));
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec("[^/\0]{1,12}", 1..4)
            .prop_filter("no dot components", |parts| parts.iter().all(|p| p != "." && p != ".."))
            .prop_map(|parts| parts.join("/"))
            .prop_filter("not the trailer", |n| n != TRAILER_NAME)
    }

    #[derive(Debug, Clone)]
    enum Spec {
        Dir(u32),
        File(u32, Vec<u8>),
        Link(String),
        Char(u32, u32, u32),
    }

    fn spec_strategy() -> impl Strategy<Value = Spec> {
        prop_oneof![
            (0u32..=0o7777).prop_map(Spec::Dir),
            (0u32..=0o7777, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(m, d)| Spec::File(m, d)),
            "[^\0]{1,40}".prop_map(Spec::Link),
            (0u32..=0o7777, any::<u32>(), any::<u32>()).prop_map(|(m, a, b)| Spec::Char(m, a, b)),
        ]
    }

    proptest! {
        #[test]
        fn test_round_trip_arbitrary_entries(
            items in proptest::collection::vec((name_strategy(), spec_strategy()), 0..20)
        ) {
            let mut w = NewcWriter::new(Vec::new());
            for (name, spec) in &items {
                match spec {
                    Spec::Dir(m) => w.add_dir(name, *m).unwrap(),
                    Spec::File(m, d) => w.add_file(name, *m, d).unwrap(),
                    Spec::Link(t) => w.add_symlink(name, t).unwrap(),
                    Spec::Char(m, a, b) => w.add_char_device(name, *m, *a, *b).unwrap(),
                }
            }
            let bytes = w.finish().unwrap();
            prop_assert_eq!(bytes.len() as u64 % ARCHIVE_BLOCK, 0);
            let entries = read_newc(&bytes).unwrap();
            prop_assert_eq!(entries.len(), items.len());
            for ((name, spec), entry) in items.iter().zip(&entries) {
                prop_assert_eq!(&entry.name, name);
                match spec {
                    Spec::Dir(m) => {
                        prop_assert_eq!(entry.kind(), EntryKind::Directory);
                        prop_assert_eq!(entry.permissions(), *m);
                    }
                    Spec::File(m, d) => {
                        prop_assert_eq!(entry.kind(), EntryKind::File);
                        prop_assert_eq!(entry.permissions(), *m);
                        prop_assert_eq!(&entry.data, d);
                    }
                    Spec::Link(t) => {
                        prop_assert_eq!(entry.symlink_target(), Some(t.as_str()));
                    }
                    Spec::Char(m, a, b) => {
                        prop_assert_eq!(entry.kind(), EntryKind::CharDevice);
                        prop_assert_eq!(entry.permissions(), *m);
                        prop_assert_eq!((entry.rdev_major, entry.rdev_minor), (*a, *b));
                    }
                }
            }
        }

        #[test]
        fn test_read_never_panics_on_damage(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = sample_archive();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let keep = cut.index(bytes.len() + 1);
            let _ = read_newc(&bytes[..keep]);
            let _ = read_newc(&bytes);
        }
    }
}
