//! The replicated data: jobs, their shards and leases, workers.
use std::collections::BTreeMap;

use panoptes_common::rules::{Fired, Rule, RuleState};
use panoptes_common::tracking::JobTracker;
use panoptes_common::zones::{JobZone, Zone};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed | JobState::Cancelled)
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub source: String,
    pub models: Vec<String>,
    pub frame_step: u64,
    pub target_height: u32,
    pub request_id: Option<String>,
    /// A shard failing this many times fails the job.
    pub max_attempts: u32,
    /// Stored pictures: at most this tall (0: the job keeps none), JPEG quality.
    pub frames_height: u32,
    pub frames_quality: u32,
    /// At most one stored picture per this many ms of stream time (0:
    /// every analysed frame).
    pub frames_every_ms: u64,
    /// Retention while the job runs: keep the newest `keep_s` seconds of
    /// stream time (0: everything) of what `keep_what` says.
    pub keep_s: u64,
    pub keep_what: KeepWhat,
    /// The name of the token that submitted the job (`security.tokens_file`),
    /// or "" on a cluster without tokens. Only the owner and admins see the
    /// job's source and push URL unredacted, and only they may publish into
    /// a live job from the web page.
    pub owner: String,
    /// Alert rules (issue 18), evaluated by the leader over the committed
    /// results in frame order (`leader/analytics.rs`).
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Zones given at submit (issue 18, part 2); more may be added while
    /// the job runs ([`Job::zones`]).
    #[serde(default)]
    pub zones: Vec<Zone>,
    /// The job runs a detector: the leader tracks its detections.
    #[serde(default)]
    pub tracks: bool,
}

/// Alerts kept per job; more are counted in [`Alerts::dropped`].
pub const MAX_ALERTS_KEPT: usize = 10_000;

/// Where a job's alert rules stand: evaluated over the frames below `upto`,
/// each rule's state there, and the alerts recorded, each once.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Alerts {
    pub upto: u64,
    pub states: Vec<RuleState>,
    /// Oldest first; an alert's sequence number is its place here plus
    /// `dropped` (the ones not kept come last, so none is renumbered).
    pub fired: Vec<Fired>,
    pub dropped: u64,
    /// Retention deleted the alerts numbered below this (0: none) with the
    /// frames they were of; `fired[0]` is number `first_seq()`.
    #[serde(default)]
    pub kept_from: u64,
    /// Per event sink (`[events]`: "mqtt", or a webhook's URL): the alerts
    /// acknowledged by it, or skipped, by sequence number (alerts `1..=n`).
    pub delivered: BTreeMap<String, u64>,
    /// Per sink: alerts skipped because it fell more than `events.queue_max` behind.
    pub skipped: BTreeMap<String, u64>,
}

impl Alerts {
    /// The number of `fired[0]` (alerts are numbered from 1).
    pub fn first_seq(&self) -> u64 {
        self.kept_from.max(1)
    }

    /// The number of the last alert recorded (0: none): alerts recorded and
    /// kept, those retention deleted included.
    pub fn recorded(&self) -> u64 {
        self.first_seq() - 1 + self.fired.len() as u64
    }

    /// Alert number `seq`, if kept.
    pub fn get(&self, seq: u64) -> Option<&Fired> {
        seq.checked_sub(self.first_seq()).and_then(|i| self.fired.get(i as usize))
    }

    /// The kept alerts with their numbers, oldest first.
    pub fn numbered(&self) -> impl Iterator<Item = (u64, &Fired)> {
        let first = self.first_seq();
        self.fired.iter().enumerate().map(move |(i, f)| (first + i as u64, f))
    }

    /// Retention: forget the alerts of frames below `before_frame` (oldest
    /// first); how many.
    pub fn trim(&mut self, before_frame: u64) -> usize {
        let n = self.fired.iter().take_while(|f| f.frame < before_frame).count();
        if n > 0 {
            self.kept_from = self.first_seq() + n as u64;
            self.fired.drain(..n);
        }
        n
    }
}

/// What a job's retention deletes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum KeepWhat {
    #[default]
    Both,
    Results,
    Pictures,
}

