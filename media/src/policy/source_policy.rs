//! [`SourcePolicy`], the rules of `[sources]`: checking a local file
//! against `file_dirs` and a network URL's host (every address it resolves
//! to) against the refused kinds of address and `allow_networks`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::addresses::{embedded_v4, forbidden, Net};
use super::resolve::{resolve, Resolved, RESOLVE_TIMEOUT};
use super::url::{literal_ip, scheme, url_host};
use super::NETWORK_SCHEMES;
use crate::error::MediaError;

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

    /// Check a normalised source (see `normalize_source`). May
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
    pub(super) fn checked_addresses(&self, source: &str) -> Result<Checked, MediaError> {
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

/// What [`SourcePolicy::checked_addresses`] checked of a URL's host.
pub(super) enum Checked {
    /// An IP address as written.
    Literal,
    /// A name that resolves to no address.
    NotFound,
    /// A name, and every address it resolved to (none refused).
    Resolved(Vec<IpAddr>),
}
