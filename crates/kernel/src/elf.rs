//! ELF64 parsing for what direct boot needs: the header check and the Xen PVH entry note
//! (`XEN_ELFNOTE_PHYS32_ENTRY`, type 18, name "Xen") that QEMU and Firecracker jump to; plus
//! [`tiny_pvh_elf`], the smallest image such a loader accepts.
//!
//! Notes are looked up in `PT_NOTE` segments first (what loaders read), then in `SHT_NOTE`
//! sections. Each note is `namesz, descsz, type` (u32 LE) followed by the name and the
//! descriptor, both padded to the note alignment (4, or 8 when the segment says so).

use crate::KernelError;
use crate::bytes::{align_up, head, slice, u16_le, u32_le, u64_le};

/// The four bytes every ELF file starts with.
pub const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
/// Note type of the 32-bit PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Note name of the PVH entry note (without its NUL).
pub const PVH_NOTE_NAME: &[u8] = b"Xen";
/// Physical load address (1 MiB) of the code in [`tiny_pvh_elf`], which is also its PVH entry.
pub const TINY_ELF_LOAD_ADDR: u64 = 0x10_0000;
/// File offset (and segment alignment) of the code in [`tiny_pvh_elf`].
pub const TINY_ELF_CODE_OFFSET: usize = 0x1000;

const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u8 = 1;
const ET_EXEC: u16 = 2;
/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const SHDR_SIZE: usize = 64;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const SHT_NOTE: u32 = 7;
const PF_X: u32 = 1;
const PF_R: u32 = 4;
const NOTE_HEADER_SIZE: usize = 12;

/// Why an image is not a bootable PVH ELF.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    /// The ELF magic is missing.
    #[error("not an ELF file (starts with {})", hex::encode(.head))]
    NotElf {
        /// The first bytes found instead.
        head: Vec<u8>,
    },
    /// Only 64-bit little-endian ELF is bootable here.
    #[error("unsupported ELF class {class} / data encoding {data} (need ELF64 little-endian)")]
    UnsupportedClass {
        /// `EI_CLASS`.
        class: u8,
        /// `EI_DATA`.
        data: u8,
    },
    /// The PVH note is an x86 convention.
    #[error("ELF machine {machine} is not x86-64 ({EM_X86_64})")]
    WrongMachine {
        /// `e_machine`.
        machine: u16,
    },
    /// A header or table runs past the end of the file.
    #[error("truncated ELF: {what} needs {needed} bytes at offset {offset}, file has {len}")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// How many bytes it needs.
        needed: u64,
        /// The file length.
        len: usize,
    },
    /// No `XEN_ELFNOTE_PHYS32_ENTRY` note.
    #[error("no PVH entry note: the kernel lacks PVH boot support (CONFIG_PVH) and cannot be booted directly")]
    NoPvhNote,
    /// The note's descriptor is neither 4 nor 8 bytes.
    #[error("PVH note descriptor has {size} bytes (expected 4 or 8)")]
    BadPvhDescriptor {
        /// `descsz`.
        size: u32,
    },
    /// A 64-bit PVH entry above 4 GiB cannot be a 32-bit entry point.
    #[error("PVH entry {entry:#x} does not fit in 32 bits")]
    EntryOutOfRange {
        /// The value found.
        entry: u64,
    },
}

/// Whether `bytes` starts with the ELF magic.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(&ELF_MAGIC)
}

/// Checks that `bytes` is an ELF64 little-endian x86-64 file with a complete header.
pub fn check_header(bytes: &[u8]) -> Result<(), ElfError> {
    if !is_elf(bytes) {
        return Err(ElfError::NotElf { head: head(bytes, 8) });
    }
    if bytes.len() < EHDR_SIZE {
        return Err(truncated("ELF header", 0, EHDR_SIZE as u64, bytes));
    }
    let (class, data) = (bytes[4], bytes[5]);
    if class != ELFCLASS64 || data != ELFDATA2LSB {
        return Err(ElfError::UnsupportedClass { class, data });
    }
    let machine = u16_le(bytes, 18).unwrap_or_default();
    if machine != EM_X86_64 {
        return Err(ElfError::WrongMachine { machine });
    }
    Ok(())
}

/// The 32-bit PVH entry point of an ELF64 x86-64 kernel.
pub fn pvh_entry(elf: &[u8]) -> Result<u32, KernelError> {
    Ok(find_pvh_entry(elf)?)
}

