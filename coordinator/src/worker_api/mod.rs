//! The worker-facing gRPC service: register, heartbeat, lease, report.
use std::sync::Arc;
use std::time::Instant;

use panoptes_common::ids::JobId;
use panoptes_common::metrics;
use panoptes_common::now_ms;
use panoptes_proto::worker as pb;
use panoptes_proto::worker::worker_api_server::{WorkerApi, WorkerApiServer};
use tonic::{Request as Req, Response as Resp, Status};
use tracing::{debug, info};

use crate::metrics::{LEASES_GRANTED, REPORTS_ACCEPTED, REPORTS_REFUSED, REPORT_COMMIT_SECONDS, RESULTS_STORED, WORK_STOLEN};
use crate::handle::{Coordinator, MAX_MESSAGE_BYTES};
use crate::scheduling::{plan_lease, LeasePlan};
use crate::state::command::{Report, Request, Response};
use crate::state::model::ShardState;

mod convert;
use convert::{assignment, frames_and_pictures, stage_times};

pub struct WorkerService {
    node: Arc<Coordinator>,
}

pub fn server(node: Arc<Coordinator>) -> WorkerApiServer<WorkerService> {
    WorkerApiServer::new(WorkerService { node })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn parse_job(s: &str) -> Result<u64, Status> {
    s.parse::<JobId>().map(|j| j.0).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn check_name(name: &str) -> Result<(), Status> {
    if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(Status::invalid_argument("worker name must be 1-128 characters of [A-Za-z0-9._-]"));
    }
    Ok(())
}

#[tonic::async_trait]
impl WorkerApi for WorkerService {
    async fn register(&self, req: Req<pb::RegisterRequest>) -> Result<Resp<pb::RegisterResponse>, Status> {
        let r = req.into_inner();
        check_name(&r.name)?;
        self.node
            .write(Request::RegisterWorker { name: r.name.clone(), addr: r.addr, capacity: r.capacity.max(1), models: r.models, now_ms: now_ms() })
            .await?;
        self.node.leader.heard_from(&r.name);
        info!(worker = %r.name, "worker registered");
        Ok(Resp::new(pb::RegisterResponse {
            heartbeat_interval_ms: self.node.cfg.cluster.heartbeat_interval_ms,
            lease_timeout_ms: self.node.cfg.cluster.lease_timeout_ms,
        }))
    }

    async fn heartbeat(&self, req: Req<pb::HeartbeatRequest>) -> Result<Resp<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        // Only the leader keeps lease clocks.
        self.node.require_leader()?;
        let known = self.node.reader.read(|a| a.state.workers.contains_key(&r.name));
        if !known {
            return Ok(Resp::new(pb::HeartbeatResponse { revoked: vec![], reregister: true }));
        }
        self.node.leader.heard_from(&r.name);
        let mut revoked = Vec::new();
        for l in r.leases {
            let job = parse_job(&l.job_id)?;
            let holds = self.node.reader.read(|a| {
                a.state.jobs.get(&job).and_then(|j| j.shards.get(l.shard as usize)).is_some_and(|s| {
                    matches!(&s.state, ShardState::Leased { worker, epoch, .. } if *worker == r.name && *epoch == l.epoch)
                })
            });
            if holds {
                self.node.leader.renew(job, l.shard, l.epoch);
            } else {
                revoked.push(l);
            }
        }
        Ok(Resp::new(pb::HeartbeatResponse { revoked, reregister: false }))
    }

    async fn lease(&self, req: Req<pb::LeaseRequest>) -> Result<Resp<pb::LeaseResponse>, Status> {
        let r = req.into_inner();
        // Leases are granted where their clocks run: on the leader.
        self.node.require_leader()?;
        // Workers heard from within a lease timeout compete for the pending
        // shards (fair share by free capacity; see `choose_shards`).
        let live = self.node.leader.live_workers();
        let plan = self.node.reader.read(|a| {
            if !a.state.workers.contains_key(&r.name) {
                return Err(Status::failed_precondition(format!("unknown worker '{}': register first", r.name)));
            }
            Ok(plan_lease(&a.state, &r.name, r.free_slots, &live))
        })?;
        let req = match plan {
            LeasePlan::Grant(shards) => Request::Grant { worker: r.name.clone(), shards, now_ms: now_ms() },
            LeasePlan::Split(st) => Request::Split { job: st.job, shard: st.shard, epoch: st.epoch, at: st.at, worker: r.name.clone(), now_ms: now_ms() },
            LeasePlan::Nothing => return Ok(Resp::new(pb::LeaseResponse { shards: vec![] })),
        };
        let granted = match self.node.write(req.clone()).await? {
            Response::Granted(g) => g,
            // The victim's lease moved on (a report, an expiry) since we looked: no work this time.
            Response::Rejected(rej) if matches!(req, Request::Split { .. }) => {
                debug!(worker = %r.name, reason = %rej, "work stealing skipped");
                Vec::new()
            }
            Response::Rejected(rej) => return Err(crate::status::rejected(rej)),
            other => return Err(crate::status::unexpected(&other)),
        };
        metrics::inc(LEASES_GRANTED, &[], granted.len() as u64);
        if let (Request::Split { job, shard, epoch, at, .. }, Some(g)) = (&req, granted.first()) {
            metrics::inc(WORK_STOLEN, &[], 1);
            info!(job_id = job, victim_shard = shard, victim_epoch = epoch, cut = at, new_shard = g.shard, worker = %r.name, "work stolen: shard split");
        }
        let mut shards = Vec::new();
        for g in granted {
            self.node.leader.renew(g.job, g.shard, g.epoch);
            let a = self.node.reader.read(|a| {
                let j = a.state.jobs.get(&g.job)?;
                assignment(j, j.shards.get(g.shard as usize)?, g.epoch, now_ms())
            });
            if let Some(a) = a {
                info!(job_id = g.job, shard = g.shard, epoch = g.epoch, worker = %r.name, from = a.resume_frame, to = a.end_frame, "shard leased");
                shards.push(a);
            }
        }
        Ok(Resp::new(pb::LeaseResponse { shards }))
    }

    async fn resume_live(&self, req: Req<pb::ResumeLiveRequest>) -> Result<Resp<pb::ResumeLiveResponse>, Status> {
        let r = req.into_inner();
        // Leases (and their expiry) are the leader's.
        self.node.require_leader()?;
        let key = r.key.as_str();
        let found = self.node.reader.read(|a| {
            let Some(j) = (!key.is_empty()).then(|| a.state.jobs.values().find(|j| j.live.as_ref().is_some_and(|l| l.key == key))).flatten() else {
                return Err(Status::not_found(format!("no live stream has the key '{key}': push to the URL `panoptes live` printed")));
            };
            // The state machine's own check: the lobby retries what may change.
            match a.state.check_move_live(j.id, &r.name, &r.url) {
                Ok(()) => Ok(j.id),
                Err(rej) => Err(crate::status::rejected(rej)),
            }
        })?;
        match self.node.write(Request::MoveLive { job: found, worker: r.name.clone(), url: r.url.clone() }).await? {
            Response::Ok => {
                info!(job_id = found, worker = %r.name, url = %panoptes_media::policy::redact(&r.url), "live stream resumes on another worker's ingest lobby");
                Ok(Resp::new(pb::ResumeLiveResponse { job_id: JobId(found).to_string() }))
            }
            // Changed since the check above: busy is retried, the rest refused.
            Response::Rejected(rej) => Err(crate::status::rejected(rej)),
            other => Err(crate::status::unexpected(&other)),
        }
    }

    async fn leave(&self, req: Req<pb::LeaveRequest>) -> Result<Resp<pb::LeaveResponse>, Status> {
        let r = req.into_inner();
        // Leases (and the heartbeats that keep them) are the leader's.
        self.node.require_leader()?;
        match self.node.write(Request::Leave { worker: r.name.clone() }).await? {
            Response::Drained { leases_returned } => {
                // Gone: no live stream is placed on it until it heartbeats again.
                self.node.leader.forget(&r.name);
                info!(worker = %r.name, leases_returned, "worker left: its shards went back to pending");
                Ok(Resp::new(pb::LeaveResponse { leases_returned }))
            }
            Response::Rejected(rej) => Err(crate::status::rejected(rej)),
            other => Err(crate::status::unexpected(&other)),
        }
    }

    async fn report(&self, req: Req<pb::ReportRequest>) -> Result<Resp<pb::ReportResponse>, Status> {
        let received = Instant::now();
        let mut r = req.into_inner();
        self.node.require_leader()?;
        let job = parse_job(&r.job_id)?;
        let bytes = prost::Message::encoded_len(&r) as u64;
        // An accepted report carries one output per model for every frame.
        let models = r.frames.first().map(|f| f.outputs.len()).unwrap_or(0) as u64;
        let times = r.times.map(stage_times);
        // Pictures go to a majority of the coordinators beside the log; the
        // report proposes their references (`picture_copies.rs`). Not for a
        // report whose lease has already gone: it will be refused.
        let (mut frames, images) = frames_and_pictures(std::mem::take(&mut r.frames), r.epoch);
        let holds_lease = self.node.reader.read(|a| {
            a.state.jobs.get(&job).and_then(|j| j.shards.get(r.shard as usize)).is_some_and(|s| matches!(&s.state, ShardState::Leased { epoch, .. } if *epoch == r.epoch))
        });
        if holds_lease && !images.is_empty() {
            let with: Vec<u64> = images.iter().map(|(f, _, _)| *f).collect();
            let refs = self.node.pictures.replicate(job, images).await?;
            for (frame, pr) in with.into_iter().zip(refs) {
                if let Some(fo) = frames.iter_mut().find(|fo| fo.frame == frame) {
                    fo.image = Some(pr);
                }
            }
        }
        let report = Report {
            worker: r.name.clone(),
            job,
            shard: r.shard,
            epoch: r.epoch,
            frames,
            next_frame: r.next_frame,
            done: r.done,
            error: if r.error.is_empty() { None } else { Some(r.error) },
            times: times.unwrap_or_default(),
            bytes,
            now_ms: now_ms(),
        };
        let n = report.frames.len();
        let outcome = self.node.write(Request::Report(report)).await?;
        metrics::observe(REPORT_COMMIT_SECONDS, &[], received.elapsed().as_secs_f64());
        match outcome {
            Response::Reported { stored } => {
                self.node.leader.renew(job, r.shard, r.epoch);
                metrics::inc(REPORTS_ACCEPTED, &[], 1);
                metrics::inc(RESULTS_STORED, &[], stored as u64 * models);
                debug!(job_id = job, shard = r.shard, frames = n, stored, "report accepted");
                // The shard's end as applied here (a split may have moved it):
                // the holder stops decoding there.
                let end_frame =
                    self.node.reader.read(|a| a.state.jobs.get(&job).and_then(|j| j.shards.get(r.shard as usize)).map_or(0, |s| s.end));
                Ok(Resp::new(pb::ReportResponse { accepted: true, reason: String::new(), stored, end_frame }))
            }
            // Refused (nothing stored): the worker stops this shard.
            Response::Rejected(rej) => {
                metrics::inc(REPORTS_REFUSED, &[("reason", rej.kind.label())], 1);
                debug!(job_id = job, shard = r.shard, frames = n, reason = %rej, "report refused");
                Ok(Resp::new(pb::ReportResponse { accepted: false, reason: rej.message, stored: 0, end_frame: 0 }))
            }
            other => Err(crate::status::unexpected(&other)),
        }
    }
}
