//! Resize actor: swscale to packed RGB24 at the job's target height, then
//! hand the frame to the supervisor, which fans it out to every model actor
//! (and keeps it until every model's result is in, to re-send it to a model
//! actor that crashes).
use std::sync::Arc;
use std::time::Instant;

use panoptes_media::Converter;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::{blocking, Links, ReporterMsg, ResizerMsg, ShardMsg};

pub struct ResizerActor;

pub struct ResizerArgs {
    pub target_height: u32,
    pub links: Links,
    pub reporter: ActorRef<ReporterMsg>,
}

pub struct ResizerState {
    conv: Converter,
    links: Links,
    reporter: ActorRef<ReporterMsg>,
}

impl Actor for ResizerActor {
    type Msg = ResizerMsg;
    type State = ResizerState;
    type Arguments = ResizerArgs;

    async fn pre_start(&self, _myself: ActorRef<ResizerMsg>, a: ResizerArgs) -> Result<ResizerState, ActorProcessingErr> {
        Ok(ResizerState { conv: Converter::new(a.target_height), links: a.links, reporter: a.reporter })
    }

    async fn handle(&self, _myself: ActorRef<ResizerMsg>, msg: ResizerMsg, st: &mut ResizerState) -> Result<(), ActorProcessingErr> {
        let gen = st.links.gen;
        match msg {
            ResizerMsg::Frame { frame, decode_s } => {
                let t = Instant::now();
                let rgb = Arc::new(blocking(|| st.conv.convert(&frame.frame))?);
                let resize_s = t.elapsed().as_secs_f64();
                // The reporter learns of the frame before any model result for it
                // can reach it (those go through the supervisor after this).
                st.reporter.send_message(ReporterMsg::Decoded { frame: frame.index, timestamp: frame.timestamp, decode_s, resize_s })?;
                st.links.supervisor.send_message(ShardMsg::Frame { gen, frame: frame.index, rgb })?;
            }
            ResizerMsg::End { next_frame } => st.links.supervisor.send_message(ShardMsg::FramesEnd { gen, next_frame })?,
        }
        Ok(())
    }
}
