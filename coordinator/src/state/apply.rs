//! Applying commands to the state: pure and deterministic, no I/O. Results go
//! through a [`ResultSink`] so the same code runs on sled and in unit tests.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::command::{Granted, Report, Request, Response};
use super::model::{analysed_in, Job, JobCounters, JobState, Shard, ShardState, WorkerRec};

/// Where results live: keyed by (job, frame, model index), written once.
pub trait ResultSink {
    fn contains(&self, job: u64, frame: u64, model: u8) -> bool;
    fn put(&mut self, job: u64, frame: u64, model: u8, timestamp: f64, results_json: &str);
}

/// The small, hot part of the state (everything but results), kept in memory
/// and persisted per changed key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub jobs: BTreeMap<u64, Job>,
    pub workers: BTreeMap<String, WorkerRec>,
    pub next_job: u64,
    pub next_epoch: u64,
    pub request_ids: BTreeMap<String, u64>,
}

impl Default for State {
    fn default() -> Self {
        Self { jobs: BTreeMap::new(), workers: BTreeMap::new(), next_job: 1, next_epoch: 1, request_ids: BTreeMap::new() }
    }
}

/// Keys an application changed, so the store writes only those.
#[derive(Debug, Default)]
pub struct Changes {
    pub jobs: BTreeSet<u64>,
    pub workers: BTreeSet<String>,
    pub counters: bool,
}

fn rejected(msg: impl Into<String>) -> Response {
    Response::Rejected(msg.into())
}

fn refused(reason: impl Into<String>) -> Response {
    Response::Reported { accepted: false, reason: reason.into(), stored: 0 }
}

impl State {
    pub fn apply(&mut self, req: &Request, sink: &mut dyn ResultSink, ch: &mut Changes) -> Response {
        match req {
            Request::Submit { spec, now_ms } => {
                if let Some(rid) = &spec.request_id {
                    if let Some(&job) = self.request_ids.get(rid) {
                        return Response::JobCreated { job, existing: true };
                    }
                }
                let id = self.next_job;
                self.next_job += 1;
                ch.counters = true;
                if let Some(rid) = &spec.request_id {
                    self.request_ids.insert(rid.clone(), id);
                }
                self.jobs.insert(
                    id,
                    Job {
                        id,
                        spec: spec.clone(),
                        state: JobState::Queued,
                        error: None,
                        submitted_at_ms: *now_ms,
                        started_at_ms: 0,
                        finished_at_ms: 0,
                        plan: None,
                        shards: Vec::new(),
                        frames_done: 0,
                        counters: JobCounters::default(),
                    },
                );
                ch.jobs.insert(id);
                Response::JobCreated { job: id, existing: false }
            }
            Request::Plan { job, plan, shards, now_ms } => {
                let Some(j) = self.jobs.get_mut(job) else { return rejected(format!("unknown job {job}")) };
                if j.state != JobState::Queued {
                    return rejected(format!("job {job} is {}", j.state.as_str()));
                }
                ch.jobs.insert(*job);
                j.plan = Some(plan.clone());
                j.shards = shards
                    .iter()
                    .enumerate()
                    .map(|(i, &(start, end))| Shard {
                        index: i as u32,
                        start,
                        end,
                        cursor: start,
                        state: ShardState::Pending,
                        attempts: 0,
                        last_error: None,
                    })
                    .collect();
                j.started_at_ms = *now_ms;
                if j.frames_total() == 0 || j.shards.is_empty() {
                    j.state = JobState::Failed;
                    j.error = Some(format!("'{}' has no video frames to analyse", j.spec.source));
                    j.finished_at_ms = *now_ms;
                } else {
                    j.state = JobState::Running;
                }
                Response::Ok
            }
            Request::Fail { job, error, now_ms } => {
                let Some(j) = self.jobs.get_mut(job) else { return rejected(format!("unknown job {job}")) };
                if j.state.is_finished() {
                    return rejected(format!("job {job} is already {}", j.state.as_str()));
                }
                ch.jobs.insert(*job);
                finish(j, JobState::Failed, Some(error.clone()), *now_ms);
                Response::Ok
            }
            Request::Cancel { job, now_ms } => {
                let Some(j) = self.jobs.get_mut(job) else { return rejected(format!("unknown job {job}")) };
                if j.state.is_finished() {
                    return rejected(format!("job {job} is already {}", j.state.as_str()));
                }
                ch.jobs.insert(*job);
                finish(j, JobState::Cancelled, None, *now_ms);
                Response::Ok
            }
            Request::RegisterWorker { name, addr, capacity, models, now_ms } => {
                let draining = self.workers.get(name).map(|w| w.draining).unwrap_or(false);
                self.workers.insert(
                    name.clone(),
                    WorkerRec {
                        name: name.clone(),
                        addr: addr.clone(),
                        capacity: *capacity,
                        models: models.clone(),
                        registered_at_ms: *now_ms,
                        draining,
                    },
                );
                ch.workers.insert(name.clone());
                Response::Ok
            }
            Request::Grant { worker, shards, now_ms } => {
                match self.workers.get(worker) {
                    None => return rejected(format!("unknown worker {worker}: register first")),
                    Some(w) if w.draining => return Response::Granted(Vec::new()),
                    Some(_) => {}
                }
                let mut granted = Vec::new();
                for &(job, shard) in shards {
                    let Some(j) = self.jobs.get_mut(&job) else { continue };
                    if j.state != JobState::Running {
                        continue;
                    }
                    let Some(s) = j.shards.get_mut(shard as usize) else { continue };
                    if s.state != ShardState::Pending {
                        continue;
                    }
                    let epoch = self.next_epoch;
                    self.next_epoch += 1;
                    ch.counters = true;
                    s.state = ShardState::Leased { worker: worker.clone(), epoch, since_ms: *now_ms };
                    if j.counters.first_lease_ms == 0 {
                        j.counters.first_lease_ms = *now_ms;
                    }
                    ch.jobs.insert(job);
                    granted.push(Granted { job, shard, epoch });
                }
                Response::Granted(granted)
            }
            Request::Expire { job, shard, epoch } => {
                let Some(s) = self.jobs.get_mut(job).and_then(|j| j.shards.get_mut(*shard as usize)) else {
                    return rejected("unknown shard");
                };
                match &s.state {
                    ShardState::Leased { epoch: e, .. } if e == epoch => {
                        s.state = ShardState::Pending;
                        ch.jobs.insert(*job);
                        Response::Ok
                    }
                    _ => rejected("lease already changed"),
                }
            }
            Request::Report(r) => self.apply_report(r, sink, ch),
        }
    }