impl KeepWhat {
    pub fn parse(s: &str) -> Option<KeepWhat> {
        match s {
            "" | "both" => Some(KeepWhat::Both),
            "results" => Some(KeepWhat::Results),
            "pictures" => Some(KeepWhat::Pictures),
            _ => None,
        }
    }

    pub fn results(self) -> bool {
        self != KeepWhat::Pictures
    }

    pub fn pictures(self) -> bool {
        self != KeepWhat::Results
    }
}

/// A pull source (`rtsp://`, `rtmp://`, `rtmps://` given to submit, or a
/// capture device `v4l2://WORKER/dev/videoN`): a live, unbounded stream the
/// leased worker opens itself. Its job runs at once with one open-ended shard
/// (no probing of its length), like a push.
pub fn is_pull_source(source: &str) -> bool {
    ["rtsp://", "rtmp://", "rtmps://", "v4l2://"].iter().any(|p| source.get(..p.len()).is_some_and(|s| s.eq_ignore_ascii_case(p)))
}

/// The worker a job's source is attached to, if any: a capture device
/// (`v4l2://WORKER/dev/videoN`) can only be opened there.
pub fn pinned_worker(source: &str) -> Option<String> {
    panoptes_common::source_url::device_source(source).and_then(|(w, _)| w)
}

/// A live RTMP push job: which worker ingests it, where.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveSpec {
    /// The stream key (random): the last path segment of `url`.
    pub key: String,
    /// The worker chosen to listen for the stream.
    pub worker: String,
    /// Its ingest slot: the worker listens on its base port + slot
    /// ([`LOBBY_SLOT`]: on its ingest lobby, after a [`MoveLive`](super::command::Request::MoveLive)).
    pub slot: u32,
    /// Where to push: `rtmp://HOST:PORT/live/KEY`.
    pub url: String,
}

/// The slot of a live stream that resumed on a worker's ingest lobby (the
/// lobby's port follows the worker's slots: [`lobby_port`]).
pub const LOBBY_SLOT: u32 = u32::MAX;

pub use panoptes_common::lobby_port;

/// What probing the source found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub frames: u64,
    pub width: u32,
    pub height: u32,
    pub time_base: (i32, i32),
    pub pts0: i64,
    pub fps: f64,
    pub keyframes: Vec<(u64, i64)>,
}

