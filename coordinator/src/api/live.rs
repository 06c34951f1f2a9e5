//! Live endpoints: stream keys and the worker a new stream goes to.
use super::*;

/// A live stream's key: 128 bits from the OS's CSPRNG (`/dev/urandom`), as
/// 32 hex digits. Whoever has it may publish into the job. (It was a
/// `RandomState` hash of the clock: std seeds those keys once per thread
/// and then increments them, so one key told much about the next.)
pub(super) fn stream_key() -> Result<String, Status> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Status::internal(format!("cannot draw a stream key from /dev/urandom: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The worker to ingest a new live stream: alive (in `live`), not draining,
/// offering `models`, with an ingest address (`HOST:BASE`, BASE > 0) and a
/// free slot (below its capacity, not used by an unfinished live job); the
/// one with the most free slots. Returns (worker, host, base port, slot).
pub fn choose_live_worker(
    state: &crate::state::apply::State,
    models: &[String],
    live: &std::collections::BTreeSet<String>,
) -> Option<(String, String, u16, u32)> {
    let mut best: Option<(u32, (String, String, u16, u32))> = None;
    for w in state.workers.values() {
        if w.draining || !live.contains(&w.name) || !models.iter().all(|m| w.models.contains(m)) {
            continue;
        }
        let Ok(port) = parse_host_port(&w.addr) else { continue };
        let Some((host, _)) = w.addr.rsplit_once(':') else { continue };
        if port == 0 || port as u32 + w.capacity > 65536 {
            continue;
        }
        let used: Vec<u32> = state.live_streams_on(&w.name, None).map(|l| l.slot).collect();
        // Streams resumed on its lobby (LOBBY_SLOT) take capacity too.
        let free = w.capacity.saturating_sub(used.len() as u32);
        if free == 0 {
            continue;
        }
        let Some(slot) = (0..w.capacity).find(|s| !used.contains(s)) else { continue };
        if best.as_ref().is_none_or(|(f, _)| free > *f) {
            best = Some((free, (w.name.clone(), host.to_string(), port, slot)));
        }
    }
    best.map(|(_, b)| b)
}
