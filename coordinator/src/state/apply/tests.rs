//! The state machine's unit tests: pure, with results in memory.
use std::collections::BTreeMap;

use super::*;
use crate::state::command::{FrameOutputs, Freed, ModelOutput, PictureRef, Report};
use crate::state::model::{Job, JobState, ShardState};
use crate::state::model::{JobSpec, KeepWhat, Plan, StageTimes, LOBBY_SLOT};
use crate::state::outcome::{LeaseEvent, RejectionKind, ReleaseReason};

#[derive(Default)]
pub(crate) struct MemSink(pub(crate) BTreeMap<(u64, u64, u8), String>, BTreeMap<(u64, u64), PictureRef>);

impl ResultSink for MemSink {
    fn contains(&self, job: u64, frame: u64, model: u8) -> bool {
        self.0.contains_key(&(job, frame, model))
    }
    fn put(&mut self, job: u64, frame: u64, model: u8, _ts: f64, json: &str) {
        assert!(self.0.insert((job, frame, model), json.to_string()).is_none(), "a result was written twice");
    }
    fn put_frame(&mut self, job: u64, frame: u64, image: &PictureRef) {
        assert!(self.1.insert((job, frame), image.clone()).is_none(), "a frame was stored twice");
    }
    fn trim(&mut self, job: u64, from: u64, below: u64, results: bool, pictures: bool) -> Freed {
        let before = (self.0.len(), self.1.len());
        let cut = |j: u64, f: u64| j == job && (from..below).contains(&f);
        if results {
            self.0.retain(|k, _| !cut(k.0, k.1));
        }
        if pictures {
            self.1.retain(|k, _| !cut(k.0, k.1));
        }
        Freed { results: (before.0 - self.0.len()) as u64, frames: (before.1 - self.1.len()) as u64, bytes: 0 }
    }
    fn delete_job(&mut self, job: u64) -> Freed {
        let before = (self.0.len(), self.1.len());
        self.0.retain(|k, _| k.0 != job);
        self.1.retain(|k, _| k.0 != job);
        Freed { results: (before.0 - self.0.len()) as u64, frames: (before.1 - self.1.len()) as u64, bytes: 0 }
    }
}

pub(crate) fn spec(rid: Option<&str>) -> JobSpec {
    JobSpec {
        name: "clip".into(),
        source: "/clip.mp4".into(),
        models: vec!["objects".into(), "colors".into()],
        frame_step: 2,
        target_height: 720,
        request_id: rid.map(String::from),
        max_attempts: 2,
        frames_height: 0,
        frames_quality: 0,
        frames_every_ms: 0,
        keep_s: 0,
        keep_what: Default::default(),
        owner: String::new(),
        rules: Vec::new(),
        zones: Vec::new(),
        tracks: false,
    }
}

pub(crate) fn plan(frames: u64) -> Plan {
    Plan { frames, width: 64, height: 48, time_base: (1, 25), pts0: 0, fps: 25.0, keyframes: vec![(0, 0)] }
}

pub(crate) fn frame(n: u64) -> FrameOutputs {
    FrameOutputs {
        frame: n,
        timestamp: n as f64 / 25.0,
        outputs: vec![
            ModelOutput { model: "objects".into(), results_json: "[]".into(), error: false },
            ModelOutput { model: "colors".into(), results_json: format!("[{n}]"), error: false },
        ],
        image: None,
    }
}

pub(crate) fn report(worker: &str, shard: u32, epoch: u64, frames: &[u64], next: u64, done: bool) -> Request {
    Request::Report(Report {
        worker: worker.into(),
        job: 1,
        shard,
        epoch,
        frames: frames.iter().map(|&n| frame(n)).collect(),
        next_frame: next,
        done,
        error: None,
        times: StageTimes::default(),
        bytes: 10,
        now_ms: 99,
        frame_size: None,
    })
}

pub(crate) struct World {
    pub(crate) st: State,
    pub(crate) sink: MemSink,
}

impl World {
    pub(crate) fn apply(&mut self, r: Request) -> Response {
        self.st.apply(&r, &mut self.sink, &mut Changes::default())
    }

    /// A job of 20 frames in two shards, two workers registered.
    pub(crate) fn new() -> World {
        let mut w = World { st: State::default(), sink: MemSink::default() };
        assert_eq!(w.apply(Request::Submit { spec: spec(Some("r1")), now_ms: 1 }), Response::JobCreated { job: 1, existing: false });
        w.apply(Request::Plan { job: 1, plan: plan(20), shards: vec![(0, 10), (10, 20)], now_ms: 2 });
        for n in ["w1", "w2"] {
            w.apply(Request::RegisterWorker { name: n.into(), addr: String::new(), capacity: 1, models: spec(None).models, now_ms: 3 });
        }
        w
    }

    pub(crate) fn grant(&mut self, worker: &str, shard: u32) -> u64 {
        match self.apply(Request::Grant { worker: worker.into(), shards: vec![(1, shard)], now_ms: 4 }) {
            Response::Granted(g) if g.len() == 1 => g[0].epoch,
            other => panic!("grant failed: {other:?}"),
        }
    }

    pub(crate) fn job(&self) -> &Job {
        &self.st.jobs[&1]
    }
}

pub(crate) fn stored(r: Response) -> u32 {
    match r {
        Response::Reported { stored } => stored,
        other => panic!("report not accepted: {other:?}"),
    }
}

pub(crate) fn live(w: &mut World, slot: u32) -> u64 {
    let l = crate::state::model::LiveSpec { key: format!("k{slot}"), worker: "w1".into(), slot, url: format!("rtmp://h:1/live/k{slot}") };
    match w.apply(Request::CreateLive { spec: spec(None), live: l, now_ms: 5 }) {
        Response::JobCreated { job, .. } => job,
        other => panic!("{other:?}"),
    }
}

