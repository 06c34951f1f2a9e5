//! `panoptes`: run a coordinator or a worker, submit videos and read results.
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand};
use panoptes_common::config::{parse_peers, Config};
use panoptes_client::views::{is_finished, metrics_json, state_name, status_json};
use panoptes_client::{pb, Authorization, Client};
use serde_json::{json, Value};

mod admin;
mod render;
mod tracks;

use admin::*;

const EXAMPLES: &str = "\
Examples:
  panoptes coordinator --id 1                       # a one-node coordinator on 127.0.0.1:7400
  panoptes worker --name w1 --models-dir ./models   # a worker that registers with it
  panoptes submit ./clip.mp4 --models objects,colors --frame-step 2 --wait
  panoptes status job-1 --json
  panoptes results job-1 --json > results.jsonl
  panoptes cluster status
  panoptes worker drain w1 --hand-back              # w1 takes no new shards, returns its leases
  panoptes cluster add-member 4 127.0.0.1:7430      # after starting coordinator 4 with --join

Every command that talks to the cluster accepts --coordinator ADDR[,ADDR...]
(or PANOPTES_COORDINATOR); any coordinator of the cluster will do.";

#[derive(Parser)]
#[command(name = "panoptes", version, about = "Distributed real-time video analysis", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct ClientOpts {
    /// Coordinator address(es), HOST:PORT[,HOST:PORT...]; any member works.
    #[arg(long, env = "PANOPTES_COORDINATOR", global = true, value_name = "ADDR,...")]
    coordinator: Option<String>,
    /// Cluster config file (used for the coordinator list when --coordinator is not given).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Bearer token for a cluster with security.tokens_file set (from `panoptes token`).
    #[arg(long, env = "PANOPTES_TOKEN", global = true, hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Connect over TLS, trusting this CA certificate (PEM; `panoptes certs`
    /// makes one). Default: security.tls_ca of --config, else plain text.
    #[arg(long, env = "PANOPTES_TLS_CA", global = true, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) to present, for clusters with
    /// security.require_client_cert; needs --tls-key.
    #[arg(long, env = "PANOPTES_TLS_CERT", global = true, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "PANOPTES_TLS_KEY", global = true, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a coordinator (a Raft member that keeps jobs and results).
    Coordinator(CoordinatorArgs),
    /// Run a worker (decodes and analyses the shards it leases); `worker drain NAME`
    /// stops leasing shards to a running one.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Worker(WorkerArgs),
    /// Analyse a video on this machine with the worker's own pipeline, no cluster;
    /// prints results like `results` does.
    Analyze(AnalyzeArgs),
    /// Make a fresh random bearer token: prints the token (once; keep it) and
    /// the `ROLE NAME SHA256` line to add to security.tokens_file.
    Token(TokenArgs),
    /// Make a development CA and certificates for TLS: the CA, a node
    /// certificate (for coordinators and workers; server and client use) and a
    /// client certificate (for the CLI); prints the [security] lines to use.
    Certs(CertsArgs),
    /// Submit a video file or URL for analysis; prints the job id.
    Submit(SubmitArgs),
    /// Show a job's state and progress.
    Status(JobArgs),
    /// Print a job's results, one line per (frame, model), ordered by frame then model.
    Results(ResultsArgs),
    /// A job's tracked objects: its detections (`objects`, or --model)
    /// joined across frames into tracks with ids, first and last frame, best
    /// score and box path (an IoU tracker; the same results give the same
    /// tracks however the job was split).
    Tracks(tracks::TracksArgs),
    /// Create a live job and print where to push its RTMP stream; results are
    /// committed while it runs (`results --follow`), and it completes when the
    /// publisher stops.
    Live(LiveArgs),
    /// Cancel a job and free its leases.
    Cancel(JobArgs),
    /// A job's timings: decode, resize, inference per model, throughput.
    Metrics(JobArgs),
    /// Draw one analysed frame with its results (object boxes with label and
    /// score, faces with emotion and gender, the colour palette) into a PNG.
    Frame(FrameArgs),
    /// Delete the results, stored frames and metrics of jobs that finished
    /// before a given age; says what it freed.
    Prune(PruneArgs),
    /// Finished jobs, newest first.
    Videos(ListArgs),
    /// The analyses the cluster offers.
    Models(ListArgs),
    /// Admin: cluster status and coordinator membership.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
}

