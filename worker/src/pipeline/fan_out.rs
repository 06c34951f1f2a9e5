//! The model fan-out of one shard's pipeline ([`FanOut`]): every frame goes
//! to one lane of each model (the lane with the fewest frames waiting), and
//! each lane keeps the frames it was sent and has not answered, so that a
//! crashed lane's replacement gets them again in order. The supervisor
//! decides what a crash means (`supervisor.rs`); this type only keeps count.
use std::collections::VecDeque;
use std::sync::Arc;

use panoptes_media::RgbFrame;
use ractor::{ActorId, ActorRef};

use super::ModelMsg;

/// Every model's lanes, in the job's model order.
#[derive(Default)]
pub(super) struct FanOut {
    models: Vec<ModelSlot>,
}

/// One model's lanes.
struct ModelSlot {
    lanes: Vec<Lane>,
    /// The reporter was told this model has no more results.
    end_sent: bool,
    /// Crashes of this model (any lane) since its last successful result.
    crashes_in_a_row: u32,
}

/// One model actor and the frames it has not answered yet.
struct Lane {
    /// `None` from the actor's crash until its replacement is started.
    actor: Option<ActorRef<ModelMsg>>,
    /// Frames sent to this lane's actor whose result has not been passed to
    /// the reporter, oldest first (a model actor answers in order).
    unanswered: VecDeque<Unanswered>,
}

struct Unanswered {
    frame: u64,
    rgb: Arc<RgbFrame>,
    /// An actor for this model already crashed on this frame.
    crashed: bool,
}

/// What a lane's crash left: the frame it was working on, if any, and
/// whether an actor had already crashed on that frame before.
pub(super) enum Crashed {
    /// Between frames.
    Idle,
    /// On `frame`, the first time: it is retried once.
    First { frame: u64 },
    /// On `frame` again: it is taken out (it gets an error result) and the
    /// lane goes on with the next frames.
    Again { frame: u64 },
}

impl FanOut {
    /// A model with `lanes` actors (the next model in the job's order).
    pub(super) fn add_model(&mut self, lanes: Vec<ActorRef<ModelMsg>>) {
        let lanes = lanes.into_iter().map(|a| Lane { actor: Some(a), unanswered: VecDeque::new() }).collect();
        self.models.push(ModelSlot { lanes, end_sent: false, crashes_in_a_row: 0 });
    }

    /// Forget every lane (the pipeline is rebuilt).
    pub(super) fn clear(&mut self) {
        self.models.clear();
    }

    pub(super) fn models(&self) -> usize {
        self.models.len()
    }

    /// Send `frame` to the least busy lane of every model.
    pub(super) fn send(&mut self, frame: u64, rgb: &Arc<RgbFrame>) {
        for slot in &mut self.models {
            let i = (0..slot.lanes.len()).min_by_key(|&i| slot.lanes[i].unanswered.len()).unwrap_or(0);
            let lane = &mut slot.lanes[i];
            if let Some(actor) = &lane.actor {
                // Sent to an actor that has just crashed, the frame is lost
                // from its mailbox but kept below for its replacement.
                let _ = actor.send_message(ModelMsg::Analyze { frame, rgb: rgb.clone(), retry: false });
            }
            lane.unanswered.push_back(Unanswered { frame, rgb: rgb.clone(), crashed: false });
        }
    }

    /// Lane `lane` of `model` answered `frame`: false when it had no such
    /// frame waiting (already answered).
    pub(super) fn answered(&mut self, model: usize, lane: usize, frame: u64) -> bool {
        let Some(slot) = self.models.get_mut(model) else { return false };
        let Some(l) = slot.lanes.get_mut(lane) else { return false };
        let Some(pos) = l.unanswered.iter().position(|u| u.frame == frame) else { return false };
        l.unanswered.remove(pos);
        slot.crashes_in_a_row = 0;
        true
    }

    /// No model has `frame` waiting.
    pub(super) fn all_answered(&self, frame: u64) -> bool {
        !self.models.iter().any(|m| m.lanes.iter().any(|l| l.unanswered.iter().any(|u| u.frame == frame)))
    }

    /// Frames sent to `model` and not answered yet.
    pub(super) fn waiting(&self, model: usize) -> usize {
        self.models.get(model).map_or(0, |m| m.lanes.iter().map(|l| l.unanswered.len()).sum())
    }

    /// True once, when `model` has nothing waiting: the caller tells the
    /// reporter this model ended.
    pub(super) fn take_end(&mut self, model: usize) -> bool {
        let waiting = self.waiting(model);
        let Some(slot) = self.models.get_mut(model) else { return false };
        if waiting == 0 && !slot.end_sent {
            slot.end_sent = true;
            return true;
        }
        false
    }

    /// The (model, lane) whose actor is `id`; its actor is forgotten (it
    /// failed).
    pub(super) fn lane_failed(&mut self, id: ActorId) -> Option<(usize, usize)> {
        for (m, slot) in self.models.iter_mut().enumerate() {
            if let Some(lane) = slot.lanes.iter().position(|l| l.actor.as_ref().is_some_and(|a| a.get_id() == id)) {
                slot.lanes[lane].actor = None;
                return Some((m, lane));
            }
        }
        None
    }

    /// The frame lane `lane` of `model` was working on when it crashed.
    pub(super) fn crashed_on(&self, model: usize, lane: usize) -> Option<u64> {
        self.models[model].lanes[lane].unanswered.front().map(|u| u.frame)
    }

    /// Crashes of `model` since its last result.
    pub(super) fn crashes_in_a_row(&self, model: usize) -> u32 {
        self.models[model].crashes_in_a_row
    }

    /// Count a crash of lane `lane` of `model` and mark or take out the
    /// frame it was working on (see [`Crashed`]).
    pub(super) fn crashed(&mut self, model: usize, lane: usize) -> Crashed {
        let slot = &mut self.models[model];
        slot.crashes_in_a_row += 1;
        let l = &mut slot.lanes[lane];
        match l.unanswered.front_mut() {
            Some(first) if first.crashed => {
                let frame = first.frame;
                l.unanswered.pop_front();
                Crashed::Again { frame }
            }
            Some(first) => {
                first.crashed = true;
                Crashed::First { frame: first.frame }
            }
            None => Crashed::Idle,
        }
    }

    /// A crashed lane's replacement: it is sent the lane's unanswered frames
    /// again, in order, the one its predecessor crashed on marked as a retry.
    pub(super) fn replace(&mut self, model: usize, lane: usize, actor: ActorRef<ModelMsg>) {
        let l = &mut self.models[model].lanes[lane];
        for u in &l.unanswered {
            // A send fails only if the new actor already died; its failure comes here too.
            let _ = actor.send_message(ModelMsg::Analyze { frame: u.frame, rgb: u.rgb.clone(), retry: u.crashed });
        }
        l.actor = Some(actor);
    }
}
