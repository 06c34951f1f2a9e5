//! Live streams: a new endpoint placed on a worker (its stream key, its
//! worker and slot), and a stream resumed on another worker's ingest lobby.
use std::collections::BTreeSet;

use panoptes_common::config::parse_host_port;
use panoptes_common::now_ms;
use tonic::Status;
use tracing::info;

use super::Member;
use crate::state::command::{Request, Response};
use crate::state::model::{JobSpec, LiveSpec};
use crate::status::{rejected, unexpected};

/// A live endpoint just created: its job and the URL to push to.
pub struct NewLive {
    pub job: u64,
    pub url: String,
}

/// Create a live endpoint for a checked `spec` (models, frame step, what to
/// keep): a fresh stream key, the worker and slot that ingest it, and the
/// job (`spec.owner` is the caller's). A spec without a name is named
/// after its key.
pub async fn create_live<M: Member>(node: &M, mut spec: JobSpec) -> Result<NewLive, Status> {
    let key = stream_key()?;
    if spec.name.trim().is_empty() {
        spec.name = format!("live-{}", &key[..8]);
    }
    let live = node.leader_memory().live_workers();
    let chosen = node.reader().read(|a| choose_live_worker(&a.state, &spec.models, &live));
    let Some((worker, host, port, slot)) = chosen else {
        return Err(Status::unavailable(
            "no worker can ingest a live stream now: every live worker offering these models is draining, has no ingest address \
             (worker.listen) or has all its slots (worker.capacity) in use; start a worker or end a stream, then retry",
        ));
    };
    let url = format!("rtmp://{host}:{}/live/{key}", port as u32 + slot);
    spec.source = url.clone();
    let lspec = LiveSpec { key, worker: worker.clone(), slot, url: url.clone() };
    match node.commit(Request::CreateLive { spec, live: lspec, now_ms: now_ms() }).await? {
        Response::JobCreated { job, .. } => {
            info!(job_id = job, %worker, url = %panoptes_common::source_url::redact(&url), "live endpoint created");
            Ok(NewLive { job, url })
        }
        Response::Rejected(r) => Err(rejected(r)),
        other => Err(unexpected(&other)),
    }
}

/// A publisher pushed stream `key` to `worker`'s ingest lobby, which parked
/// it at `url`: the stream's job moves there (its lost worker's shard
/// resumes). Returns the job.
pub async fn resume_live<M: Member>(node: &M, worker: &str, key: &str, url: &str) -> Result<u64, Status> {
    // Leases (and their expiry) are the leader's.
    node.require_leader()?;
    let found = node.reader().read(|a| {
        let Some(j) = (!key.is_empty()).then(|| a.state.jobs.values().find(|j| j.live.as_ref().is_some_and(|l| l.key == key))).flatten() else {
            return Err(Status::not_found(format!("no live stream has the key '{key}': push to the URL `panoptes live` printed")));
        };
        // The state machine's own check: the lobby retries what may change.
        match a.state.check_move_live(j.id, worker, url) {
            Ok(()) => Ok(j.id),
            Err(rej) => Err(rejected(rej)),
        }
    })?;
    match node.commit(Request::MoveLive { job: found, worker: worker.to_string(), url: url.to_string() }).await? {
        Response::Ok => {
            info!(job_id = found, worker = %worker, url = %panoptes_common::source_url::redact(url), "live stream resumes on another worker's ingest lobby");
            Ok(found)
        }
        // Changed since the check above: busy is retried, the rest refused.
        Response::Rejected(rej) => Err(rejected(rej)),
        other => Err(unexpected(&other)),
    }
}

/// A live stream's key: 128 bits from the OS's CSPRNG (`/dev/urandom`), as
/// 32 hex digits. Whoever has it may publish into the job. (It was a
/// `RandomState` hash of the clock: std seeds those keys once per thread
/// and then increments them, so one key told much about the next.)
pub fn stream_key() -> Result<String, Status> {
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
    live: &BTreeSet<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_are_128_random_bits_in_hex() {
        let keys: std::collections::BTreeSet<String> = (0..1000).map(|_| stream_key().unwrap()).collect();
        assert_eq!(keys.len(), 1000, "keys repeat");
        assert!(keys.iter().all(|k| k.len() == 32 && k.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())));
        // Every bit position takes both values across the keys.
        let ones: Vec<usize> = (0..128).map(|bit| keys.iter().filter(|k| u128::from_str_radix(k, 16).unwrap() >> bit & 1 == 1).count()).collect();
        assert!(ones.iter().all(|n| (300..=700).contains(n)), "{ones:?}");
    }
}