#[derive(Args)]
struct LiveArgs {
    /// Analyses to run, comma-separated (see `panoptes models`).
    #[arg(long, value_delimiter = ',', required = true)]
    models: Vec<String>,
    /// Analyse every Nth frame (frames numbered from 0 in arrival order).
    #[arg(long, default_value_t = 1)]
    frame_step: i64,
    /// A name for the job (default: live-<key prefix>).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    pictures: PictureOpts,
    #[command(flatten)]
    keep: KeepOpts,
    /// Print {"job_id","rtmp_url"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientOpts,
}

/// Stored pictures of analysed frames (`panoptes frame`, the web page).
#[derive(Args)]
struct PictureOpts {
    /// Keep at most one picture per INTERVAL of stream time: the first
    /// analysed frame at or after each multiple of it (e.g. 200ms, 1s, 10s;
    /// 0: every analysed frame). Default: the cluster's frames.every (1s).
    /// Each picture costs the worker a JPEG encode and the coordinators
    /// ~20 KB of disk.
    #[arg(long, value_name = "INTERVAL", value_parser = parse_pictures_every)]
    pictures_every: Option<String>,
    /// Keep no pictures (`panoptes frame` then has nothing to draw on).
    #[arg(long, conflicts_with = "pictures_every")]
    no_frames: bool,
}

/// `--pictures-every`: checked here for a quick, clear error; the coordinator checks it again.
fn parse_pictures_every(s: &str) -> std::result::Result<String, String> {
    panoptes_common::parse_interval_ms(s)?;
    Ok(s.trim().to_string())
}

/// Retention while a job runs.
#[derive(Args)]
struct KeepOpts {
    /// Keep only the newest AGE of stream time (e.g. 1h, 30m, 7d), deleting
    /// older results and/or pictures as the job goes and giving their disk
    /// back. Default: the cluster's retention.keep (none: keep everything).
    #[arg(long, value_name = "AGE", value_parser = parse_keep)]
    keep: Option<String>,
    /// What --keep deletes: both (default), results or pictures.
    #[arg(long, value_name = "WHAT", value_parser = ["both", "results", "pictures"])]
    keep_what: Option<String>,
}

/// `--keep`: checked here for a quick, clear error; the coordinator checks it again.
fn parse_keep(s: &str) -> std::result::Result<String, String> {
    match parse_age(s)? {
        d if d.is_zero() => Err("--keep 0 would keep nothing: give a duration such as 1h, or leave --keep out".into()),
        _ => Ok(s.trim().to_string()),
    }
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Members, leader, workers, load and job counts (answered by the leader when it is reachable).
    Status(ListArgs),
    /// Add a coordinator to the Raft cluster. Start it first with
    /// `panoptes coordinator --id ID --listen ADDR --data-dir DIR --join`; it is
    /// added as a learner, and becomes a voter once it has caught up.
    AddMember(AddMemberArgs),
    /// Remove a coordinator from the Raft cluster (not the last voter). Stop its
    /// process afterwards. Removing the leader is allowed: the others elect a new one.
    RemoveMember(RemoveMemberArgs),
}

#[derive(Subcommand)]
enum WorkerCmd {
    /// Stop leasing new shards to a worker: it finishes the shards it holds
    /// (or, with --hand-back, returns them at once). --undo resumes it.
    Drain(DrainArgs),
}

