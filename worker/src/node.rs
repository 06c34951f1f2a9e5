//! A worker process: loads its analyses, registers with the coordinators,
//! heartbeats, leases shards and runs each under a [`ShardSupervisor`], all
//! under one root actor that survives any shard's crash. It serves its
//! metrics (see [`crate::metrics`]) and health over HTTP on a port derived
//! from its listen address ([`metrics_addr`]).
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use panoptes_common::metrics::{derived_http_addr, serve};
use panoptes_common::retry::Backoff;
use panoptes_proto::credentials::ClusterSecret;
use panoptes_proto::failover::Coordinators;
use tonic::service::interceptor::InterceptedService;
use panoptes_proto::worker::{self as pb, worker_api_client::WorkerApiClient};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{error, info, warn};

use crate::analysis::{self, Analysis};
use crate::metrics::{coordinator_error, shard_ended, NodeMetrics};
use crate::pipeline::supervisor::ShardSupervisor;
use crate::pipeline::{ReportSink, ShardJob};

/// How a worker runs: its checked configuration, built once by whoever
/// starts it (`WorkerConfig::build`; `panoptes worker` does).
pub use panoptes_common::config::WorkerConfig;

/// Load every configured analysis now, so a missing or broken model file
/// stops the worker at start-up with a message naming it.
pub fn load_analyses(opts: &WorkerConfig) -> anyhow::Result<HashMap<String, Arc<dyn Analysis>>> {
    let mut out = HashMap::new();
    for m in &opts.models {
        let Some(entry) = opts.registry.get(m) else {
            let known: Vec<&str> = opts.registry.keys().map(String::as_str).collect();
            anyhow::bail!("cannot load analysis '{m}': it is not in the model registry; known models: {}", known.join(", "));
        };
        let a = analysis::load_model(m, entry, &opts.models_dir, &opts.onnxruntime_library)
            .with_context(|| format!("cannot load analysis '{m}' (family {}) from {}", entry.family, opts.models_dir.display()))?;
        out.insert(m.clone(), a);
    }
    Ok(out)
}

pub enum WorkerMsg {
    Tick,
    Heartbeat,
}

struct Active {
    actor: ActorRef<crate::pipeline::ShardMsg>,
    job_id: String,
    shard: u32,
    epoch: u64,
    /// A live shard's ingest port (reserved again when the shard ends).
    live_port: Option<u16>,
}

/// The worker's RTMP ingest ports: `count` consecutive ports from `base`,
/// held bound while unused, so that no other node on the host takes them
/// (nodes that differ only in `--listen` never collide). A live shard on
/// slot i releases port `base + i` just before FFmpeg listens on it, and
/// it is reserved again when the shard ends.
pub struct IngestPorts {
    pub host: String,
    pub base: u16,
    held: Vec<Option<std::net::TcpListener>>,
}

impl IngestPorts {
    /// Reserve `count` consecutive ports on `listen`'s host: from its port
    /// when that is not 0 and the run is free, else the first free run
    /// after a port the OS picks.
    pub fn reserve(listen: &str, count: u32) -> anyhow::Result<IngestPorts> {
        let (host, port) = listen.rsplit_once(':').with_context(|| format!("worker.listen '{listen}' is not HOST:PORT"))?;
        let port: u16 = port.parse().with_context(|| format!("worker.listen '{listen}': bad port"))?;
        let try_run = |base: u16| -> Option<Vec<Option<std::net::TcpListener>>> {
            if base as u32 + count > 65536 {
                return None;
            }
            (0..count).map(|i| std::net::TcpListener::bind((host, base + i as u16)).ok().map(Some)).collect()
        };
        if port != 0 {
            if let Some(held) = try_run(port) {
                return Ok(IngestPorts { host: host.to_string(), base: port, held });
            }
            warn!(listen, count, "the ingest ports from worker.listen are taken; using free ones");
        }
        for _ in 0..50 {
            let probe = std::net::TcpListener::bind((host, 0)).with_context(|| format!("cannot listen on {host} (worker.listen)"))?;
            let base = probe.local_addr()?.port();
            drop(probe);
            if let Some(held) = try_run(base) {
                return Ok(IngestPorts { host: host.to_string(), base, held });
            }
        }
        anyhow::bail!("found no {count} consecutive free ports on {host} for live ingest")
    }

