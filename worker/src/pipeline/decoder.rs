//! Decoder actor: opens the source (seeking to the shard's keyframe) and
//! decodes analysed frames while it holds credit.
//!
//! A live shard (a push, a pull source, a device) is read by its own thread
//! instead (`live_ingest.rs`), which decodes every frame as it arrives. What happens when the pipeline has no credit is the
//! `[live] drop_policy` ([`DropPolicy`]): `latest` (the default) passes each
//! frame to this actor, which keeps at most one waiting and sends it on as
//! soon as a lane of every model is free (a newer frame replaces the waiting
//! one: [`LatestGate`]); `lag` holds frames until they are
//! `max_lag_ms` old and then drops them oldest first; `every_nth` analyses
//! one frame in `keep_every` and drops a kept frame that finds no credit.
//! Dropped frames are counted (per job, and per reason in the worker's
//! metrics); latency and memory stay bounded. When the publisher stops, the thread
//! ends the shard after the last frame.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use panoptes_common::metrics::Histogram;
use panoptes_media::{DecodedFrame, Decoder as MediaDecoder};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, info, Instrument};

use super::live_ingest::LiveIngest;
use super::{blocking, DecoderMsg, DropPolicy, ResizerMsg, ShardJob, ShardKind};
use crate::metrics::{DECODE_SECONDS, FRAMES_DECODED, LIVE_FRAMES_DROPPED};

pub struct DecoderActor;

pub struct DecoderArgs {
    pub job: ShardJob,
    /// First frame still to analyse.
    pub resume: u64,
    pub resizer: ActorRef<ResizerMsg>,
    /// The shard's span.
    pub span: tracing::Span,
}

pub struct DecoderState {
    /// `None` for a live shard (its thread owns the decoder).
    dec: Option<MediaDecoder>,
    /// Live: credit shared with the ingest thread, and its stop flag.
    live_credit: Arc<AtomicU64>,
    live_stop: Arc<AtomicBool>,
    resume: u64,
    end: u64,
    step: u64,
    resizer: ActorRef<ResizerMsg>,
    finished: bool,
    span: tracing::Span,
    decoded: panoptes_common::metrics::Counter,
    latency: Histogram,
    /// Live, `latest` policy: the frame waiting for a free lane.
    latest: Option<LatestGate>,
}

/// `latest` policy: the live frames between the ingest thread and analysis.
/// A frame is sent on when fewer than `lanes` frames are being analysed and
/// the shard has credit (frames not yet acknowledged, `pipeline_depth`); at
/// most one frame waits, and a newer one replaces it.
struct LatestGate {
    waiting: Option<(DecodedFrame, f64, Instant)>,
    /// Frames sent on whose every model has not answered yet.
    busy: usize,
    lanes: usize,
    credit: u64,
    /// The stream ended at this frame: `End` follows the waiting frame.
    ended: Option<u64>,
    /// The job's dropped-frame count (`LiveOpts::dropped`).
    job_dropped: Arc<AtomicU64>,
    forwarded: u64,
    dropped: u64,
}

impl LatestGate {
    /// Send the waiting frame on if a lane is free, then the end of the
    /// stream once nothing waits.
    fn pump(&mut self, st: &mut GateOut) -> Result<(), ActorProcessingErr> {
        if self.busy < self.lanes && self.credit > 0 {
            if let Some((frame, decode_s, arrived)) = self.waiting.take() {
                self.credit -= 1;
                self.busy += 1;
                self.forwarded += 1;
                st.latency.observe(decode_s);
                st.decoded.inc();
                st.resizer.send_message(ResizerMsg::Frame { frame, decode_s, arrived })?;
            }
        }
        if self.waiting.is_none() {
            if let Some(next_frame) = self.ended.take() {
                info!(next_frame, forwarded = self.forwarded, dropped = self.dropped, "live: the stream ended; ending the shard after its last frames");
                st.resizer.send_message(ResizerMsg::End { next_frame })?;
            }
        }
        Ok(())
    }

    fn arrived(&mut self, frame: DecodedFrame, decode_s: f64, arrived: Instant) {
        if let Some((old, _, _)) = self.waiting.replace((frame, decode_s, arrived)) {
            self.dropped += 1;
            self.job_dropped.fetch_add(1, Ordering::Relaxed);
            panoptes_common::metrics::counter(LIVE_FRAMES_DROPPED, &[("reason", "replaced")]).inc_by(1);
            debug!(frame = old.index, "live: frame replaced by a newer one before analysis");
        }
    }
}

/// What [`LatestGate::pump`] sends through.
struct GateOut<'a> {
    resizer: &'a ActorRef<ResizerMsg>,
    decoded: &'a panoptes_common::metrics::Counter,
    latency: &'a Histogram,
}

impl Actor for DecoderActor {
    type Msg = DecoderMsg;
    type State = DecoderState;
    type Arguments = DecoderArgs;

