//! A job's alert rules: the leader's evaluations, recorded once each.
use panoptes_common::rules::{Fired, RuleState};

use super::{Applied, Changes, State};
use crate::state::command::Response;
use crate::state::model::MAX_ALERTS_KEPT;
use crate::state::outcome::Rejection;

impl State {
    /// Record an evaluation of frames `[from, upto)`: only one that starts
    /// where the last ended (see `Request::Alerts`).
    pub(super) fn alerts(&mut self, job: u64, from: u64, upto: u64, states: &[RuleState], fired: &[Fired], ch: &mut Changes) -> Applied {
        let j = self.jobs.get_mut(&job).ok_or_else(|| Rejection::unknown(format!("no job {job}")))?;
        if j.alerts.upto != from {
            return Err(Rejection::stale(format!("job {job}'s rules stand at frame {}, not {from}", j.alerts.upto)));
        }
        if upto < from || states.len() != j.spec.rules.len() {
            return Err(Rejection::invalid(format!("an evaluation of frames {from}..{upto} with {} rule states for {} rules", states.len(), j.spec.rules.len())));
        }
        let a = &mut j.alerts;
        a.upto = upto;
        a.states = states.to_vec();
        for f in fired {
            if a.fired.len() < MAX_ALERTS_KEPT {
                a.fired.push(f.clone());
            } else {
                a.dropped += 1;
            }
        }
        ch.jobs.insert(job);
        Ok(Response::Ok)
    }

    /// A sink acknowledged alerts up to `upto` (see `Request::Delivered`).
    pub(super) fn delivered(&mut self, job: u64, sink: &str, upto: u64, skipped: u64, ch: &mut Changes) -> Applied {
        let j = self.jobs.get_mut(&job).ok_or_else(|| Rejection::unknown(format!("no job {job}")))?;
        let a = &mut j.alerts;
        let recorded = a.fired.len() as u64;
        let at = a.delivered.get(sink).copied().unwrap_or(0);
        if upto <= at {
            return Err(Rejection::stale(format!("{sink} has job {job}'s alerts up to {at} already")));
        }
        if upto > recorded {
            return Err(Rejection::invalid(format!("{sink} cannot have alert {upto} of job {job}: {recorded} are recorded")));
        }
        a.delivered.insert(sink.to_string(), upto);
        if skipped > 0 {
            *a.skipped.entry(sink.to_string()).or_default() += skipped;
        }
        ch.jobs.insert(job);
        Ok(Response::Ok)
    }
}
