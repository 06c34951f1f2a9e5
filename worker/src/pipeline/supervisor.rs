//! Shard supervisor: owns one shard's pipeline and restarts what crashes.
//!
//! Each model has one or more *lanes* (`Compute::lanes_for`: `worker.threads`, at most
//! `pipeline_depth`): one model actor each, all sharing the model's one
//! optimised plan, so that frames of a shard are analysed in parallel. A frame
//! goes to the lane of each model with the fewest frames waiting; the reporter
//! puts results back in frame order. Inference itself takes one of the
//! worker's `worker.threads` permits ([`super::Compute`]), so lanes, models
//! and shards together never run more analyses at once than the worker has
//! threads.
//!
//! Model actors are supervised one by one. Every frame reaches the model
//! actors through the supervisor, whose fan-out (`fan_out.rs`) keeps, per lane, the frames sent to
//! that lane's actor whose result it has not yet passed on to the reporter
//! (at most `pipeline_depth` frames per model, by the credit flow control).
//! When a model actor crashes (its analysis panicked or returned an error; the
//! actor does not catch either), ractor reports the failure here and the
//! supervisor:
//! - starts a fresh actor for that lane (same model, same analysis) and
//!   re-sends it those frames in order, the first (the one the dead actor was
//!   working on) marked as a retry; frames that were waiting in the dead
//!   actor's mailbox are therefore not lost;
//! - if the retried frame crashes the fresh actor too, records
//!   `{"error": "<model> failed on frame N: <message>"}` as that frame's
//!   result for that model (the coordinator counts it as an error), restarts
//!   the actor once more and goes on with the following frames. The other
//!   models of the frame are not affected;
//! - when one model crashes more than `max_restarts` times in a row with no
//!   frame analysed in between, fails the shard (the model is broken, not
//!   unlucky); sporadic crashes never fail it.
//!
//! When any other stage crashes (the decoder, resizer or reporter: a panic or
//! an error in FFmpeg, swscale or the report path), the whole pipeline is
//! rebuilt from the first unacknowledged frame, up to `max_restarts` times.
//!
//! A failed shard is reported to the coordinator with the last error, and the
//! coordinator decides whether another attempt (maybe on another worker) is
//! worth it.
//!
//! The supervisor also keeps the shard's part of the per-model queue gauge
//! (frames sent to a model actor and not answered yet) and counts restarts,
//! per-frame errors and how the shard ended (see [`crate::metrics`]).
use std::collections::HashSet;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::json;
use tracing::{debug, info, warn, Instrument};

use super::decoder::{DecoderActor, DecoderArgs};
use super::fan_out::{Crashed, FanOut};
use super::model::{ModelActor, ModelArgs};
use super::reporter::{send_report, ReporterActor, ReporterArgs};
use super::resizer::{PictureRate, ResizerActor, ResizerArgs};
use super::{DecoderMsg, Gen, Links, ModelMsg, ReporterMsg, ShardJob, ShardMsg};
use crate::metrics::{shard_ended, SupervisedModelMetrics, LEASES_LOST, PIPELINE_RESTARTS};

pub struct ShardSupervisor;

pub struct SupervisorState {
    job: ShardJob,
    gen: Gen,
    /// The current pipeline's decoder, resizer and reporter.
    stages: HashSet<ActorId>,
    decoder: Option<ActorRef<DecoderMsg>>,
    reporter: Option<ActorRef<ReporterMsg>>,
    /// The current pipeline's model lanes, in the job's model order.
    models: FanOut,
    /// The resizer has sent every frame before this one.
    frames_end: Option<u64>,
    /// Every analysed frame before this one is committed.
    committed: u64,
    /// Whole-pipeline restarts.
    restarts: u32,
    /// Model-actor restarts.
    model_restarts: u32,
    last_error: String,
    /// The shard's span: every handler runs in it.
    span: tracing::Span,
    /// Per model (job order): its counters and this shard's part of its queue gauge.
    model_metrics: Vec<SupervisedModelMetrics>,
    pipeline_restarts: panoptes_common::metrics::Counter,
}

impl SupervisorState {
    /// Model `index`'s name in the job.
    fn model_name(&self, index: usize) -> String {
        self.job.assignment.models.get(index).cloned().unwrap_or_else(|| self.job.analyses[index].name().to_string())
    }

