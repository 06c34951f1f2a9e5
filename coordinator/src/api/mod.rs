//! The public gRPC service: submit, status, results, videos, cancel, and the
//! admin calls (cluster status, worker drain, membership changes).
use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use panoptes_common::ids::JobId;
use openraft::ServerState;
use panoptes_common::config::{parse_host_port, Config};
use panoptes_common::now_ms;
use panoptes_proto::api as pb;
use panoptes_proto::api::panoptes_client::PanoptesClient;
use panoptes_proto::api::panoptes_server::{Panoptes, PanoptesServer};
use tonic::transport::Channel;
use tonic::{Request as Req, Response as Resp, Status};
use tracing::{info, warn};

use crate::auth::Caller;
use crate::metrics::RESULT_STREAMS;
use crate::auth::{caller_auth, CallerAuth};
use crate::handle::{Coordinator, MembershipChange, MAX_MESSAGE_BYTES};
use crate::raft::known_leader;
use crate::state::command::{Request, Response};
use crate::state::model::{is_pull_source, Job, JobSpec, JobState, KeepWhat, ShardState};
use crate::store::{ResultRow, StateReader};

pub struct ApiService {
    node: Arc<Coordinator>,
}

pub fn server(node: Arc<Coordinator>) -> PanoptesServer<ApiService> {
    PanoptesServer::new(ApiService { node }).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES)
}

#[macro_use]
mod cluster;
mod convert;
mod results;
use results::{open_stream, wait_for_change};
mod validate;

pub use convert::{alerts_pb, lobby_url, state_pb, status_pb};
pub use validate::{check_source_policy, validate_submit};
use cluster::*;
use convert::*;
use validate::*;

impl ApiService {
    /// A capture device is opened by the worker it is attached to: its URL
    /// must name a worker that has registered.
    fn check_device(&self, source: &str) -> Result<(), Status> {
        let Some((worker, path)) = panoptes_media::device_source(source) else { return Ok(()) };
        panoptes_media::check_device_path(source, &path).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let Some(w) = worker else {
            return Err(Status::invalid_argument(format!(
                "'{source}': name the worker the camera is attached to: v4l2://WORKER{path} (CLI: --worker WORKER)"
            )));
        };
        if !self.node.reader.read(|a| a.state.workers.contains_key(&w)) {
            return Err(Status::invalid_argument(format!("'{source}': no worker named '{w}' has registered (`panoptes cluster status` lists the workers)")));
        }
        Ok(())
    }

    /// A job by id. Read your writes through a follower: a job created on the
    /// leader a moment ago may not be applied on this member yet. An id this
    /// member has not reached (`next_job`) is waited for, at most
    /// [`REPLICATION_WAIT`], when this member is not the leader (the leader
    /// applies a job before it answers its creation).
    async fn job(&self, id: &str) -> Result<Job, Status> {
        let id = parse_job(id)?;
        let deadline = tokio::time::Instant::now() + REPLICATION_WAIT;
        loop {
            let (job, ahead) = self.node.reader.read(|a| (a.state.jobs.get(&id).cloned(), id >= a.state.next_job));
            match job {
                Some(j) => return Ok(j),
                None if ahead && !self.node.is_leader() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None => return Err(Status::not_found(format!("no job {}", JobId(id)))),
            }
        }
    }
}

type ResultStream = Pin<Box<dyn Stream<Item = Result<pb::FrameResult, Status>> + Send>>;

#[tonic::async_trait]
impl Panoptes for ApiService {
    async fn submit(&self, req: Req<pb::SubmitRequest>) -> Result<Resp<pb::SubmitResponse>, Status> {
        let (caller, r) = on_leader!(self, req, submit, "submission", WRITE_TIMEOUT);
        let mut spec = validate_submit(&r, &self.node.cfg)?;
        spec.owner = caller.owner().to_string();
        check_source_policy(&spec.source, &self.node.cfg).await?;
        self.check_device(&spec.source)?;
        let (name, source) = (spec.name.clone(), spec.source.clone());
        match self.node.commit(Request::Submit { spec, now_ms: now_ms() }).await? {
            Response::JobCreated { job, existing } => {
                info!(job_id = job, %name, source = %panoptes_media::policy::redact(&source), existing, "job submitted");
                Ok(Resp::new(pb::SubmitResponse { job_id: JobId(job).to_string() }))
            }
            other => Err(crate::status::unexpected(&other)),
        }
    }

