//! Pure scheduling logic: how a video is cut into shards and which pending
//! shards a worker asking for work gets. No I/O, property-testable.
use std::collections::{BTreeMap, BTreeSet};

use crate::state::apply::State;
use crate::state::model::{analysed_in, Job, JobState, ShardState, WorkerRec};

/// Cut frames `[0, frames)` into shards of about `target` frames, starting
/// each shard at a keyframe where the keyframes allow it (so no shard decodes
/// frames it does not own). Where keyframes are too sparse, long runs are cut
/// into fixed-size pieces (their decoder seeks to the previous keyframe and
/// skips ahead).
pub fn split_shards(frames: u64, keyframes: &[(u64, i64)], target: u64) -> Vec<(u64, u64)> {
    let target = target.max(1);
    let mut cuts = vec![0u64];
    for &(k, _) in keyframes {
        let last = *cuts.last().unwrap();
        if k > last && k < frames && k - last >= target {
            cuts.push(k);
        }
    }
    cuts.push(frames);
    let mut shards = Vec::new();
    for w in cuts.windows(2) {
        let (mut a, b) = (w[0], w[1]);
        if a >= b {
            continue;
        }
        // A run much longer than the target (sparse keyframes): fixed-size pieces.
        if b - a >= 2 * target {
            while b - a >= 2 * target {
                shards.push((a, a + target));
                a += target;
            }
        }
        shards.push((a, b));
    }
    shards
}

/// Each part of a split shard keeps at least this many analysed frames, so a
/// leased shard is split (work stealing) only while at least twice as many
/// are unacknowledged: below that, starting a second decoder (a seek, a
/// pipeline) for the tail costs more than it saves.
pub const MIN_STOLEN_FRAMES: u64 = 8;

/// Whether `w` offers every model `job` needs.
fn offers(w: &WorkerRec, job: &Job) -> bool {
    job.spec.models.iter().all(|m| w.models.contains(m)) && crate::state::model::pinned_worker(&job.spec.source).is_none_or(|p| p == w.name)
}

/// Shards each worker holds by the state: leases in running jobs.
fn held(state: &State) -> BTreeMap<&str, u32> {
    let mut n = BTreeMap::new();
    for j in state.jobs.values().filter(|j| j.state == JobState::Running) {
        for s in &j.shards {
            if let ShardState::Leased { worker, .. } = &s.state {
                *n.entry(worker.as_str()).or_default() += 1;
            }
        }
    }
    n
}

/// Free slots of `w` by the state: its capacity minus the shards leased to it.
fn state_free(w: &WorkerRec, held: &BTreeMap<&str, u32>) -> u32 {
    w.capacity.saturating_sub(held.get(w.name.as_str()).copied().unwrap_or(0))
}

/// The free slots of `worker` asking for work with `asked` free slots: the
/// smaller of what it says and what the state says (capacity minus the
/// shards leased to it), so neither a stale view on the worker's side nor a
/// lease the coordinator has not expired yet over-commits it. `None` for an
/// unknown or draining worker.
pub fn free_slots(state: &State, worker: &str, asked: u32) -> Option<u32> {
    let w = state.workers.get(worker).filter(|w| !w.draining)?;
    Some(asked.min(state_free(w, &held(state))))
}

/// Pending shards to lease to `worker`, which asks with `asked` free slots;
/// `live` names the workers heard from recently (the asker counts as live).
///
/// Candidates: the pending shards of running jobs whose models the worker
/// offers, oldest job first, shards in order. The worker gets the first
/// `share` of them, where, with
/// - `F` its free slots ([`free_slots`]),
/// - `P` the number of candidates,
/// - `T` = `F` + the free slots (by the state) of every other live,
///   non-draining worker that offers the models of at least one candidate's
///   job,
///
/// `share = min(F, max(1, ⌈P·F/T⌉))`: its part of the pending work in
/// proportion to its part of the free capacity that could take it, at least
/// one shard whenever it has a free slot and one fits, never more than it has
/// free slots (and `⌈P·F/T⌉ ≤ P` since `F ≤ T`). So a worker that asks first
/// does not take every pending shard while other live workers have room;
/// whatever it leaves is taken by the others when they ask (or by it, on its
/// next request, once they are busy or gone).
pub fn choose_shards(state: &State, worker: &str, asked: u32, live: &BTreeSet<String>) -> Vec<(u64, u32)> {
    let Some(free) = free_slots(state, worker, asked) else { return Vec::new() };
    if free == 0 {
        return Vec::new();
    }
    let w = &state.workers[worker];
    let mut candidates = Vec::new();
    let mut jobs = Vec::new();
    for (id, job) in &state.jobs {
        if job.state != JobState::Running || !offers(w, job) {
            continue;
        }
        let before = candidates.len();
        candidates.extend(job.shards.iter().filter(|s| s.state == ShardState::Pending).map(|s| (*id, s.index)));
        if candidates.len() > before {
            jobs.push(job);
        }
    }
    if candidates.is_empty() {
        return candidates;
    }
    let held = held(state);
    let others: u64 = state
        .workers
        .values()
        .filter(|o| o.name != worker && !o.draining && live.contains(&o.name) && jobs.iter().any(|j| offers(o, j)))
        .map(|o| state_free(o, &held) as u64)
        .sum();
    let share = fair_share(candidates.len() as u64, free as u64, free as u64 + others);
    candidates.truncate(share as usize);
    candidates
}

