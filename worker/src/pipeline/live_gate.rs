//! Which frames of a live stream go on to analysis ([`LiveGate`]), under the
//! shard's pipeline credit and the `[live] drop_policy`. Pure: the source
//! actor (`decoder.rs`) feeds it what happens (a frame arrived, credit came
//! back, every model answered a frame, the stream ended, time passed) and
//! carries out the steps it returns.
//!
//! - `latest` (the default): a frame goes on as soon as a lane of every
//!   model is free and the shard has credit; at most one frame waits, and a
//!   newer one replaces it (the replaced one is dropped: "replaced").
//! - `lag`: frames wait in arrival order for credit; one that has waited
//!   longer than `max_lag` is dropped ("lag"), and more than
//!   [`LAG_MAX_WAITING`] are dropped oldest first ("full").
//! - `every_nth`: one analysed frame in `keep_every` (of those `frame_step`
//!   keeps) is kept, the others dropped ("every_nth"); a kept frame that
//!   finds no credit is dropped at once ("full").
//!
//! The stream's end goes on once no frame waits.
use std::collections::VecDeque;
use std::time::Instant;

use super::DropPolicy;

/// `lag` policy: at most this many decoded frames wait for credit (memory
/// bound when max_lag_ms is long and frames are large); more are dropped
/// oldest first, as `full`.
pub(super) const LAG_MAX_WAITING: usize = 32;

/// A frame at the gate: its number, the frame itself, its decoding time
/// and when it arrived.
pub(super) struct Arrival<F> {
    pub(super) index: u64,
    pub(super) frame: F,
    pub(super) decode_s: f64,
    pub(super) arrived: Instant,
}

/// What the source actor does next.
pub(super) enum Step<F> {
    /// Send this frame to analysis (its credit is taken).
    Forward(Arrival<F>),
    /// This frame is not analysed, for `reason` (the metric's label).
    Drop { index: u64, reason: &'static str },
    /// Every frame before `next_frame` went on or was dropped: end the shard.
    End { next_frame: u64 },
}

pub(super) struct LiveGate<F> {
    policy: DropPolicy,
    /// Frames the pipeline may take now (`pipeline_depth`, given back as
    /// results are acknowledged).
    credit: u64,
    /// `latest`: lanes per model, and the frames sent on whose every model
    /// has not answered yet.
    lanes: usize,
    busy: usize,
    /// `frame_step`: `every_nth` counts analysed frames, not decoded ones.
    step: u64,
    waiting: VecDeque<Arrival<F>>,
    /// The stream ended at this frame; `End` follows the waiting frames.
    ended: Option<u64>,
    pub(super) forwarded: u64,
    pub(super) dropped: u64,
}

impl<F> LiveGate<F> {
    pub(super) fn new(policy: DropPolicy, lanes: usize, step: u64) -> Self {
        LiveGate { policy, credit: 0, lanes: lanes.max(1), busy: 0, step: step.max(1), waiting: VecDeque::new(), ended: None, forwarded: 0, dropped: 0 }
    }

    /// A frame arrived from the stream.
    pub(super) fn arrived(&mut self, a: Arrival<F>, now: Instant) -> Vec<Step<F>> {
        let mut out = Vec::new();
        match self.policy {
            DropPolicy::Latest => {
                if let Some(old) = self.waiting.pop_front() {
                    out.push(self.drop(old.index, "replaced"));
                }
                self.waiting.push_back(a);
            }
            DropPolicy::Lag { .. } => self.waiting.push_back(a),
            DropPolicy::EveryNth { keep_every } => {
                if (a.index / self.step) % keep_every != 0 {
                    out.push(self.drop(a.index, "every_nth"));
                } else if self.credit > 0 {
                    self.credit -= 1;
                    self.forwarded += 1;
                    out.push(Step::Forward(a));
                } else {
                    out.push(self.drop(a.index, "full"));
                }
            }
        }
        self.pump(now, &mut out);
        out
    }

    /// `n` more frames may go to analysis.
    pub(super) fn credit(&mut self, n: u64, now: Instant) -> Vec<Step<F>> {
        self.credit += n;
        let mut out = Vec::new();
        self.pump(now, &mut out);
        out
    }

    /// Every model answered a frame sent on: a lane of each is free again.
    pub(super) fn analysed(&mut self, now: Instant) -> Vec<Step<F>> {
        self.busy = self.busy.saturating_sub(1);
        let mut out = Vec::new();
        self.pump(now, &mut out);
        out
    }

    /// The stream ended: every frame before `next_frame` has arrived.
    pub(super) fn ended(&mut self, next_frame: u64, now: Instant) -> Vec<Step<F>> {
        self.ended = Some(next_frame);
        let mut out = Vec::new();
        self.pump(now, &mut out);
        out
    }

    /// Time passed (`lag`: waiting frames age out).
    pub(super) fn tick(&mut self, now: Instant) -> Vec<Step<F>> {
        let mut out = Vec::new();
        self.pump(now, &mut out);
        out
    }

    /// The stream has ended and frames still wait (the caller ticks until
    /// they went on or aged out).
    pub(super) fn is_ending(&self) -> bool {
        self.ended.is_some() && !self.waiting.is_empty()
    }

    fn drop(&mut self, index: u64, reason: &'static str) -> Step<F> {
        self.dropped += 1;
        Step::Drop { index, reason }
    }