/// [`pvh_entry`] with this module's error type.
pub fn find_pvh_entry(elf: &[u8]) -> Result<u32, ElfError> {
    check_header(elf)?;
    for (data, align) in note_regions(elf, PT_NOTE_REGIONS)?.into_iter().chain(note_regions(elf, SHT_NOTE_REGIONS)?) {
        if let Some(entry) = find_pvh_note(data, align)? {
            return Ok(entry);
        }
    }
    Err(ElfError::NoPvhNote)
}

/// A minimal ELF64 x86-64 executable: one `PT_LOAD` placing `code` at [`TINY_ELF_LOAD_ADDR`] and
/// one `PT_NOTE` with a Xen PVH entry note pointing at it. QEMU boots it with `-kernel`.
pub fn tiny_pvh_elf(code: &[u8]) -> Vec<u8> {
    let phoff = EHDR_SIZE;
    let note_off = phoff + 2 * PHDR_SIZE;
    let mut note = Vec::with_capacity(24);
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz: "Xen\0"
    note.extend_from_slice(&8u32.to_le_bytes()); // descsz: QEMU reads 8 bytes on ELF64
    note.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&TINY_ELF_LOAD_ADDR.to_le_bytes());

    let mut out = Vec::with_capacity(TINY_ELF_CODE_OFFSET + code.len());
    // e_ident
    out.extend_from_slice(&ELF_MAGIC);
    out.extend_from_slice(&[ELFCLASS64, ELFDATA2LSB, EV_CURRENT, 0]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&ET_EXEC.to_le_bytes());
    out.extend_from_slice(&EM_X86_64.to_le_bytes());
    out.extend_from_slice(&u32::from(EV_CURRENT).to_le_bytes());
    out.extend_from_slice(&TINY_ELF_LOAD_ADDR.to_le_bytes()); // e_entry
    out.extend_from_slice(&(phoff as u64).to_le_bytes()); // e_phoff
    out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    out.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes()); // e_phnum
    out.extend_from_slice(&(SHDR_SIZE as u16).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    out.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    debug_assert_eq!(out.len(), EHDR_SIZE);

    let code_len = code.len() as u64;
    push_phdr(&mut out, PT_LOAD, PF_R | PF_X, TINY_ELF_CODE_OFFSET as u64, TINY_ELF_LOAD_ADDR, code_len, 0x1000);
    push_phdr(&mut out, PT_NOTE, PF_R, note_off as u64, 0, note.len() as u64, 4);
    out.extend_from_slice(&note);
    out.resize(TINY_ELF_CODE_OFFSET, 0);
    out.extend_from_slice(code);
    out
}

fn push_phdr(out: &mut Vec<u8>, p_type: u32, flags: u32, offset: u64, addr: u64, size: u64, align: u64) {
    out.extend_from_slice(&p_type.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&addr.to_le_bytes()); // p_vaddr
    out.extend_from_slice(&addr.to_le_bytes()); // p_paddr
    out.extend_from_slice(&size.to_le_bytes()); // p_filesz
    out.extend_from_slice(&size.to_le_bytes()); // p_memsz
    out.extend_from_slice(&align.to_le_bytes());
}

/// How to walk one kind of header table looking for notes.
struct RegionTable {
    what: &'static str,
    table_offset_at: usize,
    count_at: usize,
    entry_size: usize,
    note_type: u32,
    /// Offsets, inside one entry, of: type (u32), file offset (u64), size (u64), alignment (u64).
    type_at: usize,
    offset_at: usize,
    size_at: usize,
    align_at: usize,
}

const PT_NOTE_REGIONS: &RegionTable = &RegionTable {
    what: "program header table",
    table_offset_at: 32,
    count_at: 56,
    entry_size: PHDR_SIZE,
    note_type: PT_NOTE,
    type_at: 0,
    offset_at: 8,
    size_at: 32,
    align_at: 48,
};

const SHT_NOTE_REGIONS: &RegionTable = &RegionTable {
    what: "section header table",
    table_offset_at: 40,
    count_at: 60,
    entry_size: SHDR_SIZE,
    note_type: SHT_NOTE,
    type_at: 4,
    offset_at: 24,
    size_at: 32,
    align_at: 48,
};