    /// Publish this shard's per-model queue depths.
    fn update_queues(&mut self) {
        for (i, m) in self.model_metrics.iter_mut().enumerate() {
            m.queue.set(self.models.waiting(i) as f64);
        }
    }
}

impl ShardSupervisor {
    async fn start_pipeline(myself: &ActorRef<ShardMsg>, st: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        st.gen += 1;
        Self::forget_pipeline(st);
        let links = Links { gen: st.gen, supervisor: myself.clone(), span: st.span.clone() };
        let cell = myself.get_cell();
        let (reporter, _) =
            Actor::spawn_linked(None, ReporterActor, ReporterArgs { job: st.job.clone(), links: links.clone() }, cell.clone()).await?;
        st.stages.insert(reporter.get_id());
        st.reporter = Some(reporter.clone());
        let lanes = st.job.compute.lanes_for(st.job.settings.depth);
        for index in 0..st.job.analyses.len() {
            let mut actors = Vec::with_capacity(lanes);
            for lane in 0..lanes {
                actors.push(Self::spawn_model(myself, st, index, lane).await?);
            }
            st.models.add_model(actors);
        }
        let target_height = st.job.assignment.target_height;
        let a = &st.job.assignment;
        let picture = (a.frames_height, a.frames_quality);
        let rate = PictureRate::new(a.frames_every_ms, a.frame_step, st.job.kind.fps());
        let (resizer, _) =
            Actor::spawn_linked(None, ResizerActor, ResizerArgs { target_height, picture, rate, links, reporter: reporter.clone() }, cell.clone()).await?;
        st.stages.insert(resizer.get_id());
        let (decoder, _) =
            Actor::spawn_linked(None, DecoderActor, DecoderArgs { job: st.job.clone(), resume: st.committed, resizer, reporter, span: st.span.clone() }, cell)
                .await?;
        st.stages.insert(decoder.get_id());
        decoder.send_message(DecoderMsg::Pull(st.job.settings.depth))?;
        st.decoder = Some(decoder);
        Ok(())
    }

    async fn spawn_model(myself: &ActorRef<ShardMsg>, st: &SupervisorState, index: usize, lane: usize) -> Result<ActorRef<ModelMsg>, ActorProcessingErr> {
        let args = ModelArgs {
            index,
            lane,
            permits: st.job.compute.permits.clone(),
            name: st.model_name(index),
            analysis: st.job.analyses[index].clone(),
            links: Links { gen: st.gen, supervisor: myself.clone(), span: st.span.clone() },
        };
        let (actor, _) = Actor::spawn_linked(None, ModelActor, args, myself.get_cell()).await?;
        Ok(actor)
    }

    /// Drop every handle on the current pipeline (its actors are stopped or failed).
    fn forget_pipeline(st: &mut SupervisorState) {
        st.stages.clear();
        st.decoder = None;
        st.reporter = None;
        st.models.clear();
        st.frames_end = None;
    }

