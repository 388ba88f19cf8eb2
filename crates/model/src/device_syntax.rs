//! The `--device` command-line syntax, as vfkit spells it: `TYPE[,KEY=VALUE|,FLAG]...`.
//!
//! ```text
//! virtio-blk,id=root,path=/var/x.img,readonly
//! virtio-net,id=net0,tap=tap0,mac=02:00:00:00:00:01
//! vsock,cid=3,socket=/run/v.sock
//! balloon,deflate-on-oom,free-page-reporting
//! rng
//! virtio-fs,tag=share,path=/srv
//! ```
//!
//! Rules, so that `d.to_string().parse() == Ok(d)` for every device whose paths are UTF-8:
//! - Keys may come in any order; [`Device`]'s `Display` writes them in the order above.
//! - A boolean flag is written bare when true and left out when false. On input, `flag=true`,
//!   `flag=on`, `flag=false` and `flag=off` are accepted too.
//! - A value runs to the next `,`. A value that contains `,` or `=`, or starts with `"`, is
//!   written in double quotes, with `\"` and `\\` as the only escapes. An empty value is
//!   written `key=`. Nothing is trimmed: spaces are part of the value.
//! - The syntax only checks shape; [`Device::validate`] checks ids, MACs, cids and so on.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::spec::Device;

/// A `--device` string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceParseError {
    /// The string is empty.
    #[error("empty device")]
    Empty,
    /// The device type is not one we know.
    #[error("unknown device type {kind:?}: expected one of {}", DEVICE_KINDS.join(", "))]
    UnknownType {
        /// The type given.
        kind: String,
    },
    /// The device type was written with a value (`rng=1`).
    #[error("device type {kind:?} given a value {value:?}")]
    TypeWithValue {
        /// The type given.
        kind: String,
        /// The value given.
        value: String,
    },
    /// An option with no key (`rng,` or `rng,=x`), at this byte offset.
    #[error("empty option at byte {offset}")]
    EmptyKey {
        /// Byte offset of the empty option in the input.
        offset: usize,
    },
    /// A key this device type does not take.
    #[error("{device} has no option {key:?}")]
    UnknownKey {
        /// The device type.
        device: &'static str,
        /// The key given.
        key: String,
    },
    /// A required key is missing.
    #[error("{device} needs {key}=")]
    MissingKey {
        /// The device type.
        device: &'static str,
        /// The missing key.
        key: &'static str,
    },
    /// A key given twice.
    #[error("{device} option {key:?} given twice")]
    DuplicateKey {
        /// The device type.
        device: &'static str,
        /// The key.
        key: String,
    },
    /// A key that takes a value written bare (`path` instead of `path=/x`).
    #[error("{device} option {key:?} needs a value")]
    MissingValue {
        /// The device type.
        device: &'static str,
        /// The key.
        key: &'static str,
    },
    /// A flag given a value that is not a boolean (`readonly=maybe`).
    #[error("{device} flag {key:?} given {value:?}: expected true, false, on or off")]
    BadBool {
        /// The device type.
        device: &'static str,
        /// The flag.
        key: &'static str,
        /// The value given.
        value: String,
    },
    /// A number that does not parse (`cid=x`).
    #[error("{device} option {key:?} given {value:?}: expected a whole number")]
    BadNumber {
        /// The device type.
        device: &'static str,
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
    },
    /// A quoted value with no closing quote.
    #[error("option {key:?}: unterminated quote")]
    UnterminatedQuote {
        /// The key.
        key: String,
    },
    /// A backslash in a quoted value followed by something other than `"` or `\`.
    #[error("option {key:?}: unknown escape \\{escape}")]
    BadEscape {
        /// The key.
        key: String,
        /// The character after the backslash.
        escape: char,
    },
    /// Text between a closing quote and the next `,`.
    #[error("option {key:?}: unexpected {rest:?} after closing quote")]
    TrailingAfterQuote {
        /// The key.
        key: String,
        /// What follows the quote.
        rest: String,
    },
}

/// Every device type the syntax knows, as written.
pub const DEVICE_KINDS: &[&str] = &["virtio-blk", "virtio-net", "vsock", "balloon", "rng", "virtio-fs"];

