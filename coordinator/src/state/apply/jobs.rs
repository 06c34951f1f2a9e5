//! A job's life: submitted, planned (the leader probed its source), failed
//! or cancelled; its old frames trimmed by retention; finished jobs pruned.
use super::{finish, next_id, Applied, Changes, ResultSink, State};
use crate::state::command::{Freed, Response};
use crate::state::model::{Job, JobSpec, JobState, Plan, Shard};
use crate::state::outcome::Rejection;

impl State {
    /// A new job (or the existing one for a repeated `request_id`). A pull
    /// source runs at once, unprobed, with one open-ended shard that ends
    /// where the stream ends (see `report.rs`); a file waits for its plan.
    pub(super) fn submit(&mut self, spec: &JobSpec, now_ms: u64, ch: &mut Changes) -> Response {
        if let Some(&job) = spec.request_id.as_ref().and_then(|rid| self.request_ids.get(rid)) {
            return Response::JobCreated { job, existing: true };
        }
        let id = next_id(&mut self.next_job, ch);
        if let Some(rid) = &spec.request_id {
            self.request_ids.insert(rid.clone(), id);
        }
        let pull = crate::state::model::is_pull_source(&spec.source);
        let (state, shards) = if pull { (JobState::Running, vec![Shard::open_ended()]) } else { (JobState::Queued, Vec::new()) };
        self.jobs.insert(id, Job::new(id, spec.clone(), state, now_ms, shards, None));
        ch.jobs.insert(id);
        Response::JobCreated { job: id, existing: false }
    }

    /// The leader probed the source: fix the frame count and the shards,
    /// and start the job (or fail it: a source without frames).
    pub(super) fn plan(&mut self, job: u64, plan: &Plan, shards: &[(u64, u64)], now_ms: u64, ch: &mut Changes) -> Applied {
        let j = self.jobs.get_mut(&job).ok_or_else(|| Rejection::unknown(format!("unknown job {job}")))?;
        if j.state != JobState::Queued {
            let m = format!("job {job} is {}", j.state.as_str());
            return Err(if j.state.is_finished() { Rejection::done(m) } else { Rejection::stale(m) });
        }
        ch.jobs.insert(job);
        j.plan = Some(plan.clone());
        j.shards = shards.iter().enumerate().map(|(i, &(start, end))| Shard::new(i as u32, start, end)).collect();
        j.started_at_ms = now_ms;
        if j.frames_total() == 0 || j.shards.is_empty() {
            j.state = JobState::Failed;
            j.error = Some(format!("'{}' has no video frames to analyse", j.spec.source));
            j.finished_at_ms = now_ms;
        } else {
            j.state = JobState::Running;
        }
        Ok(Response::Ok)
    }

    /// Fail (the source cannot be read) or cancel a job that has not finished.
    pub(super) fn end_job(&mut self, job: u64, state: JobState, error: Option<&String>, now_ms: u64, ch: &mut Changes) -> Applied {
        let j = self.jobs.get_mut(&job).ok_or_else(|| Rejection::unknown(format!("unknown job {job}")))?;
        if j.state.is_finished() {
            return Err(Rejection::done(format!("job {job} is already {}", j.state.as_str())));
        }
        ch.jobs.insert(job);
        finish(j, state, error.cloned(), now_ms, ch);
        Ok(Response::Ok)
    }

    /// Retention: delete what the job keeps of its frames below `before_frame`.
    pub(super) fn trim(&mut self, job: u64, before_frame: u64, sink: &mut dyn ResultSink, ch: &mut Changes) -> Applied {
        let j = self.jobs.get_mut(&job).ok_or_else(|| Rejection::unknown(format!("no job {job}")))?;
        if before_frame <= j.trimmed_before {
            return Ok(Response::Trimmed { freed: Freed::default() });
        }
        let what = j.spec.keep_what;
        let freed = sink.trim(job, j.trimmed_before, before_frame, what.results(), what.pictures());
        if what.results() {
            // Alerts and track events go with the results of their frames
            // (kept for ever, they made sled keep old copies of pages: a
            // camera's data directory grew by 16 MiB an hour under --keep).
            if j.track_events.recorded > 0 {
                j.track_events.kept_from = sink.trim_track_events(job, j.track_events.kept_from.max(1), before_frame);
            }
            j.alerts.trim(before_frame);
        }
        j.trimmed_before = before_frame;
        ch.jobs.insert(job);
        if what.pictures() {
            ch.trimmed_pictures.push((job, before_frame));
        }
        Ok(Response::Trimmed { freed })
    }

    /// Delete every job that finished before `finished_before_ms`, with its
    /// results and stored frames.
    pub(super) fn prune(&mut self, finished_before_ms: u64, sink: &mut dyn ResultSink, ch: &mut Changes) -> Response {
        let old: Vec<u64> =
            self.jobs.values().filter(|j| j.state.is_finished() && j.finished_at_ms < finished_before_ms).map(|j| j.id).collect();
        let mut freed = Freed::default();
        for id in &old {
            let j = self.jobs.remove(id).expect("listed above");
            if let Some(rid) = &j.spec.request_id {
                self.request_ids.remove(rid);
            }
            let f = sink.delete_job(*id);
            freed.results += f.results;
            freed.frames += f.frames;
            freed.bytes += f.bytes;
            ch.jobs.remove(id);
            ch.removed_jobs.push((*id, j.spec.request_id.clone()));
        }
        Response::Pruned { jobs: old, freed }
    }
}
