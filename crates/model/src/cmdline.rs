//! The guest kernel command line for direct boot: [`KernelCmdline`] builds it, checking
//! every word.
//!
//! The output is one line of space-separated words in a fixed order:
//!
//! ```text
//! console=ttyS0 reboot=k panic=1 root=/dev/vda rw init=/init
//! ip=172.16.0.2::172.16.0.1:255.255.255.252:nestbox:eth0:off nestbox.agent=vsock:1024 <extra…>
//! ```
//!
//! `reboot=k panic=1` are always there: a guest reboot goes through the keyboard controller,
//! which Firecracker and Cloud Hypervisor turn into a VM exit, and a panic reboots (so exits)
//! after one second instead of hanging. The network word is the kernel's static form
//! `ip=<client>:<server>:<gateway>:<netmask>:<hostname>:<device>:<autoconf>` (see the kernel's
//! `Documentation/admin-guide/nfs/nfsroot.rst`), with no server and autoconf `off`.
//!
//! Every word is printable ASCII without spaces or quotes, so the kernel splits the line
//! exactly where the builder joined it; addresses, hostname and device name are checked
//! against their own rules. Each rule has its own [`CmdlineError`] variant naming the field.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::defaults::{MAX_CMDLINE_LEN, MAX_TAP_NAME_LEN};

/// Words every command line carries: reboot through the keyboard controller, reboot one
/// second after a panic.
pub const FIXED_ARGS: &[&str] = &["reboot=k", "panic=1"];
/// Longest hostname label, in bytes (RFC 1123).
pub const MAX_HOSTNAME_LEN: usize = 63;
/// Longest interface name in the `ip=` word, in bytes (`IFNAMSIZ` - 1).
pub const MAX_NET_DEVICE_LEN: usize = MAX_TAP_NAME_LEN;

/// The guest's static IPv4 configuration, written as the kernel's `ip=` word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestIp {
    /// The guest's address.
    pub guest: Ipv4Addr,
    /// The default gateway (the host end of the TAP link).
    pub gateway: Ipv4Addr,
    /// The netmask, contiguous (`255.255.255.252`).
    pub netmask: Ipv4Addr,
    /// The guest's hostname, one RFC 1123 label.
    pub hostname: String,
    /// The guest interface to configure (`eth0`).
    pub device: String,
}

