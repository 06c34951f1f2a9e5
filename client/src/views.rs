//! The JSON objects the CLI's `--json` prints and the web API answers: one
//! shape per object, so a script can move between the two.
use serde_json::{json, Value};

use crate::pb;

/// A job state's name (`queued`, `running`, `completed`, `failed`,
/// `cancelled`; `unknown` for a value this client does not know).
pub fn state_name(s: i32) -> &'static str {
    match pb::JobState::try_from(s).unwrap_or(pb::JobState::Unspecified) {
        pb::JobState::Queued => "queued",
        pb::JobState::Running => "running",
        pb::JobState::Completed => "completed",
        pb::JobState::Failed => "failed",
        pb::JobState::Cancelled => "cancelled",
        pb::JobState::Unspecified => "unknown",
    }
}

/// Completed, failed or cancelled.
pub fn is_finished(s: &pb::JobStatus) -> bool {
    matches!(state_name(s.state), "completed" | "failed" | "cancelled")
}

/// `panoptes status --json`, `GET /api/jobs/{id}`.
pub fn status_json(s: &pb::JobStatus) -> Value {
    let text = |t: &str| if t.is_empty() { Value::Null } else { Value::String(t.to_string()) };
    json!({
        "job_id": s.job_id, "name": s.name, "source": s.source, "models": s.models,
        "frame_step": s.frame_step, "state": state_name(s.state), "frames_total": s.frames_total,
        "frames_done": s.frames_done, "error": text(&s.error),
        "shards_total": s.shards_total, "shards_done": s.shards_done,
        "submitted_at_ms": s.submitted_at_ms, "finished_at_ms": s.finished_at_ms, "live": s.live,
        "push_url": text(&s.push_url),
        "keep_s": s.keep_s, "retained_from_frame": s.retained_from_frame,
        "pictures": s.pictures, "pictures_every_ms": s.pictures_every_ms,
        "rules": s.rules, "alerts": s.alerts, "alerts_evaluated_to_frame": s.alerts_evaluated_to_frame,
        "alerts_up_to_date": s.alerts_up_to_date,
        "zones": s.zones.iter().map(|z| json!({"zone": z.zone, "from_frame": z.from_frame})).collect::<Vec<_>>(),
        "tracks": s.tracks, "track_events": s.track_events,
    })
}

/// A line of `panoptes alerts --json`.
pub fn alert_json(a: &pb::Alert) -> Value {
    json!({
        "id": a.id, "job_id": a.job_id, "seq": a.seq, "rule": a.rule, "frame": a.frame,
        "time": a.time, "since": a.since, "detail": a.detail,
    })
}

/// `panoptes metrics --json`, `GET /api/jobs/{id}/metrics`.
pub fn metrics_json(m: &pb::JobMetrics) -> Value {
    let inference: std::collections::BTreeMap<&str, f64> = m.inference_time_s.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    json!({
        "job_id": m.job_id, "frames_extracted": m.frames_extracted, "ingest_time_s": m.ingest_time_s,
        "resize_time_s": m.resize_time_s, "inference_time_s": inference, "avg_message_bytes": m.avg_message_bytes,
        "wall_time_s": m.wall_time_s, "frames_per_s": m.frames_per_s, "errors": m.errors,
        "queue_wait_s": m.queue_wait_s, "frames_dropped": m.frames_dropped,
        "latency_ms": {"p50": m.latency_p50_ms, "p95": m.latency_p95_ms, "p99": m.latency_p99_ms, "samples": m.latency_samples},
        "reconnects": m.reconnects, "gap_ms": m.gap_ms,
    })
}

/// One model's results on one frame: a line of `panoptes results --json`,
/// of `GET /api/jobs/{id}/results`, an event of its stream.
pub fn result_json(r: &pb::FrameResult) -> Value {
    // The coordinator stores valid JSON; should it not be, pass the text on.
    let results = serde_json::from_str(&r.results_json).unwrap_or_else(|_| Value::String(r.results_json.clone()));
    json!({ "frame": r.frame, "timestamp": r.timestamp, "model": r.model, "results": results })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metrics_key_is_in_the_one_shape() {
        let m = pb::JobMetrics { job_id: "job-3".into(), latency_p99_ms: 66.0, ..Default::default() };
        let v = metrics_json(&m);
        for k in ["job_id", "frames_extracted", "inference_time_s", "frames_per_s", "errors", "frames_dropped", "latency_ms", "reconnects", "gap_ms"] {
            assert!(v.get(k).is_some(), "no {k} in {v}");
        }
        assert_eq!(v["latency_ms"]["p99"], 66.0);
    }

    #[test]
    fn a_result_that_is_not_json_is_passed_on_as_text() {
        let r = pb::FrameResult { frame: 2, timestamp: 0.08, model: "colors".into(), results_json: "not json".into() };
        assert_eq!(result_json(&r)["results"], "not json");
    }
}