#[test]
pub(crate) fn a_pull_source_runs_unprobed_on_any_worker_resumes_after_expiry_and_ends_where_the_stream_ends() {
    let mut w = World::new();
    let mut sp = spec(None);
    sp.source = "rtmp://cam.example/live/s".into();
    let Response::JobCreated { job, .. } = w.apply(Request::Submit { spec: sp, now_ms: 5 }) else { panic!() };
    let j = &w.st.jobs[&job];
    assert_eq!((j.state, j.shards.len(), j.shards[0].end), (JobState::Running, 1, u64::MAX), "running at once, open-ended");
    assert!(j.is_live() && j.live.is_none());
    let grant = |w: &mut World, worker: &str| match w.apply(Request::Grant { worker: worker.into(), shards: vec![(job, 0)], now_ms: 6 }) {
        Response::Granted(g) => g[0].epoch,
        other => panic!("{other:?}"),
    };
    let rep = |worker: &str, e: u64, frames: &[u64], next: u64, done: bool| match report(worker, 0, e, frames, next, done) {
        Request::Report(mut r) => {
            r.job = job;
            Request::Report(r)
        }
        _ => unreachable!(),
    };
    let e1 = grant(&mut w, "w2");
    assert_eq!(stored(w.apply(rep("w2", e1, &[0, 2], 4, false))), 2);
    // Its worker dies: the lease expires and another worker resumes from the cursor.
    assert_eq!(w.apply(Request::Expire { job, shard: 0, epoch: e1 }), Response::Ok);
    assert_eq!(w.st.jobs[&job].shards[0].cursor, 4);
    let e2 = grant(&mut w, "w1");
    assert_eq!(stored(w.apply(rep("w1", e2, &[4, 6], 8, false))), 2);
    assert_eq!(stored(w.apply(rep("w1", e2, &[], 8, true))), 0);
    let j = &w.st.jobs[&job];
    assert_eq!((j.state, j.shards[0].end, j.frames_total()), (JobState::Completed, 8, 4));
}

#[test]
pub(crate) fn a_live_job_runs_on_its_worker_and_ends_where_the_publisher_stops() {
    let mut w = World::new();
    let job = live(&mut w, 0);
    assert!(matches!(w.apply(Request::CreateLive { spec: spec(None), live: w.st.jobs[&job].live.clone().unwrap(), now_ms: 6 }), Response::Rejected(_)), "a slot is used once");
    assert_eq!(w.st.jobs[&job].state, JobState::Running);
    assert_eq!(w.apply(Request::Grant { worker: "w2".into(), shards: vec![(job, 0)], now_ms: 6 }), Response::Granted(vec![]));
    let e = match w.apply(Request::Grant { worker: "w1".into(), shards: vec![(job, 0)], now_ms: 6 }) {
        Response::Granted(g) => g[0].epoch,
        other => panic!("{other:?}"),
    };
    let rep = |frames: &[u64], next: u64, done: bool| match report("w1", 0, e, frames, next, done) {
        Request::Report(mut r) => {
            r.job = job;
            r.times.frames_dropped = 3;
            Request::Report(r)
        }
        _ => unreachable!(),
    };
    assert_eq!(stored(w.apply(rep(&[0, 2, 6], 7, false))), 3);
    assert_eq!(stored(w.apply(rep(&[], 7, true))), 0);
    let j = &w.st.jobs[&job];
    assert_eq!(j.state, JobState::Completed);
    assert_eq!((j.shards[0].end, j.frames_total(), j.counters.times.frames_dropped), (7, 3, 6));
    // The slot is free again; an error fails a live job at once.
    let job2 = live(&mut w, 0);
    let e2 = match w.apply(Request::Grant { worker: "w1".into(), shards: vec![(job2, 0)], now_ms: 7 }) {
        Response::Granted(g) => g[0].epoch,
        other => panic!("{other:?}"),
    };
    let Request::Report(mut r) = report("w1", 0, e2, &[], 0, false) else { unreachable!() };
    r.job = job2;
    r.error = Some("no publisher".into());
    w.apply(Request::Report(r));
    assert_eq!(w.st.jobs[&job2].state, JobState::Failed);
}

