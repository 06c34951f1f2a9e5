//! The shared handle of a coordinator (`Coordinator`): what every service
//! and duty of this member uses to commit a command (on the leader), read the replicated state, find the leader
//! and change the membership. Start-up wiring is `node.rs`.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use panoptes_common::config::Config;
use panoptes_common::metrics;
use tonic::Status;
use tracing::info;

use crate::raft::known_leader;
use crate::raft::types::Raft;
use crate::state::command::{Request, Response};
use crate::picture_copies::Pictures;
use crate::store::StateReader;

/// Limits for gRPC messages (reports carry batches of results).
pub use crate::raft::network::MAX_MESSAGE_SIZE as MAX_MESSAGE_BYTES;

pub struct Coordinator {
    pub id: u64,
    pub addr: String,
    pub raft: Raft,
    /// Stored pictures: put on a majority beside the log, fetched from peers.
    pub pictures: Arc<Pictures>,
    /// Snapshots this member sends to its peers now (leader): `cluster status`.
    pub snapshot_sends: crate::raft::network::SnapshotSends,
    pub reader: StateReader,
    pub cfg: Config,
    pub peers: BTreeMap<u64, String>,
    /// What the leader keeps in memory only (crate::leader).
    pub leader: crate::leader::Leader,
    /// Channels to the other members (calls routed to the leader, probes).
    pub channels: Mutex<HashMap<String, tonic::transport::Channel>>,
    /// The threads queued jobs are probed on (not tokio's blocking pool).
    pub probes: crate::probes::ProbePool,
}

impl Coordinator {
    /// Propose a command on this member and wait until it is committed and
    /// applied. Only the leader commits: on any other member this fails with
    /// UNAVAILABLE naming the leader, and the caller retries there (a worker
    /// moves to the next coordinator; a user's call was routed to the leader
    /// before it got here, `api/cluster.rs` `route`). No command crosses
    /// between members, so each one is checked once, by the service that
    /// took the call (docs/SECURITY.md).
    pub async fn commit(&self, req: Request) -> Result<Response, Status> {
        let out = match self.raft.client_write(req).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(self.not_leader()),
            Err(e) => Err(Status::unavailable(format!("coordinator {} cannot commit: {e}", self.id))),
        };
        if out.is_err() {
            metrics::inc(crate::metrics::WRITE_ERRORS, &[], 1);
        }
        out
    }

    /// A cached, lazily connected channel to the member at `addr` (all of a
    /// member's gRPC services share its one address).
    pub fn channel_to(&self, addr: &str) -> Result<tonic::transport::Channel, Status> {
        let mut chans = self.channels.lock().unwrap();
        if let Some(c) = chans.get(addr) {
            return Ok(c.clone());
        }
        let ep = panoptes_proto::tls::endpoint(addr)
            .map_err(|e| Status::internal(format!("bad member address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let c = ep.connect_lazy();
        chans.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// The leader's id and address as far as this node knows.
    pub fn leader(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = known_leader(&m)?;
        let addr = m.membership_config.membership().get_node(&id).map(|n| n.addr.clone()).or_else(|| self.peers.get(&id).cloned())?;
        Some((id, addr))
    }

    /// The leader's address as far as this node knows.
    pub fn leader_hint(&self) -> String {
        self.leader().map(|(_, a)| a).unwrap_or_else(|| "unknown (election in progress)".into())
    }

    /// Fail with UNAVAILABLE naming the leader unless this node leads.
    pub fn require_leader(&self) -> Result<(), Status> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(self.not_leader())
        }
    }

    /// UNAVAILABLE naming the leader (or the election in progress), for the
    /// caller to retry there.
    fn not_leader(&self) -> Status {
        match self.leader() {
            Some((id, addr)) if id != self.id => Status::unavailable(format!("coordinator {} is not the leader; the leader is {addr}", self.id)),
            _ => Status::unavailable(format!("coordinator {} is not the leader and no leader is known yet (election in progress)", self.id)),
        }
    }

    pub fn is_leader(&self) -> bool {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        m.current_leader == Some(self.id) && m.state == openraft::ServerState::Leader
    }

    pub fn lease_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.cluster.lease_timeout_ms)
    }
}

/// How long a voter change (joint, then final configuration) may take to commit.
const MEMBERSHIP_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A committed membership: at which log index, who votes, who only learns.
#[derive(Debug, Clone)]
pub struct MembershipChange {
    pub log_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

impl MembershipChange {
    fn of(log_index: u64, m: &openraft::Membership<u64, BasicNode>) -> Self {
        MembershipChange { log_index, voters: m.voter_ids().collect(), learners: m.learner_ids().collect() }
    }
}

/// Membership changes. Leader only: callers forward to the leader first.
impl Coordinator {
    /// The current membership: voter ids, and every member's address (voters and learners).
    pub fn membership(&self) -> (BTreeSet<u64>, BTreeMap<u64, String>) {
        let m = self.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        (mem.voter_ids().collect(), mem.nodes().map(|(id, n)| (*id, n.addr.clone())).collect())
    }

