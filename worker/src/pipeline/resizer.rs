//! Resize actor: swscale to packed RGB24 at the job's target height, then
//! fan the frame out to every model actor.
use std::sync::Arc;
use std::time::Instant;

use panoptes_media::Converter;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::{blocking, ModelMsg, ReporterMsg, ResizerMsg};

pub struct ResizerActor;

pub struct ResizerArgs {
    pub target_height: u32,
    pub models: Vec<ActorRef<ModelMsg>>,
    pub reporter: ActorRef<ReporterMsg>,
}

pub struct ResizerState {
    conv: Converter,
    models: Vec<ActorRef<ModelMsg>>,
    reporter: ActorRef<ReporterMsg>,
}

impl Actor for ResizerActor {
    type Msg = ResizerMsg;
    type State = ResizerState;
    type Arguments = ResizerArgs;

    async fn pre_start(&self, _myself: ActorRef<ResizerMsg>, a: ResizerArgs) -> Result<ResizerState, ActorProcessingErr> {
        Ok(ResizerState { conv: Converter::new(a.target_height), models: a.models, reporter: a.reporter })
    }

    async fn handle(&self, _myself: ActorRef<ResizerMsg>, msg: ResizerMsg, st: &mut ResizerState) -> Result<(), ActorProcessingErr> {
        match msg {
            ResizerMsg::Frame { frame, decode_s } => {
                let t = Instant::now();
                let rgb = Arc::new(blocking(|| st.conv.convert(&frame.frame))?);
                let resize_s = t.elapsed().as_secs_f64();
                st.reporter.send_message(ReporterMsg::Decoded { frame: frame.index, timestamp: frame.timestamp, decode_s, resize_s })?;
                for m in &st.models {
                    m.send_message(ModelMsg::Analyze { frame: frame.index, rgb: rgb.clone() })?;
                }
            }
            ResizerMsg::End { next_frame } => {
                for m in &st.models {
                    m.send_message(ModelMsg::End { next_frame })?;
                }
            }
        }
        Ok(())
    }
}
