//! Parsing of the quantities users type: memory sizes, vCPU counts, durations, `KEY=VALUE`
//! environment variables and MAC addresses.
//!
//! Errors name the value but not the flag it came from; the CLI adds the flag. Numbers are
//! whole, unsigned decimal digits; a sign, a fraction or an unknown suffix is an error of its own.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::defaults::MAX_VCPUS;

/// A user-typed value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The value is empty.
    #[error("empty value")]
    Empty,
    /// The value starts with `-`.
    #[error("invalid value {value:?}: must not be negative")]
    Negative {
        /// The value given.
        value: String,
    },
    /// The value is zero, which means nothing here.
    #[error("invalid value {value:?}: must be greater than zero")]
    Zero {
        /// The value given.
        value: String,
    },
    /// The number has a fractional part (`1.5G`).
    #[error("invalid value {value:?}: must be a whole number")]
    Fractional {
        /// The value given.
        value: String,
    },
    /// The value does not start with a decimal digit.
    #[error("invalid value {value:?}: expected a number")]
    NotANumber {
        /// The value given.
        value: String,
    },
    /// The number does not fit.
    #[error("invalid value {value:?}: too large")]
    Overflow {
        /// The value given.
        value: String,
    },
    /// The number is above the largest allowed.
    #[error("invalid value {value:?}: must be at most {max}")]
    AboveMax {
        /// The value given.
        value: String,
        /// The largest allowed.
        max: u64,
    },
    /// A memory size that is not a whole number of MiB (`1500K`).
    #[error("invalid memory size {value:?}: not a whole number of MiB")]
    NotMibMultiple {
        /// The value given.
        value: String,
    },
    /// The unit after the number is not one this quantity takes.
    #[error("invalid value {value:?}: unknown suffix {suffix:?}")]
    UnknownSuffix {
        /// The value given.
        value: String,
        /// The suffix.
        suffix: String,
    },
    /// An environment variable without `=`.
    #[error("invalid environment variable {value:?}: expected KEY=VALUE")]
    EnvMissingEquals {
        /// The value given.
        value: String,
    },
    /// An environment variable with nothing before `=`.
    #[error("invalid environment variable {value:?}: empty name")]
    EnvEmptyKey {
        /// The value given.
        value: String,
    },
    /// An environment variable name outside `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid environment variable name {key:?}: must match [A-Za-z_][A-Za-z0-9_]*")]
    EnvBadKey {
        /// The name given.
        key: String,
    },
    /// An environment variable containing NUL, which `execve` cannot pass.
    #[error("invalid environment variable {value:?}: must not contain NUL")]
    EnvContainsNul {
        /// The value given.
        value: String,
    },
    /// A MAC address that is not six `xx:` hex pairs.
    #[error("invalid MAC address {value:?}: expected six hex pairs like 02:00:00:00:00:01")]
    MacMalformed {
        /// The value given.
        value: String,
    },
}

/// Splits `s` into its leading whole number and the suffix after it.
fn split_number(s: &str) -> Result<(u64, &str), ParseError> {
    let value = || s.to_owned();
    if s.is_empty() {
        return Err(ParseError::Empty);
    }
    if s.starts_with('-') {
        return Err(ParseError::Negative { value: value() });
    }
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return Err(ParseError::NotANumber { value: value() });
    }
    let (digits, suffix) = s.split_at(end);
    if suffix.strip_prefix('.').is_some_and(|frac| frac.starts_with(|c: char| c.is_ascii_digit())) {
        return Err(ParseError::Fractional { value: value() });
    }
    // Only digits are left, so the one way to fail is overflow.
    let n = digits.parse::<u64>().map_err(|_| ParseError::Overflow { value: value() })?;
    Ok((n, suffix))
}

/// Parses a memory size into MiB.
///
/// A bare number is MiB (`2048`). Suffixes are binary and case-insensitive: `K`/`KiB`,
/// `M`/`MiB`, `G`/`GiB`, `T`/`TiB` (so `1G` = `1GiB` = `1024`). Decimal units such as `MB`
/// are refused rather than guessed at. The size must be a positive whole number of MiB that
/// fits in a `u32`; the VM limits themselves are checked by [`crate::VmSpec::validate`].
pub fn parse_memory_mib(s: &str) -> Result<u32, ParseError> {
    let (n, suffix) = split_number(s)?;
    let kib_per_unit: u64 = match suffix.to_ascii_lowercase().as_str() {
        "k" | "kib" => 1,
        "" | "m" | "mib" => 1024,
        "g" | "gib" => 1024 * 1024,
        "t" | "tib" => 1024 * 1024 * 1024,
        _ => {
            return Err(ParseError::UnknownSuffix { value: s.to_owned(), suffix: suffix.to_owned() });
        }
    };
    if n == 0 {
        return Err(ParseError::Zero { value: s.to_owned() });
    }
    let kib = n.checked_mul(kib_per_unit).ok_or_else(|| ParseError::Overflow { value: s.to_owned() })?;
    if kib % 1024 != 0 {
        return Err(ParseError::NotMibMultiple { value: s.to_owned() });
    }
    u32::try_from(kib / 1024).map_err(|_| ParseError::Overflow { value: s.to_owned() })
}