    /// Add coordinator `id` serving on `addr`: as a learner first, wait up to
    /// `timeout` until it holds every log entry up to its own addition, then
    /// make it a voter. Adding a voter again at the same address changes
    /// nothing.
    pub async fn add_member(&self, id: u64, addr: &str, timeout: Duration) -> Result<MembershipChange, Status> {
        self.require_leader()?;
        let (voters, nodes) = self.membership();
        if let Some(old) = nodes.get(&id) {
            if old != addr {
                return Err(Status::failed_precondition(format!(
                    "coordinator {id} is already a member at {old}; to move it, remove it (panoptes cluster remove-member {id}) and add it again"
                )));
            }
            if voters.contains(&id) {
                info!(member = id, %addr, "already a voting member");
                let m = self.raft.metrics().borrow().membership_config.clone();
                return Ok(MembershipChange::of(m.log_id().map(|l| l.index).unwrap_or(0), m.membership()));
            }
        }
        if let Some((other, _)) = nodes.iter().find(|(i, a)| **i != id && a.as_str() == addr) {
            return Err(Status::failed_precondition(format!("{addr} is already the address of coordinator {other}")));
        }
        info!(member = id, %addr, "adding a learner");
        let added = self.raft.add_learner(id, BasicNode { addr: addr.to_string() }, false).await.map_err(membership_error)?;
        let target = added.log_id.index;
        // Wait until the leader has replicated to it everything up to its own
        // addition (or stops leading).
        let caught_up = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| match &m.replication {
                    None => true,
                    Some(r) => r.get(&id).is_some_and(|l| l.is_some_and(|l| l.index >= target)),
                },
                "new member caught up",
            )
            .await;
        match caught_up {
            Ok(m) if m.replication.is_none() => {
                return Err(Status::unavailable(format!("coordinator {} stopped leading while coordinator {id} was catching up; run add-member again", self.id)))
            }
            Ok(_) => {}
            Err(_) => {
                let matched = self.raft.metrics().borrow().replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index);
                return Err(Status::failed_precondition(format!(
                    "coordinator {id} at {addr} was added as a learner but has not caught up within {}s (it has entries up to {}, it needs {target}). \
                     Is it running (`panoptes coordinator --id {id} --listen {addr} --join ...`)? Run add-member again once it is, or remove-member {id}",
                    timeout.as_secs(),
                    matched.map(|i| i.to_string()).unwrap_or_else(|| "none".into())
                )));
            }
        }
        info!(member = id, %addr, log_index = target, "learner caught up; making it a voter");
        self.change_voters(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await
    }

    /// Remove coordinator `id` (voter or learner). Refuses to remove the last
    /// voter. The leader may remove itself: it steps down once the new
    /// membership is committed.
    pub async fn remove_member(&self, id: u64) -> Result<MembershipChange, Status> {
        self.require_leader()?;
        let (voters, nodes) = self.membership();
        if !nodes.contains_key(&id) {
            let ids: Vec<String> = nodes.keys().map(|i| i.to_string()).collect();
            return Err(Status::not_found(format!("coordinator {id} is not a member; the members are {}", ids.join(", "))));
        }
        if !voters.contains(&id) {
            info!(member = id, "removing a learner");
            return self.change_voters(ChangeMembers::RemoveNodes(BTreeSet::from([id]))).await;
        }
        if voters.len() == 1 {
            return Err(Status::failed_precondition(format!("coordinator {id} is the last voting member; removing it would leave no cluster")));
        }
        info!(member = id, leader = (id == self.id), "removing a voter");
        self.change_voters(ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await
    }

    /// Commit a membership change (both phases for voter changes), bounded in time.
    async fn change_voters(&self, change: ChangeMembers<u64, BasicNode>) -> Result<MembershipChange, Status> {
        match tokio::time::timeout(MEMBERSHIP_COMMIT_TIMEOUT, self.raft.change_membership(change, false)).await {
            Ok(r) => {
                let r = r.map_err(membership_error)?;
                let m = r.membership.ok_or_else(|| Status::internal("openraft committed a membership change without reporting the membership"))?;
                Ok(MembershipChange::of(r.log_id.index, &m))
            }
            Err(_) => Err(Status::failed_precondition(format!(
                "the membership change was proposed but not committed within {}s: is a majority of the old and of the new members up? \
                 `panoptes cluster status` shows the membership",
                MEMBERSHIP_COMMIT_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Explain why openraft refused a membership change.
fn membership_error(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Status::unavailable(format!(
            "this coordinator is no longer the leader (the leader is {}); retry",
            f.leader_id.map(|i| i.to_string()).unwrap_or_else(|| "unknown: election in progress".into())
        )),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_))) => {
            Status::failed_precondition("another membership change is still in progress; retry in a moment")
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => Status::failed_precondition(format!("membership change refused: {c}")),
        RaftError::Fatal(f) => Status::unavailable(format!("this coordinator's Raft has stopped: {f}")),
    }
}


impl crate::leader::Member for Coordinator {
    fn is_leader(&self) -> bool {
        Coordinator::is_leader(self)
    }
    fn leader_memory(&self) -> &crate::leader::Leader {
        &self.leader
    }
    fn reader(&self) -> &StateReader {
        &self.reader
    }
    fn config(&self) -> &Config {
        &self.cfg
    }
    fn probes(&self) -> &crate::probes::ProbePool {
        &self.probes
    }
    fn require_leader(&self) -> Result<(), Status> {
        Coordinator::require_leader(self)
    }
    fn pictures(&self) -> &Pictures {
        &self.pictures
    }
    fn commit(&self, req: Request) -> impl std::future::Future<Output = Result<Response, Status>> + Send {
        Coordinator::commit(self, req)
    }
}