/// Whether a key takes a value or is a boolean flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Value,
    Flag,
}

/// The keys each device type takes, in the order `Display` writes them.
fn keys_of(device: &'static str) -> &'static [(&'static str, Shape)] {
    use Shape::{Flag, Value};
    match device {
        "virtio-blk" => &[("id", Value), ("path", Value), ("readonly", Flag)],
        "virtio-net" => &[("id", Value), ("tap", Value), ("mac", Value)],
        "vsock" => &[("cid", Value), ("socket", Value)],
        "balloon" => &[("deflate-on-oom", Flag), ("free-page-reporting", Flag)],
        "virtio-fs" => &[("tag", Value), ("path", Value)],
        _ => &[],
    }
}

/// One `key[=value]` option as written, value unquoted.
#[derive(Debug)]
struct RawOption {
    key: String,
    value: Option<String>,
}

/// Splits `s` into its type and options, undoing quotes.
fn tokenize(s: &str) -> Result<(&str, Vec<RawOption>), DeviceParseError> {
    if s.is_empty() {
        return Err(DeviceParseError::Empty);
    }
    let (kind, mut rest) = match s.split_once(',') {
        Some((kind, rest)) => (kind, Some(rest)),
        None => (s, None),
    };
    if let Some((kind, value)) = kind.split_once('=') {
        return Err(DeviceParseError::TypeWithValue { kind: kind.to_owned(), value: value.to_owned() });
    }
    let mut options = Vec::new();
    while let Some(r) = rest {
        let key_end = r.find([',', '=']).unwrap_or(r.len());
        let (key, after) = r.split_at(key_end);
        if key.is_empty() {
            return Err(DeviceParseError::EmptyKey { offset: s.len() - r.len() });
        }
        let Some(v) = after.strip_prefix('=') else {
            options.push(RawOption { key: key.to_owned(), value: None });
            rest = after.strip_prefix(',');
            continue;
        };
        let (value, tail) = if let Some(quoted) = v.strip_prefix('"') {
            let (value, tail) = unquote(key, quoted)?;
            if !(tail.is_empty() || tail.starts_with(',')) {
                return Err(DeviceParseError::TrailingAfterQuote {
                    key: key.to_owned(),
                    rest: tail.split(',').next().unwrap_or(tail).to_owned(),
                });
            }
            (value, tail)
        } else {
            let end = v.find(',').unwrap_or(v.len());
            (v[..end].to_owned(), &v[end..])
        };
        options.push(RawOption { key: key.to_owned(), value: Some(value) });
        rest = tail.strip_prefix(',');
    }
    Ok((kind, options))
}

/// Reads a quoted value whose opening quote is already consumed; returns it and what follows
/// the closing quote.
fn unquote<'a>(key: &str, s: &'a str) -> Result<(String, &'a str), DeviceParseError> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\'))) => value.push(e),
                Some((_, escape)) => {
                    return Err(DeviceParseError::BadEscape { key: key.to_owned(), escape });
                }
                None => break,
            },
            c => value.push(c),
        }
    }
    Err(DeviceParseError::UnterminatedQuote { key: key.to_owned() })
}

