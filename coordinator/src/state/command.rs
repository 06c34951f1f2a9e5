//! Commands replicated through the Raft log, and their outcomes. Each carries
//! everything its application needs (including the leader's clock), so every
//! member applies it to the same result.
use serde::{Deserialize, Serialize};

use super::model::{JobSpec, LiveSpec, Plan, StageTimes};
use panoptes_common::rules::{Fired, RuleState};
use panoptes_common::tracking::{JobTracker, Mark, TrackEvent};
use panoptes_common::zones::Zone;
use super::outcome::Rejection;

/// One model's results for one frame, as the analysis contract's JSON text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelOutput {
    pub model: String,
    pub results_json: String,
    /// The analysis failed on this frame: `results_json` is the error
    /// (`{"error": …}`), counted in the job's errors.
    pub error: bool,
}

/// A stored picture of an analysed frame: a reduced JPEG, and the size of the
/// frame the models read (the coordinates of its results).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FrameImage {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// What Raft carries of a stored picture: the picture itself is kept by
/// each coordinator outside the log (`pictures::PictureStore`), put on a
/// majority of them before its reference is proposed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PictureRef {
    /// The lease epoch of the report that carried it (two analyses of one
    /// frame under different leases never overwrite each other's picture).
    pub epoch: u64,
    pub len: u32,
    /// CRC-32 of the JPEG bytes: a copy fetched from a peer is checked against it.
    pub crc: u32,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FrameOutputs {
    pub frame: u64,
    pub timestamp: f64,
    pub outputs: Vec<ModelOutput>,
    /// The frame's picture, when the job stores frames.
    pub image: Option<PictureRef>,
}

/// A worker's delivery for a leased shard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub worker: String,
    pub job: u64,
    pub shard: u32,
    pub epoch: u64,
    pub frames: Vec<FrameOutputs>,
    pub next_frame: u64,
    pub done: bool,
    pub error: Option<String>,
    pub times: StageTimes,
    pub bytes: u64,
    /// The leader's clock when it proposed this report.
    pub now_ms: u64,
    /// The size of the frames the models read (result boxes are in its
    /// pixels), when the report says.
    pub frame_size: Option<(u32, u32)>,
}

/// What the leader's tracker decided over an evaluation's frames (see
/// `Request::Analytics`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Tracked {
    /// The trackers' state after the last frame.
    pub tracker: JobTracker,
    /// Each tracked detection's track and zones, per (frame, model index),
    /// stored beside the frame's results.
    pub marks: Vec<(u64, u8, Vec<Mark>)>,
    /// Tracks started, entering or leaving zones, ended: recorded in order
    /// and published like alerts.
    pub events: Vec<TrackEvent>,
}

/// Which of a job's recorded event streams a delivery acknowledges.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Stream {
    Alerts,
    Tracks,
}

/// A state change. Every change to jobs, shards, leases, workers or results
/// is one of these, appended to the Raft log and applied in log order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Request {
    /// Create a job (or return the existing one for a repeated `request_id`).
    Submit { spec: JobSpec, now_ms: u64 },
    /// The leader probed the source: fix frame count and shards, start the job.
    Plan { job: u64, plan: Plan, shards: Vec<(u64, u64)>, now_ms: u64 },
    /// The job cannot run (bad source, …).
    Fail { job: u64, error: String, now_ms: u64 },
    Cancel { job: u64, now_ms: u64 },
    RegisterWorker { name: String, addr: String, capacity: u32, models: Vec<String>, now_ms: u64 },
    /// Stop (or resume) leasing new shards to a worker; with `hand_back`, its
    /// current leases become pending again at their committed cursors.
    Drain { worker: String, draining: bool, hand_back: bool },
    /// A worker that is stopping hands back the shards of file jobs it holds
    /// (they become pending at once, attempts unchanged).
    Leave { worker: String },
    /// Lease these pending shards to `worker`, each under a fresh epoch.
    Grant { worker: String, shards: Vec<(u64, u32)>, now_ms: u64 },
    /// A lease ran out: the shard's unacknowledged frames become pending again.
    Expire { job: u64, shard: u32, epoch: u64 },
    /// Work stealing: cut the leased shard `shard` of `job` at frame `at`. The
    /// shard keeps `[start, at)` with its lease, epoch and cursor; a new shard
    /// `[at, end)` is appended, leased to `worker` under a fresh epoch
    /// (answered as [`Response::Granted`]). Rejected, changing nothing, unless
    /// `epoch` is still the shard's lease and both parts keep analysed frames
    /// beyond the committed cursor.
    Split { job: u64, shard: u32, epoch: u64, at: u64, worker: String, now_ms: u64 },
    Report(Report),
    /// Delete every job that finished before `finished_before_ms`, with its
    /// results and stored frames.
    Prune { finished_before_ms: u64 },
    /// Retention: delete what the job's `keep_what` names of its frames
    /// below `before_frame` (the leader picks it from the job's `keep_s`);
    /// frames reported later below it are not stored.
    Trim { job: u64, before_frame: u64 },
    /// Create a live RTMP push job: running at once, with one unbounded
    /// shard `[0, u64::MAX)` that only `live.worker` is granted (no probing).
    CreateLive { spec: JobSpec, live: LiveSpec, now_ms: u64 },
    /// A live push resumes on `worker`: its publisher pushed the stream's key
    /// to that worker's ingest lobby (`url`) after the worker ingesting it was
    /// lost. Only while the job runs and its shard is not leased to another
    /// worker (the lost worker's lease has expired); the shard is then
    /// granted to `worker` from the committed cursor, under a fresh epoch.
    MoveLive { job: u64, worker: String, url: String },
    /// Fail a live push nobody resumed: only if it is still running, still
    /// names `worker` and its shard is still pending (so a stream that was
    /// just resumed elsewhere is not failed by a decision made before).
    AbandonLive { job: u64, worker: String, error: String, now_ms: u64 },
    /// The leader evaluated a job's analytics over its committed frames
    /// `[from, upto)`: its tracks (`tracked`), then its alert rules, the
    /// rules' states at `upto` and what fired. Applies only if the job's
    /// analytics stand at `from` (a repeat, or a stale leader's evaluation,
    /// changes nothing), so each alert and track event is recorded once.
    Analytics { job: u64, from: u64, upto: u64, states: Vec<RuleState>, fired: Vec<Fired>, tracked: Tracked },
    /// An event sink acknowledged a job's alerts (or track events) up to
    /// sequence number `upto` (`skipped` of them were skipped, the sink
    /// being too far behind). Only moves forward: a repeat changes nothing.
    Delivered { job: u64, sink: String, stream: Stream, upto: u64, skipped: u64 },
    /// Add a zone to a running job: in force from the first frame its
    /// analytics have not reached when this applies.
    AddZone { job: u64, zone: Zone },
}

/// What a prune deleted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Freed {
    /// Result rows: one per (frame, model).
    pub results: u64,
    pub frames: u64,
    /// Bytes of keys and values removed from the store.
    pub bytes: u64,
}

/// A granted lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Granted {
    pub job: u64,
    pub shard: u32,
    pub epoch: u64,
}

/// What applying a [`Request`] produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub enum Response {
    #[default]
    Ok,
    /// The command did not apply; nothing changed.
    Rejected(Rejection),
    JobCreated { job: u64, existing: bool },
    Granted(Vec<Granted>),
    /// A report was accepted: `stored` frames were newly committed (a
    /// retried delivery stores none).
    Reported { stored: u32 },
    Drained { leases_returned: u32 },
    Pruned { jobs: Vec<u64>, freed: Freed },
    Trimmed { freed: Freed },
}
