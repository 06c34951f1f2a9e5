//! Cluster status, membership changes, and the one way a call that must
//! run on the leader gets there ([`ApiService::route`], [`on_leader!`]).
use super::*;

/// The start of a handler that must run on the leader (every write: Raft
/// commits only there): `let (caller, msg) = on_leader!(self, req, method,
/// "what", timeout);` goes on with the caller and the message when this
/// member leads, and otherwise returns the leader's own answer to the same
/// call, sent on through [`ApiService::route`].
macro_rules! on_leader {
    ($self:ident, $req:ident, $method:ident, $what:expr, $timeout:expr) => {{
        let caller = Caller::of(&$req);
        let (metadata, _, msg) = $req.into_parts();
        match $self.route($what, &metadata, msg, $timeout)? {
            Route::Here(msg) => (caller, msg),
            Route::Leader { addr, request } => {
                return $self.client(&addr)?.$method(request).await.map_err(|s| forwarded_error(s, &addr));
            }
        }
    }};
}

/// gRPC metadata marking a call a follower forwarded to the leader.
pub(super) const FORWARDED: &str = "x-panoptes-forwarded";

/// Where a call that must run on the leader is answered.
pub(super) enum Route<T> {
    /// Here: this member is the leader.
    Here(T),
    /// At the leader `addr`: send `request` there and pass its answer on
    /// (through [`forwarded_error`]).
    Leader { addr: String, request: tonic::Request<T> },
}

/// A failure of a call forwarded to the leader: transport trouble means "retry".
pub(super) fn forwarded_error(s: Status, leader: &str) -> Status {
    if s.code() == tonic::Code::Unknown || s.code() == tonic::Code::Cancelled {
        return Status::unavailable(format!("cannot reach the leader at {leader}: {}", s.message()));
    }
    s
}