/// The options of one device, checked against the keys its type takes.
struct Options {
    device: &'static str,
    values: Vec<(&'static str, Option<String>)>,
}

impl Options {
    fn new(device: &'static str, raw: Vec<RawOption>) -> Result<Options, DeviceParseError> {
        let keys = keys_of(device);
        let mut values: Vec<(&'static str, Option<String>)> = Vec::new();
        for RawOption { key, value } in raw {
            let Some(&(known, shape)) = keys.iter().find(|(k, _)| *k == key) else {
                return Err(DeviceParseError::UnknownKey { device, key });
            };
            if values.iter().any(|(k, _)| *k == known) {
                return Err(DeviceParseError::DuplicateKey { device, key });
            }
            let value = match (shape, value) {
                (Shape::Value, None) => {
                    return Err(DeviceParseError::MissingValue { device, key: known });
                }
                (Shape::Value, Some(v)) => Some(v),
                (Shape::Flag, None) => Some("true".to_owned()),
                (Shape::Flag, Some(v)) => match v.as_str() {
                    "true" | "on" => Some("true".to_owned()),
                    "false" | "off" => None,
                    _ => {
                        return Err(DeviceParseError::BadBool { device, key: known, value: v });
                    }
                },
            };
            values.push((known, value));
        }
        Ok(Options { device, values })
    }

    fn optional(&mut self, key: &'static str) -> Option<String> {
        self.values.iter_mut().find(|(k, _)| *k == key).and_then(|(_, v)| v.take())
    }

    fn required(&mut self, key: &'static str) -> Result<String, DeviceParseError> {
        self.optional(key).ok_or(DeviceParseError::MissingKey { device: self.device, key })
    }

    fn flag(&mut self, key: &'static str) -> bool {
        self.optional(key).is_some()
    }

    fn number(&mut self, key: &'static str) -> Result<u32, DeviceParseError> {
        let value = self.required(key)?;
        // u32::from_str takes a leading '+'; the syntax does not.
        if value.starts_with('+') {
            return Err(self.bad_number(key, value));
        }
        value.parse().map_err(|_| self.bad_number(key, value))
    }

    fn bad_number(&self, key: &'static str, value: String) -> DeviceParseError {
        DeviceParseError::BadNumber { device: self.device, key, value }
    }
}

impl FromStr for Device {
    type Err = DeviceParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, raw) = tokenize(s)?;
        let Some(&device) = DEVICE_KINDS.iter().find(|k| **k == kind) else {
            return Err(DeviceParseError::UnknownType { kind: kind.to_owned() });
        };
        let mut o = Options::new(device, raw)?;
        Ok(match device {
            "virtio-blk" => Device::VirtioBlk {
                id: o.required("id")?,
                path: PathBuf::from(o.required("path")?),
                readonly: o.flag("readonly"),
            },
            "virtio-net" => {
                Device::VirtioNet { id: o.required("id")?, tap: o.required("tap")?, mac: o.optional("mac") }
            }
            "vsock" => Device::Vsock { cid: o.number("cid")?, socket: o.optional("socket").map(PathBuf::from) },
            "balloon" => Device::Balloon {
                deflate_on_oom: o.flag("deflate-on-oom"),
                free_page_reporting: o.flag("free-page-reporting"),
            },
            "virtio-fs" => Device::VirtioFs { tag: o.required("tag")?, path: PathBuf::from(o.required("path")?) },
            _ => Device::Rng,
        })
    }
}

