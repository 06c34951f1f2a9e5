//! Issue 4: an in-process coordinator cluster whose network drops, delays and isolates nodes.
//!
//! 3 or 5 openraft members run in this process, each on the project's real sled log store and
//! state machine (in temp dirs on disk). They talk through a test-only [`RaftNetworkFactory`]
//! that hands every RPC (bincode round-tripped, as on the wire) straight to the target's `Raft`
//! handle via a shared [`Router`]. The router drops a fraction of requests and of replies, delays
//! messages, and can isolate a node (all its traffic in and out fails) and heal it.
//!
//! A scripted workload is driven through `client_write` on whichever member leads: submit a job,
//! plan it into shards, register two simulated workers, lease shards to them and report batches of
//! frames (with duplicated deliveries, retries after write errors or lost replies, and an expired
//! lease whose stale report must be refused). Faults are injected at progress points while it
//! runs. At the end, on every member: the job is completed, every (frame, model) result exists
//! exactly once with the expected content, the result set equals that of a fault-free run of the
//! same workload, and every acknowledged report's frames are present.
//!
//! The fault RNG is seeded from `PANOPTES_FAULT_SEED` (printed by every test). The seed fixes the
//! fault probabilities' draws; thread interleaving still varies, so a replay reproduces the same
//! kind of run, not the same byte-for-byte schedule. Every wait is bounded and fails with a message.
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, RPCTypes, ServerState, SnapshotPolicy};
use panoptes_coordinator::raft::log_store::{open_db, LogStore};
use panoptes_coordinator::raft::types::{NodeId, Raft, TypeConfig};
use panoptes_coordinator::state::command::{FrameOutputs, ModelOutput, Report, Request, Response};
use panoptes_coordinator::state::model::{Job, JobSpec, JobState, Plan, ShardState, StageTimes};
use panoptes_coordinator::state::outcome::RejectionKind;
use panoptes_coordinator::store::{StateMachineStore, StateReader};
use panoptes_coordinator::pictures::store::PictureStore;
use panoptes_coordinator::pictures::PictureHome;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// seeded randomness

const SEED_ENV: &str = "PANOPTES_FAULT_SEED";
const DEFAULT_SEED: u64 = 0x5EED_0004;

/// The seed from `PANOPTES_FAULT_SEED` (decimal or 0x-hex), else a fixed default; printed so a
/// failing run can be replayed.
fn seed(test: &str) -> u64 {
    let seed = match std::env::var(SEED_ENV) {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{SEED_ENV}={s:?} is not a u64 ({e}); use e.g. {SEED_ENV}=42"))
        }
        Err(_) => DEFAULT_SEED,
    };
    println!("[{test}] fault seed {seed} (replay with {SEED_ENV}={seed})");
    seed
}

/// SplitMix64: small, seedable, good enough to decide which message to drop.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Uniform in `[0, n)` (0 for n = 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the router: in-process delivery with drops, delays and isolation

/// How bad the network is. Applies to every Raft RPC, and (drops only) to replies to clients.
#[derive(Debug, Clone, Copy)]
struct Weather {
    /// Probability that a request is dropped before delivery; the same again that the reply is
    /// lost after the target handled it.
    drop_rate: f64,
    /// Half of the messages are held back for 1..=max_delay_ms before delivery.
    max_delay_ms: u64,
}

const CALM: Weather = Weather { drop_rate: 0.0, max_delay_ms: 0 };
const STORMY: Weather = Weather { drop_rate: 0.1, max_delay_ms: 20 };

#[derive(Debug, Default, Clone)]
struct Stats {
    rpcs: u64,
    dropped_requests: u64,
    dropped_replies: u64,
    delayed: u64,
    /// RPCs refused because an end was isolated or stopped.
    cut_off: u64,
    rpc_timeouts: u64,
    snapshot_chunks: u64,
    snapshots_installed: u64,
    client_timeouts: u64,
    client_replies_lost: u64,
    client_redirects: u64,
}

struct RouterState {
    rafts: BTreeMap<NodeId, Raft>,
    isolated: BTreeSet<NodeId>,
    weather: Weather,
    rng: Rng,
    stats: Stats,
}

/// What happens to one RPC, decided when it is sent.
enum Fate {
    Cut(String),
    Drop,
    Deliver { delay: Duration, lose_reply: bool },
}

#[derive(Clone)]
struct Router(Arc<Mutex<RouterState>>);