    fn apply_report(&mut self, r: &Report, sink: &mut dyn ResultSink, ch: &mut Changes) -> Response {
        let Some(j) = self.jobs.get_mut(&r.job) else { return refused(format!("unknown job {}", r.job)) };
        if j.state != JobState::Running {
            return refused(format!("job is {}", j.state.as_str()));
        }
        let step = j.spec.frame_step;
        let models = j.spec.models.clone();
        let Some(s) = j.shards.get_mut(r.shard as usize) else { return refused(format!("no shard {}", r.shard)) };
        match &s.state {
            ShardState::Leased { worker, epoch, .. } if *worker == r.worker && *epoch == r.epoch => {}
            ShardState::Leased { epoch, .. } => {
                return refused(format!("stale lease: epoch {} is not the current lease {epoch}", r.epoch))
            }
            ShardState::Pending => return refused("stale lease: the shard is not leased"),
            ShardState::Done => return refused("the shard is already done"),
        }
        // Validate everything before changing anything.
        for f in &r.frames {
            if f.frame < s.start || f.frame >= s.end || f.frame % step != 0 {
                return refused(format!("frame {} is not an analysed frame of shard {} [{}, {})", f.frame, s.index, s.start, s.end));
            }
            if f.outputs.len() != models.len() || models.iter().any(|m| f.outputs.iter().filter(|o| &o.model == m).count() != 1) {
                return refused(format!("frame {} must carry exactly one result per model {:?}", f.frame, models));
            }
        }
        ch.jobs.insert(r.job);
        let mut stored = 0u32;
        for f in &r.frames {
            if sink.contains(r.job, f.frame, 0) {
                continue; // a retried or duplicated delivery: already committed
            }
            for (mi, m) in models.iter().enumerate() {
                let o = f.outputs.iter().find(|o| &o.model == m).expect("validated above");
                sink.put(r.job, f.frame, mi as u8, f.timestamp, &o.results_json);
            }
            stored += 1;
        }
        j.frames_done += stored as u64;
        s.cursor = s.cursor.max(r.next_frame.min(s.end));
        j.counters.times.add(&r.times);
        j.counters.reports += 1;
        j.counters.report_bytes += r.bytes;
        let mut outcome = None;
        if let Some(err) = &r.error {
            j.counters.errors += 1;
            s.attempts += 1;
            s.last_error = Some(err.clone());
            s.state = ShardState::Pending;
            if s.attempts >= j.spec.max_attempts.max(1) {
                let msg = format!("shard {} (frames {}–{}) failed {} times: {err}", s.index, s.start, s.end, s.attempts);
                outcome = Some((JobState::Failed, Some(msg)));
            }
        } else if r.done {
            s.state = ShardState::Done;
            if j.shards.iter().all(|s| s.state == ShardState::Done) {
                outcome = Some((JobState::Completed, None));
            }
        }
        if let Some((state, error)) = outcome {
            finish(j, state, error, r.now_ms);
        }
        Response::Reported { accepted: true, reason: String::new(), stored }
    }

    /// Analysed frames still to commit for a job (for progress), by shard cursors.
    pub fn remaining(&self, job: u64) -> u64 {
        self.jobs
            .get(&job)
            .map(|j| j.shards.iter().filter(|s| s.state != ShardState::Done).map(|s| analysed_in(s.cursor, s.end, j.spec.frame_step)).sum())
            .unwrap_or(0)
    }
}

fn finish(j: &mut Job, state: JobState, error: Option<String>, now_ms: u64) {
    j.state = state;
    j.error = error;
    j.finished_at_ms = now_ms;
    for s in &mut j.shards {
        if matches!(s.state, ShardState::Leased { .. }) {
            s.state = ShardState::Pending;
        }
    }
}
