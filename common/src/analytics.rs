//! One analysed frame through a job's analytics (issue 18): its detections
//! tracked (and placed in zones), then its alert rules evaluated on what
//! the frame holds and on the tracks that crossed zones in it. The leader
//! runs this over each job's committed frames in order
//! (`coordinator/src/leader/analytics.rs`); tests run it over `panoptes
//! analyze` output to know what the cluster must record.
use serde_json::Value;

use crate::rules::{evaluate, Fired, FrameFacts, Rule, RuleState};
use crate::tracking::{annotate, JobTracker, Mark, TrackChange, TrackEvent};
use crate::zones::Zone;

/// What one frame gave: per row (in the order given) its marks, when the
/// row is a detector's; the track events; the alerts.
#[derive(Debug, Default)]
pub struct FrameOutcome {
    pub marks: Vec<Option<Vec<Mark>>>,
    pub events: Vec<TrackEvent>,
    pub fired: Vec<Fired>,
}

/// Feed one frame: its rows as (model, results) — results get their marks
/// put in — with the zones in force and the frame's size. Frames in order.
#[allow(clippy::too_many_arguments)]
pub fn frame(
    tracker: &mut JobTracker,
    rules: &[Rule],
    states: &mut [RuleState],
    frame: u64,
    time_s: f64,
    rows: &mut [(&str, Value)],
    zones: &[&Zone],
    size: Option<(u32, u32)>,
) -> Result<FrameOutcome, String> {
    let mut out = FrameOutcome::default();
    let mut facts = FrameFacts::default();
    for (model, results) in rows.iter_mut() {
        let marks = tracker.feed(model, frame, time_s, results, zones, size, &mut out.events)?;
        if let Some(m) = &marks {
            annotate(results, m);
        }
        facts.add(results);
        out.marks.push(marks);
    }
    for e in &out.events {
        if let (Some(z), TrackChange::Enter | TrackChange::Leave) = (&e.zone, e.change) {
            facts.crossings.push((e.label.clone(), z.clone(), e.change == TrackChange::Enter, e.track));
        }
    }
    let time_ms = (time_s.max(0.0) * 1000.0).round() as u64;
    out.fired = evaluate(rules, states, frame, time_ms, &facts);
    Ok(out)
}
