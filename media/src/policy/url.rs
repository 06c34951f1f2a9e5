//! Reading a URL as FFmpeg does: its scheme, its parts (`av_url_split`),
//! its host (and an IP address written there in any form the C resolver
//! accepts), the `crypto+` prefix of HLS's AES segments, and the URL with
//! its host replaced by an address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `crypto+URL` and `crypto:URL` (HLS's AES segments): the prefix, and the
/// URL it wraps (the whole URL and no prefix for any other).
pub(crate) fn unwrap_crypto(url: &str) -> (&str, &str) {
    match url.strip_prefix("crypto+").or_else(|| url.strip_prefix("crypto:")) {
        Some(inner) => (&url[..url.len() - inner.len()], inner),
        None => ("", url),
    }
}

/// A URL split as FFmpeg reads it (`av_url_split`): the authority ends at
/// the first `/`, `?` or `#`; user information ends at its last `@`.
pub(crate) struct UrlParts<'a> {
    pub scheme: &'a str,
    /// `USER:PASSWORD@` with its `@`, or empty.
    pub userinfo: &'a str,
    /// `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`, as written.
    pub host_port: &'a str,
    /// Path, query and fragment.
    pub tail: &'a str,
}

pub(crate) fn url_parts(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(i) => authority.split_at(i + 1),
        None => ("", authority),
    };
    Some(UrlParts { scheme, userinfo, host_port, tail })
}

/// The host of `HOST[:PORT]` or `[V6][:PORT]`, as written.
pub(crate) fn host_of(host_port: &str) -> &str {
    match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    }
}

/// The URL of `parts` with its host replaced by `ip` (IPv6 in brackets).
pub(super) fn with_host(parts: &UrlParts, ip: IpAddr) -> String {
    let hp = parts.host_port;
    let port = match hp.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(_, p)| p),
        None => hp.find(':').map_or("", |i| &hp[i..]),
    };
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!("{}://{}{host}{port}{}", parts.scheme, parts.userinfo, parts.tail)
}

/// The lower-cased scheme of `scheme://…`, if the source has that form.
pub(super) fn scheme(source: &str) -> Option<String> {
    let (s, _) = source.split_once("://")?;
    let ok = s.chars().next()?.is_ascii_alphabetic() && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    ok.then(|| s.to_ascii_lowercase())
}

/// The host of a URL as FFmpeg reads it (`av_url_split`): the authority ends
/// at the first `/`, `?` or `#`; user info ends at its last `@`; an IPv6
/// address is in brackets. Lower-cased, one trailing dot removed.
pub(super) fn url_host(url: &str) -> Option<String> {
    let host = host_of(url_parts(url)?.host_port);
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// An IP address written as the host, in any form the C resolver accepts:
/// IPv6 (with or without a `%zone`), dotted IPv4, and the `inet_aton` forms
/// `2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`.
pub(super) fn literal_ip(host: &str) -> Option<IpAddr> {
    if host.contains(':') {
        let bare = host.split('%').next()?;
        return bare.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    inet_aton(host).map(IpAddr::V4)
}

/// `inet_aton`: 1 to 4 parts, each decimal, octal (leading 0) or hex (0x);
/// the last part fills the remaining bytes.
pub(super) fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        let n = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            if h.is_empty() {
                0 // "0x" alone is 0 to inet_aton
            } else {
                u32::from_str_radix(h, 16).ok()?
            }
        } else if p.len() > 1 && p.starts_with('0') {
            u32::from_str_radix(&p[1..], 8).ok()?
        } else {
            p.parse::<u32>().ok()?
        };
        nums.push(n);
    }
    let (last, head) = nums.split_last()?;
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - head.len() as u32);
    if rest_bits < 32 && *last >= 1u32 << rest_bits {
        return None;
    }
    let mut v: u32 = *last;
    for (i, &n) in head.iter().enumerate() {
        v |= n << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(v))
}
