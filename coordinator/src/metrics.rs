//! The coordinator's observability: Prometheus metrics and `/healthz` over
//! HTTP (served by `panoptes_common::metrics`), and the state behind gRPC
//! health checking.
//!
//! Event counts (reports, leases, forwarded writes) are counted where they
//! happen, per process. Everything that is state — Raft's term and indexes,
//! jobs, shards, workers — is read at scrape time by a collector, so it is
//! never stale and costs nothing between scrapes.
use std::net::SocketAddr;
use std::sync::{Arc, Once};

use panoptes_common::metrics::{self, counter, histogram, Sample};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::raft::known_leader;
use crate::store::StateReader;
use crate::raft::types::Raft;
use crate::state::model::{JobState, ShardState};

pub const REPORTS_ACCEPTED: &str = "panoptes_coordinator_reports_accepted_total";
pub const REPORTS_REFUSED: &str = "panoptes_coordinator_reports_refused_total";
pub const RESULTS_STORED: &str = "panoptes_coordinator_results_stored_total";
pub const REPORT_COMMIT_SECONDS: &str = "panoptes_coordinator_report_commit_seconds";
pub const LEASES_GRANTED: &str = "panoptes_coordinator_leases_granted_total";
pub const LEASES_EXPIRED: &str = "panoptes_coordinator_leases_expired_total";
pub const WORK_STOLEN: &str = "panoptes_coordinator_work_stolen_total";
pub const FORWARDED_CALLS: &str = "panoptes_coordinator_forwarded_calls_total";
pub const WRITE_ERRORS: &str = "panoptes_coordinator_write_errors_total";
pub const RESULT_STREAMS: &str = "panoptes_coordinator_result_streams";
pub const EVENTS_DELIVERED: &str = "panoptes_coordinator_events_delivered_total";
pub const EVENTS_DROPPED: &str = "panoptes_coordinator_events_dropped_total";
pub const EVENT_ERRORS: &str = "panoptes_coordinator_event_errors_total";


/// The gRPC services whose health is reported (besides "", the whole server).
pub const HEALTH_SERVICES: [&str; 2] =
    [panoptes_proto::api::panoptes_server::SERVICE_NAME, panoptes_proto::worker::worker_api_server::SERVICE_NAME];

/// Document the counted metrics and create them at zero, so that a scrape
/// shows every series before the first event.
pub fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use metrics::describe as d;
        d(REPORTS_ACCEPTED, "counter", "Worker reports accepted and committed (this coordinator was the leader).");
        d(REPORTS_REFUSED, "counter", "Worker reports refused, by reason: stale (the lease moved on), done (shard or job finished), invalid (frames or results a shard cannot have), unknown, busy.");
        d(RESULTS_STORED, "counter", "Result rows (one per frame and model) newly stored by accepted reports; duplicates are not counted.");
        d(REPORT_COMMIT_SECONDS, "histogram", "Time from receiving a Report call to its commit through Raft, in seconds.");
        d(LEASES_GRANTED, "counter", "Shard leases granted to workers (work-stealing splits included).");
        d(LEASES_EXPIRED, "counter", "Leases expired by the leader because their worker stopped renewing them.");
        d(WORK_STOLEN, "counter", "Work-stealing splits: a slow worker's shard cut and its tail leased to an idle worker.");
        d(FORWARDED_CALLS, "counter", "Calls this coordinator sent on to the leader (it was not the leader): writes, live endpoints, membership, cluster status.");
        d(WRITE_ERRORS, "counter", "Commands that could not be committed (no leader, leader unreachable, Raft stopped).");
        d(RESULT_STREAMS, "gauge", "StreamResults streams being served: each ends with its job or when its client goes away.");
        d(EVENTS_DELIVERED, "counter", "Events (alerts) acknowledged by a sink, by kind of sink (mqtt, webhook), this coordinator leading.");
        d(EVENTS_DROPPED, "counter", "Events skipped because their sink fell more than events.queue_max behind, by kind of sink.");
        d(EVENT_ERRORS, "counter", "Failed deliveries (retried with backoff), by kind of sink.");
    });
    metrics::gauge(RESULT_STREAMS, &[]);
    for name in [REPORTS_ACCEPTED, RESULTS_STORED, LEASES_GRANTED, LEASES_EXPIRED, WORK_STOLEN, FORWARDED_CALLS, WRITE_ERRORS] {
        counter(name, &[]);
    }
    for kind in crate::state::outcome::RejectionKind::ALL {
        counter(REPORTS_REFUSED, &[("reason", kind.label())]);
    }
    histogram(REPORT_COMMIT_SECONDS, &[]);
    for sink in ["mqtt", "webhook"] {
        for name in [EVENTS_DELIVERED, EVENTS_DROPPED, EVENT_ERRORS] {
            counter(name, &[("sink", sink)]);
        }
    }
}

