//! The shard's source actor: it holds the shard's pipeline credit and
//! decides which frames go on to analysis, whatever the source.
//!
//! - A file part is decoded here ([`FileSource`]), seeking to the shard's
//!   keyframe, one analysed frame per unit of credit.
//! - A live stream (a push, a pull source, a device) is read by its own
//!   thread (`live_ingest.rs`), which decodes every frame as it arrives and
//!   sends it here; the [`LiveGate`] (`live_gate.rs`) applies the `[live]
//!   drop_policy` under the same credit: at most `pipeline_depth` frames in
//!   analysis, latency and memory bounded, dropped frames counted (per job
//!   in the next report, per reason in the worker's metrics). When the
//!   stream ends, the shard ends after its last frames.
//!
//! Credit comes back as results are acknowledged (`DecoderMsg::Pull`), the
//! same protocol for both.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use panoptes_common::metrics::Histogram;
use panoptes_media::{DecodedFrame, Decoder as MediaDecoder};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, info, Instrument};

use super::live_gate::{Arrival, LiveGate, Step};
use super::live_ingest::LiveIngest;
use super::{blocking, DecoderMsg, ReporterMsg, ResizerMsg, ShardJob, ShardKind};
use crate::metrics::{DECODE_SECONDS, FRAMES_DECODED, LIVE_FRAMES_DROPPED};

/// How often a live gate holding frames after the stream's end looks again
/// (`lag`: they age out).
const END_TICK: Duration = Duration::from_millis(10);

pub struct DecoderActor;

pub struct DecoderArgs {
    pub job: ShardJob,
    /// First frame still to analyse.
    pub resume: u64,
    pub resizer: ActorRef<ResizerMsg>,
    /// Live: where dropped frames and reconnections are counted.
    pub reporter: ActorRef<ReporterMsg>,
    /// The shard's span.
    pub span: tracing::Span,
}

pub struct DecoderState {
    source: Source,
    resizer: ActorRef<ResizerMsg>,
    reporter: ActorRef<ReporterMsg>,
    span: tracing::Span,
    decoded: panoptes_common::metrics::Counter,
    latency: Histogram,
}

/// Where the shard's frames come from.
enum Source {
    File(FileSource),
    /// A live stream: its ingest thread sends every frame; the gate decides.
    Live {
        gate: LiveGate<DecodedFrame>,
        /// The ingest thread's stop flag (it interrupts FFmpeg's waits).
        stop: Arc<AtomicBool>,
        /// An end tick is scheduled.
        ticking: bool,
    },
}

/// A file part, decoded on credit: frames from `resume` (on the frame
/// step) before `end`.
struct FileSource {
    dec: MediaDecoder,
    resume: u64,
    end: u64,
    step: u64,
    finished: bool,
}

impl FileSource {
    /// The next frame to analyse and the time spent decoding it (with the
    /// frames skipped before it: the frame step, or the run-up from the
    /// keyframe); `None` at the end of the part or of the stream.
    fn next(&mut self) -> Result<Option<(DecodedFrame, f64)>, ActorProcessingErr> {
        let t = Instant::now();
        loop {
            match blocking(|| self.dec.next_frame())? {
                Some(f) if f.index < self.end => {
                    if f.index < self.resume || f.index % self.step != 0 {
                        continue;
                    }
                    return Ok(Some((f, t.elapsed().as_secs_f64())));
                }
                _ => return Ok(None),
            }
        }
    }
}

/// Send one frame to analysis, counting it and its decoding time.
fn forward(
    resizer: &ActorRef<ResizerMsg>,
    decoded: &panoptes_common::metrics::Counter,
    latency: &Histogram,
    frame: DecodedFrame,
    decode_s: f64,
    arrived: Instant,
) -> Result<(), ActorProcessingErr> {
    latency.observe(decode_s);
    decoded.inc();
    resizer.send_message(ResizerMsg::Frame { frame, decode_s, arrived })?;
    Ok(())
}

impl DecoderState {

    /// Carry out what the live gate decided.
    fn apply(&self, steps: Vec<Step<DecodedFrame>>) -> Result<(), ActorProcessingErr> {
        for step in steps {
            match step {
                Step::Forward(a) => forward(&self.resizer, &self.decoded, &self.latency, a.frame, a.decode_s, a.arrived)?,
                Step::Drop { index, reason } => {
                    let _ = self.reporter.send_message(ReporterMsg::Dropped);
                    panoptes_common::metrics::counter(LIVE_FRAMES_DROPPED, &[("reason", reason)]).inc_by(1);
                    debug!(frame = index, reason, "live: frame dropped");
                }
                Step::End { next_frame } => {
                    if let Source::Live { gate, .. } = &self.source {
                        info!(next_frame, forwarded = gate.forwarded, dropped = gate.dropped, "live: the stream ended; ending the shard after its last frames");
                    }
                    self.resizer.send_message(ResizerMsg::End { next_frame })?;
                }
            }
        }
        Ok(())
    }
}

