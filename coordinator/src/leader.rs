//! The leader's duties, and what it keeps in memory only while it leads:
//! when each worker was last heard from, each lease's clock, the jobs being
//! probed, and the live pushes waiting for their publisher. A new leader
//! starts with none of it: every lease's clock starts afresh, and workers it
//! has not heard from yet get one lease timeout before they count as gone.
//!
//! Every 200 ms while this member leads ([`run`]): probe queued jobs and
//! commit their plans, expire the leases whose clocks ran out, and fail the
//! live pushes nobody resumed within `live.connect_timeout_s`. The gRPC
//! handlers tell it what they hear ([`Leader::heard_from`], [`Leader::renew`],
//! [`Leader::forget`]) and ask it who is live ([`Leader::live_workers`]);
//! nothing else touches its memory.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use panoptes_common::config::Config;
use panoptes_common::metrics;
use panoptes_common::now_ms;
use tonic::Status;
use tracing::{info, warn};

use crate::probes::ProbePool;
use crate::scheduling::split_shards;
use crate::state::command::{Request, Response};
use crate::state::model::{JobState, Plan, ShardState};
use crate::store::StateReader;

/// How often the leader's duties run.
const TICK: Duration = Duration::from_millis(200);

/// The leader's memory (see the module doc).
pub struct Leader {
    mem: Mutex<Memory>,
    lease_timeout: Duration,
}

#[derive(Default)]
struct Memory {
    /// When each lease runs out, unless renewed: (job, shard, epoch).
    deadlines: HashMap<(u64, u32, u64), Instant>,
    /// When each worker was last heard from (ms since the epoch).
    heartbeats: HashMap<String, u64>,
    /// Queued jobs whose source is being probed now.
    probing: HashSet<u64>,
    /// When this member last became leader.
    leader_since: Option<Instant>,
    /// Live pushes whose shard is pending (their worker was lost, or has not
    /// taken it yet), by (job, the worker it names), since when this leader
    /// has seen them so: one pending for longer than live.connect_timeout_s
    /// fails. A move to another worker starts a new window.
    live_waiting: HashMap<(u64, String), Instant>,
}

/// What the leader's duties need of the member they run in.
pub trait Member: Send + Sync + 'static {
    fn is_leader(&self) -> bool;
    fn leader_memory(&self) -> &Leader;
    fn reader(&self) -> &StateReader;
    fn config(&self) -> &Config;
    fn probes(&self) -> &ProbePool;
    /// Commit a command (forwarded to the leader when this member is not it).
    fn commit(&self, req: Request) -> impl Future<Output = Result<Response, Status>> + Send;
}

