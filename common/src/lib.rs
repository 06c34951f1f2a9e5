//! What coordinators, workers and the CLI share: configuration, identifiers,
//! error kinds, retry helpers and tracing set-up.
pub mod config;
pub mod ids;
pub mod logging;
pub mod retry;

/// Analyses this build can run, in their canonical order. Submissions naming
/// anything else are refused with this list.
pub const KNOWN_ANALYSES: &[&str] = &["objects", "joy", "colors"];

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