/// Writes `,key=value`, quoting the value when it would not read back as itself.
fn write_value(f: &mut fmt::Formatter<'_>, key: &str, value: &str) -> fmt::Result {
    write!(f, ",{key}=")?;
    if value.contains([',', '=']) || value.starts_with('"') {
        f.write_str("\"")?;
        for c in value.chars() {
            if matches!(c, '"' | '\\') {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    } else {
        f.write_str(value)
    }
}

fn write_flag(f: &mut fmt::Formatter<'_>, key: &str, on: bool) -> fmt::Result {
    if on { write!(f, ",{key}") } else { Ok(()) }
}

/// Writes the `--device` form. Paths that are not UTF-8 are written lossily (and so do not
/// round-trip); [`Device::validate`] refuses them.
impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())?;
        match self {
            Device::VirtioBlk { id, path, readonly } => {
                write_value(f, "id", id)?;
                write_value(f, "path", &path.to_string_lossy())?;
                write_flag(f, "readonly", *readonly)
            }
            Device::VirtioNet { id, tap, mac } => {
                write_value(f, "id", id)?;
                write_value(f, "tap", tap)?;
                match mac {
                    Some(mac) => write_value(f, "mac", mac),
                    None => Ok(()),
                }
            }
            Device::Vsock { cid, socket } => {
                write_value(f, "cid", &cid.to_string())?;
                match socket {
                    Some(socket) => write_value(f, "socket", &socket.to_string_lossy()),
                    None => Ok(()),
                }
            }
            Device::Balloon { deflate_on_oom, free_page_reporting } => {
                write_flag(f, "deflate-on-oom", *deflate_on_oom)?;
                write_flag(f, "free-page-reporting", *free_page_reporting)
            }
            Device::Rng => Ok(()),
            Device::VirtioFs { tag, path } => {
                write_value(f, "tag", tag)?;
                write_value(f, "path", &path.to_string_lossy())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Device, DeviceParseError> {
        s.parse()
    }

    fn round_trip(d: &Device) {
        let s = d.to_string();
        assert_eq!(parse(&s).as_ref(), Ok(d), "{s}");
    }

    #[test]
    fn test_parse_examples() {
        assert_eq!(
            parse("virtio-blk,id=root,path=/var/x.img,readonly"),
            Ok(Device::VirtioBlk { id: "root".to_owned(), path: PathBuf::from("/var/x.img"), readonly: true })
        );
        assert_eq!(
            parse("virtio-net,id=net0,tap=tap0,mac=02:00:00:00:00:01"),
            Ok(Device::VirtioNet {
                id: "net0".to_owned(),
                tap: "tap0".to_owned(),
                mac: Some("02:00:00:00:00:01".to_owned())
            })
        );
        assert_eq!(
            parse("vsock,cid=3,socket=/run/v.sock"),
            Ok(Device::Vsock { cid: 3, socket: Some(PathBuf::from("/run/v.sock")) })
        );
        assert_eq!(
            parse("balloon,deflate-on-oom,free-page-reporting"),
            Ok(Device::Balloon { deflate_on_oom: true, free_page_reporting: true })
        );
        assert_eq!(parse("rng"), Ok(Device::Rng));
        assert_eq!(
            parse("virtio-fs,tag=share,path=/srv"),
            Ok(Device::VirtioFs { tag: "share".to_owned(), path: PathBuf::from("/srv") })
        );
    }

    #[test]
    fn test_display_is_canonical() {
        for s in [
            "virtio-blk,id=root,path=/var/x.img,readonly",
            "virtio-blk,id=root,path=/var/x.img",
            "virtio-net,id=net0,tap=tap0,mac=02:00:00:00:00:01",
            "virtio-net,id=net0,tap=tap0",
            "vsock,cid=3,socket=/run/v.sock",
            "vsock,cid=3",
            "balloon,deflate-on-oom,free-page-reporting",
            "balloon,free-page-reporting",
            "balloon",
            "rng",
            "virtio-fs,tag=share,path=/srv",
        ] {
            assert_eq!(parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn test_parse_any_key_order_and_explicit_bools() {
        assert_eq!(
            parse("virtio-blk,readonly=on,path=/x,id=a").unwrap().to_string(),
            "virtio-blk,id=a,path=/x,readonly"
        );
        assert_eq!(parse("virtio-blk,readonly=false,path=/x,id=a").unwrap().to_string(), "virtio-blk,id=a,path=/x");
        assert_eq!(
            parse("balloon,deflate-on-oom=true,free-page-reporting=off").unwrap(),
            Device::Balloon { deflate_on_oom: true, free_page_reporting: false }
        );
    }

    #[test]
    fn test_quoting() {
        let d = Device::VirtioBlk { id: "a".to_owned(), path: PathBuf::from("/x,y=z \"q\" \\"), readonly: false };
        assert_eq!(d.to_string(), r#"virtio-blk,id=a,path="/x,y=z \"q\" \\""#);
        round_trip(&d);
        // A quote that does not start the value is literal, so needs no quoting.
        let d = Device::VirtioFs { tag: "it's \"fine\"".to_owned(), path: PathBuf::from("/a\\b") };
        assert_eq!(d.to_string(), r#"virtio-fs,tag=it's "fine",path=/a\b"#);
        round_trip(&d);
        let d = Device::VirtioFs { tag: "\"".to_owned(), path: PathBuf::from("") };
        assert_eq!(d.to_string(), r#"virtio-fs,tag="\"",path="#);
        round_trip(&d);
        assert_eq!(
            parse(r#"virtio-fs,tag="",path="/srv""#),
            Ok(Device::VirtioFs { tag: String::new(), path: PathBuf::from("/srv") })
        );
        // Unquoted values may hold '=' on input; the canonical form quotes them.
        assert_eq!(parse("virtio-fs,tag=a=b,path=/srv").unwrap().to_string(), r#"virtio-fs,tag="a=b",path=/srv"#);
    }

    #[test]
    fn test_round_trip_awkward_values() {
        for s in ["", " ", "é☃", "a,b", "=", "\"", "\\", "\\\"", "\n\t", ",\"=\\"] {
            round_trip(&Device::VirtioNet { id: s.to_owned(), tap: s.to_owned(), mac: Some(s.to_owned()) });
            round_trip(&Device::Vsock { cid: 0, socket: Some(PathBuf::from(s)) });
        }
    }

    #[test]
    fn test_parse_errors() {
        use DeviceParseError as E;
        let cases: Vec<(&str, DeviceParseError)> = vec![
            ("", E::Empty),
            ("virtio-gpu,id=x", E::UnknownType { kind: "virtio-gpu".to_owned() }),
            (",rng", E::UnknownType { kind: String::new() }),
            ("rng=1", E::TypeWithValue { kind: "rng".to_owned(), value: "1".to_owned() }),
            ("rng,", E::EmptyKey { offset: 4 }),
            ("vsock,cid=3,,socket=/x", E::EmptyKey { offset: 12 }),
            ("vsock,=3", E::EmptyKey { offset: 6 }),
            ("rng,id=x", E::UnknownKey { device: "rng", key: "id".to_owned() }),
            ("virtio-blk,id=a,path=/x,ro", E::UnknownKey { device: "virtio-blk", key: "ro".to_owned() }),
            ("virtio-blk,id=a", E::MissingKey { device: "virtio-blk", key: "path" }),
            ("virtio-net,tap=t", E::MissingKey { device: "virtio-net", key: "id" }),
            ("vsock", E::MissingKey { device: "vsock", key: "cid" }),
            ("virtio-fs,path=/x", E::MissingKey { device: "virtio-fs", key: "tag" }),
            ("virtio-blk,id=a,id=b,path=/x", E::DuplicateKey { device: "virtio-blk", key: "id".to_owned() }),
            (
                "balloon,deflate-on-oom,deflate-on-oom=false",
                E::DuplicateKey { device: "balloon", key: "deflate-on-oom".to_owned() },
            ),
            ("virtio-blk,id=a,path", E::MissingValue { device: "virtio-blk", key: "path" }),
            (
                "virtio-blk,id=a,path=/x,readonly=yes",
                E::BadBool { device: "virtio-blk", key: "readonly", value: "yes".to_owned() },
            ),
            (
                "virtio-blk,id=a,path=/x,readonly=",
                E::BadBool { device: "virtio-blk", key: "readonly", value: String::new() },
            ),
            ("vsock,cid=three", E::BadNumber { device: "vsock", key: "cid", value: "three".to_owned() }),
            ("vsock,cid=+3", E::BadNumber { device: "vsock", key: "cid", value: "+3".to_owned() }),
            ("vsock,cid=4294967296", E::BadNumber { device: "vsock", key: "cid", value: "4294967296".to_owned() }),
            ("virtio-fs,tag=\"abc,path=/x", E::UnterminatedQuote { key: "tag".to_owned() }),
            ("virtio-fs,tag=\"abc\\", E::UnterminatedQuote { key: "tag".to_owned() }),
            ("virtio-fs,tag=\"a\\nb\",path=/x", E::BadEscape { key: "tag".to_owned(), escape: 'n' }),
            ("virtio-fs,tag=\"a\"b,path=/x", E::TrailingAfterQuote { key: "tag".to_owned(), rest: "b".to_owned() }),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn test_error_messages() {
        assert_eq!(parse("virtio-blk,id=a").unwrap_err().to_string(), "virtio-blk needs path=");
        assert_eq!(
            parse("gpu").unwrap_err().to_string(),
            "unknown device type \"gpu\": expected one of virtio-blk, virtio-net, vsock, balloon, rng, virtio-fs"
        );
    }
}
