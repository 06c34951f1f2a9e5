//! A job's analytics (issue 18), evaluated by the leader: for each job with
//! a detector or alert rules, over the frames committed since the last
//! evaluation, in frame order, from the state recorded with it: first its
//! trackers (`panoptes_common::tracking`: each detection's track and zones,
//! tracks starting, entering and leaving zones, ending), then its rules
//! (`panoptes_common::rules`, which also see the zones and crossings). The
//! evaluation and all it decided are committed together
//! (`Request::Analytics`), which applies only where the last one ended. So each
//! track id, track event and alert is decided once, from committed results
//! only, and recorded once: a new leader goes on from the last committed
//! evaluation, and an evaluation a deposed leader still commits is refused
//! as stale. Once a job has ended and been evaluated to its end, one last
//! evaluation ends its open tracks.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use panoptes_common::analytics;
use panoptes_common::rules::{Rule, RuleState};
use panoptes_common::tracking::JobTracker;
use panoptes_common::zones::{JobZone, Zone};
use tracing::{info, warn};

use super::Member;
use crate::state::command::{Request, Response, Tracked};

/// At most this many frames are evaluated per job per round, so that one
/// command stays small; a job behind catches up over rounds.
const FRAMES_PER_ROUND: u64 = 2_000;
/// A round runs when the state changed (frames committed), at most this
/// often, so that frames arriving together are evaluated together...
const MIN_ROUND: Duration = Duration::from_millis(20);
/// ...and at least this often. A job that is not live (nobody waits on
/// its newest frame) is evaluated at most this often while it runs, so
/// that a fast file job costs an evaluation commit per 200 ms, not one per
/// report.
const MAX_ROUND: Duration = Duration::from_millis(200);

/// Evaluate analytics while this member leads (until aborted): a round as
/// soon as the state changes, so a live stream's track ids and alerts
/// follow its frames closely (`results --follow` waits for a tracked job's
/// ids).
pub async fn analytics<M: Member>(node: Arc<M>) {
    let mut reader = node.reader().clone();
    let mut last: HashMap<u64, tokio::time::Instant> = HashMap::new();
    loop {
        let started = tokio::time::Instant::now();
        if node.is_leader() {
            round(&node, &mut last).await;
        }
        tokio::time::sleep_until(started + MIN_ROUND).await;
        let _ = tokio::time::timeout(MAX_ROUND, reader.changed()).await;
    }
}

/// What one job's evaluation starts from.
struct Due {
    job: u64,
    from: u64,
    upto: u64,
    /// The job ended and is evaluated to its end: end its tracks.
    close: bool,
    models: Vec<String>,
    rules: Vec<Rule>,
    states: Vec<RuleState>,
    tracker: JobTracker,
    zones: Vec<JobZone>,
    size: Option<(u32, u32)>,
}

/// One round: every job whose committed prefix moved past its analytics.
async fn round<M: Member>(node: &Arc<M>, last: &mut HashMap<u64, tokio::time::Instant>) {
    let now = tokio::time::Instant::now();
    let due: Vec<Due> = node.reader().read(|a| {
        last.retain(|job, _| a.state.jobs.contains_key(job));
        a.state
            .jobs
            .values()
            .filter(|j| j.has_analytics())
            .filter(|j| j.is_live() || j.state.is_finished() || last.get(&j.id).is_none_or(|t| now.duration_since(*t) >= MAX_ROUND))
            .filter_map(|j| {
                let (from, prefix) = (j.alerts.upto, j.committed_prefix());
                let upto = prefix.min(from.saturating_add(FRAMES_PER_ROUND));
                let close = j.spec.tracks && j.state.is_finished() && upto == prefix && !j.tracking.closed;
                (prefix > from || close).then(|| Due {
                    job: j.id,
                    from,
                    upto,
                    close,
                    models: j.spec.models.clone(),
                    rules: j.spec.rules.clone(),
                    states: j.alerts.states.clone(),
                    tracker: j.tracking.clone(),
                    zones: j.zones.clone(),
                    size: j.frame_size,
                })
            })
            .collect()
    });
    for d in due {
        let (job, from, upto) = (d.job, d.from, d.upto);
        last.insert(job, now);
        let reader = node.reader().clone();
        let evaluated = tokio::task::spawn_blocking(move || evaluate_job(&reader, d)).await;
        let Ok(Ok((states, fired, tracked))) = evaluated else {
            if let Ok(Err(e)) = evaluated {
                warn!(job_id = job, error = %e, "cannot evaluate a job's analytics");
            }
            continue;
        };
        let names: Vec<String> = fired.iter().map(|f| format!("{} at frame {}", f.rule, f.frame)).collect();
        match node.commit(Request::Analytics { job, from, upto, states, fired, tracked }).await {
            Ok(Response::Ok) => {
                if !names.is_empty() {
                    info!(job_id = job, alerts = %names.join(", "), "alerts recorded");
                }
            }
            Ok(other) => warn!(job_id = job, outcome = ?other, "analytics evaluation not recorded; evaluating again"),
            Err(e) => {
                warn!(job_id = job, error = %e.message(), "could not record an analytics evaluation; will retry");
                return;
            }
        }
    }
}

type Evaluated = (Vec<RuleState>, Vec<panoptes_common::rules::Fired>, Tracked);

/// Track, then evaluate the rules over frames `[from, upto)` of one job.
fn evaluate_job(reader: &crate::store::StateReader, d: Due) -> Result<Evaluated, String> {
    let Due { from, upto, close, models, rules, tracker, zones, size, job, .. } = d;
    let mut states = if d.states.len() == rules.len() { d.states } else { vec![RuleState::default(); rules.len()] };
    let mut tracked = Tracked { tracker, ..Default::default() };
    let rows = reader.results_between(job, from, upto);
    let mut fired = Vec::new();
    // The rows of one frame (one per model) are adjacent: frame order, then model.
    for frame_rows in rows.chunk_by(|a, b| a.frame == b.frame) {
        let frame = frame_rows[0].frame;
        let in_force: Vec<&Zone> = zones.iter().filter(|z| z.from_frame <= frame).map(|z| &z.zone).collect();
        let mut parsed: Vec<(&str, serde_json::Value)> = frame_rows
            .iter()
            .map(|r| (models.get(r.model as usize).map(String::as_str).unwrap_or("?"), serde_json::from_str(&r.results_json).unwrap_or_default()))
            .collect();
        let out = analytics::frame(&mut tracked.tracker, &rules, &mut states, frame, frame_rows[0].timestamp, &mut parsed, &in_force, size)?;
        for (r, marks) in frame_rows.iter().zip(out.marks) {
            if let Some(m) = marks {
                tracked.marks.push((frame, r.model, m));
            }
        }
        tracked.events.extend(out.events);
        fired.extend(out.fired);
    }
    if close {
        tracked.events.extend(tracked.tracker.close());
    }
    Ok((states, fired, tracked))
}
