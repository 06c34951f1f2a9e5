//! Reporter actor: gathers every model's output per frame, sends batches of
//! complete frames to the coordinator, and retries each batch until it is
//! acknowledged (which the coordinator does only once it is committed).
//!
//! One report is in flight at a time, so a lease's reports are committed in
//! order. It is delivered by a task of its own, which tells this actor the
//! outcome ([`ReporterMsg::Delivered`]): the actor goes on gathering results
//! meanwhile, and the frames completed during a delivery go together in the
//! next report.
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
    /// The size of the frame the models read.
    size: (u32, u32),
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
    /// Every frame before this one is complete: the final report goes once
    /// nothing else is in flight.
    finishing: Option<u64>,
    /// The report being delivered, and the task delivering it (aborted if
    /// this actor stops).
    in_flight: Option<InFlight>,
    /// A report was refused, or could not be delivered: nothing more is sent.
    stopped: bool,
    metrics: ReporterMetrics,
}

/// A report on its way.
struct InFlight {
    frames: u32,
    results: u64,
    next_frame: u64,
    done: bool,
    /// When each of its frames arrived (live latency).
    arrivals: Vec<Instant>,
    sent: Instant,
    task: tokio::task::JoinHandle<()>,
}

impl ReporterState {
    /// Frames held until acknowledged: waiting for a model, ready to send, and in flight.
    fn update_pending(&mut self) {
        let sending = self.in_flight.as_ref().map_or(0, |f| f.frames as usize);
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
            finishing: None,
            in_flight: None,
            stopped: false,
            metrics: ReporterMetrics::new(),
        })
    }

    async fn handle(&self, myself: ActorRef<ReporterMsg>, msg: ReporterMsg, st: &mut ReporterState) -> Result<(), ActorProcessingErr> {
        let _g = st.links.span.clone().entered(); // no await below
        on_message(msg, st)?;
        pump(st, &myself);
        st.update_pending();
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<ReporterMsg>, st: &mut ReporterState) -> Result<(), ActorProcessingErr> {
        if let Some(f) = st.in_flight.take() {
            f.task.abort();
        }
        Ok(())
    }
}

/// One message, in the shard's span.
fn on_message(msg: ReporterMsg, st: &mut ReporterState) -> Result<(), ActorProcessingErr> {
    let n_models = st.job.analyses.len();
    match msg {
        ReporterMsg::Decoded { frame, timestamp, size, decode_s, resize_s, picture, arrived } => {
            st.times.decode_s += decode_s;
            st.times.resize_s += resize_s;
            st.times.frames_decoded += 1;
            st.pending.insert(frame, Pending { timestamp, size, arrived, picture: None, awaiting_picture: picture, outputs: vec![None; n_models] });
        }
        ReporterMsg::Picture { frame, picture } => {
            if let Some(p) = st.pending.get_mut(&frame) {
                p.picture = picture;
                p.awaiting_picture = false;
            }
            complete(st);
            if let Some(next_frame) = st.end_at.filter(|_| st.pending.is_empty()) {
                st.end_at = None;
                st.finishing = Some(next_frame);
            }
        }
        ReporterMsg::Output { frame, model, results_json, error, secs } => {
            let name = st.job.assignment.models[model].clone();
            *st.times.inference_s.entry(name).or_default() += secs;
            if let Some(p) = st.pending.get_mut(&frame) {
                p.outputs[model] = Some((results_json, error));
            }
            complete(st);
        }
        ReporterMsg::End { next_frame } => {
            st.ends += 1;
            if st.ends == n_models {
                if st.pending.is_empty() {
                    st.finishing = Some(next_frame);
                } else {
                    // Pictures of the last frames are still being encoded.
                    st.end_at = Some(next_frame);
                }
            }
        }
        ReporterMsg::Dropped => st.times.frames_dropped += 1,
        ReporterMsg::Reconnected { gap_ms } => {
            st.times.reconnects += 1;
            st.times.gap_ms += gap_ms;
        }
        ReporterMsg::Delivered(outcome) => delivered(st, outcome)?,
    }
    Ok(())
}

