//! Validation of a [`VmSpec`]: one [`SpecError`] variant per rule, each naming the field and
//! carrying the bad value.
//!
//! Rules about one device live in [`Device::validate`]; rules across devices (unique ids, tap
//! names and tags, at most one vsock, balloon and rng) in [`VmSpec::validate`]. Fields are
//! named as in JSON, devices by their index: `devices[2].mac`. Validation does no I/O: it never
//! checks that a path exists, only that it can be handed to the host (non-empty, UTF-8, no NUL).

use std::path::{Path, PathBuf};

use crate::defaults::{
    MAX_CMDLINE_LEN, MAX_DEVICE_ID_LEN, MAX_FS_TAG_LEN, MAX_MEMORY_MIB, MAX_TAP_NAME_LEN, MAX_VCPUS, MIN_MEMORY_MIB,
    MIN_VSOCK_CID, VSOCK_CID_ANY,
};
use crate::parse::MacAddr;
use crate::spec::{Boot, Device, VmSpec};

/// A rule a [`VmSpec`] breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `vcpus` is 0.
    #[error("invalid vcpus 0: must be at least 1")]
    VcpusZero,
    /// `vcpus` is above [`MAX_VCPUS`].
    #[error("invalid vcpus {vcpus}: must be at most {MAX_VCPUS}")]
    VcpusTooMany {
        /// The value given.
        vcpus: u8,
    },
    /// `memory_mib` is below [`MIN_MEMORY_MIB`].
    #[error("invalid memory_mib {memory_mib}: must be at least {MIN_MEMORY_MIB}")]
    MemoryTooSmall {
        /// The value given.
        memory_mib: u32,
    },
    /// `memory_mib` is above [`MAX_MEMORY_MIB`].
    #[error("invalid memory_mib {memory_mib}: must be at most {MAX_MEMORY_MIB}")]
    MemoryTooLarge {
        /// The value given.
        memory_mib: u32,
    },
    /// A path (kernel, initrd, firmware, disk, socket, shared directory) is empty.
    #[error("invalid {field} \"\": must not be empty")]
    EmptyPath {
        /// The field, e.g. `boot.kernel` or `devices[1].path`.
        field: String,
    },
    /// A path is not valid UTF-8, so it cannot be written as a command-line option.
    #[error("invalid {field} {path:?}: must be valid UTF-8")]
    PathNotUtf8 {
        /// The field.
        field: String,
        /// The path given.
        path: PathBuf,
    },
    /// A path contains a NUL byte, which no system call accepts.
    #[error("invalid {field} {path:?}: must not contain NUL")]
    PathContainsNul {
        /// The field.
        field: String,
        /// The path given.
        path: PathBuf,
    },
    /// `boot.cmdline` is longer than [`MAX_CMDLINE_LEN`] bytes.
    #[error("invalid boot.cmdline of {len} bytes: must be at most {MAX_CMDLINE_LEN}")]
    CmdlineTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// `boot.cmdline` contains NUL, `\n` or `\r`.
    #[error("invalid boot.cmdline: {ch:?} at byte {offset} (NUL and line breaks are not allowed)")]
    CmdlineForbiddenChar {
        /// The character.
        ch: char,
        /// Its byte offset.
        offset: usize,
    },
    /// A device id is empty.
    #[error("invalid devices[{index}].id \"\": must not be empty")]
    EmptyDeviceId {
        /// The device's index.
        index: usize,
    },
    /// A device id is longer than [`MAX_DEVICE_ID_LEN`] bytes.
    #[error("invalid devices[{index}].id {id:?}: must be at most {MAX_DEVICE_ID_LEN} bytes")]
    DeviceIdTooLong {
        /// The device's index.
        index: usize,
        /// The id given.
        id: String,
    },
    /// A device id has a character outside `[A-Za-z0-9_-]`.
    #[error("invalid devices[{index}].id {id:?}: {ch:?} is not a letter, digit, '_' or '-'")]
    DeviceIdBadChar {
        /// The device's index.
        index: usize,
        /// The id given.
        id: String,
        /// The first bad character.
        ch: char,
    },
    /// Two devices share an id.
    #[error("invalid devices[{second}].id {id:?}: already used by devices[{first}]")]
    DuplicateDeviceId {
        /// The id.
        id: String,
        /// The index of the first device with it.
        first: usize,
        /// The index of the second.
        second: usize,
    },
    /// A MAC address is not six `xx:` hex pairs.
    #[error("invalid devices[{index}].mac {mac:?}: expected six hex pairs like 02:00:00:00:00:01")]
    MacMalformed {
        /// The device's index.
        index: usize,
        /// The MAC given.
        mac: String,
    },
    /// A MAC address is multicast (lowest bit of the first byte set).
    #[error("invalid devices[{index}].mac {mac:?}: must be unicast")]
    MacMulticast {
        /// The device's index.
        index: usize,
        /// The MAC given.
        mac: String,
    },
    /// A vsock context id is below [`MIN_VSOCK_CID`].
    #[error("invalid devices[{index}].cid {cid}: must be at least {MIN_VSOCK_CID}")]
    VsockCidTooSmall {
        /// The device's index.
        index: usize,
        /// The cid given.
        cid: u32,
    },
    /// A vsock context id is [`VSOCK_CID_ANY`].
    #[error("invalid devices[{index}].cid {cid}: reserved for VMADDR_CID_ANY")]
    VsockCidAny {
        /// The device's index.
        index: usize,
        /// The cid given.
        cid: u32,
    },
    /// More than one device of a kind that may appear once (vsock, balloon, rng).
    #[error("invalid devices[{second}]: only one {kind} is allowed, devices[{first}] is one")]
    DuplicateSingleton {
        /// The device kind, as the `--device` syntax spells it.
        kind: &'static str,
        /// The index of the first one.
        first: usize,
        /// The index of the second.
        second: usize,
    },
    /// A TAP name is empty.
    #[error("invalid devices[{index}].tap \"\": must not be empty")]
    EmptyTapName {
        /// The device's index.
        index: usize,
    },
    /// A TAP name is longer than [`MAX_TAP_NAME_LEN`] bytes.
    #[error("invalid devices[{index}].tap {tap:?}: must be at most {MAX_TAP_NAME_LEN} bytes")]
    TapNameTooLong {
        /// The device's index.
        index: usize,
        /// The name given.
        tap: String,
    },
    /// A TAP name contains `/`, `:`, whitespace or NUL, which Linux refuses in interface names.
    #[error("invalid devices[{index}].tap {tap:?}: must not contain {ch:?}")]
    TapNameBadChar {
        /// The device's index.
        index: usize,
        /// The name given.
        tap: String,
        /// The first bad character.
        ch: char,
    },
    /// A TAP name is `.` or `..`, which Linux refuses.
    #[error("invalid devices[{index}].tap {tap:?}: reserved name")]
    TapNameReserved {
        /// The device's index.
        index: usize,
        /// The name given.
        tap: String,
    },
    /// Two network devices use the same TAP.
    #[error("invalid devices[{second}].tap {tap:?}: already used by devices[{first}]")]
    DuplicateTapName {
        /// The name.
        tap: String,
        /// The index of the first device with it.
        first: usize,
        /// The index of the second.
        second: usize,
    },
    /// A virtio-fs tag is empty.
    #[error("invalid devices[{index}].tag \"\": must not be empty")]
    EmptyFsTag {
        /// The device's index.
        index: usize,
    },
    /// A virtio-fs tag is longer than [`MAX_FS_TAG_LEN`] bytes.
    #[error("invalid devices[{index}].tag {tag:?}: must be at most {MAX_FS_TAG_LEN} bytes")]
    FsTagTooLong {
        /// The device's index.
        index: usize,
        /// The tag given.
        tag: String,
    },
    /// A virtio-fs tag contains NUL, which would cut it short in config space.
    #[error("invalid devices[{index}].tag {tag:?}: must not contain NUL")]
    FsTagContainsNul {
        /// The device's index.
        index: usize,
        /// The tag given.
        tag: String,
    },
    /// Two shared directories use the same tag.
    #[error("invalid devices[{second}].tag {tag:?}: already used by devices[{first}]")]
    DuplicateFsTag {
        /// The tag.
        tag: String,
        /// The index of the first device with it.
        first: usize,
        /// The index of the second.
        second: usize,
    },
}