/// Cluster status, membership and forwarding.
impl ApiService {
    /// A public-API client for the member at `addr` (cached channel).
    pub(super) fn client(&self, addr: &str) -> Result<PanoptesClient<Channel>, Status> {
        Ok(PanoptesClient::new(self.node.channel_to(addr)?).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Route a call that only the leader can answer: every write (submit,
    /// cancel, prune, drain, a live endpoint: Raft commits only there),
    /// membership changes (Raft changes them there) and the whole cluster
    /// status (replication progress, worker heartbeats). A follower sends
    /// the call on once, with the caller's authorization and marked
    /// [`FORWARDED`], bounded by `timeout`; the leader's gate checks the
    /// caller's token and role again, and the leader records the owner from
    /// it. A member that gets a marked call and does not lead refuses it
    /// (retry), so two members with stale views cannot bounce it between
    /// them. This is the only way a call crosses between members: no
    /// command does (`handle.rs` `commit`). `what` names the call in the log.
    pub(super) fn route<T>(&self, what: &str, metadata: &tonic::metadata::MetadataMap, msg: T, timeout: Duration) -> Result<Route<T>, Status> {
        if self.node.is_leader() {
            return Ok(Route::Here(msg));
        }
        let addr = self.leader_addr(metadata.get(FORWARDED).is_some())?;
        let mut request = tonic::Request::new(msg);
        caller_auth(metadata).apply(&mut request);
        request.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        request.set_timeout(timeout);
        info!(leader = %addr, "forwarding a {what} to the leader");
        panoptes_common::metrics::inc(crate::metrics::FORWARDED_CALLS, &[], 1);
        Ok(Route::Leader { addr, request })
    }

    /// The leader's address, for forwarding a call there (at most once).
    fn leader_addr(&self, forwarded: bool) -> Result<String, Status> {
        match self.node.leader() {
            _ if forwarded => Err(Status::unavailable(format!(
                "coordinator {} was forwarded this call but is not the leader (the leader is {}); retry",
                self.node.id,
                self.node.leader_hint()
            ))),
            Some((id, addr)) if id != self.node.id => Ok(addr),
            _ => Err(Status::unavailable(format!("coordinator {} is not the leader and no leader is known yet (election in progress)", self.node.id))),
        }
    }

    pub(super) fn membership_pb(&self, c: MembershipChange) -> pb::MembershipResponse {
        pb::MembershipResponse { voters: c.voters, learners: c.learners, leader: self.node.id, log_index: c.log_index }
    }

    /// This member's own entry: its role, log and whether it follows a leader.
    pub(super) fn own_view(&self) -> pb::ClusterStatusResponse {
        let m = self.node.raft.metrics().borrow().clone();
        let me = pb::MemberStatus {
            id: self.node.id,
            addr: self.node.addr.clone(),
            role: role_name(m.state).into(),
            last_log_index: m.last_log_index.unwrap_or(0),
            healthy: m.running_state.is_ok() && known_leader(&m).is_some(),
            ..Default::default()
        };
        pb::ClusterStatusResponse {
            leader: known_leader(&m).unwrap_or(0),
            term: m.current_term,
            members: vec![me],
            workers: Vec::new(),
            jobs: None,
            answered_by: self.node.id,
        }
    }

    /// Ask the member at `addr` for its own entry (bounded by [`PROBE_TIMEOUT`]).
    pub(super) async fn probe(&self, addr: &str, auth: &CallerAuth) -> Option<pb::ClusterStatusResponse> {
        let mut client = self.client(addr).ok()?;
        let mut rq = tonic::Request::new(pb::ClusterStatusRequest { no_forward: true, self_only: true });
        auth.apply(&mut rq);
        rq.set_timeout(PROBE_TIMEOUT);
        let r = tokio::time::timeout(PROBE_TIMEOUT, client.cluster_status(rq)).await.ok()?.ok()?;
        Some(r.into_inner())
    }

    /// The whole status from this member's view: members (each probed),
    /// workers (heartbeat ages are known to the leader only), job counts.
    pub(super) async fn cluster_view(&self, auth: &CallerAuth) -> pb::ClusterStatusResponse {
        let m = self.node.raft.metrics().borrow().clone();
        let leader = known_leader(&m).unwrap_or(0);
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let nodes: Vec<(u64, String)> = membership.nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
        let probes = futures::future::join_all(nodes.iter().map(|(id, addr)| async move {
            if *id == self.node.id {
                Some(self.own_view())
            } else {
                self.probe(addr, auth).await
            }
        }))
        .await;
        let mut members = Vec::new();
        for ((id, addr), probe) in nodes.iter().zip(probes) {
            let seen = probe.as_ref().filter(|p| p.answered_by == *id).and_then(|p| p.members.first().map(|me| (p.leader, me.clone())));
            let role = if *id == leader {
                "leader"
            } else if !voters.contains(id) {
                "learner"
            } else if seen.as_ref().is_some_and(|(_, me)| me.role == "candidate") {
                "candidate"
            } else {
                "follower"
            };
            // What the leader has replicated to it, when it does not answer.
            let replicated = m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index).unwrap_or(0);
            let (last_log_index, healthy) = match seen {
                Some((their_leader, me)) => (me.last_log_index, me.healthy && leader != 0 && their_leader == leader),
                None => (replicated, false),
            };
            // Catching up: only the leader knows what it has replicated and sends.
            let (behind, (snapshot_sent_bytes, snapshot_bytes)) = if leader == self.node.id && *id != leader {
                (m.last_log_index.unwrap_or(0).saturating_sub(replicated), self.node.snapshot_sends.get(*id).unwrap_or_default())
            } else {
                (0, (0, 0))
            };
            members.push(pb::MemberStatus {
                id: *id,
                addr: addr.clone(),
                role: role.into(),
                last_log_index,
                healthy,
                behind,
                snapshot_sent_bytes,
                snapshot_bytes,
            });
        }

        // A new leader has heard from no worker yet: like their leases, they get one lease timeout.
        let (heartbeats, grace_over) = self.node.leader.worker_clocks();
        let is_leader = leader == self.node.id;
        let timeout = self.node.cfg.cluster.lease_timeout_ms;
        let now = now_ms();
        let (workers, jobs) = self.node.reader.read(|a| {
            let mut active: HashMap<&str, u32> = HashMap::new();
            for s in a.state.jobs.values().filter(|j| j.state == JobState::Running).flat_map(|j| j.shards.iter()) {
                if let ShardState::Leased { worker, .. } = &s.state {
                    *active.entry(worker.as_str()).or_default() += 1;
                }
            }
            let workers = a
                .state
                .workers
                .values()
                .map(|w| {
                    let last = heartbeats.get(&w.name).map(|t| now.saturating_sub(*t));
                    let state = worker_state(is_leader, w.draining, last, grace_over, timeout);
                    pb::WorkerStatus {
                        name: w.name.clone(),
                        addr: w.addr.clone(),
                        state: state.into(),
                        capacity: w.capacity,
                        active_shards: active.get(w.name.as_str()).copied().unwrap_or(0),
                        last_heartbeat_ms: last,
                        ingest: lobby_url(&w.addr, w.capacity),
                    }
                })
                .collect::<Vec<_>>();
            let mut c = pb::JobCounts::default();
            for j in a.state.jobs.values() {
                match j.state {
                    JobState::Queued => c.queued += 1,
                    JobState::Running => c.running += 1,
                    JobState::Completed => c.completed += 1,
                    JobState::Failed => c.failed += 1,
                    JobState::Cancelled => c.cancelled += 1,
                }
            }
            (workers, c)
        });
        pb::ClusterStatusResponse { leader, term: m.current_term, members, workers, jobs: Some(jobs), answered_by: self.node.id }
    }
}