#[test]
pub(crate) fn a_live_push_moves_to_another_worker_only_once_its_lease_expired() {
    let mut w = World::new();
    let job = live(&mut w, 0);
    let grant = |w: &mut World, worker: &str| match w.apply(Request::Grant { worker: worker.into(), shards: vec![(job, 0)], now_ms: 6 }) {
        Response::Granted(g) => g.first().map(|g| g.epoch),
        other => panic!("{other:?}"),
    };
    let e1 = grant(&mut w, "w1").unwrap();
    let rep = |worker: &str, epoch: u64, frames: &[u64], next: u64, done: bool| match report(worker, 0, epoch, frames, next, done) {
        Request::Report(mut r) => {
            r.job = job;
            Request::Report(r)
        }
        _ => unreachable!(),
    };
    assert_eq!(stored(w.apply(rep("w1", e1, &[0, 2, 4], 5, false))), 3);
    let mv = |to: &str| Request::MoveLive { job, worker: to.into(), url: format!("rtmp://h:9/live/k0#{to}") };
    // w1 holds it: a publisher at w2's lobby waits.
    assert!(matches!(w.apply(mv("w2")), Response::Rejected(m) if m.message.contains("held by worker 'w1'")));
    assert!(matches!(w.apply(mv("nobody")), Response::Rejected(m) if m.message.contains("unknown worker")));
    w.apply(Request::Drain { worker: "w2".into(), draining: true, hand_back: false });
    assert_eq!(w.apply(Request::Expire { job, shard: 0, epoch: e1 }), Response::Ok);
    assert!(matches!(w.apply(mv("w2")), Response::Rejected(m) if m.message.contains("draining")));
    w.apply(Request::Drain { worker: "w2".into(), draining: false, hand_back: false });
    // w2 (capacity 1) ingesting another stream is full.
    let l = crate::state::model::LiveSpec { key: "kx".into(), worker: "w2".into(), slot: 0, url: "rtmp://h:2/live/kx".into() };
    let Response::JobCreated { job: other, .. } = w.apply(Request::CreateLive { spec: spec(None), live: l, now_ms: 6 }) else { panic!() };
    assert!(matches!(w.apply(mv("w2")), Response::Rejected(m) if m.message.contains("is full")));
    assert_eq!(w.apply(Request::Cancel { job: other, now_ms: 7 }), Response::Ok);
    let abandon = |worker: &str| Request::AbandonLive { job, worker: worker.into(), error: "nobody came".into(), now_ms: 8 };
    assert_eq!(w.apply(mv("w2")), Response::Ok);
    // A decision to abandon it, made while it still named w1, does not fail it now.
    assert!(matches!(w.apply(abandon("w1")), Response::Rejected(_)));
    assert_eq!(w.st.jobs[&job].state, JobState::Running);
    let l = w.st.jobs[&job].live.clone().unwrap();
    assert_eq!((l.worker.as_str(), l.slot, l.url.as_str()), ("w2", LOBBY_SLOT, "rtmp://h:9/live/k0#w2"));
    // Only w2 is granted it now, from the committed cursor, under a new epoch.
    assert_eq!(grant(&mut w, "w1"), None);
    let e2 = grant(&mut w, "w2").unwrap();
    assert!(e2 > e1);
    assert!(matches!(w.apply(abandon("w2")), Response::Rejected(_)), "a stream being ingested is not abandoned");
    assert_eq!(w.st.jobs[&job].shards[0].cursor, 5);
    assert_eq!(w.apply(mv("w2")), Response::Ok, "a retried move is accepted");
    assert!(matches!(w.apply(mv("w1")), Response::Rejected(_)));
    // The dead worker's late report is refused; w2's frames continue from 5.
    assert!(matches!(w.apply(rep("w1", e1, &[6], 7, false)), Response::Rejected(_)));
    assert_eq!(stored(w.apply(rep("w2", e2, &[6, 8], 9, false))), 2);
    assert_eq!(stored(w.apply(rep("w2", e2, &[], 9, true))), 0);
    assert_eq!(w.st.jobs[&job].state, JobState::Completed);
    assert_eq!(w.st.jobs[&job].frames_done, 5);
    assert!(matches!(w.apply(mv("w1")), Response::Rejected(m) if m.message.contains("completed")));
    // A pull job (no LiveSpec) cannot be moved this way.
    let mut sp = spec(None);
    sp.source = "rtmp://cam.example/live/s".into();
    let Response::JobCreated { job: pull, .. } = w.apply(Request::Submit { spec: sp, now_ms: 9 }) else { panic!() };
    assert!(matches!(w.apply(Request::MoveLive { job: pull, worker: "w2".into(), url: "u".into() }), Response::Rejected(m) if m.message.contains("not a live push")));
    // A push still waiting for its publisher is abandoned with the error given.
    let waiting = live(&mut w, 0);
    let r = w.apply(Request::AbandonLive { job: waiting, worker: "w1".into(), error: "nobody came".into(), now_ms: 9 });
    assert_eq!(r, Response::Ok);
    assert_eq!((w.st.jobs[&waiting].state, w.st.jobs[&waiting].error.as_deref()), (JobState::Failed, Some("nobody came")));
}

#[test]
pub(crate) fn a_repeated_submit_with_the_same_request_id_returns_the_same_job() {
    let mut w = World::new();
    assert_eq!(w.apply(Request::Submit { spec: spec(Some("r1")), now_ms: 5 }), Response::JobCreated { job: 1, existing: true });
    assert_eq!(w.apply(Request::Submit { spec: spec(None), now_ms: 5 }), Response::JobCreated { job: 2, existing: false });
}

#[test]
pub(crate) fn duplicated_and_retried_reports_store_each_result_once() {
    let mut w = World::new();
    let e = w.grant("w1", 0);
    assert_eq!(stored(w.apply(report("w1", 0, e, &[0, 2, 4], 5, false))), 3);
    assert_eq!(stored(w.apply(report("w1", 0, e, &[0, 2, 4], 5, false))), 0, "a retry stored again");
    assert_eq!(stored(w.apply(report("w1", 0, e, &[4, 6], 7, false))), 1);
    assert_eq!(w.job().frames_done, 4);
    assert_eq!(w.sink.0.len(), 8);
    assert_eq!(w.job().shards[0].cursor, 7);
}

#[test]
pub(crate) fn the_cursor_moves_only_over_stored_frames_and_done_with_frames_missing_is_a_failed_attempt() {
    let mut w = World::new();
    let e = w.grant("w1", 0);
    // Shard 0 is [0, 10) at step 2. Frames 0 and 4 reported with next_frame 7: 2 and 6 missing.
    assert_eq!(stored(w.apply(report("w1", 0, e, &[0, 4], 7, false))), 2);
    assert_eq!(w.job().shards[0].cursor, 2, "the cursor stops at the first frame not stored");
    // "Done" (an early end of stream) with 2, 6 and 8 never reported.
    assert_eq!(stored(w.apply(report("w1", 0, e, &[], 10, true))), 0);
    let s = &w.job().shards[0];
    assert_eq!((s.state.clone(), s.attempts, s.cursor), (ShardState::Pending, 1, 2), "not done: a failed attempt");
    let err = s.last_error.clone().unwrap_or_default();
    assert!(err.contains("3 analysed frame(s) of shard 0 (frames 0–9) were never reported, the first is frame 2"), "{err}");
    assert_ne!(w.job().state, JobState::Completed);
    // Leased again, from frame 2; every frame reported: done.
    let e2 = w.grant("w2", 0);
    assert_eq!(stored(w.apply(report("w2", 0, e2, &[2, 6, 8], 10, true))), 3);
    assert_eq!(w.job().shards[0].state, ShardState::Done);
    assert_eq!(w.job().frames_done, 5);
}

