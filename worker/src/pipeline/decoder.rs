//! Decoder actor: opens the source (seeking to the shard's keyframe) and
//! decodes analysed frames while it holds credit.
use std::time::Instant;

use panoptes_media::Decoder as MediaDecoder;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::debug;

use super::{blocking, DecoderMsg, ResizerMsg, ShardJob};

pub struct DecoderActor;

pub struct DecoderArgs {
    pub job: ShardJob,
    /// First frame still to analyse.
    pub resume: u64,
    pub resizer: ActorRef<ResizerMsg>,
}

pub struct DecoderState {
    dec: MediaDecoder,
    resume: u64,
    end: u64,
    step: u64,
    resizer: ActorRef<ResizerMsg>,
    finished: bool,
}

impl Actor for DecoderActor {
    type Msg = DecoderMsg;
    type State = DecoderState;
    type Arguments = DecoderArgs;

    async fn pre_start(&self, _myself: ActorRef<DecoderMsg>, args: DecoderArgs) -> Result<DecoderState, ActorProcessingErr> {
        let a = &args.job.assignment;
        let seek = if a.seek_pts == i64::MIN { None } else { Some((a.seek_frame, a.seek_pts)) };
        let source = a.source.clone();
        let pts0 = a.pts0;
        let dec = blocking(|| MediaDecoder::open(&source, seek, pts0))?;
        debug!(shard = %args.job.label(), resume = args.resume, ?seek, "decoder opened");
        Ok(DecoderState { dec, resume: args.resume, end: a.end_frame, step: a.frame_step.max(1), resizer: args.resizer, finished: false })
    }

    async fn handle(&self, _myself: ActorRef<DecoderMsg>, msg: DecoderMsg, st: &mut DecoderState) -> Result<(), ActorProcessingErr> {
        let DecoderMsg::Pull(mut credit) = msg;
        while credit > 0 && !st.finished {
            let t = Instant::now();
            let next = blocking(|| st.dec.next_frame())?;
            match next {
                Some(f) if f.index < st.end => {
                    if f.index < st.resume || f.index % st.step != 0 {
                        continue;
                    }
                    credit -= 1;
                    let decode_s = t.elapsed().as_secs_f64();
                    st.resizer.send_message(ResizerMsg::Frame { frame: f, decode_s })?;
                }
                _ => {
                    // End of the shard's range, or of the stream.
                    st.finished = true;
                    st.resizer.send_message(ResizerMsg::End { next_frame: st.end })?;
                }
            }
        }
        Ok(())
    }
}