#[derive(Args)]
struct CoordinatorArgs {
    /// This member's id (its entry in cluster.coordinators).
    #[arg(long)]
    id: u64,
    /// Config file; without one the defaults make a local cluster on 127.0.0.1.
    /// Any key can be set as PANOPTES_<SECTION>_<KEY> (e.g. PANOPTES_WORKER_CAPACITY=8).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the Raft log, state and snapshots live (default: coordinator.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to serve on (default: this id's address in the config).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// All members as ID=HOST:PORT,... (overrides cluster.coordinators).
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    peers: Option<String>,
    /// Join a running cluster: never initialise a new one, wait for
    /// `panoptes cluster add-member ID ADDR` instead.
    #[arg(long)]
    join: bool,
}

#[derive(Args)]
struct WorkerArgs {
    #[command(subcommand)]
    cmd: Option<WorkerCmd>,
    /// A name unique in the cluster, e.g. w1.
    #[arg(long, required = true)]
    name: Option<String>,
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address for the worker's own listeners (live ingest).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Coordinator address(es) (default: cluster.coordinators).
    #[arg(long, env = "PANOPTES_COORDINATOR", value_name = "ADDR,...")]
    coordinator: Option<String>,
    /// Directory with the ONNX models (env PANOPTES_MODELS_DIR; default: worker.models_dir).
    #[arg(long, value_name = "DIR")]
    models_dir: Option<PathBuf>,
    /// Analyses to load and offer, comma-separated (default: worker.models).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Shards to work on at once (default: worker.capacity).
    #[arg(long)]
    capacity: Option<u32>,
    /// Frames analysed at once over all shards (default: worker.threads; 0:
    /// one per core this process may use). Several workers on one host: give
    /// each a share, or pin them (taskset), so they do not fight over cores.
    #[arg(long)]
    threads: Option<u32>,
}

#[derive(Args)]
struct SubmitArgs {
    /// A local video path, a file://, http:// or https:// URL, a live
    /// rtsp://, rtmp:// or rtmps:// stream (analysed as it arrives), or a
    /// camera: v4l2:///dev/videoN with --worker.
    source: String,
    /// The worker a camera (v4l2:///dev/videoN) is attached to; the job runs
    /// there (same as the source v4l2://WORKER/dev/videoN).
    #[arg(long, value_name = "NAME")]
    worker: Option<String>,
    /// Analyses to run, comma-separated, e.g. objects,colors.
    #[arg(long, value_delimiter = ',', required = true)]
    models: Vec<String>,
    /// Analyse every Nth frame (frames n with n % N == 0).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    frame_step: i64,
    /// A name for the job (default: the file name).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    pictures: PictureOpts,
    #[command(flatten)]
    keep: KeepOpts,
    /// Wait for the job to end (progress on a terminal); exit 1 if it failed.
    #[arg(long)]
    wait: bool,
    /// Print JSON: {"job_id": ...} (with --wait, the final status).
    #[arg(long)]
    json: bool,
    /// Idempotency key: resubmitting with the same key returns the same job.
    #[arg(long)]
    request_id: Option<String>,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Args)]
struct AnalyzeArgs {
    /// A local video path, file://, http:// or https:// URL.
    source: String,
    /// Analyses to run, comma-separated, e.g. objects,joy,colors.
    #[arg(long, value_delimiter = ',', required = true)]
    models: Vec<String>,
    /// Analyse every Nth frame (frames n with n % N == 0).
    #[arg(long, default_value_t = 1)]
    frame_step: u64,
    /// One JSON object per line: {"frame","timestamp","model","results"}.
    #[arg(long)]
    json: bool,
    /// Frames analysed at once (default: worker.threads; 0: one per core
    /// this process may use).
    #[arg(long)]
    threads: Option<u32>,
    /// Directory with the ONNX models (env PANOPTES_MODELS_DIR; default: worker.models_dir).
    #[arg(long, value_name = "DIR")]
    models_dir: Option<PathBuf>,
    /// Config file (model registry, models_dir, target_height).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct JobArgs {
    /// Job id, e.g. job-3.
    job: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Args)]
