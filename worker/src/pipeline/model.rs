//! Model actor: runs one analysis (tract inference or k-means) per frame.
//!
//! A frame whose analysis fails or panics is retried once; if it fails again
//! the frame gets a per-frame error result (`{"error": "..."}`) for this model
//! and the shard goes on. Failures of the actor itself (e.g. its mailbox
//! closing) are left to the shard supervisor, which rebuilds the pipeline.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use tracing::warn;

use super::{blocking, ModelMsg, ReporterMsg};
use crate::analysis::{Analysis, RgbFrame};

pub struct ModelActor;

pub struct ModelArgs {
    pub index: usize,
    pub analysis: Arc<dyn Analysis>,
    pub reporter: ActorRef<ReporterMsg>,
}

/// One attempt, with a panic turned into an error.
fn attempt(analysis: &dyn Analysis, rgb: &RgbFrame) -> Result<serde_json::Value, String> {
    match catch_unwind(AssertUnwindSafe(|| analysis.analyze(rgb))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(panic) => Err(format!(
            "panicked: {}",
            panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default()
        )),
    }
}

/// Run an analysis on a frame, retrying once; the error result if both fail.
pub fn analyze_with_retry(analysis: &dyn Analysis, frame: u64, rgb: &RgbFrame) -> serde_json::Value {
    match attempt(analysis, rgb) {
        Ok(v) => v,
        Err(first) => {
            warn!(model = analysis.name(), frame, error = %first, "analysis failed; retrying the frame once");
            match attempt(analysis, rgb) {
                Ok(v) => v,
                Err(e) => {
                    warn!(model = analysis.name(), frame, error = %e, "analysis failed twice; recording a per-frame error");
                    json!({ "error": format!("{} failed on frame {frame}: {e}", analysis.name()) })
                }
            }
        }
    }
}

impl Actor for ModelActor {
    type Msg = ModelMsg;
    type State = ModelArgs;
    type Arguments = ModelArgs;

    async fn pre_start(&self, _myself: ActorRef<ModelMsg>, a: ModelArgs) -> Result<ModelArgs, ActorProcessingErr> {
        Ok(a)
    }

    async fn handle(&self, _myself: ActorRef<ModelMsg>, msg: ModelMsg, st: &mut ModelArgs) -> Result<(), ActorProcessingErr> {
        match msg {
            ModelMsg::Analyze { frame, rgb } => {
                let t = Instant::now();
                let value = blocking(|| analyze_with_retry(st.analysis.as_ref(), frame, &rgb));
                let secs = t.elapsed().as_secs_f64();
                let results_json = serde_json::to_string(&value)?;
                st.reporter.send_message(ReporterMsg::Output { frame, model: st.index, results_json, secs })?;
            }
            ModelMsg::End { next_frame } => st.reporter.send_message(ReporterMsg::End { next_frame })?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Panics on its first `fail_times` calls, then answers.
    struct Flaky {
        calls: AtomicU32,
        fail_times: u32,
    }

    impl Analysis for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn analyze(&self, _f: &RgbFrame) -> anyhow::Result<serde_json::Value> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_times {
                panic!("boom {n}");
            }
            Ok(json!([n]))
        }
    }

    fn frame() -> RgbFrame {
        RgbFrame::new(1, 1, vec![0, 0, 0])
    }

    #[test]
    fn a_panicking_frame_is_retried_once() {
        let a = Flaky { calls: AtomicU32::new(0), fail_times: 1 };
        assert_eq!(analyze_with_retry(&a, 7, &frame()), json!([1]));
    }

    #[test]
    fn a_frame_failing_twice_becomes_a_per_frame_error() {
        let a = Flaky { calls: AtomicU32::new(0), fail_times: 2 };
        let v = analyze_with_retry(&a, 7, &frame());
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("flaky failed on frame 7") && e.contains("boom 1"), "{e}");
        // The next frame works again.
        assert_eq!(analyze_with_retry(&a, 8, &frame()), json!([2]));
    }
}
