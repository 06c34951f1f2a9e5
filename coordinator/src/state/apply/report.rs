//! A worker's report for a leased shard: its frames' results committed
//! exactly once, the shard's cursor moved over what is stored, and the
//! shard (or the job) ended when the report says so and the results agree.
use super::{finish, Applied, Changes, ResultSink, State};
use crate::state::command::{Report, Response};
use crate::state::model::{analysed_in, JobState, ShardState};
use crate::state::outcome::{LeaseEvent, Rejection, ReleaseReason};

impl State {
    pub(super) fn report(&mut self, r: &Report, sink: &mut dyn ResultSink, ch: &mut Changes) -> Applied {
        let j = self.jobs.get_mut(&r.job).ok_or_else(|| Rejection::invalid(format!("unknown job {}", r.job)))?;
        if j.state != JobState::Running {
            return Err(Rejection::done(format!("job is {}", j.state.as_str())));
        }
        let step = j.spec.frame_step;
        let models = j.spec.models.clone();
        let live = j.is_live();
        let s = j.shards.get_mut(r.shard as usize).ok_or_else(|| Rejection::invalid(format!("no shard {}", r.shard)))?;
        let lease_end = match &s.state {
            ShardState::Leased { worker, epoch, lease_end, .. } if *worker == r.worker && *epoch == r.epoch => *lease_end,
            ShardState::Leased { worker, epoch, .. } if *epoch == r.epoch => {
                return Err(Rejection::stale(format!("stale lease: shard {} is leased to '{worker}', not to '{}'", r.shard, r.worker)))
            }
            ShardState::Leased { epoch, .. } => {
                return Err(Rejection::stale(format!("stale lease: epoch {} is not the current lease {epoch}", r.epoch)))
            }
            ShardState::Pending => return Err(Rejection::stale("stale lease: the shard is not leased")),
            // A holder still working past a cut learns here that the rest went elsewhere.
            ShardState::Done if r.frames.iter().any(|f| f.frame >= s.end) => {
                return Err(Rejection::done(format!(
                    "the shard is done: it ends at frame {}, the frames after were handed to another worker",
                    s.end
                )))
            }
            ShardState::Done => return Err(Rejection::done("the shard is already done")),
        };
        // Validate everything before changing anything. The holder may still
        // send frames up to the end it was leased with (`lease_end`).
        for f in &r.frames {
            if f.frame < s.start || f.frame >= lease_end || f.frame % step != 0 {
                return Err(Rejection::invalid(format!(
                    "frame {} is not an analysed frame of shard {} [{}, {lease_end})",
                    f.frame, s.index, s.start
                )));
            }
            if f.outputs.len() != models.len() || models.iter().any(|m| f.outputs.iter().filter(|o| &o.model == m).count() != 1) {
                return Err(Rejection::invalid(format!("frame {} must carry exactly one result per model {:?}", f.frame, models)));
            }
        }
        ch.jobs.insert(r.job);
        let mut stored = 0u32;
        // Frames at or beyond `end` were split off to another shard (work
        // stealing): that shard's holder stores them; here they are dropped.
        // Frames below the retention cut are not stored: they are older than
        // what the job keeps (a slow shard's frames, or a retried delivery of
        // frames since deleted).
        let trimmed_before = j.trimmed_before;
        for f in r.frames.iter().filter(|f| f.frame < s.end && f.frame >= trimmed_before) {
            if sink.contains(r.job, f.frame, 0) {
                continue; // a retried or duplicated delivery: already committed
            }
            for (mi, m) in models.iter().enumerate() {
                let o = f.outputs.iter().find(|o| &o.model == m).expect("validated above");
                if o.error {
                    j.counters.errors += 1; // a per-frame analysis error, recorded as that frame's result
                }
                sink.put(r.job, f.frame, mi as u8, f.timestamp, &o.results_json);
            }
            if let Some(img) = &f.image {
                sink.put_frame(r.job, f.frame, img);
            }
            // The newest committed timestamp: a live stream resumed elsewhere
            // goes on from it, and retention counts back from it.
            if f.timestamp >= j.counters.last_timestamp {
                j.counters.last_timestamp = f.timestamp;
                j.counters.last_timestamp_at_ms = r.now_ms;
            }
            stored += 1;
        }
        j.frames_done += stored as u64;
        if stored > 0 && r.frame_size.is_some() {
            j.frame_size = r.frame_size;
        }
        let reported_to = r.next_frame.min(s.end);
        if live {
            // Frames a live stream dropped are never reported: its cursor
            // follows the worker.
            s.cursor = s.cursor.max(reported_to);
        } else {
            // A file's cursor moves only over frames that are stored (or
            // were trimmed by retention), whatever the worker says.
            s.cursor = s.cursor.max(first_missing(sink, r.job, s.cursor, reported_to, step, trimmed_before));
        }
        // A file shard reported done with frames missing (the decoder met
        // the end of the stream early): a failed attempt, not a completion.
        let missing = if !live && r.done && r.error.is_none() { missing_in(sink, r.job, s.cursor, s.end, step, trimmed_before) } else { None };
        let error = r.error.clone().or_else(|| {
            missing.map(|(n, first)| {
                format!(
                    "the source ended early: {n} analysed frame(s) of shard {} (frames {}–{}) were never reported, the first is frame {first}; the file may be truncated or corrupt there",
                    s.index,
                    s.start,
                    s.end.saturating_sub(1)
                )
            })
        });
        // A retried or duplicated delivery (its frames all stored already)
        // carries the times of the first: counted once.
        if stored > 0 || r.frames.is_empty() {
            j.counters.times.add(&r.times);
        }
        j.counters.reports += 1;
        j.counters.report_bytes = j.counters.report_bytes.saturating_add(r.bytes);
        let mut outcome = None;
        if let Some(err) = &error {
            j.counters.errors += 1;
            if live {
                // A live stream cannot be replayed: no further attempt.
                let msg = format!("live stream failed: {err}");
                s.last_error = Some(err.clone());
                finish(j, JobState::Failed, Some(msg), r.now_ms, ch);
                return Ok(Response::Reported { stored });
            }
            s.attempts += 1;
            s.last_error = Some(err.clone());
            s.state = ShardState::Pending;
            ch.events.push(LeaseEvent::Released { job: r.job, shard: s.index, epoch: r.epoch, reason: ReleaseReason::Failed });
            if s.attempts >= j.spec.max_attempts.max(1) {
                let msg = format!("shard {} (frames {}–{}) failed {} times: {err}", s.index, s.start, s.end, s.attempts);
                outcome = Some((JobState::Failed, Some(msg)));
            }
        } else if r.done || (s.end < lease_end && analysed_in(s.cursor, s.end, step) == 0) {
            // Done as reported, or a split-off shard whose holder (unaware of
            // the cut) has committed every frame up to the cut: its next
            // report is refused, which stops it.
            if live {
                // The publisher stopped: the open-ended shard ends here.
                s.end = s.cursor;
            }
            s.state = ShardState::Done;
            ch.events.push(LeaseEvent::Released { job: r.job, shard: s.index, epoch: r.epoch, reason: ReleaseReason::Completed });
            if j.shards.iter().all(|s| s.state == ShardState::Done) {
                outcome = Some((JobState::Completed, None));
            }
        }
        if let Some((state, error)) = outcome {
            finish(j, state, error, r.now_ms, ch);
        }
        Ok(Response::Reported { stored })
    }