impl Leader {
    pub fn new(lease_timeout: Duration) -> Self {
        Leader { mem: Mutex::default(), lease_timeout }
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A worker registered or sent a heartbeat.
    pub fn heard_from(&self, worker: &str) {
        self.mem().heartbeats.insert(worker.to_string(), now_ms());
    }

    /// A worker left: it is not live (no live stream is placed on it, it
    /// competes for no shard) until it is heard from again.
    pub fn forget(&self, worker: &str) {
        self.mem().heartbeats.remove(worker);
    }

    /// Start (or restart) the clock of a lease: granted, renewed by a
    /// heartbeat, or extended by an accepted report.
    pub fn renew(&self, job: u64, shard: u32, epoch: u64) {
        let deadline = Instant::now() + self.lease_timeout;
        self.mem().deadlines.insert((job, shard, epoch), deadline);
    }

    /// The workers heard from within a lease timeout: those that compete
    /// for pending shards and may be given a live stream. Empty on a
    /// follower.
    pub fn live_workers(&self) -> BTreeSet<String> {
        let now = now_ms();
        let timeout = self.lease_timeout.as_millis() as u64;
        self.mem().heartbeats.iter().filter(|(_, &t)| now.saturating_sub(t) <= timeout).map(|(n, _)| n.clone()).collect()
    }

    /// When each worker was last heard from (ms since the epoch), and
    /// whether this leader has led for a lease timeout (before that, a
    /// worker not heard from yet is not taken as gone).
    pub fn worker_clocks(&self) -> (HashMap<String, u64>, bool) {
        let mem = self.mem();
        let settled = mem.leader_since.is_some_and(|t| t.elapsed() > self.lease_timeout);
        (mem.heartbeats.clone(), settled)
    }

    /// The leases of `leased` (job, shard, epoch, worker) whose clocks ran
    /// out at `now`; a lease seen for the first time starts its clock.
    /// Clocks of leases no longer held are dropped.
    fn expired(&self, leased: &[(u64, u32, u64, String)], now: Instant) -> Vec<(u64, u32, u64, String)> {
        let mut mem = self.mem();
        let held: HashSet<(u64, u32, u64)> = leased.iter().map(|(j, s, e, _)| (*j, *s, *e)).collect();
        mem.deadlines.retain(|k, _| held.contains(k));
        let mut out = Vec::new();
        for (job, shard, epoch, worker) in leased {
            let d = *mem.deadlines.entry((*job, *shard, *epoch)).or_insert(now + self.lease_timeout);
            if now >= d {
                out.push((*job, *shard, *epoch, worker.clone()));
            }
        }
        out
    }

    /// The live pushes of `waiting` (job, worker, url) pending for `window`
    /// or longer; a push seen waiting for the first time starts its window.
    fn abandoned(&self, waiting: Vec<(u64, String, String)>, now: Instant, window: Duration) -> Vec<(u64, String, String)> {
        let mut mem = self.mem();
        mem.live_waiting.retain(|(j, w), _| waiting.iter().any(|(job, worker, _)| job == j && worker == w));
        let mut out = Vec::new();
        for (job, worker, url) in waiting {
            let since = *mem.live_waiting.entry((job, worker.clone())).or_insert(now);
            if now.duration_since(since) >= window {
                out.push((job, worker, url));
            }
        }
        out
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_a_timeout_after_it_was_first_seen_or_renewed() {
        let l = Leader::new(Duration::from_millis(100));
        let t0 = Instant::now();
        let leased = vec![(1, 0, 7, "w1".to_string())];
        assert!(l.expired(&leased, t0).is_empty(), "the clock starts when first seen");
        assert_eq!(l.expired(&leased, t0 + Duration::from_millis(150)).len(), 1);
        l.renew(1, 0, 7);
        assert!(l.expired(&leased, Instant::now()).is_empty(), "renewed");
        // A lease no longer held loses its clock: seen again, it starts afresh.
        assert!(l.expired(&[], t0).is_empty());
        assert!(l.expired(&leased, Instant::now() + Duration::from_millis(50)).is_empty());
    }

    #[test]
    fn live_workers_are_those_heard_from_within_a_lease_timeout() {
        let l = Leader::new(Duration::from_secs(60));
        l.heard_from("w1");
        l.heard_from("w2");
        l.mem().heartbeats.insert("old".into(), now_ms() - 61_000);
        assert_eq!(l.live_workers().into_iter().collect::<Vec<_>>(), ["w1", "w2"]);
        l.forget("w2");
        assert_eq!(l.live_workers().into_iter().collect::<Vec<_>>(), ["w1"]);
    }

    #[test]
    fn a_live_push_is_abandoned_after_its_window_and_a_move_starts_a_new_one() {
        let l = Leader::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        let waiting = |worker: &str| vec![(3, worker.to_string(), "rtmp://h:1/live/k".to_string())];
        assert!(l.abandoned(waiting("w1"), t0, w).is_empty());
        assert_eq!(l.abandoned(waiting("w1"), t0 + w, w).len(), 1);
        // Moved to w2: a new window.
        assert!(l.abandoned(waiting("w2"), t0 + w, w).is_empty());
        assert_eq!(l.abandoned(waiting("w2"), t0 + w + w, w).len(), 1);
    }
}