/// A rule a kernel command line breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// A value is empty.
    #[error("invalid {field} \"\": must not be empty")]
    Empty {
        /// The field, e.g. `console` or `args[2]`.
        field: String,
    },
    /// A value contains whitespace, which would split it into several words.
    #[error("invalid {field} {value:?}: must not contain whitespace")]
    Whitespace {
        /// The field.
        field: String,
        /// The value given.
        value: String,
    },
    /// A value contains NUL, which ends the command line.
    #[error("invalid {field} {value:?}: must not contain NUL")]
    Nul {
        /// The field.
        field: String,
        /// The value given.
        value: String,
    },
    /// A value contains `"`, which the kernel reads as quoting.
    #[error("invalid {field} {value:?}: must not contain '\"'")]
    Quote {
        /// The field.
        field: String,
        /// The value given.
        value: String,
    },
    /// A value has a control or non-ASCII character (the kernel treats some such bytes as spaces).
    #[error("invalid {field} {value:?}: {ch:?} is not printable ASCII")]
    NotPrintable {
        /// The field.
        field: String,
        /// The value given.
        value: String,
        /// The first such character.
        ch: char,
    },
    /// `init` is not an absolute path.
    #[error("invalid init {init:?}: must be an absolute path")]
    InitNotAbsolute {
        /// The value given.
        init: String,
    },
    /// The netmask's one bits are not contiguous from the top.
    #[error("invalid ip.netmask {netmask}: ones must be contiguous")]
    NetmaskNotContiguous {
        /// The netmask given.
        netmask: Ipv4Addr,
    },
    /// An address is unspecified, loopback, multicast or the limited broadcast.
    #[error("invalid {field} {addr}: must be a unicast address")]
    NotUnicast {
        /// `ip.guest` or `ip.gateway`.
        field: &'static str,
        /// The address given.
        addr: Ipv4Addr,
    },
    /// The guest and the gateway are the same address.
    #[error("invalid ip.gateway {addr}: same as ip.guest")]
    GatewayIsGuest {
        /// The address given to both.
        addr: Ipv4Addr,
    },
    /// The gateway is not in the guest's subnet.
    #[error("invalid ip.gateway {gateway}: outside the subnet of {guest} with netmask {netmask}")]
    GatewayOutsideSubnet {
        /// The guest address.
        guest: Ipv4Addr,
        /// The gateway given.
        gateway: Ipv4Addr,
        /// The netmask.
        netmask: Ipv4Addr,
    },
    /// An address is its subnet's network address (host bits all zero).
    #[error("invalid {field} {addr}: network address of its subnet (netmask {netmask})")]
    NetworkAddress {
        /// `ip.guest` or `ip.gateway`.
        field: &'static str,
        /// The address given.
        addr: Ipv4Addr,
        /// The netmask.
        netmask: Ipv4Addr,
    },
    /// An address is its subnet's broadcast address (host bits all one).
    #[error("invalid {field} {addr}: broadcast address of its subnet (netmask {netmask})")]
    BroadcastAddress {
        /// `ip.guest` or `ip.gateway`.
        field: &'static str,
        /// The address given.
        addr: Ipv4Addr,
        /// The netmask.
        netmask: Ipv4Addr,
    },
    /// The hostname is longer than [`MAX_HOSTNAME_LEN`] bytes.
    #[error("invalid ip.hostname {hostname:?}: must be at most {MAX_HOSTNAME_LEN} bytes")]
    HostnameTooLong {
        /// The hostname given.
        hostname: String,
    },
    /// The hostname has a character outside `[A-Za-z0-9-]`.
    #[error("invalid ip.hostname {hostname:?}: {ch:?} is not a letter, digit or '-'")]
    HostnameBadChar {
        /// The hostname given.
        hostname: String,
        /// The first bad character.
        ch: char,
    },
    /// The hostname starts or ends with `-`.
    #[error("invalid ip.hostname {hostname:?}: must not start or end with '-'")]
    HostnameHyphenEdge {
        /// The hostname given.
        hostname: String,
    },
    /// The interface name is longer than [`MAX_NET_DEVICE_LEN`] bytes.
    #[error("invalid ip.device {device:?}: must be at most {MAX_NET_DEVICE_LEN} bytes")]
    DeviceTooLong {
        /// The name given.
        device: String,
    },
    /// The interface name has `/`, `:` or a character that is not printable ASCII, or is `.`/`..`.
    #[error("invalid ip.device {device:?}: not a usable interface name")]
    DeviceBadName {
        /// The name given.
        device: String,
    },
    /// The whole line is longer than [`MAX_CMDLINE_LEN`] bytes.
    #[error("kernel command line of {len} bytes: must be at most {MAX_CMDLINE_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
}

/// A kernel command line under construction; [`KernelCmdline::build`] checks and joins it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct KernelCmdline {
    console: Option<String>,
    root: Option<String>,
    init: Option<String>,
    ip: Option<GuestIp>,
    agent_vsock_port: Option<u32>,
    args: Vec<String>,
}

impl KernelCmdline {
    /// A command line with only [`FIXED_ARGS`].
    pub fn new() -> Self {
        Self::default()
    }

    /// `console=<console>` (`ttyS0`, `hvc0`, `ttyS0,115200`).
    pub fn console(mut self, console: &str) -> Self {
        self.console = Some(console.to_owned());
        self
    }

    /// `root=<root> rw`.
    pub fn root(mut self, root: &str) -> Self {
        self.root = Some(root.to_owned());
        self
    }

    /// `init=<init>`, an absolute path in the guest.
    pub fn init(mut self, init: &str) -> Self {
        self.init = Some(init.to_owned());
        self
    }

    /// `ip=<guest>::<gateway>:<netmask>:<hostname>:<device>:off`.
    pub fn ip(mut self, ip: GuestIp) -> Self {
        self.ip = Some(ip);
        self
    }

    /// `nestbox.agent=vsock:<port>`: the agent listens on this vsock port.
    pub fn agent_vsock(mut self, port: u32) -> Self {
        self.agent_vsock_port = Some(port);
        self
    }