impl VmSpec {
    /// Checks every rule; returns the first one broken (see [`VmSpec::errors`] for all).
    pub fn validate(&self) -> Result<(), SpecError> {
        match self.errors().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every rule this spec breaks, in field order: vcpus, memory, boot, then devices.
    pub fn errors(&self) -> Vec<SpecError> {
        let mut errors = Vec::new();
        if self.vcpus == 0 {
            errors.push(SpecError::VcpusZero);
        } else if self.vcpus > MAX_VCPUS {
            errors.push(SpecError::VcpusTooMany { vcpus: self.vcpus });
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            errors.push(SpecError::MemoryTooSmall { memory_mib: self.memory_mib });
        } else if self.memory_mib > MAX_MEMORY_MIB {
            errors.push(SpecError::MemoryTooLarge { memory_mib: self.memory_mib });
        }
        errors.extend(self.boot.validate().err());
        for (index, device) in self.devices.iter().enumerate() {
            errors.extend(device.validate(index).err());
        }
        cross_device_errors(&self.devices, &mut errors);
        errors
    }
}

impl Boot {
    /// Checks the boot paths and the kernel command line.
    pub fn validate(&self) -> Result<(), SpecError> {
        match self {
            Boot::Linux { kernel, initrd, cmdline } => {
                check_path("boot.kernel", kernel)?;
                if let Some(initrd) = initrd {
                    check_path("boot.initrd", initrd)?;
                }
                check_cmdline(cmdline)
            }
            Boot::Firmware { path } => check_path("boot.path", path),
        }
    }
}

impl Device {
    /// Checks the rules that concern this device alone; `index` is its place in
    /// [`VmSpec::devices`], used to name the field in errors.
    pub fn validate(&self, index: usize) -> Result<(), SpecError> {
        match self {
            Device::VirtioBlk { id, path, .. } => {
                check_id(index, id)?;
                check_path(&format!("devices[{index}].path"), path)
            }
            Device::VirtioNet { id, tap, mac } => {
                check_id(index, id)?;
                check_tap(index, tap)?;
                match mac {
                    Some(mac) => check_mac(index, mac),
                    None => Ok(()),
                }
            }
            Device::Vsock { cid, socket } => {
                if *cid < MIN_VSOCK_CID {
                    return Err(SpecError::VsockCidTooSmall { index, cid: *cid });
                }
                if *cid == VSOCK_CID_ANY {
                    return Err(SpecError::VsockCidAny { index, cid: *cid });
                }
                match socket {
                    Some(socket) => check_path(&format!("devices[{index}].socket"), socket),
                    None => Ok(()),
                }
            }
            Device::Balloon { .. } | Device::Rng => Ok(()),
            Device::VirtioFs { tag, path } => {
                check_tag(index, tag)?;
                check_path(&format!("devices[{index}].path"), path)
            }
        }
    }
}

fn check_path(field: &str, path: &Path) -> Result<(), SpecError> {
    let os = path.as_os_str();
    if os.is_empty() {
        return Err(SpecError::EmptyPath { field: field.to_owned() });
    }
    if os.as_encoded_bytes().contains(&0) {
        return Err(SpecError::PathContainsNul { field: field.to_owned(), path: path.to_owned() });
    }
    if os.to_str().is_none() {
        return Err(SpecError::PathNotUtf8 { field: field.to_owned(), path: path.to_owned() });
    }
    Ok(())
}

fn check_cmdline(cmdline: &str) -> Result<(), SpecError> {
    if cmdline.len() > MAX_CMDLINE_LEN {
        return Err(SpecError::CmdlineTooLong { len: cmdline.len() });
    }
    match cmdline.char_indices().find(|(_, c)| matches!(c, '\0' | '\n' | '\r')) {
        Some((offset, ch)) => Err(SpecError::CmdlineForbiddenChar { ch, offset }),
        None => Ok(()),
    }
}

fn check_id(index: usize, id: &str) -> Result<(), SpecError> {
    if id.is_empty() {
        return Err(SpecError::EmptyDeviceId { index });
    }
    if id.len() > MAX_DEVICE_ID_LEN {
        return Err(SpecError::DeviceIdTooLong { index, id: id.to_owned() });
    }
    match id.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        Some(ch) => Err(SpecError::DeviceIdBadChar { index, id: id.to_owned(), ch }),
        None => Ok(()),
    }
}

