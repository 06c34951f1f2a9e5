//! The worker's Prometheus metrics: their names and help, and the handles the
//! pipeline's actors look up once (when they start) so that the per-frame path
//! only touches atomics, never the registry's maps.
//!
//! Counts and queue depths are per process: summed over every shard the
//! worker runs. Latencies are in seconds.
use std::sync::Once;

use panoptes_common::metrics::{self, counter, gauge, histogram, Counter, Gauge, GaugeShare, Histogram};

pub const FRAMES_DECODED: &str = "panoptes_worker_frames_decoded_total";
pub const FRAMES_ANALYSED: &str = "panoptes_worker_frames_analysed_total";
pub const ANALYSIS_ERRORS: &str = "panoptes_worker_analysis_errors_total";
pub const INFERENCE_SECONDS: &str = "panoptes_worker_inference_seconds";
pub const DECODE_SECONDS: &str = "panoptes_worker_decode_seconds";
pub const RESIZE_SECONDS: &str = "panoptes_worker_resize_seconds";
pub const REPORT_COMMIT_SECONDS: &str = "panoptes_worker_report_commit_seconds";
pub const RESULTS_REPORTED: &str = "panoptes_worker_results_reported_total";
pub const RESULTS_ACKNOWLEDGED: &str = "panoptes_worker_results_acknowledged_total";
pub const REPORT_RETRIES: &str = "panoptes_worker_report_retries_total";
pub const MODEL_RESTARTS: &str = "panoptes_worker_model_restarts_total";
pub const PIPELINE_RESTARTS: &str = "panoptes_worker_pipeline_restarts_total";
pub const SHARDS_ACTIVE: &str = "panoptes_worker_shards_active";
pub const SHARDS_ENDED: &str = "panoptes_worker_shards_ended_total";
pub const LEASES_GRANTED: &str = "panoptes_worker_leases_granted_total";
pub const LEASES_LOST: &str = "panoptes_worker_leases_lost_total";
pub const LEASES_REVOKED: &str = "panoptes_worker_leases_revoked_total";
pub const MODEL_QUEUE_FRAMES: &str = "panoptes_worker_model_queue_frames";
pub const REPORTER_PENDING_FRAMES: &str = "panoptes_worker_reporter_pending_frames";
pub const REGISTERED: &str = "panoptes_worker_registered";
pub const COORDINATOR_ERRORS: &str = "panoptes_worker_coordinator_errors_total";
pub const LIVE_FRAMES_DROPPED: &str = "panoptes_worker_live_frames_dropped_total";
pub const LIVE_RECONNECTS: &str = "panoptes_worker_live_reconnects_total";
pub const LIVE_GAP_MS: &str = "panoptes_worker_live_gap_ms_total";

/// Document every worker metric, and create the series of the loaded
/// `models` and the process-wide ones at zero, so that a scrape shows them
/// before the first shard.
pub fn describe(models: &[String]) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use metrics::describe as d;
        d(FRAMES_DECODED, "counter", "Frames decoded for analysis (frames skipped by frame_step are not counted).");
        d(FRAMES_ANALYSED, "counter", "Frames a model analysed successfully.");
        d(ANALYSIS_ERRORS, "counter", "Frames given an error result for a model: its analysis failed on the frame and again on the retry.");
        d(INFERENCE_SECONDS, "histogram", "Time a model took to analyse one frame (inference and post-processing), in seconds.");
        d(DECODE_SECONDS, "histogram", "Time to decode one analysed frame, including the skipped frames before it, in seconds.");
        d(RESIZE_SECONDS, "histogram", "Time to convert one frame to RGB at the job's target height, in seconds.");
        d(REPORT_COMMIT_SECONDS, "histogram", "Time from sending a report to its acknowledgement (committed through Raft), retries included, in seconds.");
        d(RESULTS_REPORTED, "counter", "Results (one per frame and model) sent to the coordinators.");
        d(RESULTS_ACKNOWLEDGED, "counter", "Results the coordinators acknowledged as committed.");
        d(REPORT_RETRIES, "counter", "Report deliveries retried after a transport error or a leader change.");
        d(MODEL_RESTARTS, "counter", "Model actors restarted after a crash (a panic or an error in the analysis).");
        d(PIPELINE_RESTARTS, "counter", "Shard pipelines rebuilt after a decoder, resizer or reporter failure.");
        d(SHARDS_ACTIVE, "gauge", "Shards this worker is working on.");
        d(SHARDS_ENDED, "counter", "Shards that ended, by outcome: finished, failed (reported to the coordinator) or lease_lost.");
        d(LEASES_GRANTED, "counter", "Shard leases granted to this worker.");
        d(LEASES_LOST, "counter", "Leases lost: the coordinator refused a report (the lease expired or was given to another worker).");
        d(LEASES_REVOKED, "counter", "Leases the coordinator revoked in answer to a heartbeat.");
        d(MODEL_QUEUE_FRAMES, "gauge", "Frames sent to a model and not answered yet, summed over shards.");
        d(REPORTER_PENDING_FRAMES, "gauge", "Frames the reporters hold until every model answered and the coordinators acknowledged them, summed over shards.");
        d(REGISTERED, "gauge", "1 while this worker is registered with a coordinator, else 0.");
        d(COORDINATOR_ERRORS, "counter", "Failed calls to the coordinators, by call (register, lease, heartbeat).");
        d(LIVE_RECONNECTS, "counter", "Pull sources (rtsp://, rtmp://) reopened after they dropped, by job_id.");
        d(LIVE_GAP_MS, "counter", "Time pull sources were gone between a drop and their reopening, in milliseconds, by job_id.");
        d(
            LIVE_FRAMES_DROPPED,
            "counter",
            "Live-stream frames not analysed, by reason: replaced (a newer frame took its place while it waited, the latest policy), lag (waited longer than live.max_lag_ms), full (the pipeline had no room) or every_nth (left out by live.keep_every).",
        );
    });
    for name in [FRAMES_DECODED, RESULTS_REPORTED, RESULTS_ACKNOWLEDGED, REPORT_RETRIES, PIPELINE_RESTARTS, LEASES_GRANTED, LEASES_LOST, LEASES_REVOKED] {
        counter(name, &[]);
    }
    for name in [SHARDS_ACTIVE, REPORTER_PENDING_FRAMES, REGISTERED] {
        gauge(name, &[]);
    }
    for name in [DECODE_SECONDS, RESIZE_SECONDS, REPORT_COMMIT_SECONDS] {
        histogram(name, &[]);
    }
    for outcome in ["finished", "failed", "lease_lost"] {
        counter(SHARDS_ENDED, &[("outcome", outcome)]);
    }
    for reason in ["replaced", "lag", "full", "every_nth"] {
        counter(LIVE_FRAMES_DROPPED, &[("reason", reason)]);
    }
    for call in ["register", "lease", "heartbeat"] {
        counter(COORDINATOR_ERRORS, &[("call", call)]);
    }
    for m in models {
        let model = [("model", m.as_str())];
        counter(FRAMES_ANALYSED, &model);
        counter(ANALYSIS_ERRORS, &model);
        counter(MODEL_RESTARTS, &model);
        histogram(INFERENCE_SECONDS, &model);
        gauge(MODEL_QUEUE_FRAMES, &model);
    }
}

