//! Live streams: a push endpoint created on a worker's slot, moved to
//! another worker's ingest lobby when its publisher resumes there, and
//! abandoned when nobody resumes it. (Pull sources are submitted as jobs:
//! `jobs.rs`.)
use super::{finish, next_id, Applied, Changes, State};
use crate::state::command::Response;
use crate::state::model::{Job, JobSpec, JobState, LiveSpec, Shard, ShardState, LOBBY_SLOT};
use crate::state::outcome::Rejection;

impl State {
    /// The unfinished live pushes `worker` ingests (other than job
    /// `except`): each takes one of its capacity's slots.
    pub fn live_streams_on<'a>(&'a self, worker: &'a str, except: Option<u64>) -> impl Iterator<Item = &'a LiveSpec> + 'a {
        self.jobs
            .values()
            .filter(move |j| Some(j.id) != except && !j.state.is_finished())
            .filter_map(move |j| j.live.as_ref().filter(|l| l.worker == worker))
    }

    /// Whether live push `job` may move to `worker`, pushed to its lobby at
    /// `url` ([`crate::state::command::Request::MoveLive`]): the worker is
    /// registered, not draining and not full; the job runs; no other worker
    /// holds its lease (a move already made, retried, is accepted). Both the
    /// leader's check before writing and the state machine use it. A
    /// [`RejectionKind::Busy`](crate::state::outcome::RejectionKind::Busy) refusal may change (another worker still
    /// holds the stream, or this one is full); any other never will.
    pub fn check_move_live(&self, job: u64, worker: &str, url: &str) -> Result<(), Rejection> {
        use panoptes_common::ids::JobId;
        let capacity = match self.workers.get(worker) {
            None => return Err(Rejection::unknown(format!("unknown worker '{worker}': register first"))),
            // It would never be granted the shard.
            Some(w) if w.draining => {
                return Err(Rejection::invalid(format!(
                    "worker '{worker}' is draining: push to another worker's ingest lobby (`panoptes cluster status` lists them)"
                )))
            }
            Some(w) => w.capacity,
        };
        let j = self.jobs.get(&job).ok_or_else(|| Rejection::unknown(format!("unknown job {}", JobId(job))))?;
        if j.state != JobState::Running {
            return Err(Rejection::done(format!(
                "the live stream has ended (job {} {}); create a new endpoint with `panoptes live`",
                JobId(job),
                j.state.as_str()
            )));
        }
        let l = j.live.as_ref().ok_or_else(|| Rejection::invalid(format!("job {} is not a live push", JobId(job))))?;
        for s in &j.shards {
            if let ShardState::Leased { worker: holder, .. } = &s.state {
                if holder != worker || l.url != url {
                    return Err(Rejection::busy(format!(
                        "the stream is held by worker '{holder}' at {}; it resumes here once that lease expires",
                        l.url
                    )));
                }
            }
        }
        let streams = self.live_streams_on(worker, Some(job)).count() as u32;
        if streams >= capacity {
            return Err(Rejection::busy(format!("worker '{worker}' is full: {streams} live streams, capacity {capacity}")));
        }
        Ok(())
    }

    /// A live RTMP push job on `live.worker`'s slot: running at once,
    /// nothing to probe; its one shard is open-ended and ends where the
    /// publisher stops (see `report.rs`).
    pub(super) fn create_live(&mut self, spec: &JobSpec, live: &LiveSpec, now_ms: u64, ch: &mut Changes) -> Applied {
        let taken = self
            .jobs
            .values()
            .any(|j| !j.state.is_finished() && j.live.as_ref().is_some_and(|l| l.worker == live.worker && l.slot == live.slot));
        if taken {
            return Err(Rejection::busy(format!("live slot {} of worker '{}' was just taken by another stream", live.slot, live.worker)));
        }
        let id = next_id(&mut self.next_job, ch);
        self.jobs.insert(id, Job::new(id, spec.clone(), JobState::Running, now_ms, vec![Shard::open_ended()], Some(live.clone())));
        ch.jobs.insert(id);
        Ok(Response::JobCreated { job: id, existing: false })
    }

    /// The push resumes on `worker`, whose lobby took its publisher.
    pub(super) fn move_live(&mut self, job: u64, worker: &str, url: &str, ch: &mut Changes) -> Applied {
        self.check_move_live(job, worker, url)?;
        let l = self.jobs.get_mut(&job).and_then(|j| j.live.as_mut()).expect("checked: a running live push");
        tracing::info!(job_id = job, from = %l.worker, to = %worker, url = %panoptes_common::source_url::redact(url), "live stream moved");
        l.worker = worker.to_string();
        l.url = url.to_string();
        l.slot = LOBBY_SLOT;
        ch.jobs.insert(job);
        Ok(Response::Ok)
    }

    /// Fail a push nobody resumed: only while it still waits, pending, for
    /// its publisher on `worker` (a decision made before a resume elsewhere
    /// does not fail the resumed stream).
    pub(super) fn abandon_live(&mut self, job: u64, worker: &str, error: &str, now_ms: u64, ch: &mut Changes) -> Applied {
        let j = self.jobs.get_mut(&job).ok_or_else(|| Rejection::unknown(format!("unknown job {job}")))?;
        let waiting = j.state == JobState::Running
            && j.live.as_ref().is_some_and(|l| l.worker == worker)
            && j.shards.iter().any(|s| s.state == ShardState::Pending);
        if !waiting {
            return Err(Rejection::stale(format!("job {job} is no longer waiting for its publisher")));
        }
        ch.jobs.insert(job);
        finish(j, JobState::Failed, Some(error.to_string()), now_ms, ch);
        Ok(Response::Ok)
    }
}

