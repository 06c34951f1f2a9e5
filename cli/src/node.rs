//! Running a node: `panoptes coordinator` (with its web page) and
//! `panoptes worker`, from the config and their options, until a signal.
use anyhow::{Context, Result};
use panoptes_common::config::{parse_peers, Config};

use crate::args::{CoordinatorArgs, WorkerArgs};
use crate::config::{install_node_tls, load_config, split_addrs};

/// Every source this node opens is checked against `[sources]` first (the
/// coordinator also checks at submit; a worker checks again right before
/// FFmpeg opens it).
fn install_source_policy(cfg: &Config) -> Result<()> {
    let policy = panoptes_media::policy::SourcePolicy::new(&cfg.sources.file_dirs(), &cfg.sources.allow_networks)
        .map_err(|e| anyhow::anyhow!("invalid [sources] config: {e}"))?;
    panoptes_media::policy::install(policy);
    Ok(())
}

fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
}

pub(crate) async fn run_coordinator(a: CoordinatorArgs) -> Result<()> {
    let mut cfg = load_config(a.config.as_deref())?;
    if let Some(p) = &a.peers {
        cfg.cluster.coordinators = parse_peers(p)?;
    }
    if let Some(l) = &a.listen {
        cfg.coordinator.listen = Some(l.clone());
    }
    cfg.validate()?;
    panoptes_common::logging::init(cfg.log.format, &cfg.log.level);
    install_source_policy(&cfg)?;
    install_node_tls(&cfg)?;
    let listen = cfg.coordinator_listen(a.id)?;
    let data_dir = a.data_dir.clone().unwrap_or_else(|| cfg.coordinator_data_dir(a.id));
    let peers = cfg.cluster.coordinators.iter().filter(|p| p.id != a.id).map(|p| (p.id, p.addr.clone())).collect();
    // addresses.json: emptied now, filled as each part binds.
    if let Err(e) = panoptes_common::addresses::reset(&data_dir) {
        anyhow::bail!("cannot write {} in the data directory {}: {e}", panoptes_common::addresses::FILE, data_dir.display());
    }
    let opts = panoptes_coordinator::node::NodeOptions { id: a.id, listen, data_dir, peers, join: a.join };
    // The web page and HTTP API (gRPC port + 20000), a gRPC client of this coordinator, then of the others.
    // HTTPS with the node certificate when TLS is on, unless security.web_plain_http (a TLS proxy in front).
    let web_tls = (!cfg.security.tls_cert.is_empty() && !cfg.security.web_plain_http)
        .then(|| panoptes_web::WebTls { cert: cfg.security.tls_cert.clone(), key: cfg.security.tls_key.clone() });
    let scheme = if web_tls.is_some() { "https" } else { "http" };
    if let Some(web) = panoptes_web::start(&opts.listen, opts.peers.values().cloned().collect(), web_tls, cfg.security.web_hosts.clone()).await {
        panoptes_common::addresses::note(&opts.data_dir, "web", &format!("{scheme}://{web}/"));
    }
    panoptes_coordinator::node::run(cfg, opts, shutdown_signal()).await
}

pub(crate) async fn run_worker(a: WorkerArgs) -> Result<()> {
    let name = a.name.clone().context("--name is required to run a worker")?;
    let mut cfg = load_config(a.config.as_deref())?;
    if let Some(l) = &a.listen {
        cfg.worker.listen = l.clone();
    }
    if let Some(m) = &a.models_dir {
        cfg.worker.models_dir = m.display().to_string();
    }
    if let Some(m) = &a.models {
        cfg.worker.models = m.clone();
    }
    if let Some(t) = a.threads {
        cfg.worker.threads = t;
    }
    if let Some(c) = a.capacity {
        cfg.worker.capacity = c;
    }
    cfg.validate()?;
    panoptes_common::logging::init(cfg.log.format, &cfg.log.level);
    install_source_policy(&cfg)?;
    install_node_tls(&cfg)?;
    panoptes_worker::memory::tune_allocator();
    let coordinators = match &a.coordinator {
        Some(c) => split_addrs(c),
        None => cfg.coordinator_addrs(),
    };
    let data_dir = a.data_dir.clone().unwrap_or_else(|| cfg.worker_data_dir(&name));
    std::fs::create_dir_all(&data_dir).with_context(|| format!("failed to create {}", data_dir.display()))?;
    panoptes_common::addresses::reset(&data_dir)
        .with_context(|| format!("cannot write {} in the data directory {}", panoptes_common::addresses::FILE, data_dir.display()))?;
    let mut opts = panoptes_worker::node::WorkerOptions::from_config(&cfg, &name, coordinators);
    opts.data_dir = Some(data_dir);
    panoptes_worker::node::run(opts, shutdown_signal()).await
}
