//! A worker process: loads its analyses, registers with the coordinators,
//! heartbeats, leases shards and runs each under a [`ShardSupervisor`], all
//! under one root actor that survives any shard's crash.
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use panoptes_common::config::ModelConfig;
use panoptes_common::retry::Backoff;
use panoptes_proto::failover::Coordinators;
use panoptes_proto::worker::{self as pb, worker_api_client::WorkerApiClient};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{info, warn};

use crate::analysis::{self, Analysis};
use crate::pipeline::supervisor::ShardSupervisor;
use crate::pipeline::{ReportSink, ShardJob};

/// How a worker runs.
#[derive(Clone)]
pub struct WorkerOptions {
    pub name: String,
    pub coordinators: Vec<String>,
    pub models_dir: PathBuf,
    pub models: Vec<String>,
    /// The model registry (`[models]` of the config): how each name in
    /// `models` is loaded.
    pub registry: BTreeMap<String, ModelConfig>,
    pub capacity: u32,
    pub depth: u32,
    pub batch: u32,
    pub max_restarts: u32,
    pub advertise: String,
}

impl WorkerOptions {
    /// Options from a loaded (and overridden) configuration.
    pub fn from_config(cfg: &panoptes_common::config::Config, name: &str, coordinators: Vec<String>) -> Self {
        WorkerOptions {
            name: name.to_string(),
            coordinators,
            models_dir: PathBuf::from(&cfg.worker.models_dir),
            models: cfg.worker.models.clone(),
            registry: cfg.models.clone(),
            capacity: cfg.worker.capacity,
            depth: cfg.worker.pipeline_depth,
            batch: cfg.worker.report_batch,
            max_restarts: cfg.worker.max_restarts,
            advertise: cfg.worker.listen.clone(),
        }
    }
}