/// Parses a vCPU count: a whole number from 1 to [`MAX_VCPUS`].
pub fn parse_vcpus(s: &str) -> Result<u8, ParseError> {
    let (n, suffix) = split_number(s)?;
    if !suffix.is_empty() {
        return Err(ParseError::UnknownSuffix { value: s.to_owned(), suffix: suffix.to_owned() });
    }
    if n == 0 {
        return Err(ParseError::Zero { value: s.to_owned() });
    }
    match u8::try_from(n) {
        Ok(v) if v <= MAX_VCPUS => Ok(v),
        _ => Err(ParseError::AboveMax { value: s.to_owned(), max: MAX_VCPUS.into() }),
    }
}

/// Parses a duration: `500ms`, `30s`, `2m`, `1h`, or a bare number of seconds.
///
/// Units are lower-case. Zero is refused: a timeout of zero would fire at once, and "no
/// timeout" is expressed by leaving the option out, not by `0`.
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let (n, suffix) = split_number(s)?;
    let overflow = || ParseError::Overflow { value: s.to_owned() };
    let duration = match suffix {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(overflow)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(overflow)?),
        _ => {
            return Err(ParseError::UnknownSuffix { value: s.to_owned(), suffix: suffix.to_owned() });
        }
    };
    if duration.is_zero() {
        return Err(ParseError::Zero { value: s.to_owned() });
    }
    Ok(duration)
}

/// An environment variable, written `KEY=VALUE`.
///
/// The key matches `[A-Za-z_][A-Za-z0-9_]*`; the value may be empty and may contain `=`
/// (everything after the first `=` is the value). Neither may contain NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvVar {
    /// The name.
    pub key: String,
    /// The value.
    pub value: String,
}

impl FromStr for EnvVar {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('\0') {
            return Err(ParseError::EnvContainsNul { value: s.to_owned() });
        }
        let Some((key, value)) = s.split_once('=') else {
            return Err(ParseError::EnvMissingEquals { value: s.to_owned() });
        };
        let mut chars = key.chars();
        let Some(first) = chars.next() else {
            return Err(ParseError::EnvEmptyKey { value: s.to_owned() });
        };
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if !(first.is_ascii_alphabetic() || first == '_') || !chars.all(word) {
            return Err(ParseError::EnvBadKey { key: key.to_owned() });
        }
        Ok(EnvVar { key: key.to_owned(), value: value.to_owned() })
    }
}