fn check_tap(index: usize, tap: &str) -> Result<(), SpecError> {
    if tap.is_empty() {
        return Err(SpecError::EmptyTapName { index });
    }
    if tap.len() > MAX_TAP_NAME_LEN {
        return Err(SpecError::TapNameTooLong { index, tap: tap.to_owned() });
    }
    // The same characters the kernel's dev_valid_name() refuses.
    if let Some(ch) = tap.chars().find(|c| matches!(c, '/' | ':' | '\0') || c.is_whitespace()) {
        return Err(SpecError::TapNameBadChar { index, tap: tap.to_owned(), ch });
    }
    if tap == "." || tap == ".." {
        return Err(SpecError::TapNameReserved { index, tap: tap.to_owned() });
    }
    Ok(())
}

fn check_mac(index: usize, mac: &str) -> Result<(), SpecError> {
    let parsed: MacAddr = mac.parse().map_err(|_| SpecError::MacMalformed { index, mac: mac.to_owned() })?;
    if parsed.is_multicast() {
        return Err(SpecError::MacMulticast { index, mac: mac.to_owned() });
    }
    Ok(())
}

fn check_tag(index: usize, tag: &str) -> Result<(), SpecError> {
    if tag.is_empty() {
        return Err(SpecError::EmptyFsTag { index });
    }
    if tag.len() > MAX_FS_TAG_LEN {
        return Err(SpecError::FsTagTooLong { index, tag: tag.to_owned() });
    }
    if tag.contains('\0') {
        return Err(SpecError::FsTagContainsNul { index, tag: tag.to_owned() });
    }
    Ok(())
}

