//! The duties that run on a clock while this member leads (every [`TICK`]):
//! probe queued jobs and commit their plans, expire the leases whose clocks
//! ran out, and fail the live pushes nobody resumed in time.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use panoptes_common::metrics;
use panoptes_common::now_ms;
use tracing::{info, warn};

use super::{Member, Memory};
use crate::scheduling::split_shards;
use crate::state::command::{Request, Response};
use crate::state::model::{JobState, Plan, ShardState};

/// How often the leader's duties run.
const TICK: Duration = Duration::from_millis(200);

/// Run the leader's duties while this member leads (until aborted).
pub async fn run<M: Member>(node: Arc<M>) {
    let mut tick = tokio::time::interval(TICK);
    let mut was_leader = false;
    loop {
        tick.tick().await;
        let leader = node.is_leader();
        if !leader {
            if was_leader {
                *node.leader_memory().mem() = Memory::default();
            }
            was_leader = false;
            continue;
        }
        if !was_leader {
            info!("became leader");
            node.leader_memory().mem().leader_since = Some(Instant::now());
        }
        was_leader = true;
        duties(&node).await;
    }
}

/// One round of the duties (see the module doc).
async fn duties<M: Member>(node: &Arc<M>) {
    let (queued, leased, live, waiting) = node.reader().read(|a| {
        let queued: Vec<(u64, String)> =
            a.state.jobs.values().filter(|j| j.state == JobState::Queued).map(|j| (j.id, j.spec.source.clone())).collect();
        let mut leased = Vec::new();
        let mut live = HashMap::new();
        let mut waiting = Vec::new();
        for j in a.state.jobs.values().filter(|j| j.state == JobState::Running) {
            if let Some(l) = &j.live {
                live.insert(j.id, l.url.clone());
                if j.shards.iter().any(|s| s.state == ShardState::Pending) {
                    waiting.push((j.id, l.worker.clone(), l.url.clone()));
                }
            }
            for s in &j.shards {
                if let ShardState::Leased { epoch, worker, .. } = &s.state {
                    leased.push((j.id, s.index, *epoch, worker.clone()));
                }
            }
        }
        (queued, leased, live, waiting)
    });

    for (job, source) in queued {
        if node.leader_memory().mem().probing.insert(job) {
            tokio::spawn(probe_job(node.clone(), job, source));
        }
    }

    let now = Instant::now();
    let expired = node.leader_memory().expired(&leased, now);
    // A live push pending for too long: its worker was lost and no
    // publisher resumed it (pushed its key to a worker's ingest lobby, or to
    // its URL again), or no worker took it.
    let window = Duration::from_secs(node.config().live.connect_timeout_s.max(1));
    for (job, worker, url) in node.leader_memory().abandoned(waiting, now, window) {
        let error = format!(
            "the live stream {url} lost its worker '{worker}' (or no worker took it), and no publisher resumed it within {} s \
             (live.connect_timeout_s: a publisher can resume a stream by pushing the same stream key to any worker's ingest \
             lobby, listed by `panoptes cluster status`); the frames before are kept; create a new endpoint with `panoptes live`",
            window.as_secs()
        );
        // Committed only if it is still waiting (not just resumed elsewhere).
        match node.commit(Request::AbandonLive { job, worker: worker.clone(), error, now_ms: now_ms() }).await {
            Ok(Response::Ok) => {
                warn!(job_id = job, %worker, "live stream abandoned: nobody resumed it");
                node.leader_memory().mem().live_waiting.remove(&(job, worker));
            }
            Ok(_) => {} // resumed meanwhile
            Err(e) => warn!(error = %e, "could not fail the live job"),
        }
    }
    for (job, shard, epoch, worker) in expired {
        if let Some(url) = live.get(&job) {
            // The publisher's connection died with the worker. The shard
            // waits, pending: for the publisher to push its key to any
            // worker's lobby (ResumeLive) or to this URL again, if the
            // worker comes back, within live.connect_timeout_s.
            warn!(job_id = job, %worker, url = %panoptes_common::source_url::redact(url), "live stream lost its worker (lease expired); waiting for its publisher to resume it on a worker's ingest lobby");
        } else {
            warn!(job_id = job, shard, epoch, %worker, "lease expired; its unacknowledged frames go back to pending");
        }
        match node.commit(Request::Expire { job, shard, epoch }).await {
            Ok(Response::Rejected(_)) => {} // the lease moved on meanwhile (a report, a hand-back)
            Ok(_) => metrics::inc(crate::metrics::LEASES_EXPIRED, &[], 1),
            Err(e) => warn!(error = %e, "could not expire lease"),
        }
    }
}

/// Probe a queued job's source and commit its plan (or its failure).
async fn probe_job<M: Member>(node: Arc<M>, job: u64, source: String) {
    let cfg = node.config();
    let limit = Duration::from_secs(cfg.sources.probe_timeout_s.max(1));
    let req = match node.probes().probe(&source, limit).await {
        Ok(info) => {
            let shards = split_shards(info.frames, &info.keyframes, cfg.cluster.shard_frames);
            info!(job_id = job, frames = info.frames, shards = shards.len(), width = info.width, height = info.height, "job planned");
            let plan = Plan {
                frames: info.frames,
                width: info.width,
                height: info.height,
                time_base: info.time_base,
                pts0: info.pts0,
                fps: info.fps,
                keyframes: info.keyframes,
            };
            Request::Plan { job, plan, shards, now_ms: now_ms() }
        }
        Err(error) => Request::Fail { job, error, now_ms: now_ms() },
    };
    if let Request::Fail { error, .. } = &req {
        warn!(job_id = job, %error, "job failed");
    }
    if let Err(e) = node.commit(req).await {
        warn!(job_id = job, error = %e, "could not commit the probe outcome; will retry");
    }
    node.leader_memory().mem().probing.remove(&job);
}