impl Actor for DecoderActor {
    type Msg = DecoderMsg;
    type State = DecoderState;
    type Arguments = DecoderArgs;

    async fn pre_start(&self, myself: ActorRef<DecoderMsg>, args: DecoderArgs) -> Result<DecoderState, ActorProcessingErr> {
        let _g = args.span.enter(); // no await below
        let a = &args.job.assignment;
        let source = if let ShardKind::File { seek, pts0, .. } = args.job.kind {
            let source = a.source.clone();
            let limit = args.job.settings.stall_limit;
            let dec = blocking(|| MediaDecoder::open_with_stall_limit(&source, seek, pts0, limit))?;
            debug!(resume = args.resume, ?seek, "decoder opened");
            Source::File(FileSource { dec, resume: args.resume, end: a.end_frame, step: a.frame_step.max(1), finished: false })
        } else {
            let stop = Arc::new(AtomicBool::new(false));
            let crashed_to = myself.clone();
            let ctx = LiveIngest {
                url: a.source.clone(),
                job_id: a.job_id.clone(),
                pull: matches!(args.job.kind, ShardKind::Pull { .. } | ShardKind::Device { .. }),
                resume: args.resume,
                resume_timestamp: args.job.kind.resume_timestamp(),
                step: a.frame_step.max(1),
                lobby: args.job.lobby.clone(),
                reporter: args.reporter.clone(),
                config: args.job.settings.live,
                stop: stop.clone(),
                decoder: myself,
                span: args.span.clone(),
            };
            let thread_stop = stop.clone();
            std::thread::Builder::new().name("live-ingest".into()).spawn(move || {
                // A crash here fails the shard (a live stream cannot be
                // replayed) rather than leaving its job running with no reader.
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.run())) {
                    let what = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default();
                    if !thread_stop.load(Ordering::Relaxed) {
                        let _ = crashed_to.send_message(DecoderMsg::Failed(format!("the live ingest thread crashed: {what}")));
                    }
                }
            })?;
            let lanes = args.job.compute.lanes_for(args.job.settings.depth);
            Source::Live { gate: LiveGate::new(args.job.settings.live.policy, lanes, a.frame_step), stop, ticking: false }
        };
        Ok(DecoderState {
            source,
            resizer: args.resizer,
            reporter: args.reporter,
            span: args.span.clone(),
            decoded: panoptes_common::metrics::counter(FRAMES_DECODED, &[]),
            latency: panoptes_common::metrics::histogram(DECODE_SECONDS, &[]),
        })
    }

    async fn handle(&self, myself: ActorRef<DecoderMsg>, msg: DecoderMsg, st: &mut DecoderState) -> Result<(), ActorProcessingErr> {
        let span = st.span.clone();
        async move {
            if let DecoderMsg::Failed(e) = msg {
                return Err(e.into());
            }
            let now = Instant::now();
            let steps = match (&mut st.source, msg) {
                (Source::File(f), DecoderMsg::Pull(credit)) => {
                    for _ in 0..credit {
                        if f.finished {
                            break;
                        }
                        match f.next()? {
                            Some((frame, decode_s)) => forward(&st.resizer, &st.decoded, &st.latency, frame, decode_s, Instant::now())?,
                            None => {
                                // End of the shard's range, or of the stream.
                                f.finished = true;
                                debug!(next_frame = f.end, "decoder reached the end of the shard");
                                st.resizer.send_message(ResizerMsg::End { next_frame: f.end })?;
                            }
                        }
                    }
                    return Ok(());
                }
                (Source::File(f), DecoderMsg::Cut(end)) => {
                    if end < f.end {
                        debug!(end, was = f.end, "the shard was cut short (work stealing): decoding stops there");
                        f.end = end;
                    }
                    return Ok(());
                }
                (Source::File(_), _) => return Ok(()),
                (Source::Live { gate, ticking, .. }, msg) => match msg {
                    DecoderMsg::Pull(n) => gate.credit(u64::from(n), now),
                    DecoderMsg::Arrived { frame, decode_s, arrived } => gate.arrived(Arrival { index: frame.index, frame, decode_s, arrived }, now),
                    DecoderMsg::StreamEnded { next_frame } => gate.ended(next_frame, now),
                    DecoderMsg::Analysed => gate.analysed(now),
                    DecoderMsg::Tick => {
                        *ticking = false;
                        gate.tick(now)
                    }
                    DecoderMsg::Cut(_) | DecoderMsg::Failed(_) => Vec::new(),
                },
            };
            st.apply(steps)?;
            // After the end, frames still held age out (`lag`).
            if let Source::Live { gate, ticking, .. } = &mut st.source {
                if gate.is_ending() && !*ticking {
                    *ticking = true;
                    myself.send_after(END_TICK, || DecoderMsg::Tick);
                }
            }
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// Stop the live ingest thread with the actor (it interrupts FFmpeg's waits).
impl Drop for DecoderState {
    fn drop(&mut self) {
        if let Source::Live { stop, .. } = &self.source {
            stop.store(true, Ordering::Relaxed);
        }
    }
}
