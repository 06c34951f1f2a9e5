//! Source policy (config `[sources]`): which local files and which network
//! addresses a job's source may reach.
//!
//! - A local file must lie inside one of `file_dirs` once `..` and symlinks
//!   are resolved (`[]` refuses every local file).
//! - A network source (http, https, rtsp, rtmp, rtmps) may not reach a
//!   loopback, private, shared (CGNAT), link-local (cloud metadata at
//!   169.254.169.254), multicast, unspecified, broadcast or reserved address,
//!   nor an IPv6 address embedding one of those (`::ffff:127.0.0.1`), unless
//!   the address lies in one of `allow_networks`. This stops a caller from
//!   using the cluster to read services on its own network (server-side
//!   request forgery). Every address the host name resolves to is checked.
//! - `v4l2://` devices are not checked here.
//!
//! Every URL libavformat opens for a network source is checked again right
//! before it is opened ([`pin_nested`], called from `checked_open.rs`'s
//! `policy_io_open`): the source, and each playlist, key and segment an HLS
//! playlist names (a network source is never read as DASH, whose reader
//! opens segments past that check). The address checked there is the one
//! FFmpeg connects to: [`pin_nested`] resolves the host name once and hands
//! FFmpeg the URL with the checked address in place of the name (the name
//! still goes where the protocol sends it: HTTP's `Host` header, TLS's
//! server name and certificate check), so a DNS answer that changes after
//! the check ("DNS rebinding") cannot move the connection. FFmpeg follows
//! HTTP redirects on its own, which [`FFMPEG_HTTP_OPTIONS`] turns off.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, RwLock};
use std::time::Duration;

use crate::error::MediaError;

/// Network schemes whose host is checked.
const NETWORK_SCHEMES: &[&str] = &["http", "https", "rtsp", "rtmp", "rtmps"];

