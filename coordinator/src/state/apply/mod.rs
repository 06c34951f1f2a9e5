//! Applying commands to the state: pure and deterministic, no I/O. Results go
//! through a [`ResultSink`] so the same code runs on sled and in unit tests.
//!
//! One file per concern: `jobs.rs` (a job's life: submit, plan, fail,
//! cancel, retention, prune), `analytics.rs` (tracks, alerts and their delivery; zones added), `leases.rs` (workers and who holds which
//! frames: register, grant, expire, split, drain, leave), `report.rs` (a
//! worker's results committed), `live.rs` (live streams: create, move,
//! abandon). Each command gives a typed outcome ([`Response`]) or a typed
//! [`Rejection`] (nothing changed), and records the lease events it caused
//! in [`Changes::events`].
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::command::{Freed, PictureRef, Request, Response};
use super::model::{Job, JobState, ShardState, WorkerRec};
use super::outcome::{LeaseEvent, Rejection, ReleaseReason};

mod analytics;
mod jobs;
mod leases;
mod live;
mod report;
#[cfg(test)]
pub(crate) mod tests;


/// Where results live: keyed by (job, frame, model index), written once.
pub trait ResultSink {
    fn contains(&self, job: u64, frame: u64, model: u8) -> bool;
    fn put(&mut self, job: u64, frame: u64, model: u8, timestamp: f64, results_json: &str);
    /// Keep a frame's picture (written with its results, once).
    fn put_frame(&mut self, _job: u64, _frame: u64, _image: &PictureRef) {}
    /// Keep the tracks (and zones) of a frame's detections by one model,
    /// beside its results.
    fn put_marks(&mut self, _job: u64, _frame: u64, _model: u8, _marks: &[panoptes_common::tracking::Mark]) {}
    /// Keep a recorded track event (`seq` from 1).
    fn put_track_event(&mut self, _job: u64, _seq: u64, _event: &panoptes_common::tracking::TrackEvent) {}
    /// Retention: delete a job's track events from `from_seq` on, in order,
    /// while they are of frames below `before_frame`; the first one kept.
    fn trim_track_events(&mut self, _job: u64, from_seq: u64, _before_frame: u64) -> u64 {
        from_seq
    }
    /// Delete a job's results and pictures; what was freed.
    fn delete_job(&mut self, _job: u64) -> Freed {
        Freed::default()
    }
    /// Retention: delete a job's results and/or pictures of frames in `[from, before)`.
    fn trim(&mut self, _job: u64, _from: u64, _before: u64, _results: bool, _pictures: bool) -> Freed {
        Freed::default()
    }
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

/// What an application changed: the keys the store writes, and the lease
/// events it logs.
#[derive(Debug, Default)]
pub struct Changes {
    pub jobs: BTreeSet<u64>,
    /// Jobs deleted (by a prune), with their request ids.
    pub removed_jobs: Vec<(u64, Option<String>)>,
    pub workers: BTreeSet<String>,
    pub counters: bool,
    /// Retention: jobs whose pictures below a frame were deleted.
    pub trimmed_pictures: Vec<(u64, u64)>,
    /// Leases granted, ended and split, in the order they happened.
    pub events: Vec<LeaseEvent>,
}

/// A command's outcome: what it produced, or why it did not apply.
type Applied = Result<Response, Rejection>;

impl State {
    /// Apply one command. A rejected command changes nothing.
    pub fn apply(&mut self, req: &Request, sink: &mut dyn ResultSink, ch: &mut Changes) -> Response {
        let applied = match req {
            Request::Submit { spec, now_ms } => Ok(self.submit(spec, *now_ms, ch)),
            Request::Plan { job, plan, shards, now_ms } => self.plan(*job, plan, shards, *now_ms, ch),
            Request::Fail { job, error, now_ms } => self.end_job(*job, JobState::Failed, Some(error), *now_ms, ch),
            Request::Cancel { job, now_ms } => self.end_job(*job, JobState::Cancelled, None, *now_ms, ch),
            Request::Trim { job, before_frame } => self.trim(*job, *before_frame, sink, ch),
            Request::Prune { finished_before_ms } => Ok(self.prune(*finished_before_ms, sink, ch)),
            Request::RegisterWorker { name, addr, capacity, models, now_ms } => {
                Ok(self.register_worker(name, addr, *capacity, models, *now_ms, ch))
            }
            Request::Drain { worker, draining, hand_back } => self.drain(worker, *draining, *hand_back, ch),
            Request::Leave { worker } => self.leave(worker, ch),
            Request::Grant { worker, shards, now_ms } => self.grant(worker, shards, *now_ms, ch),
            Request::Expire { job, shard, epoch } => self.expire(*job, *shard, *epoch, ch),
            Request::Split { job, shard, epoch, at, worker, now_ms } => self.split(*job, *shard, *epoch, *at, worker, *now_ms, ch),
            Request::Report(r) => self.report(r, sink, ch),
            Request::CreateLive { spec, live, now_ms } => self.create_live(spec, live, *now_ms, ch),
            Request::MoveLive { job, worker, url } => self.move_live(*job, worker, url, ch),
            Request::AbandonLive { job, worker, error, now_ms } => self.abandon_live(*job, worker, error, *now_ms, ch),
            Request::Analytics { job, from, upto, states, fired, tracked } => self.analytics(*job, *from, *upto, states, fired, tracked, sink, ch),
            Request::Delivered { job, sink: name, stream, upto, skipped } => self.delivered(*job, name, *stream, *upto, *skipped, ch),
            Request::AddZone { job, zone } => self.add_zone(*job, zone, ch),
        };
        applied.unwrap_or_else(Response::Rejected)
    }
}

/// The next value of a counter of the state (`next_job`, `next_epoch`: a
/// job id, a lease epoch), which the store persists with the change.
fn next_id(counter: &mut u64, ch: &mut Changes) -> u64 {
    let id = *counter;
    *counter += 1;
    ch.counters = true;
    id
}

/// End a job in `state`: every lease it still has ends with it.
fn finish(j: &mut Job, state: JobState, error: Option<String>, now_ms: u64, ch: &mut Changes) {
    j.state = state;
    j.error = error;
    j.finished_at_ms = now_ms;
    for s in &mut j.shards {
        if let ShardState::Leased { epoch, .. } = s.state {
            ch.events.push(LeaseEvent::Released { job: j.id, shard: s.index, epoch, reason: ReleaseReason::JobEnded });
            s.state = ShardState::Pending;
        }
    }
}
