//! Workers, and who holds which frames: registration, lease grants and
//! expiry, work-stealing splits, and leases handed back by a drain or a
//! worker that stops. Every lease change is recorded as a [`LeaseEvent`].
use super::{next_id, Applied, Changes, State};
use crate::state::command::{Granted, Response};
use crate::state::model::{analysed_in, JobState, Shard, ShardState, WorkerRec};
use crate::state::outcome::{LeaseEvent, Rejection, ReleaseReason};

impl State {
    /// A worker joins (or comes back: it keeps its draining flag).
    pub(super) fn register_worker(&mut self, name: &str, addr: &str, capacity: u32, models: &[String], now_ms: u64, ch: &mut Changes) -> Response {
        let draining = self.workers.get(name).is_some_and(|w| w.draining);
        let rec = WorkerRec { name: name.to_string(), addr: addr.to_string(), capacity, models: models.to_vec(), registered_at_ms: now_ms, draining };
        self.workers.insert(name.to_string(), rec);
        ch.workers.insert(name.to_string());
        Response::Ok
    }

    /// Stop (or resume) leasing to a worker; with `hand_back`, its leases
    /// of file jobs go back to pending.
    pub(super) fn drain(&mut self, worker: &str, draining: bool, hand_back: bool, ch: &mut Changes) -> Applied {
        let w = self.workers.get_mut(worker).ok_or_else(|| Rejection::unknown(format!("unknown worker '{worker}'")))?;
        w.draining = draining;
        ch.workers.insert(worker.to_string());
        let returned = if hand_back { self.hand_back(worker, ReleaseReason::Drain, ch) } else { 0 };
        Ok(Response::Drained { leases_returned: returned })
    }

    /// A worker that stops hands back its leases of file jobs.
    pub(super) fn leave(&mut self, worker: &str, ch: &mut Changes) -> Applied {
        if !self.workers.contains_key(worker) {
            return Err(Rejection::unknown(format!("unknown worker '{worker}'")));
        }
        Ok(Response::Drained { leases_returned: self.hand_back(worker, ReleaseReason::Leave, ch) })
    }

    /// Lease the named pending shards to `worker`, each under a fresh
    /// epoch; a shard that is no longer pending (or whose job stopped) is
    /// skipped. A draining worker gets nothing.
    pub(super) fn grant(&mut self, worker: &str, shards: &[(u64, u32)], now_ms: u64, ch: &mut Changes) -> Applied {
        match self.workers.get(worker) {
            None => return Err(Rejection::unknown(format!("unknown worker {worker}: register first"))),
            Some(w) if w.draining => return Ok(Response::Granted(Vec::new())),
            Some(_) => {}
        }
        let mut granted = Vec::new();
        for &(job, shard) in shards {
            let Some(j) = self.jobs.get_mut(&job) else { continue };
            if j.state != JobState::Running {
                continue;
            }
            // A live shard runs only on the worker its URL points to.
            if j.live.as_ref().is_some_and(|l| l.worker != worker) {
                continue;
            }
            let Some(s) = j.shards.get_mut(shard as usize) else { continue };
            if s.state != ShardState::Pending {
                continue;
            }
            let epoch = next_id(&mut self.next_epoch, ch);
            s.state = ShardState::Leased { worker: worker.to_string(), epoch, since_ms: now_ms, lease_end: s.end };
            ch.events.push(LeaseEvent::Granted { job, shard, epoch, worker: worker.to_string(), from: s.cursor, to: s.end });
            if j.counters.first_lease_ms == 0 {
                j.counters.first_lease_ms = now_ms;
            }
            ch.jobs.insert(job);
            granted.push(Granted { job, shard, epoch });
        }
        Ok(Response::Granted(granted))
    }

