//! A coordinator process: opens its sled store, starts openraft, serves the
//! public, worker and Raft gRPC services, and — while it leads — probes new
//! jobs and expires leases.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use panoptes_common::config::Config;
use panoptes_common::metrics;
use panoptes_common::now_ms;
use panoptes_proto::credentials::ClusterSecret;
use tonic::Status;
use tracing::{info, warn};

use crate::raft::log_store::{open_db_with_cache, LogStore};
use crate::raft::network::Network;
use crate::raft::types::Raft;
use crate::scheduling::split_shards;
use crate::state::command::{Request, Response};
use crate::state::model::{JobState, Plan, ShardState};
use crate::pictures::store::PictureStore;
use crate::pictures::object::ObjectPictures;
use crate::pictures::{PictureHome, Pictures};
use crate::state::store::{StateMachineStore, StateReader};

/// Limits for gRPC messages (reports carry batches of results).
pub use crate::raft::network::MAX_MESSAGE_SIZE as MAX_MESSAGE_BYTES;

/// What the leader keeps in memory only: lease deadlines and worker
/// heartbeats. A new leader starts every lease's clock afresh.
#[derive(Default)]
pub struct LeaderMemory {
    pub deadlines: HashMap<(u64, u32, u64), Instant>,
    pub heartbeats: HashMap<String, u64>,
    pub probing: HashSet<u64>,
    /// When this node last became leader (workers it has not heard from yet
    /// get the benefit of the doubt for one lease timeout after that).
    pub leader_since: Option<Instant>,
    /// Live pushes whose shard is pending (their worker was lost, or has not
    /// taken it yet), by (job, the worker it names), since when this leader
    /// has seen them so: one pending for longer than live.connect_timeout_s
    /// fails. A move to another worker starts a new window.
    pub live_waiting: HashMap<(u64, String), Instant>,
}

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
    pub mem: Mutex<LeaderMemory>,
    /// Channels to leaders, for forwarding writes.
    pub forward_channels: Mutex<HashMap<String, tonic::transport::Channel>>,
    /// The cluster secret this node presents to its peers (forwarded writes,
    /// Raft RPCs); empty when none is configured.
    pub secret: ClusterSecret,
    /// The threads queued jobs are probed on (not tokio's blocking pool).
    pub probes: crate::probes::ProbePool,
}

impl Coordinator {
    /// Propose a command and wait until it is committed and applied. On a
    /// follower the command is forwarded to the leader, so any member accepts
    /// any call.
    pub async fn write(&self, req: Request) -> Result<Response, Status> {
        self.write_as(req, &None).await
    }

    /// [`write`](Self::write) for a user's or an admin's call: forwarded to
    /// the leader with the caller's `authorization`, which the leader checks
    /// again (`RaftService/Forward`).
    pub async fn write_as(&self, req: Request, auth: &crate::api::CallerAuth) -> Result<Response, Status> {
        let fwd = req.clone();
        let out = match self.raft.client_write(req).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = f.leader_node.map(|n| n.addr).or_else(|| f.leader_id.and_then(|id| self.peers.get(&id).cloned()));
                match leader {
                    Some(addr) if addr != self.addr => {
                        metrics::inc(crate::metrics::FORWARDED_WRITES, &[], 1);
                        self.forward(&addr, fwd, auth).await
                    }
                    _ => Err(Status::unavailable(format!("coordinator {} is not the leader and no leader is known yet (election in progress)", self.id))),
                }
            }
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
        let mut chans = self.forward_channels.lock().unwrap();
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