    /// What the worker registers: `HOST:BASE`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.base)
    }

    /// Let FFmpeg bind `port` (if it is one of ours).
    fn release(&mut self, port: u16) {
        if let Some(h) = port.checked_sub(self.base).and_then(|i| self.held.get_mut(i as usize)) {
            *h = None;
        }
    }

    /// Hold `port` again (best effort: FFmpeg may still be closing it).
    fn reserve_again(&mut self, port: u16) {
        let host = self.host.clone();
        if let Some(h) = port.checked_sub(self.base).and_then(|i| self.held.get_mut(i as usize)) {
            if h.is_none() {
                *h = std::net::TcpListener::bind((host.as_str(), port)).ok();
            }
        }
    }
}

use crate::lobby::url_port;

pub struct WorkerState {
    opts: WorkerConfig,
    analyses: HashMap<String, Arc<dyn Analysis>>,
    /// Analysis permits shared by every shard ([`crate::pipeline::Compute`]).
    compute: crate::pipeline::Compute,
    coords: Coordinators,
    active: HashMap<ActorId, Active>,
    /// Registered with a coordinator (what /healthz answers).
    registered: Arc<AtomicBool>,
    metrics: NodeMetrics,
    ingest: IngestPorts,
    /// Stops the ingest lobby's thread when the worker stops.
    lobby_stop: Arc<AtomicBool>,
    /// The ingest lobby's parked connections, shared with live shards.
    parked: Arc<crate::lobby::Parked>,
    /// The ingest lobby's actor (it resumes moved streams).
    lobby: Option<ActorRef<crate::lobby::LobbyMsg>>,
}

impl WorkerState {
    fn set_registered(&self, yes: bool) {
        self.registered.store(yes, Ordering::Relaxed);
        self.metrics.registered.set(if yes { 1.0 } else { 0.0 });
    }

    fn active_changed(&self) {
        self.metrics.shards_active.set(self.active.len() as f64);
    }
}

pub struct WorkerActor;

type SecretChannel = InterceptedService<tonic::transport::Channel, ClusterSecret>;

/// A WorkerApi client that presents the cluster secret (if one is configured).
fn client(ch: tonic::transport::Channel, secret: ClusterSecret) -> WorkerApiClient<SecretChannel> {
    WorkerApiClient::with_interceptor(ch, secret).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
}

async fn register(st: &WorkerState) -> Result<pb::RegisterResponse, tonic::Status> {
    let req = pb::RegisterRequest {
        name: st.opts.name.clone(),
        addr: st.ingest.addr(),
        capacity: st.opts.capacity,
        models: st.opts.models.clone(),
    };
    let r = st.coords.call(st.coords.addrs().len() * 2, |ch| { let r = req.clone(); let secret = st.coords.secret(); async move { client(ch, secret).register(r).await } }).await;
    match &r {
        Ok(_) => st.set_registered(true),
        Err(_) => coordinator_error("register"),
    }
    r
}

impl Actor for WorkerActor {
    type Msg = WorkerMsg;
    type State = WorkerState;
    /// Options, loaded analyses, and the flag to set once registered.
    type Arguments = (WorkerConfig, HashMap<String, Arc<dyn Analysis>>, Arc<AtomicBool>);

    async fn pre_start(&self, myself: ActorRef<WorkerMsg>, (opts, analyses, registered): Self::Arguments) -> Result<WorkerState, ActorProcessingErr> {
        // The secret is read once, here: a bad file stops the worker with an error naming it.
        let secret = ClusterSecret::from_file(opts.cluster_secret_file.as_deref())?;
        let coords = Coordinators::new(&opts.coordinators)?.with_secret(secret);
        // The live slots, and the ingest lobby right after them.
        let ingest = IngestPorts::reserve(&opts.listen, opts.capacity.max(1) + 1)?;
        info!(worker = %opts.name, host = %ingest.host, ports = ?(ingest.base..ingest.base + opts.capacity.max(1) as u16), "live ingest ports (RTMP) reserved");
        let compute = crate::pipeline::Compute::new(opts.threads);
        info!(worker = %opts.name, threads = compute.threads, "frames analysed at once (worker.threads)");
        let mut st = WorkerState { opts, analyses, compute, coords, active: HashMap::new(), registered, metrics: NodeMetrics::new(), ingest, lobby_stop: Arc::default(), parked: Arc::default(), lobby: None };
        st.set_registered(false);
        // Register, waiting (with backoff) for a coordinator to answer.
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let reg = loop {
            match register(&st).await {
                Ok(r) => break r,
                Err(e) => {
                    let d = backoff.next_delay();
                    if e.code() == tonic::Code::Unauthenticated {
                        // Retrying will not help until the secret files agree; say so loudly.
                        error!(error = %e.message(), retry_in_ms = d.as_millis() as u64, "the coordinators refused this worker's cluster secret: make security.cluster_secret_file hold the same secret on workers and coordinators");
                    } else {
                        warn!(error = %e.message(), retry_in_ms = d.as_millis() as u64, "no coordinator accepted the registration yet");
                    }
                    tokio::time::sleep(d).await;
                }
            }
        };
        info!(worker = %st.opts.name, coordinators = ?st.coords.addrs(), "registered");
        start_lobby(&mut st, myself.clone()).await?;
        myself.send_interval(Duration::from_millis(250), || WorkerMsg::Tick);
        myself.send_interval(Duration::from_millis(reg.heartbeat_interval_ms.max(50)), || WorkerMsg::Heartbeat);
        Ok(st)
    }

