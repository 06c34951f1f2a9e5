//! Shard supervisor: owns one shard's pipeline and restarts what crashes.
//!
//! Model actors are supervised one by one. Every frame reaches the model
//! actors through the supervisor, which keeps, per model, the frames sent to
//! that model's actor whose result it has not yet passed on to the reporter
//! (at most `pipeline_depth` frames, by the credit flow control). When a model
//! actor crashes (its analysis panicked or returned an error; the actor does
//! not catch either), ractor reports the failure here and the supervisor:
//! - starts a fresh actor for that model (same index, same analysis) and
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
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use panoptes_media::RgbFrame;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::json;
use tracing::{debug, info, warn, Instrument};

use super::decoder::{DecoderActor, DecoderArgs};
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
    /// The current pipeline's model actors, in the job's model order.
    models: Vec<ModelSlot>,
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
    pipeline_restarts: Arc<AtomicU64>,
}

impl SupervisorState {
    /// Model `index`'s name in the job.
    fn model_name(&self, index: usize) -> String {
        self.job.assignment.models.get(index).cloned().unwrap_or_else(|| self.job.analyses[index].name().to_string())
    }

    /// Publish this shard's per-model queue depths.
    fn update_queues(&mut self) {
        for (i, m) in self.model_metrics.iter_mut().enumerate() {
            m.queue.set(self.models.get(i).map_or(0, |s| s.unanswered.len()) as f64);
        }
    }
}

/// One model's actor and the frames it has not answered yet.
struct ModelSlot {
    /// `None` from the actor's crash until its replacement is started.
    actor: Option<ActorRef<ModelMsg>>,
    /// Frames sent to this model's actor whose result has not been passed to
    /// the reporter, oldest first (a model actor answers in order).
    unanswered: VecDeque<Unanswered>,
    /// The reporter was told this model has no more results.
    end_sent: bool,
    /// Crashes of this model since its last successful result.
    crashes_in_a_row: u32,
}

