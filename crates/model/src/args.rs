//! A whole [`VmSpec`] as command-line options, and back:
//!
//! ```text
//! --cpus N --memory NM --kernel P [--initrd P] [--cmdline S] [--device D]...
//! --cpus N --memory NM --firmware P [--device D]...
//! ```
//!
//! [`VmSpec::to_args`] writes one argument per flag and one per value, in the order above,
//! devices in spec order in the [`crate::device_syntax`] form; [`VmSpec::from_args`] reads
//! that back exactly, and also takes `--flag=value` and flags in any order. A missing `--cpus`
//! or `--memory` takes its default ([`DEFAULT_VCPUS`], [`DEFAULT_MEMORY_MIB`]); an empty
//! command line is left out. `from_args` checks syntax only: call [`VmSpec::validate`] after.

use std::fmt;
use std::path::PathBuf;

use crate::defaults::{DEFAULT_MEMORY_MIB, DEFAULT_VCPUS};
use crate::device_syntax::DeviceParseError;
use crate::parse::{ParseError, parse_memory_mib, parse_vcpus};
use crate::spec::{Boot, Device, VmSpec};

/// A flag of the `VmSpec` command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// `--cpus`
    Cpus,
    /// `--memory`
    Memory,
    /// `--kernel`
    Kernel,
    /// `--initrd`
    Initrd,
    /// `--cmdline`
    Cmdline,
    /// `--firmware`
    Firmware,
    /// `--device`
    Device,
}

impl Flag {
    /// Every flag.
    pub const ALL: [Flag; 7] =
        [Flag::Cpus, Flag::Memory, Flag::Kernel, Flag::Initrd, Flag::Cmdline, Flag::Firmware, Flag::Device];