/// The note regions (bytes, note alignment) listed by one header table. Regions that run past
/// the end of the file are skipped; a table that does is an error.
fn note_regions<'a>(elf: &'a [u8], table: &RegionTable) -> Result<Vec<(&'a [u8], usize)>, ElfError> {
    let table_off = u64_le(elf, table.table_offset_at).unwrap_or_default();
    let count = u16_le(elf, table.count_at).unwrap_or_default();
    if table_off == 0 || count == 0 {
        return Ok(Vec::new());
    }
    let needed = u64::from(count) * table.entry_size as u64;
    let entries = usize::try_from(table_off)
        .ok()
        .and_then(|off| slice(elf, off, usize::try_from(needed).ok()?))
        .ok_or_else(|| truncated(table.what, table_off, needed, elf))?;
    let mut regions = Vec::new();
    for entry in entries.chunks_exact(table.entry_size) {
        if u32_le(entry, table.type_at) != Some(table.note_type) {
            continue;
        }
        let (Some(off), Some(size), Some(align)) =
            (u64_le(entry, table.offset_at), u64_le(entry, table.size_at), u64_le(entry, table.align_at))
        else {
            continue;
        };
        let region =
            usize::try_from(off).ok().zip(usize::try_from(size).ok()).and_then(|(off, size)| slice(elf, off, size));
        if let Some(region) = region {
            regions.push((region, if align == 8 { 8 } else { 4 }));
        }
    }
    Ok(regions)
}

