//! Crash points for the crash-safety tests: `PANOPTES_CRASH_AT=NAME` (or
//! `NAME#N`, the N-th time it is reached) makes this process abort at once,
//! as `kill -9` or a power cut would, at that exact point of a multi-step
//! write. Unset (always, outside those tests) a point costs one load.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn target() -> &'static Option<(String, u64)> {
    static T: OnceLock<Option<(String, u64)>> = OnceLock::new();
    T.get_or_init(|| {
        let v = std::env::var("PANOPTES_CRASH_AT").ok()?;
        Some(match v.split_once('#') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        })
    })
}

/// Abort here if `PANOPTES_CRASH_AT` names this point (and its count is reached).
pub fn point(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    if let Some((want, n)) = target() {
        if want == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("PANOPTES_CRASH_AT: aborting at {name}#{n}");
            std::process::abort();
        }
    }
}
