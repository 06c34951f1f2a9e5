//! Reporter actor: gathers every model's output per frame, sends batches of
//! complete frames to the coordinator, and retries each batch until it is
//! acknowledged (which the coordinator does only once it is committed).
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use panoptes_common::retry::Backoff;
use panoptes_proto::failover::retryable;
use panoptes_proto::worker::{self as pb, worker_api_client::WorkerApiClient};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, warn, Instrument};

use super::{Links, ReportSink, ReporterMsg, ShardJob, ShardMsg};
use crate::metrics::{ReporterMetrics, REPORT_RETRIES};

pub struct ReporterActor;

pub struct ReporterArgs {
    pub job: ShardJob,
    pub links: Links,
}

struct Pending {
    timestamp: f64,
    arrived: Instant,
    picture: Option<super::Picture>,
    /// The picture is still being encoded.
    awaiting_picture: bool,
    /// Each model's results (JSON) and whether they are an error.
    outputs: Vec<Option<(String, bool)>>,
}

pub struct ReporterState {
    job: ShardJob,
    links: Links,
    pending: BTreeMap<u64, Pending>,
    ready: Vec<pb::FrameReport>,
    /// When each ready frame arrived (live latency), in `ready`'s order.
    arrivals: Vec<Instant>,
    times: pb::StageTimes,
    ends: usize,
    /// Every model ended at this frame, but pictures were still being
    /// encoded: the final report waits for them.
    end_at: Option<u64>,
    metrics: ReporterMetrics,
}

impl ReporterState {
    /// Frames held until acknowledged: waiting for a model, ready to send, and `sending`.
    fn update_pending(&mut self, sending: usize) {
        self.metrics.pending.set((self.pending.len() + self.ready.len() + sending) as f64);
    }
}

impl Actor for ReporterActor {
    type Msg = ReporterMsg;
    type State = ReporterState;
    type Arguments = ReporterArgs;

    async fn pre_start(&self, _myself: ActorRef<ReporterMsg>, a: ReporterArgs) -> Result<ReporterState, ActorProcessingErr> {
        Ok(ReporterState {
            job: a.job,
            links: a.links,
            pending: BTreeMap::new(),
            ready: Vec::new(),
            arrivals: Vec::new(),
            times: Default::default(),
            ends: 0,
            end_at: None,
            metrics: ReporterMetrics::new(),
        })
    }

    async fn handle(&self, _myself: ActorRef<ReporterMsg>, msg: ReporterMsg, st: &mut ReporterState) -> Result<(), ActorProcessingErr> {
        let span = st.links.span.clone();
        let r = on_message(msg, st).instrument(span).await;
        st.update_pending(0);
        r
    }
}

/// One message, in the shard's span.
async fn on_message(msg: ReporterMsg, st: &mut ReporterState) -> Result<(), ActorProcessingErr> {
    let n_models = st.job.analyses.len();
    match msg {
        ReporterMsg::Decoded { frame, timestamp, decode_s, resize_s, picture, arrived } => {
            st.times.decode_s += decode_s;
            st.times.resize_s += resize_s;
            st.times.frames_decoded += 1;
            st.pending.insert(frame, Pending { timestamp, arrived, picture: None, awaiting_picture: picture, outputs: vec![None; n_models] });
        }
        ReporterMsg::Picture { frame, picture } => {
            if let Some(p) = st.pending.get_mut(&frame) {
                p.picture = picture;
                p.awaiting_picture = false;
            }
            complete(st).await?;
            if let Some(next_frame) = st.end_at.filter(|_| st.pending.is_empty()) {
                st.end_at = None;
                finish(st, next_frame).await?;
            }
        }
        ReporterMsg::Output { frame, model, results_json, error, secs } => {
            let name = st.job.assignment.models[model].clone();
            *st.times.inference_s.entry(name).or_default() += secs;
            if let Some(p) = st.pending.get_mut(&frame) {
                p.outputs[model] = Some((results_json, error));
            }
            complete(st).await?;
        }
        ReporterMsg::Dropped => st.times.frames_dropped += 1,
        ReporterMsg::Reconnected { gap_ms } => {
            st.times.reconnects += 1;
            st.times.gap_ms += gap_ms;
        }
        ReporterMsg::End { next_frame } => {
            st.ends += 1;
            if st.ends == n_models {
                if st.pending.is_empty() {
                    finish(st, next_frame).await?;
                } else {
                    // Pictures of the last frames are still being encoded.
                    st.end_at = Some(next_frame);
                }
            }
        }
    }
    Ok(())
}

/// The final report: every frame before `next_frame` is ready.
async fn finish(st: &mut ReporterState, next_frame: u64) -> Result<(), ActorProcessingErr> {
    if st.job.kind.is_live() && !st.ready.is_empty() {
        // Live: commit the last frames first, so that the final
        // (done) report carries their latencies too.
        if !flush(st, next_frame, false).await? {
            return Ok(());
        }
    }
    flush(st, next_frame, true).await?;
    Ok(())
}