    /// One more word, after all the others, in the order given.
    pub fn arg(mut self, word: &str) -> Self {
        self.args.push(word.to_owned());
        self
    }

    /// The words of the line, in order, unchecked.
    pub fn words(&self) -> Vec<String> {
        let mut words = Vec::new();
        if let Some(console) = &self.console {
            words.push(format!("console={console}"));
        }
        words.extend(FIXED_ARGS.iter().map(|w| (*w).to_owned()));
        if let Some(root) = &self.root {
            words.push(format!("root={root}"));
            words.push("rw".to_owned());
        }
        if let Some(init) = &self.init {
            words.push(format!("init={init}"));
        }
        if let Some(ip) = &self.ip {
            words.push(format!("ip={ip}"));
        }
        if let Some(port) = self.agent_vsock_port {
            words.push(format!("nestbox.agent=vsock:{port}"));
        }
        words.extend(self.args.iter().cloned());
        words
    }

    /// Checks every part and returns the line, words separated by one space.
    pub fn build(&self) -> Result<String, CmdlineError> {
        if let Some(console) = &self.console {
            check_word("console", console)?;
        }
        if let Some(root) = &self.root {
            check_word("root", root)?;
        }
        if let Some(init) = &self.init {
            check_word("init", init)?;
            if !init.starts_with('/') {
                return Err(CmdlineError::InitNotAbsolute { init: init.clone() });
            }
        }
        if let Some(ip) = &self.ip {
            ip.validate()?;
        }
        for (i, arg) in self.args.iter().enumerate() {
            check_word(&format!("args[{i}]"), arg)?;
        }
        let line = self.words().join(" ");
        if line.len() > MAX_CMDLINE_LEN {
            return Err(CmdlineError::TooLong { len: line.len() });
        }
        Ok(line)
    }
}

impl GuestIp {
    /// Checks the addresses, the netmask, the hostname and the device name.
    pub fn validate(&self) -> Result<(), CmdlineError> {
        let mask = u32::from(self.netmask);
        if mask.leading_ones() + mask.trailing_zeros() != 32 {
            return Err(CmdlineError::NetmaskNotContiguous { netmask: self.netmask });
        }
        for (field, addr) in [("ip.guest", self.guest), ("ip.gateway", self.gateway)] {
            if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() || addr.is_broadcast() {
                return Err(CmdlineError::NotUnicast { field, addr });
            }
        }
        if self.guest == self.gateway {
            return Err(CmdlineError::GatewayIsGuest { addr: self.guest });
        }
        let (guest, gateway) = (u32::from(self.guest), u32::from(self.gateway));
        if guest & mask != gateway & mask {
            return Err(CmdlineError::GatewayOutsideSubnet {
                guest: self.guest,
                gateway: self.gateway,
                netmask: self.netmask,
            });
        }
        for (field, addr) in [("ip.guest", self.guest), ("ip.gateway", self.gateway)] {
            let host = u32::from(addr) & !mask;
            if host == 0 {
                return Err(CmdlineError::NetworkAddress { field, addr, netmask: self.netmask });
            }
            if host == !mask {
                return Err(CmdlineError::BroadcastAddress { field, addr, netmask: self.netmask });
            }
        }
        check_hostname(&self.hostname)?;
        check_device(&self.device)
    }
}

/// The value of the `ip=` word.
impl fmt::Display for GuestIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}:{}:{}:{}:off", self.guest, self.gateway, self.netmask, self.hostname, self.device)
    }
}

/// Why a string is not the value of an `ip=` word in the form [`GuestIp`] writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ip= value {value:?}: expected <guest>::<gateway>:<netmask>:<hostname>:<device>:off")]
pub struct GuestIpParseError {
    /// The value given.
    pub value: String,
}

/// Reads back what [`GuestIp`]'s `Display` writes (no server, autoconf `off`); unchecked.
impl FromStr for GuestIp {
    type Err = GuestIpParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || GuestIpParseError { value: s.to_owned() };
        let fields: Vec<&str> = s.split(':').collect();
        let [guest, "", gateway, netmask, hostname, device, "off"] = fields[..] else {
            return Err(err());
        };
        Ok(GuestIp {
            guest: guest.parse().map_err(|_| err())?,
            gateway: gateway.parse().map_err(|_| err())?,
            netmask: netmask.parse().map_err(|_| err())?,
            hostname: hostname.to_owned(),
            device: device.to_owned(),
        })
    }
}

