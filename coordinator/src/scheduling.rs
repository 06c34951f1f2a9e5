//! Pure scheduling logic: how a video is cut into shards and which pending
//! shards a worker asking for work gets. No I/O, property-testable.
use crate::state::apply::State;
use crate::state::model::{JobState, ShardState};

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

/// Pending shards to lease to `worker` with `free` free slots: oldest job
/// first, shards in order, only jobs whose models the worker offers.
pub fn choose_shards(state: &State, worker: &str, free: u32) -> Vec<(u64, u32)> {
    let Some(w) = state.workers.get(worker) else { return Vec::new() };
    if w.draining {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (id, job) in &state.jobs {
        if out.len() >= free as usize {
            break;
        }
        if job.state != JobState::Running || !job.spec.models.iter().all(|m| w.models.contains(m)) {
            continue;
        }
        for s in &job.shards {
            if out.len() >= free as usize {
                break;
            }
            if s.state == ShardState::Pending {
                out.push((*id, s.index));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_cover(frames: u64, shards: &[(u64, u64)]) {
        let mut at = 0;
        for &(a, b) in shards {
            assert_eq!(a, at, "gap or overlap in {shards:?}");
            assert!(b > a, "empty shard in {shards:?}");
            at = b;
        }
        assert_eq!(at, frames, "shards {shards:?} do not end at {frames}");
    }

    #[test]
    fn cuts_at_keyframes() {
        let kf: Vec<(u64, i64)> = (0..10).map(|i| (i * 10, i as i64 * 10)).collect();
        let s = split_shards(100, &kf, 25);
        assert_eq!(s, vec![(0, 30), (30, 60), (60, 90), (90, 100)]);
        check_cover(100, &s);
    }

    #[test]
    fn sparse_keyframes_fall_back_to_fixed_pieces() {
        let s = split_shards(100, &[(0, 0)], 30);
        assert_eq!(s, vec![(0, 30), (30, 60), (60, 100)]);
        check_cover(100, &s);
    }

    #[test]
    fn covers_every_frame_exactly_once_for_many_inputs() {
        // A deterministic sweep standing in for a property test.
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut rnd = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for _ in 0..2000 {
            let frames = 1 + rnd(500);
            let target = 1 + rnd(120);
            let mut kf: Vec<u64> = (0..rnd(40)).map(|_| rnd(frames + 5)).collect();
            kf.push(0);
            kf.sort();
            kf.dedup();
            let kf: Vec<(u64, i64)> = kf.into_iter().map(|k| (k, k as i64)).collect();
            let s = split_shards(frames, &kf, target);
            check_cover(frames, &s);
            for &(a, b) in &s {
                assert!(b - a < 2 * target || kf.iter().any(|k| k.0 == a), "oversized shard {a}..{b} target {target}");
            }
        }
    }

    #[test]
    fn zero_frames_give_no_shards() {
        assert!(split_shards(0, &[(0, 0)], 10).is_empty());
    }
}