    /// Hand a command to the leader at `addr` and return its outcome.
    async fn forward(&self, addr: &str, req: Request, auth: &crate::api::CallerAuth) -> Result<Response, Status> {
        let channel = self.channel_to(addr)?;
        let data = bincode::serialize(&req).map_err(|e| Status::internal(format!("cannot encode command: {e}")))?;
        let mut client = panoptes_proto::raft::raft_service_client::RaftServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut rq = tonic::Request::new(panoptes_proto::raft::RaftPayload { data });
        rq.set_timeout(Duration::from_secs(30));
        self.secret.apply(&mut rq);
        crate::api::with_auth(&mut rq, auth);
        let reply = client
            .forward(rq)
            .await
            .map_err(|s| Status::unavailable(format!("cannot reach the leader at {addr}: {}", s.message())))?;
        let out: Result<Response, String> = bincode::deserialize(&reply.into_inner().data)
            .map_err(|e| Status::internal(format!("cannot decode the leader's reply: {e}")))?;
        out.map_err(|e| Status::unavailable(format!("the leader at {addr} could not commit: {e}")))
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
            Err(Status::unavailable(format!("coordinator {} is not the leader; the leader is {}", self.id, self.leader_hint())))
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

    /// Start (or restart) the clock of a lease.
    pub fn renew(&self, job: u64, shard: u32, epoch: u64) {
        let deadline = Instant::now() + self.lease_timeout();
        self.mem.lock().unwrap().deadlines.insert((job, shard, epoch), deadline);
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

/// The leader as `m` knows it. A leader removed from the membership steps
/// down but keeps its vote, so openraft still names it: not a leader then.
pub fn known_leader(m: &openraft::RaftMetrics<u64, BasicNode>) -> Option<u64> {
    m.current_leader.filter(|l| *l != m.id || m.state == openraft::ServerState::Leader)
}

/// Where a coordinator runs and keeps its data.
pub struct NodeOptions {
    pub id: u64,
    pub listen: String,
    pub data_dir: PathBuf,
    pub peers: BTreeMap<u64, String>,
    /// Joining a running cluster (`panoptes cluster add-member`): never
    /// initialise a new cluster, wait to be added instead.
    pub join: bool,
}

/// Run a coordinator until `shutdown` resolves.
pub async fn run(cfg: Config, opts: NodeOptions, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    panoptes_media::init();
    std::fs::create_dir_all(&opts.data_dir).with_context(|| format!("failed to create data dir {}", opts.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("failed to listen on {} (is another node using it?)", opts.listen))?;
    let local: SocketAddr = listener.local_addr()?;
    let addr = local.to_string();
    panoptes_common::addresses::note(&opts.data_dir, "grpc", &addr);
    let mut peers = opts.peers.clone();
    peers.insert(opts.id, addr.clone());

    let db_path = opts.data_dir.join("raft.sled");
    let cache_bytes = cfg.coordinator.cache_mb << 20;
    let compress = cfg.coordinator.compress_store;
    let db = tokio::task::spawn_blocking(move || open_db_with_cache(&db_path, cache_bytes, compress))
        .await?
        .with_context(|| format!("failed to open the store in {}", opts.data_dir.display()))?;
    let log_store = LogStore::open(&db).context("failed to open the Raft log")?;
    let picture_store = Arc::new(
        PictureStore::open(opts.data_dir.join("pictures"), &db).with_context(|| format!("failed to open the picture store in {}", opts.data_dir.display()))?,
    );
    let home = if cfg.object_store.enabled() {
        let o = ObjectPictures::open(&cfg.object_store).map_err(anyhow::Error::msg)?;
        info!(object_store = %o.url(), "stored pictures go to the object store");
        PictureHome::Object(Arc::new(o))
    } else {
        PictureHome::Local(picture_store.clone())
    };
    let sm = StateMachineStore::open(&db, opts.data_dir.join("snapshots"), home.clone()).context("failed to open the state machine")?;
    let reader = sm.reader();

    let hb = cfg.coordinator.raft_heartbeat_ms.max(20);
    let raft_cfg = openraft::Config {
        cluster_name: "panoptes".into(),
        heartbeat_interval: hb,
        election_timeout_min: hb * 3,
        election_timeout_max: hb * 6,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.coordinator.snapshot_logs.max(10)),
        max_in_snapshot_log_to_keep: 100,
        install_snapshot_timeout: cfg.coordinator.snapshot_timeout_s * 1000,
        // Snapshot chunks (streamed from the file) well below the transport's message limit.
        snapshot_max_chunk_size: 4 << 20,
        ..Default::default()
    }
    .validate()
    .context("invalid Raft timing settings")?;
    // Read once at start-up: what this node presents to its peers.
    let secret = ClusterSecret::from_file(&cfg.security.cluster_secret_file).map_err(anyhow::Error::msg)?;
    let network = Network::new(opts.id).with_secret(secret.clone());
    let snapshot_sends = network.snapshot_sends();
    let raft = Raft::new(opts.id, Arc::new(raft_cfg), network, log_store, sm).await.context("failed to start Raft")?;

    let pictures = Arc::new(Pictures::new(opts.id, &home, picture_store.clone(), raft.clone(), secret.clone()));
    let node = Arc::new(Coordinator {
        id: opts.id,
        addr: addr.clone(),
        raft: raft.clone(),
        pictures: pictures.clone(),
        snapshot_sends,
        reader,
        cfg,
        peers: peers.clone(),
        mem: Mutex::default(),
        forward_channels: Mutex::default(),
        secret,
        probes: crate::probes::ProbePool::new(crate::probes::PROBE_THREADS).context("cannot start the probe threads")?,
    });

    // Bootstrap: the lowest-numbered member initialises a brand-new cluster with
    // every configured member; on restart the stored membership is used. A
    // member started with --join never initialises: the leader adds it
    // (`panoptes cluster add-member`) and it learns the membership from the log.
    let lowest = *peers.keys().next().expect("peers contain this node");
    let initialized = raft.is_initialized().await?;
    if opts.join && !initialized {
        info!(id = opts.id, %addr, "waiting to be added to a running cluster (panoptes cluster add-member {} {addr})", opts.id);
    }
    if !opts.join && lowest == opts.id && !initialized {
        let members: BTreeMap<u64, BasicNode> = peers.iter().map(|(id, a)| (*id, BasicNode { addr: a.clone() })).collect();
        info!(members = ?members.keys().collect::<Vec<_>>(), "initialising a new cluster");
        if let Err(e) = raft.initialize(members).await {
            warn!(error = %e, "cluster initialisation skipped");
        }
    }

    // Prometheus metrics and /healthz over HTTP, on the gRPC port + 10000
    // (a free port when that one is taken): printed in the log.
    let http = crate::metrics::serve(node.clone(), local).await.context("failed to serve metrics over HTTP")?;
    info!(id = opts.id, addr = %http, "metrics on http://{http}/metrics (health: http://{http}/healthz)");
    panoptes_common::addresses::note(&opts.data_dir, "metrics", &http.to_string());

    // Standard gRPC tooling: health checking (SERVING while a leader is
    // known) and server reflection (v1, and v1alpha for older clients).
    let (health, health_service) = tonic_health::server::health_reporter();
    crate::metrics::track_health(raft.clone(), health).await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(panoptes_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().context("invalid gRPC descriptor set for reflection")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("invalid gRPC descriptor set for reflection")?;

    info!(id = opts.id, %addr, data_dir = %opts.data_dir.display(), "coordinator listening");
    println!("coordinator {} listening on {addr}", opts.id);

    let leader_loop = tokio::spawn(leader_loop(node.clone()));
    let repair = tokio::spawn(pictures.clone().repair_loop(node.reader.clone()));
    let retention = tokio::spawn(crate::retention::retention_loop(node.clone()));
    // TCP_NODELAY on every accepted connection (tonic sets it only on
    // listeners it binds itself): with Nagle on, the server's small HTTP/2
    // frames (WINDOW_UPDATE for a report over 64 KiB, a reply's trailers)
    // waited for delayed ACKs, ~12 ms a report with pictures.
    // At most security.max_connections at once (crate::conn_limit).
    let sec = &node.cfg.security;
    let incoming = crate::conn_limit::capped(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)), sec.max_connections);
    // Authentication and rate limiting (docs/SECURITY.md): on when a tokens
    // file or a cluster secret is configured; plain development mode keeps
    // every call open as before.
    let gate = if sec.tokens_file.is_empty() && sec.cluster_secret_file.is_empty() {
        None
    } else {
        let auth = crate::auth::Auth::from_files(&sec.tokens_file, &sec.cluster_secret_file).map_err(anyhow::Error::msg)?;
        info!(tokens = !sec.tokens_file.is_empty(), cluster_secret = !sec.cluster_secret_file.is_empty(), "gRPC authentication on");
        let limiter = crate::auth::RateLimiter::new(sec.rate_limit_per_s, sec.rate_limit_burst);
        Some(Arc::new(crate::auth::Gate { auth, limiter }))
    };
    let max_request = usize::try_from(sec.max_request_bytes).unwrap_or(usize::MAX);
    let served = server_builder(sec)?
        .layer(crate::auth::GateLayer(gate.clone()))
        .add_service(crate::raft::service::server(raft.clone(), picture_store, gate.clone()))
        .add_service(crate::api::server(node.clone()).max_decoding_message_size(max_request))
        .add_service(crate::worker_api::server(node.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    leader_loop.abort();
    repair.abort();
    retention.abort();
    let _ = raft.shutdown().await;
    crate::raft::log_store::flush(&db).await.ok();
    served.context("gRPC server failed")?;
    info!(id = opts.id, "coordinator stopped");
    Ok(())
}

/// The gRPC server, over TLS when `security.tls_cert` is set: then with
/// `tls_ca`, client certificates signed by it are checked, and required with
/// `require_client_cert`.
fn server_builder(sec: &panoptes_common::config::SecuritySection) -> anyhow::Result<tonic::transport::Server> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    // HTTP/2 windows large enough that a report with its pictures (or a
    // snapshot chunk) is not held back by flow control (the default is 64 KiB).
    let builder = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        // A client that stops answering (gone without closing) is dropped.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if sec.tls_cert.is_empty() {
        return Ok(builder);
    }
    let read = |what: &str, p: &str| std::fs::read(p).with_context(|| format!("cannot read the {what} {p} (security.tls_*; make them with `panoptes certs`)"));
    // A client that does not finish its TLS handshake in 10 s is dropped.
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read("certificate", &sec.tls_cert)?, read("private key", &sec.tls_key)?))
        .timeout(Duration::from_secs(10));
    if !sec.tls_ca.is_empty() {
        tls = tls.client_ca_root(Certificate::from_pem(read("CA certificate", &sec.tls_ca)?)).client_auth_optional(!sec.require_client_cert);
    }
    info!(cert = %sec.tls_cert, client_certs = if sec.require_client_cert { "required" } else if sec.tls_ca.is_empty() { "not checked" } else { "optional" }, "gRPC over TLS");
    builder.tls_config(tls).context("invalid TLS certificate or key (security.tls_cert, tls_key)")
}

