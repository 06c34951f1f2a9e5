//! The command line: clap's definitions of every command and its options
//! (their `///` comments are the --help text), and the checks of option
//! values clap runs while parsing.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use panoptes_common::parse_age;

use crate::admin::{AddMemberArgs, CertsArgs, DrainArgs, RemoveMemberArgs, TokenArgs};
use crate::{alerts, stats, tracks};

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
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Args, Clone)]
pub(crate) struct ClientOpts {
    /// Coordinator address(es), HOST:PORT[,HOST:PORT...]; any member works.
    #[arg(long, env = "PANOPTES_COORDINATOR", global = true, value_name = "ADDR,...")]
    pub(crate) coordinator: Option<String>,
    /// Cluster config file (used for the coordinator list when --coordinator is not given).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Bearer token for a cluster with security.tokens_file set (from `panoptes token`).
    #[arg(long, env = "PANOPTES_TOKEN", global = true, hide_env_values = true, value_name = "TOKEN")]
    pub(crate) token: Option<String>,
    /// Connect over TLS, trusting this CA certificate (PEM; `panoptes certs`
    /// makes one). Default: security.tls_ca of --config, else plain text.
    #[arg(long, env = "PANOPTES_TLS_CA", global = true, value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) to present, for clusters with
    /// security.require_client_cert; needs --tls-key.
    #[arg(long, env = "PANOPTES_TLS_CERT", global = true, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "PANOPTES_TLS_KEY", global = true, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
    /// joined across frames into tracks by the leader's IoU tracker (results
    /// carry each detection's `track_id`): id, first and last frame, best
    /// score, zones entered, box path; the same however the job was split or
    /// where a live stream resumed.
    Tracks(tracks::TracksArgs),
    /// A job's results in windows of stream time (`--window 5s`, sliding with
    /// `--slide 1s`): frames, detections and distinct tracks per label,
    /// faces per emotion and gender, the dominant colour; `--follow` prints
    /// each window of a live job as it closes.
    Stats(stats::StatsArgs),
    /// The alerts that jobs' rules (`submit --rule`, `live --rule`) recorded:
    /// each once, with a stable id, oldest first; `--follow` prints new ones
    /// as they are recorded.
    Alerts(alerts::AlertsArgs),
    /// Create a live job and print where to push its RTMP stream; results are
    /// committed while it runs (`results --follow`), and it completes when the
    /// publisher stops.
    Live(LiveArgs),
    /// Cancel a job and free its leases.
    Cancel(JobArgs),
    /// Add a zone to a running job (a live stream, say): tracks entering and
    /// leaving it are recorded from the first frame not yet tracked.
    Zone(ZoneArgs),
    /// A job's timings: decode, resize, inference per model, throughput.
    Metrics(JobArgs),
    /// Draw one analysed frame with its results (object boxes with track id,
    /// label and score, faces with emotion and gender, the colour palette,
    /// the job's zones outlined) into a PNG.
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
pub(crate) struct LiveArgs {
    /// Analyses to run, comma-separated (see `panoptes models`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) models: Vec<String>,
    /// Analyse every Nth frame (frames numbered from 0 in arrival order).
    #[arg(long, default_value_t = 1)]
    pub(crate) frame_step: i64,
    /// A name for the job (default: live-<key prefix>).
    #[arg(long)]
    pub(crate) name: Option<String>,
    #[command(flatten)]
    pub(crate) pictures: PictureOpts,
    #[command(flatten)]
    pub(crate) keep: KeepOpts,
    #[command(flatten)]
    pub(crate) rules: RuleOpts,
    /// Print {"job_id","rtmp_url"}.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) client: ClientOpts,
}

/// Stored pictures of analysed frames (`panoptes frame`, the web page).
#[derive(Args)]
pub(crate) struct PictureOpts {
    /// Keep at most one picture per INTERVAL of stream time: the first
    /// analysed frame at or after each multiple of it (e.g. 200ms, 1s, 10s;
    /// 0: every analysed frame). Default: the cluster's frames.every (1s).
    /// Each picture costs the worker a JPEG encode and the coordinators
    /// ~20 KB of disk.
    #[arg(long, value_name = "INTERVAL", value_parser = parse_pictures_every)]
    pub(crate) pictures_every: Option<String>,
    /// Keep no pictures (`panoptes frame` then has nothing to draw on).
    #[arg(long, conflicts_with = "pictures_every")]
    pub(crate) no_frames: bool,
}

/// `--pictures-every`: checked here for a quick, clear error; the coordinator checks it again.
fn parse_pictures_every(s: &str) -> std::result::Result<String, String> {
    panoptes_common::parse_interval_ms(s)?;
    Ok(s.trim().to_string())
}

/// Alert rules.
#[derive(Args)]
pub(crate) struct RuleOpts {
    /// An alert rule (repeatable): `[NAME:] CONDITION [for DURATION] [, cooldown DURATION]`,
    /// CONDITION one of `count(LABEL) >= N` (or >, <=, <, ==), `emotion EMOTION`,
    /// `no LABEL` or `no object` (these two with `for`), and on a --zone
    /// `count(LABEL in ZONE) >= N`, `LABEL enters ZONE`, `LABEL leaves ZONE`
    /// (`object` for any label; these fire each time, no `for`). E.g. --rule "crowd:
    /// count(person) >= 3 for 10s, cooldown 1m". The cluster records each alert
    /// once, from committed results (`panoptes alerts`).
    #[arg(long = "rule", value_name = "RULE")]
    pub(crate) rules: Vec<String>,
    /// A zone (repeatable): `NAME=x1,y1,x2,y2,x3,y3[,...]`, a polygon in
    /// fractions of the frame (every number at most 1: 0,0 is the top left,
    /// 1,1 the bottom right) or in pixels of the analysed frame. A tracked
    /// object is in it when the middle of its box's bottom edge is; tracks
    /// record the zones they enter, results carry `zones`, and rules can say
    /// `car enters gate`, `person leaves door`, `count(person in door) >= 2`.
    /// E.g. --zone door=0.6,0.2,0.9,0.2,0.9,1,0.6,1
    #[arg(long = "zone", value_name = "ZONE")]
    pub(crate) zones: Vec<String>,
}

#[derive(Args)]
pub(crate) struct ZoneArgs {
    /// Job id, e.g. job-3.
    pub(crate) job: String,
    /// `NAME=x1,y1,x2,y2,x3,y3[,...]`, as `submit --zone` takes it.
    pub(crate) zone: String,
    /// Print the job's status as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) client: ClientOpts,
}

/// Retention while a job runs.
#[derive(Args)]
pub(crate) struct KeepOpts {
    /// Keep only the newest AGE of stream time (e.g. 1h, 30m, 7d), deleting
    /// older results and/or pictures as the job goes and giving their disk
    /// back. Default: the cluster's retention.keep (none: keep everything).
    #[arg(long, value_name = "AGE", value_parser = parse_keep)]
    pub(crate) keep: Option<String>,
    /// What --keep deletes: both (default), results or pictures.
    #[arg(long, value_name = "WHAT", value_parser = ["both", "results", "pictures"])]
    pub(crate) keep_what: Option<String>,
}

/// `--keep`: checked here for a quick, clear error; the coordinator checks it again.
fn parse_keep(s: &str) -> std::result::Result<String, String> {
    match parse_age(s)? {
        d if d.is_zero() => Err("--keep 0 would keep nothing: give a duration such as 1h, or leave --keep out".into()),
        _ => Ok(s.trim().to_string()),
    }
}

#[derive(Subcommand)]
pub(crate) enum ClusterCmd {
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
pub(crate) enum WorkerCmd {
    /// Stop leasing new shards to a worker: it finishes the shards it holds
    /// (or, with --hand-back, returns them at once). --undo resumes it.
    Drain(DrainArgs),
}

#[derive(Args)]
pub(crate) struct CoordinatorArgs {
    /// This member's id (its entry in cluster.coordinators).
    #[arg(long)]
    pub(crate) id: u64,
    /// Config file; without one the defaults make a local cluster on 127.0.0.1.
    /// Any key can be set as PANOPTES_<SECTION>_<KEY> (e.g. PANOPTES_WORKER_CAPACITY=8).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Where the Raft log, state and snapshots live (default: coordinator.data_dir).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Address to serve on (default: this id's address in the config).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) listen: Option<String>,
    /// All members as ID=HOST:PORT,... (overrides cluster.coordinators).
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    pub(crate) peers: Option<String>,
    /// Join a running cluster: never initialise a new one, wait for
    /// `panoptes cluster add-member ID ADDR` instead.
    #[arg(long)]
    pub(crate) join: bool,
}

#[derive(Args)]
pub(crate) struct WorkerArgs {
    #[command(subcommand)]
    pub(crate) cmd: Option<WorkerCmd>,
    /// A name unique in the cluster, e.g. w1.
    #[arg(long, required = true)]
    pub(crate) name: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Address for the worker's own listeners (live ingest).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) listen: Option<String>,
    /// Coordinator address(es) (default: cluster.coordinators).
    #[arg(long, env = "PANOPTES_COORDINATOR", value_name = "ADDR,...")]
    pub(crate) coordinator: Option<String>,
    /// Directory with the ONNX models (env PANOPTES_MODELS_DIR; default: worker.models_dir).
    #[arg(long, value_name = "DIR")]
    pub(crate) models_dir: Option<PathBuf>,
    /// Analyses to load and offer, comma-separated (default: worker.models).
    #[arg(long, value_delimiter = ',')]
    pub(crate) models: Option<Vec<String>>,
    /// Shards to work on at once (default: worker.capacity).
    #[arg(long)]
    pub(crate) capacity: Option<u32>,
    /// Frames analysed at once over all shards (default: worker.threads; 0:
    /// one per core this process may use). Several workers on one host: give
    /// each a share, or pin them (taskset), so they do not fight over cores.
    #[arg(long)]
    pub(crate) threads: Option<u32>,
}

#[derive(Args)]
pub(crate) struct SubmitArgs {
    /// A local video path, a file://, http:// or https:// URL, a live
    /// rtsp://, rtmp:// or rtmps:// stream (analysed as it arrives), or a
    /// camera: v4l2:///dev/videoN with --worker.
    pub(crate) source: String,
    /// The worker a camera (v4l2:///dev/videoN) is attached to; the job runs
    /// there (same as the source v4l2://WORKER/dev/videoN).
    #[arg(long, value_name = "NAME")]
    pub(crate) worker: Option<String>,
    /// Analyses to run, comma-separated, e.g. objects,colors.
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) models: Vec<String>,
    /// Analyse every Nth frame (frames n with n % N == 0).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub(crate) frame_step: i64,
    /// A name for the job (default: the file name).
    #[arg(long)]
    pub(crate) name: Option<String>,
    #[command(flatten)]
    pub(crate) pictures: PictureOpts,
    #[command(flatten)]
    pub(crate) keep: KeepOpts,
    #[command(flatten)]
    pub(crate) rules: RuleOpts,
    /// Wait for the job to end (progress on a terminal); exit 1 if it failed.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Print JSON: {"job_id": ...} (with --wait, the final status).
    #[arg(long)]
    pub(crate) json: bool,
    /// Idempotency key: resubmitting with the same key returns the same job.
    #[arg(long)]
    pub(crate) request_id: Option<String>,
    #[command(flatten)]
    pub(crate) client: ClientOpts,
}

#[derive(Args)]
pub(crate) struct AnalyzeArgs {
    /// A local video path, file://, http:// or https:// URL.
    pub(crate) source: String,
    /// Analyses to run, comma-separated, e.g. objects,joy,colors.
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) models: Vec<String>,
    /// Analyse every Nth frame (frames n with n % N == 0).
    #[arg(long, default_value_t = 1)]
    pub(crate) frame_step: u64,
    /// One JSON object per line: {"frame","timestamp","model","results"}.
    #[arg(long)]
    pub(crate) json: bool,
    /// Frames analysed at once (default: worker.threads; 0: one per core
    /// this process may use).
    #[arg(long)]
    pub(crate) threads: Option<u32>,
    /// Directory with the ONNX models (env PANOPTES_MODELS_DIR; default: worker.models_dir).
    #[arg(long, value_name = "DIR")]
    pub(crate) models_dir: Option<PathBuf>,
    /// Config file (model registry, models_dir, target_height).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// A zone (repeatable), as `submit --zone` takes it: detections then
    /// carry the `zones` they stand in.
    #[arg(long = "zone", value_name = "ZONE")]
    pub(crate) zones: Vec<String>,
}