/// A value that becomes (part of) one word: non-empty printable ASCII without `"`.
fn check_word(field: &str, value: &str) -> Result<(), CmdlineError> {
    let bad = |make: fn(String, String) -> CmdlineError| Err(make(field.to_owned(), value.to_owned()));
    if value.is_empty() {
        return Err(CmdlineError::Empty { field: field.to_owned() });
    }
    // The kernel's isspace() also counts \v, which Rust's is_ascii_whitespace does not.
    if value.chars().any(|c| c.is_whitespace() || c == '\x0b') {
        return bad(|field, value| CmdlineError::Whitespace { field, value });
    }
    if value.contains('\0') {
        return bad(|field, value| CmdlineError::Nul { field, value });
    }
    if value.contains('"') {
        return bad(|field, value| CmdlineError::Quote { field, value });
    }
    match value.chars().find(|c| !c.is_ascii_graphic()) {
        Some(ch) => Err(CmdlineError::NotPrintable { field: field.to_owned(), value: value.to_owned(), ch }),
        None => Ok(()),
    }
}

/// One RFC 1123 label: 1 to 63 letters, digits and hyphens, no hyphen at either end.
fn check_hostname(hostname: &str) -> Result<(), CmdlineError> {
    if hostname.is_empty() {
        return Err(CmdlineError::Empty { field: "ip.hostname".to_owned() });
    }
    if hostname.len() > MAX_HOSTNAME_LEN {
        return Err(CmdlineError::HostnameTooLong { hostname: hostname.to_owned() });
    }
    if let Some(ch) = hostname.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
        return Err(CmdlineError::HostnameBadChar { hostname: hostname.to_owned(), ch });
    }
    if hostname.starts_with('-') || hostname.ends_with('-') {
        return Err(CmdlineError::HostnameHyphenEdge { hostname: hostname.to_owned() });
    }
    Ok(())
}

