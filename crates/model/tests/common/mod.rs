//! proptest strategies for valid `VmSpec`s and their parts, shared by the integration tests.
//!
//! Every string the model leaves free (paths, tags, TAP names, the command line) is drawn
//! from characters chosen to stress the `--device` syntax: `,` `=` `"` `\` spaces, tabs and
//! non-ASCII text. Every spec generated here must pass `VmSpec::validate`.

#![allow(dead_code)]

use std::collections::HashSet;
use std::path::PathBuf;

use nestbox_model::defaults::{
    MAX_CMDLINE_LEN, MAX_DEVICE_ID_LEN, MAX_FS_TAG_LEN, MAX_MEMORY_MIB, MAX_TAP_NAME_LEN, MAX_VCPUS, MIN_MEMORY_MIB,
    MIN_VSOCK_CID, VSOCK_CID_ANY,
};
use nestbox_model::{Boot, Device, VmSpec};
use proptest::prelude::*;

/// A character, often one the `--device` syntax treats specially.
pub fn awkward_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(vec![
            ',', '=', '"', '\\', ' ', '\t', '\'', '/', '.', '-', 'é', '☃', '😀', '\u{202e}',
        ]),
        3 => proptest::char::range('a', 'z'),
        1 => any::<char>(),
    ]
}

/// `min..=max` characters from [`awkward_char`] that pass `allowed`.
pub fn text(min: usize, max: usize, allowed: fn(&char) -> bool) -> impl Strategy<Value = String> {
    prop::collection::vec(awkward_char().prop_filter("allowed char", allowed), min..=max).prop_map(String::from_iter)
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
pub fn truncate_bytes(s: &mut String, max: usize) {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

fn not_nul(c: &char) -> bool {
    *c != '\0'
}

/// A non-empty path without NUL.
pub fn path() -> impl Strategy<Value = PathBuf> {
    text(1, 24, not_nul).prop_map(PathBuf::from)
}

pub fn device_id() -> impl Strategy<Value = String> {
    prop::string::string_regex(&format!("[A-Za-z0-9_-]{{1,{MAX_DEVICE_ID_LEN}}}")).expect("id regex")
}

fn tap_char(c: &char) -> bool {
    !matches!(c, '/' | ':' | '\0') && !c.is_whitespace()
}

pub fn tap() -> impl Strategy<Value = String> {
    text(1, MAX_TAP_NAME_LEN, tap_char)
        .prop_map(|mut s| {
            truncate_bytes(&mut s, MAX_TAP_NAME_LEN);
            s
        })
        .prop_filter("reserved name", |s| s != "." && s != "..")
}

pub fn fs_tag() -> impl Strategy<Value = String> {
    text(1, MAX_FS_TAG_LEN, not_nul).prop_map(|mut s| {
        truncate_bytes(&mut s, MAX_FS_TAG_LEN);
        s
    })
}

/// A unicast MAC in either case.
pub fn mac() -> impl Strategy<Value = String> {
    (any::<[u8; 6]>(), any::<bool>()).prop_map(|(mut b, upper)| {
        b[0] &= !1;
        let s = b.map(|x| format!("{x:02x}")).join(":");
        if upper { s.to_uppercase() } else { s }
    })
}

pub fn cmdline() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => text(0, 40, |c| !matches!(c, '\0' | '\n' | '\r')),
        1 => prop::string::string_regex(&format!("[ -~]{{{},{MAX_CMDLINE_LEN}}}", MAX_CMDLINE_LEN - 8))
            .expect("cmdline regex"),
    ]
}

pub fn boot() -> impl Strategy<Value = Boot> {
    prop_oneof![
        4 => (path(), prop::option::of(path()), cmdline()).prop_map(|(kernel, initrd, cmdline)| {
            Boot::Linux {
                kernel,
                initrd,
                cmdline,
            }
        }),
        1 => path().prop_map(|path| Boot::Firmware { path }),
    ]
}

/// Devices that may appear many times.
pub fn repeatable_device() -> impl Strategy<Value = Device> {
    prop_oneof![
        (device_id(), path(), any::<bool>()).prop_map(|(id, path, readonly)| Device::VirtioBlk { id, path, readonly }),
        (device_id(), tap(), prop::option::of(mac())).prop_map(|(id, tap, mac)| Device::VirtioNet { id, tap, mac }),
        (fs_tag(), path()).prop_map(|(tag, path)| Device::VirtioFs { tag, path }),
    ]
}

pub fn vsock() -> impl Strategy<Value = Device> {
    (prop_oneof![Just(MIN_VSOCK_CID), Just(VSOCK_CID_ANY - 1), MIN_VSOCK_CID..VSOCK_CID_ANY], prop::option::of(path()))
        .prop_map(|(cid, socket)| Device::Vsock { cid, socket })
}

pub fn balloon() -> impl Strategy<Value = Device> {
    (any::<bool>(), any::<bool>())
        .prop_map(|(deflate_on_oom, free_page_reporting)| Device::Balloon { deflate_on_oom, free_page_reporting })
}

/// Any device that is valid on its own.
pub fn device() -> impl Strategy<Value = Device> {
    prop_oneof![
        3 => repeatable_device(),
        1 => vsock(),
        1 => balloon(),
        1 => Just(Device::Rng),
    ]
}

/// Makes `s` differ from everything in `seen` by replacing its tail with a counter.
fn make_unique(s: &mut String, seen: &mut HashSet<String>, max: usize) {
    let base = s.clone();
    let mut n = 0u32;
    while seen.contains(s.as_str()) {
        let suffix = n.to_string();
        let mut candidate = base.clone();
        truncate_bytes(&mut candidate, max - suffix.len());
        candidate.push_str(&suffix);
        *s = candidate;
        n += 1;
    }
    seen.insert(s.clone());
}

/// A valid device list: ids, TAP names and tags unique, at most one vsock, balloon and rng,
/// in any order.
pub fn devices() -> impl Strategy<Value = Vec<Device>> {
    (
        prop::collection::vec(repeatable_device(), 0..6),
        prop::option::of(vsock()),
        prop::option::of(balloon()),
        prop::option::of(Just(Device::Rng)),
    )
        .prop_flat_map(|(mut devices, vsock, balloon, rng)| {
            devices.extend(vsock);
            devices.extend(balloon);
            devices.extend(rng);
            let (mut ids, mut taps, mut tags) = (HashSet::new(), HashSet::new(), HashSet::new());
            for device in &mut devices {
                match device {
                    Device::VirtioBlk { id, .. } => make_unique(id, &mut ids, MAX_DEVICE_ID_LEN),
                    Device::VirtioNet { id, tap, .. } => {
                        make_unique(id, &mut ids, MAX_DEVICE_ID_LEN);
                        make_unique(tap, &mut taps, MAX_TAP_NAME_LEN);
                    }
                    Device::VirtioFs { tag, .. } => make_unique(tag, &mut tags, MAX_FS_TAG_LEN),
                    Device::Vsock { .. } | Device::Balloon { .. } | Device::Rng => {}
                }
            }
            Just(devices).prop_shuffle()
        })
}

/// A valid `VmSpec`.
pub fn vm_spec() -> impl Strategy<Value = VmSpec> {
    (
        prop_oneof![Just(1u8), Just(MAX_VCPUS), 1..=MAX_VCPUS],
        prop_oneof![Just(MIN_MEMORY_MIB), Just(MAX_MEMORY_MIB), MIN_MEMORY_MIB..=MAX_MEMORY_MIB],
        boot(),
        devices(),
    )
        .prop_map(|(vcpus, memory_mib, boot, devices)| VmSpec { vcpus, memory_mib, boot, devices })
}
