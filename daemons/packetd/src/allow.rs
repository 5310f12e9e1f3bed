//! The sources the reflector and echo answer: IPv4/IPv6 prefixes from `[xdp] allow-sources`,
//! or, when that list is empty, the on-link prefixes of the interfaces packetd serves (so an
//! appliance never becomes an open reflector by accident), read over netlink ([`on_link`]) and
//! followed as addresses come and go (`crate::app` watches the kernel's notifications). Both the XDP program (LPM tries) and
//! the userspace reflector ([`crate::userspace`]) enforce the same list.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rookery_common::netlink::Interface;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One address prefix, e.g. `10.0.0.0/8` or `fd00::/8`; host bits are cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// `addr/len` with the host bits cleared; `None` when `len` is longer than the address.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return None;
        }
        Some(Self {
            addr: mask(addr, len),
            len,
        })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether the prefix is `/0` (matches every address of its family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` lies inside this prefix (an IPv4 prefix never contains an IPv6 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| {
            format!(
                "\"{s}\" is not an address prefix (expected e.g. \"10.0.0.0/8\" or \"fd00::/8\")"
            )
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("\"{s}\": prefix length must be 0 to {max}"))?,
        };
        Self::new(addr, len).ok_or_else(|| format!("\"{s}\": prefix length must be 0 to {max}"))
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of prefixes, checked by longest-prefix semantics (any match allows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist(pub BTreeSet<Prefix>);

impl Allowlist {
    /// Whether `ip` (an IPv4-mapped IPv6 address counts as IPv4) may be answered.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|p| p.contains(ip))
    }

    /// The configured prefixes, or the on-link prefixes of `interfaces` when none are configured.
    pub fn effective(configured: &[Prefix], interfaces: &[String]) -> Self {
        if configured.is_empty() {
            Self(on_link(interfaces))
        } else {
            Self(configured.iter().copied().collect())
        }
    }
}

/// The prefixes of the addresses currently on `interfaces`, from a netlink dump
/// ([`rookery_common::netlink::interfaces`]; blocking, a few hundred microseconds). IPv6
/// link-local prefixes are included: link-local peers are on-link by definition. When the dump
/// fails the set is empty (nothing is answered) and the failure is logged.
pub fn on_link(interfaces: &[String]) -> BTreeSet<Prefix> {
    match rookery_common::netlink::interfaces() {
        Ok(list) => on_link_of(&list, interfaces),
        Err(e) => {
            crate::events::netlink_failed(&e);
            BTreeSet::new()
        }
    }
}

/// The prefixes of the addresses of the interfaces named in `names`, out of `list`.
pub fn on_link_of(list: &[Interface], names: &[String]) -> BTreeSet<Prefix> {
    list.iter()
        .filter(|i| names.contains(&i.name))
        .flat_map(|i| &i.addresses)
        .filter_map(|a| Prefix::new(a.address, a.prefix_len))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_mask_and_match() {
        let p: Prefix = "10.1.2.3/16".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.to_string(), "10.1.0.0/16");
        assert!(p.contains("10.1.200.1".parse().unwrap_or_else(|_| unreachable!())));
        assert!(!p.contains("10.2.0.1".parse().unwrap_or_else(|_| unreachable!())));
        let host: Prefix = "fd00::1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(host.len(), 128);
        let all: Prefix = "::/0".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(all.contains("2001:db8::1".parse().unwrap_or_else(|_| unreachable!())));
        assert!(!all.contains("10.0.0.1".parse().unwrap_or_else(|_| unreachable!())));
        let list = Allowlist([p].into_iter().collect());
        assert!(list.allows("::ffff:10.1.0.9".parse().unwrap_or_else(|_| unreachable!())));
        for bad in ["10.0.0.0/33", "fd00::/129", "example", "10.0.0.0/x", ""] {
            let e = bad.parse::<Prefix>().expect_err(bad);
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn on_link_reads_the_loopback_prefix_over_netlink() {
        let lo = on_link(&["lo".to_owned()]);
        let want: Prefix = "127.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(lo.contains(&want), "{lo:?}");
        assert!(on_link(&["no-such-if".to_owned()]).is_empty());
    }
}
