//! Unit tests of the cutting and choosing, and properties of placement
//! and splits over random clusters.
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

/// Property tests of placement and work stealing over random cluster states.
mod properties {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::state::apply::{Changes, ResultSink};
    use crate::state::command::{Granted, Request, Response};
    use crate::state::model::{Job, JobSpec, Plan, Shard, WorkerRec};

    const MODELS: [&str; 3] = ["a", "b", "c"];

    fn models(mask: u8) -> Vec<String> {
        MODELS.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, m)| m.to_string()).collect()
    }

    /// A worker: capacity, models mask, draining, free slots it asks with, live.
    type WorkerP = (u32, u8, bool, u32, bool);
    /// A shard: state selector, holder index, cursor seed.
    type ShardP = (u8, usize, u64);
    /// A job: models mask, frame step, frames, keyframes, shard target, state
    /// selector, shards, busy (no shard pending: all leased or done).
    type JobP = (u8, u64, u64, Vec<u64>, u64, u8, Vec<ShardP>, bool);

    fn worker_p() -> impl Strategy<Value = WorkerP> {
        (0u32..9, 0u8..8, prop::bool::weighted(0.2), 0u32..6, prop::bool::weighted(0.8))
    }

    fn job_p() -> impl Strategy<Value = JobP> {
        (
            1u8..8,
            1u64..4,
            1u64..600,
            prop::collection::vec(0u64..600, 0..30),
            1u64..200,
            0u8..10,
            prop::collection::vec((0u8..10, 0usize..8, 0u64..1000), 1..30),
            any::<bool>(),
        )
    }

    #[test]
    fn a_lease_plan_shares_file_shards_places_live_ones_and_else_splits() {
        // w0 and w1 offer every model; job 1 (a file) has its 4 shards
        // pending, job 2 is a live stream placed on w1.
        let ws: [WorkerP; 2] = [(4, 0b111, false, 4, true), (4, 0b111, false, 0, true)];
        let pending: Vec<ShardP> = vec![(0, 0, 0)];
        let js: [JobP; 2] = [(0b001, 1, 400, vec![], 100, 0, pending.clone(), false), (0b001, 1, 100, vec![], 100, 0, pending, false)];
        let mut w = build(&ws, &js);
        let j2 = w.state.jobs.get_mut(&2).unwrap();
        j2.live = Some(crate::state::model::LiveSpec { key: "k".into(), worker: "w1".into(), slot: 0, url: "rtmp://h:1/live/k".into() });
        for s in &mut j2.shards {
            s.state = ShardState::Pending;
        }
        let file_shards = |p: &LeasePlan| match p {
            LeasePlan::Grant(g) => g.iter().filter(|(j, _)| *j == 1).count(),
            _ => 0,
        };
        // w0: its fair share of the file job, never the live shard.
        let p0 = plan_lease(&w.state, "w0", 4, &w.live);
        assert_eq!(p0, LeasePlan::Grant(choose_shards(&w.state, "w0", 4, &w.live).into_iter().filter(|(j, _)| *j == 1).collect()));
        assert!(file_shards(&p0) > 0);
        // w1 asks with no free slot: it still gets its live shard, and only that.
        assert_eq!(plan_lease(&w.state, "w1", 0, &w.live), LeasePlan::Grant(vec![(2, 0)]));
        // Nothing pending (every file shard leased to w1 from its start, the
        // live one ended): w0 takes over the tail of one.
        let mut epoch = 10;
        for s in &mut w.state.jobs.get_mut(&1).unwrap().shards {
            epoch += 1;
            s.state = ShardState::Leased { worker: "w1".into(), epoch, since_ms: 0, lease_end: s.end };
            s.cursor = s.start;
        }
        w.state.jobs.get_mut(&2).unwrap().state = JobState::Completed;
        match plan_lease(&w.state, "w0", 4, &w.live) {
            LeasePlan::Split(st) => assert_eq!(st.job, 1),
            other => panic!("expected a split, got {other:?}"),
        }
        // And a worker that offers none of the models gets nothing.
        w.state.workers.get_mut("w0").unwrap().models = vec!["z".into()];
        assert_eq!(plan_lease(&w.state, "w0", 4, &w.live), LeasePlan::Nothing);
    }

    struct World {
        state: State,
        live: BTreeSet<String>,
        asked: BTreeMap<String, u32>,
    }

    fn build(ws: &[WorkerP], js: &[JobP]) -> World {
        let mut state = State::default();
        let mut live = BTreeSet::new();
        let mut asked = BTreeMap::new();
        for (i, &(capacity, mask, draining, ask, is_live)) in ws.iter().enumerate() {
            let name = format!("w{i}");
            state.workers.insert(
                name.clone(),
                WorkerRec { name: name.clone(), addr: String::new(), capacity, models: models(mask), registered_at_ms: 0, draining },
            );
            if is_live {
                live.insert(name.clone());
            }
            asked.insert(name, ask);
        }
        let mut epoch = 1;
        for (id, (mask, step, frames, kf, target, sel, sp, busy)) in js.iter().enumerate() {
            let id = id as u64 + 1;
            let mut kf: Vec<u64> = kf.iter().map(|k| k % frames).chain([0]).collect();
            kf.sort();
            kf.dedup();
            let keyframes: Vec<(u64, i64)> = kf.iter().map(|&k| (k, k as i64 * 10)).collect();
            let state_of_job = match sel {
                0..=6 => JobState::Running,
                7 => JobState::Queued,
                8 => JobState::Completed,
                _ => JobState::Cancelled,
            };
            let mut shards = Vec::new();
            if state_of_job != JobState::Queued {
                for (i, (start, end)) in split_shards(*frames, &keyframes, *target).into_iter().enumerate() {
                    let (ssel, holder, seed) = sp[i % sp.len()];
                    let cursor = start + seed % (end - start + 1);
                    let (state, cursor) = match ssel {
                        0..=3 if !busy => (ShardState::Pending, cursor),
                        0..=7 if state_of_job == JobState::Running && !ws.is_empty() => {
                            epoch += 1;
                            let worker = format!("w{}", holder % ws.len());
                            (ShardState::Leased { worker, epoch, since_ms: 0, lease_end: end }, cursor)
                        }
                        0..=7 => (ShardState::Pending, cursor),
                        _ => (ShardState::Done, end),
                    };
                    shards.push(Shard { index: i as u32, start, end, cursor, state, attempts: 0, last_error: None });
                }
            }
            let spec = JobSpec {
                name: format!("job{id}"),
                source: "/v.mp4".into(),
                models: models(*mask),
                frame_step: *step,
                target_height: 100,
                request_id: None,
                max_attempts: 3,
                frames_height: 0,
                frames_quality: 0,
            frames_every_ms: 0,
                keep_s: 0,
                keep_what: Default::default(),
                owner: String::new(),
                rules: Vec::new(),
                zones: Vec::new(),
                tracks: false,
            };
            let plan = Plan { frames: *frames, width: 1, height: 1, time_base: (1, 25), pts0: 0, fps: 25.0, keyframes };
            let mut job = Job::new(id, spec, state_of_job, 0, shards, None);
            job.started_at_ms = 0;
            job.plan = (state_of_job != JobState::Queued).then_some(plan);
            state.jobs.insert(id, job);
        }
        state.next_epoch = epoch + 1;
        World { state, live, asked }
    }

    fn offers_job(w: &WorkerRec, j: &Job) -> bool {
        j.spec.models.iter().all(|m| w.models.contains(m))
    }

    /// Shards leased to `name` in running jobs, counted the plain way.
    fn holds(state: &State, name: &str) -> u32 {
        let mut n = 0;
        for j in state.jobs.values() {
            for s in &j.shards {
                if j.state == JobState::Running && matches!(&s.state, ShardState::Leased { worker, .. } if worker == name) {
                    n += 1;
                }
            }
        }
        n
    }

    /// Pending shards of running jobs that `w` could run, oldest job first.
    fn candidates(state: &State, w: &WorkerRec) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        for j in state.jobs.values() {
            if j.state == JobState::Running && offers_job(w, j) {
                for s in &j.shards {
                    if s.state == ShardState::Pending {
                        out.push((j.id, s.index));
                    }
                }
            }
        }
        out
    }

    /// Analysed frames still to commit: `(job, frame)` for every shard not done.
    fn to_analyse(state: &State) -> BTreeSet<(u64, u64)> {
        let mut out = BTreeSet::new();
        for j in state.jobs.values() {
            let step = j.spec.frame_step;
            for s in j.shards.iter().filter(|s| s.state != ShardState::Done) {
                out.extend((s.cursor..s.end).filter(|f| f % step == 0).map(|f| (j.id, f)));
            }
        }
        out
    }

    struct NoResults;
    impl ResultSink for NoResults {
        fn contains(&self, _: u64, _: u64, _: u8) -> bool {
            false
        }
        fn put(&mut self, _: u64, _: u64, _: u8, _: f64, _: &str) {
            panic!("a split stored a result");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        /// Placement: within free slots, only pending shards, each once, only
        /// to a worker that can run them, something whenever something fits,
        /// and exactly the fair share: with F the asker's free slots, P the
        /// pending shards it could run and T the free slots of the live,
        /// non-draining workers that could run one of them (the asker
        /// included), it gets the first min(F, max(1, ⌈P·F/T⌉)) of them in
        /// (oldest job, shard) order.
        #[test]
        fn placement_is_safe_and_fair(ws in prop::collection::vec(worker_p(), 1..6), js in prop::collection::vec(job_p(), 0..4)) {
            let w = build(&ws, &js);
            for (name, rec) in &w.state.workers {
                let asked = w.asked[name];
                let got = choose_shards(&w.state, name, asked, &w.live);
                let free = asked.min(rec.capacity.saturating_sub(holds(&w.state, name)));
                prop_assert!(got.len() as u32 <= free, "{name} got {} shards with {free} free slots", got.len());
                if rec.draining {
                    prop_assert!(got.is_empty(), "draining {name} got {got:?}");
                    continue;
                }
                let distinct: BTreeSet<_> = got.iter().collect();
                prop_assert_eq!(distinct.len(), got.len(), "a shard granted twice: {:?}", got);
                for (job, shard) in &got {
                    let j = &w.state.jobs[job];
                    prop_assert_eq!(j.state, JobState::Running);
                    prop_assert_eq!(&j.shards[*shard as usize].state, &ShardState::Pending);
                    prop_assert!(offers_job(rec, j), "{} lacks the models of job {}", name, job);
                }
                let cands = candidates(&w.state, rec);
                if free > 0 && !cands.is_empty() {
                    prop_assert!(!got.is_empty(), "{name} has {free} free slots and {} shards fit, got none", cands.len());
                }
                // The exact fair share, counted independently.
                let jobs: BTreeSet<u64> = cands.iter().map(|c| c.0).collect();
                let mut total = free as u64;
                for (other, o) in &w.state.workers {
                    if other != name && !o.draining && w.live.contains(other) && jobs.iter().any(|j| offers_job(o, &w.state.jobs[j])) {
                        total += o.capacity.saturating_sub(holds(&w.state, other)) as u64;
                    }
                }
                let (p, f) = (cands.len() as u64, free as u64);
                let expected = if p == 0 || f == 0 { 0 } else { ((p * f).div_ceil(total)).max(1).min(f) };
                prop_assert_eq!(got.len() as u64, expected, "P={} F={} T={}", p, f, total);
                prop_assert!(got.len() as u64 <= 1.max((p * f).div_ceil(total.max(1))));
                prop_assert_eq!(&got[..], &cands[..got.len()], "not the oldest pending shards first");
            }
        }

        /// Work stealing picks another worker's leased shard with the most
        /// unacknowledged analysed frames (≥ 2 × MIN_STOLEN_FRAMES), cuts it
        /// strictly inside (cursor, end) at the first qualifying keyframe or
        /// else at the aligned midpoint; applying the split keeps the shards
        /// a partition of [0, frames) and the frames still to analyse
        /// unchanged.
        #[test]
        fn splits_are_well_placed_and_lose_nothing(ws in prop::collection::vec(worker_p(), 1..6), js in prop::collection::vec(job_p(), 1..4)) {
            let w = build(&ws, &js);
            for (name, rec) in &w.state.workers {
                let asked = w.asked[name];
                let steal = choose_split(&w.state, name, asked);
                let free = asked.min(rec.capacity.saturating_sub(holds(&w.state, name)));
                // The best candidate, counted the plain way.
                let mut best = 0;
                for j in w.state.jobs.values().filter(|j| j.state == JobState::Running && offers_job(rec, j)) {
                    for s in &j.shards {
                        if matches!(&s.state, ShardState::Leased { worker, .. } if worker != name) {
                            best = best.max(analysed_in(s.cursor, s.end, j.spec.frame_step));
                        }
                    }
                }
                let pending = !candidates(&w.state, rec).is_empty();
                let Some(st) = steal else {
                    prop_assert!(rec.draining || free == 0 || pending || best < 2 * MIN_STOLEN_FRAMES, "{name} could steal {best} frames");
                    continue;
                };
                prop_assert!(!rec.draining && free > 0 && !pending, "a split while pending work fits or without a free slot");
                let j = &w.state.jobs[&st.job];
                let s = &j.shards[st.shard as usize];
                let step = j.spec.frame_step;
                prop_assert!(j.state == JobState::Running && offers_job(rec, j));
                prop_assert!(matches!(&s.state, ShardState::Leased { worker, epoch, .. } if worker != name && *epoch == st.epoch), "not another worker's current lease");
                let left = analysed_in(s.cursor, s.end, step);
                prop_assert_eq!(left, best, "not the shard with the most frames left");
                prop_assert!(left >= 2 * MIN_STOLEN_FRAMES);
                prop_assert!(s.cursor < st.at && st.at < s.end, "cut {} outside ({}, {})", st.at, s.cursor, s.end);
                prop_assert!(analysed_in(s.cursor, st.at, step) >= MIN_STOLEN_FRAMES);
                prop_assert!(analysed_in(st.at, s.end, step) >= MIN_STOLEN_FRAMES);
                let kfs = &j.plan.as_ref().unwrap().keyframes;
                let first = s.cursor.div_ceil(step) * step;
                let mid = first + left.div_ceil(2) * step;
                let qualifying = kfs.iter().map(|k| k.0).filter(|&k| k >= mid && k < s.end && analysed_in(k, s.end, step) >= MIN_STOLEN_FRAMES).min();
                match qualifying {
                    Some(k) => prop_assert_eq!(st.at, k, "a keyframe qualified"),
                    None => {
                        prop_assert_eq!(st.at, mid);
                        prop_assert_eq!(st.at % step, 0, "midpoint not aligned to the frame step");
                    }
                }

                // Apply it.
                let mut after = w.state.clone();
                let before_frames = to_analyse(&w.state);
                let n = j.shards.len() as u32;
                let req = Request::Split { job: st.job, shard: st.shard, epoch: st.epoch, at: st.at, worker: name.clone(), now_ms: 5 };
                let resp = after.apply(&req, &mut NoResults, &mut Changes::default());
                let Response::Granted(g) = resp else { return Err(TestCaseError::fail(format!("split rejected: {resp:?}"))) };
                prop_assert_eq!(g.len(), 1);
                let Granted { job, shard, epoch } = g[0].clone();
                prop_assert!(job == st.job && shard == n && epoch == w.state.next_epoch);
                prop_assert_eq!(&to_analyse(&after), &before_frames, "the frames still to analyse changed");
                let aj = &after.jobs[&st.job];
                let mut ranges: Vec<(u64, u64)> = aj.shards.iter().map(|s| (s.start, s.end)).collect();
                ranges.sort();
                let mut at = 0;
                for (a, b) in ranges {
                    prop_assert!(a == at && b > a, "shards no longer partition the video");
                    at = b;
                }
                prop_assert_eq!(at, aj.plan.as_ref().unwrap().frames);
                prop_assert_eq!(aj.shards[st.shard as usize].end, st.at);
                prop_assert_eq!(&aj.shards[st.shard as usize].state, &s.state, "the victim's lease changed");
                prop_assert!(matches!(&aj.shards[n as usize].state, ShardState::Leased { worker, .. } if worker == name), "the tail is not leased to the stealer");
                // The same split again is stale.
                prop_assert!(matches!(after.clone().apply(&req, &mut NoResults, &mut Changes::default()), Response::Rejected(_)));
            }
        }

        /// `cut_point` on its own: inside the range, both parts keep
        /// MIN_STOLEN_FRAMES, a keyframe when one qualifies, else the aligned midpoint.
        #[test]
        fn cut_points_are_inside_and_aligned(cursor in 0u64..500, len in 0u64..400, step in 1u64..6, kf in prop::collection::vec(0u64..1000, 0..20)) {
            let end = cursor + len;
            let n = analysed_in(cursor, end, step);
            prop_assume!(n >= 2 * MIN_STOLEN_FRAMES);
            let kfs: Vec<(u64, i64)> = kf.iter().map(|&k| (k, 0)).collect();
            let at = cut_point(&kfs, cursor, end, step);
            prop_assert!(cursor < at && at < end);
            prop_assert!(analysed_in(cursor, at, step) >= n.div_ceil(2), "the holder keeps at least half");
            prop_assert!(analysed_in(at, end, step) >= MIN_STOLEN_FRAMES);
            if !kf.contains(&at) {
                prop_assert_eq!(at % step, 0);
                prop_assert_eq!(analysed_in(cursor, at, step), n.div_ceil(2));
                prop_assert!(!kf.iter().any(|&k| k > at && k < end && analysed_in(k, end, step) >= MIN_STOLEN_FRAMES), "skipped a keyframe");
            }
        }
    }
}