    /// Analysed frames still to commit for a job (for progress), by shard cursors.
    pub fn remaining(&self, job: u64) -> u64 {
        self.jobs
            .get(&job)
            .map(|j| j.shards.iter().filter(|s| s.state != ShardState::Done).map(|s| analysed_in(s.cursor, s.end, j.spec.frame_step)).sum())
            .unwrap_or(0)
    }
}

/// The analysed frames in `[from, to)` that are not stored, in order (frames
/// below `trimmed_before` count as stored: retention deleted them).
fn unstored<'a>(sink: &'a dyn ResultSink, job: u64, from: u64, to: u64, step: u64, trimmed_before: u64) -> impl Iterator<Item = u64> + 'a {
    (from.div_ceil(step) * step..to).step_by(step as usize).filter(move |f| *f >= trimmed_before && !sink.contains(job, *f, 0))
}

/// The first analysed frame in `[from, to)` that is not stored, else `to`.
fn first_missing(sink: &dyn ResultSink, job: u64, from: u64, to: u64, step: u64, trimmed_before: u64) -> u64 {
    unstored(sink, job, from, to, step, trimmed_before).next().unwrap_or(to.max(from))
}

/// How many analysed frames in `[from, to)` are not stored, and the first; `None` when all are.
fn missing_in(sink: &dyn ResultSink, job: u64, from: u64, to: u64, step: u64, trimmed_before: u64) -> Option<(u64, u64)> {
    let mut missing = unstored(sink, job, from, to, step, trimmed_before);
    let first = missing.next()?;
    Some((1 + missing.count() as u64, first))
}