struct ResultsArgs {
    job: String,
    /// Only this frame.
    #[arg(long)]
    frame: Option<u64>,
    /// Only this model.
    #[arg(long)]
    model: Option<String>,
    /// One JSON object per line: {"frame","timestamp","model","results"}.
    #[arg(long)]
    json: bool,
    /// Keep printing results as they commit until the job ends.
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Args)]
struct FrameArgs {
    /// Job id, e.g. job-3.
    job: String,
    /// Frame number (an analysed frame: with --frame-step N, a multiple of N).
    frame: u64,
    /// Where to write the PNG (default: JOB-frame-N.png, N the frame drawn).
    #[arg(short, long, value_name = "FILE.png")]
    output: Option<PathBuf>,
    /// When the frame has no stored picture (a job keeps one per
    /// --pictures-every of stream time), draw the nearest frame that has
    /// one instead; the output says which.
    #[arg(long)]
    nearest: bool,
    /// Print {"job_id","frame","path","width","height","analysed_width","analysed_height","bytes"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Args)]
struct PruneArgs {
    /// Jobs that finished more than this long ago: e.g. 30s, 15m, 12h, 7d, 2w.
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    older_than: Duration,
    /// Print {"jobs","job_ids","results","frames","bytes","disk_bytes_before","disk_bytes_after"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientOpts,
}

use panoptes_common::parse_age;

#[derive(Args)]
struct ListArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientOpts,
}

fn env_map() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    Ok(Config::load(path, &env_map())?)
}

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