impl Router {
    fn new(seed: u64, weather: Weather) -> Router {
        Router(Arc::new(Mutex::new(RouterState {
            rafts: BTreeMap::new(),
            isolated: BTreeSet::new(),
            weather,
            rng: Rng(seed),
            stats: Stats::default(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, RouterState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    fn set_weather(&self, w: Weather) {
        self.lock().weather = w;
    }

    fn isolate(&self, id: NodeId) {
        self.lock().isolated.insert(id);
    }

    fn heal(&self, id: NodeId) {
        self.lock().isolated.remove(&id);
    }

    fn heal_all(&self) {
        self.lock().isolated.clear();
    }

    fn is_isolated(&self, id: NodeId) -> bool {
        self.lock().isolated.contains(&id)
    }

    /// The running Raft of `id` (None while it is stopped). Clients reach isolated nodes too:
    /// isolation cuts coordinator-to-coordinator traffic only.
    fn raft(&self, id: NodeId) -> Option<Raft> {
        self.lock().rafts.get(&id).cloned()
    }

    fn why_cut(st: &RouterState, from: NodeId, to: NodeId) -> Option<String> {
        if st.isolated.contains(&from) {
            Some(format!("node {from} is isolated"))
        } else if st.isolated.contains(&to) {
            Some(format!("node {to} is isolated"))
        } else if !st.rafts.contains_key(&to) {
            Some(format!("node {to} is stopped"))
        } else {
            None
        }
    }

    fn fate(&self, from: NodeId, to: NodeId) -> Fate {
        let mut st = self.lock();
        st.stats.rpcs += 1;
        if let Some(why) = Self::why_cut(&st, from, to) {
            st.stats.cut_off += 1;
            return Fate::Cut(why);
        }
        let w = st.weather;
        if st.rng.chance(w.drop_rate) {
            st.stats.dropped_requests += 1;
            return Fate::Drop;
        }
        let delay = if w.max_delay_ms > 0 && st.rng.chance(0.5) {
            st.stats.delayed += 1;
            Duration::from_millis(1 + st.rng.below(w.max_delay_ms))
        } else {
            Duration::ZERO
        };
        let lose_reply = st.rng.chance(w.drop_rate);
        if lose_reply {
            st.stats.dropped_replies += 1;
        }
        Fate::Deliver { delay, lose_reply }
    }

    /// The target at delivery time: it may have been isolated or stopped while the message was
    /// in flight.
    fn deliver_to(&self, from: NodeId, to: NodeId) -> Result<Raft, String> {
        let mut st = self.lock();
        if let Some(why) = Self::why_cut(&st, from, to) {
            st.stats.cut_off += 1;
            return Err(why);
        }
        Ok(st.rafts[&to].clone())
    }

    /// Whether a client loses the reply to a write that was committed (it then retries).
    fn lose_client_reply(&self) -> bool {
        let mut st = self.lock();
        let p = st.weather.drop_rate;
        let lost = st.rng.chance(p);
        if lost {
            st.stats.client_replies_lost += 1;
        }
        lost
    }

    fn count(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.lock().stats)
    }

    fn pick(&self, among: &[NodeId]) -> NodeId {
        among[self.lock().rng.below(among.len() as u64) as usize]
    }
}

#[derive(Debug)]
struct NetFault(String);

impl std::fmt::Display for NetFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NetFault {}

/// Through bincode and back, as the gRPC transport does.
fn wire<T: Serialize + DeserializeOwned>(v: &T) -> T {
    let bytes = bincode::serialize(v).expect("raft message encodes");
    bincode::deserialize(&bytes).expect("raft message decodes")
}

/// The test network factory of one member.
#[derive(Clone)]
struct RouterNet {
    from: NodeId,
    router: Router,
}

impl RaftNetworkFactory<TypeConfig> for RouterNet {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Conn {
        Conn { from: self.from, to: target, router: self.router.clone() }
    }
}

/// RPCs from one member to another, through the router.
struct Conn {
    from: NodeId,
    to: NodeId,
    router: Router,
}

impl Conn {
    async fn rpc<Req, Resp, E, Fut>(
        &self,
        action: RPCTypes,
        req: Req,
        option: &RPCOption,
        deliver: impl FnOnce(Raft, Req) -> Fut,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize + DeserializeOwned,
        Resp: Serialize + DeserializeOwned,
        E: std::error::Error + Serialize + DeserializeOwned,
        Fut: Future<Output = Result<Resp, E>>,
    {
        let (from, to) = (self.from, self.to);
        let unreachable = |why: String| RPCError::Unreachable(Unreachable::new(&NetFault(format!("{action} {from}->{to}: {why}"))));
        let lost = |what: &str| RPCError::Network(NetworkError::new(&NetFault(format!("{action} {from}->{to}: {what}"))));
        let (delay, lose_reply) = match self.router.fate(from, to) {
            Fate::Cut(why) => return Err(unreachable(why)),
            Fate::Drop => return Err(lost("request dropped")),
            Fate::Deliver { delay, lose_reply } => (delay, lose_reply),
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let raft = self.router.deliver_to(from, to).map_err(unreachable)?;
        let reply = match tokio::time::timeout(option.hard_ttl(), deliver(raft, wire(&req))).await {
            Ok(reply) => wire(&reply),
            Err(_) => {
                self.router.count(|s| s.rpc_timeouts += 1);
                return Err(RPCError::Timeout(Timeout { action, id: from, target: to, timeout: option.hard_ttl() }));
            }
        };
        if lose_reply {
            return Err(lost("reply dropped"));
        }
        if let Some(why) = Router::why_cut(&self.router.lock(), from, to) {
            return Err(unreachable(format!("{why} (reply lost)")));
        }
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(to, e)))
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(RPCTypes::AppendEntries, rpc, &option, |raft, req| async move { raft.append_entries(req).await })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        let done = rpc.done;
        let res = self
            .rpc(RPCTypes::InstallSnapshot, rpc, &option, |raft, req| async move { raft.install_snapshot(req).await })
            .await;
        if res.is_ok() {
            self.router.count(|s| {
                s.snapshot_chunks += 1;
                s.snapshots_installed += done as u64;
            });
        }
        res
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(RPCTypes::Vote, rpc, &option, |raft, req| async move { raft.vote(req).await }).await
    }
}

// ---------------------------------------------------------------------------------------------
// the cluster

/// Bound on every "wait until" in these tests.
const WAIT: Duration = Duration::from_secs(60);
/// How long a client waits for one `client_write` before trying elsewhere.
const WRITE_ATTEMPT: Duration = Duration::from_secs(2);
/// How long a client keeps retrying one write.
const WRITE_DEADLINE: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(20);

struct Member {
    dir: TempDir,
    /// None while the member is being restarted.
    raft: Option<Raft>,
    reader: Option<StateReader>,
}

/// A committed write: the response, who answered, and the log index it was applied at.
struct Written {
    resp: Response,
    node: NodeId,
    index: u64,
}

struct Cluster {
    name: &'static str,
    ids: Vec<NodeId>,
    router: Router,
    config: Arc<openraft::Config>,
    members: Mutex<BTreeMap<NodeId, Member>>,
    /// (term, leader) pairs seen in any member's metrics.
    leaders_seen: Arc<Mutex<BTreeSet<(u64, NodeId)>>>,
    leader_hint: AtomicU64,
    started: Instant,
    /// Set once the workload submitted its job.
    job: OnceLock<u64>,
    /// Reports answered `accepted` (or found committed after a lost reply), and their frames.
    acked_reports: AtomicU64,
    acked_frames: Mutex<BTreeSet<u64>>,
    workload_done: AtomicBool,
}

fn raft_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "faulty-network".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        install_snapshot_timeout: 1000,
        // Compact often: a member that fell behind has to be sent a snapshot.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        // Several install_snapshot chunks per snapshot, each exposed to the weather.
        snapshot_max_chunk_size: 4096,
        ..Default::default()
    };
    Arc::new(config.validate().expect("valid raft config"))
}

impl Cluster {
    /// `n` members on fresh sled dirs, initialised with all of them as voters, with a leader.
    async fn start(name: &'static str, n: u64, seed: u64, weather: Weather) -> Cluster {
        let c = Cluster {
            name,
            ids: (1..=n).collect(),
            router: Router::new(seed, weather),
            config: raft_config(),
            members: Mutex::new(BTreeMap::new()),
            leaders_seen: Arc::default(),
            leader_hint: AtomicU64::new(1),
            started: Instant::now(),
            job: OnceLock::new(),
            acked_reports: AtomicU64::new(0),
            acked_frames: Mutex::default(),
            workload_done: AtomicBool::new(false),
        };
        for &id in &c.ids {
            let dir = TempDir::new().expect("temp dir for a member");
            let (raft, reader) = c.open_member(id, dir.path()).await;
            c.members().insert(id, Member { dir, raft: Some(raft), reader: Some(reader) });
        }
        let voters: BTreeMap<NodeId, BasicNode> =
            c.ids.iter().map(|&id| (id, BasicNode::new(format!("in-process-{id}")))).collect();
        // Under drops the first election may need a retry; initialize itself only touches node 1.
        c.router.raft(1).unwrap().initialize(voters).await.expect("initialize the cluster");
        let leader = c.leader().await;
        c.log(format!("{n} members up, leader {leader}"));
        c
    }

    fn members(&self) -> MutexGuard<'_, BTreeMap<NodeId, Member>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, msg: impl AsRef<str>) {
        println!("[{} +{:>6.2}s] {}", self.name, self.started.elapsed().as_secs_f64(), msg.as_ref());
    }

    /// Open member `id`'s sled db in `dir` (creating or reopening it), start its Raft, register it
    /// with the router and watch its metrics for leaders.
    async fn open_member(&self, id: NodeId, dir: &Path) -> (Raft, StateReader) {
        let db_path = dir.join("db");
        let db = tokio::task::spawn_blocking(move || open_db(&db_path))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("member {id}: cannot open its sled db: {e}"));
        let log_store = LogStore::open(&db).expect("open log store");
        let pics = Arc::new(PictureStore::open(dir.join("pictures"), &db).expect("open picture store"));
        let sm = StateMachineStore::open(&db, dir.join("snapshots"), PictureHome::Local(pics)).expect("open state machine");
        let reader = sm.reader();
        let net = RouterNet { from: id, router: self.router.clone() };
        let raft = Raft::new(id, self.config.clone(), net, log_store, sm).await.expect("start raft");
        self.router.lock().rafts.insert(id, raft.clone());

        let seen = self.leaders_seen.clone();
        let mut metrics = raft.metrics();
        tokio::spawn(async move {
            loop {
                let (term, leader) = {
                    let m = metrics.borrow_and_update();
                    (m.current_term, m.current_leader)
                };
                if let Some(l) = leader {
                    seen.lock().unwrap().insert((term, l));
                }
                // Ends when the Raft is shut down and drops its metrics sender.
                if metrics.changed().await.is_err() {
                    break;
                }
            }
        });
        (raft, reader)
    }

    fn metrics(&self, id: NodeId) -> Option<openraft::RaftMetrics<NodeId, BasicNode>> {
        self.router.raft(id).map(|r| r.metrics().borrow().clone())
    }

    /// Wait (bounded) until `cond` holds, polling; fail with `what` otherwise.
    async fn until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(Instant::now() < deadline, "[{}] gave up after {WAIT:?} waiting until {what}", self.name);
            tokio::time::sleep(POLL).await;
        }
    }

    /// A leader that is not isolated and that a quorum of members (itself included) follows.
    fn settled_leader(&self) -> Option<NodeId> {
        let quorum = self.ids.len() / 2 + 1;
        let all: Vec<_> = self.ids.iter().filter_map(|&id| self.metrics(id)).collect();
        all.iter()
            .filter(|m| m.state == ServerState::Leader && !self.router.is_isolated(m.id))
            .map(|m| m.id)
            .find(|&l| {
                all.iter().filter(|m| m.current_leader == Some(l) && !self.router.is_isolated(m.id)).count() >= quorum
            })
    }

    async fn leader(&self) -> NodeId {
        let mut found = None;
        self.until("a leader is followed by a quorum", || {
            found = self.settled_leader();
            found.is_some()
        })
        .await;
        found.unwrap()
    }

    /// Commit `req` like a client would: send it to the presumed leader, follow `ForwardToLeader`,
    /// and on a timeout or a lost reply try again (elsewhere), until it is answered (bounded).
    async fn write(&self, req: &Request) -> Written {
        let deadline = Instant::now() + WRITE_DEADLINE;
        let mut target = self.leader_hint.load(Ordering::Relaxed);
        // A member that just timed out is avoided for a while even if others still point at it
        // (an isolated old leader keeps believing it leads).
        let mut shunned: Option<(NodeId, Instant)> = None;
        let mut last_error = String::from("none yet");
        let next = |t: NodeId| self.ids[(self.ids.iter().position(|&i| i == t).unwrap() + 1) % self.ids.len()];
        loop {
            assert!(
                Instant::now() < deadline,
                "[{}] no member committed {req:?} within {WRITE_DEADLINE:?}; last error: {last_error}",
                self.name
            );
            let Some(raft) = self.router.raft(target) else {
                last_error = format!("node {target} is stopped");
                target = next(target);
                tokio::time::sleep(POLL).await;
                continue;
            };
            match tokio::time::timeout(WRITE_ATTEMPT, raft.client_write(req.clone())).await {
                Ok(Ok(w)) => {
                    self.leader_hint.store(target, Ordering::Relaxed);
                    if self.router.lose_client_reply() {
                        // Committed, but the client never hears of it: it sends the same again.
                        last_error = "reply lost".into();
                        continue;
                    }
                    return Written { resp: w.data, node: target, index: w.log_id.index };
                }
                Ok(Err(e)) => {
                    last_error = format!("node {target}: {e}");
                    self.router.count(|s| s.client_redirects += 1);
                    let avoid = shunned.filter(|(_, at)| at.elapsed() < WRITE_ATTEMPT).map(|(id, _)| id);
                    target = match e.forward_to_leader().and_then(|f| f.leader_id) {
                        Some(l) if Some(l) != avoid && l != target => l,
                        _ => {
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            next(target)
                        }
                    };
                }
                Err(_) => {
                    last_error = format!("node {target} did not answer within {WRITE_ATTEMPT:?}");
                    self.router.count(|s| s.client_timeouts += 1);
                    shunned = Some((target, Instant::now()));
                    target = next(target);
                }
            }
        }
    }

    /// The state of a member that has applied `w` (the one that answered, unless it is being
    /// restarted).
    async fn state_after(&self, w: &Written) -> StateReader {
        let mut found = None;
        self.until(&format!("some member has applied index {}", w.index), || {
            let members = self.members();
            let applied = |id: &NodeId| {
                self.metrics(*id).and_then(|m| m.last_applied).map(|l| l.index >= w.index).unwrap_or(false)
            };
            found = std::iter::once(w.node)
                .chain(self.ids.iter().copied())
                .filter(applied)
                .find_map(|id| members.get(&id).and_then(|m| m.reader.clone()));
            found.is_some()
        })
        .await;
        found.unwrap()
    }

    fn progress(&self) -> u64 {
        self.acked_reports.load(Ordering::SeqCst)
    }

    /// Wait until `n` reports were acknowledged (or the workload finished).
    async fn at_progress(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while self.progress() < n && !self.workload_done.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "[{}] the workload made no progress to {n} reports", self.name);
            tokio::time::sleep(POLL).await;
        }
        if self.progress() < n {
            self.log(format!("workload finished before {n} reports"));
        }
    }

    // ---- faults

    /// Isolate the current leader and wait until the others elected a new one.
    async fn isolate_leader(&self) -> NodeId {
        let old = self.leader().await;
        self.router.isolate(old);
        self.log(format!("isolated leader {old} at {} reports", self.progress()));
        let new = self.leader().await;
        self.log(format!("new leader {new} (term {})", self.metrics(new).map(|m| m.current_term).unwrap_or(0)));
        old
    }

    /// Isolate one follower (chosen by the seeded RNG).
    async fn isolate_follower(&self) -> NodeId {
        let leader = self.leader().await;
        let followers: Vec<NodeId> =
            self.ids.iter().copied().filter(|&i| i != leader && !self.router.is_isolated(i)).collect();
        let f = self.router.pick(&followers);
        self.router.isolate(f);
        self.log(format!("isolated follower {f} at {} reports", self.progress()));
        f
    }

    fn heal(&self, id: NodeId) {
        self.router.heal(id);
        self.log(format!("healed {id} at {} reports", self.progress()));
    }

    /// Restart member `id` from its sled dir: isolate it, shut its Raft down, drop every handle
    /// on the db, reopen the same dir and check (still isolated, so from disk alone) that it gets
    /// back to at least what it had applied; then heal it.
    async fn restart(&self, id: NodeId) {
        self.router.isolate(id);
        let (raft, reader) = {
            let mut members = self.members();
            let m = members.get_mut(&id).unwrap();
            (m.raft.take().unwrap(), m.reader.take().unwrap())
        };
        self.router.lock().rafts.remove(&id);
        let applied_before = raft.metrics().borrow().last_applied.map(|l| l.index).unwrap_or(0);
        let results_before = self.job.get().map(|&j| all_results(&reader, j).len()).unwrap_or(0);
        raft.shutdown().await.unwrap_or_else(|e| panic!("member {id}: raft shutdown failed: {e}"));
        drop((raft, reader));
        self.log(format!("stopped member {id} (applied {applied_before}, {results_before} results) at {} reports", self.progress()));

        let dir = self.members()[&id].dir.path().to_path_buf();
        let (raft, reader) = self.open_member(id, &dir).await;
        let mut m = raft.metrics();
        tokio::time::timeout(WAIT, m.wait_for(|m| m.last_applied.map(|l| l.index).unwrap_or(0) >= applied_before))
            .await
            .unwrap_or_else(|_| {
                panic!("member {id} restarted from disk but did not get back to applied index {applied_before}")
            })
            .expect("metrics of the restarted member");
        let results_after = self.job.get().map(|&j| all_results(&reader, j).len()).unwrap_or(0);
        assert!(
            results_after >= results_before,
            "member {id} lost results across a restart: {results_before} before, {results_after} after"
        );
        {
            let mut members = self.members();
            let m = members.get_mut(&id).unwrap();
            m.raft = Some(raft);
            m.reader = Some(reader);
        }
        self.log(format!(
            "member {id} reopened from disk: applied {} (>= {applied_before}), {results_after} results",
            self.metrics(id).and_then(|m| m.last_applied).map(|l| l.index).unwrap_or(0)
        ));
        self.heal(id);
    }

    // ---- the end

    /// Calm the weather, heal everyone, and wait until all members follow one leader and have
    /// applied its whole log.
    async fn converge(&self) {
        self.router.set_weather(CALM);
        self.router.heal_all();
        self.until("every member applied the leader's whole log", || {
            let Some(l) = self.settled_leader() else { return false };
            let Some(last) = self.metrics(l).and_then(|m| m.last_log_index) else { return false };
            self.ids.iter().all(|&id| {
                self.metrics(id)
                    .map(|m| m.current_leader == Some(l) && m.last_applied.map(|a| a.index) == Some(last))
                    .unwrap_or(false)
            })
        })
        .await;
        let m = self.metrics(self.ids[0]).unwrap();
        self.log(format!("converged at index {:?}, term {}", m.last_applied.map(|l| l.index), m.current_term));
    }

    /// Check every member's state (see the module doc); returns the (common) result set.
    fn check_members(&self, job: u64, want: Option<&Results>) -> Results {
        let expected = expected_results();
        let acked = self.acked_frames.lock().unwrap().clone();
        let mut first: Option<Results> = None;
        for &id in &self.ids {
            let reader = self.members()[&id].reader.clone().unwrap();
            let j: Job = reader
                .read(|a| a.state.jobs.get(&job).cloned())
                .unwrap_or_else(|| panic!("member {id} does not know job {job}"));
            assert_eq!(j.state, JobState::Completed, "member {id}: job {job} is not completed: {:?}", j.error);
            assert!(j.shards.iter().all(|s| s.state == ShardState::Done), "member {id}: a shard is not done");
            // frames_done counts newly stored frames: a duplicate would have counted twice.
            assert_eq!((j.frames_done, j.frames_total()), (ANALYSED, ANALYSED), "member {id}: frames done/total");

            let rows = all_results(&reader, job);
            let mut got = Results::new();
            for r in rows {
                let key = (r.frame, r.model);
                let dup = got.insert(key, (r.timestamp.to_bits(), r.results_json));
                assert!(dup.is_none(), "member {id}: result {key:?} stored twice");
            }
            assert_eq!(got.len(), expected.len(), "member {id}: number of (frame, model) results");
            for (key, val) in &expected {
                assert_eq!(got.get(key), Some(val), "member {id}: result {key:?} missing or wrong");
            }
            for f in &acked {
                for m in 0..MODELS.len() as u8 {
                    assert!(got.contains_key(&(*f, m)), "member {id}: acknowledged frame {f} model {m} was lost");
                }
            }
            if let Some(want) = want {
                assert!(&got == want, "member {id}: results differ from the fault-free run");
            }
            match &first {
                None => first = Some(got),
                Some(f) => assert!(f == &got, "member {id}: results differ from member {}", self.ids[0]),
            }
        }
        first.unwrap()
    }

    fn summary(&self) {
        let s = self.router.stats();
        let elections = self.leaders_seen.lock().unwrap().len();
        let snaps: Vec<String> = self
            .ids
            .iter()
            .filter_map(|&id| self.metrics(id).map(|m| format!("{id}:{:?}/{:?}", m.snapshot.map(|l| l.index), m.purged.map(|l| l.index))))
            .collect();
        self.log(format!(
            "faults: {} rpcs, {} requests dropped, {} replies dropped, {} delayed, {} cut off (isolated/stopped), \
             {} router-side rpc timeouts; snapshots: {} chunks, {} installed over the network, per member snapshot/purged {}; \
             clients: {} write timeouts, {} replies lost, {} redirects; leaders seen (term, id): {} {:?}",
            s.rpcs,
            s.dropped_requests,
            s.dropped_replies,
            s.delayed,
            s.cut_off,
            s.rpc_timeouts,
            s.snapshot_chunks,
            s.snapshots_installed,
            snaps.join(" "),
            s.client_timeouts,
            s.client_replies_lost,
            s.client_redirects,
            elections,
            self.leaders_seen.lock().unwrap(),
        ));
    }

    async fn shutdown(&self) {
        let rafts: Vec<Raft> = self.members().values_mut().filter_map(|m| m.raft.take()).collect();
        self.router.lock().rafts.clear();
        for r in rafts {
            let _ = tokio::time::timeout(WAIT, r.shutdown()).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the workload

/// (frame, model index) → (timestamp bits, results JSON).
type Results = BTreeMap<(u64, u8), (u64, String)>;

const MODELS: [&str; 2] = ["objects", "colors"];
const FRAMES: u64 = 960;
const STEP: u64 = 2;
const ANALYSED: u64 = FRAMES / STEP;
const SHARDS: [(u64, u64); 4] = [(0, 240), (240, 480), (480, 720), (720, 960)];
/// Analysed frames per report.
const BATCH: usize = 4;
/// Where worker w1 stalls in shard 2 (its lease then expires and w2 takes over).
const STALL_AT: u64 = 592;
const NOW: u64 = 1_700_000_000_000;

/// A model's result for a frame: deterministic, distinct per (frame, model).
fn result_json(frame: u64, model: &str) -> String {
    format!(r#"{{"model":"{model}","frame":{frame},"score":{}}}"#, (frame * 7919 + model.len() as u64 * 104_729) % 1000)
}

fn timestamp(frame: u64) -> f64 {
    frame as f64 / 25.0
}

fn expected_results() -> Results {
    (0..FRAMES)
        .step_by(STEP as usize)
        .flat_map(|f| {
            MODELS.iter().enumerate().map(move |(mi, m)| ((f, mi as u8), (timestamp(f).to_bits(), result_json(f, m))))
        })
        .collect()
}

fn all_results(reader: &StateReader, job: u64) -> Vec<panoptes_coordinator::store::ResultRow> {
    reader.results(job, None, None, usize::MAX).0
}

fn report(worker: &str, job: u64, shard: u32, epoch: u64, frames: &[u64], next_frame: u64, done: bool) -> Report {
    Report {
        worker: worker.to_string(),
        job,
        shard,
        epoch,
        frames: frames
            .iter()
            .map(|&f| FrameOutputs {
                frame: f,
                timestamp: timestamp(f),
                outputs: MODELS
                    .iter()
                    .map(|m| ModelOutput { model: m.to_string(), results_json: result_json(f, m), error: false })
                    .collect(),
                image: None,
            })
            .collect(),
        next_frame,
        done,
        error: None,
        times: StageTimes::default(),
        bytes: 100,
        now_ms: NOW,
        frame_size: None,
    }
}

fn shard_of(reader: &StateReader, job: u64, shard: u32) -> panoptes_coordinator::state::model::Shard {
    reader.read(|a| a.state.jobs[&job].shards[shard as usize].clone())
}

impl Cluster {
    /// Lease `shard` to `worker`; returns its epoch and the shard's committed cursor.
    async fn grant(&self, worker: &str, job: u64, shard: u32) -> (u64, u64) {
        let w = self.write(&Request::Grant { worker: worker.into(), shards: vec![(job, shard)], now_ms: NOW }).await;
        let s = shard_of(&self.state_after(&w).await, job, shard);
        match w.resp {
            Response::Granted(g) if g.len() == 1 => (g[0].epoch, s.cursor),
            // An earlier attempt committed and its reply was lost: the lease is in the state.
            Response::Granted(g) if g.is_empty() => match s.state {
                ShardState::Leased { worker: ref owner, epoch, .. } if owner == worker => (epoch, s.cursor),
                other => panic!("grant of shard {shard} to {worker} found it {other:?}"),
            },
            other => panic!("grant of shard {shard} to {worker}: {other:?}"),
        }
    }

    /// Deliver one report; `duplicate` marks a deliberate second delivery of an accepted one.
    async fn report(&self, r: Report, duplicate: bool) {
        let w = self.write(&Request::Report(r.clone())).await;
        match &w.resp {
            Response::Reported { stored } => {
                assert!(!duplicate || *stored == 0, "a duplicated report stored {stored} frames again");
            }
            // An earlier attempt of this final report committed (reply lost, or the attempt timed
            // out but went through): the shard is done, so the retry is refused.
            Response::Rejected(reason)
                if r.done && shard_of(&self.state_after(&w).await, r.job, r.shard).state == ShardState::Done =>
            {
                self.log(format!("final report of shard {} was already committed ({reason})", r.shard));
            }
            other => panic!("[{}] report of {} for shard {} epoch {} refused: {other:?}", self.name, r.worker, r.shard, r.epoch),
        }
        self.acked_frames.lock().unwrap().extend(r.frames.iter().map(|f| f.frame));
        self.acked_reports.fetch_add(1, Ordering::SeqCst);
    }

    /// Report `shard`'s analysed frames from `from` (up to `stop`, or to its end and done), in
    /// batches, delivering every third batch twice.
    async fn run_shard(&self, worker: &str, job: u64, shard: u32, epoch: u64, from: u64, stop: Option<u64>) {
        let end = SHARDS[shard as usize].1;
        let frames: Vec<u64> = (from..stop.unwrap_or(end)).filter(|f| f % STEP == 0).collect();
        let batches: Vec<&[u64]> = frames.chunks(BATCH).collect();
        for (i, b) in batches.iter().enumerate() {
            let done = i + 1 == batches.len() && stop.is_none();
            let next = if done { end } else { b[b.len() - 1] + 1 };
            let r = report(worker, job, shard, epoch, b, next, done);
            self.report(r.clone(), false).await;
            if i % 3 == 1 && !done {
                self.report(r, true).await;
            }
        }
    }
}

/// The scripted job: submit, plan 4 shards, two workers; w1 runs shard 0 and half of shard 2,
/// w2 runs shard 1 (concurrently); w1's lease on shard 2 expires, w2 gets it, w1's late report
/// under the old epoch is refused; then w2 finishes shard 2 while w1 runs shard 3.
async fn workload(c: &Cluster) -> u64 {
    let spec = JobSpec {
        name: "faulty-network".into(),
        source: "/videos/clip.mp4".into(),
        models: MODELS.iter().map(|m| m.to_string()).collect(),
        frame_step: STEP,
        target_height: 720,
        request_id: Some("faulty-network-job".into()),
        max_attempts: 3,
        frames_height: 0,
        frames_quality: 0,
            frames_every_ms: 0,
        keep_s: 0,
        keep_what: Default::default(),
        owner: String::new(),
        rules: Vec::new(),
        zones: Vec::new(),
        tracks: false,
    };
    let job = match c.write(&Request::Submit { spec, now_ms: NOW }).await.resp {
        Response::JobCreated { job, .. } => job,
        other => panic!("submit: {other:?}"),
    };
    c.job.set(job).unwrap();
    let plan = Plan {
        frames: FRAMES,
        width: 1280,
        height: 720,
        time_base: (1, 25),
        pts0: 0,
        fps: 25.0,
        keyframes: SHARDS.iter().map(|&(s, _)| (s, s as i64)).collect(),
    };
    let w = c.write(&Request::Plan { job, plan, shards: SHARDS.to_vec(), now_ms: NOW }).await;
    // A retried Plan after a lost reply is refused because the job is already running.
    let state = c.state_after(&w).await.read(|a| a.state.jobs[&job].state);
    assert_eq!(state, JobState::Running, "plan: {:?}", w.resp);
    for name in ["w1", "w2"] {
        let reg = Request::RegisterWorker {
            name: name.into(),
            addr: format!("in-process-{name}"),
            capacity: 2,
            models: MODELS.iter().map(|m| m.to_string()).collect(),
            now_ms: NOW,
        };
        assert_eq!(c.write(&reg).await.resp, Response::Ok);
    }
    c.log(format!("job {job} planned, workers registered"));

    let w1 = async {
        let (e, cursor) = c.grant("w1", job, 0).await;
        c.run_shard("w1", job, 0, e, cursor, None).await;
        let (e1, cursor) = c.grant("w1", job, 2).await;
        c.run_shard("w1", job, 2, e1, cursor, Some(STALL_AT)).await;
        e1
    };
    let w2 = async {
        let (e, cursor) = c.grant("w2", job, 1).await;
        c.run_shard("w2", job, 1, e, cursor, None).await;
    };
    let (e1, ()) = tokio::join!(w1, w2);
    c.log(format!("shards 0 and 1 done, w1 stalls in shard 2 at {} reports", c.progress()));

    // w1 stalls: its lease expires and w2 gets the shard, resuming after what was acknowledged.
    let w = c.write(&Request::Expire { job, shard: 2, epoch: e1 }).await;
    let s = shard_of(&c.state_after(&w).await, job, 2);
    assert_eq!(s.state, ShardState::Pending, "expire: {:?}", w.resp);
    let (e2, cursor) = c.grant("w2", job, 2).await;
    assert!(e2 > e1, "the new lease's epoch {e2} is not above the expired {e1}");
    assert_eq!(cursor, STALL_AT - 1, "the re-granted shard must resume after w1's last acknowledged frame");

    // w1 wakes up and delivers its next batch under the expired epoch: refused, nothing stored.
    let stale_frames: Vec<u64> = (STALL_AT..STALL_AT + 2 * BATCH as u64).step_by(STEP as usize).collect();
    let stale = report("w1", job, 2, e1, &stale_frames, STALL_AT + 2 * BATCH as u64, false);
    let w = c.write(&Request::Report(stale)).await;
    match &w.resp {
        Response::Rejected(r) if r.kind == RejectionKind::Stale && r.message.contains("stale") => {}
        other => panic!("a report under the expired epoch {e1} was not refused as stale: {other:?}"),
    }
    let reader = c.state_after(&w).await;
    for f in &stale_frames {
        assert!(reader.results(job, Some(*f), None, 10).0.is_empty(), "the stale report stored frame {f}");
    }
    c.log(format!("stale report (epoch {e1}) refused; shard 2 now w2's (epoch {e2})"));

    let w2 = c.run_shard("w2", job, 2, e2, cursor, None);
    let w1 = async {
        let (e, cursor) = c.grant("w1", job, 3).await;
        c.run_shard("w1", job, 3, e, cursor, None).await;
    };
    tokio::join!(w1, w2);
    c.workload_done.store(true, Ordering::SeqCst);
    c.log(format!("workload done: {} reports acknowledged", c.progress()));
    job
}

/// The workload on a fresh, fault-free cluster of `n`: the result set every faulty run must match.
async fn fault_free_results(n: u64, seed: u64) -> Results {
    let c = Cluster::start("fault-free", n, seed, CALM).await;
    let job = workload(&c).await;
    c.converge().await;
    let results = c.check_members(job, None);
    c.shutdown().await;
    results
}

/// Run the workload on a stormy cluster of `n` with `chaos` alongside, then converge and check.
async fn faulty_run<F, Fut>(name: &'static str, n: u64, chaos: F)
where
    F: FnOnce(Arc<Cluster>) -> Fut,
    Fut: Future<Output = ()>,
{
    // One stormy cluster at a time: three at once on a loaded 2-core machine
    // (fsync on every append) starve elections, and the test then measures
    // the machine, not the protocol.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let seed = seed(name);
    let want = fault_free_results(n, seed).await;
    let c = Arc::new(Cluster::start(name, n, seed, STORMY).await);
    let (job, ()) = tokio::join!(workload(&c), chaos(c.clone()));
    c.converge().await;
    c.summary();
    c.check_members(job, Some(&want));
    c.log(format!("all {n} members hold the completed job and the fault-free run's {} results", want.len()));
    c.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// the tests

// The workload acknowledges 160 reports (99 before the expired lease, 61 after); the chaos
// scripts below act at progress points within that.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_survive_drops_delays_and_isolated_leader_and_follower() {
    faulty_run("3-isolations", 3, |c| async move {
        c.at_progress(15).await;
        let old = c.isolate_leader().await;
        c.at_progress(60).await;
        c.heal(old);
        c.at_progress(80).await;
        let f = c.isolate_follower().await;
        c.at_progress(120).await;
        c.heal(f);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_survive_a_leader_restart_from_disk() {
    faulty_run("3-restart", 3, |c| async move {
        c.at_progress(20).await;
        // The leader: isolated until the others elected a new one, then stopped and reopened
        // from its sled dir, and let back in to catch up.
        let old = c.isolate_leader().await;
        c.restart(old).await;
        c.at_progress(70).await;
        let f = c.isolate_follower().await;
        c.at_progress(110).await;
        c.heal(f);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_survive_a_minority_partition_and_a_restart() {
    faulty_run("5-members", 5, |c| async move {
        c.at_progress(15).await;
        // Leader and one follower cut off together: 3 of 5 remain, a quorum.
        let old = c.isolate_leader().await;
        let f = c.isolate_follower().await;
        c.at_progress(60).await;
        c.heal(old);
        c.heal(f);
        c.at_progress(90).await;
        let l = c.leader().await;
        let f = c.ids.iter().copied().find(|&i| i != l).unwrap();
        c.restart(f).await;
    })
    .await;
}