#[test]
pub(crate) fn counters_a_worker_sends_cannot_overflow_the_apply() {
    let mut w = World::new();
    let e = w.grant("w1", 0);
    let huge = |frames: &[u64], next: u64| match report("w1", 0, e, frames, next, false) {
        Request::Report(mut r) => {
            r.bytes = u64::MAX;
            r.times = StageTimes {
                decode_s: f64::NAN,
                resize_s: f64::INFINITY,
                inference_s: [("colors".to_string(), -1.0)].into_iter().collect(),
                frames_decoded: u64::MAX,
                frames_dropped: u64::MAX,
                latency_ms: [(10, u64::MAX), (20, u64::MAX)].into_iter().collect(),
                reconnects: u64::MAX,
                gap_ms: u64::MAX,
            };
            Request::Report(r)
        }
        _ => unreachable!(),
    };
    // Twice: the second would overflow every counter.
    assert_eq!(stored(w.apply(huge(&[0], 1))), 1);
    assert_eq!(stored(w.apply(huge(&[2], 3))), 1);
    let c = &w.job().counters;
    assert_eq!((c.report_bytes, c.times.frames_dropped, c.times.frames_decoded, c.times.reconnects, c.times.gap_ms), (u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX));
    assert_eq!((c.times.decode_s, c.times.resize_s, c.times.inference_s["colors"]), (0.0, 0.0, 0.0), "non-finite and negative seconds are left out");
    assert_eq!(c.times.latency_quantile(0.5), 10.0);
}

#[test]
pub(crate) fn a_stale_epoch_is_rejected_and_changes_nothing() {
    let mut w = World::new();
    let e1 = w.grant("w1", 0);
    w.apply(report("w1", 0, e1, &[0, 2], 3, false));
    assert_eq!(w.apply(Request::Expire { job: 1, shard: 0, epoch: e1 }), Response::Ok);
    let e2 = w.grant("w2", 0);
    assert!(e2 > e1);
    // The reassigned shard resumes after what was acknowledged.
    assert_eq!(w.job().shards[0].cursor, 3);
    let before = w.sink.0.len();
    match w.apply(report("w1", 0, e1, &[4, 6], 7, true)) {
        Response::Rejected(r) => assert!(r.kind == RejectionKind::Stale && r.message.contains("stale"), "{r:?}"),
        other => panic!("stale report accepted: {other:?}"),
    }
    assert_eq!(w.sink.0.len(), before);
    assert_ne!(w.job().shards[0].state, ShardState::Done);
    // Another worker quoting the current epoch is refused too, and told why.
    match w.apply(report("w1", 0, e2, &[4], 5, false)) {
        Response::Rejected(r) => assert!(r.kind == RejectionKind::Stale && r.message.contains("leased to 'w2', not to 'w1'"), "{r:?}"),
        other => panic!("a report from the wrong worker was accepted: {other:?}"),
    }
    // An old expiry for the previous epoch does not touch the new lease.
    assert!(matches!(w.apply(Request::Expire { job: 1, shard: 0, epoch: e1 }), Response::Rejected(_)));
}

#[test]
pub(crate) fn the_job_completes_exactly_when_every_shard_is_done() {
    let mut w = World::new();
    let a = w.grant("w1", 0);
    let b = w.grant("w2", 1);
    stored(w.apply(report("w1", 0, a, &[0, 2, 4, 6, 8], 10, true)));
    assert_eq!(w.job().state, JobState::Running, "completed with a shard still open");
    stored(w.apply(report("w2", 1, b, &[10, 12, 14, 16], 18, false)));
    assert_eq!(w.job().state, JobState::Running);
    stored(w.apply(report("w2", 1, b, &[18], 20, true)));
    assert_eq!(w.job().state, JobState::Completed);
    assert_eq!(w.job().frames_done, 10);
    assert_eq!(w.job().frames_total(), 10);
    assert_eq!(w.job().finished_at_ms, 99);
    // Nothing more is accepted once it ended.
    assert!(matches!(w.apply(report("w2", 1, b, &[18], 20, true)), Response::Rejected(_)));
}

#[test]
pub(crate) fn reports_with_foreign_frames_or_missing_models_are_refused_whole() {
    let mut w = World::new();
    let e = w.grant("w1", 0);
    for bad in [&[0u64, 12][..], &[3][..]] {
        assert!(matches!(w.apply(report("w1", 0, e, bad, 13, false)), Response::Rejected(_)), "{bad:?}");
    }
    let mut r = report("w1", 0, e, &[0], 1, false);
    if let Request::Report(r) = &mut r {
        r.frames[0].outputs.pop();
    }
    assert!(matches!(w.apply(r), Response::Rejected(_)));
    assert!(w.sink.0.is_empty());
}

#[test]
pub(crate) fn a_shard_failing_too_often_fails_the_job_with_its_error() {
    let mut w = World::new();
    let fail = |w: &mut World, epoch| {
        let mut r = report("w1", 0, epoch, &[], 0, false);
        if let Request::Report(r) = &mut r {
            r.error = Some("decode error at frame 3".into());
        }
        w.apply(r)
    };
    let e = w.grant("w1", 0);
    stored(fail(&mut w, e));
    assert_eq!(w.job().state, JobState::Running);
    assert_eq!(w.job().shards[0].state, ShardState::Pending);
    let e = w.grant("w1", 0);
    stored(fail(&mut w, e));
    assert_eq!(w.job().state, JobState::Failed);
    assert!(w.job().error.as_deref().unwrap().contains("decode error at frame 3"));
}

#[test]
pub(crate) fn cancel_releases_leases_and_grants_skip_finished_jobs() {
    let mut w = World::new();
    let e = w.grant("w1", 0);
    assert_eq!(w.apply(Request::Cancel { job: 1, now_ms: 7 }), Response::Ok);
    assert_eq!(w.job().state, JobState::Cancelled);
    assert!(w.job().shards.iter().all(|s| !matches!(s.state, ShardState::Leased { .. })));
    assert_eq!(w.apply(Request::Grant { worker: "w2".into(), shards: vec![(1, 1)], now_ms: 8 }), Response::Granted(vec![]));
    assert!(matches!(w.apply(report("w1", 0, e, &[0], 1, false)), Response::Rejected(_)));
}