/// What a model actor records per frame.
pub struct ModelMetrics {
    pub analysed: Counter,
    pub latency: Histogram,
}

impl ModelMetrics {
    pub fn new(model: &str) -> Self {
        let l = [("model", model)];
        ModelMetrics { analysed: counter(FRAMES_ANALYSED, &l), latency: histogram(INFERENCE_SECONDS, &l) }
    }
}

/// What the shard supervisor records about one model of its shard.
pub struct SupervisedModelMetrics {
    pub errors: Counter,
    pub restarts: Counter,
    /// This shard's part of [`MODEL_QUEUE_FRAMES`].
    pub queue: GaugeShare,
}

impl SupervisedModelMetrics {
    pub fn new(model: &str) -> Self {
        let l = [("model", model)];
        SupervisedModelMetrics {
            errors: counter(ANALYSIS_ERRORS, &l),
            restarts: counter(MODEL_RESTARTS, &l),
            queue: GaugeShare::new(gauge(MODEL_QUEUE_FRAMES, &l)),
        }
    }
}

/// What a reporter records.
pub struct ReporterMetrics {
    pub commit: Histogram,
    pub reported: Counter,
    pub acknowledged: Counter,
    /// This shard's part of [`REPORTER_PENDING_FRAMES`].
    pub pending: GaugeShare,
}

impl ReporterMetrics {
    pub fn new() -> Self {
        ReporterMetrics {
            commit: histogram(REPORT_COMMIT_SECONDS, &[]),
            reported: counter(RESULTS_REPORTED, &[]),
            acknowledged: counter(RESULTS_ACKNOWLEDGED, &[]),
            pending: GaugeShare::new(gauge(REPORTER_PENDING_FRAMES, &[])),
        }
    }
}

impl Default for ReporterMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The worker root's counters and gauges.
pub struct NodeMetrics {
    pub leases_granted: Counter,
    pub leases_revoked: Counter,
    pub shards_active: Gauge,
    pub registered: Gauge,
}

impl NodeMetrics {
    pub fn new() -> Self {
        NodeMetrics {
            leases_granted: counter(LEASES_GRANTED, &[]),
            leases_revoked: counter(LEASES_REVOKED, &[]),
            shards_active: gauge(SHARDS_ACTIVE, &[]),
            registered: gauge(REGISTERED, &[]),
        }
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Count a failed call to the coordinators.
pub fn coordinator_error(call: &str) {
    metrics::inc(COORDINATOR_ERRORS, &[("call", call)], 1);
}

/// Count a shard that ended with `outcome`.
pub fn shard_ended(outcome: &str) {
    metrics::inc(SHARDS_ENDED, &[("outcome", outcome)], 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_metric_is_documented_and_present_before_any_shard() {
        describe(&["colors".to_string()]);
        let text = metrics::render();
        for (name, kind) in [
            (FRAMES_DECODED, "counter"),
            (FRAMES_ANALYSED, "counter"),
            (INFERENCE_SECONDS, "histogram"),
            (MODEL_QUEUE_FRAMES, "gauge"),
            (REPORTER_PENDING_FRAMES, "gauge"),
            (SHARDS_ACTIVE, "gauge"),
            (LEASES_REVOKED, "counter"),
        ] {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}:\n{text}");
            let help = text.lines().find(|l| l.starts_with(&format!("# HELP {name} "))).unwrap_or_default();
            assert!(help.len() > format!("# HELP {name} ").len() + 10, "{name} has no help text");
        }
        assert!(text.contains("panoptes_worker_inference_seconds_count{model=\"colors\"}"), "{text}");
    }
}
