//! `addresses.json` in a node's data directory: every address the node
//! serves on, written as it binds. Several of them are derived or chosen
//! free (the web page, metrics, a worker's ingest lobby), so scripts, a
//! supervisor and the tests read where a node listens from this file, not
//! from its log.
//!
//! The file is one JSON object, `{"grpc": "127.0.0.1:7400", "web":
//! "http://127.0.0.1:27400/", "metrics": "127.0.0.1:17400", ...}`, replaced
//! whole by a rename at each change, so a reader never sees half of it.
//! [`reset`] empties it when a node starts, so no address of an earlier run
//! is read as this one's.
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The ports a node derives from its own `--listen` port, in one place:
/// the same host, the listen port plus an offset, so that nodes differing
/// only in `--listen` never collide and nobody chooses these by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derived {
    /// `/metrics` and `/healthz` (every node): port + 10000.
    Metrics,
    /// The web page and HTTP API (a coordinator): port + 20000.
    Web,
}

impl Derived {
    pub const fn offset(self) -> u16 {
        match self {
            Derived::Metrics => 10_000,
            Derived::Web => 20_000,
        }
    }
}

/// The address `what` is served on for a node listening on `listen`: same
/// host, `listen`'s port + [`Derived::offset`] (7400 → 17400 for metrics,
/// 27400 for the web); port 0 (any free port, recorded in [`FILE`]) when
/// that overflows or the node itself listens on port 0. A server that finds
/// its derived port taken also takes a free one (`http::bind_or_free`).
pub fn derived(listen: &std::net::SocketAddr, what: Derived) -> std::net::SocketAddr {
    let mut a = *listen;
    let port = if listen.port() == 0 { 0 } else { listen.port().checked_add(what.offset()).unwrap_or(0) };
    a.set_port(port);
    a
}

/// The file's name in a node's data directory.
pub const FILE: &str = "addresses.json";

/// One writer at a time in this process (a node's parts record as they bind).
static WRITE: Mutex<()> = Mutex::new(());

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// What the file of `dir` holds now (empty if there is none or it is not
/// a JSON object of strings).
pub fn read(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read(path(dir)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn write(dir: &Path, all: &BTreeMap<String, String>) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(all).map_err(io::Error::other)?)?;
    std::fs::rename(&tmp, path(dir))
}

/// Start a node's file afresh (empty).
pub fn reset(dir: &Path) -> io::Result<()> {
    let _g = WRITE.lock().unwrap_or_else(|e| e.into_inner());
    write(dir, &BTreeMap::new())
}

/// Add or replace `name` → `addr` in the file of `dir`.
pub fn record(dir: &Path, name: &str, addr: &str) -> io::Result<()> {
    let _g = WRITE.lock().unwrap_or_else(|e| e.into_inner());
    let mut all = read(dir);
    all.insert(name.to_string(), addr.to_string());
    write(dir, &all)
}

/// [`record`], logging a failure instead of returning it: a node serves on
/// whether or not it could write the file.
pub fn note(dir: &Path, name: &str, addr: &str) {
    if let Err(e) = record(dir, name, addr) {
        tracing::warn!(dir = %dir.display(), name, addr, error = %e, "cannot write {FILE}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_accumulate_and_a_reset_empties_the_file() {
        let dir = std::env::temp_dir().join(format!("panoptes-addresses-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(read(&dir).is_empty());
        record(&dir, "grpc", "127.0.0.1:7400").unwrap();
        record(&dir, "web", "http://127.0.0.1:27400/").unwrap();
        record(&dir, "grpc", "127.0.0.1:7401").unwrap();
        let all = read(&dir);
        assert_eq!(all.get("grpc").map(String::as_str), Some("127.0.0.1:7401"));
        assert_eq!(all.get("web").map(String::as_str), Some("http://127.0.0.1:27400/"));
        reset(&dir).unwrap();
        assert!(read(&dir).is_empty());
        assert!(!dir.join(format!(".{FILE}.tmp")).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