/// Scans one note region for the PVH note. A malformed tail ends the scan.
fn find_pvh_note(mut data: &[u8], align: usize) -> Result<Option<u32>, ElfError> {
    while let (Some(namesz), Some(descsz), Some(note_type)) = (u32_le(data, 0), u32_le(data, 4), u32_le(data, 8)) {
        let Some(layout) = note_layout(namesz, descsz, align) else {
            return Ok(None);
        };
        let (desc_off, next) = layout;
        debug_assert!(desc_off >= NOTE_HEADER_SIZE);
        let Some(name) = slice(data, NOTE_HEADER_SIZE, namesz as usize) else {
            return Ok(None);
        };
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        if note_type == XEN_ELFNOTE_PHYS32_ENTRY && name == PVH_NOTE_NAME {
            let entry = match descsz {
                4 => u32_le(data, desc_off).map(u64::from),
                8 => u64_le(data, desc_off),
                size => return Err(ElfError::BadPvhDescriptor { size }),
            };
            let Some(entry) = entry else {
                return Ok(None);
            };
            return u32::try_from(entry).map(Some).map_err(|_| ElfError::EntryOutOfRange { entry });
        }
        match data.get(next..) {
            Some(rest) if next > 0 => data = rest,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Offsets of a note's descriptor and of the next note, `None` on overflow.
fn note_layout(namesz: u32, descsz: u32, align: usize) -> Option<(usize, usize)> {
    let desc_off = align_up(NOTE_HEADER_SIZE.checked_add(namesz as usize)?, align)?;
    let next = align_up(desc_off.checked_add(descsz as usize)?, align)?;
    Some((desc_off, next))
}

fn truncated(what: &'static str, offset: u64, needed: u64, bytes: &[u8]) -> ElfError {
    ElfError::Truncated { what, offset, needed, len: bytes.len() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF with one PT_NOTE holding the given notes (already laid out).
    fn elf_with_notes(notes: &[u8], align: u64) -> Vec<u8> {
        let mut elf = tiny_pvh_elf(&[0xf4]);
        let note_off = elf.len() as u64;
        elf.extend_from_slice(notes);
        // Rewrite the second program header (the PT_NOTE) to point at the new notes.
        let ph = EHDR_SIZE + PHDR_SIZE;
        elf[ph + 8..ph + 16].copy_from_slice(&note_off.to_le_bytes());
        elf[ph + 32..ph + 40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        elf[ph + 48..ph + 56].copy_from_slice(&align.to_le_bytes());
        elf
    }

    fn note(name: &[u8], note_type: u32, desc: &[u8], align: usize) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&note_type.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(align_up(n.len(), align).unwrap(), 0);
        n.extend_from_slice(desc);
        n.resize(align_up(n.len(), align).unwrap(), 0);
        n
    }

    #[test]
    fn test_tiny_pvh_elf_has_entry_at_load_address() {
        let elf = tiny_pvh_elf(&[0xfa, 0xf4]);
        assert_eq!(find_pvh_entry(&elf), Ok(TINY_ELF_LOAD_ADDR as u32));
        assert_eq!(&elf[TINY_ELF_CODE_OFFSET..], &[0xfa, 0xf4]);
        assert_eq!(u16_le(&elf, 18), Some(EM_X86_64));
        assert_eq!(u64_le(&elf, 24), Some(TINY_ELF_LOAD_ADDR));
        // PT_LOAD: offset and physical address.
        assert_eq!(u32_le(&elf, EHDR_SIZE), Some(PT_LOAD));
        assert_eq!(u64_le(&elf, EHDR_SIZE + 24), Some(TINY_ELF_LOAD_ADDR));
        assert_eq!(u64_le(&elf, EHDR_SIZE + 32), Some(2));
    }

    #[test]
    fn test_pvh_entry_skips_other_notes_and_reads_u32_descriptor() {
        let mut notes = note(b"GNU\0", 3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 4);
        notes.extend(note(b"Xen\0", 17, &0x1234u64.to_le_bytes(), 4));
        notes.extend(note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &0x0100_0abcu32.to_le_bytes(), 4));
        assert_eq!(find_pvh_entry(&elf_with_notes(&notes, 4)), Ok(0x0100_0abc));
    }

    #[test]
    fn test_pvh_entry_honours_eight_byte_note_alignment() {
        // A 5-byte name ("Xen\0\0" is not "Xen") pads to 8, so the next note is only found when
        // the scan uses the segment's 8-byte alignment.
        let mut all = note(b"Xen\0\0", XEN_ELFNOTE_PHYS32_ENTRY, &0x2000u64.to_le_bytes(), 8);
        all.extend(note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &0x3000u64.to_le_bytes(), 8));
        assert_eq!(find_pvh_entry(&elf_with_notes(&all, 8)), Ok(0x3000));
    }

    #[test]
    fn test_pvh_entry_rejects_elf_without_pvh_note() {
        let notes = note(b"GNU\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 8], 4);
        assert_eq!(find_pvh_entry(&elf_with_notes(&notes, 4)), Err(ElfError::NoPvhNote));
        let msg = ElfError::NoPvhNote.to_string();
        assert!(msg.contains("CONFIG_PVH"), "{msg}");
    }

    #[test]
    fn test_pvh_entry_rejects_large_entry_and_odd_descriptor() {
        let big = note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &(1u64 << 32).to_le_bytes(), 4);
        assert_eq!(find_pvh_entry(&elf_with_notes(&big, 4)), Err(ElfError::EntryOutOfRange { entry: 1 << 32 }));
        let odd = note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 2], 4);
        assert_eq!(find_pvh_entry(&elf_with_notes(&odd, 4)), Err(ElfError::BadPvhDescriptor { size: 2 }));
    }

    #[test]
    fn test_pvh_entry_truncated_note_is_not_found() {
        let mut notes = note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &0x2000u64.to_le_bytes(), 4);
        notes.truncate(notes.len() - 3);
        assert_eq!(find_pvh_entry(&elf_with_notes(&notes, 4)), Err(ElfError::NoPvhNote));
    }

    #[test]
    fn test_check_header_rejects_non_elf_and_wrong_kinds() {
        assert_eq!(check_header(b"MZ\x90\0"), Err(ElfError::NotElf { head: b"MZ\x90\0".to_vec() }));
        let elf = tiny_pvh_elf(&[]);
        assert!(matches!(check_header(&elf[..40]), Err(ElfError::Truncated { .. })));
        let mut class32 = elf.clone();
        class32[4] = 1;
        assert_eq!(check_header(&class32), Err(ElfError::UnsupportedClass { class: 1, data: 1 }));
        let mut arm = elf.clone();
        arm[18] = 183;
        assert_eq!(check_header(&arm), Err(ElfError::WrongMachine { machine: 183 }));
    }

    #[test]
    fn test_pvh_entry_reports_truncated_program_headers() {
        let elf = tiny_pvh_elf(&[0x90]);
        let err = find_pvh_entry(&elf[..100]).unwrap_err();
        assert!(matches!(err, ElfError::Truncated { what: "program header table", .. }), "{err}");
        for len in 0..elf.len() {
            let _ = find_pvh_entry(&elf[..len]);
        }
    }
}