impl Plan {
    /// The last keyframe at or before `frame`, to seek to.
    pub fn seek_point(&self, frame: u64) -> Option<(u64, i64)> {
        let i = self.keyframes.partition_point(|(k, _)| *k <= frame);
        if i == 0 {
            None
        } else {
            Some(self.keyframes[i - 1])
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ShardState {
    Pending,
    /// `lease_end` is the shard's end when this lease was granted: its holder
    /// works up to there. A split (work stealing) may later move the shard's
    /// `end` below it; the holder's frames in `[end, lease_end)` are then
    /// dropped on report (they belong to the new shard).
    Leased { worker: String, epoch: u64, since_ms: u64, lease_end: u64 },
    Done,
}

/// Frames `[start, end)` of a job. Every analysed frame below `cursor` is committed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Shard {
    pub index: u32,
    pub start: u64,
    pub end: u64,
    pub cursor: u64,
    pub state: ShardState,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// Time spent per stage, summed over a job's reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StageTimes {
    pub decode_s: f64,
    pub resize_s: f64,
    pub inference_s: BTreeMap<String, f64>,
    pub frames_decoded: u64,
    /// Live: frames dropped because analysis was behind the stream.
    pub frames_dropped: u64,
    /// Live: arrival-to-commit latency histogram, ms (two significant digits) -> frames.
    pub latency_ms: BTreeMap<u64, u64>,
    /// Live pull sources: times a dropped source was reopened, and the time
    /// without frames (from the drop to the reopen) summed over them, ms.
    pub reconnects: u64,
    pub gap_ms: u64,
}

impl StageTimes {
    /// Add a report's times. They come from a worker, so nothing is
    /// trusted: counts saturate (an overflow would panic the apply on every
    /// member, at every replay of the entry), and seconds that are not
    /// finite and positive are left out.
    pub fn add(&mut self, o: &StageTimes) {
        fn secs(total: &mut f64, s: f64) {
            if s.is_finite() && s > 0.0 {
                *total += s;
            }
        }
        fn count(total: &mut u64, n: u64) {
            *total = total.saturating_add(n);
        }
        secs(&mut self.decode_s, o.decode_s);
        secs(&mut self.resize_s, o.resize_s);
        for (k, v) in &o.inference_s {
            secs(self.inference_s.entry(k.clone()).or_default(), *v);
        }
        count(&mut self.frames_decoded, o.frames_decoded);
        count(&mut self.frames_dropped, o.frames_dropped);
        for (k, v) in &o.latency_ms {
            count(self.latency_ms.entry(*k).or_default(), *v);
        }
        count(&mut self.reconnects, o.reconnects);
        count(&mut self.gap_ms, o.gap_ms);
    }

    /// The `q`-quantile (0..=1) of the latency histogram, ms; 0 when empty.
    pub fn latency_quantile(&self, q: f64) -> f64 {
        let total: u64 = self.latency_ms.values().fold(0u64, |a, v| a.saturating_add(*v));
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (ms, n) in &self.latency_ms {
            seen = seen.saturating_add(*n);
            if seen >= rank {
                return *ms as f64;
            }
        }
        0.0
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobCounters {
    pub times: StageTimes,
    pub reports: u64,
    pub report_bytes: u64,
    pub errors: u64,
    pub first_lease_ms: u64,
    /// Live: the largest timestamp of a committed frame, and when (the
    /// report's `now_ms`): a stream resumed elsewhere goes on from there.
    pub last_timestamp: f64,
    pub last_timestamp_at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub id: u64,
    pub spec: JobSpec,
    pub state: JobState,
    pub error: Option<String>,
    pub submitted_at_ms: u64,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub plan: Option<Plan>,
    pub shards: Vec<Shard>,
    pub frames_done: u64,
    pub counters: JobCounters,
    /// A live RTMP push job (one unbounded shard, no plan).
    #[serde(default)]
    pub live: Option<LiveSpec>,
    /// Retention: what `spec.keep_what` names of frames below this was
    /// deleted (frames reported later below it are not stored).
    #[serde(default)]
    pub trimmed_before: u64,
    #[serde(default)]
    pub alerts: Alerts,
    /// Every zone of the job, with the frame it is in force from.
    #[serde(default)]
    pub zones: Vec<JobZone>,
    /// The leader's trackers, as of `alerts.upto`.
    #[serde(default)]
    pub tracking: JobTracker,
    /// Track events recorded (stored under their own keys, not here) and
    /// their delivery to the event sinks.
    #[serde(default)]
    pub track_events: EventLog,
    /// The size of the frames the models read, as last reported.
    #[serde(default)]
    pub frame_size: Option<(u32, u32)>,
}

/// A job's track events: how many are recorded (numbered from 1, each
/// stored once under its key) and how far each sink has taken them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EventLog {
    pub recorded: u64,
    /// Retention deleted the events below this number with the frames they
    /// are of (0: none); a sink that had not taken them skips them.
    pub kept_from: u64,
    pub delivered: BTreeMap<String, u64>,
    pub skipped: BTreeMap<String, u64>,
}

impl Shard {
    /// A pending shard of frames `[start, end)`, nothing committed.
    pub fn new(index: u32, start: u64, end: u64) -> Shard {
        Shard { index, start, end, cursor: start, state: ShardState::Pending, attempts: 0, last_error: None }
    }

    /// The one shard of a live stream: open-ended, it ends where the stream does.
    pub fn open_ended() -> Shard {
        Shard::new(0, 0, u64::MAX)
    }
}

impl Job {
    /// A new job (`Submit`, `CreateLive`).
    pub fn new(id: u64, spec: JobSpec, state: JobState, now_ms: u64, shards: Vec<Shard>, live: Option<LiveSpec>) -> Job {
        Job {
            id,
            state,
            error: None,
            submitted_at_ms: now_ms,
            started_at_ms: if state == JobState::Running { now_ms } else { 0 },
            finished_at_ms: 0,
            plan: None,
            shards,
            frames_done: 0,
            counters: JobCounters::default(),
            live,
            trimmed_before: 0,
            alerts: Alerts::default(),
            zones: spec.zones.iter().map(|z| JobZone { zone: z.clone(), from_frame: 0 }).collect(),
            tracking: JobTracker::default(),
            track_events: EventLog::default(),
            frame_size: None,
            spec,
        }
    }

    /// A live job: pushed to a worker (`live`) or pulled from a stream URL.
    /// Its one shard is open-ended and cannot be replayed or split.
    pub fn is_live(&self) -> bool {
        self.live.is_some() || is_pull_source(&self.spec.source)
    }

    /// Frames the job analyses: `n` in `[0, frames)` with `n % step == 0`.
    /// A live job's count is unknown (0) until it ends: then what was analysed.
    pub fn frames_total(&self) -> u64 {
        if self.is_live() {
            return if self.state.is_finished() { self.frames_done } else { 0 };
        }
        self.plan.as_ref().map(|p| analysed_in(0, p.frames, self.spec.frame_step)).unwrap_or(0)
    }

    /// The frames below which every analysed frame is committed: the
    /// shards in frame order, up to the first one not finished, at its
    /// cursor (results commit per shard, and shards side by side).
    pub fn committed_prefix(&self) -> u64 {
        let mut shards: Vec<&Shard> = self.shards.iter().collect();
        shards.sort_by_key(|s| s.start);
        let mut upto = 0;
        for s in shards {
            if s.start > upto || s.cursor < s.end {
                return if s.start > upto { upto } else { s.cursor };
            }
            upto = s.end;
        }
        upto
    }

    /// The leader evaluates analytics for this job: it has alert rules, or
    /// detections to track.
    pub fn has_analytics(&self) -> bool {
        !self.spec.rules.is_empty() || self.spec.tracks
    }

    /// Its analytics have caught up with every committed frame and, once
    /// the job has ended, have ended its tracks: its results carry every
    /// track id and every alert of what is committed is recorded.
    pub fn analytics_up_to_date(&self) -> bool {
        !self.has_analytics() || (self.alerts.upto >= self.committed_prefix() && (!self.state.is_finished() || !self.spec.tracks || self.tracking.closed))
    }

    pub fn shards_done(&self) -> u32 {
        self.shards.iter().filter(|s| s.state == ShardState::Done).count() as u32
    }
}

/// How many `n` in `[start, end)` satisfy `n % step == 0`.
pub fn analysed_in(start: u64, end: u64, step: u64) -> u64 {
    if end <= start {
        return 0;
    }
    let first = start.div_ceil(step) * step;
    if first >= end {
        0
    } else {
        (end - 1 - first) / step + 1
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerRec {
    pub name: String,
    pub addr: String,
    pub capacity: u32,
    pub models: Vec<String>,
    pub registered_at_ms: u64,
    pub draining: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysed_frames_in_a_range() {
        assert_eq!(analysed_in(0, 10, 1), 10);
        assert_eq!(analysed_in(0, 10, 2), 5);
        assert_eq!(analysed_in(0, 9, 2), 5);
        assert_eq!(analysed_in(1, 9, 2), 4);
        assert_eq!(analysed_in(5, 6, 3), 0);
        assert_eq!(analysed_in(6, 7, 3), 1);
        assert_eq!(analysed_in(7, 7, 1), 0);
        assert_eq!(analysed_in(0, 100, 1000), 1);
    }

    #[test]
    fn latency_quantiles_from_the_histogram() {
        let mut t = StageTimes::default();
        assert_eq!(t.latency_quantile(0.5), 0.0);
        t.latency_ms = BTreeMap::from([(10, 50), (20, 45), (300, 5)]);
        assert_eq!(t.latency_quantile(0.5), 10.0);
        assert_eq!(t.latency_quantile(0.95), 20.0);
        assert_eq!(t.latency_quantile(0.99), 300.0);
    }

    #[test]
    fn seek_point_is_the_last_keyframe_at_or_before() {
        let p = Plan { frames: 30, width: 1, height: 1, time_base: (1, 25), pts0: 0, fps: 25.0, keyframes: vec![(0, 0), (10, 10), (20, 20)] };
        assert_eq!(p.seek_point(0), Some((0, 0)));
        assert_eq!(p.seek_point(9), Some((0, 0)));
        assert_eq!(p.seek_point(10), Some((10, 10)));
        assert_eq!(p.seek_point(29), Some((20, 20)));
        let none = Plan { keyframes: vec![], ..p };
        assert_eq!(none.seek_point(5), None);
    }
}