#[test]
pub(crate) fn a_draining_worker_gets_nothing_and_hands_back_its_leases() {
    let mut w = World::new();
    let e = w.grant("w1", 0);
    stored(w.apply(report("w1", 0, e, &[0, 2], 3, false)));
    assert_eq!(w.apply(Request::Drain { worker: "w1".into(), draining: true, hand_back: true }), Response::Drained { leases_returned: 1 });
    assert_eq!(w.job().shards[0].state, ShardState::Pending);
    assert_eq!(w.job().shards[0].cursor, 3, "the handed-back shard resumes after what was committed");
    assert_eq!(w.apply(Request::Grant { worker: "w1".into(), shards: vec![(1, 1)], now_ms: 5 }), Response::Granted(vec![]));
    // Its old lease is fenced off.
    assert!(matches!(w.apply(report("w1", 0, e, &[4], 5, false)), Response::Rejected(_)));
    assert_eq!(w.apply(Request::Drain { worker: "w1".into(), draining: false, hand_back: false }), Response::Drained { leases_returned: 0 });
    w.grant("w1", 1);
    assert!(matches!(w.apply(Request::Drain { worker: "nobody".into(), draining: true, hand_back: false }), Response::Rejected(_)));
}

#[test]
pub(crate) fn a_leaving_worker_hands_back_its_leases_without_failed_attempts() {
    let mut w = World::new();
    let e = w.grant("w1", 0);
    stored(w.apply(report("w1", 0, e, &[0, 2], 3, false)));
    assert_eq!(w.apply(Request::Leave { worker: "w1".into() }), Response::Drained { leases_returned: 1 });
    let s = &w.job().shards[0];
    assert_eq!((s.state.clone(), s.cursor, s.attempts), (ShardState::Pending, 3, 0), "resumes after what was committed, no attempt counted");
    // Its old lease is fenced off; it is not draining: leases go on once it is back.
    assert!(matches!(w.apply(report("w1", 0, e, &[4], 5, false)), Response::Rejected(_)));
    w.grant("w2", 0);
    w.grant("w1", 1);
    assert!(matches!(w.apply(Request::Leave { worker: "nobody".into() }), Response::Rejected(_)));
}

pub(crate) fn split(w: &mut World, shard: u32, epoch: u64, at: u64, worker: &str) -> Response {
    w.apply(Request::Split { job: 1, shard, epoch, at, worker: worker.into(), now_ms: 6 })
}

#[test]
pub(crate) fn a_split_hands_the_tail_over_and_each_result_is_stored_once() {
    let mut w = World::new();
    let e1 = w.grant("w1", 0);
    stored(w.apply(report("w1", 0, e1, &[0, 2], 3, false)));
    let e2 = match split(&mut w, 0, e1, 6, "w2") {
        Response::Granted(g) if g.len() == 1 && g[0].shard == 2 => g[0].epoch,
        other => panic!("split failed: {other:?}"),
    };
    assert!(e2 > e1);
    let (head, tail) = (&w.job().shards[0], &w.job().shards[2]);
    assert_eq!((head.start, head.end, head.cursor), (0, 6, 3), "the victim keeps its head and cursor");
    assert!(matches!(head.state, ShardState::Leased { epoch, lease_end: 10, .. } if epoch == e1), "{:?}", head.state);
    assert_eq!((tail.start, tail.end, tail.cursor), (6, 10, 6));
    assert!(matches!(&tail.state, ShardState::Leased { worker, epoch, lease_end: 10, .. } if worker == "w2" && *epoch == e2));

    // The thief reports first; then the victim, unaware of the cut, sends
    // frames on both sides of it: only those before the cut are kept, and
    // reaching the cut makes its shard done although it did not say so.
    assert_eq!(stored(w.apply(report("w2", 2, e2, &[6], 7, false))), 1);
    assert_eq!(stored(w.apply(report("w1", 0, e1, &[4, 6, 8], 9, false))), 1);
    assert_eq!(w.job().shards[0].state, ShardState::Done);
    assert_eq!(w.job().shards[0].cursor, 6);
    assert_eq!(w.job().counters.errors, 0, "dropped frames are not errors");
    // Its next report is refused (which stops it on the worker).
    match w.apply(report("w1", 0, e1, &[8], 10, true)) {
        Response::Rejected(r) => assert!(r.kind == RejectionKind::Done && r.message.contains("done"), "{r:?}"),
        other => panic!("a report for a done shard was accepted: {other:?}"),
    }
    assert_eq!(stored(w.apply(report("w2", 2, e2, &[8], 10, true))), 1);
    assert_eq!(w.job().shards[2].state, ShardState::Done);
    assert_eq!(w.job().state, JobState::Running, "shard 1 is still pending");

    let e3 = w.grant("w1", 1);
    stored(w.apply(report("w1", 1, e3, &[10, 12, 14, 16, 18], 20, true)));
    assert_eq!(w.job().state, JobState::Completed);
    assert_eq!(w.job().frames_done, 10);
    assert_eq!(w.sink.0.len(), 20, "every (frame, model) exactly once");
}

#[test]
pub(crate) fn a_victim_done_report_past_the_cut_completes_only_its_head() {
    let mut w = World::new();
    let e1 = w.grant("w1", 0);
    let Response::Granted(g) = split(&mut w, 0, e1, 4, "w2") else { panic!("split rejected") };
    // The victim finishes the whole range it was leased.
    assert_eq!(stored(w.apply(report("w1", 0, e1, &[0, 2, 4, 6, 8], 10, true))), 2);
    assert_eq!(w.job().shards[0].state, ShardState::Done);
    assert_ne!(w.job().shards[2].state, ShardState::Done, "the tail is the thief's to finish");
    assert_eq!(w.st.remaining(1), 3 + 5);
    assert_eq!(stored(w.apply(report("w2", 2, g[0].epoch, &[4, 6, 8], 10, true))), 3);
    assert_eq!(w.st.remaining(1), 5);
}