/// How long a host name may take to resolve before the source is refused.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// libavformat options for opening an http(s) source under a policy:
/// FFmpeg follows redirects itself, without asking us, so a public URL could
/// redirect to `http://127.0.0.1/`; with `max_redirects = 0` a redirect is an
/// error instead.
pub const FFMPEG_HTTP_OPTIONS: &[(&str, &str)] = &[("max_redirects", "0")];

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// `"10.0.0.0/8"`, `"fd00::/8"`, or a single address.
    fn parse(s: &str) -> Result<Net, String> {
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

    fn contains(&self, ip: IpAddr) -> bool {
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

/// The rules of `[sources]`, ready to check sources against.
#[derive(Debug, Clone)]
pub struct SourcePolicy {
    file_dirs: Vec<PathBuf>,
    allow: Vec<Net>,
}

impl SourcePolicy {
    /// From `sources.file_dirs` and `sources.allow_networks`. Fails on an
    /// entry of `allow_networks` that is not an IP or CIDR.
    pub fn new(file_dirs: &[String], allow_networks: &[String]) -> Result<Self, String> {
        let allow = allow_networks
            .iter()
            .map(|s| Net::parse(s).map_err(|e| format!("sources.allow_networks: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(SourcePolicy { file_dirs: file_dirs.iter().map(PathBuf::from).collect(), allow })
    }

    /// Check a normalised source (see [`crate::normalize_source`]). May
    /// resolve a host name (blocking, at most about 10 s): call it off any
    /// async runtime's worker threads.
    pub fn check(&self, source: &str) -> Result<(), MediaError> {
        match scheme(source) {
            None => self.check_file(source),
            Some(s) if NETWORK_SCHEMES.contains(&s.as_str()) => self.check_url(source),
            Some(_) => Ok(()), // v4l2:// devices: not a file path, not a network address
        }
    }

    fn check_file(&self, source: &str) -> Result<(), MediaError> {
        let refuse = |why: String| MediaError::InvalidArgument { input: source.to_string(), reason: why };
        if self.file_dirs.is_empty() {
            return Err(refuse(
                "local files are not allowed on this cluster (sources.file_dirs is empty); \
                 add the video's directory to sources.file_dirs in the cluster config, or serve it over http(s)"
                    .into(),
            ));
        }
        let real = match std::fs::canonicalize(source) {
            Ok(p) => p,
            // A missing file gets its usual "not found" error when it is opened.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(MediaError::Io { input: source.to_string(), reason: format!("cannot open: {e}") })
            }
        };
        // Directories that do not exist (here) confine nothing.
        let inside = self
            .file_dirs
            .iter()
            .filter_map(|d| std::fs::canonicalize(d).ok())
            .any(|d| real.starts_with(&d));
        if inside {
            return Ok(());
        }
        let via = if Path::new(source) == real { String::new() } else { format!(" (it resolves to {})", real.display()) };
        Err(refuse(format!(
            "this file is outside the directories local sources may be read from{via}; \
             allowed: {}; add its directory to sources.file_dirs in the cluster config",
            self.file_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        )))
    }

    fn check_url(&self, source: &str) -> Result<(), MediaError> {
        self.checked_addresses(source).map(|_| ())
    }

    /// [`SourcePolicy::check_url`], saying what was checked.
    fn checked_addresses(&self, source: &str) -> Result<Checked, MediaError> {
        let refuse = |why: String| MediaError::InvalidArgument { input: source.to_string(), reason: why };
        let host = url_host(source).ok_or_else(|| refuse("the URL names no host".into()))?;
        let (addrs, resolved) = match literal_ip(&host) {
            Some(ip) => (vec![ip], false),
            None => match resolve(&host) {
                Resolved::Addrs(a) => (a, true),
                // Nothing to reach: the open fails with "host name not found".
                Resolved::NotFound => return Ok(Checked::NotFound),
                Resolved::TimedOut => {
                    return Err(MediaError::Network {
                        input: source.to_string(),
                        reason: format!(
                            "host name '{host}' did not resolve within {} s, so its addresses could not be checked; try again later",
                            RESOLVE_TIMEOUT.as_secs()
                        ),
                    })
                }
            },
        };
        for &ip in &addrs {
            if let Some(kind) = forbidden(ip) {
                if !self.allowed(ip) {
                    let named = if host == ip.to_string() {
                        host.clone()
                    } else if literal_ip(&host) == Some(ip) {
                        format!("'{host}' (that is {ip})")
                    } else {
                        format!("'{host}', which resolves to {ip},")
                    };
                    return Err(refuse(format!(
                        "refused: the host {named} is a {kind} address, and network sources may not reach \
                         loopback, private, link-local, multicast or reserved addresses; if this is intended, \
                         add the address to sources.allow_networks in the cluster config"
                    )));
                }
            }
        }
        Ok(if resolved { Checked::Resolved(addrs) } else { Checked::Literal })
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allow.iter().any(|n| n.contains(ip) || embedded.is_some_and(|e| n.contains(e)))
    }
}

/// The policy this process enforces when it opens a source (see
/// [`install`]); none until installed.
static INSTALLED: RwLock<Option<SourcePolicy>> = RwLock::new(None);

/// Make `policy` the one [`enforce`] checks against (call once at start-up,
/// with the process's `[sources]` config).
pub fn install(policy: SourcePolicy) {
    *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = Some(policy);
}

/// Whether a policy is installed (a node of a cluster; `panoptes analyze`
/// reads what its user names, with none).
pub fn installed() -> bool {
    INSTALLED.read().unwrap_or_else(|e| e.into_inner()).is_some()
}

/// Check `source` (normalised) against the installed policy, if any: what
/// the code that opens a source calls right before handing it to FFmpeg.
/// Blocking (may resolve a host name).
pub fn enforce(source: &str) -> Result<(), MediaError> {
    let policy = INSTALLED.read().unwrap_or_else(|e| e.into_inner()).clone();
    match policy {
        Some(p) => p.check(source),
        None => Ok(()),
    }
}

/// What [`SourcePolicy::checked_addresses`] checked of a URL's host.
enum Checked {
    /// An IP address as written.
    Literal,
    /// A name that resolves to no address.
    NotFound,
    /// A name, and every address it resolved to (none refused).
    Resolved(Vec<IpAddr>),
}

/// `crypto+URL` and `crypto:URL` (HLS's AES segments): the prefix, and the
/// URL it wraps (the whole URL and no prefix for any other).
pub(crate) fn unwrap_crypto(url: &str) -> (&str, &str) {
    match url.strip_prefix("crypto+").or_else(|| url.strip_prefix("crypto:")) {
        Some(inner) => (&url[..url.len() - inner.len()], inner),
        None => ("", url),
    }
}

/// Where FFmpeg connects for a network URL, as [`pin_nested`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// As written: no policy is installed, or the host is an IP address.
    AsWritten,
    /// The host name resolves to no address: not opened (FFmpeg would
    /// resolve it again, and might get an answer that was never checked).
    NotFound,
    /// The host name resolved to allowed addresses: connect to the first.
    At(Pinned),
}

/// A network URL whose host name is replaced by the address it was checked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// The URL FFmpeg opens: the checked address in place of the host name
    /// (user information, port, path and query as they were).
    pub url: String,
    /// The host and port as written: HTTP's `Host` header.
    pub authority: String,
    /// The host name (lower-cased): TLS's server name and the name its
    /// certificate is checked against (`verifyhost`).
    pub host: String,
}

/// Check a URL that FFmpeg is about to open for a network source (the
/// source itself, or a playlist, key or segment that an HLS playlist names),
/// resolving its host name once: the URL to hand FFmpeg is the one with the
/// address that was checked, so FFmpeg never resolves the name itself.
/// `crypto+http://…` and `crypto:http://…` (HLS's AES segments) are checked
/// as the URL they wrap. Anything but a network URL (`file:`, `data:`, a
/// bare path) is refused: a network source leads only to the network, and
/// only where the policy allows.
pub fn pin_nested(url: &str) -> Result<Pin, MediaError> {
    let (prefix, inner) = unwrap_crypto(url);
    if !scheme(inner).is_some_and(|s| NETWORK_SCHEMES.contains(&s.as_str())) {
        return Err(MediaError::InvalidArgument {
            input: url.to_string(),
            reason: format!("refused: a network source may lead only to network URLs ({}), not to this", NETWORK_SCHEMES.join(", ")),
        });
    }
    let policy = INSTALLED.read().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(policy) = policy else { return Ok(Pin::AsWritten) };
    match policy.checked_addresses(inner)? {
        Checked::Literal => Ok(Pin::AsWritten),
        Checked::NotFound => Ok(Pin::NotFound),
        Checked::Resolved(addrs) => {
            let parts = url_parts(inner).ok_or_else(|| MediaError::invalid(inner, "the URL names no host"))?;
            let host = url_host(inner).ok_or_else(|| MediaError::invalid(inner, "the URL names no host"))?;
            Ok(Pin::At(Pinned { url: format!("{prefix}{}", with_host(&parts, addrs[0])), authority: parts.host_port.to_string(), host }))
        }
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
fn with_host(parts: &UrlParts, ip: IpAddr) -> String {
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

/// The extra libavformat options an http(s) source is opened with in this
/// process: [`FFMPEG_HTTP_OPTIONS`] (no redirects) once a policy is
/// installed, none otherwise.
pub fn http_options() -> &'static [(&'static str, &'static str)] {
    if installed() {
        FFMPEG_HTTP_OPTIONS
    } else {
        &[]
    }
}

pub use panoptes_common::source_url::redact;

/// The lower-cased scheme of `scheme://…`, if the source has that form.
fn scheme(source: &str) -> Option<String> {
    let (s, _) = source.split_once("://")?;
    let ok = s.chars().next()?.is_ascii_alphabetic() && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    ok.then(|| s.to_ascii_lowercase())
}

/// The host of a URL as FFmpeg reads it (`av_url_split`): the authority ends
/// at the first `/`, `?` or `#`; user info ends at its last `@`; an IPv6
/// address is in brackets. Lower-cased, one trailing dot removed.
fn url_host(url: &str) -> Option<String> {
    let host = host_of(url_parts(url)?.host_port);
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// An IP address written as the host, in any form the C resolver accepts:
/// IPv6 (with or without a `%zone`), dotted IPv4, and the `inet_aton` forms
/// `2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`.
fn literal_ip(host: &str) -> Option<IpAddr> {
    if host.contains(':') {
        let bare = host.split('%').next()?;
        return bare.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    inet_aton(host).map(IpAddr::V4)
}

/// `inet_aton`: 1 to 4 parts, each decimal, octal (leading 0) or hex (0x);
/// the last part fills the remaining bytes.
fn inet_aton(s: &str) -> Option<Ipv4Addr> {
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

enum Resolved {
    Addrs(Vec<IpAddr>),
    NotFound,
    TimedOut,
}

/// Resolve `host` with the system resolver (what FFmpeg uses), giving up
/// after [`RESOLVE_TIMEOUT`]; the lookup thread then ends on its own.
fn resolve(host: &str) -> Resolved {
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    let spawned = std::thread::Builder::new().name("resolve-source".into()).spawn(move || {
        let r = (name.as_str(), 0).to_socket_addrs().map(|a| a.map(|s| s.ip()).collect::<Vec<_>>());
        let _ = tx.send(r);
    });
    if spawned.is_err() {
        return Resolved::TimedOut;
    }
    match rx.recv_timeout(RESOLVE_TIMEOUT) {
        Ok(Ok(a)) if !a.is_empty() => Resolved::Addrs(a),
        Ok(_) => Resolved::NotFound,
        Err(_) => Resolved::TimedOut,
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    let compatible = s[..6] == [0; 6] && u128::from(ip) > 1; // not :: or ::1
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (mapped || compatible || nat64).then_some(v4)
}

/// Why a source may not reach `ip` (its kind of address), or `None` for a
/// public address.
fn forbidden(ip: IpAddr) -> Option<&'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_url_keeps_everything_but_the_host_name() {
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let at = |url: &str, ip: IpAddr| with_host(&url_parts(url).unwrap(), ip);
        assert_eq!(at("http://cdn.example.com/a.mp4?x=1", v4), "http://203.0.113.7/a.mp4?x=1");
        assert_eq!(at("https://u:p@cdn.example.com:8443/a@b", v4), "https://u:p@203.0.113.7:8443/a@b");
        assert_eq!(at("rtsp://cam.example.com:554", v6), "rtsp://[2001:db8::1]:554");
        assert_eq!(at("http://[::1]:80/x", v4), "http://203.0.113.7:80/x");
        let url = "https://u:p@CDN.example.com.:8443/a";
        assert_eq!(url_parts(url).unwrap().host_port, "CDN.example.com.:8443");
        assert_eq!(url_host(url).as_deref(), Some("cdn.example.com"));
    }

    fn strict() -> SourcePolicy {
        SourcePolicy::new(&["/".into()], &[]).unwrap()
    }

    fn refusal(p: &SourcePolicy, s: &str) -> String {
        match p.check(s) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("{s} was allowed"),
        }
    }

    #[test]
    fn internal_addresses_are_refused() {
        let p = strict();
        for (url, kind) in [
            ("http://127.0.0.1/clip.mp4", "loopback"),
            ("http://127.8.9.10:8080/x", "loopback"),
            ("https://[::1]:443/x", "loopback"),
            ("http://10.0.0.1/", "private"),
            ("http://172.16.0.1/", "private"),
            ("http://172.31.255.255/", "private"),
            ("http://192.168.1.1/", "private"),
            ("http://100.64.0.1/", "shared (carrier-grade NAT)"),
            ("http://100.127.255.255/", "shared (carrier-grade NAT)"),
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://[fe80::1]/", "link-local"),
            ("http://[fe80::1%25eth0]/", "link-local"),
            ("http://[fd00::1]/", "private (unique local)"),
            ("http://[fc00::1]/", "private (unique local)"),
            ("http://224.0.0.1/", "multicast"),
            ("http://[ff02::1]/", "multicast"),
            ("http://0.0.0.0/", "unspecified"),
            ("http://[::]/", "unspecified"),
            ("http://0.1.2.3/", "unspecified"),
            ("http://255.255.255.255/", "broadcast"),
            ("http://240.0.0.1/", "reserved"),
            ("http://[::ffff:127.0.0.1]/", "loopback"),
            ("http://[::ffff:7f00:1]/", "loopback"),
            ("http://[::ffff:169.254.169.254]/", "link-local"),
            ("http://[64:ff9b::10.0.0.1]/", "private"),
            ("rtsp://192.168.0.10:554/stream", "private"),
            ("rtmp://127.0.0.1/app/key", "loopback"),
            ("rtmps://10.1.2.3/app/key", "private"),
            ("HTTP://127.0.0.1/", "loopback"),
        ] {
            let e = refusal(&p, url);
            assert!(e.contains(&format!("is a {kind} address")), "{url}: {e}");
            assert!(e.contains("add the address to sources.allow_networks"), "{e}");
            assert!(e.starts_with(&format!("'{url}': refused:")), "{e}");
        }
    }

    #[test]
    fn address_tricks_are_seen_through() {
        let p = strict();
        for url in [
            "http://2130706433/",         // 127.0.0.1 as one decimal number
            "http://0x7f.1/",             // hex, short form
            "http://0x7f000001/",         // hex, one number
            "http://0177.0.0.1/",         // octal
            "http://017700000001/",       // octal, one number
            "http://127.1/",              // short form
            "http://127.0.0.1./",         // trailing dot
            "http://a@127.0.0.1/",        // user info
            "http://a:b@evil.example@127.0.0.1:80/", // the last '@' ends the user info
            "http://127.0.0.1:80@/",      // no host after user info: still refused below
            "http://127.0.0.1#@example.com/",
            "http://127.0.0.1?@example.com/",
            "http://localhost/clip.mp4",  // a name resolving to loopback
            "http://LOCALHOST./clip.mp4",
        ] {
            assert!(p.check(url).is_err(), "{url} was allowed");
        }
        assert!(refusal(&p, "http://2130706433/").contains("the host '2130706433' (that is 127.0.0.1) is a loopback address"));
        assert_eq!(inet_aton("2130706433"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("0x7f.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("10.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(inet_aton("192.168.257"), Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert_eq!(inet_aton("256.1.1.1"), None);
        assert_eq!(inet_aton("1.2.3.4.5"), None);
        assert_eq!(inet_aton("09.1.1.1"), None); // 9 is no octal digit
        assert_eq!(inet_aton("example.com"), None);
        assert_eq!(url_host("http://a@b@Host.Example.:8/x"), Some("host.example".into()));
        assert_eq!(url_host("http:///x"), None);
        assert!(refusal(&p, "http:///x").contains("the URL names no host"));
    }

    #[test]
    fn public_addresses_and_allowed_networks_pass() {
        let p = strict();
        for url in ["http://93.184.216.34/clip.mp4", "https://[2606:2800:220:1::1]/x", "http://8.8.8.8:8080/", "rtsp://1.1.1.1/s"] {
            assert!(p.check(url).is_ok(), "{url}");
        }
        // v4l2 devices are not network sources.
        assert!(p.check("v4l2:///dev/video0").is_ok());
        let p = SourcePolicy::new(&["/".into()], &["127.0.0.1".into(), "::1".into(), "10.1.0.0/16".into()]).unwrap();
        for url in ["http://127.0.0.1:9/x", "http://[::1]:9/x", "http://[::ffff:127.0.0.1]/", "http://10.1.200.3/", "http://2130706433/"] {
            assert!(p.check(url).is_ok(), "{url}");
        }
        for url in ["http://127.0.0.2/", "http://10.2.0.1/", "http://169.254.169.254/"] {
            assert!(p.check(url).is_err(), "{url}");
        }
        let all = SourcePolicy::new(&[], &["0.0.0.0/0".into(), "::/0".into()]).unwrap();
        assert!(all.check("http://169.254.169.254/").is_ok());
        assert!(all.check("http://[fe80::1]/").is_ok());
        let e = SourcePolicy::new(&[], &["10.0.0.0/33".into()]).unwrap_err();
        assert!(e.contains("the prefix length must be 0 to 32"), "{e}");
        let e = SourcePolicy::new(&[], &["intranet".into()]).unwrap_err();
        assert!(e.starts_with("sources.allow_networks: 'intranet' is not an IP address or CIDR"), "{e}");
    }

    #[test]
    fn files_are_confined_to_their_directories() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("videos");
        std::fs::create_dir(&allowed).unwrap();
        let inside = allowed.join("clip.mp4");
        let outside = root.path().join("outside.mp4");
        std::fs::write(&inside, b"x").unwrap();
        std::fs::write(&outside, b"x").unwrap();
        std::fs::create_dir(allowed.join("sub")).unwrap();
        std::fs::write(allowed.join("sub/deep.mp4"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("link.mp4")).unwrap();
        std::os::unix::fs::symlink(&inside, allowed.join("ok-link.mp4")).unwrap();
        // A sibling whose name starts like the allowed directory.
        let sibling = root.path().join("videos2");
        std::fs::create_dir(&sibling).unwrap();
        std::fs::write(sibling.join("x.mp4"), b"x").unwrap();

        let p = SourcePolicy::new(&[allowed.display().to_string()], &[]).unwrap();
        let ok = |path: &Path| p.check(&path.display().to_string());
        assert!(ok(&inside).is_ok());
        assert!(ok(&allowed.join("sub/deep.mp4")).is_ok());
        assert!(ok(&allowed.join("sub/../clip.mp4")).is_ok());
        assert!(ok(&allowed.join("ok-link.mp4")).is_ok());
        // Missing: left to the open, which says "not found".
        assert!(ok(&allowed.join("missing.mp4")).is_ok());
        for bad in [outside.clone(), allowed.join("../outside.mp4"), allowed.join("link.mp4"), sibling.join("x.mp4")] {
            let e = ok(&bad).unwrap_err().to_string();
            assert!(e.contains("outside the directories local sources may be read from"), "{e}");
            assert!(e.contains("add its directory to sources.file_dirs"), "{e}");
            assert!(e.starts_with(&format!("'{}'", bad.display())), "{e}");
        }
        let e = ok(&allowed.join("link.mp4")).unwrap_err().to_string();
        assert!(e.contains(&format!("(it resolves to {})", outside.canonicalize().unwrap().display())), "{e}");

        let none = SourcePolicy::new(&[], &[]).unwrap();
        let e = none.check(&inside.display().to_string()).unwrap_err().to_string();
        assert!(e.contains("local files are not allowed on this cluster (sources.file_dirs is empty)"), "{e}");
        // The default, ["/"], allows any file.
        assert!(strict().check(&outside.display().to_string()).is_ok());
    }
}