struct Unanswered {
    frame: u64,
    rgb: Arc<RgbFrame>,
    /// An actor for this model already crashed on this frame.
    crashed: bool,
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
        for index in 0..st.job.analyses.len() {
            let actor = Self::spawn_model(myself, st, index).await?;
            st.models.push(ModelSlot { actor: Some(actor), unanswered: VecDeque::new(), end_sent: false, crashes_in_a_row: 0 });
        }
        let target_height = st.job.assignment.target_height;
        let a = &st.job.assignment;
        let picture = (a.frames_height, a.frames_quality);
        let rate = PictureRate::new(a.frames_every_ms, a.frame_step, a.fps);
        let (resizer, _) = Actor::spawn_linked(None, ResizerActor, ResizerArgs { target_height, picture, rate, links, reporter }, cell.clone()).await?;
        st.stages.insert(resizer.get_id());
        let (decoder, _) =
            Actor::spawn_linked(None, DecoderActor, DecoderArgs { job: st.job.clone(), resume: st.committed, resizer, span: st.span.clone() }, cell)
                .await?;
        st.stages.insert(decoder.get_id());
        decoder.send_message(DecoderMsg::Pull(st.job.depth))?;
        st.decoder = Some(decoder);
        Ok(())
    }

    async fn spawn_model(myself: &ActorRef<ShardMsg>, st: &SupervisorState, index: usize) -> Result<ActorRef<ModelMsg>, ActorProcessingErr> {
        let args = ModelArgs {
            index,
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
            if st.restarts >= st.job.max_restarts {
                Self::give_up(myself, st).await;
                return Ok(());
            }
            st.restarts += 1;
            st.pipeline_restarts.fetch_add(1, Ordering::Relaxed);
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

    /// Model actor `index` crashed with `error`: replace it (see the module doc).
    async fn restart_model(
        myself: &ActorRef<ShardMsg>,
        st: &mut SupervisorState,
        index: usize,
        error: String,
    ) -> Result<(), ActorProcessingErr> {
        let name = st.model_name(index);
        let crash = match st.models[index].unanswered.front() {
            Some(first) => format!("{name} failed on frame {}: {error}", first.frame),
            None => format!("{name} failed: {error}"),
        };
        // A model that keeps crashing without analysing any frame in between
        // is broken, not unlucky: stop after `max_restarts` restarts in a row.
        // Sporadic crashes (a bad frame now and then) never fail the shard.
        if st.models[index].crashes_in_a_row >= st.job.max_restarts {
            st.last_error = format!(
                "model {name} crashed {} times in a row with no frame analysed in between, more than worker.max_restarts ({}) allows; the last crash: {crash}",
                st.models[index].crashes_in_a_row + 1,
                st.job.max_restarts
            );
            Self::give_up(myself, st).await;
            return Ok(());
        }
        st.model_restarts += 1;
        st.models[index].crashes_in_a_row += 1;
        st.model_metrics[index].restarts.fetch_add(1, Ordering::Relaxed);

        let slot = &mut st.models[index];
        match slot.unanswered.front_mut() {
            Some(first) if first.crashed => {
                // The second crash on this frame: it gets an error result and
                // the new actor goes on with the next frames.
                let frame = first.frame;
                slot.unanswered.pop_front();
                st.model_metrics[index].errors.fetch_add(1, Ordering::Relaxed);
                warn!(model = %name, frame, error = %error, restart = st.model_restarts, "model actor crashed again on the retried frame; recording a per-frame error and restarting it");
                if let Some(r) = &st.reporter {
                    let results_json = json!({ "error": crash }).to_string();
                    // If the reporter is gone its own failure rebuilds the pipeline.
                    let _ = r.send_message(ReporterMsg::Output { frame, model: index, results_json, secs: 0.0 });
                }
            }
            Some(first) => {
                first.crashed = true;
                warn!(model = %name, frame = first.frame, error = %error, restart = st.model_restarts, "model actor crashed; restarting it and retrying the frame once");
            }
            None => warn!(model = %name, error = %error, restart = st.model_restarts, "model actor crashed between frames; restarting it"),
        }

        let actor = match Self::spawn_model(myself, st, index).await {
            Ok(a) => a,
            Err(e) => {
                let error = format!("could not restart the actor of model {name}: {}", spawn_error_text(&e));
                return Self::on_failure(myself, st, error).await;
            }
        };
        let slot = &mut st.models[index];
        for u in &slot.unanswered {
            // A send fails only if the new actor already died; its failure comes here too.
            let _ = actor.send_message(ModelMsg::Analyze { frame: u.frame, rgb: u.rgb.clone(), retry: u.crashed });
        }
        slot.actor = Some(actor);
        Self::end_model_if_done(st, index);
        Ok(())
    }

    /// Once the resizer has sent its last frame and model `index` answered
    /// every frame, tell the reporter this model is done.
    fn end_model_if_done(st: &mut SupervisorState, index: usize) {
        let (Some(next_frame), Some(reporter)) = (st.frames_end, &st.reporter) else { return };
        let slot = &mut st.models[index];
        if slot.unanswered.is_empty() && !slot.end_sent {
            slot.end_sent = true;
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
        if let Err(e) = send_report(&st.job, req).await {
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
            models: Vec::new(),
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
                for slot in &mut st.models {
                    if let Some(actor) = &slot.actor {
                        // Sent to an actor that has just crashed, the frame is
                        // lost from its mailbox but kept below for its replacement.
                        let _ = actor.send_message(ModelMsg::Analyze { frame, rgb: rgb.clone(), retry: false });
                    }
                    slot.unanswered.push_back(Unanswered { frame, rgb: rgb.clone(), crashed: false });
                }
            }
            ShardMsg::FramesEnd { gen, next_frame } if gen == st.gen => {
                st.frames_end = Some(next_frame);
                for index in 0..st.models.len() {
                    Self::end_model_if_done(st, index);
                }
            }
            ShardMsg::Output { gen, frame, model, results_json, secs } if gen == st.gen => {
                let Some(slot) = st.models.get_mut(model) else { return Ok(()) };
                let Some(pos) = slot.unanswered.iter().position(|u| u.frame == frame) else {
                    debug!(model, frame, "result for a frame already answered; ignored");
                    return Ok(());
                };
                slot.unanswered.remove(pos);
                slot.crashes_in_a_row = 0;
                if let Some(r) = &st.reporter {
                    let _ = r.send_message(ReporterMsg::Output { frame, model, results_json, secs });
                }
                Self::end_model_if_done(st, model);
            }
            ShardMsg::RestartModel { gen, model, error } if gen == st.gen => Self::restart_model(myself, st, model, error).await?,
            ShardMsg::Acked { gen, next_frame, frames } if gen == st.gen => {
                st.committed = st.committed.max(next_frame);
                if let Some(d) = &st.decoder {
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
            let model = st.models.iter().position(|m| m.actor.as_ref().is_some_and(|a| a.get_id() == id));
            if let Some(index) = model {
                st.models[index].actor = None;
                // Restart it from a message, so that the results the dead actor
                // sent before crashing (queued before that message) come first.
                let _ = myself.send_message(ShardMsg::RestartModel { gen: st.gen, model: index, error: err.to_string() });
            } else if st.stages.contains(&id) {
                Self::on_failure(myself, st, err.to_string()).await?;
            }
        }
        Ok(())
    }
}
