//! A coordinator process: opens its sled store, starts openraft, serves the
//! public, worker and Raft gRPC services, and — while it leads — probes new
//! jobs and expires leases.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use panoptes_common::config::Config;
use panoptes_common::now_ms;
use tonic::Status;
use tracing::{info, warn};

use crate::raft::log_store::{open_db, LogStore};
use crate::raft::network::Network;
use crate::raft::types::Raft;
use crate::scheduling::split_shards;
use crate::state::command::{Request, Response};
use crate::state::model::{JobState, Plan, ShardState};
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
}

pub struct Coordinator {
    pub id: u64,
    pub addr: String,
    pub raft: Raft,
    pub reader: StateReader,
    pub cfg: Config,
    pub peers: BTreeMap<u64, String>,
    pub mem: Mutex<LeaderMemory>,
    /// Channels to leaders, for forwarding writes.
    pub forward_channels: Mutex<HashMap<String, tonic::transport::Channel>>,
}

impl Coordinator {
    /// Propose a command and wait until it is committed and applied. On a
    /// follower the command is forwarded to the leader, so any member accepts
    /// any call.
    pub async fn write(&self, req: Request) -> Result<Response, Status> {
        let fwd = req.clone();
        match self.raft.client_write(req).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = f.leader_node.map(|n| n.addr).or_else(|| f.leader_id.and_then(|id| self.peers.get(&id).cloned()));
                match leader {
                    Some(addr) if addr != self.addr => self.forward(&addr, fwd).await,
                    _ => Err(Status::unavailable(format!("coordinator {} is not the leader and no leader is known yet (election in progress)", self.id))),
                }
            }
            Err(e) => Err(Status::unavailable(format!("coordinator {} cannot commit: {e}", self.id))),
        }
    }

    /// Hand a command to the leader at `addr` and return its outcome.
    async fn forward(&self, addr: &str, req: Request) -> Result<Response, Status> {
        let channel = {
            let mut chans = self.forward_channels.lock().unwrap();
            match chans.get(addr) {
                Some(c) => c.clone(),
                None => {
                    let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                        .map_err(|e| Status::internal(format!("bad leader address {addr}: {e}")))?
                        .connect_timeout(Duration::from_secs(2))
                        .tcp_nodelay(true);
                    let c = ep.connect_lazy();
                    chans.insert(addr.to_string(), c.clone());
                    c
                }
            }
        };
        let data = bincode::serialize(&req).map_err(|e| Status::internal(format!("cannot encode command: {e}")))?;
        let mut client = panoptes_proto::raft::raft_service_client::RaftServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut rq = tonic::Request::new(panoptes_proto::raft::RaftPayload { data });
        rq.set_timeout(Duration::from_secs(30));
        let reply = client
            .forward(rq)
            .await
            .map_err(|s| Status::unavailable(format!("cannot reach the leader at {addr}: {}", s.message())))?;
        let out: Result<Response, String> = bincode::deserialize(&reply.into_inner().data)
            .map_err(|e| Status::internal(format!("cannot decode the leader's reply: {e}")))?;
        out.map_err(|e| Status::unavailable(format!("the leader at {addr} could not commit: {e}")))
    }

    /// The leader's address as far as this node knows.
    pub fn leader_hint(&self) -> String {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader
            .and_then(|id| m.membership_config.membership().get_node(&id).map(|n| n.addr.clone()).or_else(|| self.peers.get(&id).cloned()))
            .unwrap_or_else(|| "unknown (election in progress)".into())
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
        self.raft.metrics().borrow().current_leader == Some(self.id)
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

/// Where a coordinator runs and keeps its data.
pub struct NodeOptions {
    pub id: u64,
    pub listen: String,
    pub data_dir: PathBuf,
    pub peers: BTreeMap<u64, String>,
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
    let mut peers = opts.peers.clone();
    peers.insert(opts.id, addr.clone());

    let db_path = opts.data_dir.join("raft.sled");
    let db = tokio::task::spawn_blocking(move || open_db(&db_path))
        .await?
        .with_context(|| format!("failed to open the store in {}", opts.data_dir.display()))?;
    let log_store = LogStore::open(&db).context("failed to open the Raft log")?;
    let sm = StateMachineStore::open(&db, opts.data_dir.join("snapshots")).context("failed to open the state machine")?;
    let reader = sm.reader();

    let hb = cfg.coordinator.raft_heartbeat_ms.max(20);
    let raft_cfg = openraft::Config {
        cluster_name: "panoptes".into(),
        heartbeat_interval: hb,
        election_timeout_min: hb * 3,
        election_timeout_max: hb * 6,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.coordinator.snapshot_logs.max(10)),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    }
    .validate()
    .context("invalid Raft timing settings")?;
    let raft = Raft::new(opts.id, Arc::new(raft_cfg), Network::new(opts.id), log_store, sm).await.context("failed to start Raft")?;

    let node = Arc::new(Coordinator { id: opts.id, addr: addr.clone(), raft: raft.clone(), reader, cfg, peers: peers.clone(), mem: Mutex::default(), forward_channels: Mutex::default() });

    // Bootstrap: the lowest-numbered member initialises a brand-new cluster with
    // every configured member; on restart the stored membership is used.
    let lowest = *peers.keys().next().expect("peers contain this node");
    if lowest == opts.id && !raft.is_initialized().await? {
        let members: BTreeMap<u64, BasicNode> = peers.iter().map(|(id, a)| (*id, BasicNode { addr: a.clone() })).collect();
        info!(members = ?members.keys().collect::<Vec<_>>(), "initialising a new cluster");
        if let Err(e) = raft.initialize(members).await {
            warn!(error = %e, "cluster initialisation skipped");
        }
    }

    info!(id = opts.id, %addr, data_dir = %opts.data_dir.display(), "coordinator listening");
    println!("coordinator {} listening on {addr}", opts.id);

    let leader_loop = tokio::spawn(leader_loop(node.clone()));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let served = tonic::transport::Server::builder()
        .add_service(crate::raft::service::server(raft.clone()))
        .add_service(crate::api::server(node.clone()))
        .add_service(crate::worker_api::server(node.clone()))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    leader_loop.abort();
    let _ = raft.shutdown().await;
    db.flush_async().await.ok();
    served.context("gRPC server failed")?;
    info!(id = opts.id, "coordinator stopped");
    Ok(())
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
        }
        was_leader = true;

        let (queued, leased) = node.reader.read(|a| {
            let queued: Vec<(u64, String)> =
                a.state.jobs.values().filter(|j| j.state == JobState::Queued).map(|j| (j.id, j.spec.source.clone())).collect();
            let mut leased = Vec::new();
            for j in a.state.jobs.values().filter(|j| j.state == JobState::Running) {
                for s in &j.shards {
                    if let ShardState::Leased { epoch, worker, .. } = &s.state {
                        leased.push((j.id, s.index, *epoch, worker.clone()));
                    }
                }
            }
            (queued, leased)
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
        for (job, shard, epoch, worker) in expired {
            warn!(job_id = job, shard, epoch, %worker, "lease expired; its unacknowledged frames go back to pending");
            if let Err(e) = node.write(Request::Expire { job, shard, epoch }).await {
                warn!(error = %e, "could not expire lease");
            }
        }
    }
}

/// Probe a queued job's source and commit its plan (or its failure).
async fn probe_job(node: Arc<Coordinator>, job: u64, source: String) {
    let src = source.clone();
    let probed = tokio::time::timeout(Duration::from_secs(120), tokio::task::spawn_blocking(move || panoptes_media::probe(&src))).await;
    let req = match probed {
        Ok(Ok(Ok(info))) => {
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
        Ok(Ok(Err(e))) => Request::Fail { job, error: e.to_string(), now_ms: now_ms() },
        Ok(Err(e)) => Request::Fail { job, error: format!("probing '{source}' crashed: {e}"), now_ms: now_ms() },
        Err(_) => Request::Fail { job, error: format!("probing '{source}' took longer than 120 s"), now_ms: now_ms() },
    };
    if let Request::Fail { error, .. } = &req {
        warn!(job_id = job, %error, "job failed");
    }
    if let Err(e) = node.write(req).await {
        warn!(job_id = job, error = %e, "could not commit the probe outcome; will retry");
    }
    node.mem.lock().unwrap().probing.remove(&job);
}