#[test]
pub(crate) fn a_stale_or_impossible_split_is_rejected_and_changes_nothing() {
    let mut w = World::new();
    let e1 = w.grant("w1", 0);
    stored(w.apply(report("w1", 0, e1, &[0, 2, 4], 5, false)));
    let before = w.st.clone();
    for (at, why) in [(4, "at the committed part"), (5, "at the cursor"), (10, "at the end"), (12, "beyond the end"), (6, "no frame left before the cut")] {
        assert!(matches!(split(&mut w, 0, e1, at, "w2"), Response::Rejected(_)), "cut {at} ({why}) accepted");
    }
    assert!(matches!(split(&mut w, 0, e1 + 7, 8, "w2"), Response::Rejected(_)), "a stale epoch was accepted");
    assert!(matches!(split(&mut w, 0, e1, 8, "w1"), Response::Rejected(_)), "split to its own holder");
    assert!(matches!(split(&mut w, 0, e1, 8, "ghost"), Response::Rejected(_)), "split to an unknown worker");
    assert!(matches!(split(&mut w, 1, e1, 14, "w2"), Response::Rejected(_)), "split of a pending shard");
    w.apply(Request::Drain { worker: "w2".into(), draining: true, hand_back: false });
    assert!(matches!(split(&mut w, 0, e1, 8, "w2"), Response::Rejected(_)), "split to a draining worker");
    w.apply(Request::Drain { worker: "w2".into(), draining: false, hand_back: false });
    assert_eq!(w.st, before);
    // Once the lease expired, the old epoch cannot be split.
    w.apply(Request::Expire { job: 1, shard: 0, epoch: e1 });
    assert!(matches!(split(&mut w, 0, e1, 8, "w2"), Response::Rejected(_)));
    assert_eq!(w.job().shards.len(), 2);
}

#[test]
pub(crate) fn a_split_head_handed_out_again_is_leased_with_its_new_end() {
    let mut w = World::new();
    let e1 = w.grant("w1", 0);
    let Response::Granted(_) = split(&mut w, 0, e1, 6, "w2") else { panic!("split rejected") };
    assert_eq!(w.apply(Request::Expire { job: 1, shard: 0, epoch: e1 }), Response::Ok);
    let e3 = w.grant("w1", 0);
    assert!(matches!(w.job().shards[0].state, ShardState::Leased { lease_end: 6, .. }));
    // The new holder was told the shard ends at 6: a frame past it is refused.
    assert!(matches!(w.apply(report("w1", 0, e3, &[6], 7, false)), Response::Rejected(_)));
    assert_eq!(stored(w.apply(report("w1", 0, e3, &[0, 2, 4], 6, true))), 3);
    assert_eq!(w.job().shards[0].state, ShardState::Done);
}

#[test]
pub(crate) fn trim_deletes_below_the_cut_once_and_later_frames_below_it_are_not_stored() {
    let mut w = World::new();
    let e = w.grant("w1", 0);
    let mut r = report("w1", 0, e, &[0, 2, 4], 5, false);
    if let Request::Report(r) = &mut r {
        for f in &mut r.frames {
            f.image = Some(PictureRef { epoch: e, len: 10, crc: 1, width: 4, height: 4 });
        }
    }
    assert_eq!(stored(w.apply(r)), 3);
    assert_eq!(w.job().counters.last_timestamp, 4.0 / 25.0, "the newest committed timestamp, file jobs too");
    match w.apply(Request::Trim { job: 1, before_frame: 3 }) {
        Response::Trimmed { freed } => assert_eq!((freed.results, freed.frames), (4, 2), "frames 0 and 2: 2 models, 2 pictures"),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.job().trimmed_before, 3);
    assert!(w.sink.0.keys().all(|k| k.1 == 4) && w.sink.1.keys().all(|k| k.1 == 4), "only frame 4 is left");
    // Trimming again, or lower, changes nothing.
    assert_eq!(w.apply(Request::Trim { job: 1, before_frame: 2 }), Response::Trimmed { freed: Freed::default() });
    // A retried delivery of frame 2 (now deleted) is not stored again; frame 6 is.
    assert_eq!(stored(w.apply(report("w1", 0, e, &[2, 6], 7, false))), 1);
    assert!(!w.sink.0.contains_key(&(1, 2, 0)) && w.sink.0.contains_key(&(1, 6, 0)));
    // Results only: pictures stay.
    w.st.jobs.get_mut(&1).unwrap().spec.keep_what = KeepWhat::Results;
    w.apply(Request::Trim { job: 1, before_frame: 5 });
    assert!(!w.sink.0.contains_key(&(1, 4, 0)) && w.sink.1.contains_key(&(1, 4)), "results gone, the picture kept");
    assert!(matches!(w.apply(Request::Trim { job: 9, before_frame: 5 }), Response::Rejected(_)));
}

