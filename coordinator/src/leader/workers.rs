//! What a worker asks of the leader: register, heartbeat, lease, report,
//! leave. Each reads the replicated state, decides, commits a command and
//! keeps the leader's clocks; the worker service (`worker_api/`) only
//! converts its messages to and from these.
use std::time::Instant;

use panoptes_common::metrics;
use panoptes_common::now_ms;
use tonic::Status;
use tracing::{debug, info};

use super::Member;
use crate::metrics::{LEASES_GRANTED, REPORTS_ACCEPTED, REPORTS_REFUSED, REPORT_COMMIT_SECONDS, RESULTS_STORED, WORK_STOLEN};
use crate::scheduling::{plan_lease, LeasePlan};
use crate::state::command::{FrameImage, FrameOutputs, Report, Request, Response};
use crate::state::model::{Job, Shard, ShardState, StageTimes};
use crate::status::{rejected, unexpected};

/// A worker announcing itself (again).
pub struct Registration {
    pub name: String,
    /// Where its ingest ports are (`HOST:BASE`), empty when it has none.
    pub addr: String,
    pub capacity: u32,
    pub models: Vec<String>,
}

/// A lease a worker says it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldLease {
    pub job: u64,
    pub shard: u32,
    pub epoch: u64,
}

/// A worker's report on one shard: its frames' results, the pictures they
/// carry as (frame, lease epoch, picture), and how far it got.
pub struct ReportIn {
    pub worker: String,
    pub job: u64,
    pub shard: u32,
    pub epoch: u64,
    pub frames: Vec<FrameOutputs>,
    pub pictures: Vec<(u64, u64, FrameImage)>,
    pub next_frame: u64,
    pub done: bool,
    pub error: Option<String>,
    pub times: StageTimes,
    /// The report's size on the wire.
    pub bytes: u64,
    /// The size of the frames the models read, if the report says.
    pub frame_size: Option<(u32, u32)>,
}

/// What became of a report.
#[derive(Debug, PartialEq)]
pub enum Reported {
    /// Committed: `stored` frames were new; the shard now ends at `end_frame`
    /// (a split may have moved it: the holder stops decoding there).
    Accepted { stored: u32, end_frame: u64 },
    /// Refused, nothing stored (the lease is gone): the worker stops the shard.
    Refused { reason: String },
}

/// A worker registers (or registers again after a leader change).
pub async fn register<M: Member>(node: &M, r: Registration) -> Result<(), Status> {
    node.require_leader()?;
    let name = r.name.clone();
    node.commit(Request::RegisterWorker { name: r.name, addr: r.addr, capacity: r.capacity.max(1), models: r.models, now_ms: now_ms() })
        .await?;
    node.leader_memory().heard_from(&name);
    info!(worker = %name, "worker registered");
    Ok(())
}

/// A heartbeat: renews the clocks of the leases the worker still holds and
/// returns those it does not (revoked); `None` when the worker is unknown
/// here and must register again.
pub fn heartbeat<M: Member>(node: &M, worker: &str, leases: Vec<HeldLease>) -> Result<Option<Vec<HeldLease>>, Status> {
    // Only the leader keeps lease clocks.
    node.require_leader()?;
    if !node.reader().read(|a| a.state.workers.contains_key(worker)) {
        return Ok(None);
    }
    node.leader_memory().heard_from(worker);
    let mut revoked = Vec::new();
    for l in leases {
        let holds = node.reader().read(|a| {
            a.state.jobs.get(&l.job).and_then(|j| j.shards.get(l.shard as usize)).is_some_and(|s| {
                matches!(&s.state, ShardState::Leased { worker: w, epoch, .. } if w == worker && *epoch == l.epoch)
            })
        });
        if holds {
            node.leader_memory().renew(l.job, l.shard, l.epoch);
        } else {
            revoked.push(l);
        }
    }
    Ok(Some(revoked))
}