    async fn handle(&self, myself: ActorRef<WorkerMsg>, msg: WorkerMsg, st: &mut WorkerState) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Tick => {
                // Asked even with no free slot: a live shard for this worker
                // (a publisher is about to push) is granted regardless.
                let free = st.opts.capacity.saturating_sub(st.active.len() as u32);
                let req = pb::LeaseRequest { name: st.opts.name.clone(), free_slots: free };
                let resp = match st.coords.call(st.coords.addrs().len(), |ch| { let r = req.clone(); let secret = st.coords.secret(); async move { client(ch, secret).lease(r).await } }).await {
                    Ok(r) => r,
                    Err(e) if matches!(e.code(), tonic::Code::FailedPrecondition | tonic::Code::NotFound) => {
                        st.set_registered(false);
                        warn!(error = %e.message(), "coordinator does not know this worker; registering again");
                        let _ = register(st).await;
                        return Ok(());
                    }
                    Err(e) => {
                        coordinator_error("lease");
                        warn!(error = %e.message(), "lease request failed");
                        return Ok(());
                    }
                };
                st.metrics.leases_granted.inc_by(resp.shards.len() as u64);
                for a in resp.shards {
                    let analyses: Option<Vec<_>> = a.models.iter().map(|m| st.analyses.get(m).cloned()).collect();
                    let Some(analyses) = analyses else {
                        warn!(job_id = %a.job_id, shard = a.shard, models = ?a.models, "leased a shard with a model this worker lacks; its lease will expire");
                        continue;
                    };
                    let kind = match crate::pipeline::ShardKind::of(&a) {
                        Ok(k) => k,
                        Err(e) => {
                            warn!(job_id = %a.job_id, shard = a.shard, error = %e, "leased a shard this worker cannot read; its lease will expire");
                            continue;
                        }
                    };
                    // (A stream resumed on the lobby takes its parked connection instead.)
                    let pushed = matches!(kind, crate::pipeline::ShardKind::Push { .. });
                    let live_port = if pushed && !st.parked.is_lobby_url(&a.source) { url_port(&a.source) } else { None };
                    if let Some(p) = live_port {
                        st.ingest.release(p);
                        info!(job_id = %a.job_id, url = %panoptes_media::policy::redact(&a.source), port = p, "live stream leased: listening for its publisher");
                    }
                    let job = ShardJob {
                        worker: st.opts.name.clone(),
                        assignment: a.clone(),
                        kind: kind.clone(),
                        analyses,
                        sink: ReportSink::Coordinators(st.coords.clone()),
                        settings: st.opts.shard.for_shard(kind.is_live()),
                        compute: st.compute.clone(),
                        lobby: st.parked.clone(),
                    };
                    match Actor::spawn_linked(None, ShardSupervisor, job, myself.get_cell()).await {
                        Ok((actor, _)) => {
                            st.active.insert(actor.get_id(), Active { actor, job_id: a.job_id, shard: a.shard, epoch: a.epoch, live_port });
                        }
                        Err(e) => {
                            if let Some(p) = live_port {
                                st.ingest.reserve_again(p);
                            }
                            warn!(job_id = %a.job_id, shard = a.shard, error = %e, "could not start a shard supervisor")
                        }
                    }
                }
                st.active_changed();
            }
            WorkerMsg::Heartbeat => {
                let leases = st
                    .active
                    .values()
                    .map(|a| pb::LeaseRef { job_id: a.job_id.clone(), shard: a.shard, epoch: a.epoch })
                    .collect::<Vec<_>>();
                let req = pb::HeartbeatRequest { name: st.opts.name.clone(), leases };
                match st.coords.call(st.coords.addrs().len(), |ch| { let r = req.clone(); let secret = st.coords.secret(); async move { client(ch, secret).heartbeat(r).await } }).await {
                    Ok(r) => {
                        if r.reregister {
                            st.set_registered(false);
                            let _ = register(st).await;
                        }
                        for rv in r.revoked {
                            for a in st.active.values() {
                                if a.job_id == rv.job_id && a.shard == rv.shard && a.epoch == rv.epoch {
                                    st.metrics.leases_revoked.inc_by(1);
                                    shard_ended("revoked");
                                    warn!(job_id = %a.job_id, shard = a.shard, "lease revoked; stopping the shard");
                                    a.actor.kill();
                                }
                            }
                        }
                    }
                    Err(e) => {
                        coordinator_error("heartbeat");
                        warn!(error = %e.message(), "heartbeat failed");
                    }
                }
            }
        }
        Ok(())
    }

    /// Stopping (SIGTERM, or the root actor ended): the ingest lobby stops,
    /// and the coordinators are told, so that the shards of file jobs this
    /// worker holds go to other workers at once instead of when their leases
    /// expire (`Leave`; a few seconds at most, then the leases expire as
    /// after a crash).
    async fn post_stop(&self, _myself: ActorRef<WorkerMsg>, st: &mut WorkerState) -> Result<(), ActorProcessingErr> {
        st.lobby_stop.store(true, Ordering::Relaxed);
        if let Some(l) = st.lobby.take() {
            l.stop(None);
        }
        let req = pb::LeaveRequest { name: st.opts.name.clone() };
        let leave = st.coords.call(st.coords.addrs().len(), |ch| {
            let r = req.clone();
            let secret = st.coords.secret();
            async move { client(ch, secret).leave(r).await }
        });
        match tokio::time::timeout(Duration::from_secs(3), leave).await {
            Ok(Ok(r)) => info!(worker = %st.opts.name, leases_returned = r.leases_returned, "left the cluster: shards handed back"),
            Ok(Err(e)) => warn!(worker = %st.opts.name, error = %e.message(), "could not hand back shards; their leases expire instead"),
            Err(_) => warn!(worker = %st.opts.name, "no coordinator answered the hand-back within 3 s; the leases expire instead"),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(&self, myself: ActorRef<WorkerMsg>, evt: SupervisionEvent, st: &mut WorkerState) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(a) = st.active.remove(&cell.get_id()) {
                    if let Some(p) = a.live_port {
                        st.ingest.reserve_again(p);
                    }
                    // A slot is free: ask for the next shard now, not at the
                    // next tick (waiting for it idled this worker ~35% of a
                    // file job of 100-frame shards on `colors`).
                    let _ = myself.send_message(WorkerMsg::Tick);
                }
            }
            SupervisionEvent::ActorFailed(cell, e) => {
                // A shard supervisor itself crashed: drop the shard; its lease
                // expires and the coordinator leases it again.
                if let Some(a) = st.active.remove(&cell.get_id()) {
                    if let Some(p) = a.live_port {
                        st.ingest.reserve_again(p);
                    }
                    shard_ended("crashed");
                    warn!(job_id = %a.job_id, shard = a.shard, error = %e, "shard supervisor crashed");
                }
            }
            _ => {}
        }
        st.active_changed();
        Ok(())
    }
}

