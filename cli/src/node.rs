//! Running a node: `panoptes coordinator` (with its web page) and
//! `panoptes worker`, from the config and their options, until a signal.
use anyhow::{Context, Result};
use panoptes_common::config::{parse_peers, split_addrs, Config, CoordinatorConfig, CoordinatorFlags, WorkerConfig, WorkerFlags};

use crate::args::{CoordinatorArgs, WorkerArgs};
use crate::config::{install_node_tls, load_config};

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
    let flags = CoordinatorFlags {
        id: a.id,
        peers: a.peers.as_deref().map(parse_peers).transpose()?,
        listen: a.listen.clone(),
        data_dir: a.data_dir.clone(),
        join: a.join,
    };
    let cfg = CoordinatorConfig::build(load_config(a.config.as_deref())?, flags)?;
    start_node(&cfg.settings)?;
    // addresses.json: emptied now, filled as each part binds.
    if let Err(e) = panoptes_common::addresses::reset(&cfg.data_dir) {
        anyhow::bail!("cannot write {} in the data directory {}: {e}", panoptes_common::addresses::FILE, cfg.data_dir.display());
    }
    // The web page and HTTP API (gRPC port + 20000), a gRPC client of this coordinator, then of the others.
    // HTTPS with the node certificate when TLS is on, unless security.web_plain_http (a TLS proxy in front).
    let sec = &cfg.settings.security;
    let web_tls = match (&sec.tls_cert, &sec.tls_key) {
        (Some(cert), Some(key)) if !sec.web_plain_http => Some(panoptes_web::WebTls { cert: cert.clone(), key: key.clone() }),
        _ => None,
    };
    let scheme = if web_tls.is_some() { "https" } else { "http" };
    if let Some(web) = panoptes_web::start(&cfg.listen, cfg.peers.values().cloned().collect(), web_tls, sec.web_hosts.clone()).await {
        panoptes_common::addresses::note(&cfg.data_dir, "web", &format!("{scheme}://{web}/"));
    }
    panoptes_coordinator::node::run(cfg, shutdown_signal()).await
}

pub(crate) async fn run_worker(a: WorkerArgs) -> Result<()> {
    let name = a.name.clone().context("--name is required to run a worker")?;
    let file = load_config(a.config.as_deref())?;
    let flags = WorkerFlags {
        name,
        listen: a.listen.clone(),
        models_dir: a.models_dir.clone(),
        models: a.models.clone(),
        threads: a.threads,
        capacity: a.capacity,
        coordinators: a.coordinator.as_deref().map(split_addrs),
        data_dir: a.data_dir.clone(),
    };
    let cfg = WorkerConfig::build(&file, flags)?;
    start_node(&file)?;
    panoptes_worker::memory::tune_allocator();
    let data_dir = cfg.data_dir.clone().expect("a built worker has a data directory");
    std::fs::create_dir_all(&data_dir).with_context(|| format!("failed to create {}", data_dir.display()))?;
    panoptes_common::addresses::reset(&data_dir)
        .with_context(|| format!("cannot write {} in the data directory {}", panoptes_common::addresses::FILE, data_dir.display()))?;
    panoptes_worker::node::run(cfg, shutdown_signal()).await
}

/// What every node does first, with its checked configuration: logging,
/// the source policy, and TLS for its own outgoing connections.
fn start_node(cfg: &Config) -> Result<()> {
    panoptes_common::logging::init(cfg.log.format, &cfg.log.level);
    install_source_policy(cfg)?;
    install_node_tls(cfg)
}