    /// Send on what may go, then the end once nothing waits.
    fn pump(&mut self, now: Instant, out: &mut Vec<Step<F>>) {
        match self.policy {
            DropPolicy::Latest => {
                if self.busy < self.lanes && self.credit > 0 {
                    if let Some(a) = self.waiting.pop_front() {
                        self.credit -= 1;
                        self.busy += 1;
                        self.forwarded += 1;
                        out.push(Step::Forward(a));
                    }
                }
            }
            DropPolicy::Lag { max_lag } => {
                while let Some(a) = self.waiting.front() {
                    let reason = if now.saturating_duration_since(a.arrived) > max_lag {
                        "lag"
                    } else if self.waiting.len() > LAG_MAX_WAITING {
                        "full"
                    } else {
                        break;
                    };
                    let index = a.index;
                    self.waiting.pop_front();
                    out.push(self.drop(index, reason));
                }
                while self.credit > 0 {
                    let Some(a) = self.waiting.pop_front() else { break };
                    self.credit -= 1;
                    self.forwarded += 1;
                    out.push(Step::Forward(a));
                }
            }
            DropPolicy::EveryNth { .. } => {}
        }
        if self.waiting.is_empty() {
            if let Some(next_frame) = self.ended.take() {
                out.push(Step::End { next_frame });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(index: u64, arrived: Instant) -> Arrival<()> {
        Arrival { index, frame: (), decode_s: 0.0, arrived }
    }

    /// The steps as (what, frame): forwarded "f", dropped by reason, ended "end".
    fn seen(steps: Vec<Step<()>>) -> Vec<(String, u64)> {
        steps
            .into_iter()
            .map(|s| match s {
                Step::Forward(a) => ("f".to_string(), a.index),
                Step::Drop { index, reason } => (reason.to_string(), index),
                Step::End { next_frame } => ("end".to_string(), next_frame),
            })
            .collect()
    }

    fn s(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        v.iter().map(|(a, b)| (a.to_string(), *b)).collect()
    }

    #[test]
    fn latest_keeps_the_newest_frame_and_sends_it_when_a_lane_and_credit_are_free() {
        let t = Instant::now();
        let mut g = LiveGate::new(DropPolicy::Latest, 1, 1);
        assert!(seen(g.arrived(at(0, t), t)).is_empty(), "no credit yet: it waits");
        assert_eq!(seen(g.arrived(at(1, t), t)), s(&[("replaced", 0)]));
        assert_eq!(seen(g.credit(8, t)), s(&[("f", 1)]));
        // The one lane is busy: 2 waits, 3 replaces it.
        assert!(seen(g.arrived(at(2, t), t)).is_empty());
        assert_eq!(seen(g.arrived(at(3, t), t)), s(&[("replaced", 2)]));
        assert_eq!(seen(g.analysed(t)), s(&[("f", 3)]));
        // The end follows the waiting frame.
        assert!(seen(g.arrived(at(4, t), t)).is_empty());
        assert!(seen(g.ended(5, t)).is_empty(), "frame 4 still waits");
        assert_eq!(seen(g.analysed(t)), s(&[("f", 4), ("end", 5)]));
        assert_eq!((g.forwarded, g.dropped), (3, 2));
    }

    #[test]
    fn lag_holds_frames_for_credit_and_drops_those_older_than_max_lag() {
        let t = Instant::now();
        let max_lag = Duration::from_millis(100);
        let mut g = LiveGate::new(DropPolicy::Lag { max_lag }, 1, 1);
        assert!(seen(g.arrived(at(0, t), t)).is_empty());
        assert!(seen(g.arrived(at(1, t + Duration::from_millis(50)), t + Duration::from_millis(50))).is_empty());
        // At 120 ms frame 0 is too old; frame 1 (70 ms) goes on with the credit.
        let later = t + Duration::from_millis(120);
        assert_eq!(seen(g.credit(1, later)), s(&[("lag", 0), ("f", 1)]));
        // Frames beyond LAG_MAX_WAITING are dropped oldest first.
        let mut dropped = Vec::new();
        for i in 2..2 + LAG_MAX_WAITING as u64 + 3 {
            dropped.extend(seen(g.arrived(at(i, later), later)));
        }
        assert_eq!(dropped, s(&[("full", 2), ("full", 3), ("full", 4)]));
        // After the end, the waiting frames age out, then the end goes on.
        assert!(seen(g.ended(99, later)).is_empty());
        assert!(g.is_ending());
        let steps = seen(g.tick(later + max_lag + Duration::from_millis(1)));
        assert_eq!(steps.len(), LAG_MAX_WAITING + 1);
        assert!(steps[..LAG_MAX_WAITING].iter().all(|(r, _)| r == "lag"));
        assert_eq!(steps[LAG_MAX_WAITING], ("end".to_string(), 99));
    }

    #[test]
    fn every_nth_keeps_one_analysed_frame_in_n_and_drops_a_kept_one_without_credit() {
        let t = Instant::now();
        // frame_step 2: frames 0, 2, 4, 6 arrive; keep one in 2 of them.
        let mut g = LiveGate::new(DropPolicy::EveryNth { keep_every: 2 }, 1, 2);
        g.credit(1, t);
        assert_eq!(seen(g.arrived(at(0, t), t)), s(&[("f", 0)]));
        assert_eq!(seen(g.arrived(at(2, t), t)), s(&[("every_nth", 2)]));
        assert_eq!(seen(g.arrived(at(4, t), t)), s(&[("full", 4)]), "no credit left");
        assert_eq!(seen(g.arrived(at(6, t), t)), s(&[("every_nth", 6)]));
        assert_eq!(seen(g.ended(8, t)), s(&[("end", 8)]));
    }
}