/// Move the frames that have every model's output and their picture to
/// `ready`, in frame order (lanes answer out of order: `pending` is ordered
/// by frame and only its complete head moves), and send a batch when one is
/// full; a live shard sends at once, without waiting to fill a batch (frames
/// completed while a report is in flight go together in the next).
async fn complete(st: &mut ReporterState) -> Result<(), ActorProcessingErr> {
    while let Some(entry) = st.pending.first_entry() {
        if entry.get().awaiting_picture || entry.get().outputs.iter().any(|o| o.is_none()) {
            break;
        }
        let (frame, p) = entry.remove_entry();
        let outputs = p
            .outputs
            .into_iter()
            .zip(&st.job.assignment.models)
            .map(|(o, m)| {
                let (results_json, error) = o.unwrap_or_default();
                pb::ModelOutput { model: m.clone(), results_json, error }
            })
            .collect();
        let (jpeg, width, height) = p.picture.map(|x| (x.jpeg, x.width, x.height)).unwrap_or_default();
        st.ready.push(pb::FrameReport { frame, timestamp: p.timestamp, outputs, jpeg, width, height });
        st.arrivals.push(p.arrived);
    }
    if st.ready.len() >= st.job.settings.batch as usize || (st.job.kind.is_live() && !st.ready.is_empty()) {
        let next = st.ready.last().map(|f| f.frame + 1).unwrap_or(0);
        flush(st, next, false).await?;
    }
    Ok(())
}

/// A latency in ms rounded down to two significant digits (the histogram's
/// keys: at most ~2% low, ~90 keys per decade).
pub fn latency_bucket(ms: u64) -> u64 {
    let mut scale = 1;
    while ms / scale >= 100 {
        scale *= 10;
    }
    ms / scale * scale
}

/// Send the ready frames (and, with `done`, the end of the shard) until
/// acknowledged; whether they were.
async fn flush(st: &mut ReporterState, next_frame: u64, done: bool) -> Result<bool, ActorProcessingErr> {
    let frames = std::mem::take(&mut st.ready);
    let arrivals = std::mem::take(&mut st.arrivals);
    let count = frames.len() as u32;
    let results: u64 = frames.iter().map(|f| f.outputs.len() as u64).sum();
    st.update_pending(frames.len());
    let req = st.job.report(frames, next_frame, done, String::new(), Some(std::mem::take(&mut st.times)));
    let gen = st.links.gen;
    st.metrics.reported.inc_by(results);
    let sent = Instant::now();
    match send_report(&st.job, req).await {
        Ok(resp) if resp.accepted => {
            st.metrics.commit.observe(sent.elapsed().as_secs_f64());
            st.metrics.acknowledged.inc_by(results);
            debug!(frames = count, stored = resp.stored, next_frame, done, "report acknowledged");
            if st.job.kind.is_live() {
                // Arrival to commit, per frame; sent with the next report.
                let now = Instant::now();
                for a in arrivals {
                    let ms = now.duration_since(a).as_millis() as u64;
                    *st.times.latency_ms.entry(latency_bucket(ms)).or_default() += 1;
                }
            }
            st.links.supervisor.send_message(ShardMsg::Acked { gen, next_frame, frames: count, end_frame: resp.end_frame })?;
            if done {
                st.links.supervisor.send_message(ShardMsg::Finished { gen })?;
            }
            Ok(true)
        }
        Ok(resp) => {
            st.links.supervisor.send_message(ShardMsg::LeaseLost { gen, reason: resp.reason })?;
            Ok(false)
        }
        Err(e) => {
            st.links.supervisor.send_message(ShardMsg::StageError { gen, error: format!("report refused: {e}") })?;
            Ok(false)
        }
    }
}

/// Deliver one report, retrying transport failures and leader changes with
/// backoff. The coordinator stores each (frame, model) once, so a retry of a
/// report that was in fact committed is harmless. Runs in the caller's span.
pub async fn send_report(job: &ShardJob, req: pb::ReportRequest) -> Result<pb::ReportResponse, tonic::Status> {
    let coordinators = match &job.sink {
        ReportSink::Coordinators(c) => c,
        ReportSink::Local(tx) => {
            let stored = req.frames.len() as u32;
            return match tx.send(req) {
                Ok(()) => Ok(pb::ReportResponse { accepted: true, reason: String::new(), stored, end_frame: 0 }),
                Err(_) => Ok(pb::ReportResponse { accepted: false, reason: "the local run was stopped".into(), stored: 0, end_frame: 0 }),
            };
        }
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(3));
    loop {
        let r = coordinators
            .call(coordinators.addrs().len(), |ch| {
                let req = req.clone();
                async move {
                    WorkerApiClient::with_interceptor(ch, coordinators.secret())
                        .max_encoding_message_size(64 << 20)
                        .max_decoding_message_size(64 << 20)
                        .report(req)
                        .await
                }
            })
            .await;
        match r {
            Ok(resp) => return Ok(resp),
            Err(s) if retryable(&s) => {
                let d = backoff.next_delay();
                panoptes_common::metrics::inc(REPORT_RETRIES, &[], 1);
                warn!(error = %s.message(), retry_in_ms = d.as_millis() as u64, "report not delivered; retrying");
                tokio::time::sleep(d).await;
            }
            Err(s) => return Err(s),
        }
    }
}