/// Unique ids, TAP names and tags; at most one vsock, balloon and rng.
fn cross_device_errors(devices: &[Device], errors: &mut Vec<SpecError>) {
    let mut ids: Vec<(&str, usize)> = Vec::new();
    let mut taps: Vec<(&str, usize)> = Vec::new();
    let mut tags: Vec<(&str, usize)> = Vec::new();
    let mut singletons: Vec<(&'static str, usize)> = Vec::new();
    for (index, device) in devices.iter().enumerate() {
        if let Some(id) = device.id() {
            match ids.iter().find(|(seen, _)| *seen == id) {
                Some(&(_, first)) => {
                    errors.push(SpecError::DuplicateDeviceId { id: id.to_owned(), first, second: index })
                }
                None => ids.push((id, index)),
            }
        }
        match device {
            Device::VirtioNet { tap, .. } => match taps.iter().find(|(seen, _)| seen == tap) {
                Some(&(_, first)) => {
                    errors.push(SpecError::DuplicateTapName { tap: tap.clone(), first, second: index })
                }
                None => taps.push((tap, index)),
            },
            Device::VirtioFs { tag, .. } => match tags.iter().find(|(seen, _)| seen == tag) {
                Some(&(_, first)) => errors.push(SpecError::DuplicateFsTag { tag: tag.clone(), first, second: index }),
                None => tags.push((tag, index)),
            },
            Device::Vsock { .. } | Device::Balloon { .. } | Device::Rng => {
                let kind = device.kind();
                match singletons.iter().find(|(seen, _)| *seen == kind) {
                    Some(&(_, first)) => errors.push(SpecError::DuplicateSingleton { kind, first, second: index }),
                    None => singletons.push((kind, index)),
                }
            }
            Device::VirtioBlk { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux() -> Boot {
        Boot::Linux {
            kernel: PathBuf::from("/boot/vmlinux"),
            initrd: Some(PathBuf::from("/boot/initrd.img")),
            cmdline: "console=ttyS0 quiet".to_owned(),
        }
    }

    fn spec(devices: Vec<Device>) -> VmSpec {
        VmSpec { vcpus: 2, memory_mib: 512, boot: linux(), devices }
    }

    fn blk(id: &str) -> Device {
        Device::VirtioBlk { id: id.to_owned(), path: PathBuf::from("/var/root.img"), readonly: false }
    }

    fn net(id: &str, tap: &str, mac: Option<&str>) -> Device {
        Device::VirtioNet { id: id.to_owned(), tap: tap.to_owned(), mac: mac.map(str::to_owned) }
    }

    fn fs(tag: &str) -> Device {
        Device::VirtioFs { tag: tag.to_owned(), path: PathBuf::from("/srv") }
    }

    fn vsock(cid: u32) -> Device {
        Device::Vsock { cid, socket: None }
    }

    fn balloon() -> Device {
        Device::Balloon { deflate_on_oom: true, free_page_reporting: false }
    }

    fn err(s: &VmSpec) -> SpecError {
        s.validate().expect_err("spec should be invalid")
    }

    #[test]
    fn test_validate_accepts_full_spec() {
        let s = spec(vec![
            blk("root"),
            net("net0", "tap0", Some("02:00:00:00:00:01")),
            vsock(3),
            balloon(),
            Device::Rng,
            fs("share"),
            Device::VirtioBlk { id: "A-z_9".to_owned(), path: PathBuf::from("/x"), readonly: true },
        ]);
        assert_eq!(s.validate(), Ok(()));
        assert!(s.errors().is_empty());
    }

    #[test]
    fn test_validate_vcpus_bounds() {
        let mut s = spec(vec![]);
        s.vcpus = 0;
        assert_eq!(err(&s), SpecError::VcpusZero);
        assert_eq!(err(&s).to_string(), "invalid vcpus 0: must be at least 1");
        s.vcpus = MAX_VCPUS;
        assert_eq!(s.validate(), Ok(()));
        s.vcpus = MAX_VCPUS + 1;
        assert_eq!(err(&s), SpecError::VcpusTooMany { vcpus: 255 });
        assert_eq!(err(&s).to_string(), "invalid vcpus 255: must be at most 254");
        s.vcpus = 1;
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn test_validate_memory_bounds() {
        let mut s = spec(vec![]);
        s.memory_mib = MIN_MEMORY_MIB - 1;
        assert_eq!(err(&s), SpecError::MemoryTooSmall { memory_mib: 63 });
        s.memory_mib = MIN_MEMORY_MIB;
        assert_eq!(s.validate(), Ok(()));
        s.memory_mib = MAX_MEMORY_MIB;
        assert_eq!(s.validate(), Ok(()));
        s.memory_mib = MAX_MEMORY_MIB + 1;
        assert_eq!(err(&s), SpecError::MemoryTooLarge { memory_mib: 1_048_577 });
        assert_eq!(err(&s).to_string(), "invalid memory_mib 1048577: must be at most 1048576");
    }

    #[test]
    fn test_validate_boot_paths() {
        let mut s = spec(vec![]);
        s.boot = Boot::Linux { kernel: PathBuf::new(), initrd: None, cmdline: String::new() };
        assert_eq!(err(&s), SpecError::EmptyPath { field: "boot.kernel".to_owned() });
        assert_eq!(err(&s).to_string(), "invalid boot.kernel \"\": must not be empty");
        s.boot =
            Boot::Linux { kernel: PathBuf::from("/k"), initrd: Some(PathBuf::from("/i\0x")), cmdline: String::new() };
        assert_eq!(
            err(&s),
            SpecError::PathContainsNul { field: "boot.initrd".to_owned(), path: PathBuf::from("/i\0x") }
        );
        s.boot = Boot::Firmware { path: PathBuf::new() };
        assert_eq!(err(&s), SpecError::EmptyPath { field: "boot.path".to_owned() });
        s.boot = Boot::Firmware { path: PathBuf::from("/fw.bin") };
        assert_eq!(s.validate(), Ok(()));
    }

    #[cfg(unix)]
    #[test]
    fn test_validate_path_not_utf8() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let bad = PathBuf::from(OsStr::from_bytes(b"/disk\xff.img"));
        let s = spec(vec![Device::VirtioBlk { id: "root".to_owned(), path: bad.clone(), readonly: false }]);
        assert_eq!(err(&s), SpecError::PathNotUtf8 { field: "devices[0].path".to_owned(), path: bad });
    }

    #[test]
    fn test_validate_cmdline() {
        let with = |cmdline: String| VmSpec {
            boot: Boot::Linux { kernel: PathBuf::from("/k"), initrd: None, cmdline },
            ..spec(vec![])
        };
        assert_eq!(with("a".repeat(MAX_CMDLINE_LEN)).validate(), Ok(()));
        assert_eq!(err(&with("a".repeat(MAX_CMDLINE_LEN + 1))), SpecError::CmdlineTooLong { len: 2049 });
        assert_eq!(
            err(&with("console=ttyS0\nquiet".to_owned())),
            SpecError::CmdlineForbiddenChar { ch: '\n', offset: 13 }
        );
        assert_eq!(err(&with("a\0".to_owned())), SpecError::CmdlineForbiddenChar { ch: '\0', offset: 1 });
        assert_eq!(with("é=\"x, y\"\t".to_owned()).validate(), Ok(()));
    }

    #[test]
    fn test_validate_device_ids() {
        assert_eq!(err(&spec(vec![blk("")])), SpecError::EmptyDeviceId { index: 0 });
        let long = "a".repeat(MAX_DEVICE_ID_LEN + 1);
        assert_eq!(
            err(&spec(vec![Device::Rng, blk(&long)])),
            SpecError::DeviceIdTooLong { index: 1, id: long.clone() }
        );
        assert_eq!(spec(vec![blk(&"a".repeat(MAX_DEVICE_ID_LEN))]).validate(), Ok(()));
        assert_eq!(
            err(&spec(vec![net("net.0", "tap0", None)])),
            SpecError::DeviceIdBadChar { index: 0, id: "net.0".to_owned(), ch: '.' }
        );
        assert_eq!(err(&spec(vec![blk("é")])), SpecError::DeviceIdBadChar { index: 0, id: "é".to_owned(), ch: 'é' });
        let e = err(&spec(vec![blk("x"), net("y", "tap0", None), net("x", "tap1", None)]));
        assert_eq!(e, SpecError::DuplicateDeviceId { id: "x".to_owned(), first: 0, second: 2 });
        assert_eq!(e.to_string(), "invalid devices[2].id \"x\": already used by devices[0]");
    }

    #[test]
    fn test_validate_mac() {
        let with = |mac: &str| spec(vec![net("n", "tap0", Some(mac))]);
        assert_eq!(with("02:00:00:00:00:01").validate(), Ok(()));
        assert_eq!(with("AA:bb:CC:dd:EE:ff").validate(), Ok(()));
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "02-00-00-00-00-01",
            "2:00:00:00:00:01",
            "02:00:00:00:00:0g",
            "02:00:00:00:00:001",
            "02:00:00:00:00:01:",
            "+2:00:00:00:00:01",
        ] {
            assert_eq!(err(&with(bad)), SpecError::MacMalformed { index: 0, mac: bad.to_owned() }, "{bad:?}");
        }
        assert_eq!(
            err(&with("01:00:5e:00:00:01")),
            SpecError::MacMulticast { index: 0, mac: "01:00:5e:00:00:01".to_owned() }
        );
        assert_eq!(
            err(&with("ff:ff:ff:ff:ff:ff")),
            SpecError::MacMulticast { index: 0, mac: "ff:ff:ff:ff:ff:ff".to_owned() }
        );
    }

    #[test]
    fn test_validate_vsock() {
        assert_eq!(err(&spec(vec![vsock(2)])), SpecError::VsockCidTooSmall { index: 0, cid: 2 });
        assert_eq!(spec(vec![vsock(MIN_VSOCK_CID)]).validate(), Ok(()));
        assert_eq!(spec(vec![vsock(u32::MAX - 1)]).validate(), Ok(()));
        assert_eq!(err(&spec(vec![vsock(u32::MAX)])), SpecError::VsockCidAny { index: 0, cid: u32::MAX });
        assert_eq!(
            err(&spec(vec![Device::Vsock { cid: 3, socket: Some(PathBuf::new()) }])),
            SpecError::EmptyPath { field: "devices[0].socket".to_owned() }
        );
    }

    #[test]
    fn test_validate_singletons() {
        for (d, kind) in [(vsock(3), "vsock"), (balloon(), "balloon"), (Device::Rng, "rng")] {
            let s = spec(vec![d.clone(), blk("a"), d.clone()]);
            assert_eq!(err(&s), SpecError::DuplicateSingleton { kind, first: 0, second: 2 });
        }
        // One of each is fine.
        assert_eq!(spec(vec![vsock(4), balloon(), Device::Rng]).validate(), Ok(()));
    }

    #[test]
    fn test_validate_tap() {
        assert_eq!(err(&spec(vec![net("n", "", None)])), SpecError::EmptyTapName { index: 0 });
        let long = "t".repeat(MAX_TAP_NAME_LEN + 1);
        assert_eq!(err(&spec(vec![net("n", &long, None)])), SpecError::TapNameTooLong { index: 0, tap: long.clone() });
        assert_eq!(spec(vec![net("n", &"t".repeat(MAX_TAP_NAME_LEN), None)]).validate(), Ok(()));
        // 8 two-byte characters: 16 bytes, 8 chars.
        assert!(matches!(err(&spec(vec![net("n", &"é".repeat(8), None)])), SpecError::TapNameTooLong { .. }));
        for (tap, ch) in [("tap/0", '/'), ("tap:0", ':'), ("tap 0", ' '), ("t\0", '\0')] {
            assert_eq!(
                err(&spec(vec![net("n", tap, None)])),
                SpecError::TapNameBadChar { index: 0, tap: tap.to_owned(), ch }
            );
        }
        assert_eq!(
            err(&spec(vec![net("n", "..", None)])),
            SpecError::TapNameReserved { index: 0, tap: "..".to_owned() }
        );
        assert_eq!(
            err(&spec(vec![net("a", "tap0", None), net("b", "tap0", None)])),
            SpecError::DuplicateTapName { tap: "tap0".to_owned(), first: 0, second: 1 }
        );
    }

    #[test]
    fn test_validate_fs_tag() {
        assert_eq!(err(&spec(vec![fs("")])), SpecError::EmptyFsTag { index: 0 });
        let long = "t".repeat(MAX_FS_TAG_LEN + 1);
        assert_eq!(err(&spec(vec![fs(&long)])), SpecError::FsTagTooLong { index: 0, tag: long.clone() });
        assert_eq!(spec(vec![fs(&"t".repeat(MAX_FS_TAG_LEN))]).validate(), Ok(()));
        assert_eq!(err(&spec(vec![fs("a\0b")])), SpecError::FsTagContainsNul { index: 0, tag: "a\0b".to_owned() });
        assert_eq!(
            err(&spec(vec![fs("x"), fs("x")])),
            SpecError::DuplicateFsTag { tag: "x".to_owned(), first: 0, second: 1 }
        );
        assert_eq!(
            err(&spec(vec![Device::VirtioFs { tag: "x".to_owned(), path: PathBuf::new() }])),
            SpecError::EmptyPath { field: "devices[0].path".to_owned() }
        );
    }

    #[test]
    fn test_errors_reports_every_rule_in_field_order() {
        let s = VmSpec {
            vcpus: 0,
            memory_mib: 1,
            boot: Boot::Firmware { path: PathBuf::new() },
            devices: vec![Device::Rng, Device::Rng, blk("")],
        };
        assert_eq!(
            s.errors(),
            vec![
                SpecError::VcpusZero,
                SpecError::MemoryTooSmall { memory_mib: 1 },
                SpecError::EmptyPath { field: "boot.path".to_owned() },
                SpecError::EmptyDeviceId { index: 2 },
                SpecError::DuplicateSingleton { kind: "rng", first: 0, second: 1 },
            ]
        );
        assert_eq!(s.validate(), Err(SpecError::VcpusZero));
    }

    #[test]
    fn test_messages_are_one_line() {
        let s = VmSpec {
            vcpus: 255,
            memory_mib: 1,
            boot: Boot::Linux { kernel: PathBuf::from("/k\0\n"), initrd: None, cmdline: "\n".to_owned() },
            devices: vec![net("a\nb", "t\n", Some("\n")), fs("\n\0")],
        };
        let errors = s.errors();
        assert!(errors.len() >= 4);
        for e in errors {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