/// While this node leads: probe queued jobs, expire leases that ran out.
async fn leader_loop(node: Arc<Coordinator>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut was_leader = false;
    loop {
        tick.tick().await;
        let leader = node.is_leader();
        if !leader {
            if was_leader {
                *node.mem.lock().unwrap() = LeaderMemory::default();
            }
            was_leader = false;
            continue;
        }
        if !was_leader {
            info!(id = node.id, "became leader");
            node.mem.lock().unwrap().leader_since = Some(Instant::now());
        }
        was_leader = true;

        let (queued, leased, live, waiting) = node.reader.read(|a| {
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
            if node.mem.lock().unwrap().probing.insert(job) {
                tokio::spawn(probe_job(node.clone(), job, source));
            }
        }

        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut mem = node.mem.lock().unwrap();
            let timeout = node.lease_timeout();
            let live: HashSet<(u64, u32, u64)> = leased.iter().map(|(j, s, e, _)| (*j, *s, *e)).collect();
            mem.deadlines.retain(|k, _| live.contains(k));
            for (job, shard, epoch, worker) in &leased {
                let d = *mem.deadlines.entry((*job, *shard, *epoch)).or_insert(now + timeout);
                if now >= d {
                    expired.push((*job, *shard, *epoch, worker.clone()));
                }
            }
        }
        // A live push pending for too long: its worker was lost and no
        // publisher resumed it (pushed its key to a worker's ingest lobby,
        // or to its URL again), or no worker took it.
        let window = Duration::from_secs(node.cfg.live.connect_timeout_s.max(1));
        let mut abandoned = Vec::new();
        {
            let mut mem = node.mem.lock().unwrap();
            mem.live_waiting.retain(|(j, w), _| waiting.iter().any(|(job, worker, _)| job == j && worker == w));
            for (job, worker, url) in waiting {
                let since = *mem.live_waiting.entry((job, worker.clone())).or_insert(now);
                if now.duration_since(since) >= window {
                    abandoned.push((job, worker, url));
                }
            }
        }
        for (job, worker, url) in abandoned {
            let error = format!(
                "the live stream {url} lost its worker '{worker}' (or no worker took it), and no publisher resumed it within {} s \
                 (live.connect_timeout_s: a publisher can resume a stream by pushing the same stream key to any worker's ingest \
                 lobby, listed by `panoptes cluster status`); the frames before are kept; create a new endpoint with `panoptes live`",
                window.as_secs()
            );
            // Committed only if it is still waiting (not just resumed elsewhere).
            match node.write(Request::AbandonLive { job, worker: worker.clone(), error, now_ms: now_ms() }).await {
                Ok(Response::Ok) => {
                    warn!(job_id = job, %worker, "live stream abandoned: nobody resumed it");
                    node.mem.lock().unwrap().live_waiting.remove(&(job, worker));
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
                warn!(job_id = job, %worker, url = %panoptes_media::policy::redact(&url), "live stream lost its worker (lease expired); waiting for its publisher to resume it on a worker's ingest lobby");
            } else {
                warn!(job_id = job, shard, epoch, %worker, "lease expired; its unacknowledged frames go back to pending");
            }
            match node.write(Request::Expire { job, shard, epoch }).await {
                Ok(Response::Rejected(_)) => {} // the lease moved on meanwhile (a report, a hand-back)
                Ok(_) => metrics::inc(crate::metrics::LEASES_EXPIRED, &[], 1),
                Err(e) => warn!(error = %e, "could not expire lease"),
            }
        }
    }
}

/// Probe a queued job's source and commit its plan (or its failure).
async fn probe_job(node: Arc<Coordinator>, job: u64, source: String) {
    let limit = Duration::from_secs(node.cfg.sources.probe_timeout_s.max(1));
    let req = match node.probes.probe(&source, limit).await {
        Ok(info) => {
            let shards = split_shards(info.frames, &info.keyframes, node.cfg.cluster.shard_frames);
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
    if let Err(e) = node.write(req).await {
        warn!(job_id = job, error = %e, "could not commit the probe outcome; will retry");
    }
    node.mem.lock().unwrap().probing.remove(&job);
}
