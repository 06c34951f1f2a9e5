//! A job's analytics (issue 18): the leader's evaluations (tracks, then
//! alert rules), each recorded once; deliveries of what they recorded; zones
//! added while the job runs.
use panoptes_common::rules::{Fired, RuleState};
use panoptes_common::zones::{check_names, JobZone, Zone};

use super::{Applied, Changes, ResultSink, State};
use crate::state::command::{Response, Stream, Tracked};
use crate::state::model::{JobState, MAX_ALERTS_KEPT};
use crate::state::outcome::Rejection;

impl State {
    /// Record an evaluation of frames `[from, upto)`: only one that starts
    /// where the last ended (see `Request::Analytics`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn analytics(&mut self, job: u64, from: u64, upto: u64, states: &[RuleState], fired: &[Fired], tracked: &Tracked, sink: &mut dyn ResultSink, ch: &mut Changes) -> Applied {
        let j = self.jobs.get_mut(&job).ok_or_else(|| Rejection::unknown(format!("no job {job}")))?;
        if j.alerts.upto != from || (j.tracking.closed && !tracked.events.is_empty()) {
            return Err(Rejection::stale(format!("job {job}'s analytics stand at frame {}, not {from}", j.alerts.upto)));
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
        j.tracking = tracked.tracker.clone();
        for (frame, model, marks) in &tracked.marks {
            // Frames retention has deleted keep nothing.
            if *frame >= j.trimmed_before || !j.spec.keep_what.results() {
                sink.put_marks(job, *frame, *model, marks);
            }
        }
        for e in &tracked.events {
            j.track_events.recorded += 1;
            sink.put_track_event(job, j.track_events.recorded, e);
        }
        ch.jobs.insert(job);
        Ok(Response::Ok)
    }

    /// A sink acknowledged alerts or track events up to `upto` (see `Request::Delivered`).
    pub(super) fn delivered(&mut self, job: u64, sink: &str, stream: Stream, upto: u64, skipped: u64, ch: &mut Changes) -> Applied {
        let j = self.jobs.get_mut(&job).ok_or_else(|| Rejection::unknown(format!("no job {job}")))?;
        let (recorded, delivered, skips) = match stream {
            Stream::Alerts => (j.alerts.recorded(), &mut j.alerts.delivered, &mut j.alerts.skipped),
            Stream::Tracks => (j.track_events.recorded, &mut j.track_events.delivered, &mut j.track_events.skipped),
        };
        let at = delivered.get(sink).copied().unwrap_or(0);
        if upto <= at {
            return Err(Rejection::stale(format!("{sink} has job {job}'s {stream:?} up to {at} already")));
        }
        if upto > recorded {
            return Err(Rejection::invalid(format!("{sink} cannot have {stream:?} event {upto} of job {job}: {recorded} are recorded")));
        }
        delivered.insert(sink.to_string(), upto);
        if skipped > 0 {
            *skips.entry(sink.to_string()).or_default() += skipped;
        }
        ch.jobs.insert(job);
        Ok(Response::Ok)
    }

    /// Add a zone to a running job, in force from the first frame its
    /// analytics have not reached.
    pub(super) fn add_zone(&mut self, job: u64, zone: &Zone, ch: &mut Changes) -> Applied {
        let j = self.jobs.get_mut(&job).ok_or_else(|| Rejection::unknown(format!("no job {job}")))?;
        if j.state != JobState::Running && j.state != JobState::Queued {
            return Err(Rejection::done(format!("job {job} is {}: zones are added to a running job", j.state.as_str())));
        }
        check_names(j.zones.iter().map(|z| z.zone.name.as_str()).chain([zone.name.as_str()])).map_err(Rejection::invalid)?;
        j.zones.push(JobZone { zone: zone.clone(), from_frame: j.alerts.upto });
        ch.jobs.insert(job);
        Ok(Response::Ok)
    }
}
