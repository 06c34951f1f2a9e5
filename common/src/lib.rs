//! What coordinators, workers and the CLI share: configuration, identifiers,
//! error kinds, retry helpers and tracing set-up.
pub mod config;
pub mod ids;
pub mod logging;
pub mod metrics;
pub mod retry;

/// The built-in analyses, in their canonical order. They are always in the
/// model registry (`Config::models`), which may add more; check submissions
/// against the registry, not this list.
pub const KNOWN_ANALYSES: &[&str] = config::BUILTIN_MODELS;

/// A worker's RTMP ingest lobby port: right after its `capacity` live slot
/// ports from `base` (the port it registers with). A publisher that pushes a
/// live stream's key there resumes that stream on this worker, e.g. after
/// the worker ingesting it was lost. `None` past port 65535.
pub fn lobby_port(base: u16, capacity: u32) -> Option<u16> {
    u16::try_from(base as u32 + capacity.max(1)).ok()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