    async fn get_status(&self, req: Req<pb::JobRef>) -> Result<Resp<pb::JobStatus>, Status> {
        let caller = Caller::of(&req);
        Ok(Resp::new(status_pb(&self.job(&req.into_inner().job_id).await?, &caller)))
    }

    async fn get_results(&self, req: Req<pb::ResultsRequest>) -> Result<Resp<pb::ResultsResponse>, Status> {
        let r = req.into_inner();
        let job = self.job(&r.job_id).await?;
        Self::check_model(&job, &r.model)?;
        let frame = if r.has_frame { Some(r.frame) } else { None };
        let limit = match r.page_size {
            0 => RESULTS_PAGE_DEFAULT,
            n => (n as usize).min(RESULTS_PAGE_MAX),
        };
        let after = match r.page_token.as_str() {
            "" => None,
            t => Some(decode_page_token(t).ok_or_else(|| Status::invalid_argument(format!("page_token '{t}' is not one this API gave: start again with an empty one")))?),
        };
        let (rows, last) = self.node.reader.results_from(job.id, frame, r.from_frame, after.as_deref(), limit);
        // A full page may have more behind it; the token is the last key read.
        let next_page_token = if rows.len() >= limit { last.map(|k| encode_page_token(&k)).unwrap_or_default() } else { String::new() };
        Ok(Resp::new(pb::ResultsResponse { results: Self::rows_pb(&job, rows, &r.model), next_page_token }))
    }

    type StreamResultsStream = ResultStream;

