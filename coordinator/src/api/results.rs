//! Reading results: the rows of a job as messages, and following a job's
//! results as they commit (`StreamResults`).
use super::*;

impl ApiService {
    pub(super) fn rows_pb(job: &Job, rows: Vec<ResultRow>, model: &str) -> Vec<pb::FrameResult> {
        rows.into_iter()
            .filter_map(|r| {
                let name = job.spec.models.get(r.model as usize)?.clone();
                if !model.is_empty() && name != model {
                    return None;
                }
                Some(pb::FrameResult { frame: r.frame, timestamp: r.timestamp, model: name, results_json: r.results_json })
            })
            .collect()
    }

    /// Stream a job's results as they commit, until the job ends. Shards
    /// commit in parallel, so key order is not commit order: follow each
    /// shard's committed cursor instead (a report stores its frames and moves
    /// the cursor in one apply, so every frame below a cursor is readable).
    /// A job whose detections are tracked is followed up to where its
    /// analytics stand, so that every row sent carries its track ids.
    pub(super) async fn follow(mut reader: StateReader, job: Job, model: String, from_frame: u64, tx: tokio::sync::mpsc::Sender<Result<pb::FrameResult, Status>>) {
        let _open = open_stream();
        // Per shard index: frames below this were sent.
        let mut sent: HashMap<u32, u64> = HashMap::new();
        loop {
            let Some((shards, finished, tracked_to)) = reader.read(|a| {
                a.state.jobs.get(&job.id).map(|j| {
                    let tracked_to = if j.spec.tracks { j.alerts.upto } else { u64::MAX };
                    (j.shards.iter().map(|s| (s.index, s.start, s.end, s.cursor)).collect::<Vec<_>>(), j.state.is_finished() && j.analytics_up_to_date(), tracked_to)
                })
            }) else {
                return; // pruned
            };
            for (index, start, end, cursor) in shards {
                let from = *sent.get(&index).unwrap_or(&start.max(from_frame));
                // Once the job ended (and was tracked to its end), whatever is stored is final.
                let upto = if finished { end } else { cursor.min(end).min(tracked_to) };
                if upto <= from {
                    continue;
                }
                let rows = reader.results_between(job.id, from, upto);
                sent.insert(index, upto);
                for fr in Self::rows_pb(&job, rows, &model) {
                    if tx.send(Ok(fr)).await.is_err() {
                        return;
                    }
                }
            }
            if finished {
                return;
            }
            if !wait_for_change(&mut reader, &tx).await {
                return;
            }
        }
    }

    pub(super) fn check_model(job: &Job, model: &str) -> Result<(), Status> {
        if !model.is_empty() && !job.spec.models.iter().any(|m| m == model) {
            return Err(Status::invalid_argument(format!("job {} did not run model '{model}' (it ran {})", JobId(job.id), job.spec.models.join(", "))));
        }
        Ok(())
    }
}

/// A result stream being served: counted in [`RESULT_STREAMS`] until dropped.
pub(super) fn open_stream() -> panoptes_common::metrics::GaugeShare {
    let mut g = panoptes_common::metrics::GaugeShare::new(panoptes_common::metrics::gauge(RESULT_STREAMS, &[]));
    g.set(1.0);
    g
}

/// Wait (at most a second) for the state to change; false when the client
/// went away meanwhile, so that a stream that has nothing to send does not
/// go on polling for a job that may run for days.
pub(super) async fn wait_for_change(reader: &mut StateReader, tx: &tokio::sync::mpsc::Sender<Result<pb::FrameResult, Status>>) -> bool {
    tokio::select! {
        _ = tx.closed() => false,
        _ = tokio::time::timeout(Duration::from_secs(1), reader.changed()) => true,
    }
}
