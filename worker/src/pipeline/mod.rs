//! The per-shard actor tree. A [`supervisor::ShardSupervisor`] owns, linked:
//! a decoder (FFmpeg) → a resizer (swscale to RGB at `target_height`) → one
//! actor per model (tract) → a reporter that batches results to the
//! coordinator and retries until they are acknowledged.
//!
//! Frames go from the resizer to the model actors through the supervisor, and
//! the models' results come back through it to the reporter: the supervisor
//! keeps, per model, the frames sent to that model's actor whose result has
//! not yet been passed on. When a model actor crashes (its analysis panics or
//! fails), the supervisor starts a fresh one for that model and re-sends those
//! frames in order; see [`supervisor`] for the rules.
//!
//! Flow control is by credit, the same for files and live streams: the
//! decoder (the shard's source actor) sends a frame on only while it holds
//! credit; credit comes back when the frame's results are acknowledged, so at
//! most `pipeline_depth` frames per shard are in memory (which also bounds the
//! frames the supervisor keeps for re-sending).
//!
//! Every actor of a shard runs its handlers inside the shard's tracing span
//! ([`ShardJob::span`]), so each log line about a shard carries `job_id` and
//! `shard`; lines about one frame add `frame`.
use std::sync::Arc;

use panoptes_media::{DecodedFrame, RgbFrame};
use panoptes_proto::failover::Coordinators;
use panoptes_proto::worker::ShardAssignment;
use ractor::ActorRef;

use crate::analysis::Analysis;

pub mod decoder;
mod fan_out;
mod kind;
mod live_gate;
mod live_ingest;
pub use kind::ShardKind;
pub mod model;
pub mod reporter;
pub mod resizer;
pub mod supervisor;
pub use panoptes_common::config::{DropPolicy, LiveConfig, Reconnect, ShardSettings};

/// A frame's stored picture: a reduced JPEG, and the analysed frame's size.
#[derive(Debug, Clone)]
pub struct Picture {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Everything a shard's pipeline needs.
#[derive(Clone)]
pub struct ShardJob {
    pub worker: String,
    pub assignment: ShardAssignment,
    /// What the shard reads (from `assignment.kind`, on arrival).
    pub kind: ShardKind,
    /// The job's analyses, in the job's model order.
    pub analyses: Vec<Arc<dyn Analysis>>,
    /// Where acknowledged results go.
    pub sink: ReportSink,
    /// Depth, batch, restarts, stall limit and `[live]`, as the worker's
    /// configuration has them (`ShardSettings::for_shard`).
    pub settings: ShardSettings,
    /// How many frames are analysed at once (shared by all of a worker's shards).
    pub compute: Compute,
    /// The worker's ingest lobby: where a live stream moved here is parked.
    pub lobby: Arc<crate::lobby::Parked>,
}

/// `worker.threads`: how many analyses a worker runs at once, over all its
/// shards and models. Each model of a shard gets up to `threads` lanes (model
/// actors over the model's one shared plan), and every inference holds one of
/// the `threads` permits while it runs, so a worker never has more analyses
/// running than threads, whatever its capacity and the job's models.
#[derive(Clone, Debug)]
pub struct Compute {
    pub threads: usize,
    pub permits: Arc<tokio::sync::Semaphore>,
}

impl Compute {
    /// `threads` analyses at once; 0: as many as the cores this process may
    /// run on (CPU affinity and cgroup quota included).
    pub fn new(threads: u32) -> Self {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        Compute { threads, permits: Arc::new(tokio::sync::Semaphore::new(threads)) }
    }

    /// Lanes per model for a shard with `depth` frames in flight.
    pub fn lanes_for(&self, depth: u32) -> usize {
        self.threads.clamp(1, depth.max(1) as usize)
    }
}

impl ShardJob {
    /// The span a shard's actors log in (see the module doc). A root span:
    /// ractor's own per-actor spans stay out of the shard's lines.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!(parent: None, "shard", job_id = %self.assignment.job_id, shard = self.assignment.shard)
    }

    /// A report for this shard's lease.
    pub fn report(
        &self,
        frames: Vec<panoptes_proto::worker::FrameReport>,
        next_frame: u64,
        done: bool,
        error: String,
        times: Option<panoptes_proto::worker::StageTimes>,
    ) -> panoptes_proto::worker::ReportRequest {
        let a = &self.assignment;
        panoptes_proto::worker::ReportRequest {
            name: self.worker.clone(),
            job_id: a.job_id.clone(),
            shard: a.shard,
            epoch: a.epoch,
            frames,
            next_frame,
            done,
            error,
            times,
        }
    }
}

