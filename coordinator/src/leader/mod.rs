//! The leader's duties, in one place, and what it keeps in memory only while
//! it leads: when each worker was last heard from, each lease's clock, the
//! jobs being probed, and the live pushes waiting for their publisher. A new
//! leader starts with none of it: every lease's clock starts afresh, and
//! workers it has not heard from yet get one lease timeout before they count
//! as gone.
//!
//! - `workers.rs`: what a worker asks of the leader: register, heartbeat
//!   (renew or revoke leases), lease (grant or split, planned by
//!   [`crate::scheduling::plan_lease`]), report (commit a shard's results
//!   and pictures), leave.
//! - `live.rs`: live streams: place a new endpoint on a worker, resume a
//!   stream on another worker's ingest lobby.
//! - `duties.rs`: every 200 ms while this member leads ([`run`]): probe
//!   queued jobs and commit their plans, expire the leases whose clocks ran
//!   out, and fail the live pushes nobody resumed within
//!   `live.connect_timeout_s`.
//! - `analytics.rs`: each job's analytics ([`analytics`], as soon as frames
//!   commit): its detections tracked and its alert rules evaluated over its
//!   newly committed frames, all they decided committed together.
//! - `events.rs`: each recorded alert delivered to the `[events]` sinks,
//!   one task per sink, the acknowledgements committed.
//!
//! The gRPC services only convert messages and call these; the memory below
//! is private to this module.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use panoptes_common::config::Config;
use panoptes_common::now_ms;
use tonic::Status;

use crate::picture_copies::Pictures;
use crate::probes::ProbePool;
use crate::state::command::{Request, Response};
use crate::store::StateReader;

mod analytics;
mod duties;
mod events;
mod live;
mod workers;
pub use analytics::analytics;
pub use duties::run;
pub use events::deliver;
pub use live::{create_live, resume_live, NewLive};
pub use workers::{heartbeat, lease, leave, register, report, HeldLease, Registration, ReportIn, Reported};

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

/// What the leader's duties need of the member they run in (the shared
/// handle, `Coordinator` in `handle.rs`; a trait so that this module does
/// not import the handle that holds its memory).
pub trait Member: Send + Sync + 'static {
    fn is_leader(&self) -> bool;
    /// `Ok` on the leader; else the error that names it, for the caller to retry there.
    fn require_leader(&self) -> Result<(), Status>;
    fn leader_memory(&self) -> &Leader;
    fn reader(&self) -> &StateReader;
    fn config(&self) -> &Config;
    fn probes(&self) -> &ProbePool;
    /// Where a report's pictures are put (a majority of the coordinators).
    fn pictures(&self) -> &Pictures;
    /// Commit a command (UNAVAILABLE, naming the leader, when this member
    /// does not lead).
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