    /// The flag as written, with its leading `--`.
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::Cpus => "--cpus",
            Flag::Memory => "--memory",
            Flag::Kernel => "--kernel",
            Flag::Initrd => "--initrd",
            Flag::Cmdline => "--cmdline",
            Flag::Firmware => "--firmware",
            Flag::Device => "--device",
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Command-line options that do not make a [`VmSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// An argument that is not a `--flag`.
    #[error("unexpected argument {arg:?}")]
    UnexpectedArgument {
        /// The argument.
        arg: String,
    },
    /// A `--flag` we do not know.
    #[error("unknown option {flag:?}")]
    UnknownFlag {
        /// The flag as given.
        flag: String,
    },
    /// A flag at the end with no value after it.
    #[error("{flag} needs a value")]
    MissingValue {
        /// The flag.
        flag: Flag,
    },
    /// A flag that may appear once, given twice.
    #[error("{flag} given twice")]
    DuplicateFlag {
        /// The flag.
        flag: Flag,
    },
    /// `--cpus` does not parse.
    #[error("invalid --cpus")]
    Cpus {
        /// Why.
        #[source]
        source: ParseError,
    },
    /// `--memory` does not parse.
    #[error("invalid --memory")]
    Memory {
        /// Why.
        #[source]
        source: ParseError,
    },
    /// A `--device` does not parse.
    #[error("invalid --device {value:?}")]
    Device {
        /// The value given.
        value: String,
        /// Why.
        #[source]
        source: DeviceParseError,
    },
    /// Neither `--kernel` nor `--firmware`.
    #[error("missing --kernel or --firmware")]
    MissingBoot,
    /// Both `--kernel` and `--firmware`.
    #[error("--kernel and --firmware cannot be used together")]
    ConflictingBoot,
    /// `--initrd` or `--cmdline` with `--firmware`.
    #[error("{flag} needs --kernel, not --firmware")]
    LinuxOptionWithFirmware {
        /// The flag.
        flag: Flag,
    },
}

impl VmSpec {
    /// The spec as command-line options; see the [module docs](crate::args) for the form.
    ///
    /// Memory is written in MiB with an `M` suffix. Paths that are not UTF-8 are written lossily
    /// (and so do not round-trip); [`VmSpec::validate`] refuses them.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            Flag::Cpus.to_string(),
            self.vcpus.to_string(),
            Flag::Memory.to_string(),
            format!("{}M", self.memory_mib),
        ];
        let mut push = |flag: Flag, value: String| {
            args.push(flag.to_string());
            args.push(value);
        };
        match &self.boot {
            Boot::Linux { kernel, initrd, cmdline } => {
                push(Flag::Kernel, kernel.to_string_lossy().into_owned());
                if let Some(initrd) = initrd {
                    push(Flag::Initrd, initrd.to_string_lossy().into_owned());
                }
                if !cmdline.is_empty() {
                    push(Flag::Cmdline, cmdline.clone());
                }
            }
            Boot::Firmware { path } => push(Flag::Firmware, path.to_string_lossy().into_owned()),
        }
        for device in &self.devices {
            push(Flag::Device, device.to_string());
        }
        args
    }

    /// Reads a spec from command-line options; see the [module docs](crate::args).
    pub fn from_args<S: AsRef<str>>(args: &[S]) -> Result<VmSpec, ArgsError> {
        let mut vcpus = None;
        let mut memory_mib = None;
        let mut kernel = None;
        let mut initrd = None;
        let mut cmdline = None;
        let mut firmware = None;
        let mut devices = Vec::new();

        let mut iter = args.iter().map(AsRef::as_ref);
        while let Some(arg) = iter.next() {
            if !arg.starts_with("--") {
                return Err(ArgsError::UnexpectedArgument { arg: arg.to_owned() });
            }
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (arg, None),
            };
            let Some(flag) = Flag::ALL.into_iter().find(|f| f.as_str() == name) else {
                return Err(ArgsError::UnknownFlag { flag: name.to_owned() });
            };
            let Some(value) = inline.or_else(|| iter.next()) else {
                return Err(ArgsError::MissingValue { flag });
            };
            let once = |given: bool| match given {
                true => Err(ArgsError::DuplicateFlag { flag }),
                false => Ok(()),
            };
            match flag {
                Flag::Cpus => {
                    once(vcpus.is_some())?;
                    vcpus = Some(parse_vcpus(value).map_err(|source| ArgsError::Cpus { source })?);
                }
                Flag::Memory => {
                    once(memory_mib.is_some())?;
                    memory_mib = Some(parse_memory_mib(value).map_err(|source| ArgsError::Memory { source })?);
                }
                Flag::Kernel => {
                    once(kernel.is_some())?;
                    kernel = Some(PathBuf::from(value));
                }
                Flag::Initrd => {
                    once(initrd.is_some())?;
                    initrd = Some(PathBuf::from(value));
                }
                Flag::Cmdline => {
                    once(cmdline.is_some())?;
                    cmdline = Some(value.to_owned());
                }
                Flag::Firmware => {
                    once(firmware.is_some())?;
                    firmware = Some(PathBuf::from(value));
                }
                Flag::Device => {
                    let device = value
                        .parse::<Device>()
                        .map_err(|source| ArgsError::Device { value: value.to_owned(), source })?;
                    devices.push(device);
                }
            }
        }

        let boot = match (kernel, firmware) {
            (Some(kernel), None) => Boot::Linux { kernel, initrd, cmdline: cmdline.unwrap_or_default() },
            (None, Some(path)) => {
                if initrd.is_some() {
                    return Err(ArgsError::LinuxOptionWithFirmware { flag: Flag::Initrd });
                }
                if cmdline.is_some() {
                    return Err(ArgsError::LinuxOptionWithFirmware { flag: Flag::Cmdline });
                }
                Boot::Firmware { path }
            }
            (Some(_), Some(_)) => return Err(ArgsError::ConflictingBoot),
            (None, None) => return Err(ArgsError::MissingBoot),
        };
        Ok(VmSpec {
            vcpus: vcpus.unwrap_or(DEFAULT_VCPUS),
            memory_mib: memory_mib.unwrap_or(DEFAULT_MEMORY_MIB),
            boot,
            devices,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| (*a).to_owned()).collect()
    }

    fn parse(s: &[&str]) -> Result<VmSpec, ArgsError> {
        VmSpec::from_args(s)
    }

    fn sample() -> VmSpec {
        VmSpec {
            vcpus: 2,
            memory_mib: 1024,
            boot: Boot::Linux {
                kernel: PathBuf::from("/boot/vmlinux"),
                initrd: Some(PathBuf::from("/boot/initrd")),
                cmdline: "console=ttyS0 root=/dev/vda".to_owned(),
            },
            devices: vec![
                Device::VirtioBlk { id: "root".to_owned(), path: PathBuf::from("/var/x,y.img"), readonly: true },
                Device::Rng,
            ],
        }
    }

    #[test]
    fn test_to_args_golden() {
        assert_eq!(
            sample().to_args(),
            args(&[
                "--cpus",
                "2",
                "--memory",
                "1024M",
                "--kernel",
                "/boot/vmlinux",
                "--initrd",
                "/boot/initrd",
                "--cmdline",
                "console=ttyS0 root=/dev/vda",
                "--device",
                "virtio-blk,id=root,path=\"/var/x,y.img\",readonly",
                "--device",
                "rng",
            ])
        );
        let fw = VmSpec { boot: Boot::Firmware { path: PathBuf::from("/fw.fd") }, devices: vec![], ..sample() };
        assert_eq!(fw.to_args(), args(&["--cpus", "2", "--memory", "1024M", "--firmware", "/fw.fd"]));
    }

    #[test]
    fn test_round_trip() {
        let s = sample();
        assert_eq!(VmSpec::from_args(&s.to_args()), Ok(s));
        let no_extras = VmSpec {
            boot: Boot::Linux { kernel: PathBuf::from("--cmdline"), initrd: None, cmdline: String::new() },
            ..sample()
        };
        assert_eq!(VmSpec::from_args(&no_extras.to_args()), Ok(no_extras));
    }

    #[test]
    fn test_from_args_defaults_and_forms() {
        assert_eq!(
            parse(&["--kernel=/k", "--device", "rng", "--memory=1G", "--device=balloon"]),
            Ok(VmSpec {
                vcpus: DEFAULT_VCPUS,
                memory_mib: 1024,
                boot: Boot::Linux { kernel: PathBuf::from("/k"), initrd: None, cmdline: String::new() },
                devices: vec![Device::Rng, Device::Balloon { deflate_on_oom: false, free_page_reporting: false }],
            })
        );
        let s = parse(&["--firmware", "/fw"]).unwrap();
        assert_eq!((s.vcpus, s.memory_mib), (DEFAULT_VCPUS, DEFAULT_MEMORY_MIB));
        // A value may itself look like a flag or hold '='.
        let s = parse(&["--kernel", "/k", "--cmdline", "--init=/sbin/init a=b"]).unwrap();
        assert_eq!(
            s.boot,
            Boot::Linux { kernel: PathBuf::from("/k"), initrd: None, cmdline: "--init=/sbin/init a=b".to_owned() }
        );
    }

    #[test]
    fn test_from_args_errors() {
        assert_eq!(parse(&["--kernel", "/k", "extra"]), Err(ArgsError::UnexpectedArgument { arg: "extra".to_owned() }));
        assert_eq!(
            parse(&["--kernel", "/k", "--gpus", "1"]),
            Err(ArgsError::UnknownFlag { flag: "--gpus".to_owned() })
        );
        assert_eq!(parse(&["--kernel"]), Err(ArgsError::MissingValue { flag: Flag::Kernel }));
        assert_eq!(
            parse(&["--kernel", "/k", "--cpus", "1", "--cpus=2"]),
            Err(ArgsError::DuplicateFlag { flag: Flag::Cpus })
        );
        assert_eq!(parse(&["--kernel", "/a", "--kernel", "/b"]), Err(ArgsError::DuplicateFlag { flag: Flag::Kernel }));
        assert_eq!(
            parse(&["--kernel", "/k", "--cpus", "0"]),
            Err(ArgsError::Cpus { source: ParseError::Zero { value: "0".to_owned() } })
        );
        assert_eq!(
            parse(&["--kernel", "/k", "--memory", "1500K"]),
            Err(ArgsError::Memory { source: ParseError::NotMibMultiple { value: "1500K".to_owned() } })
        );
        assert_eq!(
            parse(&["--kernel", "/k", "--device", "gpu"]),
            Err(ArgsError::Device {
                value: "gpu".to_owned(),
                source: DeviceParseError::UnknownType { kind: "gpu".to_owned() }
            })
        );
        assert_eq!(parse(&["--cpus", "1"]), Err(ArgsError::MissingBoot));
        assert_eq!(parse(&[]), Err(ArgsError::MissingBoot));
        assert_eq!(parse(&["--kernel", "/k", "--firmware", "/f"]), Err(ArgsError::ConflictingBoot));
        assert_eq!(
            parse(&["--firmware", "/f", "--initrd", "/i"]),
            Err(ArgsError::LinuxOptionWithFirmware { flag: Flag::Initrd })
        );
        assert_eq!(
            parse(&["--firmware", "/f", "--cmdline", ""]),
            Err(ArgsError::LinuxOptionWithFirmware { flag: Flag::Cmdline })
        );
    }

    #[test]
    fn test_error_messages_do_not_repeat_source() {
        let e = parse(&["--kernel", "/k", "--memory", "x"]).unwrap_err();
        assert_eq!(e.to_string(), "invalid --memory");
        assert_eq!(e.source().unwrap().to_string(), "invalid value \"x\": expected a number");
    }
}
