//! Model actor: runs one analysis (tract inference or k-means) per frame and
//! sends the result to the shard supervisor, which passes it on to the reporter.
//!
//! The actor does not catch failures: a panic in `analyze` (or an error it
//! returns) ends the actor, and ractor reports it to the shard supervisor as
//! a failed child. The supervisor then starts a fresh actor for this model
//! and re-sends the frames the dead one had not answered, the first marked as
//! a retry (see [`super::supervisor`]).
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::info;

use super::{blocking, Links, ModelMsg, ShardMsg};
use crate::analysis::Analysis;

pub struct ModelActor;

pub struct ModelArgs {
    /// The model's position in the job's model order.
    pub index: usize,
    pub analysis: Arc<dyn Analysis>,
    pub links: Links,
}

impl Actor for ModelActor {
    type Msg = ModelMsg;
    type State = ModelArgs;
    type Arguments = ModelArgs;

    async fn pre_start(&self, _myself: ActorRef<ModelMsg>, a: ModelArgs) -> Result<ModelArgs, ActorProcessingErr> {
        #[cfg(test)]
        tests::started(a.analysis.name(), _myself.get_id());
        Ok(a)
    }

    async fn handle(&self, _myself: ActorRef<ModelMsg>, msg: ModelMsg, st: &mut ModelArgs) -> Result<(), ActorProcessingErr> {
        let ModelMsg::Analyze { frame, rgb, retry } = msg;
        if retry {
            info!(model = st.analysis.name(), frame, "retrying the frame the previous actor for this model crashed on");
        }
        let t = Instant::now();
        // A panic here unwinds out of the handler: ractor turns it into this
        // actor's failure, which the supervisor handles.
        let value = blocking(|| st.analysis.analyze(&rgb)).map_err(|e| format!("{e:#}"))?;
        let secs = t.elapsed().as_secs_f64();
        let results_json = serde_json::to_string(&value)?;
        st.links.supervisor.send_message(ShardMsg::Output { gen: st.links.gen, frame, model: st.index, results_json, secs })?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use ractor::ActorId;

    /// Every model actor started by the tests, as (analysis name, actor id):
    /// tests use unique analysis names and count the actors started for them.
    static STARTED: Mutex<Vec<(String, ActorId)>> = Mutex::new(Vec::new());

    pub(super) fn started(name: &str, id: ActorId) {
        STARTED.lock().unwrap().push((name.to_string(), id));
    }

    /// The ids of the model actors started for the analysis `name`, in order.
    pub(crate) fn actors_started(name: &str) -> Vec<ActorId> {
        STARTED.lock().unwrap().iter().filter(|(n, _)| n == name).map(|(_, id)| *id).collect()
    }
}