    /// A stage failed: restart the pipeline or give the shard up.
    async fn on_failure(myself: &ActorRef<ShardMsg>, st: &mut SupervisorState, error: String) -> Result<(), ActorProcessingErr> {
        st.last_error = error;
        myself.stop_children(Some("restarting".into()));
        Self::forget_pipeline(st);
        loop {
            if st.restarts >= st.job.settings.max_restarts {
                Self::give_up(myself, st).await;
                return Ok(());
            }
            st.restarts += 1;
            st.pipeline_restarts.inc_by(1);
            warn!(error = %st.last_error, restart = st.restarts, resume = st.committed, "stage failed; restarting the pipeline");
            match Self::start_pipeline(myself, st).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    myself.stop_children(Some("restarting".into()));
                    st.last_error = spawn_error_text(&e);
                }
            }
        }
    }

    /// Lane `lane` of model `index` crashed with `error`: replace its actor
    /// (see the module doc).
    async fn restart_model(
        myself: &ActorRef<ShardMsg>,
        st: &mut SupervisorState,
        index: usize,
        lane: usize,
        error: String,
    ) -> Result<(), ActorProcessingErr> {
        let name = st.model_name(index);
        let crash = match st.models.crashed_on(index, lane) {
            Some(frame) => format!("{name} failed on frame {frame}: {error}"),
            None => format!("{name} failed: {error}"),
        };
        // A model that keeps crashing without analysing any frame in between
        // is broken, not unlucky: stop after `max_restarts` restarts in a row.
        // Sporadic crashes (a bad frame now and then) never fail the shard.
        if st.models.crashes_in_a_row(index) >= st.job.settings.max_restarts {
            st.last_error = format!(
                "model {name} crashed {} times in a row with no frame analysed in between, more than worker.max_restarts ({}) allows; the last crash: {crash}",
                st.models.crashes_in_a_row(index) + 1,
                st.job.settings.max_restarts
            );
            Self::give_up(myself, st).await;
            return Ok(());
        }
        st.model_restarts += 1;
        st.model_metrics[index].restarts.inc_by(1);

        match st.models.crashed(index, lane) {
            Crashed::Again { frame } => {
                // The second crash on this frame: it gets an error result and
                // the new actor goes on with the next frames.
                st.model_metrics[index].errors.inc_by(1);
                warn!(model = %name, frame, error = %error, restart = st.model_restarts, "model actor crashed again on the retried frame; recording a per-frame error and restarting it");
                if let Some(r) = &st.reporter {
                    let results_json = json!({ "error": crash }).to_string();
                    // If the reporter is gone its own failure rebuilds the pipeline.
                    let _ = r.send_message(ReporterMsg::Output { frame, model: index, results_json, error: true, secs: 0.0 });
                }
                Self::frame_answered(st, frame);
            }
            Crashed::First { frame } => {
                warn!(model = %name, frame, error = %error, restart = st.model_restarts, "model actor crashed; restarting it and retrying the frame once");
            }
            Crashed::Idle => warn!(model = %name, error = %error, restart = st.model_restarts, "model actor crashed between frames; restarting it"),
        }

        let actor = match Self::spawn_model(myself, st, index, lane).await {
            Ok(a) => a,
            Err(e) => {
                let error = format!("could not restart the actor of model {name}: {}", spawn_error_text(&e));
                return Self::on_failure(myself, st, error).await;
            }
        };
        st.models.replace(index, lane, actor);
        Self::end_model_if_done(st, index);
        Ok(())
    }

    /// Model results for `frame` were passed on: once every model answered
    /// it, a live shard's decoder may send the next frame (`latest` policy).
    fn frame_answered(st: &SupervisorState, frame: u64) {
        if !st.job.kind.is_live() || !st.models.all_answered(frame) {
            return;
        }
        if let Some(d) = &st.decoder {
            let _ = d.send_message(DecoderMsg::Analysed);
        }
    }

    /// Once the resizer has sent its last frame and model `index` answered
    /// every frame, tell the reporter this model is done.
    fn end_model_if_done(st: &mut SupervisorState, index: usize) {
        let (Some(next_frame), Some(reporter)) = (st.frames_end, &st.reporter) else { return };
        if st.models.take_end(index) {
            let _ = reporter.send_message(ReporterMsg::End { next_frame });
        }
    }

    /// Report the shard failed with the last error and stop.
    async fn give_up(myself: &ActorRef<ShardMsg>, st: &mut SupervisorState) {
        shard_ended("failed");
        warn!(error = %st.last_error, restarts = st.restarts, model_restarts = st.model_restarts, "shard failed; reporting it");
        myself.stop_children(Some("failed".into()));
        Self::forget_pipeline(st);
        let req = st.job.report(vec![], st.committed, false, st.last_error.clone(), None);
        if let Err(e) = send_report(&st.job.sink, req).await {
            warn!(error = %e, "could not report the failure; the lease will expire instead");
        }
        myself.stop(Some("failed".into()));
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
        let model_metrics = (0..job.analyses.len())
            .map(|i| SupervisedModelMetrics::new(job.assignment.models.get(i).map_or_else(|| job.analyses[i].name(), String::as_str)))
            .collect();
        Ok(SupervisorState {
            span: job.span(),
            model_metrics,
            pipeline_restarts: panoptes_common::metrics::counter(PIPELINE_RESTARTS, &[]),
            job,
            gen: 0,
            stages: HashSet::new(),
            decoder: None,
            reporter: None,
            models: FanOut::default(),
            frames_end: None,
            committed,
            restarts: 0,
            model_restarts: 0,
            last_error: String::new(),
        })
    }

    async fn post_start(&self, myself: ActorRef<ShardMsg>, st: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        let span = st.span.clone();
        async move {
            let a = &st.job.assignment;
            info!(epoch = a.epoch, from = a.resume_frame, to = a.end_frame, source = %panoptes_media::policy::redact(&a.source), models = ?a.models, "shard started");
            if let Err(e) = Self::start_pipeline(&myself, st).await {
                Self::on_failure(&myself, st, spawn_error_text(&e)).await?;
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn handle(&self, myself: ActorRef<ShardMsg>, msg: ShardMsg, st: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        let span = st.span.clone();
        let r = Self::on_message(&myself, msg, st).instrument(span).await;
        st.update_queues();
        r
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ShardMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let span = st.span.clone();
        let r = Self::on_supervision(&myself, evt, st).instrument(span).await;
        st.update_queues();
        r
    }
}

impl ShardSupervisor {
    async fn on_message(myself: &ActorRef<ShardMsg>, msg: ShardMsg, st: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Frame { gen, frame, rgb } if gen == st.gen => {
                st.models.send(frame, &rgb);
            }
            ShardMsg::FramesEnd { gen, next_frame } if gen == st.gen => {
                st.frames_end = Some(next_frame);
                for index in 0..st.models.models() {
                    Self::end_model_if_done(st, index);
                }
            }
            ShardMsg::Output { gen, frame, model, lane, results_json, secs } if gen == st.gen => {
                if !st.models.answered(model, lane, frame) {
                    debug!(model, lane, frame, "result for a frame already answered; ignored");
                    return Ok(());
                }
                if let Some(r) = &st.reporter {
                    let _ = r.send_message(ReporterMsg::Output { frame, model, results_json, error: false, secs });
                }
                Self::frame_answered(st, frame);
                Self::end_model_if_done(st, model);
            }
            ShardMsg::RestartModel { gen, model, lane, error } if gen == st.gen => Self::restart_model(myself, st, model, lane, error).await?,
            ShardMsg::Acked { gen, next_frame, frames, end_frame } if gen == st.gen => {
                st.committed = st.committed.max(next_frame);
                let cut = end_frame > 0 && end_frame < st.job.assignment.end_frame && !st.job.kind.is_live();
                let step = st.job.assignment.frame_step.max(1);
                if cut && st.committed.div_ceil(step) * step >= end_frame {
                    // Work stealing cut the shard at `end_frame` and every
                    // analysed frame before it is committed: the coordinator
                    // has marked it done; the rest is another worker's.
                    shard_ended("finished");
                    info!(end_frame, "shard finished: cut short by work stealing, the frames after it went to another worker");
                    myself.stop(Some("finished".into()));
                    return Ok(());
                }
                if let Some(d) = &st.decoder {
                    if cut {
                        let _ = d.send_message(DecoderMsg::Cut(end_frame));
                    }
                    let _ = d.send_message(DecoderMsg::Pull(frames));
                }
            }
            ShardMsg::Finished { gen } if gen == st.gen => {
                shard_ended("finished");
                info!(model_restarts = st.model_restarts, restarts = st.restarts, "shard finished");
                myself.stop(Some("finished".into()));
            }
            ShardMsg::LeaseLost { gen, reason } if gen == st.gen => {
                panoptes_common::metrics::inc(LEASES_LOST, &[], 1);
                shard_ended("lease_lost");
                warn!(%reason, "lease lost; stopping the shard");
                myself.stop(Some("lease lost".into()));
            }
            ShardMsg::StageError { gen, error } if gen == st.gen => Self::on_failure(myself, st, error).await?,
            _ => {} // from an earlier generation
        }
        Ok(())
    }

    async fn on_supervision(myself: &ActorRef<ShardMsg>, evt: SupervisionEvent, st: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            let id = cell.get_id();
            if let Some((index, lane)) = st.models.lane_failed(id) {
                // Restart it from a message, so that the results the dead actor
                // sent before crashing (queued before that message) come first.
                let _ = myself.send_message(ShardMsg::RestartModel { gen: st.gen, model: index, lane, error: err.to_string() });
            } else if st.stages.contains(&id) {
                Self::on_failure(myself, st, err.to_string()).await?;
            }
        }
        Ok(())
    }
}