/// Where a shard's reports are delivered.
#[derive(Clone)]
pub enum ReportSink {
    /// The cluster: a report is acknowledged once the coordinators committed it.
    Coordinators(Coordinators),
    /// A local run (`panoptes analyze`): a report is acknowledged once it is
    /// handed to this channel.
    Local(tokio::sync::mpsc::UnboundedSender<panoptes_proto::worker::ReportRequest>),
}

/// The pipeline generation a message belongs to: after a restart, messages
/// from the previous generation's actors are ignored.
pub type Gen = u32;

pub enum DecoderMsg {
    /// Decode this many more analysed frames.
    Pull(u32),
    /// The shard now ends at this frame (work stealing cut its tail off for
    /// another worker): decode nothing at or after it.
    Cut(u64),
    /// From the live ingest thread: it failed (the decoder fails with it).
    Failed(String),
    /// From the live ingest thread: a frame arrived (the gate decides).
    Arrived { frame: DecodedFrame, decode_s: f64, arrived: std::time::Instant },
    /// From the live ingest thread: the stream ended; every frame before
    /// `next_frame` was sent as `Arrived` (or skipped by the frame step).
    StreamEnded { next_frame: u64 },
    /// From the supervisor (live): every model answered a frame, so a lane
    /// of each is free again.
    Analysed,
    /// To itself (live): frames held after the stream's end may have aged out.
    Tick,
}

pub enum ResizerMsg {
    /// `arrived`: when the decoder had the frame (live latency starts there).
    Frame { frame: DecodedFrame, decode_s: f64, arrived: std::time::Instant },
    /// No more frames: everything before `next_frame` was sent.
    End { next_frame: u64 },
}

pub enum ModelMsg {
    /// Analyse this frame. `retry` marks the frame a previous actor for this
    /// model crashed on.
    Analyze { frame: u64, rgb: Arc<RgbFrame>, retry: bool },
}

pub enum ReporterMsg {
    /// A frame entered the pipeline; with `picture`, its stored JPEG follows
    /// in a [`ReporterMsg::Picture`] (encoded beside the analysis, not before it).
    Decoded { frame: u64, timestamp: f64, size: (u32, u32), decode_s: f64, resize_s: f64, picture: bool, arrived: std::time::Instant },
    /// A frame's stored picture (JPEG and the size of the frame the models
    /// read); `None` when it could not be encoded (the frame goes without).
    Picture { frame: u64, picture: Option<Picture> },
    /// One model's results for a frame; `error`: the analysis failed on it
    /// and `results_json` is `{"error": …}`.
    Output { frame: u64, model: usize, results_json: String, error: bool, secs: f64 },
    End { next_frame: u64 },
    /// Live: a frame was not analysed (the drop policy); counted in the
    /// next report's `frames_dropped`.
    Dropped,
    /// Live pull source: it was reopened after `gap_ms` without frames;
    /// counted in the next report.
    Reconnected { gap_ms: u64 },
    /// From the task delivering the report in flight: the coordinator's
    /// answer, or why it could not be delivered.
    Delivered(Result<panoptes_proto::worker::ReportResponse, tonic::Status>),
}

pub enum ShardMsg {
    /// Results up to `next_frame` are committed; `frames` of them were in this batch.
    /// `end_frame`: the shard's end as the coordinator has it (0: unknown);
    /// work stealing may have cut the shard short.
    Acked { gen: Gen, next_frame: u64, frames: u32, end_frame: u64 },
    /// The last report (done) was acknowledged.
    Finished { gen: Gen },
    /// The coordinator refused a report: the lease is gone.
    LeaseLost { gen: Gen, reason: String },
    /// A stage hit an error it reports (e.g. the source cannot be decoded).
    StageError { gen: Gen, error: String },
    /// From the resizer: a frame for every model actor.
    Frame { gen: Gen, frame: u64, rgb: Arc<RgbFrame> },
    /// From the resizer: no more frames; everything before `next_frame` was sent.
    FramesEnd { gen: Gen, next_frame: u64 },
    /// From a model actor (lane `lane` of model `model`): its result for a
    /// frame, to pass on to the reporter.
    Output { gen: Gen, frame: u64, model: usize, lane: usize, results_json: String, secs: f64 },
    /// The supervisor to itself: model actor `model` crashed with `error`;
    /// start a new one. Sent as a message, not handled at once, so that the
    /// results the dead actor sent before crashing (already queued in the
    /// supervisor's mailbox, which supervision events overtake) are handled
    /// first and are not analysed twice.
    RestartModel { gen: Gen, model: usize, lane: usize, error: String },
}

/// Handles the stages use to reach each other.
#[derive(Clone)]
pub struct Links {
    pub gen: Gen,
    pub supervisor: ActorRef<ShardMsg>,
    /// The shard's span: every handler runs in it.
    pub span: tracing::Span,
}

/// Run blocking work (FFmpeg, tract) on this runtime thread without stalling
/// the others.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}