/// Start the worker's ingest lobby ([`crate::lobby`]) on the port after its
/// live slots; resumes are claimed from the coordinators over `ResumeLive`.
async fn start_lobby(st: &mut WorkerState, myself: ActorRef<WorkerMsg>) -> anyhow::Result<()> {
    let Some(port) = panoptes_common::lobby_port(st.ingest.base, st.opts.capacity) else { return Ok(()) };
    st.ingest.release(port);
    let coords = st.coords.clone();
    let name = st.opts.name.clone();
    let claim: crate::lobby::Claimer = Arc::new(move |key: String, url: String| {
        let (coords, req) = (coords.clone(), pb::ResumeLiveRequest { name: name.clone(), key, url });
        Box::pin(async move {
            let r = coords
                .call(coords.addrs().len(), |ch| {
                    let r = req.clone();
                    let secret = coords.secret();
                    async move { client(ch, secret).resume_live(r).await }
                })
                .await;
            match r {
                Ok(r) => crate::lobby::Claim::Moved(r.job_id),
                Err(e) if matches!(e.code(), tonic::Code::NotFound | tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument) => {
                    crate::lobby::Claim::Refused(e.message().to_string())
                }
                Err(e) => crate::lobby::Claim::NotYet(e.message().to_string()),
            }
        })
    });
    let lobby = crate::lobby::Lobby {
        host: st.ingest.host.clone(),
        port,
        live: st.opts.shard.live,
        claim,
        lease_now: Arc::new(move || {
            let _ = myself.send_message(WorkerMsg::Tick);
        }),
        stop: st.lobby_stop.clone(),
        parked: st.parked.clone(),
    };
    info!(worker = %st.opts.name, url = %lobby.url(), "live ingest lobby: a publisher whose worker was lost resumes its stream here by pushing to this URL + its stream key");
    st.opts.note_address("lobby", &lobby.url());
    st.lobby = Some(lobby.spawn().await.context("cannot start the live ingest lobby")?);
    Ok(())
}

