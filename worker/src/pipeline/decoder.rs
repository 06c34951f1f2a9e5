//! Decoder actor: opens the source (seeking to the shard's keyframe) and
//! decodes analysed frames while it holds credit.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use panoptes_common::metrics::Histogram;
use panoptes_media::Decoder as MediaDecoder;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, Instrument};

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
    dec: MediaDecoder,
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

    async fn pre_start(&self, _myself: ActorRef<DecoderMsg>, args: DecoderArgs) -> Result<DecoderState, ActorProcessingErr> {
        let _g = args.span.enter(); // no await below
        let a = &args.job.assignment;
        let seek = if a.seek_pts == i64::MIN { None } else { Some((a.seek_frame, a.seek_pts)) };
        let source = a.source.clone();
        let pts0 = a.pts0;
        let dec = blocking(|| MediaDecoder::open(&source, seek, pts0))?;
        debug!(resume = args.resume, ?seek, "decoder opened");
        Ok(DecoderState {
            dec,
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
            let DecoderMsg::Pull(mut credit) = msg;
            // Decoding time of an analysed frame includes the frames skipped
            // before it (frame_step, or the run-up from the keyframe).
            let mut t = Instant::now();
            while credit > 0 && !st.finished {
                let next = blocking(|| st.dec.next_frame())?;
                match next {
                    Some(f) if f.index < st.end => {
                        if f.index < st.resume || f.index % st.step != 0 {
                            continue;
                        }
                        credit -= 1;
                        let decode_s = t.elapsed().as_secs_f64();
                        st.latency.observe(decode_s);
                        st.decoded.fetch_add(1, Ordering::Relaxed);
                        st.resizer.send_message(ResizerMsg::Frame { frame: f, decode_s })?;
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