/// Load every configured analysis now, so a missing or broken model file
/// stops the worker at start-up with a message naming it.
pub fn load_analyses(opts: &WorkerOptions) -> anyhow::Result<HashMap<String, Arc<dyn Analysis>>> {
    let mut out = HashMap::new();
    for m in &opts.models {
        let Some(entry) = opts.registry.get(m) else {
            let known: Vec<&str> = opts.registry.keys().map(String::as_str).collect();
            anyhow::bail!("cannot load analysis '{m}': it is not in the model registry; known models: {}", known.join(", "));
        };
        let a = analysis::load_model(m, entry, &opts.models_dir)
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
}

pub struct WorkerState {
    opts: WorkerOptions,
    analyses: HashMap<String, Arc<dyn Analysis>>,
    coords: Coordinators,
    active: HashMap<ActorId, Active>,
}

pub struct WorkerActor;

fn client(ch: tonic::transport::Channel) -> WorkerApiClient<tonic::transport::Channel> {
    WorkerApiClient::new(ch).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
}

async fn register(st: &WorkerState) -> Result<pb::RegisterResponse, tonic::Status> {
    let req = pb::RegisterRequest {
        name: st.opts.name.clone(),
        addr: st.opts.advertise.clone(),
        capacity: st.opts.capacity,
        models: st.opts.models.clone(),
    };
    st.coords.call(st.coords.addrs().len() * 2, |ch| { let r = req.clone(); async move { client(ch).register(r).await } }).await
}

impl Actor for WorkerActor {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = (WorkerOptions, HashMap<String, Arc<dyn Analysis>>);

    async fn pre_start(&self, myself: ActorRef<WorkerMsg>, (opts, analyses): Self::Arguments) -> Result<WorkerState, ActorProcessingErr> {
        let coords = Coordinators::new(&opts.coordinators)?;
        let st = WorkerState { opts, analyses, coords, active: HashMap::new() };
        // Register, waiting (with backoff) for a coordinator to answer.
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let reg = loop {
            match register(&st).await {
                Ok(r) => break r,
                Err(e) => {
                    let d = backoff.next_delay();
                    warn!(error = %e.message(), retry_in_ms = d.as_millis() as u64, "no coordinator accepted the registration yet");
                    tokio::time::sleep(d).await;
                }
            }
        };
        info!(worker = %st.opts.name, coordinators = ?st.coords.addrs(), "registered");
        myself.send_interval(Duration::from_millis(250), || WorkerMsg::Tick);
        myself.send_interval(Duration::from_millis(reg.heartbeat_interval_ms.max(50)), || WorkerMsg::Heartbeat);
        Ok(st)
    }

    async fn handle(&self, myself: ActorRef<WorkerMsg>, msg: WorkerMsg, st: &mut WorkerState) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Tick => {
                let free = st.opts.capacity.saturating_sub(st.active.len() as u32);
                if free == 0 {
                    return Ok(());
                }
                let req = pb::LeaseRequest { name: st.opts.name.clone(), free_slots: free };
                let resp = match st.coords.call(st.coords.addrs().len(), |ch| { let r = req.clone(); async move { client(ch).lease(r).await } }).await {
                    Ok(r) => r,
                    Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                        warn!(error = %e.message(), "coordinator does not know this worker; registering again");
                        let _ = register(st).await;
                        return Ok(());
                    }
                    Err(e) => {
                        warn!(error = %e.message(), "lease request failed");
                        return Ok(());
                    }
                };
                for a in resp.shards {
                    let analyses: Option<Vec<_>> = a.models.iter().map(|m| st.analyses.get(m).cloned()).collect();
                    let Some(analyses) = analyses else {
                        warn!(job_id = %a.job_id, models = ?a.models, "leased a shard with a model this worker lacks; its lease will expire");
                        continue;
                    };
                    let job = ShardJob {
                        worker: st.opts.name.clone(),
                        assignment: a.clone(),
                        analyses,
                        sink: ReportSink::Coordinators(st.coords.clone()),
                        depth: st.opts.depth.max(1),
                        batch: st.opts.batch.clamp(1, st.opts.depth.max(1)),
                        max_restarts: st.opts.max_restarts,
                    };
                    match Actor::spawn_linked(None, ShardSupervisor, job, myself.get_cell()).await {
                        Ok((actor, _)) => {
                            st.active.insert(actor.get_id(), Active { actor, job_id: a.job_id, shard: a.shard, epoch: a.epoch });
                        }
                        Err(e) => warn!(error = %e, "could not start a shard supervisor"),
                    }
                }
            }
            WorkerMsg::Heartbeat => {
                let leases = st
                    .active
                    .values()
                    .map(|a| pb::LeaseRef { job_id: a.job_id.clone(), shard: a.shard, epoch: a.epoch })
                    .collect::<Vec<_>>();
                let req = pb::HeartbeatRequest { name: st.opts.name.clone(), leases };
                match st.coords.call(st.coords.addrs().len(), |ch| { let r = req.clone(); async move { client(ch).heartbeat(r).await } }).await {
                    Ok(r) => {
                        if r.reregister {
                            let _ = register(st).await;
                        }
                        for rv in r.revoked {
                            for a in st.active.values() {
                                if a.job_id == rv.job_id && a.shard == rv.shard && a.epoch == rv.epoch {
                                    warn!(job_id = %a.job_id, shard = a.shard, "lease revoked; stopping the shard");
                                    a.actor.kill();
                                }
                            }
                        }
                    }
                    Err(e) => warn!(error = %e.message(), "heartbeat failed"),
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(&self, _myself: ActorRef<WorkerMsg>, evt: SupervisionEvent, st: &mut WorkerState) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                st.active.remove(&cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, e) => {
                // A shard supervisor itself crashed: drop the shard; its lease
                // expires and the coordinator leases it again.
                if let Some(a) = st.active.remove(&cell.get_id()) {
                    warn!(job_id = %a.job_id, shard = a.shard, error = %e, "shard supervisor crashed");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Run a worker until `shutdown` resolves.
pub async fn run(opts: WorkerOptions, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    panoptes_media::init();
    let analyses = load_analyses(&opts)?;
    info!(worker = %opts.name, models = ?opts.models, models_dir = %opts.models_dir.display(), capacity = opts.capacity, "worker starting");
    println!("worker {} started (models: {})", opts.name, opts.models.join(","));
    let (root, mut handle) = Actor::spawn(None, WorkerActor, (opts.clone(), analyses)).await.context("worker failed to start")?;
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