/// Move the frames that have every model's output and their picture to
/// `ready`, in frame order (lanes answer out of order: `pending` is ordered
/// by frame and only its complete head moves).
fn complete(st: &mut ReporterState) {
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
        // The size goes with every frame (zones in fractions of the frame need it), the picture when kept.
        let jpeg = p.picture.map(|x| x.jpeg).unwrap_or_default();
        let (width, height) = p.size;
        st.ready.push(pb::FrameReport { frame, timestamp: p.timestamp, outputs, jpeg, width, height });
        st.arrivals.push(p.arrived);
    }
}

/// Send the next report if none is in flight: a full batch (a live shard
/// sends what is ready at once, without waiting to fill one); at the end,
/// the rest with the end of the shard (live: the last frames first, so that
/// the final report carries their latencies too).
fn pump(st: &mut ReporterState, myself: &ActorRef<ReporterMsg>) {
    if st.stopped || st.in_flight.is_some() {
        return;
    }
    let live = st.job.kind.is_live();
    if let Some(next_frame) = st.finishing {
        if live && !st.ready.is_empty() {
            send(st, myself, next_frame, false);
        } else {
            st.finishing = None;
            send(st, myself, next_frame, true);
        }
        return;
    }
    if st.ready.len() >= st.job.settings.batch as usize || (live && !st.ready.is_empty()) {
        let next = st.ready.last().map(|f| f.frame + 1).unwrap_or(0);
        send(st, myself, next, false);
    }
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

/// Send the ready frames (and, with `done`, the end of the shard): a task
/// delivers them and tells this actor the outcome.
fn send(st: &mut ReporterState, myself: &ActorRef<ReporterMsg>, next_frame: u64, done: bool) {
    let frames = std::mem::take(&mut st.ready);
    let arrivals = std::mem::take(&mut st.arrivals);
    let count = frames.len() as u32;
    let results: u64 = frames.iter().map(|f| f.outputs.len() as u64).sum();
    let req = st.job.report(frames, next_frame, done, String::new(), Some(std::mem::take(&mut st.times)));
    st.metrics.reported.inc_by(results);
    let (sink, me) = (st.job.sink.clone(), myself.clone());
    let task = tokio::spawn(
        async move {
            let outcome = send_report(&sink, req).await;
            // Gone: the pipeline is being rebuilt; its report is retried from the committed cursor.
            let _ = me.send_message(ReporterMsg::Delivered(outcome));
        }
        .instrument(st.links.span.clone()),
    );
    st.in_flight = Some(InFlight { frames: count, results, next_frame, done, arrivals, sent: Instant::now(), task });
}

/// The report in flight was delivered (or could not be).
fn delivered(st: &mut ReporterState, outcome: Result<pb::ReportResponse, tonic::Status>) -> Result<(), ActorProcessingErr> {
    let Some(f) = st.in_flight.take() else { return Ok(()) };
    let gen = st.links.gen;
    match outcome {
        Ok(resp) if resp.accepted => {
            st.metrics.commit.observe(f.sent.elapsed().as_secs_f64());
            st.metrics.acknowledged.inc_by(f.results);
            debug!(frames = f.frames, stored = resp.stored, next_frame = f.next_frame, done = f.done, "report acknowledged");
            if st.job.kind.is_live() {
                // Arrival to commit, per frame; sent with the next report.
                let now = Instant::now();
                for a in f.arrivals {
                    let ms = now.duration_since(a).as_millis() as u64;
                    *st.times.latency_ms.entry(latency_bucket(ms)).or_default() += 1;
                }
            }
            st.links.supervisor.send_message(ShardMsg::Acked { gen, next_frame: f.next_frame, frames: f.frames, end_frame: resp.end_frame })?;
            if f.done {
                st.links.supervisor.send_message(ShardMsg::Finished { gen })?;
            }
        }
        Ok(resp) => {
            st.stopped = true;
            st.links.supervisor.send_message(ShardMsg::LeaseLost { gen, reason: resp.reason })?;
        }
        Err(e) => {
            st.stopped = true;
            st.links.supervisor.send_message(ShardMsg::StageError { gen, error: format!("report refused: {e}") })?;
        }
    }
    Ok(())
}

/// Deliver one report, retrying transport failures and leader changes with
/// backoff. The coordinator stores each (frame, model) once, so a retry of a
/// report that was in fact committed is harmless. Runs in the caller's span.
pub async fn send_report(sink: &ReportSink, req: pb::ReportRequest) -> Result<pb::ReportResponse, tonic::Status> {
    let coordinators = match sink {
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