    async fn stream_results(&self, req: Req<pb::ResultsRequest>) -> Result<Resp<ResultStream>, Status> {
        let r = req.into_inner();
        let job = self.job(&r.job_id).await?;
        Self::check_model(&job, &r.model)?;
        let mut reader = self.node.reader.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        if r.follow && !r.has_frame {
            tokio::spawn(Self::follow(reader, job, r.model.clone(), r.from_frame, tx));
            return Ok(Resp::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as ResultStream));
        }
        tokio::spawn(async move {
            let _open = open_stream();
            // A job that has ended is read once its analytics have caught up
            // (its results then carry every track id), waiting a little.
            let deadline = tokio::time::Instant::now() + ANALYTICS_WAIT;
            while tokio::time::Instant::now() < deadline
                && reader.read(|a| a.state.jobs.get(&job.id).is_some_and(|j| j.state.is_finished() && !j.analytics_up_to_date()))
            {
                if !wait_for_change(&mut reader, &tx).await {
                    return;
                }
            }
            let frame = if r.has_frame { Some(r.frame) } else { None };
            let mut after: Option<Vec<u8>> = None;
            loop {
                let (rows, last) = reader.results_from(job.id, frame, r.from_frame, after.as_deref(), 512);
                let got = !rows.is_empty();
                if let Some(l) = last {
                    after = Some(l);
                }
                for fr in Self::rows_pb(&job, rows, &r.model) {
                    if tx.send(Ok(fr)).await.is_err() {
                        return;
                    }
                }
                if got {
                    continue;
                }
                let finished = reader.read(|a| a.state.jobs.get(&job.id).map(|j| j.state.is_finished()).unwrap_or(true));
                if !r.follow || finished {
                    // One more pass after the job finished, so nothing committed just before is missed.
                    loop {
                        let (rows, last) = reader.results_from(job.id, frame, r.from_frame, after.as_deref(), 512);
                        if rows.is_empty() {
                            return;
                        }
                        after = last;
                        for fr in Self::rows_pb(&job, rows, &r.model) {
                            if tx.send(Ok(fr)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                if !wait_for_change(&mut reader, &tx).await {
                    return;
                }
            }
        });
        Ok(Resp::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as ResultStream))
    }

    async fn get_frame_results(&self, req: Req<pb::FrameRef>) -> Result<Resp<pb::ResultsResponse>, Status> {
        let r = req.into_inner();
        let job = self.job(&r.job_id).await?;
        let (rows, _) = self.node.reader.results(job.id, Some(r.frame), None, usize::MAX);
        if rows.is_empty() {
            return Err(Status::not_found(format!("job {} has no results for frame {}", JobId(job.id), r.frame)));
        }
        Ok(Resp::new(pb::ResultsResponse { results: Self::rows_pb(&job, rows, ""), next_page_token: String::new() }))
    }

    async fn get_annotated_frame(&self, req: Req<pb::FrameRef>) -> Result<Resp<pb::AnnotatedFrame>, Status> {
        let r = req.into_inner();
        let job = self.job(&r.job_id).await?;
        let id = JobId(job.id);
        if job.spec.frames_height == 0 {
            return Err(Status::not_found(format!("job {id} keeps no frame pictures (submitted with --no-frames, or frames.store is off)")));
        }
        let (before, after) = self.node.reader.pictured_near(job.id, r.frame);
        let frame = match (r.nearest, before, after) {
            (_, Some(b), _) if b == r.frame => r.frame,
            (true, Some(b), _) => b,
            (true, None, Some(a)) => a,
            _ => {
                let (rows, _) = self.node.reader.results(job.id, Some(r.frame), None, usize::MAX);
                let near = match (before, after) {
                    (Some(b), Some(a)) => format!("; the nearest with one are frames {b} and {a}"),
                    (Some(f), None) | (None, Some(f)) => format!("; the nearest with one is frame {f}"),
                    (None, None) => "; it has none yet".into(),
                };
                let why = if rows.is_empty() {
                    let step = job.spec.frame_step;
                    format!("job {id} has no analysed frame {} (frames analysed: every {step}th from 0; committed so far: {})", r.frame, job.frames_done)
                } else if job.spec.frames_every_ms > 0 {
                    let every = panoptes_common::format_interval_ms(job.spec.frames_every_ms);
                    format!(
                        "job {id} has no stored picture of frame {}: it keeps one per {every} of stream time (--pictures-every){near}; `panoptes frame --nearest` (?nearest=1 on the web API) draws the nearest",
                        r.frame
                    )
                } else {
                    format!("job {id} has no stored picture of frame {}{near}", r.frame)
                };
                return Err(Status::not_found(why));
            }
        };
        let (rows, _) = self.node.reader.results(job.id, Some(frame), None, usize::MAX);
        let image = self.node.pictures.picture(&self.node.reader, job.id, frame).await.map_err(|e| Status::unavailable(format!("job {id}: {e}")))?;
        let results: Vec<(String, serde_json::Value)> = Self::rows_pb(&job, rows, "")
            .into_iter()
            .map(|f| (f.model, serde_json::from_str(&f.results_json).unwrap_or(serde_json::Value::Null)))
            .collect();
        // The job's zones in force at this frame, in the analysed frame's pixels.
        let zones: Vec<(String, Vec<[f64; 2]>)> = job
            .zones
            .iter()
            .filter(|z| z.from_frame <= frame)
            .filter_map(|z| {
                let (sx, sy) = z.zone.scale(Some((image.width, image.height)))?;
                Some((z.zone.name.clone(), z.zone.points.iter().map(|p| [p[0] * sx, p[1] * sy]).collect()))
            })
            .collect();
        // Decoding and drawing take a few ms: keep them off the async threads.
        let (png, w, h) = tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, u32, u32), panoptes_render::RenderError> {
            let mut img = panoptes_render::decode_jpeg(&image.jpeg)?;
            panoptes_render::draw_zones(&mut img, (image.width, image.height), &zones);
            panoptes_render::annotate(&mut img, (image.width, image.height), &results);
            Ok((panoptes_render::encode_png(&img)?, img.width, img.height))
        })
        .await
        .map_err(|e| Status::internal(format!("drawing the frame crashed: {e}")))?
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Resp::new(pb::AnnotatedFrame {
            frame,
            png,
            width: w,
            height: h,
            analysed_width: image.width,
            analysed_height: image.height,
        }))
    }

    async fn get_metrics(&self, req: Req<pb::JobRef>) -> Result<Resp<pb::JobMetrics>, Status> {
        let j = self.job(&req.into_inner().job_id).await?;
        let c = &j.counters;
        let end = if j.finished_at_ms > 0 { j.finished_at_ms } else { now_ms() };
        let wall = end.saturating_sub(j.submitted_at_ms) as f64 / 1000.0;
        let queue_wait = if c.first_lease_ms > 0 { c.first_lease_ms.saturating_sub(j.submitted_at_ms) as f64 / 1000.0 } else { 0.0 };
        Ok(Resp::new(pb::JobMetrics {
            job_id: JobId(j.id).to_string(),
            frames_extracted: c.times.frames_decoded,
            ingest_time_s: c.times.decode_s,
            resize_time_s: c.times.resize_s,
            inference_time_s: c.times.inference_s.clone().into_iter().collect(),
            avg_message_bytes: if c.reports > 0 { c.report_bytes as f64 / c.reports as f64 } else { 0.0 },
            wall_time_s: wall,
            frames_per_s: if wall > 0.0 { j.frames_done as f64 / wall } else { 0.0 },
            errors: c.errors,
            queue_wait_s: queue_wait,
            frames_dropped: c.times.frames_dropped,
            latency_p50_ms: c.times.latency_quantile(0.50),
            latency_p95_ms: c.times.latency_quantile(0.95),
            latency_p99_ms: c.times.latency_quantile(0.99),
            latency_samples: c.times.latency_ms.values().sum(),
            reconnects: c.times.reconnects,
            gap_ms: c.times.gap_ms,
        }))
    }

    async fn list_videos(&self, req: Req<pb::ListVideosRequest>) -> Result<Resp<pb::ListVideosResponse>, Status> {
        let caller = Caller::of(&req);
        let limit = match req.into_inner().limit {
            0 => usize::MAX,
            n => n as usize,
        };
        let mut jobs: Vec<Job> = self.node.reader.read(|a| a.state.jobs.values().filter(|j| j.state.is_finished()).cloned().collect());
        jobs.sort_by(|a, b| b.finished_at_ms.cmp(&a.finished_at_ms).then(b.id.cmp(&a.id)));
        let videos = jobs
            .into_iter()
            .take(limit)
            .map(|j| pb::VideoSummary {
                job_id: JobId(j.id).to_string(),
                name: j.spec.name.clone(),
                source: source_for(&caller, &j, &j.spec.source),
                state: state_pb(j.state) as i32,
                frames: j.frames_done,
                finished_at_ms: j.finished_at_ms,
            })
            .collect();
        Ok(Resp::new(pb::ListVideosResponse { videos }))
    }

    async fn cancel(&self, req: Req<pb::JobRef>) -> Result<Resp<pb::JobStatus>, Status> {
        let (caller, r) = on_leader!(self, req, cancel, "cancellation", WRITE_TIMEOUT);
        let j = self.job(&r.job_id).await?;
        match self.node.commit(Request::Cancel { job: j.id, now_ms: now_ms() }).await? {
            Response::Ok => {}
            Response::Rejected(r) => return Err(crate::status::rejected(r)),
            other => return Err(crate::status::unexpected(&other)),
        }
        info!(job_id = j.id, "job cancelled");
        Ok(Resp::new(status_pb(&self.job(&JobId(j.id).to_string()).await?, &caller)))
    }

    async fn create_live_endpoint(&self, req: Req<pb::LiveRequest>) -> Result<Resp<pb::LiveEndpoint>, Status> {
        // Worker heartbeats (who is alive) live on the leader.
        let (caller, r) = on_leader!(self, req, create_live_endpoint, "live endpoint request", WRITE_TIMEOUT);
        // The same checks as a submission: models, frame step, name.
        let sub = pb::SubmitRequest {
            source: "rtmp://live".into(),
            models: r.models,
            frame_step: r.frame_step,
            name: r.name,
            keep: r.keep,
            keep_what: r.keep_what,
            pictures_every: r.pictures_every,
            no_frames: r.no_frames,
            rules: r.rules,
            zones: r.zones,
            ..Default::default()
        };
        let mut spec = validate_submit(&sub, &self.node.cfg)?;
        spec.owner = caller.owner().to_string();
        if sub_name_empty(&sub) {
            // Named after its stream key, which the leader draws.
            spec.name.clear();
        }
        let new = crate::leader::create_live(&*self.node, spec).await?;
        Ok(Resp::new(pb::LiveEndpoint { job_id: JobId(new.job).to_string(), rtmp_url: new.url }))
    }

    async fn prune(&self, req: Req<pb::PruneRequest>) -> Result<Resp<pb::PruneResponse>, Status> {
        let (_, r) = on_leader!(self, req, prune, "prune", WRITE_TIMEOUT);
        let before = self.node.reader.disk_size();
        let cutoff = now_ms().saturating_sub(r.older_than_ms);
        match self.node.commit(Request::Prune { finished_before_ms: cutoff }).await? {
            Response::Pruned { jobs, freed } => {
                let after = self.node.reader.disk_size();
                info!(jobs = jobs.len(), results = freed.results, frames = freed.frames, bytes = freed.bytes, "pruned finished jobs");
                Ok(Resp::new(pb::PruneResponse {
                    jobs: jobs.len() as u32,
                    results: freed.results,
                    frames: freed.frames,
                    bytes: freed.bytes,
                    job_ids: jobs.iter().map(|j| JobId(*j).to_string()).collect(),
                    disk_bytes_before: before,
                    disk_bytes_after: after,
                }))
            }
            other => Err(crate::status::unexpected(&other)),
        }
    }

    async fn list_alerts(&self, req: Req<pb::AlertsRequest>) -> Result<Resp<pb::AlertsResponse>, Status> {
        let r = req.into_inner();
        if r.job_id.trim().is_empty() {
            let (alerts, dropped) = self.node.reader.read(|a| {
                // By job, then as recorded (stream times of different jobs do not compare).
                let all: Vec<pb::Alert> = a.state.jobs.values().flat_map(alerts_pb).collect();
                (all, a.state.jobs.values().map(|j| j.alerts.dropped).sum())
            });
            return Ok(Resp::new(pb::AlertsResponse { alerts, dropped }));
        }
        let j = self.job(&r.job_id).await?;
        Ok(Resp::new(pb::AlertsResponse { alerts: alerts_pb(&j), dropped: j.alerts.dropped }))
    }

    async fn add_zone(&self, req: Req<pb::AddZoneRequest>) -> Result<Resp<pb::JobStatus>, Status> {
        let (caller, r) = on_leader!(self, req, add_zone, "zone addition", WRITE_TIMEOUT);
        let j = self.job(&r.job_id).await?;
        let zone = validate::validate_zones(std::slice::from_ref(&r.zone))?.remove(0);
        if !j.spec.tracks {
            return Err(Status::failed_precondition(format!("job {} runs no detector ({}): nothing is tracked into zones", JobId(j.id), j.spec.models.join(", "))));
        }
        if let Some(why) = j.frame_size.and_then(|(w, h)| zone.beyond(w, h)) {
            return Err(Status::invalid_argument(why));
        }
        match self.node.commit(Request::AddZone { job: j.id, zone: zone.clone() }).await? {
            Response::Ok => {}
            Response::Rejected(r) => return Err(crate::status::rejected(r)),
            other => return Err(crate::status::unexpected(&other)),
        }
        info!(job_id = j.id, zone = %zone.text(), "zone added");
        Ok(Resp::new(status_pb(&self.job(&JobId(j.id).to_string()).await?, &caller)))
    }

    async fn list_models(&self, _req: Req<pb::ListModelsRequest>) -> Result<Resp<pb::ListModelsResponse>, Status> {
        let models = self
            .node
            .cfg
            .models
            .iter()
            .map(|(name, m)| pb::ModelInfo { name: name.clone(), family: m.family.to_string(), files: m.files.clone() })
            .collect();
        Ok(Resp::new(pb::ListModelsResponse { models }))
    }

    async fn cluster_status(&self, req: Req<pb::ClusterStatusRequest>) -> Result<Resp<pb::ClusterStatusResponse>, Status> {
        let auth = caller_auth(req.metadata());
        let (metadata, _, r) = req.into_parts();
        if r.self_only {
            return Ok(Resp::new(self.own_view()));
        }
        // The leader knows replication progress and worker heartbeats: ask
        // it, unless the caller asked this member, or it cannot be reached.
        if !r.no_forward && metadata.get(FORWARDED).is_none() {
            if let Ok(Route::Leader { addr, request }) = self.route("cluster status request", &metadata, r, FORWARD_STATUS_TIMEOUT) {
                match self.client(&addr)?.cluster_status(request).await {
                    Ok(resp) => return Ok(resp),
                    Err(e) => warn!(%addr, error = %e.message(), "cannot reach the leader for cluster status; answering from this member's view"),
                }
            }
        }
        Ok(Resp::new(self.cluster_view(&auth).await))
    }

    async fn drain_worker(&self, req: Req<pb::DrainWorkerRequest>) -> Result<Resp<pb::DrainWorkerResponse>, Status> {
        let (_, r) = on_leader!(self, req, drain_worker, "drain request", WRITE_TIMEOUT);
        if r.undo && r.hand_back {
            return Err(Status::invalid_argument("undo (take shards again) and hand_back (return leases) do not go together"));
        }
        let draining = !r.undo;
        match self.node.commit(Request::Drain { worker: r.name.clone(), draining, hand_back: r.hand_back }).await? {
            Response::Drained { leases_returned } => {
                info!(worker = %r.name, draining, leases_returned, "worker drain changed");
                Ok(Resp::new(pb::DrainWorkerResponse { leases_returned, draining }))
            }
            // The only refusal: no such worker.
            Response::Rejected(_) => {
                let names: Vec<String> = self.node.reader.read(|a| a.state.workers.keys().cloned().collect());
                let known = if names.is_empty() { "none are registered".to_string() } else { format!("registered workers: {}", names.join(", ")) };
                Err(Status::not_found(format!("no worker named '{}' ({known})", r.name)))
            }
            other => Err(crate::status::unexpected(&other)),
        }
    }

    async fn add_member(&self, req: Req<pb::AddMemberRequest>) -> Result<Resp<pb::MembershipResponse>, Status> {
        if req.get_ref().id == 0 {
            return Err(Status::invalid_argument("coordinator ids start at 1"));
        }
        let addr = req.get_ref().addr.trim().to_string();
        parse_host_port(&addr).map_err(|e| Status::invalid_argument(format!("member address '{addr}': {e}")))?;
        let wait = Duration::from_millis(if req.get_ref().timeout_ms == 0 { DEFAULT_CATCH_UP.as_millis() as u64 } else { req.get_ref().timeout_ms });
        let auth = caller_auth(req.metadata());
        let (_, r) = on_leader!(self, req, add_member, "add-member request", wait + Duration::from_secs(40));
        let timeout = match r.timeout_ms {
            0 => DEFAULT_CATCH_UP,
            ms => Duration::from_millis(ms.min(3_600_000)),
        };
        // Check that the right coordinator runs there, and is not part of another cluster.
        match self.probe(&addr, &auth).await {
            None => {
                return Err(Status::failed_precondition(format!(
                    "nothing answers at {addr}: start the new coordinator first (panoptes coordinator --id {} --listen {addr} --data-dir DIR --join)",
                    r.id
                )))
            }
            Some(p) if p.answered_by != r.id => {
                return Err(Status::failed_precondition(format!("the coordinator at {addr} has id {}, not {}", p.answered_by, r.id)))
            }
            Some(p) if p.leader != 0 && p.leader != self.node.id => {
                return Err(Status::failed_precondition(format!(
                    "the coordinator at {addr} follows leader {} (term {}), not this cluster's leader {}: it belongs to another cluster. \
                     Stop it, empty its data dir and start it again with --join",
                    p.leader, p.term, self.node.id
                )))
            }
            Some(_) => {}
        }
        let c = self.node.add_member(r.id, &addr, timeout).await?;
        Ok(Resp::new(self.membership_pb(c)))
    }

    async fn remove_member(&self, req: Req<pb::RemoveMemberRequest>) -> Result<Resp<pb::MembershipResponse>, Status> {
        let (_, r) = on_leader!(self, req, remove_member, "remove-member request", Duration::from_secs(60));
        let c = self.node.remove_member(r.id).await?;
        Ok(Resp::new(self.membership_pb(c)))
    }
}

/// How long a follower waits for the leader's answer to a write it sent on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a follower waits for a job id it has not applied yet (see `job`).
const REPLICATION_WAIT: Duration = Duration::from_secs(3);
/// How long a follower waits for the leader's cluster status.
const FORWARD_STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a member waits for another member's answer to a health probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long add-member waits for a new member to catch up, by default.
const DEFAULT_CATCH_UP: Duration = Duration::from_secs(60);

/// How long a read of an ended job's results waits for its analytics (its
/// track ids) to catch up: the leader evaluates an ended job at once, up to
/// 2,000 frames a round.
const ANALYTICS_WAIT: Duration = Duration::from_secs(10);
/// GetResults pages: the default and the largest page, in results.
const RESULTS_PAGE_DEFAULT: usize = 10_000;
const RESULTS_PAGE_MAX: usize = 100_000;

#[cfg(test)]
mod tests;