    /// A lease ran out: its shard waits, pending, from its committed cursor
    /// (a live push's for its publisher to come back, to this worker or to
    /// any worker's lobby: `MoveLive`).
    pub(super) fn expire(&mut self, job: u64, shard: u32, epoch: u64, ch: &mut Changes) -> Applied {
        let s = self
            .jobs
            .get_mut(&job)
            .and_then(|j| j.shards.get_mut(shard as usize))
            .ok_or_else(|| Rejection::unknown("unknown shard"))?;
        match &s.state {
            ShardState::Leased { epoch: e, .. } if *e == epoch => {
                ch.events.push(LeaseEvent::Released { job, shard, epoch, reason: ReleaseReason::Expired });
                s.state = ShardState::Pending;
                ch.jobs.insert(job);
                Ok(Response::Ok)
            }
            _ => Err(Rejection::stale("lease already changed")),
        }
    }

    /// See [`crate::state::command::Request::Split`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn split(&mut self, job: u64, shard: u32, epoch: u64, at: u64, worker: &str, now_ms: u64, ch: &mut Changes) -> Applied {
        let w = self.workers.get(worker).ok_or_else(|| Rejection::unknown(format!("unknown worker {worker}: register first")))?;
        if w.draining {
            return Err(Rejection::busy(format!("worker '{worker}' is draining")));
        }
        let j = self.jobs.get_mut(&job).ok_or_else(|| Rejection::unknown(format!("unknown job {job}")))?;
        if j.state != JobState::Running {
            return Err(Rejection::done(format!("job {job} is {}", j.state.as_str())));
        }
        if j.is_live() {
            return Err(Rejection::invalid(format!("job {job} is a live stream: its frames arrive at one worker")));
        }
        if let Some(m) = j.spec.models.iter().find(|m| !w.models.contains(m)) {
            return Err(Rejection::invalid(format!("worker '{worker}' does not offer model '{m}' of job {job}")));
        }
        let step = j.spec.frame_step.max(1);
        let index = j.shards.len() as u32;
        let s = j.shards.get_mut(shard as usize).ok_or_else(|| Rejection::unknown(format!("no shard {shard} in job {job}")))?;
        match &s.state {
            ShardState::Leased { epoch: e, worker: holder, .. } if *e == epoch => {
                if holder == worker {
                    return Err(Rejection::invalid(format!("worker '{worker}' already holds shard {shard}")));
                }
            }
            _ => return Err(Rejection::stale("lease already changed")),
        }
        // Both parts must keep work, the cut beyond what is committed.
        if at <= s.cursor || at >= s.end || analysed_in(s.cursor, at, step) == 0 || analysed_in(at, s.end, step) == 0 {
            return Err(Rejection::invalid(format!("cut at {at} leaves no work on one side of [{}, {}) of shard {shard}", s.cursor, s.end)));
        }
        let new_epoch = next_id(&mut self.next_epoch, ch);
        ch.jobs.insert(job);
        let mut tail = Shard::new(index, at, s.end);
        tail.state = ShardState::Leased { worker: worker.to_string(), epoch: new_epoch, since_ms: now_ms, lease_end: s.end };
        // The tail may hold the frame that made earlier attempts fail.
        tail.attempts = s.attempts;
        ch.events.push(LeaseEvent::Split { job, shard, epoch, at, new_shard: index, new_epoch, worker: worker.to_string(), to: s.end });
        s.end = at;
        j.shards.push(tail);
        Ok(Response::Granted(vec![Granted { job, shard: index, epoch: new_epoch }]))
    }

    /// The shards of running file jobs leased to `worker` go back to pending
    /// (attempts unchanged); a live stream stays where its publisher pushes
    /// to. Returns how many.
    fn hand_back(&mut self, worker: &str, reason: ReleaseReason, ch: &mut Changes) -> u32 {
        let mut returned = 0u32;
        for j in self.jobs.values_mut().filter(|j| j.state == JobState::Running && j.live.is_none()) {
            for s in &mut j.shards {
                if let ShardState::Leased { worker: w, epoch, .. } = &s.state {
                    if w == worker {
                        ch.events.push(LeaseEvent::Released { job: j.id, shard: s.index, epoch: *epoch, reason });
                        s.state = ShardState::Pending;
                        returned += 1;
                        ch.jobs.insert(j.id);
                    }
                }
            }
        }
        returned
    }
}
