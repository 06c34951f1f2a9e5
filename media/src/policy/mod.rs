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
//!
//! The work is split by concern: `source_policy` (the [`SourcePolicy`]
//! rules and the checks of a file or a URL's host), `addresses` (IP
//! networks and which addresses are refused), `resolve` (the DNS lookup),
//! `url` (splitting a URL as FFmpeg does, reading its host), `installed`
//! (the policy this process enforces) and `pin` (a URL pinned to the
//! address it was checked at).

mod addresses;
mod installed;
mod pin;
mod resolve;
mod source_policy;
#[cfg(test)]
mod tests;
mod url;

pub use installed::{enforce, http_options, install, installed, FFMPEG_HTTP_OPTIONS};
pub use panoptes_common::source_url::redact;
pub use pin::{pin_nested, Pin, Pinned};
pub use source_policy::SourcePolicy;
pub(crate) use url::{host_of, unwrap_crypto, url_parts};

/// Network schemes whose host is checked.
const NETWORK_SCHEMES: &[&str] = &["http", "https", "rtsp", "rtmp", "rtmps"];
