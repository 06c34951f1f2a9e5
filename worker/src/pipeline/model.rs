//! Model actor: runs one analysis (tract inference or k-means) per frame.
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::{blocking, ModelMsg, ReporterMsg};
use crate::analysis::Analysis;

pub struct ModelActor;

pub struct ModelArgs {
    pub index: usize,
    pub analysis: Arc<dyn Analysis>,
    pub reporter: ActorRef<ReporterMsg>,
}

impl Actor for ModelActor {
    type Msg = ModelMsg;
    type State = ModelArgs;
    type Arguments = ModelArgs;

    async fn pre_start(&self, _myself: ActorRef<ModelMsg>, a: ModelArgs) -> Result<ModelArgs, ActorProcessingErr> {
        Ok(a)
    }

    async fn handle(&self, _myself: ActorRef<ModelMsg>, msg: ModelMsg, st: &mut ModelArgs) -> Result<(), ActorProcessingErr> {
        match msg {
            ModelMsg::Analyze { frame, rgb } => {
                let t = Instant::now();
                let value = blocking(|| st.analysis.analyze(&rgb))
                    .map_err(|e| format!("{} failed on frame {frame}: {e:#}", st.analysis.name()))?;
                let secs = t.elapsed().as_secs_f64();
                let results_json = serde_json::to_string(&value)?;
                st.reporter.send_message(ReporterMsg::Output { frame, model: st.index, results_json, secs })?;
            }
            ModelMsg::End { next_frame } => st.reporter.send_message(ReporterMsg::End { next_frame })?,
        }
        Ok(())
    }
}
