//! Random runs of the state machine with simulated workers: leases,
//! reports (in order, as the reporter sends them), duplicated and stale
//! reports, failures, expiries and splits, in any interleaving.
//! (Beside the state, not in it: it drives the state machine with the
//! scheduler, which depends on the state.)
use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::scheduling::{choose_shards, choose_split, split_shards};
use crate::state::apply::tests::*;
#[allow(unused_imports)]
use crate::state::apply::*;
#[allow(unused_imports)]
use crate::state::command::*;
#[allow(unused_imports)]
use crate::state::model::*;
#[allow(unused_imports)]
use crate::state::outcome::*;

#[derive(Debug, Clone)]
enum Op {
    Lease(usize),
    Steal(usize),
    /// Worker, which lease, how many frames.
    Work(usize, usize, u64),
    Duplicate(usize),
    Fail(usize),
    Expire(usize),
    ExpireStale(usize),
    StaleReport(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..3).prop_map(Op::Lease),
        2 => (0usize..3).prop_map(Op::Steal),
        8 => (0usize..3, 0usize..4, 1u64..7).prop_map(|(w, l, n)| Op::Work(w, l, n)),
        2 => (0usize..3).prop_map(Op::Duplicate),
        1 => (0usize..3).prop_map(Op::Fail),
        1 => (0usize..50).prop_map(Op::Expire),
        1 => (0usize..50).prop_map(Op::ExpireStale),
        1 => (0usize..3).prop_map(Op::StaleReport),
    ]
}

/// A lease as its worker sees it: it works from `next` up to `end`.
#[derive(Debug)]
struct Held {
    shard: u32,
    epoch: u64,
    next: u64,
    end: u64,
}

#[derive(Default)]
struct SimWorker {
    capacity: u32,
    held: Vec<Held>,
    last: Option<Request>,
    /// Leases it has let go of: (shard, epoch, a frame of it).
    old: Vec<(u32, u64, u64)>,
}

struct Sim {
    w: World,
    workers: Vec<SimWorker>,
    step: u64,
    frames: u64,
}

fn name(i: usize) -> String {
    format!("w{i}")
}

impl Sim {
    fn new(frames: u64, step: u64, keyframes: &[u64], target: u64, capacities: &[u32]) -> Sim {
        let mut w = World { st: State::default(), sink: MemSink::default() };
        let mut sp = spec(None);
        sp.frame_step = step;
        sp.max_attempts = 1_000;
        w.apply(Request::Submit { spec: sp, now_ms: 1 });
        let mut kf: Vec<u64> = keyframes.iter().map(|k| k % frames).chain([0]).collect();
        kf.sort();
        kf.dedup();
        let keyframes: Vec<(u64, i64)> = kf.into_iter().map(|k| (k, k as i64)).collect();
        let shards = split_shards(frames, &keyframes, target);
        w.apply(Request::Plan { job: 1, plan: Plan { frames, keyframes, ..plan(frames) }, shards, now_ms: 2 });
        let mut workers = Vec::new();
        for (i, &capacity) in capacities.iter().enumerate() {
            w.apply(Request::RegisterWorker { name: name(i), addr: String::new(), capacity, models: spec(None).models, now_ms: 3 });
            workers.push(SimWorker { capacity, ..Default::default() });
        }
        Sim { w, workers, step, frames }
    }

    fn free(&self, i: usize) -> u32 {
        self.workers[i].capacity.saturating_sub(self.workers[i].held.len() as u32)
    }

    fn take(&mut self, i: usize, resp: Response) {
        let Response::Granted(g) = resp else { return };
        for g in g {
            let s = &self.w.job().shards[g.shard as usize];
            self.workers[i].held.push(Held { shard: g.shard, epoch: g.epoch, next: s.cursor, end: s.end });
        }
    }

    fn lease(&mut self, i: usize) {
        let live = (0..self.workers.len()).map(name).collect();
        let wanted = choose_shards(&self.w.st, &name(i), self.free(i), &live);
        if !wanted.is_empty() {
            let r = self.w.apply(Request::Grant { worker: name(i), shards: wanted.clone(), now_ms: 4 });
            assert!(matches!(&r, Response::Granted(g) if g.len() == wanted.len()), "chose {wanted:?}, granted {r:?}");
            self.take(i, r);
        }
    }

    fn steal(&mut self, i: usize) {
        if let Some(st) = choose_split(&self.w.st, &name(i), self.free(i)) {
            let r = self.w.apply(Request::Split { job: 1, shard: st.shard, epoch: st.epoch, at: st.at, worker: name(i), now_ms: 5 });
            assert!(matches!(&r, Response::Granted(g) if g.len() == 1), "chose {st:?}, split gave {r:?}");
            self.take(i, r);
        }
    }

