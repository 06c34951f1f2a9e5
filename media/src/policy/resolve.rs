//! Resolving a source's host name with the system resolver, within a time
//! limit.

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Duration;

/// How long a host name may take to resolve before the source is refused.
pub(super) const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) enum Resolved {
    Addrs(Vec<IpAddr>),
    NotFound,
    TimedOut,
}

/// Resolve `host` with the system resolver (what FFmpeg uses), giving up
/// after [`RESOLVE_TIMEOUT`]; the lookup thread then ends on its own.
pub(super) fn resolve(host: &str) -> Resolved {
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
