//! The worker-facing gRPC service: register, heartbeat, lease, report,
//! resume a live stream, leave. It only converts messages (`convert.rs`);
//! what each call does is the leader's (`crate::leader`).
use std::sync::Arc;

use panoptes_common::ids::JobId;
use panoptes_proto::worker as pb;
use panoptes_proto::worker::worker_api_server::{WorkerApi, WorkerApiServer};
use tonic::{Request as Req, Response as Resp, Status};

use crate::handle::{Coordinator, MAX_MESSAGE_BYTES};
use crate::leader::{self, HeldLease, Registration, ReportIn, Reported};

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
        leader::register(&*self.node, Registration { name: r.name, addr: r.addr, capacity: r.capacity, models: r.models }).await?;
        Ok(Resp::new(pb::RegisterResponse {
            heartbeat_interval_ms: self.node.cfg.cluster.heartbeat_interval_ms,
            lease_timeout_ms: self.node.cfg.cluster.lease_timeout_ms,
        }))
    }

    async fn heartbeat(&self, req: Req<pb::HeartbeatRequest>) -> Result<Resp<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let leases = r
            .leases
            .into_iter()
            .map(|l| Ok(HeldLease { job: parse_job(&l.job_id)?, shard: l.shard, epoch: l.epoch }))
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(Resp::new(match leader::heartbeat(&*self.node, &r.name, leases)? {
            None => pb::HeartbeatResponse { revoked: vec![], reregister: true },
            Some(revoked) => pb::HeartbeatResponse {
                revoked: revoked.into_iter().map(|l| pb::LeaseRef { job_id: JobId(l.job).to_string(), shard: l.shard, epoch: l.epoch }).collect(),
                reregister: false,
            },
        }))
    }

    async fn lease(&self, req: Req<pb::LeaseRequest>) -> Result<Resp<pb::LeaseResponse>, Status> {
        let r = req.into_inner();
        let shards = leader::lease(&*self.node, &r.name, r.free_slots, assignment).await?;
        Ok(Resp::new(pb::LeaseResponse { shards }))
    }

    async fn resume_live(&self, req: Req<pb::ResumeLiveRequest>) -> Result<Resp<pb::ResumeLiveResponse>, Status> {
        let r = req.into_inner();
        let job = leader::resume_live(&*self.node, &r.name, &r.key, &r.url).await?;
        Ok(Resp::new(pb::ResumeLiveResponse { job_id: JobId(job).to_string() }))
    }

    async fn leave(&self, req: Req<pb::LeaveRequest>) -> Result<Resp<pb::LeaveResponse>, Status> {
        let r = req.into_inner();
        let leases_returned = leader::leave(&*self.node, &r.name).await?;
        Ok(Resp::new(pb::LeaveResponse { leases_returned }))
    }

    async fn report(&self, req: Req<pb::ReportRequest>) -> Result<Resp<pb::ReportResponse>, Status> {
        let mut r = req.into_inner();
        let job = parse_job(&r.job_id)?;
        let bytes = prost::Message::encoded_len(&r) as u64;
        let frame_size = r.frames.iter().find(|f| f.width > 0 && f.height > 0).map(|f| (f.width, f.height));
        let (frames, pictures) = frames_and_pictures(std::mem::take(&mut r.frames), r.epoch);
        let report = ReportIn {
            worker: r.name,
            job,
            shard: r.shard,
            epoch: r.epoch,
            frames,
            pictures,
            next_frame: r.next_frame,
            done: r.done,
            error: if r.error.is_empty() { None } else { Some(r.error) },
            times: r.times.map(stage_times).unwrap_or_default(),
            bytes,
            frame_size,
        };
        Ok(Resp::new(match leader::report(&*self.node, report).await? {
            Reported::Accepted { stored, end_frame } => pb::ReportResponse { accepted: true, reason: String::new(), stored, end_frame },
            Reported::Refused { reason } => pb::ReportResponse { accepted: false, reason, stored: 0, end_frame: 0 },
        }))
    }
}