    /// Worker `i` reports the next `n` analysed frames of one of its
    /// leases (done once it reaches the end it was told).
    fn work(&mut self, i: usize, which: usize, n: u64) {
        let step = self.step;
        let sw = &mut self.workers[i];
        if sw.held.is_empty() {
            return;
        }
        let k = which % sw.held.len();
        let h = &sw.held[k];
        let first = h.next.div_ceil(step) * step;
        let frames: Vec<u64> = (0..n).map(|j| first + j * step).take_while(|&f| f < h.end).collect();
        let done = frames.last().map_or(first, |&f| f + step) >= h.end;
        let next = if done { h.end } else { frames.last().map_or(h.next, |&f| f + 1) };
        let r = report(&name(i), h.shard, h.epoch, &frames, next, done);
        sw.last = Some(r.clone());
        let resp = self.w.apply(r);
        let sw = &mut self.workers[i];
        match resp {
            Response::Reported { .. } if !done => sw.held[k].next = next,
            Response::Reported { .. } | Response::Rejected(_) => {
                // Done, or refused (lease lost, shard done): the worker stops it.
                let h = sw.held.remove(k);
                sw.old.push((h.shard, h.epoch, first));
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    fn fail(&mut self, i: usize) {
        let Some(h) = self.workers[i].held.pop() else { return };
        let mut r = report(&name(i), h.shard, h.epoch, &[], h.next, false);
        if let Request::Report(r) = &mut r {
            r.error = Some("decoder crashed".into());
        }
        self.w.apply(r);
        self.workers[i].old.push((h.shard, h.epoch, h.next.div_ceil(self.step) * self.step));
    }

    fn leased(&self) -> Vec<(u32, u64)> {
        let j = self.w.job();
        j.shards.iter().filter_map(|s| if let ShardState::Leased { epoch, .. } = s.state { Some((s.index, epoch)) } else { None }).collect()
    }

    fn run(&mut self, op: &Op) {
        match *op {
            Op::Lease(i) => self.lease(i),
            Op::Steal(i) => self.steal(i),
            Op::Work(i, l, n) => self.work(i, l, n),
            Op::Duplicate(i) => {
                if let Some(r) = self.workers[i].last.clone() {
                    let resp = self.w.apply(r);
                    assert!(matches!(resp, Response::Reported { stored: 0 } | Response::Rejected(_)), "a duplicate stored something: {resp:?}");
                }
            }
            Op::Fail(i) => self.fail(i),
            Op::Expire(k) => {
                let l = self.leased();
                if !l.is_empty() {
                    let (shard, epoch) = l[k % l.len()];
                    assert_eq!(self.w.apply(Request::Expire { job: 1, shard, epoch }), Response::Ok);
                }
            }
            Op::ExpireStale(k) => {
                let l = self.leased();
                if !l.is_empty() {
                    let (shard, epoch) = l[k % l.len()];
                    let r = self.w.apply(Request::Expire { job: 1, shard, epoch: epoch + 1_000_000 });
                    assert!(matches!(r, Response::Rejected(_)), "a stale expiry applied: {r:?}");
                }
            }
            Op::StaleReport(i) => {
                if let Some(&(shard, epoch, f)) = self.workers[i].old.last() {
                    let frames: Vec<u64> = if f < self.frames { vec![f] } else { vec![] };
                    let resp = self.w.apply(report(&name(i), shard, epoch, &frames, f + 1, true));
                    assert!(matches!(resp, Response::Rejected(_)), "a stale report was accepted: {resp:?}");
                }
            }
        }
        self.check();
    }

    /// What must hold after every step.
    fn check(&self) {
        let j = self.w.job();
        assert_ne!(j.state, JobState::Failed, "{:?}", j.error);
        let stored: BTreeSet<u64> = self.w.sink.0.keys().map(|k| k.1).collect();
        for f in &stored {
            assert!(self.w.sink.0.contains_key(&(1, *f, 0)) && self.w.sink.0.contains_key(&(1, *f, 1)), "frame {f} half stored");
            assert_eq!(f % self.step, 0, "frame {f} is not analysed");
        }
        assert_eq!(j.frames_done, stored.len() as u64);
        let mut ranges: Vec<(u64, u64)> = j.shards.iter().map(|s| (s.start, s.end)).collect();
        ranges.sort();
        let mut at = 0;
        for (a, b) in ranges {
            assert!(a == at && b > a, "shards do not partition the video: {:?}", j.shards);
            at = b;
        }
        assert_eq!(at, self.frames);
        for s in &j.shards {
            assert!(s.start <= s.cursor && s.cursor <= s.end, "{s:?}");
            // Every analysed frame below a cursor is committed.
            let upto = if s.state == ShardState::Done { s.end } else { s.cursor };
            for f in (s.start..upto).filter(|f| f % self.step == 0) {
                assert!(stored.contains(&f), "frame {f} below the cursor of {s:?} is missing");
            }
        }
        if j.state == JobState::Completed {
            assert_eq!(stored.len() as u64, j.frames_total(), "completed with frames missing");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_runs_store_each_result_once_and_complete_exactly_when_all_is_stored(
        frames in 1u64..150,
        step in 1u64..4,
        keyframes in prop::collection::vec(0u64..150, 0..12),
        target in 3u64..60,
        capacities in prop::collection::vec(1u32..4, 3),
        ops in prop::collection::vec(op(), 0..120),
    ) {
        let mut sim = Sim::new(frames, step, &keyframes, target, &capacities);
        for op in &ops {
            sim.run(op);
        }
        // Then let every worker work to the end.
        for _ in 0..1_000 {
            if sim.w.job().state == JobState::Completed {
                break;
            }
            for i in 0..3 {
                sim.lease(i);
                sim.steal(i);
                for _ in 0..sim.workers[i].held.len() {
                    sim.work(i, 0, 5);
                }
                sim.check();
            }
        }
        let j = sim.w.job();
        prop_assert_eq!(j.state, JobState::Completed, "the job did not complete: {:?}", j.shards);
        prop_assert_eq!(sim.w.sink.0.len() as u64, 2 * j.frames_total());
    }
}
