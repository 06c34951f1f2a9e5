//! Alert rules (issue 18, part 4), evaluated by the leader: for each job
//! with rules, over the frames committed since the last evaluation, in
//! frame order, from the rules' states recorded with it; the evaluation and
//! what fired are committed together (`Request::Alerts`), which applies only
//! where the last one ended. So each alert is decided once, from committed
//! results only, and recorded once: a new leader goes on from the last
//! committed evaluation, and an evaluation a deposed leader still commits is
//! refused as stale.
use std::sync::Arc;

use panoptes_common::rules::{evaluate, FrameFacts, Rule, RuleState};
use tracing::{info, warn};

use super::Member;
use crate::state::command::{Request, Response};

/// At most this many frames are evaluated per job per round (200 ms), so
/// that one command stays small; a job behind catches up over rounds.
const FRAMES_PER_ROUND: u64 = 2_000;

/// One round: every job whose committed prefix moved past its rules.
pub(super) async fn evaluate_rules<M: Member>(node: &Arc<M>) {
    // Each due job with its rules and where they stand.
    let due: Vec<(u64, u64, u64, Vec<Rule>, Vec<RuleState>)> = node.reader().read(|a| {
        a.state
            .jobs
            .values()
            .filter(|j| !j.spec.rules.is_empty())
            .filter_map(|j| {
                let (from, prefix) = (j.alerts.upto, j.committed_prefix());
                let upto = prefix.min(from.saturating_add(FRAMES_PER_ROUND));
                (prefix > from).then(|| (j.id, from, upto, j.spec.rules.clone(), j.alerts.states.clone()))
            })
            .collect()
    });
    for (job, from, upto, rules, states) in due {
        let reader = node.reader().clone();
        let evaluated = tokio::task::spawn_blocking(move || {
            let mut states = if states.len() == rules.len() { states } else { vec![RuleState::default(); rules.len()] };
            let rows = reader.results_between(job, from, upto);
            let mut fired = Vec::new();
            // The rows of one frame (one per model) are adjacent: frame order, then model.
            for frame_rows in rows.chunk_by(|a, b| a.frame == b.frame) {
                let mut facts = FrameFacts::default();
                for r in frame_rows {
                    facts.add(&serde_json::from_str(&r.results_json).unwrap_or_default());
                }
                let time_ms = (frame_rows[0].timestamp.max(0.0) * 1000.0).round() as u64;
                fired.extend(evaluate(&rules, &mut states, frame_rows[0].frame, time_ms, &facts));
            }
            (states, fired)
        })
        .await;
        let Ok((states, fired)) = evaluated else { continue };
        let names: Vec<String> = fired.iter().map(|f| format!("{} at frame {}", f.rule, f.frame)).collect();
        match node.commit(Request::Alerts { job, from, upto, states, fired }).await {
            Ok(Response::Ok) => {
                if !names.is_empty() {
                    info!(job_id = job, alerts = %names.join(", "), "alerts recorded");
                }
            }
            Ok(other) => warn!(job_id = job, outcome = ?other, "alert evaluation not recorded; evaluating again"),
            Err(e) => {
                warn!(job_id = job, error = %e.message(), "could not record an alert evaluation; will retry");
                return;
            }
        }
    }
}