    async fn pre_start(&self, myself: ActorRef<DecoderMsg>, args: DecoderArgs) -> Result<DecoderState, ActorProcessingErr> {
        let _g = args.span.enter(); // no await below
        let a = &args.job.assignment;
        let live_credit = Arc::new(AtomicU64::new(0));
        let live_stop = Arc::new(AtomicBool::new(false));
        let dec = if let ShardKind::File { seek, pts0, .. } = args.job.kind {
            let source = a.source.clone();
            let limit = args.job.stall_limit;
            let dec = blocking(|| MediaDecoder::open_with_stall_limit(&source, seek, pts0, limit))?;
            debug!(resume = args.resume, ?seek, "decoder opened");
            Some(dec)
        } else {
            let (crashed_to, stop) = (myself.clone(), live_stop.clone());
            let ctx = LiveIngest {
                url: a.source.clone(),
                job_id: a.job_id.clone(),
                pull: matches!(args.job.kind, ShardKind::Pull { .. } | ShardKind::Device { .. }),
                resume: args.resume,
                resume_timestamp: args.job.kind.resume_timestamp(),
                step: a.frame_step.max(1),
                opts: args.job.live.clone(),
                credit: live_credit.clone(),
                stop: live_stop.clone(),
                resizer: args.resizer.clone(),
                decoder: myself,
                span: args.span.clone(),
            };
            std::thread::Builder::new().name("live-ingest".into()).spawn(move || {
                // A crash here fails the shard (a live stream cannot be
                // replayed) rather than leaving its job running with no reader.
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.run())) {
                    let what = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default();
                    if !stop.load(Ordering::Relaxed) {
                        let _ = crashed_to.send_message(DecoderMsg::Failed(format!("the live ingest thread crashed: {what}")));
                    }
                }
            })?;
            None
        };
        let latest = (args.job.kind.is_live() && args.job.live.config.policy == DropPolicy::Latest).then(|| LatestGate {
            waiting: None,
            busy: 0,
            lanes: args.job.compute.lanes_for(args.job.depth),
            credit: 0,
            ended: None,
            job_dropped: args.job.live.dropped.clone(),
            forwarded: 0,
            dropped: 0,
        });
        Ok(DecoderState {
            latest,
            dec,
            live_credit,
            live_stop,
            resume: args.resume,
            end: a.end_frame,
            step: a.frame_step.max(1),
            resizer: args.resizer,
            finished: false,
            span: args.span.clone(),
            decoded: panoptes_common::metrics::counter(FRAMES_DECODED, &[]),
            latency: panoptes_common::metrics::histogram(DECODE_SECONDS, &[]),
        })
    }

    async fn handle(&self, _myself: ActorRef<DecoderMsg>, msg: DecoderMsg, st: &mut DecoderState) -> Result<(), ActorProcessingErr> {
        let span = st.span.clone();
        async move {
            let mut credit = match msg {
                DecoderMsg::Pull(n) => n,
                DecoderMsg::Cut(end) => {
                    if end < st.end && st.dec.is_some() {
                        debug!(end, was = st.end, "the shard was cut short (work stealing): decoding stops there");
                        st.end = end;
                    }
                    return Ok(());
                }
                DecoderMsg::Failed(e) => return Err(e.into()),
                DecoderMsg::Arrived { .. } | DecoderMsg::StreamEnded { .. } | DecoderMsg::Analysed => {
                    let Some(gate) = st.latest.as_mut() else { return Ok(()) };
                    match msg {
                        DecoderMsg::Arrived { frame, decode_s, arrived } => gate.arrived(frame, decode_s, arrived),
                        DecoderMsg::StreamEnded { next_frame } => gate.ended = Some(next_frame),
                        _ => gate.busy = gate.busy.saturating_sub(1),
                    }
                    return gate.pump(&mut GateOut { resizer: &st.resizer, decoded: &st.decoded, latency: &st.latency });
                }
            };
            if let Some(gate) = st.latest.as_mut() {
                gate.credit += u64::from(credit);
                return gate.pump(&mut GateOut { resizer: &st.resizer, decoded: &st.decoded, latency: &st.latency });
            }
            let Some(dec) = st.dec.as_mut() else {
                // Live: the ingest thread decodes; it may forward this many more.
                st.live_credit.fetch_add(credit as u64, Ordering::SeqCst);
                return Ok(());
            };
            // Decoding time of an analysed frame includes the frames skipped
            // before it (frame_step, or the run-up from the keyframe).
            let mut t = Instant::now();
            while credit > 0 && !st.finished {
                let next = blocking(|| dec.next_frame())?;
                match next {
                    Some(f) if f.index < st.end => {
                        if f.index < st.resume || f.index % st.step != 0 {
                            continue;
                        }
                        credit -= 1;
                        let decode_s = t.elapsed().as_secs_f64();
                        st.latency.observe(decode_s);
                        st.decoded.inc();
                        st.resizer.send_message(ResizerMsg::Frame { frame: f, decode_s, arrived: Instant::now() })?;
                        t = Instant::now();
                    }
                    _ => {
                        // End of the shard's range, or of the stream.
                        st.finished = true;
                        debug!(next_frame = st.end, "decoder reached the end of the shard");
                        st.resizer.send_message(ResizerMsg::End { next_frame: st.end })?;
                    }
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
        self.live_stop.store(true, Ordering::Relaxed);
    }
}