/// Healthy: Raft runs and a leader is known (so writes can commit).
pub fn healthy(raft: &Raft) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.running_state.is_ok() && known_leader(&m).is_some()
}

/// Serve `/metrics` and `/healthz` on the port derived from the gRPC
/// address `grpc` (its port + 10000, or a free one when taken), with the
/// coordinator's scrape-time values. Returns the bound address.
/// `live_workers`: how many workers the leader has heard from lately (0 on
/// a follower).
pub async fn serve(
    grpc: SocketAddr,
    raft: Raft,
    id: u64,
    reader: StateReader,
    live_workers: impl Fn() -> usize + Send + Sync + 'static,
) -> std::io::Result<SocketAddr> {
    describe();
    let r = raft.clone();
    metrics::set_collector(move || collect(&r, id, &reader, live_workers()));
    metrics::serve(metrics::derived_http_addr(&grpc), Arc::new(move || healthy(&raft))).await
}

/// The scrape-time values: Raft, jobs, shards, workers.
fn collect(raft: &Raft, id: u64, reader: &StateReader, live_workers: usize) -> Vec<Sample> {
    let m = raft.metrics().borrow().clone();
    let mut out = Vec::new();
    let mut g = |name: &str, help: &'static str, labels: &[(&str, &str)], v: f64| out.push(Sample::gauge(name, help, labels, v));

    let leader = known_leader(&m);
    g("panoptes_coordinator_raft_term", "The current Raft term.", &[], m.current_term as f64);
    g("panoptes_coordinator_raft_last_log_index", "Index of the last entry in this member's Raft log.", &[], m.last_log_index.unwrap_or(0) as f64);
    g(
        "panoptes_coordinator_raft_last_applied_index",
        "Index of the last entry applied to this member's state machine (committed entries only).",
        &[],
        m.last_applied.map(|l| l.index).unwrap_or(0) as f64,
    );
    g("panoptes_coordinator_raft_snapshot_index", "Index of the last entry in this member's latest snapshot.", &[], m.snapshot.map(|l| l.index).unwrap_or(0) as f64);
    let leads = m.state == openraft::ServerState::Leader && leader == Some(id);
    g("panoptes_coordinator_raft_is_leader", "1 while this coordinator is the Raft leader, else 0.", &[], if leads { 1.0 } else { 0.0 });
    g("panoptes_coordinator_raft_leader_id", "The id of the leader as this member knows it; 0 while none is known.", &[], leader.unwrap_or(0) as f64);
    g("panoptes_coordinator_raft_running", "1 while this member's Raft runs, 0 once it stopped on a fatal error.", &[], if m.running_state.is_ok() { 1.0 } else { 0.0 });
    let membership = m.membership_config.membership();
    let members_help = "Members of the Raft cluster, by role: voter or learner (not voting).";
    g("panoptes_coordinator_raft_members", members_help, &[("role", "voter")], membership.voter_ids().count() as f64);
    g("panoptes_coordinator_raft_members", members_help, &[("role", "learner")], membership.learner_ids().count() as f64);
    if let Some(rep) = &m.replication {
        for (id, matched) in rep.iter() {
            let id = id.to_string();
            g(
                "panoptes_coordinator_raft_replication_matched_index",
                "On the leader: the last log index known to be replicated to each member.",
                &[("member", &id)],
                matched.map(|l| l.index).unwrap_or(0) as f64,
            );
        }
    }

    let (jobs, pending, leased, registered, draining) = reader.read(|a| {
        let mut jobs = [0u64; 5];
        let (mut pending, mut leased) = (0u64, 0u64);
        for j in a.state.jobs.values() {
            jobs[job_slot(j.state)] += 1;
            if j.state == JobState::Running {
                for s in &j.shards {
                    match s.state {
                        ShardState::Pending => pending += 1,
                        ShardState::Leased { .. } => leased += 1,
                        ShardState::Done => {}
                    }
                }
            }
        }
        let draining = a.state.workers.values().filter(|w| w.draining).count();
        (jobs, pending, leased, a.state.workers.len(), draining)
    });
    for state in [JobState::Queued, JobState::Running, JobState::Completed, JobState::Failed, JobState::Cancelled] {
        g("panoptes_coordinator_jobs", "Jobs by state (finished jobs count until pruned).", &[("state", state.as_str())], jobs[job_slot(state)] as f64);
    }
    let shards_help = "Shards of running jobs waiting for a worker (pending) or leased to one (leased).";
    g("panoptes_coordinator_shards", shards_help, &[("state", "pending")], pending as f64);
    g("panoptes_coordinator_shards", shards_help, &[("state", "leased")], leased as f64);
    g("panoptes_coordinator_workers_registered", "Workers registered with the cluster (replicated; live or not).", &[], registered as f64);
    g("panoptes_coordinator_workers_draining", "Registered workers being drained (granted no new shard).", &[], draining as f64);
    // Heartbeats are kept by the leader only: followers report 0 live workers.
    let live = live_workers;
    g(
        "panoptes_coordinator_workers_live",
        "On the leader: workers heard from (register or heartbeat) within a lease timeout; 0 on followers.",
        &[],
        live as f64,
    );
    out
}