/// Run a worker until `shutdown` resolves.
pub async fn run(opts: WorkerConfig, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    panoptes_media::init();
    let analyses = load_analyses(&opts)?;
    info!(worker = %opts.name, models = ?opts.models, models_dir = %opts.models_dir.display(), capacity = opts.capacity, "worker starting");
    crate::metrics::describe(&opts.models);
    let registered = Arc::new(AtomicBool::new(false));
    let http = serve_metrics(&opts.listen, registered.clone()).await?;
    info!(worker = %opts.name, addr = %http, "metrics on http://{http}/metrics (health: http://{http}/healthz)");
    opts.note_address("metrics", &http.to_string());
    println!("worker {} started (models: {})", opts.name, opts.models.join(","));
    let (root, mut handle) =
        Actor::spawn(None, WorkerActor, (opts.clone(), analyses, registered)).await.context("worker failed to start")?;
    tokio::select! {
        _ = shutdown => {
            info!(worker = %opts.name, "shutting down");
            root.stop(Some("shutdown".into()));
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut handle).await;
        }
        r = &mut handle => {
            r.context("worker root actor ended")?;
        }
    }
    Ok(())
}

/// Where the worker serves /metrics and /healthz: its listen address's port
/// + 10000 on the same host ([`derived_http_addr`]), so workers that differ
/// only in `--listen` never collide; any free port when it listens on port 0
/// (the default) or its address does not resolve.
pub async fn metrics_addr(listen: &str) -> SocketAddr {
    let resolved = match listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => tokio::net::lookup_host(listen).await.ok().and_then(|mut a| a.next()),
    };
    match resolved {
        Some(a) => derived_http_addr(&a),
        None => {
            warn!(listen, "cannot resolve the worker's listen address; serving metrics on a free port of 127.0.0.1");
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    }
}

/// Start the metrics and health endpoint; /healthz is healthy while the
/// worker is registered. Returns the bound address.
async fn serve_metrics(listen: &str, registered: Arc<AtomicBool>) -> anyhow::Result<SocketAddr> {
    let addr = metrics_addr(listen).await;
    let healthy: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(move || registered.load(Ordering::Relaxed));
    match serve(addr, healthy.clone()).await {
        Ok(bound) => Ok(bound),
        // E.g. worker.listen names an address of another machine: fall back
        // to loopback rather than run without metrics.
        Err(e) if !addr.ip().is_loopback() => {
            warn!(%addr, error = %e, "cannot serve metrics there; using a free port of 127.0.0.1");
            serve(SocketAddr::from(([127, 0, 0, 1], 0)), healthy).await.context("cannot serve metrics on 127.0.0.1 either")
        }
        Err(e) => Err(e).with_context(|| format!("cannot serve metrics on {addr} (derived from worker.listen {listen})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_metrics_port_is_derived_from_the_listen_address() {
        assert_eq!(metrics_addr("127.0.0.1:7005").await, "127.0.0.1:17005".parse::<SocketAddr>().unwrap());
        // The default listen address is "any free port": so is the metrics one.
        assert_eq!(metrics_addr("127.0.0.1:0").await, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
        assert_eq!(metrics_addr("localhost:7005").await.port(), 17005);
    }
}
