//! Decoder actor: opens the source (seeking to the shard's keyframe) and
//! decodes analysed frames while it holds credit.
//!
//! A live shard (an RTMP push) is read by its own thread instead, which
//! listens for the publisher (FFmpeg's RTMP listen mode) and decodes every
//! frame as it arrives: while the pipeline has credit the frame goes on,
//! otherwise it is dropped and counted (latency stays bounded by the
//! pipeline depth, memory stays flat). When the publisher stops, the thread
//! ends the shard after the last frame.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use panoptes_common::metrics::Histogram;
use panoptes_media::Decoder as MediaDecoder;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, info, Instrument};

use super::{blocking, DecoderMsg, ResizerMsg, ShardJob};
use crate::metrics::{DECODE_SECONDS, FRAMES_DECODED};

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
    decoded: Arc<AtomicU64>,
    latency: Arc<Histogram>,
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
        let dec = if a.live {
            let ctx = LiveIngest {
                url: a.source.clone(),
                resume: args.resume,
                step: a.frame_step.max(1),
                opts: args.job.live.clone(),
                credit: live_credit.clone(),
                stop: live_stop.clone(),
                resizer: args.resizer.clone(),
                decoder: myself,
                span: args.span.clone(),
            };
            std::thread::Builder::new().name("live-ingest".into()).spawn(move || ctx.run())?;
            None
        } else {
            let seek = if a.seek_pts == i64::MIN { None } else { Some((a.seek_frame, a.seek_pts)) };
            let source = a.source.clone();
            let pts0 = a.pts0;
            let dec = blocking(|| MediaDecoder::open(&source, seek, pts0))?;
            debug!(resume = args.resume, ?seek, "decoder opened");
            Some(dec)
        };
        Ok(DecoderState {
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
                DecoderMsg::Failed(e) => return Err(e.into()),
            };
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
                        st.decoded.fetch_add(1, Ordering::Relaxed);
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

/// A live shard's ingest thread: see the module doc.
struct LiveIngest {
    url: String,
    /// Number of the first frame (the committed cursor; 0 for a new stream).
    resume: u64,
    step: u64,
    opts: super::LiveOpts,
    credit: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    resizer: ActorRef<ResizerMsg>,
    decoder: ActorRef<DecoderMsg>,
    span: tracing::Span,
}

/// Consecutive read/decode errors after which a live stream is taken as ended.
const LIVE_MAX_ERRORS: u32 = 10;

impl LiveIngest {
    fn run(self) {
        let _g = self.span.enter();
        let connect = self.opts.connect_timeout_s.max(1).to_string();
        let idle_us = (self.opts.idle_timeout_s.max(1) * 1_000_000).to_string();
        // `listen`: FFmpeg's RTMP server mode (one publisher, on this port);
        // `timeout`: how long to wait for it (s); `rw_timeout`: a silent
        // publisher ends the stream (µs).
        // `analyzeduration`/`probesize`: start decoding after half a second of
        // stream, not FFmpeg's default 5 s (those first frames are kept, but
        // would all arrive late at once).
        let options = [
            ("listen", "1"),
            ("timeout", connect.as_str()),
            ("rw_timeout", idle_us.as_str()),
            ("analyzeduration", "500000"),
            ("probesize", "500000"),
        ];
        info!(url = %self.url, connect_timeout_s = self.opts.connect_timeout_s, "live: waiting for the publisher");
        let mut dec = match MediaDecoder::open_live(&self.url, &options, self.stop.clone()) {
            Ok(d) => d,
            Err(e) => {
                if !self.stop.load(Ordering::Relaxed) {
                    let msg = format!(
                        "no publisher pushed a stream to {} within {} s (live.connect_timeout_s), or it could not be read: {e}",
                        self.url, self.opts.connect_timeout_s
                    );
                    let _ = self.decoder.send_message(DecoderMsg::Failed(msg));
                }
                return;
            }
        };
        info!(url = %self.url, "live: publisher connected");
        let decoded = panoptes_common::metrics::counter(FRAMES_DECODED, &[]);
        let latency = panoptes_common::metrics::histogram(DECODE_SECONDS, &[]);
        let (mut next, mut forwarded, mut dropped, mut errors) = (self.resume, 0u64, 0u64, 0u32);
        let mut t = Instant::now();
        let mut input_ended = false;
        while !self.stop.load(Ordering::Relaxed) {
            match dec.next_frame() {
                Ok(Some(mut f)) => {
                    errors = 0;
                    let n = self.resume + f.index;
                    next = n + 1;
                    if n % self.step != 0 {
                        continue;
                    }
                    // Forward while the pipeline has room; otherwise drop this
                    // frame rather than queue it (bounded latency and memory).
                    if self.credit.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1)).is_ok() {
                        f.index = n;
                        let decode_s = t.elapsed().as_secs_f64();
                        latency.observe(decode_s);
                        decoded.fetch_add(1, Ordering::Relaxed);
                        forwarded += 1;
                        if self.resizer.send_message(ResizerMsg::Frame { frame: f, decode_s, arrived: Instant::now() }).is_err() {
                            return; // the pipeline is gone
                        }
                    } else {
                        dropped += 1;
                        self.opts.dropped.fetch_add(1, Ordering::Relaxed);
                        debug!(frame = n, "live: analysis is behind the stream; frame dropped");
                    }
                    t = Instant::now();
                }
                Ok(None) => break,
                Err(e) => {
                    errors += 1;
                    if errors >= LIVE_MAX_ERRORS && input_ended {
                        break;
                    }
                    if errors >= LIVE_MAX_ERRORS {
                        input_ended = true;
                        // What a publisher closing its connection looks like in
                        // listen mode. The frames the decoder still holds
                        // (frame threading) come out after this.
                        info!(error = %e, "live: the stream cannot be read any more (the publisher closed it or went silent); ending it");
                        dec.end_input();
                        errors = 0;
                    }
                    debug!(error = %e, "live: read or decode error");
                }
            }
        }
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        info!(next_frame = next, forwarded, dropped, "live: the publisher stopped; ending the stream after its last frames");
        let _ = self.resizer.send_message(ResizerMsg::End { next_frame: next });
    }
}