/// An interface name the kernel accepts (`dev_valid_name`) that also fits the `ip=` syntax.
fn check_device(device: &str) -> Result<(), CmdlineError> {
    if device.is_empty() {
        return Err(CmdlineError::Empty { field: "ip.device".to_owned() });
    }
    if device.len() > MAX_NET_DEVICE_LEN {
        return Err(CmdlineError::DeviceTooLong { device: device.to_owned() });
    }
    let bad_char = |c: char| !c.is_ascii_graphic() || matches!(c, '/' | ':' | '"');
    if device == "." || device == ".." || device.chars().any(bad_char) {
        return Err(CmdlineError::DeviceBadName { device: device.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ip() -> GuestIp {
        GuestIp {
            guest: Ipv4Addr::new(172, 16, 0, 2),
            gateway: Ipv4Addr::new(172, 16, 0, 1),
            netmask: Ipv4Addr::new(255, 255, 255, 252),
            hostname: "nestbox".to_owned(),
            device: "eth0".to_owned(),
        }
    }

    fn ip_err(change: impl FnOnce(&mut GuestIp)) -> CmdlineError {
        let mut ip = ip();
        change(&mut ip);
        KernelCmdline::new().ip(ip).build().unwrap_err()
    }

    #[test]
    fn test_cmdline_full_example() {
        let line = KernelCmdline::new()
            .console("ttyS0")
            .root("/dev/vda")
            .init("/init")
            .ip(ip())
            .agent_vsock(1024)
            .arg("quiet")
            .arg("nestbox.trace=1")
            .build()
            .unwrap();
        assert_eq!(
            line,
            "console=ttyS0 reboot=k panic=1 root=/dev/vda rw init=/init \
             ip=172.16.0.2::172.16.0.1:255.255.255.252:nestbox:eth0:off nestbox.agent=vsock:1024 \
             quiet nestbox.trace=1"
        );
    }

    #[test]
    fn test_cmdline_empty_builder_has_fixed_args_only() {
        assert_eq!(KernelCmdline::new().build().unwrap(), "reboot=k panic=1");
    }

    #[test]
    fn test_cmdline_empty_values() {
        let err =
            |c: KernelCmdline, field: &str| assert_eq!(c.build(), Err(CmdlineError::Empty { field: field.into() }));
        err(KernelCmdline::new().console(""), "console");
        err(KernelCmdline::new().root(""), "root");
        err(KernelCmdline::new().init(""), "init");
        err(KernelCmdline::new().arg("a").arg(""), "args[1]");
    }

    #[test]
    fn test_cmdline_whitespace_rejected_everywhere() {
        for value in ["a b", "a\tb", "a\nb", "a\rb", "a\x0bb", "a\x0cb", "a\u{a0}b"] {
            let e = KernelCmdline::new().root(value).build().unwrap_err();
            assert_eq!(e, CmdlineError::Whitespace { field: "root".into(), value: value.into() }, "{value:?}");
        }
        assert_eq!(
            KernelCmdline::new().console("ttyS0 quiet").build(),
            Err(CmdlineError::Whitespace { field: "console".into(), value: "ttyS0 quiet".into() })
        );
        assert_eq!(
            KernelCmdline::new().arg("x y").build(),
            Err(CmdlineError::Whitespace { field: "args[0]".into(), value: "x y".into() })
        );
    }

    #[test]
    fn test_cmdline_nul_quote_and_unprintable_rejected() {
        assert_eq!(
            KernelCmdline::new().arg("a\0b").build(),
            Err(CmdlineError::Nul { field: "args[0]".into(), value: "a\0b".into() })
        );
        assert_eq!(
            KernelCmdline::new().init("/\"init\"").build(),
            Err(CmdlineError::Quote { field: "init".into(), value: "/\"init\"".into() })
        );
        assert_eq!(
            KernelCmdline::new().arg("é=1").build(),
            Err(CmdlineError::NotPrintable { field: "args[0]".into(), value: "é=1".into(), ch: 'é' })
        );
        assert_eq!(
            KernelCmdline::new().arg("a\x07").build(),
            Err(CmdlineError::NotPrintable { field: "args[0]".into(), value: "a\x07".into(), ch: '\x07' })
        );
    }

    #[test]
    fn test_cmdline_init_must_be_absolute() {
        assert_eq!(
            KernelCmdline::new().init("sbin/init").build(),
            Err(CmdlineError::InitNotAbsolute { init: "sbin/init".into() })
        );
    }

    #[test]
    fn test_ip_netmask_contiguous() {
        for mask in [[255, 0, 255, 0], [255, 255, 255, 253], [0, 255, 255, 255], [254, 255, 255, 252]] {
            let netmask = Ipv4Addr::from(mask);
            assert_eq!(ip_err(|ip| ip.netmask = netmask), CmdlineError::NetmaskNotContiguous { netmask });
        }
        let mut wide = ip();
        wide.netmask = Ipv4Addr::new(255, 0, 0, 0);
        assert_eq!(wide.validate(), Ok(()));
    }

    #[test]
    fn test_ip_addresses_unicast() {
        for addr in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST, Ipv4Addr::new(224, 0, 0, 1), Ipv4Addr::BROADCAST] {
            assert_eq!(ip_err(|ip| ip.guest = addr), CmdlineError::NotUnicast { field: "ip.guest", addr });
            assert_eq!(ip_err(|ip| ip.gateway = addr), CmdlineError::NotUnicast { field: "ip.gateway", addr });
        }
    }

    #[test]
    fn test_ip_gateway_not_guest() {
        let addr = Ipv4Addr::new(172, 16, 0, 2);
        assert_eq!(ip_err(|ip| ip.gateway = addr), CmdlineError::GatewayIsGuest { addr });
    }

    #[test]
    fn test_ip_gateway_same_subnet() {
        let gateway = Ipv4Addr::new(172, 16, 0, 5);
        assert_eq!(
            ip_err(|ip| ip.gateway = gateway),
            CmdlineError::GatewayOutsideSubnet {
                guest: Ipv4Addr::new(172, 16, 0, 2),
                gateway,
                netmask: Ipv4Addr::new(255, 255, 255, 252)
            }
        );
    }

    #[test]
    fn test_ip_network_and_broadcast_addresses() {
        let netmask = Ipv4Addr::new(255, 255, 255, 252);
        let network = Ipv4Addr::new(172, 16, 0, 0);
        let broadcast = Ipv4Addr::new(172, 16, 0, 3);
        assert_eq!(
            ip_err(|ip| ip.guest = network),
            CmdlineError::NetworkAddress { field: "ip.guest", addr: network, netmask }
        );
        assert_eq!(
            ip_err(|ip| ip.gateway = network),
            CmdlineError::NetworkAddress { field: "ip.gateway", addr: network, netmask }
        );
        assert_eq!(
            ip_err(|ip| ip.guest = broadcast),
            CmdlineError::BroadcastAddress { field: "ip.guest", addr: broadcast, netmask }
        );
        assert_eq!(
            ip_err(|ip| ip.gateway = broadcast),
            CmdlineError::BroadcastAddress { field: "ip.gateway", addr: broadcast, netmask }
        );
        // A /31 has no usable host address under this rule; a /32 cannot hold both ends.
        let slash31 = Ipv4Addr::new(255, 255, 255, 254);
        let e = ip_err(|ip| {
            ip.netmask = slash31;
            ip.guest = Ipv4Addr::new(172, 16, 0, 1);
            ip.gateway = Ipv4Addr::new(172, 16, 0, 0);
        });
        assert!(matches!(e, CmdlineError::BroadcastAddress { field: "ip.guest", .. }), "{e:?}");
    }

    #[test]
    fn test_ip_hostname_rules() {
        assert_eq!(ip_err(|ip| ip.hostname.clear()), CmdlineError::Empty { field: "ip.hostname".into() });
        let long = "a".repeat(MAX_HOSTNAME_LEN + 1);
        assert_eq!(ip_err(|ip| ip.hostname = long.clone()), CmdlineError::HostnameTooLong { hostname: long });
        let mut max = ip();
        max.hostname = "a".repeat(MAX_HOSTNAME_LEN);
        assert_eq!(max.validate(), Ok(()));
        for (hostname, ch) in [("a.b", '.'), ("a_b", '_'), ("a:b", ':'), ("a b", ' '), ("hé", 'é')] {
            assert_eq!(
                ip_err(|ip| ip.hostname = hostname.into()),
                CmdlineError::HostnameBadChar { hostname: hostname.into(), ch }
            );
        }
        for hostname in ["-a", "a-", "-"] {
            assert_eq!(
                ip_err(|ip| ip.hostname = hostname.into()),
                CmdlineError::HostnameHyphenEdge { hostname: hostname.into() }
            );
        }
        let mut digits = ip();
        digits.hostname = "0-vm-1".into();
        assert_eq!(digits.validate(), Ok(()));
    }

    #[test]
    fn test_ip_device_rules() {
        assert_eq!(ip_err(|ip| ip.device.clear()), CmdlineError::Empty { field: "ip.device".into() });
        let long = "e".repeat(MAX_NET_DEVICE_LEN + 1);
        assert_eq!(ip_err(|ip| ip.device = long.clone()), CmdlineError::DeviceTooLong { device: long });
        let mut max = ip();
        max.device = "e".repeat(MAX_NET_DEVICE_LEN);
        assert_eq!(max.validate(), Ok(()));
        for device in [".", "..", "eth/0", "eth:0", "eth 0", "eth\"0", "éth0"] {
            assert_eq!(
                ip_err(|ip| ip.device = device.into()),
                CmdlineError::DeviceBadName { device: device.into() },
                "{device:?}"
            );
        }
    }

    #[test]
    fn test_cmdline_total_length() {
        let fixed = KernelCmdline::new().build().unwrap().len();
        // One extra word of `n` bytes adds `n + 1` (its separating space).
        let fits = "a".repeat(MAX_CMDLINE_LEN - fixed - 1);
        assert_eq!(KernelCmdline::new().arg(&fits).build().unwrap().len(), MAX_CMDLINE_LEN);
        let over = "a".repeat(MAX_CMDLINE_LEN - fixed);
        assert_eq!(KernelCmdline::new().arg(&over).build(), Err(CmdlineError::TooLong { len: MAX_CMDLINE_LEN + 1 }));
    }

    #[test]
    fn test_ip_display_and_parse() {
        assert_eq!(ip().to_string(), "172.16.0.2::172.16.0.1:255.255.255.252:nestbox:eth0:off");
        assert_eq!(ip().to_string().parse::<GuestIp>(), Ok(ip()));
        for bad in ["", "172.16.0.2:172.16.0.1:255.255.255.252:h:eth0:off", "1.2.3.4::1.2.3.5:255.0.0.0:h:e:dhcp"] {
            assert!(bad.parse::<GuestIp>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn test_error_messages_name_field_and_value() {
        let e = ip_err(|ip| ip.hostname = "bad_name".into());
        assert_eq!(e.to_string(), "invalid ip.hostname \"bad_name\": '_' is not a letter, digit or '-'");
        let e = KernelCmdline::new().arg("a b").build().unwrap_err();
        assert_eq!(e.to_string(), "invalid args[0] \"a b\": must not contain whitespace");
    }

    /// A valid subnet (prefix 1..=30) and two distinct host addresses in it.
    fn valid_ip() -> impl Strategy<Value = GuestIp> {
        (
            1u32..=30,
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
            "[a-z][a-z0-9]{0,14}",
        )
            .prop_filter_map("needs two unicast host addresses", |(prefix, net, a, b, hostname, device)| {
                let mask = u32::MAX << (32 - prefix);
                let hosts = !mask;
                let (a, b) = (1 + a % (hosts - 1), 1 + b % (hosts - 1));
                let ip = GuestIp {
                    guest: Ipv4Addr::from((net & mask) | a),
                    gateway: Ipv4Addr::from((net & mask) | b),
                    netmask: Ipv4Addr::from(mask),
                    hostname,
                    device,
                };
                ip.validate().is_ok().then_some(ip)
            })
    }

    /// A word made of printable ASCII other than `"`.
    fn word() -> impl Strategy<Value = String> {
        "[!#-~]{1,40}"
    }

    proptest! {
        #[test]
        fn prop_valid_output_reparses_into_its_words(
            console in proptest::option::of(word()),
            root in proptest::option::of(word()),
            init in proptest::option::of("/[!#-~]{0,30}"),
            ip in proptest::option::of(valid_ip()),
            port in proptest::option::of(any::<u32>()),
            args in proptest::collection::vec(word(), 0..20),
        ) {
            let mut cmdline = KernelCmdline::new();
            if let Some(v) = &console { cmdline = cmdline.console(v); }
            if let Some(v) = &root { cmdline = cmdline.root(v); }
            if let Some(v) = &init { cmdline = cmdline.init(v); }
            if let Some(v) = &ip { cmdline = cmdline.ip(v.clone()); }
            if let Some(v) = port { cmdline = cmdline.agent_vsock(v); }
            for a in &args { cmdline = cmdline.arg(a); }

            let line = cmdline.build().expect("valid parts build");
            prop_assert!(line.len() <= MAX_CMDLINE_LEN);
            // The kernel splits on any run of whitespace; so do we.
            let parsed: Vec<&str> = line.split_ascii_whitespace().collect();
            prop_assert_eq!(&parsed, &cmdline.words());
            prop_assert_eq!(&parsed[parsed.len() - args.len()..], &args[..]);
            if let Some(ip) = &ip {
                let value = parsed.iter().find_map(|w| w.strip_prefix("ip=")).expect("ip word");
                prop_assert_eq!(&value.parse::<GuestIp>().expect("ip parses"), ip);
            }
        }

        #[test]
        fn prop_random_ip_never_panics_and_valid_ones_round_trip(
            guest in any::<u32>(), gateway in any::<u32>(), netmask in any::<u32>(),
            hostname in "[ -~]{0,70}", device in "[ -~]{0,20}",
        ) {
            let ip = GuestIp {
                guest: Ipv4Addr::from(guest),
                gateway: Ipv4Addr::from(gateway),
                netmask: Ipv4Addr::from(netmask),
                hostname,
                device,
            };
            if ip.validate().is_ok() {
                prop_assert_eq!(ip.to_string().parse::<GuestIp>(), Ok(ip));
            }
        }
    }
}