#[derive(Args)]
pub(crate) struct JobArgs {
    /// Job id, e.g. job-3.
    pub(crate) job: String,
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) client: ClientOpts,
}

#[derive(Args)]
pub(crate) struct ResultsArgs {
    pub(crate) job: String,
    /// Only this frame.
    #[arg(long)]
    pub(crate) frame: Option<u64>,
    /// Only this model.
    #[arg(long)]
    pub(crate) model: Option<String>,
    /// One JSON object per line: {"frame","timestamp","model","results"}.
    #[arg(long)]
    pub(crate) json: bool,
    /// Keep printing results as they commit until the job ends.
    #[arg(long)]
    pub(crate) follow: bool,
    #[command(flatten)]
    pub(crate) client: ClientOpts,
}

#[derive(Args)]
pub(crate) struct FrameArgs {
    /// Job id, e.g. job-3.
    pub(crate) job: String,
    /// Frame number (an analysed frame: with --frame-step N, a multiple of N).
    pub(crate) frame: u64,
    /// Where to write the PNG (default: JOB-frame-N.png, N the frame drawn).
    #[arg(short, long, value_name = "FILE.png")]
    pub(crate) output: Option<PathBuf>,
    /// When the frame has no stored picture (a job keeps one per
    /// --pictures-every of stream time), draw the nearest frame that has
    /// one instead; the output says which.
    #[arg(long)]
    pub(crate) nearest: bool,
    /// Print {"job_id","frame","path","width","height","analysed_width","analysed_height","bytes"}.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) client: ClientOpts,
}

#[derive(Args)]
pub(crate) struct PruneArgs {
    /// Jobs that finished more than this long ago: e.g. 30s, 15m, 12h, 7d, 2w.
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub(crate) older_than: Duration,
    /// Print {"jobs","job_ids","results","frames","bytes","disk_bytes_before","disk_bytes_after"}.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) client: ClientOpts,
}

#[derive(Args)]
pub(crate) struct ListArgs {
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) client: ClientOpts,
}

#[cfg(test)]
mod age_tests {
    use super::*;
    use crate::render;

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