/// `min(free, max(1, ⌈pending·free/total⌉))`; see [`choose_shards`].
pub fn fair_share(pending: u64, free: u64, total: u64) -> u64 {
    if pending == 0 || free == 0 {
        return 0;
    }
    (pending * free).div_ceil(total.max(free)).max(1).min(free)
}

/// A cut of a leased shard's unacknowledged tail for an idle worker: see
/// [`choose_split`] and `Request::Split`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steal {
    pub job: u64,
    pub shard: u32,
    pub epoch: u64,
    pub at: u64,
}

/// Work stealing: for `worker`, asking with `asked` free slots while no
/// pending shard fits it (else `None`: pending work comes first), the leased
/// shard of another worker (in a running job whose models it offers) with the
/// most analysed frames not yet committed (from its `cursor` to its `end`;
/// ties: oldest job, then lowest shard), if at least `2 × MIN_STOLEN_FRAMES`
/// remain, cut at [`cut_point`]. The tail goes to `worker`; the holder keeps
/// the head and its lease (it learns of the cut when a report past it is
/// refused, see `State::apply_report`).
pub fn choose_split(state: &State, worker: &str, asked: u32) -> Option<Steal> {
    if free_slots(state, worker, asked)? == 0 {
        return None;
    }
    let w = &state.workers[worker];
    let mut best: Option<(u64, Steal)> = None;
    for (id, job) in &state.jobs {
        if job.state != JobState::Running || !offers(w, job) {
            continue;
        }
        let Some(plan) = &job.plan else { continue };
        let step = job.spec.frame_step.max(1);
        if job.shards.iter().any(|s| s.state == ShardState::Pending) {
            return None;
        }
        for s in &job.shards {
            let ShardState::Leased { worker: holder, epoch, .. } = &s.state else { continue };
            if holder == worker {
                continue;
            }
            let left = analysed_in(s.cursor, s.end, step);
            if left >= 2 * MIN_STOLEN_FRAMES && best.as_ref().is_none_or(|(b, _)| left > *b) {
                let at = cut_point(&plan.keyframes, s.cursor, s.end, step);
                best = Some((left, Steal { job: *id, shard: s.index, epoch: *epoch, at }));
            }
        }
    }
    best.map(|(_, s)| s)
}

/// What a worker asking for work gets: shards to lease, a slow worker's
/// tail to take over, or nothing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeasePlan {
    Grant(Vec<(u64, u32)>),
    Split(Steal),
    Nothing,
}

/// The one scheduling decision behind a lease request: `worker` (registered)
/// asks with `asked` free slots; `live` are the workers heard from lately.
/// Pending shards of file jobs are shared fairly ([`choose_shards`]); a live
/// job's shard goes to the worker its URL names, whatever its free slots (a
/// publisher is about to push); with nothing pending that fits, the tail of
/// a slow worker's shard ([`choose_split`]).
pub fn plan_lease(state: &State, worker: &str, asked: u32, live: &BTreeSet<String>) -> LeasePlan {
    let mut wanted = choose_shards(state, worker, asked, live);
    wanted.retain(|(job, _)| state.jobs.get(job).is_none_or(|j| j.live.is_none()));
    for j in state.jobs.values().filter(|j| j.state == JobState::Running) {
        if j.live.as_ref().is_some_and(|l| l.worker == worker) {
            wanted.extend(j.shards.iter().filter(|s| s.state == ShardState::Pending).map(|s| (j.id, s.index)));
        }
    }
    if !wanted.is_empty() {
        return LeasePlan::Grant(wanted);
    }
    choose_split(state, worker, asked).map_or(LeasePlan::Nothing, LeasePlan::Split)
}

/// Where to cut the unacknowledged range `[cursor, end)` (holding `n ≥ 2 ×
/// MIN_STOLEN_FRAMES` analysed frames, multiples of `step`) in two. The
/// aligned midpoint `mid` is the analysed frame that leaves the first
/// `⌈n/2⌉` with the holder. The cut is the first keyframe at or after `mid`
/// that still leaves `MIN_STOLEN_FRAMES` analysed frames after it, so the new
/// shard's decoder seeks straight to its own first frame and never decodes
/// the holder's; without one, `mid` itself (the new shard's decoder then
/// seeks to the keyframe before it and skips ahead).
/// Either way `cursor < cut < end` and both parts keep at least
/// `MIN_STOLEN_FRAMES` analysed frames.
pub fn cut_point(keyframes: &[(u64, i64)], cursor: u64, end: u64, step: u64) -> u64 {
    let step = step.max(1);
    let first = cursor.div_ceil(step) * step;
    let n = analysed_in(cursor, end, step);
    let mid = first + n.div_ceil(2) * step;
    keyframes
        .iter()
        .map(|k| k.0)
        .filter(|&k| k >= mid && k < end && analysed_in(k, end, step) >= MIN_STOLEN_FRAMES)
        .min()
        .unwrap_or(mid)
}

#[cfg(test)]
mod tests;
