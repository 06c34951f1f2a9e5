//! Where things live in the `sm` tree: the key layout, result rows and the
//! id counters.
#[allow(unused_imports)]
use super::*;

pub(super) const K_APPLIED: &[u8] = b"m/applied";
pub(super) const K_MEMBERSHIP: &[u8] = b"m/membership";
pub(super) const K_COUNTERS: &[u8] = b"m/counters";

pub(super) fn job_key(job: u64) -> Vec<u8> {
    let mut k = b"j/".to_vec();
    k.extend_from_slice(&job.to_be_bytes());
    k
}

/// `s/<job>` — the prefix of a job's shards, each under its own key so that
/// a report rewrites the one shard it moved, not all of them (a 20-minute
/// clip has 300 shards: rewriting them with every report made sled write
/// ~20 KB an apply, most of the data directory's size).
pub(super) fn shards_prefix(job: u64) -> Vec<u8> {
    let mut k = b"s/".to_vec();
    k.extend_from_slice(&job.to_be_bytes());
    k
}

pub(super) fn shard_key(job: u64, shard: u32) -> Vec<u8> {
    let mut k = shards_prefix(job);
    k.extend_from_slice(&shard.to_be_bytes());
    k
}

/// `p/<job>` — a job's plan (its keyframes: 2 KB for a 20-minute clip),
/// written once, not with every change of the job.
pub(super) fn plan_key(job: u64) -> Vec<u8> {
    let mut k = b"p/".to_vec();
    k.extend_from_slice(&job.to_be_bytes());
    k
}

/// `a/<job>` — the prefix of a job's recorded alerts.
pub(super) fn alerts_prefix(job: u64) -> Vec<u8> {
    let mut k = b"a/".to_vec();
    k.extend_from_slice(&job.to_be_bytes());
    k
}

/// `a/<job><seq>` — one recorded alert (`seq` from 1), written once, so a
/// job's record does not grow with its alerts.
pub(super) fn alert_key(job: u64, seq: u64) -> Vec<u8> {
    let mut k = alerts_prefix(job);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn worker_key(name: &str) -> Vec<u8> {
    let mut k = b"w/".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

pub(super) fn request_key(rid: &str) -> Vec<u8> {
    let mut k = b"q/".to_vec();
    k.extend_from_slice(rid.as_bytes());
    k
}

/// `r/<job>` — the prefix of every result of a job.
pub fn results_prefix(job: u64) -> Vec<u8> {
    let mut k = b"r/".to_vec();
    k.extend_from_slice(&job.to_be_bytes());
    k
}

pub fn result_key(job: u64, frame: u64, model: u8) -> Vec<u8> {
    let mut k = results_prefix(job);
    k.extend_from_slice(&frame.to_be_bytes());
    k.push(model);
    k
}

/// `f/<job>` — the prefix of every stored picture of a job.
pub fn frames_prefix(job: u64) -> Vec<u8> {
    let mut k = b"f/".to_vec();
    k.extend_from_slice(&job.to_be_bytes());
    k
}

pub fn frame_key(job: u64, frame: u64) -> Vec<u8> {
    let mut k = frames_prefix(job);
    k.extend_from_slice(&frame.to_be_bytes());
    k
}

/// One stored result row.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub frame: u64,
    pub model: u8,
    pub timestamp: f64,
    pub results_json: String,
}

/// `k/<job>` — the prefix of the marks of a job's detections (their tracks
/// and zones), merged into its results on read. Apart from the results
/// (`r/`), not between them: the leader writes marks after the results, and
/// keys inserted among older ones made sled rewrite those pages and keep
/// their old copies (a simulated camera's data directory grew 22 MiB an
/// hour under retention); under a prefix of their own they are appended in
/// order and trimmed in ranges, as results are.
pub fn marks_prefix(job: u64) -> Vec<u8> {
    let mut k = b"k/".to_vec();
    k.extend_from_slice(&job.to_be_bytes());
    k
}

/// `k/<job><frame><model>` — the marks of one model's detections in a frame.
pub fn marks_key(job: u64, frame: u64, model: u8) -> Vec<u8> {
    let mut k = marks_prefix(job);
    k.extend_from_slice(&frame.to_be_bytes());
    k.push(model);
    k
}

/// A marks key and value: (frame, model) and the marks.
pub(super) fn decode_marks(key: &[u8], val: &[u8]) -> Option<(u64, u8, Vec<panoptes_common::tracking::Mark>)> {
    if key.len() != 2 + 8 + 8 + 1 || !key.starts_with(b"k/") {
        return None;
    }
    let frame = u64::from_be_bytes(key[10..18].try_into().ok()?);
    Some((frame, key[18], bincode::deserialize(val).ok()?))
}

/// `v/<job>` — the prefix of a job's recorded track events.
pub fn track_events_prefix(job: u64) -> Vec<u8> {
    let mut k = b"v/".to_vec();
    k.extend_from_slice(&job.to_be_bytes());
    k
}

/// `v/<job><seq>` — one recorded track event (`seq` from 1), written once.
pub fn track_event_key(job: u64, seq: u64) -> Vec<u8> {
    let mut k = track_events_prefix(job);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn decode_result(key: &[u8], val: &[u8]) -> Option<ResultRow> {
    if key.len() != 2 + 8 + 8 + 1 {
        return None;
    }
    let frame = u64::from_be_bytes(key[10..18].try_into().ok()?);
    let (timestamp, results_json): (f64, String) = bincode::deserialize(val).ok()?;
    Some(ResultRow { frame, model: key[18], timestamp, results_json })
}

#[derive(Serialize, Deserialize)]
pub(super) struct Counters {
    pub(super) next_job: u64,
    pub(super) next_epoch: u64,
}