fn job_slot(s: JobState) -> usize {
    match s {
        JobState::Queued => 0,
        JobState::Running => 1,
        JobState::Completed => 2,
        JobState::Failed => 3,
        JobState::Cancelled => 4,
    }
}

/// Keep gRPC health (`grpc.health.v1.Health`) in step with [`healthy`]:
/// "" and every service in [`HEALTH_SERVICES`] are SERVING while Raft runs
/// and a leader is known, NOT_SERVING otherwise. Sets the current status
/// before returning, then follows Raft's metrics in a task until Raft stops.
pub async fn track_health(raft: Raft, reporter: HealthReporter) {
    async fn set(reporter: &HealthReporter, up: bool) {
        let status = if up { ServingStatus::Serving } else { ServingStatus::NotServing };
        reporter.set_service_status("", status).await;
        for name in HEALTH_SERVICES {
            reporter.set_service_status(name, status).await;
        }
    }
    let mut up = healthy(&raft);
    set(&reporter, up).await;
    tokio::spawn(async move {
        let mut rx = raft.metrics();
        loop {
            if rx.changed().await.is_err() {
                break; // Raft has shut down
            }
            let now = {
                let m = rx.borrow_and_update();
                m.running_state.is_ok() && known_leader(&m).is_some()
            };
            if now != up {
                up = now;
                if up {
                    info!("gRPC health: SERVING (a leader is known)");
                } else {
                    warn!("gRPC health: NOT_SERVING (no leader known, or Raft stopped)");
                }
                set(&reporter, up).await;
            }
        }
        set(&reporter, false).await;
    });
}