#[test]
pub(crate) fn prune_deletes_finished_jobs_with_their_results_and_frames_only() {
    let mut w = World::new();
    // Job 1 runs; job 2 is cancelled at t=7 (finished), job 3 cancelled at t=50.
    let e = w.grant("w1", 0);
    let mut r = report("w1", 0, e, &[0, 2], 3, false);
    if let Request::Report(r) = &mut r {
        r.frames[0].image = Some(PictureRef { epoch: e, len: 3, crc: 7, width: 64, height: 48 });
    }
    stored(w.apply(r));
    assert_eq!(w.sink.1.len(), 1, "the frame's picture is stored with its results");
    for (t, rid) in [(7, "r2"), (50, "r3")] {
        let Response::JobCreated { job, .. } = w.apply(Request::Submit { spec: spec(Some(rid)), now_ms: 5 }) else { panic!() };
        w.apply(Request::Cancel { job, now_ms: t });
    }
    w.sink.0.insert((2, 0, 0), "[]".into());
    match w.apply(Request::Prune { finished_before_ms: 10 }) {
        Response::Pruned { jobs, freed } => {
            assert_eq!(jobs, vec![2]);
            assert_eq!(freed.results, 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(!w.st.jobs.contains_key(&2) && w.st.jobs.contains_key(&3) && w.st.jobs.contains_key(&1));
    assert!(!w.st.request_ids.contains_key("r2"), "a pruned job's request id is forgotten");
    // A running job is never pruned, however old.
    match w.apply(Request::Prune { finished_before_ms: u64::MAX }) {
        Response::Pruned { jobs, .. } => assert_eq!(jobs, vec![3]),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.sink.1.len(), 1);
    assert_eq!(w.job().frames_done, 2);
}

#[test]
pub(crate) fn a_source_without_frames_fails_at_planning() {
    let mut w = World { st: State::default(), sink: MemSink::default() };
    w.apply(Request::Submit { spec: spec(None), now_ms: 1 });
    w.apply(Request::Plan { job: 1, plan: plan(0), shards: vec![], now_ms: 2 });
    assert_eq!(w.job().state, JobState::Failed);
    assert!(w.job().error.as_deref().unwrap().contains("no video frames"));
}

#[test]
pub(crate) fn every_lease_change_is_an_event_with_its_reason() {
    let mut w = World::new();
    let events = |w: &mut World, r: Request| {
        let mut ch = Changes::default();
        w.st.apply(&r, &mut w.sink, &mut ch);
        ch.events
    };
    let g = events(&mut w, Request::Grant { worker: "w1".into(), shards: vec![(1, 0), (1, 1)], now_ms: 4 });
    let (e0, e1) = match g.as_slice() {
        [LeaseEvent::Granted { shard: 0, epoch: a, from: 0, to: 10, .. }, LeaseEvent::Granted { shard: 1, epoch: b, from: 10, to: 20, .. }] => (*a, *b),
        other => panic!("{other:?}"),
    };
    // Shard 0 completes; shard 1 fails an attempt, is granted again, then the job is cancelled.
    let done = events(&mut w, report("w1", 0, e0, &[0, 2, 4, 6, 8], 10, true));
    assert_eq!(done, vec![LeaseEvent::Released { job: 1, shard: 0, epoch: e0, reason: ReleaseReason::Completed }]);
    let mut failing = report("w1", 1, e1, &[], 10, false);
    if let Request::Report(r) = &mut failing {
        r.error = Some("decoder broke".into());
    }
    assert_eq!(events(&mut w, failing), vec![LeaseEvent::Released { job: 1, shard: 1, epoch: e1, reason: ReleaseReason::Failed }]);
    let e2 = w.grant("w2", 1);
    let cancelled = events(&mut w, Request::Cancel { job: 1, now_ms: 9 });
    assert_eq!(cancelled, vec![LeaseEvent::Released { job: 1, shard: 1, epoch: e2, reason: ReleaseReason::JobEnded }]);
    // Nothing changed, nothing recorded: a rejected command has no events.
    assert!(events(&mut w, Request::Expire { job: 1, shard: 1, epoch: e2 }).is_empty());
}

#[test]
pub(crate) fn a_rejection_says_of_what_kind_it_is() {
    let mut w = World::new();
    let kind = |r: Response| match r {
        Response::Rejected(r) => r.kind,
        other => panic!("accepted: {other:?}"),
    };
    assert_eq!(kind(w.apply(Request::Cancel { job: 9, now_ms: 1 })), RejectionKind::Unknown);
    assert_eq!(kind(w.apply(Request::Grant { worker: "ghost".into(), shards: vec![], now_ms: 1 })), RejectionKind::Unknown);
    let e = w.grant("w1", 0);
    assert_eq!(kind(w.apply(report("w1", 0, e, &[1], 2, false))), RejectionKind::Invalid, "an odd frame with frame_step 2");
    assert_eq!(kind(w.apply(report("w1", 0, e + 1, &[0], 1, false))), RejectionKind::Stale);
    let l = crate::state::model::LiveSpec { key: "k".into(), worker: "w1".into(), slot: 0, url: "rtmp://h:1/live/k".into() };
    w.apply(Request::CreateLive { spec: spec(None), live: l.clone(), now_ms: 5 });
    assert_eq!(kind(w.apply(Request::CreateLive { spec: spec(None), live: l, now_ms: 5 })), RejectionKind::Busy);
    assert_eq!(w.apply(Request::Cancel { job: 1, now_ms: 6 }), Response::Ok);
    assert_eq!(kind(w.apply(Request::Cancel { job: 1, now_ms: 7 })), RejectionKind::Done);
    assert_eq!(kind(w.apply(report("w1", 0, e, &[0], 1, false))), RejectionKind::Done);
}

#[test]
pub(crate) fn a_results_error_flag_counts_as_an_error_whatever_its_text() {
    let mut w = World::new();
    let e = w.grant("w1", 0);
    let mut r = report("w1", 0, e, &[0, 2], 3, false);
    if let Request::Report(r) = &mut r {
        r.frames[0].outputs[1].error = true;
        // Text that looks like an error but is not flagged as one.
        r.frames[1].outputs[1].results_json = "{\"error\": \"a label\"}".into();
    }
    assert_eq!(stored(w.apply(r)), 2);
    assert_eq!(w.job().counters.errors, 1);
}

/// An alert evaluation applies only where the last one ended: a repeat
/// (a leader retrying, a deposed leader) records nothing twice; the
/// committed prefix follows the shards in frame order.
#[test]
fn alert_evaluations_apply_once_in_order() {
    use panoptes_common::rules::{Fired, Rule, RuleState};
    let mut w = World { st: State::default(), sink: MemSink::default() };
    let mut s = spec(None);
    s.rules = vec![Rule::parse("someone: count(person) >= 1").unwrap()];
    w.apply(Request::Submit { spec: s, now_ms: 1 });
    w.apply(Request::Plan { job: 1, plan: plan(20), shards: vec![(0, 10), (10, 20)], now_ms: 2 });
    assert_eq!(w.job().committed_prefix(), 0);
    w.st.jobs.get_mut(&1).unwrap().shards[1].cursor = 14;
    assert_eq!(w.job().committed_prefix(), 0, "the second shard's frames wait for the first's");
    w.st.jobs.get_mut(&1).unwrap().shards[0].cursor = 10;
    assert_eq!(w.job().committed_prefix(), 14);

    let fired = |frame| Fired { rule: "someone".into(), frame, time_ms: frame * 40, since_ms: frame * 40, detail: String::new() };
    let states = vec![RuleState { run_since: Some(0), fired: true, quiet_until: 0 }];
    let eval = Request::Analytics { job: 1, from: 0, upto: 10, states: states.clone(), fired: vec![fired(0)], tracked: Default::default() };
    assert_eq!(w.apply(eval.clone()), Response::Ok);
    match w.apply(eval) {
        Response::Rejected(r) => assert_eq!(r.kind, RejectionKind::Stale, "{r:?}"),
        other => panic!("a repeated evaluation applied: {other:?}"),
    }
    assert_eq!(w.job().alerts.fired, vec![fired(0)], "recorded once");
    assert_eq!(w.job().alerts.upto, 10);
    // The wrong number of rule states can never apply.
    match w.apply(Request::Analytics { job: 1, from: 10, upto: 14, states: Vec::new(), fired: Vec::new(), tracked: Default::default() }) {
        Response::Rejected(r) => assert_eq!(r.kind, RejectionKind::Invalid, "{r:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.apply(Request::Analytics { job: 1, from: 10, upto: 14, states, fired: vec![fired(12)], tracked: Default::default() }), Response::Ok);
    assert_eq!(w.job().alerts.fired.len(), 2);
}

/// A zone added to a running job is in force from where its analytics
/// stand; names stay unique; a finished job takes none. A job's tracks end
/// once: a repeated closing evaluation is refused.
#[test]
fn zones_are_added_where_analytics_stand_and_tracks_close_once() {
    use panoptes_common::tracking::{JobTracker, TrackChange, TrackEvent};
    use panoptes_common::zones::Zone;
    use crate::state::command::Tracked;
    let mut w = World { st: State::default(), sink: MemSink::default() };
    let mut s = spec(None);
    s.tracks = true;
    s.zones = vec![Zone::parse("door=0,0,1,0,1,1").unwrap()];
    w.apply(Request::Submit { spec: s, now_ms: 1 });
    w.apply(Request::Plan { job: 1, plan: plan(20), shards: vec![(0, 20)], now_ms: 2 });
    assert_eq!(w.job().zones[0].from_frame, 0);
    assert_eq!(w.apply(Request::Analytics { job: 1, from: 0, upto: 7, states: Vec::new(), fired: Vec::new(), tracked: Tracked::default() }), Response::Ok);
    assert_eq!(w.apply(Request::AddZone { job: 1, zone: Zone::parse("gate=0,0,0.5,0,0.5,1").unwrap() }), Response::Ok);
    assert_eq!((w.job().zones[1].zone.name.as_str(), w.job().zones[1].from_frame), ("gate", 7));
    match w.apply(Request::AddZone { job: 1, zone: Zone::parse("gate=0,0,1,0,1,1").unwrap() }) {
        Response::Rejected(r) => assert!(r.message.contains("two zones"), "{r:?}"),
        other => panic!("a second zone named gate: {other:?}"),
    }
    // The job ends; the closing evaluation ends its tracks, once.
    w.apply(Request::Cancel { job: 1, now_ms: 3 });
    let end = TrackEvent { change: TrackChange::End, model: "objects".into(), track: 1, label: "person".into(), zone: None, frame: 6, time: 0.2 };
    let close = Request::Analytics { job: 1, from: 7, upto: 7, states: Vec::new(), fired: Vec::new(), tracked: Tracked { tracker: JobTracker { closed: true, ..Default::default() }, marks: Vec::new(), events: vec![end] } };
    assert_eq!(w.apply(close.clone()), Response::Ok);
    assert_eq!(w.job().track_events.recorded, 1);
    assert!(matches!(w.apply(close), Response::Rejected(_)), "tracks closed twice");
    assert_eq!(w.job().track_events.recorded, 1);
    match w.apply(Request::AddZone { job: 1, zone: Zone::parse("late=0,0,1,0,1,1").unwrap() }) {
        Response::Rejected(r) => assert!(r.message.contains("cancelled"), "{r:?}"),
        other => panic!("a zone added to a cancelled job: {other:?}"),
    }
}

/// Retention takes a job's alerts with the results of their frames; the
/// rest keep their numbers, and new ones go on counting.
#[test]
fn retention_takes_alerts_with_their_frames_and_numbers_go_on() {
    use panoptes_common::rules::{Fired, Rule, RuleState};
    let mut w = World { st: State::default(), sink: MemSink::default() };
    let mut s = spec(None);
    s.rules = vec![Rule::parse("someone: count(person) >= 1").unwrap()];
    w.apply(Request::Submit { spec: s, now_ms: 1 });
    w.apply(Request::Plan { job: 1, plan: plan(20), shards: vec![(0, 20)], now_ms: 2 });
    let fired = |frame| Fired { rule: "someone".into(), frame, time_ms: frame * 40, since_ms: frame * 40, detail: String::new() };
    let states = vec![RuleState::default()];
    let eval = |from, upto, f: Vec<Fired>| Request::Analytics { job: 1, from, upto, states: states.clone(), fired: f, tracked: Default::default() };
    assert_eq!(w.apply(eval(0, 10, vec![fired(1), fired(5), fired(9)])), Response::Ok);
    assert!(matches!(w.apply(Request::Trim { job: 1, before_frame: 6 }), Response::Trimmed { .. }));
    let a = &w.job().alerts;
    assert_eq!((a.first_seq(), a.recorded(), a.fired.len()), (3, 3, 1));
    assert_eq!(a.get(3).map(|f| f.frame), Some(9));
    assert!(a.get(2).is_none());
    assert_eq!(w.apply(eval(10, 14, vec![fired(12)])), Response::Ok);
    let a = &w.job().alerts;
    assert_eq!(a.numbered().map(|(seq, f)| (seq, f.frame)).collect::<Vec<_>>(), [(3, 9), (4, 12)]);
}
