//! Shard supervisor: owns one shard's pipeline. When a stage crashes (a panic
//! or an error in FFmpeg or tract), the whole pipeline is rebuilt from the
//! first unacknowledged frame, up to `max_restarts` times; after that the
//! shard is reported failed with the last error, and the coordinator decides
//! whether another attempt (maybe on another worker) is worth it.
use std::collections::HashSet;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{info, warn};

use super::decoder::{DecoderActor, DecoderArgs};
use super::model::{ModelActor, ModelArgs};
use super::reporter::{send_report, ReporterActor, ReporterArgs};
use super::resizer::{ResizerActor, ResizerArgs};
use super::{DecoderMsg, Gen, Links, ShardJob, ShardMsg};

pub struct ShardSupervisor;

pub struct SupervisorState {
    job: ShardJob,
    gen: Gen,
    children: HashSet<ActorId>,
    decoder: Option<ActorRef<DecoderMsg>>,
    /// Every analysed frame before this one is committed.
    committed: u64,
    restarts: u32,
    last_error: String,
}

impl ShardSupervisor {
    async fn start_pipeline(myself: &ActorRef<ShardMsg>, st: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        st.gen += 1;
        st.children.clear();
        st.decoder = None;
        let links = Links { gen: st.gen, supervisor: myself.clone() };
        let cell = myself.get_cell();
        let (reporter, _) =
            Actor::spawn_linked(None, ReporterActor, ReporterArgs { job: st.job.clone(), links: links.clone() }, cell.clone()).await?;
        st.children.insert(reporter.get_id());
        let mut models = Vec::new();
        for (index, analysis) in st.job.analyses.iter().enumerate() {
            let (m, _) =
                Actor::spawn_linked(None, ModelActor, ModelArgs { index, analysis: analysis.clone(), reporter: reporter.clone() }, cell.clone())
                    .await?;
            st.children.insert(m.get_id());
            models.push(m);
        }
        let target_height = st.job.assignment.target_height;
        let (resizer, _) = Actor::spawn_linked(None, ResizerActor, ResizerArgs { target_height, models, reporter }, cell.clone()).await?;
        st.children.insert(resizer.get_id());
        let (decoder, _) =
            Actor::spawn_linked(None, DecoderActor, DecoderArgs { job: st.job.clone(), resume: st.committed, resizer }, cell).await?;
        st.children.insert(decoder.get_id());
        decoder.send_message(DecoderMsg::Pull(st.job.depth))?;
        st.decoder = Some(decoder);
        Ok(())
    }

    /// A stage failed: restart the pipeline or give the shard up.
    async fn on_failure(myself: &ActorRef<ShardMsg>, st: &mut SupervisorState, error: String) -> Result<(), ActorProcessingErr> {
        st.last_error = error;
        myself.stop_children(Some("restarting".into()));
        st.children.clear();
        st.decoder = None;
        loop {
            if st.restarts >= st.job.max_restarts {
                warn!(shard = %st.job.label(), error = %st.last_error, restarts = st.restarts, "shard failed; reporting it");
                Self::report_failure(st).await;
                myself.stop(Some("failed".into()));
                return Ok(());
            }
            st.restarts += 1;
            warn!(shard = %st.job.label(), error = %st.last_error, restart = st.restarts, resume = st.committed, "stage failed; restarting the pipeline");
            match Self::start_pipeline(myself, st).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    myself.stop_children(Some("restarting".into()));
                    st.last_error = spawn_error_text(&e);
                }
            }
        }
    }

    async fn report_failure(st: &SupervisorState) {
        let req = st.job.report(vec![], st.committed, false, st.last_error.clone(), None);
        if let Err(e) = send_report(&st.job, req).await {
            warn!(shard = %st.job.label(), error = %e, "could not report the failure; the lease will expire instead");
        }
    }
}

/// The useful part of a spawn error (the stage's own start-up error).
fn spawn_error_text(e: &ActorProcessingErr) -> String {
    let s = e.to_string();
    s.strip_prefix("Actor panicked during startup ").unwrap_or(&s).to_string()
}

impl Actor for ShardSupervisor {
    type Msg = ShardMsg;
    type State = SupervisorState;
    type Arguments = ShardJob;

    async fn pre_start(&self, _myself: ActorRef<ShardMsg>, job: ShardJob) -> Result<SupervisorState, ActorProcessingErr> {
        let committed = job.assignment.resume_frame;
        Ok(SupervisorState { job, gen: 0, children: HashSet::new(), decoder: None, committed, restarts: 0, last_error: String::new() })
    }

    async fn post_start(&self, myself: ActorRef<ShardMsg>, st: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        let a = &st.job.assignment;
        info!(shard = %st.job.label(), epoch = a.epoch, from = a.resume_frame, to = a.end_frame, source = %a.source, "shard started");
        if let Err(e) = Self::start_pipeline(&myself, st).await {
            Self::on_failure(&myself, st, spawn_error_text(&e)).await?;
        }
        Ok(())
    }

    async fn handle(&self, myself: ActorRef<ShardMsg>, msg: ShardMsg, st: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Acked { gen, next_frame, frames } if gen == st.gen => {
                st.committed = st.committed.max(next_frame);
                if let Some(d) = &st.decoder {
                    let _ = d.send_message(DecoderMsg::Pull(frames));
                }
            }
            ShardMsg::Finished { gen } if gen == st.gen => {
                info!(shard = %st.job.label(), "shard finished");
                myself.stop(Some("finished".into()));
            }
            ShardMsg::LeaseLost { gen, reason } if gen == st.gen => {
                warn!(shard = %st.job.label(), %reason, "lease lost; stopping the shard");
                myself.stop(Some("lease lost".into()));
            }
            ShardMsg::StageError { gen, error } if gen == st.gen => Self::on_failure(&myself, st, error).await?,
            _ => {} // from an earlier generation
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ShardMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            if st.children.contains(&cell.get_id()) {
                Self::on_failure(&myself, st, err.to_string()).await?;
            }
        }
        Ok(())
    }
}