async fn run_coordinator(a: CoordinatorArgs) -> Result<()> {
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

async fn run_worker(a: WorkerArgs) -> Result<()> {
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

fn split_addrs(s: &str) -> Vec<String> {
    s.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect()
}

fn connect(c: &ClientOpts) -> Result<Client> {
    let cfg = if c.coordinator.is_none() || c.config.is_some() { Some(load_config(c.config.as_deref())?) } else { None };
    let addrs = match &c.coordinator {
        Some(s) => split_addrs(s),
        None => cfg.as_ref().map(|c| c.coordinator_addrs()).unwrap_or_default(),
    };
    let auth = match &c.token {
        Some(t) => Authorization::bearer(t).map_err(|e| anyhow!(e))?,
        None => Authorization::default(),
    };
    // TLS: the --tls-* options, else the config file's [security] (a node's
    // config names its own certificate, which then also serves as the client's).
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    match (&c.tls_ca, &cfg) {
        (Some(_), _) => panoptes_proto::tls::install_client(&path(&c.tls_ca), &path(&c.tls_cert), &path(&c.tls_key)).map_err(|e| anyhow!(e))?,
        (None, Some(cfg)) if c.config.is_some() => install_node_tls(cfg)?,
        _ if c.tls_cert.is_some() => anyhow::bail!("--tls-cert needs --tls-ca too (the CA that signs the cluster's certificates)"),
        _ => {}
    }
    Ok(Client::new(&addrs).map_err(|e| anyhow!(e))?.with_auth(auth))
}

/// A node's own outgoing connections (to coordinators, Raft peers, the web
/// API's calls) use TLS when security.tls_ca is set, presenting the node's
/// certificate.
fn install_node_tls(cfg: &Config) -> Result<()> {
    let s = &cfg.security;
    panoptes_proto::tls::install_client(&s.tls_ca, &s.tls_cert, &s.tls_key).map_err(|e| anyhow!("invalid [security] TLS settings: {e}"))
}

/// A failed call as an error that says what to do next.
fn explain(s: tonic::Status, client: &Client) -> anyhow::Error {
    anyhow!(panoptes_client::explain(&s, client.addrs()))
}

async fn status_of(client: &Client, job: &str) -> Result<pb::JobStatus> {
    client.status(pb::JobRef { job_id: job.to_string() }).await.map_err(|s| explain(s, client))
}

/// Local paths are resolved here (the coordinator's working directory differs).
fn resolve_source(source: &str) -> String {
    if source.contains("://") {
        return source.to_string();
    }
    let p = Path::new(source);
    match std::fs::canonicalize(p) {
        Ok(abs) => abs.display().to_string(),
        Err(_) if p.is_relative() => std::env::current_dir().map(|d| d.join(p).display().to_string()).unwrap_or_else(|_| source.to_string()),
        Err(_) => source.to_string(),
    }
}

async fn analyze(a: AnalyzeArgs) -> Result<ExitCode> {
    panoptes_worker::memory::tune_allocator();
    let mut cfg = load_config(a.config.as_deref())?;
    if let Some(m) = &a.models_dir {
        cfg.worker.models_dir = m.display().to_string();
    }
    if a.frame_step == 0 {
        anyhow::bail!("--frame-step must be at least 1");
    }
    let mut names: Vec<String> = Vec::new();
    for m in &a.models {
        let m = m.trim().to_string();
        if names.contains(&m) {
            anyhow::bail!("model '{m}' is listed twice");
        }
        names.push(m);
    }
    cfg.worker.models = names.clone();
    cfg.validate()?;
    panoptes_common::logging::init(cfg.log.format, "warn");
    let opts = panoptes_worker::node::WorkerOptions::from_config(&cfg, "local", Vec::new());
    let load_started = std::time::Instant::now();
    let loaded = panoptes_worker::node::load_analyses(&opts)?;
    let load_s = load_started.elapsed().as_secs_f64();
    let analyses = names.iter().map(|n| (n.clone(), loaded[n].clone())).collect();
    let threads = panoptes_worker::pipeline::Compute::new(a.threads.unwrap_or(cfg.worker.threads)).threads;
    let run = panoptes_worker::local::LocalRun {
        source: resolve_source(&a.source),
        analyses,
        frame_step: a.frame_step,
        target_height: cfg.cluster.target_height,
        depth: cfg.worker.pipeline_depth,
        batch: cfg.worker.report_batch,
        max_restarts: cfg.worker.max_restarts,
        threads: threads as u32,
        probe_timeout: std::time::Duration::from_secs(cfg.sources.probe_timeout_s),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let json_out = a.json;
    let started = std::time::Instant::now();
    let mut frames = 0u64;
    panoptes_worker::local::analyze(run, |f| {
        frames += 1;
        for o in f.outputs {
            let results: Value = serde_json::from_str(&o.results_json)?;
            if json_out {
                writeln!(out, "{}", json!({"frame": f.frame, "timestamp": f.timestamp, "model": o.model, "results": results}))?;
            } else {
                writeln!(out, "{}", render::result_line(f.frame, f.timestamp, &o.model, &results))?;
            }
        }
        Ok(())
    })
    .await?;
    out.flush()?;
    // The summary goes to stderr: stdout holds only results.
    let secs = started.elapsed().as_secs_f64();
    let fps = frames as f64 / secs.max(1e-9);
    if json_out {
        eprintln!("{}", json!({"summary": {"frames": frames, "seconds": secs, "fps": fps, "load_seconds": load_s, "threads": threads}}));
    } else {
        eprintln!("analysed {frames} frames in {secs:.1} s ({fps:.1} frames/s) on {threads} threads; models loaded in {load_s:.1} s");
    }
    Ok(ExitCode::SUCCESS)
}

async fn submit(a: SubmitArgs) -> Result<ExitCode> {
    // The API reads 0 as "the default (1)"; typed on the command line it is a mistake.
    if a.frame_step == 0 {
        anyhow::bail!("--frame-step must be at least 1 (1 analyses every frame, 2 every other frame, ...)");
    }
    // An empty source, or a name FFmpeg would read as a protocol (`concat:a|b`,
    // `data:…`, `pipe:0`) that is no file here, goes as given, for the
    // coordinator to refuse by name; made absolute it would look like a local
    // path (the empty one, the current directory).
    let protocol_like = {
        let len = a.source.find(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c))).unwrap_or(0);
        let rest = &a.source[len..];
        len > 0 && (rest.starts_with(':') || (rest.starts_with(',') && rest.contains(':')))
    };
    let as_given = a.source.trim().is_empty() || (protocol_like && !Path::new(&a.source).exists());
    let mut source = if as_given { a.source.clone() } else { resolve_source(&a.source) };
    if let Some(w) = &a.worker {
        match panoptes_media::device_source(&source) {
            Some((None, path)) => source = format!("v4l2://{w}{path}"),
            Some((Some(named), _)) if named != *w => anyhow::bail!("the source names worker '{named}' and --worker names '{w}': give one"),
            Some(_) => {}
            None => anyhow::bail!("--worker is for cameras (v4l2:///dev/videoN); other sources run on any worker"),
        }
    }
    let client = connect(&a.client)?;
    let req = pb::SubmitRequest {
        source,
        models: a.models.clone(),
        frame_step: a.frame_step,
        name: a.name.clone().unwrap_or_default(),
        request_id: a.request_id.clone().unwrap_or_else(|| format!("cli-{}-{}", std::process::id(), panoptes_common::now_ms())),
        target_height: 0,
        no_frames: a.pictures.no_frames,
        pictures_every: a.pictures.pictures_every.clone().unwrap_or_default(),
        keep: a.keep.keep.clone().unwrap_or_default(),
        keep_what: a.keep.keep_what.clone().unwrap_or_default(),
    };
    // Three tries per coordinator: a submit gets through a leader change.
    let resp = client.tries(3).submit(req).await.map_err(|s| explain(s, &client))?;
    let job = resp.job_id;
    if !a.wait {
        if a.json {
            println!("{}", json!({ "job_id": job }));
        } else {
            println!("{job}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let tty = std::io::stderr().is_terminal() && !a.json;
    if tty {
        eprintln!("submitted {job}; waiting for it to finish (Ctrl-C stops waiting, not the job)");
    }
    let started = Instant::now();
    let bar = tty.then(|| progress_bar(&job));
    let status = loop {
        let s = status_of(&client, &job).await?;
        if let Some(bar) = &bar {
            show_progress(bar, &render::progress(&s));
        }
        if is_finished(&s) {
            if let Some(bar) = &bar {
                bar.finish();
            }
            break s;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        let mut v = status_json(&status);
        v["wall_time_s"] = json!((secs * 1000.0).round() / 1000.0);
        println!("{v}");
    } else if status.error.is_empty() {
        println!(
            "{job} {}: {} of {} frames analysed in {:.1}s ({:.1} frames/s)",
            state_name(status.state),
            status.frames_done,
            status.frames_total,
            secs,
            status.frames_done as f64 / secs.max(1e-9)
        );
    } else {
        println!("{job} {}: {}", state_name(status.state), status.error);
    }
    Ok(if state_name(status.state) == "completed" { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The progress bar of `submit --wait` (indicatif, on standard error, which
/// it leaves alone when that is not a terminal).
fn progress_bar(job: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner().with_prefix(job.to_string());
    bar.set_style(indicatif::ProgressStyle::with_template("{prefix} {spinner} {msg} {elapsed}").expect("a valid template"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn show_progress(bar: &indicatif::ProgressBar, p: &render::Progress) {
    match p.length {
        Some(len) if bar.length() != Some(len) => {
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} frames  {per_sec}  ETA {eta}  {msg}")
                    .expect("a valid template")
                    .progress_chars("#>-"),
            );
            bar.set_length(len);
        }
        _ => {}
    }
    bar.set_position(p.position);
    bar.set_message(p.message.clone());
}

async fn status(a: JobArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let s = status_of(&client, &a.job).await?;
    if a.json {
        println!("{}", status_json(&s));
    } else {
        print!("{}", render::status_text(&s, state_name(s.state)));
    }
    Ok(ExitCode::SUCCESS)
}

async fn results(a: ResultsArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let req = pb::ResultsRequest {
        job_id: a.job.clone(),
        has_frame: a.frame.is_some(),
        frame: a.frame.unwrap_or(0),
        model: a.model.clone().unwrap_or_default(),
        follow: a.follow,
        ..Default::default()
    };
    let mut stream = client.stream_results(req).await.map_err(|s| explain(s, &client))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut n = 0u64;
    while let Some(r) = stream.message().await.map_err(|s| explain(s, &client))? {
        let results: Value = serde_json::from_str(&r.results_json).context("coordinator sent invalid results JSON")?;
        if a.json {
            writeln!(out, "{}", json!({"frame": r.frame, "timestamp": r.timestamp, "model": r.model, "results": results}))?;
        } else {
            writeln!(out, "{}", render::result_line(r.frame, r.timestamp, &r.model, &results))?;
        }
        n += 1;
        if a.follow {
            out.flush()?;
        }
    }
    out.flush()?;
    if n == 0 && a.frame.is_some() && !a.json {
        eprintln!("no results for frame {} (not analysed, or not committed yet)", a.frame.unwrap());
    }
    Ok(ExitCode::SUCCESS)
}

async fn cancel(a: JobArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let r = pb::JobRef { job_id: a.job.clone() };
    let s = client.cancel(r).await.map_err(|s| explain(s, &client))?;
    if a.json {
        println!("{}", status_json(&s));
    } else {
        println!("{} {}", s.job_id, state_name(s.state));
    }
    Ok(ExitCode::SUCCESS)
}

async fn live(a: LiveArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let req = pb::LiveRequest {
        models: a.models.clone(),
        name: a.name.clone().unwrap_or_default(),
        frame_step: a.frame_step,
        keep: a.keep.keep.clone().unwrap_or_default(),
        keep_what: a.keep.keep_what.clone().unwrap_or_default(),
        no_frames: a.pictures.no_frames,
        pictures_every: a.pictures.pictures_every.clone().unwrap_or_default(),
    };
    let e = client.create_live(req).await.map_err(|s| explain(s, &client))?;
    if a.json {
        println!("{}", json!({"job_id": e.job_id, "rtmp_url": e.rtmp_url}));
    } else {
        println!("{} created; push to {}", e.job_id, e.rtmp_url);
        println!("e.g. ffmpeg -re -i INPUT -c:v libx264 -preset ultrafast -tune zerolatency -f flv {}", e.rtmp_url);
    }
    Ok(ExitCode::SUCCESS)
}

async fn metrics(a: JobArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let r = pb::JobRef { job_id: a.job.clone() };
    let m = client.metrics(r).await.map_err(|s| explain(s, &client))?;
    let inference: BTreeMap<String, f64> = m.inference_time_s.clone().into_iter().collect();
    if a.json {
        println!("{}", metrics_json(&m));
    } else {
        print!("{}", render::metrics_text(&m, &inference));
    }
    Ok(ExitCode::SUCCESS)
}

async fn frame(a: FrameArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let r = pb::FrameRef { job_id: a.job.clone(), frame: a.frame, nearest: a.nearest };
    let f = client.annotated_frame(r).await.map_err(|s| explain(s, &client))?;
    let path = a.output.clone().unwrap_or_else(|| PathBuf::from(format!("{}-frame-{}.png", a.job, f.frame)));
    std::fs::write(&path, &f.png).with_context(|| format!("cannot write {}", path.display()))?;
    if a.json {
        println!(
            "{}",
            json!({"job_id": a.job, "frame": f.frame, "path": path.display().to_string(), "width": f.width, "height": f.height,
                   "analysed_width": f.analysed_width, "analysed_height": f.analysed_height, "bytes": f.png.len()})
        );
    } else {
        let instead = if f.frame != a.frame { format!(" (the nearest frame to {} with a stored picture)", a.frame) } else { String::new() };
        println!("{}: frame {}{instead} of {} drawn with its results ({}x{}, {} bytes)", path.display(), f.frame, a.job, f.width, f.height, f.png.len());
    }
    Ok(ExitCode::SUCCESS)
}

async fn prune(a: PruneArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let r = pb::PruneRequest { older_than_ms: a.older_than.as_millis() as u64 };
    let p = client.prune(r).await.map_err(|s| explain(s, &client))?;
    if a.json {
        println!(
            "{}",
            json!({"jobs": p.jobs, "job_ids": p.job_ids, "results": p.results, "frames": p.frames, "bytes": p.bytes,
                   "disk_bytes_before": p.disk_bytes_before, "disk_bytes_after": p.disk_bytes_after})
        );
    } else if p.jobs == 0 {
        println!("nothing to prune: no job finished more than {} ago", render::age(a.older_than));
    } else {
        println!(
            "pruned {} job(s) ({}): {} results, {} stored frames, {} freed in the store (on disk: {} before, {} now; sled reclaims space as it rewrites segments)",
            p.jobs,
            p.job_ids.join(", "),
            p.results,
            p.frames,
            render::bytes(p.bytes),
            render::bytes(p.disk_bytes_before),
            render::bytes(p.disk_bytes_after)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn videos(a: ListArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let r = client.videos(pb::ListVideosRequest { limit: 0 }).await.map_err(|s| explain(s, &client))?;
    if a.json {
        let v: Vec<Value> = r
            .videos
            .iter()
            .map(|v| json!({"id": v.job_id, "name": v.name, "source": v.source, "state": state_name(v.state), "frames": v.frames, "finished_at": v.finished_at_ms}))
            .collect();
        println!("{}", Value::Array(v));
    } else {
        print!("{}", render::videos_table(&r.videos, state_name));
    }
    Ok(ExitCode::SUCCESS)
}

async fn models(a: ListArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let r = client.models(pb::ListModelsRequest {}).await.map_err(|s| explain(s, &client))?;
    if a.json {
        let v: Vec<Value> = r.models.iter().map(|m| json!({"name": m.name, "family": m.family, "files": m.files})).collect();
        println!("{}", Value::Array(v));
    } else {
        for m in &r.models {
            println!("{:<10} {:<10} {}", m.name, m.family, m.files.join(","));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Coordinator(a) => run_coordinator(a).await.map(|_| ExitCode::SUCCESS),
        Cmd::Worker(WorkerArgs { cmd: Some(WorkerCmd::Drain(d)), .. }) => drain(d).await,
        Cmd::Worker(a) => run_worker(a).await.map(|_| ExitCode::SUCCESS),
        Cmd::Analyze(a) => analyze(a).await,
        Cmd::Token(a) => token(a),
        Cmd::Certs(a) => certs(a),
        Cmd::Submit(a) => submit(a).await,
        Cmd::Status(a) => status(a).await,
        Cmd::Results(a) => results(a).await,
        Cmd::Tracks(a) => tracks::tracks(a).await,
        Cmd::Live(a) => live(a).await,
        Cmd::Cancel(a) => cancel(a).await,
        Cmd::Metrics(a) => metrics(a).await,
        Cmd::Frame(a) => frame(a).await,
        Cmd::Prune(a) => prune(a).await,
        Cmd::Videos(a) => videos(a).await,
        Cmd::Models(a) => models(a).await,
        Cmd::Cluster { cmd: ClusterCmd::Status(a) } => cluster_status(a).await,
        Cmd::Cluster { cmd: ClusterCmd::AddMember(a) } => add_member(a).await,
        Cmd::Cluster { cmd: ClusterCmd::RemoveMember(a) } => remove_member(a).await,
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod age_tests {
    use super::*;

    #[test]
    fn ages_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(parse_age("7y").unwrap_err().contains("unknown unit 'y'"));
        assert!(parse_age("d").is_err());
        assert_eq!(render::age(Duration::from_secs(7 * 86_400)), "1w");
        assert_eq!(render::age(Duration::from_secs(90)), "90s");
        assert_eq!(render::bytes(1536), "1.5 KiB");
        assert_eq!(render::bytes(100), "100 B");
    }
}
