//! Explaining a failed open of a network source: a host name that does not
//! resolve, or an HTTP server that sent something that is not a video.

use super::Source;
use crate::checked_open::http_content_type;
use crate::error::MediaError;

impl Source {
    /// Add what a failed open of a network source does not say by itself:
    /// that the host name does not resolve, or that the HTTP server sent
    /// something that is not a video (its Content-Type).
    pub(super) fn explain(&self, e: MediaError) -> MediaError {
        match e {
            MediaError::Network { input, reason } if reason.starts_with("network I/O error") => {
                match self.unresolved_host() {
                    Some(why) => MediaError::Network { input, reason: why },
                    None if self.is_http() && !crate::policy::http_options().is_empty() => MediaError::Network {
                        input,
                        reason: format!("{reason} (HTTP redirects are not followed: submit the URL the redirect points to)"),
                    },
                    None => MediaError::Network { input, reason },
                }
            }
            MediaError::Corrupt { input, reason } if self.is_http() => {
                let reason = match http_content_type(&self.url) {
                    Some(t) if !t.starts_with("video/") && t != "application/octet-stream" => {
                        format!("{reason}; the server sent Content-Type '{t}', not a video")
                    }
                    Some(t) => format!("{reason}; the server sent Content-Type '{t}'"),
                    None => reason,
                };
                MediaError::Corrupt { input, reason }
            }
            e => e,
        }
    }

    /// "host name 'x' not found (...)" when the URL's host does not resolve.
    fn unresolved_host(&self) -> Option<String> {
        use std::net::ToSocketAddrs;
        let host = crate::policy::host_of(crate::policy::url_parts(&self.url)?.host_port);
        if host.is_empty() {
            return Some("the URL names no host".into());
        }
        match (host, 0).to_socket_addrs().map(|mut a| a.next().is_some()) {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "host name '{host}' not found (it resolves to no address)"
            )),
            Err(e) => Some(format!("host name '{host}' not found ({e})")),
        }
    }
}
