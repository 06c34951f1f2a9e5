//! Delivering events (`crate::events`) while this member leads: one task
//! per sink, each on its own, so a slow or dead sink holds up nothing else.
use std::sync::Arc;
use std::time::Duration;

use panoptes_common::metrics;
use tracing::{info, warn};

use super::Member;
use crate::events::{Event, Sink};
use crate::state::command::{Request, Response, Stream};

/// How often a sink with nothing to send looks again, and the first retry delay.
const IDLE: Duration = Duration::from_millis(200);
/// The longest wait between retries of a failing sink.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a sink does next: the oldest unacknowledged alert of the lowest
/// job that has one (then its oldest track event), or skip the events past
/// the queue bound.
enum Next {
    Send(Event),
    Skip { job: u64, stream: Stream, upto: u64, skipped: u64 },
}

fn next<M: Member>(node: &M, sink: &str, queue_max: u64) -> Option<Next> {
    let found = node.reader().read(|a| {
        for j in a.state.jobs.values() {
            for stream in [Stream::Alerts, Stream::Tracks] {
                let (recorded, delivered, kept_from) = match stream {
                    Stream::Alerts => (j.alerts.recorded(), &j.alerts.delivered, j.alerts.kept_from),
                    Stream::Tracks => (j.track_events.recorded, &j.track_events.delivered, j.track_events.kept_from),
                };
                let at = delivered.get(sink).copied().unwrap_or(0);
                if recorded <= at {
                    continue;
                }
                // Retention deleted events this sink had not taken: skipped.
                if kept_from > at + 1 {
                    let upto = (kept_from - 1).min(recorded);
                    return Some(Err(Next::Skip { job: j.id, stream, upto, skipped: upto - at }));
                }
                if recorded - at > queue_max {
                    let upto = recorded - queue_max;
                    return Some(Err(Next::Skip { job: j.id, stream, upto, skipped: upto - at }));
                }
                return Some(match stream {
                    Stream::Alerts => Err(match j.alerts.get(at + 1) {
                        Some(f) => Next::Send(Event::alert(j.id, at + 1, f)),
                        None => Next::Skip { job: j.id, stream, upto: at + 1, skipped: 1 },
                    }),
                    // Stored under its own key: read outside the state lock.
                    Stream::Tracks => Ok((j.id, at + 1)),
                });
            }
        }
        None
    })?;
    match found {
        Err(next) => Some(next),
        Ok((job, seq)) => node.reader().track_event(job, seq).map(|e| Next::Send(Event::track(job, seq, &e))),
    }
}

/// Deliver to `sink` while this member leads (until aborted).
pub async fn deliver<M: Member>(node: Arc<M>, mut sink: Sink) {
    let kind = if matches!(sink, Sink::Mqtt(_)) { "mqtt" } else { "webhook" };
    let name = sink.name().to_string();
    let shown = sink.shown();
    let queue_max = node.config().events.queue_max.max(1);
    let mut backoff = IDLE;
    let mut failing = false;
    loop {
        let work = if node.is_leader() { next(&*node, &name, queue_max) } else { None };
        let Some(work) = work else {
            tokio::time::sleep(IDLE).await;
            continue;
        };
        let (job, stream, upto, skipped) = match work {
            Next::Skip { job, stream, upto, skipped } => {
                warn!(sink = %shown, job_id = job, ?stream, skipped, queue_max, "an event sink fell too far behind (or retention deleted events it had not taken): skipping its oldest undelivered events");
                metrics::inc(crate::metrics::EVENTS_DROPPED, &[("sink", kind)], skipped);
                (job, stream, upto, skipped)
            }
            Next::Send(e) => match sink.send(&e).await {
                Ok(()) => {
                    if failing {
                        info!(sink = %shown, "event sink reachable again");
                        failing = false;
                    }
                    backoff = IDLE;
                    metrics::inc(crate::metrics::EVENTS_DELIVERED, &[("sink", kind)], 1);
                    (e.job, e.stream, e.seq, 0)
                }
                Err(err) => {
                    if !failing {
                        warn!(sink = %shown, event = %e.id, error = %err, "cannot deliver an event; retrying with backoff (up to {} s)", MAX_BACKOFF.as_secs());
                        failing = true;
                    }
                    metrics::inc(crate::metrics::EVENT_ERRORS, &[("sink", kind)], 1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        match node.commit(Request::Delivered { job, sink: name.clone(), stream, upto, skipped }).await {
            Ok(Response::Ok) | Ok(Response::Rejected(_)) => {}
            Ok(other) => warn!(?other, "unexpected outcome of a delivery"),
            Err(e) => {
                // Lost leadership, most likely: the next leader sends it again (same id).
                warn!(sink = %shown, error = %e.message(), "could not record a delivery");
                tokio::time::sleep(IDLE).await;
            }
        }
    }
}
