//! IP addresses: networks (`allow_networks` entries), the IPv4 address
//! embedded in an IPv6 one, and which kinds of address a network source may
//! not reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// `"10.0.0.0/8"`, `"fd00::/8"`, or a single address.
    pub(super) fn parse(s: &str) -> Result<Net, String> {
        let s = s.trim();
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address or CIDR (e.g. \"127.0.0.1\", \"10.0.0.0/8\", \"::1\")"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("'{s}': the prefix length must be 0 to {max}")),
            },
        };
        Ok(Net { addr, prefix })
    }

    pub(super) fn contains(&self, ip: IpAddr) -> bool {
        fn same_prefix(a: u128, b: u128, prefix: u8, bits: u8) -> bool {
            let shift = bits - prefix;
            prefix == 0 || (a >> shift) == (b >> shift)
        }
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                same_prefix(u32::from(n) as u128, u32::from(a) as u128, self.prefix, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                same_prefix(u128::from(n), u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`) IPv6 address.
pub(super) fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    let compatible = s[..6] == [0; 6] && u128::from(ip) > 1; // not :: or ::1
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (mapped || compatible || nat64).then_some(v4)
}

/// Why a source may not reach `ip` (its kind of address), or `None` for a
/// public address.
pub(super) fn forbidden(ip: IpAddr) -> Option<&'static str> {
    let in4 = |ip: Ipv4Addr, net: [u8; 4], prefix: u8| {
        Net { addr: IpAddr::V4(Ipv4Addr::from(net)), prefix }.contains(IpAddr::V4(ip))
    };
    match ip {
        IpAddr::V4(v4) => Some(if v4.is_loopback() {
            "loopback"
        } else if v4.is_private() {
            "private"
        } else if in4(v4, [100, 64, 0, 0], 10) {
            "shared (carrier-grade NAT)"
        } else if v4.is_link_local() {
            "link-local"
        } else if v4.is_multicast() {
            "multicast"
        } else if v4.is_broadcast() {
            "broadcast"
        } else if in4(v4, [0, 0, 0, 0], 8) {
            "unspecified"
        } else if in4(v4, [240, 0, 0, 0], 4) {
            "reserved"
        } else {
            return None;
        }),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return forbidden(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            Some(if v6.is_loopback() {
                "loopback"
            } else if v6.is_unspecified() {
                "unspecified"
            } else if first & 0xfe00 == 0xfc00 {
                "private (unique local)"
            } else if first & 0xffc0 == 0xfe80 {
                "link-local"
            } else if first & 0xffc0 == 0xfec0 {
                "site-local"
            } else if v6.is_multicast() {
                "multicast"
            } else {
                return None;
            })
        }
    }
}
