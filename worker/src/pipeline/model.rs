//! Model actor (one lane of one model; see [`super::supervisor`]): runs one analysis (tract inference or k-means) per frame and
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
use tracing::{debug, info, Instrument};

use super::{blocking, Links, ModelMsg, ShardMsg};
use crate::analysis::Analysis;
use crate::metrics::ModelMetrics;

pub struct ModelActor;

pub struct ModelArgs {
    /// The model's position in the job's model order.
    pub index: usize,
    /// Which of the model's lanes this actor is (see [`super::supervisor`]).
    pub lane: usize,
    /// The worker's analysis permits ([`super::Compute`]): one is held while
    /// a frame is analysed.
    pub permits: Arc<tokio::sync::Semaphore>,
    /// The model's name in the job (metric label and log field).
    pub name: String,
    pub analysis: Arc<dyn Analysis>,
    pub links: Links,
}

pub struct ModelState {
    args: ModelArgs,
    metrics: ModelMetrics,
}

impl Actor for ModelActor {
    type Msg = ModelMsg;
    type State = ModelState;
    type Arguments = ModelArgs;

    async fn pre_start(&self, _myself: ActorRef<ModelMsg>, a: ModelArgs) -> Result<ModelState, ActorProcessingErr> {
        #[cfg(test)]
        tests::started(a.analysis.name(), _myself.get_id());
        Ok(ModelState { metrics: ModelMetrics::new(&a.name), args: a })
    }

    async fn handle(&self, _myself: ActorRef<ModelMsg>, msg: ModelMsg, st: &mut ModelState) -> Result<(), ActorProcessingErr> {
        let span = st.args.links.span.clone();
        async move {
            let ModelMsg::Analyze { frame, rgb, retry } = msg;
            let a = &st.args;
            if retry {
                info!(model = %a.name, frame, "retrying the frame the previous actor for this model crashed on");
            }
            let _permit = a.permits.acquire().await?;
            let t = Instant::now();
            // A panic here unwinds out of the handler: ractor turns it into this
            // actor's failure, which the supervisor handles.
            let value = blocking(|| a.analysis.analyze(&rgb)).map_err(|e| format!("{e:#}"))?;
            let secs = t.elapsed().as_secs_f64();
            st.metrics.latency.observe(secs);
            st.metrics.analysed.inc_by(1);
            debug!(model = %a.name, frame, seconds = secs, "frame analysed");
            let results_json = serde_json::to_string(&value)?;
            a.links.supervisor.send_message(ShardMsg::Output { gen: a.links.gen, frame, model: a.index, lane: a.lane, results_json, secs })?;
            Ok(())
        }
        .instrument(span)
        .await
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