/// A worker with `free_slots` asks for work: pending shards (a fair share by
/// free capacity among the live workers), or the tail of a busy shard split
/// off for it (work stealing); see [`plan_lease`]. Each shard leased is
/// handed to `assign` as the state has it after the grant (job, shard,
/// lease epoch, now), read in place: the worker service turns it into an
/// assignment (`None`: not leasable yet, a file job not probed).
pub async fn lease<M: Member, T>(
    node: &M,
    worker: &str,
    free_slots: u32,
    assign: impl Fn(&Job, &Shard, u64, u64) -> Option<T>,
) -> Result<Vec<T>, Status> {
    // Leases are granted where their clocks run: on the leader.
    node.require_leader()?;
    let live = node.leader_memory().live_workers();
    let plan = node.reader().read(|a| {
        if !a.state.workers.contains_key(worker) {
            return Err(Status::failed_precondition(format!("unknown worker '{worker}': register first")));
        }
        Ok(plan_lease(&a.state, worker, free_slots, &live))
    })?;
    let req = match plan {
        LeasePlan::Grant(shards) => Request::Grant { worker: worker.to_string(), shards, now_ms: now_ms() },
        LeasePlan::Split(st) => Request::Split { job: st.job, shard: st.shard, epoch: st.epoch, at: st.at, worker: worker.to_string(), now_ms: now_ms() },
        LeasePlan::Nothing => return Ok(Vec::new()),
    };
    let granted = match node.commit(req.clone()).await? {
        Response::Granted(g) => g,
        // The victim's lease moved on (a report, an expiry) since we looked: no work this time.
        Response::Rejected(rej) if matches!(req, Request::Split { .. }) => {
            debug!(worker = %worker, reason = %rej, "work stealing skipped");
            Vec::new()
        }
        Response::Rejected(rej) => return Err(rejected(rej)),
        other => return Err(unexpected(&other)),
    };
    metrics::inc(LEASES_GRANTED, &[], granted.len() as u64);
    if let (Request::Split { job, shard, epoch, at, .. }, Some(g)) = (&req, granted.first()) {
        metrics::inc(WORK_STOLEN, &[], 1);
        info!(job_id = job, victim_shard = shard, victim_epoch = epoch, cut = at, new_shard = g.shard, worker = %worker, "work stolen: shard split");
    }
    let mut out = Vec::new();
    for g in granted {
        node.leader_memory().renew(g.job, g.shard, g.epoch);
        let leased = node.reader().read(|a| {
            let j = a.state.jobs.get(&g.job)?;
            let s = j.shards.get(g.shard as usize)?;
            Some((assign(j, s, g.epoch, now_ms())?, s.cursor, s.end))
        });
        if let Some((assigned, from, to)) = leased {
            info!(job_id = g.job, shard = g.shard, epoch = g.epoch, worker = %worker, from, to, "shard leased");
            out.push(assigned);
        }
    }
    Ok(out)
}

/// A worker stops: its leases go back to pending, and it is not live (given
/// no live stream, no shard) until it is heard from again. Returns how many
/// leases it returned.
pub async fn leave<M: Member>(node: &M, worker: &str) -> Result<u32, Status> {
    // Leases (and the heartbeats that keep them) are the leader's.
    node.require_leader()?;
    match node.commit(Request::Leave { worker: worker.to_string() }).await? {
        Response::Drained { leases_returned } => {
            node.leader_memory().forget(worker);
            info!(worker = %worker, leases_returned, "worker left: its shards went back to pending");
            Ok(leases_returned)
        }
        Response::Rejected(rej) => Err(rejected(rej)),
        other => Err(unexpected(&other)),
    }
}

/// A report: its pictures go to a majority of the coordinators beside the
/// log (`crate::picture_copies`), then the report, naming them, is committed
/// through Raft, and the lease's clock restarts. Answered only once
/// committed.
pub async fn report<M: Member>(node: &M, r: ReportIn) -> Result<Reported, Status> {
    let received = Instant::now();
    node.require_leader()?;
    let ReportIn { worker, job, shard, epoch, mut frames, pictures, next_frame, done, error, times, bytes, frame_size } = r;
    // An accepted report carries one output per model for every frame.
    let models = frames.first().map(|f| f.outputs.len()).unwrap_or(0) as u64;
    // Not for a report whose lease has already gone: it will be refused.
    let holds_lease = node.reader().read(|a| {
        a.state
            .jobs
            .get(&job)
            .and_then(|j| j.shards.get(shard as usize))
            .is_some_and(|s| matches!(&s.state, ShardState::Leased { epoch: e, .. } if *e == epoch))
    });
    if holds_lease && !pictures.is_empty() {
        let with: Vec<u64> = pictures.iter().map(|(f, _, _)| *f).collect();
        let refs = node.pictures().replicate(job, pictures).await?;
        for (frame, pr) in with.into_iter().zip(refs) {
            if let Some(fo) = frames.iter_mut().find(|fo| fo.frame == frame) {
                fo.image = Some(pr);
            }
        }
    }
    let n = frames.len();
    let report = Report { worker, job, shard, epoch, frames, next_frame, done, error, times, bytes, now_ms: now_ms(), frame_size };
    let outcome = node.commit(Request::Report(report)).await?;
    metrics::observe(REPORT_COMMIT_SECONDS, &[], received.elapsed().as_secs_f64());
    match outcome {
        Response::Reported { stored } => {
            node.leader_memory().renew(job, shard, epoch);
            metrics::inc(REPORTS_ACCEPTED, &[], 1);
            metrics::inc(RESULTS_STORED, &[], stored as u64 * models);
            debug!(job_id = job, shard, frames = n, stored, "report accepted");
            let end_frame = node.reader().read(|a| a.state.jobs.get(&job).and_then(|j| j.shards.get(shard as usize)).map_or(0, |s| s.end));
            Ok(Reported::Accepted { stored, end_frame })
        }
        Response::Rejected(rej) => {
            metrics::inc(REPORTS_REFUSED, &[("reason", rej.kind.label())], 1);
            debug!(job_id = job, shard, frames = n, reason = %rej, "report refused");
            Ok(Reported::Refused { reason: rej.message })
        }
        other => Err(unexpected(&other)),
    }
}
