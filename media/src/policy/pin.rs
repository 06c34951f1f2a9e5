//! Pinning a network URL that FFmpeg is about to open ([`pin_nested`]): its
//! host name is resolved and checked once, and FFmpeg gets the URL with the
//! checked address in its place ([`Pin`], [`Pinned`]).

use super::installed::INSTALLED;
use super::source_policy::Checked;
use super::url::{scheme, unwrap_crypto, url_host, url_parts, with_host};
use super::NETWORK_SCHEMES;
use crate::error::MediaError;

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
