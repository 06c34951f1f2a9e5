//! Retention while jobs run (`submit --keep 1h`, `retention.keep`): the
//! leader, every `retention.every_s`, finds for each job with a `keep_s` the
//! first frame still inside its window (stream time counted back from the
//! newest committed frame) and commits `Trim` below it. Every member then
//! deletes those results and/or picture references, and its own pictures by
//! whole segments (`pictures::store`), so the disk is given back as it goes.
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use crate::handle::Coordinator;
use crate::state::command::{Request, Response};

/// One `Trim` deletes at most this many result rows (and their pictures'
/// references): each is applied in one sled batch on every member, so its
/// size bounds the apply's memory and time.
const TRIM_ROWS: usize = 2_000;

/// One pass trims at most this many rows per job (then the next pass goes on).
const PASS_ROWS: usize = 200_000;

pub async fn retention_loop(node: Arc<Coordinator>) {
    let every = Duration::from_secs(node.cfg.retention.every_s.max(1));
    loop {
        tokio::time::sleep(every).await;
        if node.is_leader() {
            trim_pass(&node).await;
        }
    }
}

/// One pass over every job with retention.
pub async fn trim_pass(node: &Coordinator) {
    let jobs: Vec<(u64, u64, f64)> = node.reader.read(|a| {
        a.state
            .jobs
            .values()
            .filter(|j| j.spec.keep_s > 0 && j.frames_done > 0)
            .map(|j| (j.id, j.trimmed_before, j.counters.last_timestamp - j.spec.keep_s as f64))
            .collect()
    });
    for (job, mut from, cutoff) in jobs {
        if cutoff <= 0.0 {
            continue;
        }
        for _ in 0..PASS_ROWS / TRIM_ROWS {
            let Some(before) = node.reader.retention_cut(job, from, cutoff, TRIM_ROWS) else { break };
            match node.commit(Request::Trim { job, before_frame: before }).await {
                Ok(Response::Trimmed { freed }) => {
                    debug!(job_id = job, before_frame = before, results = freed.results, pictures = freed.frames, bytes = freed.bytes, "retention trimmed");
                    from = before;
                }
                Ok(other) => {
                    debug!(job_id = job, ?other, "retention trim not applied");
                    break;
                }
                Err(e) => {
                    warn!(job_id = job, error = %e, "retention trim failed; retried on the next pass");
                    break;
                }
            }
        }
    }
}
