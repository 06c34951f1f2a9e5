//! What coordinators, workers and the CLI share: configuration, identifiers,
//! error kinds, retry helpers and tracing set-up.
pub mod addresses;
pub mod analytics;
pub mod config;
pub mod http;
pub mod ids;
pub mod logging;
pub mod metrics;
pub mod retry;
pub mod source_url;
pub mod rules;
pub mod tracking;
pub mod windows;
pub mod zones;

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

/// A duration as people write one: `30s`, `15m`, `12h`, `7d`, `2w` (a bare
/// number is seconds). The error says what is wrong and what is meant.
pub fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("'{s}' is not a duration: use a number and a unit, e.g. 30s, 15m, 12h, 7d"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        u => return Err(format!("unknown unit '{u}' in '{s}': use s, m, h, d or w")),
    };
    n.checked_mul(secs).map(std::time::Duration::from_secs).ok_or_else(|| format!("'{s}' is too long"))
}

/// A picture interval as people write one: `500ms`, `1s`, `2m`, `1h` (a bare
/// number is seconds; `0` means every analysed frame). Milliseconds.
pub fn parse_interval_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("'{s}' is not an interval: use a number and a unit, e.g. 500ms, 1s, 10s, 1m (0: every frame)"))?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        u => return Err(format!("unknown unit '{u}' in '{s}': use ms, s, m or h")),
    };
    n.checked_mul(ms).ok_or_else(|| format!("'{s}' is too long"))
}

/// An interval in milliseconds as [`parse_interval_ms`] reads it: `0`,
/// `500ms`, `1s`, `2m`, `1h`.
pub fn format_interval_ms(ms: u64) -> String {
    match ms {
        0 => "0".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