impl fmt::Display for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// A MAC address, written as six colon-separated hex pairs (`02:00:00:00:00:01`, either case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Whether this is a multicast (or broadcast) address: lowest bit of the first byte set.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl FromStr for MacAddr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || ParseError::MacMalformed { value: s.to_owned() };
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(malformed)?;
            // from_str_radix alone would take "+f" and "f"; insist on two hex digits.
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(malformed());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| malformed())?;
        }
        if parts.next().is_some() {
            return Err(malformed());
        }
        Ok(MacAddr(bytes))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> String {
        s.to_owned()
    }

    #[test]
    fn test_parse_memory_mib_accepts_units() {
        for (s, mib) in [
            ("512M", 512),
            ("512m", 512),
            ("512MiB", 512),
            ("512mib", 512),
            ("1G", 1024),
            ("1g", 1024),
            ("1GiB", 1024),
            ("2048", 2048),
            ("1048576K", 1024),
            ("1024KiB", 1),
            ("1T", 1024 * 1024),
            ("0512M", 512),
            ("4095T", 4095 * 1024 * 1024),
        ] {
            assert_eq!(parse_memory_mib(s), Ok(mib), "{s}");
        }
    }

    #[test]
    fn test_parse_memory_mib_rejects() {
        assert_eq!(parse_memory_mib(""), Err(ParseError::Empty));
        assert_eq!(parse_memory_mib("-512M"), Err(ParseError::Negative { value: v("-512M") }));
        assert_eq!(parse_memory_mib("0"), Err(ParseError::Zero { value: v("0") }));
        assert_eq!(parse_memory_mib("0G"), Err(ParseError::Zero { value: v("0G") }));
        assert_eq!(parse_memory_mib("1.5G"), Err(ParseError::Fractional { value: v("1.5G") }));
        assert_eq!(parse_memory_mib("4096T"), Err(ParseError::Overflow { value: v("4096T") }));
        assert_eq!(parse_memory_mib("4294967296"), Err(ParseError::Overflow { value: v("4294967296") }));
        assert_eq!(
            parse_memory_mib("99999999999999999999"),
            Err(ParseError::Overflow { value: v("99999999999999999999") })
        );
        assert_eq!(
            parse_memory_mib("18446744073709551615T"),
            Err(ParseError::Overflow { value: v("18446744073709551615T") })
        );
        assert_eq!(parse_memory_mib("1500K"), Err(ParseError::NotMibMultiple { value: v("1500K") }));
        for (s, suffix) in [("512MB", "MB"), ("1x", "x"), ("1 G", " G"), ("1.", ".")] {
            assert_eq!(parse_memory_mib(s), Err(ParseError::UnknownSuffix { value: v(s), suffix: v(suffix) }), "{s}");
        }
        for s in ["G", " 1G", "+1G", "abc"] {
            assert_eq!(parse_memory_mib(s), Err(ParseError::NotANumber { value: v(s) }), "{s}");
        }
    }

    #[test]
    fn test_parse_vcpus() {
        assert_eq!(parse_vcpus("1"), Ok(1));
        assert_eq!(parse_vcpus("254"), Ok(254));
        assert_eq!(parse_vcpus("255"), Err(ParseError::AboveMax { value: v("255"), max: 254 }));
        assert_eq!(parse_vcpus("100000"), Err(ParseError::AboveMax { value: v("100000"), max: 254 }));
        assert_eq!(parse_vcpus("0"), Err(ParseError::Zero { value: v("0") }));
        assert_eq!(parse_vcpus(""), Err(ParseError::Empty));
        assert_eq!(parse_vcpus("-1"), Err(ParseError::Negative { value: v("-1") }));
        assert_eq!(parse_vcpus("2x"), Err(ParseError::UnknownSuffix { value: v("2x"), suffix: v("x") }));
        assert_eq!(parse_vcpus("two"), Err(ParseError::NotANumber { value: v("two") }));
    }

    #[test]
    fn test_parse_duration() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Err(ParseError::Zero { value: v("0") }));
        assert_eq!(parse_duration("0ms"), Err(ParseError::Zero { value: v("0ms") }));
        assert_eq!(parse_duration("1H"), Err(ParseError::UnknownSuffix { value: v("1H"), suffix: v("H") }));
        assert_eq!(parse_duration("1d"), Err(ParseError::UnknownSuffix { value: v("1d"), suffix: v("d") }));
        assert_eq!(
            parse_duration("18446744073709551615h"),
            Err(ParseError::Overflow { value: v("18446744073709551615h") })
        );
        assert_eq!(parse_duration("1.5s"), Err(ParseError::Fractional { value: v("1.5s") }));
        assert_eq!(parse_duration("-1s"), Err(ParseError::Negative { value: v("-1s") }));
        assert_eq!(parse_duration(""), Err(ParseError::Empty));
    }

    #[test]
    fn test_env_var_parse() {
        let e: EnvVar = "PATH=/bin:/usr/bin".parse().unwrap();
        assert_eq!(e.key, "PATH");
        assert_eq!(e.value, "/bin:/usr/bin");
        let e: EnvVar = "_x1=a=b=".parse().unwrap();
        assert_eq!((e.key.as_str(), e.value.as_str()), ("_x1", "a=b="));
        let e: EnvVar = "EMPTY=".parse().unwrap();
        assert_eq!(e.value, "");
        assert_eq!(e.to_string(), "EMPTY=");
        assert_eq!("NOEQ".parse::<EnvVar>(), Err(ParseError::EnvMissingEquals { value: v("NOEQ") }));
        assert_eq!("=x".parse::<EnvVar>(), Err(ParseError::EnvEmptyKey { value: v("=x") }));
        for key in ["1A", "A-B", "É", "A B"] {
            assert_eq!(format!("{key}=1").parse::<EnvVar>(), Err(ParseError::EnvBadKey { key: v(key) }), "{key}");
        }
        assert_eq!("A=b\0c".parse::<EnvVar>(), Err(ParseError::EnvContainsNul { value: v("A=b\0c") }));
    }

    #[test]
    fn test_env_var_round_trip() {
        for s in ["A=", "A=b", "_=x=y", "LANG=C.UTF-8", "X= spaced value "] {
            let e: EnvVar = s.parse().unwrap();
            assert_eq!(e.to_string(), s);
        }
    }

    #[test]
    fn test_mac_addr() {
        let m: MacAddr = "02:00:00:00:AB:cd".parse().unwrap();
        assert_eq!(m, MacAddr([2, 0, 0, 0, 0xab, 0xcd]));
        assert_eq!(m.to_string(), "02:00:00:00:ab:cd");
        assert!(!m.is_multicast());
        assert!("01:00:00:00:00:00".parse::<MacAddr>().unwrap().is_multicast());
        for bad in ["", "02:00:00:00:00", "02:00:00:00:00:00:00", "+2:00:00:00:00:00"] {
            assert_eq!(bad.parse::<MacAddr>(), Err(ParseError::MacMalformed { value: v(bad) }));
        }
    }

    #[test]
    fn test_messages() {
        assert_eq!(
            parse_memory_mib("1500K").unwrap_err().to_string(),
            "invalid memory size \"1500K\": not a whole number of MiB"
        );
        assert_eq!(parse_vcpus("300").unwrap_err().to_string(), "invalid value \"300\": must be at most 254");
    }
}
