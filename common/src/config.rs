//! `cluster.toml`: one file describes a whole cluster; every key has a default
//! so that no file at all gives a working local cluster on 127.0.0.1.
//! Command-line flags override the file (the binary applies them), and a few
//! environment variables override both where noted.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default address of coordinator 1.
pub const DEFAULT_COORDINATOR_ADDR: &str = "127.0.0.1:7400";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub cluster: ClusterSection,
    pub coordinator: CoordinatorSection,
    pub worker: WorkerSection,
    pub frames: FramesSection,
    pub object_store: ObjectStoreSection,
    pub live: LiveSection,
    pub sources: SourcesSection,
    pub security: SecuritySection,
    pub log: LogSection,
    pub retention: RetentionSection,
    /// The model registry: every analysis a worker can load, by name. The
    /// built-ins (`objects`, `joy`, `colors`) are always present; a file's
    /// `[models.NAME]` tables override their keys or add new models.
    #[serde(default = "builtin_models", deserialize_with = "deserialize_registry")]
    pub models: BTreeMap<String, ModelConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: u64,
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// The coordinators (Raft members): 1, 3 or 5 of them.
    pub coordinators: Vec<Peer>,
    /// Target frames per shard; shards are cut at keyframes when possible.
    pub shard_frames: u64,
    /// A lease not renewed by a heartbeat for this long expires and its
    /// unacknowledged frames are leased again.
    pub lease_timeout_ms: u64,
    /// How often workers heartbeat.
    pub heartbeat_interval_ms: u64,
    /// Frames taller than this are scaled down before analysis.
    pub target_height: u32,
    /// A shard that fails this many times fails its job.
    pub max_shard_attempts: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorSection {
    /// Where Raft log, state machine and snapshots live; `{id}` is replaced.
    pub data_dir: String,
    /// Address to serve gRPC on; default: this id's address in `cluster.coordinators`.
    pub listen: Option<String>,
    /// Build a snapshot (and compact the log) after this many log entries.
    pub snapshot_logs: u64,
    /// Raft heartbeat interval; elections time out after 3–6 of these.
    pub raft_heartbeat_ms: u64,
    /// sled's page cache, MiB: with the snapshot buffers, what bounds a
    /// coordinator's memory however much it stores.
    pub cache_mb: u64,
    /// How long sending one snapshot chunk, or the last chunk and installing
    /// the whole snapshot, may take before the leader starts it again.
    pub snapshot_timeout_s: u64,
    /// Compress the store (zstd) when a data directory is created: about a
    /// third of the disk for results and the Raft log, for ~40% of the
    /// highest commit rate one coordinator reaches (docs/SCALING.md). An
    /// existing data directory keeps the setting it was created with.
    pub compress_store: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Worker scratch space; `{name}` is replaced.
    pub data_dir: String,
    /// Address for the worker's own listeners (live ingest); port 0 = any free port.
    pub listen: String,
    /// Directory with the ONNX model files (env `PANOPTES_MODELS_DIR` overrides).
    pub models_dir: String,
    /// Analyses this worker loads at start-up and offers.
    pub models: Vec<String>,
    /// The onnxruntime shared library for models with `engine =
    /// "onnxruntime"` (empty: `libonnxruntime.so` in `models_dir`, where
    /// `cargo xtask models` puts the one the onnxruntime wheel ships).
    pub onnxruntime_library: String,
    /// Shards worked on at once.
    pub capacity: u32,
    /// Frames analysed at once, over all of this worker's shards and models
    /// (frames of one shard run in parallel); 0: one per core this process
    /// may use. Give several workers on one host a share each, or pin them.
    pub threads: u32,
    /// Frames in flight per shard (decoded but not yet acknowledged).
    pub pipeline_depth: u32,
    /// Frames per report to the coordinator.
    pub report_batch: u32,
    /// A crashed stage is restarted this many times per shard before the shard is reported failed.
    pub max_restarts: u32,
}

/// Stored pictures of analysed frames (drawn with their results later).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FramesSection {
    /// Keep a picture of every analysed frame by default (a job may opt out).
    pub store: bool,
    /// Stored pictures are scaled down to at most this many pixels tall.
    pub max_height: u32,
    /// JPEG quality, 1-100.
    pub quality: u32,
    /// At most one picture per this much stream time (`1s`, `500ms`; `0`:
    /// every analysed frame), by default; `submit --pictures-every` sets it
    /// per job.
    pub every: String,
}

/// Stored pictures in an S3-compatible object store instead of on every
/// coordinator's disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectStoreSection {
    /// `s3://BUCKET[/PREFIX]`; empty: pictures stay on the coordinators.
    pub url: String,
    /// An S3-compatible server, e.g. `http://127.0.0.1:9000`; empty: AWS.
    pub endpoint: String,
    /// The bucket's region (default us-east-1).
    pub region: String,
    /// A file of two lines: the access key id, then the secret key; empty:
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment.
    pub credentials_file: String,
    /// Allow a plain-HTTP endpoint (a server on this machine or a private network).
    pub allow_http: bool,
}

impl ObjectStoreSection {
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// The bucket and the key prefix `url` names.
    pub fn bucket_and_prefix(&self) -> Result<(String, String), String> {
        let rest = self
            .url
            .trim()
            .strip_prefix("s3://")
            .ok_or_else(|| format!("object_store.url '{}' must be s3://BUCKET or s3://BUCKET/PREFIX", self.url))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("object_store.url '{}' names no bucket: use s3://BUCKET[/PREFIX]", self.url));
        }
        Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        self.bucket_and_prefix()?;
        if self.endpoint.starts_with("http://") && !self.allow_http {
            return Err(format!(
                "object_store.endpoint {} is plain HTTP: set object_store.allow_http = true if that is meant (a server on this machine or a private network)",
                self.endpoint
            ));
        }
        if !self.endpoint.is_empty() && !self.endpoint.starts_with("http://") && !self.endpoint.starts_with("https://") {
            return Err(format!("object_store.endpoint '{}' must be an http:// or https:// URL", self.endpoint));
        }
        Ok(())
    }
}

/// Live RTMP push streams (`panoptes live`), as the ingesting worker runs them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LiveSection {
    /// A publisher that has not connected this long after the worker started
    /// listening fails the live job; so does a push whose worker was lost
    /// and that no publisher resumed on a worker's ingest lobby this long.
    pub connect_timeout_s: u64,
    /// A connected publisher that sends nothing for this long is taken as gone:
    /// the job completes with what was analysed.
    pub idle_timeout_s: u64,
    /// A connection to a live stream's ingest port (or the ingest lobby)
    /// that has not completed its RTMP handshake this long after it
    /// connected is closed, and costs the stream nothing: a port scan, a
    /// silent or trickling client never holds the port.
    pub handshake_timeout_s: u64,
    /// What a live job does when analysis is slower than the stream:
    /// `latest` (the default) analyses the freshest frame as soon as the
    /// models are free, at most one frame waits and a newer one replaces it;
    /// `lag` drops the oldest waiting frames once they are older than
    /// `max_lag_ms`; `every_nth` analyses only every `keep_every`-th frame
    /// (and still drops when the pipeline is full).
    pub drop_policy: String,
    /// `lag` policy: a frame waiting longer than this is dropped, oldest first.
    pub max_lag_ms: u64,
    /// `every_nth` policy: analyse one frame in this many.
    pub keep_every: u32,
    /// A pull source (rtsp://, rtmp://) that drops is reopened up to this many
    /// times in a row, waiting `reconnect_backoff_ms` doubled each time (at
    /// most `reconnect_max_backoff_ms`); then the job fails.
    pub reconnect_attempts: u32,
    pub reconnect_backoff_ms: u64,
    pub reconnect_max_backoff_ms: u64,
}

impl Default for LiveSection {
    fn default() -> Self {
        Self {
            connect_timeout_s: 60,
            idle_timeout_s: 10,
            handshake_timeout_s: 5,
            drop_policy: "latest".into(),
            max_lag_ms: 1000,
            keep_every: 2,
            reconnect_attempts: 5,
            reconnect_backoff_ms: 500,
            reconnect_max_backoff_ms: 8000,
        }
    }
}

impl LiveSection {
    /// The `[live]` values a worker cannot run with, named with what to use.
    pub fn validate(&self) -> Result<(), String> {
        if !["latest", "lag", "every_nth"].contains(&self.drop_policy.as_str()) {
            return Err(format!("live.drop_policy is '{}': use latest, lag or every_nth", self.drop_policy));
        }
        if self.max_lag_ms == 0 || self.keep_every == 0 {
            return Err(format!("live.max_lag_ms ({}) and live.keep_every ({}) must be at least 1", self.max_lag_ms, self.keep_every));
        }
        if self.connect_timeout_s == 0 || self.idle_timeout_s == 0 || self.handshake_timeout_s == 0 {
            return Err("live.connect_timeout_s, live.idle_timeout_s and live.handshake_timeout_s must be at least 1".into());
        }
        if self.reconnect_backoff_ms == 0 || self.reconnect_max_backoff_ms < self.reconnect_backoff_ms {
            return Err(format!(
                "live.reconnect_backoff_ms ({}) must be at least 1 and at most live.reconnect_max_backoff_ms ({})",
                self.reconnect_backoff_ms, self.reconnect_max_backoff_ms
            ));
        }
        Ok(())
    }
}

/// Which sources a job may name (server-side request forgery and local file
/// access are refused unless allowed here).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesSection {
    /// Local files may be analysed only inside these directories, after `..`
    /// and symlinks are resolved; `[]` refuses every local file. Not set:
    /// `["/"]` (any file the coordinator and workers can read), which is
    /// what a single-user cluster without tokens wants; a config that sets
    /// `security.tokens_file` must set it explicitly (see
    /// [`SourcesSection::file_dirs`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_dirs: Option<Vec<String>>,
    /// Network sources (http, https, rtsp, rtmp) may not reach loopback,
    /// private, link-local, multicast or unspecified addresses unless the
    /// address falls in one of these (an IP, or a CIDR such as "10.0.0.0/8").
    pub allow_networks: Vec<String>,
    /// Probing a file source (the leader reads it whole to plan the job)
    /// must finish within this many seconds, or the job fails saying the
    /// source sent too little data; this also stops a server that trickles
    /// bytes slowly enough to defeat every read timeout. The same bound
    /// applies to a worker's decode of a file shard (and to `panoptes
    /// analyze`): a source that yields no frame for this long fails it.
    pub probe_timeout_s: u64,
}

impl Default for SourcesSection {
    fn default() -> Self {
        Self { file_dirs: None, allow_networks: Vec::new(), probe_timeout_s: 120 }
    }
}

impl SourcesSection {
    /// The directories local sources may be read from: `file_dirs` as set,
    /// `["/"]` when not set.
    pub fn file_dirs(&self) -> Vec<String> {
        self.file_dirs.clone().unwrap_or_else(|| vec!["/".into()])
    }

    /// `[sources]` values no node may run with, named with what to use.
    /// `security` is the same config's `[security]`: with tokens, local
    /// files must be confined explicitly.
    pub fn validate(&self, security: &SecuritySection) -> Result<(), String> {
        if self.probe_timeout_s == 0 {
            return Err("sources.probe_timeout_s must be at least 1 (seconds a probe of a source may take)".into());
        }
        if !security.tokens_file.is_empty() && self.file_dirs.is_none() {
            // The default, "/", is for a single user: with tokens, every
            // holder of a user token could read any file the coordinator can.
            return Err("security.tokens_file is set but sources.file_dirs is not: without it, every holder of a token could analyse \
                        any file the coordinators and workers can read (the default is [\"/\"]). Set sources.file_dirs to the directories \
                        videos may be read from, e.g. file_dirs = [\"/srv/videos\"], or to [] to allow no local files (network sources only)"
                .into());
        }
        Ok(())
    }
}

/// TLS, authentication and request limits of the gRPC API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// This node's certificate chain and private key (PEM files). With both
    /// set, a coordinator serves gRPC over TLS only.
    pub tls_cert: String,
    pub tls_key: String,
    /// The CA certificate (PEM) that signs the cluster's certificates. With
    /// it set, every outgoing gRPC connection (CLI, worker, coordinator to
    /// coordinator) uses TLS and verifies the server against it.
    pub tls_ca: String,
    /// Require every gRPC client to present a certificate signed by `tls_ca`.
    pub require_client_cert: bool,
    /// Keep the web UI port (gRPC port + 20000) on plain HTTP even with
    /// `tls_cert`/`tls_key` set, which otherwise make it serve HTTPS with
    /// them: for a TLS-terminating reverse proxy in front of it.
    pub web_plain_http: bool,
    /// Host names the web UI answers to besides IP addresses, `localhost`
    /// and this machine's host name (others are refused: a page elsewhere
    /// could otherwise reach it by DNS rebinding), e.g. ["panoptes.example"].
    pub web_hosts: Vec<String>,
    /// A file of bearer tokens, one per line: `ROLE NAME SHA256-HEX` where
    /// ROLE is `user` (submit and read) or `admin` (everything). With it
    /// set, every user or admin call needs `authorization: Bearer TOKEN`.
    pub tokens_file: String,
    /// A file holding the cluster secret that workers and coordinators
    /// present to each other; with it set, worker and Raft calls need it.
    pub cluster_secret_file: String,
    /// The largest gRPC request accepted, in bytes.
    pub max_request_bytes: u64,
    /// gRPC connections a coordinator holds at once; one more is closed as
    /// it arrives (workers, peers and clients together).
    pub max_connections: usize,
    /// Per-client request rate (token bucket): sustained requests per second
    /// and burst. 0 turns the limit off.
    pub rate_limit_per_s: u32,
    pub rate_limit_burst: u32,
}

impl Default for SecuritySection {
    fn default() -> Self {
        Self {
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
            require_client_cert: false,
            web_plain_http: false,
            web_hosts: Vec::new(),
            tokens_file: String::new(),
            cluster_secret_file: String::new(),
            max_request_bytes: 4 << 20,
            max_connections: 4096,
            rate_limit_per_s: 200,
            rate_limit_burst: 400,
        }
    }
}

impl SecuritySection {
    /// Settings that cannot work together, named with what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections < 8 {
            return Err(format!(
                "security.max_connections is {}: a coordinator needs at least 8 (its peers, workers and clients each hold one)",
                self.max_connections
            ));
        }
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return Err("security.tls_cert and security.tls_key go together: set both or neither".into());
        }
        if !self.tls_cert.is_empty() && self.tls_ca.is_empty() {
            return Err("security.tls_cert needs security.tls_ca too: nodes reach each other over TLS and check each other's certificates against it (`panoptes certs` makes all three)".into());
        }
        if self.require_client_cert && (self.tls_ca.is_empty() || self.tls_cert.is_empty()) {
            return Err("security.require_client_cert needs security.tls_ca, tls_cert and tls_key (make them with `panoptes certs`)".into());
        }
        if !self.tokens_file.is_empty() && self.cluster_secret_file.is_empty() {
            // Workers and coordinators call each other with the secret, not
            // with tokens: without it, anyone could register a worker,
            // report results or have a follower forward any command.
            return Err("security.tokens_file needs security.cluster_secret_file too: without it the worker and Raft services, which take no tokens, \
                        accept anyone (a forged Register, Report or Prune). Make one with `head -c 32 /dev/urandom | base64 > cluster.secret` \
                        and set cluster_secret_file to it on every coordinator and worker"
                .into());
        }
        if self.max_request_bytes < 1024 || self.max_request_bytes > u32::MAX as u64 {
            return Err(format!("security.max_request_bytes is {}: use 1024 to 4294967295", self.max_request_bytes));
        }
        if self.rate_limit_per_s > 0 && self.rate_limit_burst == 0 {
            return Err("security.rate_limit_burst must be at least 1 when rate_limit_per_s is set (0 per second turns the limit off)".into());
        }
        Ok(())
    }
}

impl Default for FramesSection {
    fn default() -> Self {
        Self { store: true, max_height: 360, quality: 75, every: "1s".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: String,
    /// `error`, `warn`, `info`, `debug` or `trace` (env `RUST_LOG` overrides).
    pub level: String,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            coordinators: vec![Peer { id: 1, addr: DEFAULT_COORDINATOR_ADDR.into() }],
            shard_frames: 100,
            lease_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            target_height: 720,
            max_shard_attempts: 3,
        }
    }
}

impl Default for CoordinatorSection {
    fn default() -> Self {
        Self { data_dir: "./data/coordinator-{id}".into(), listen: None, snapshot_logs: 5_000, raft_heartbeat_ms: 250, cache_mb: 64, snapshot_timeout_s: 120, compress_store: true }
    }
}

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            data_dir: "./data/worker-{name}".into(),
            listen: "127.0.0.1:0".into(),
            models_dir: "./models".into(),
            models: vec!["objects".into(), "joy".into(), "colors".into()],
            onnxruntime_library: String::new(),
            capacity: 1,
            threads: 0,
            pipeline_depth: 8,
            report_batch: 4,
            max_restarts: 3,
        }
    }
}

/// Retention while a job runs (`submit --keep`): a job keeps the results
/// and/or pictures of its newest `keep` of stream time; older ones are
/// deleted as it goes, and their disk given back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// For jobs submitted without `--keep`: e.g. "24h"; "" keeps everything.
    pub keep: String,
    /// What `keep` applies to: "both", "results" or "pictures".
    pub what: String,
    /// How often the leader trims, seconds.
    pub every_s: u64,
}

impl Default for RetentionSection {
    fn default() -> Self {
        Self { keep: String::new(), what: "both".into(), every_s: 5 }
    }
}

impl RetentionSection {
    pub fn validate(&self) -> Result<(), String> {
        if !self.keep.is_empty() {
            crate::parse_age(&self.keep).map_err(|e| format!("retention.keep: {e}"))?;
        }
        if !["both", "results", "pictures"].contains(&self.what.as_str()) {
            return Err(format!("retention.what is '{}': use both, results or pictures", self.what));
        }
        if self.every_s == 0 {
            return Err("retention.every_s must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self { format: "text".into(), level: "info".into() }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster: ClusterSection::default(),
            coordinator: CoordinatorSection::default(),
            worker: WorkerSection::default(),
            frames: FramesSection::default(),
            object_store: ObjectStoreSection::default(),
            live: LiveSection::default(),
            sources: SourcesSection::default(),
            security: SecuritySection::default(),
            log: LogSection::default(),
            retention: RetentionSection::default(),
            models: builtin_models(),
        }
    }
}

impl Config {
    /// Parse TOML text; unknown keys are errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(cfg)
    }

    /// Load `path` (or the defaults when `None`), then apply environment
    /// overrides from `env` (pass `std::env::vars()` in binaries, a map in tests),
    /// then validate.
    pub fn load(path: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read { path: p.to_path_buf(), source: e })?;
                Self::from_toml(&text, p)?
            }
            None => Self::default(),
        };
        cfg.apply_env(env);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Environment overrides: `PANOPTES_MODELS_DIR`, `PANOPTES_LOG_FORMAT`, `PANOPTES_LOG_LEVEL`.
    pub fn apply_env(&mut self, env: &BTreeMap<String, String>) {
        if let Some(v) = env.get("PANOPTES_MODELS_DIR").filter(|v| !v.is_empty()) {
            self.worker.models_dir = v.clone();
        }
        if let Some(v) = env.get("PANOPTES_LOG_FORMAT").filter(|v| !v.is_empty()) {
            self.log.format = v.clone();
        }
        if let Some(v) = env.get("PANOPTES_LOG_LEVEL").filter(|v| !v.is_empty()) {
            self.log.level = v.clone();
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let c = &self.cluster;
        if c.coordinators.is_empty() {
            return bad("cluster.coordinators is empty: list at least one {id, addr}".into());
        }
        let mut ids = std::collections::BTreeSet::new();
        for p in &c.coordinators {
            if !ids.insert(p.id) {
                return bad(format!("cluster.coordinators: id {} appears twice", p.id));
            }
            if p.id == 0 {
                return bad("cluster.coordinators: ids start at 1".into());
            }
            parse_host_port(&p.addr).map_err(|e| ConfigError::Invalid(format!("cluster.coordinators id {}: {e}", p.id)))?;
        }
        if c.shard_frames == 0 {
            return bad("cluster.shard_frames must be at least 1".into());
        }
        if c.heartbeat_interval_ms == 0 || c.lease_timeout_ms < 2 * c.heartbeat_interval_ms {
            return bad(format!(
                "cluster.lease_timeout_ms ({}) must be at least twice cluster.heartbeat_interval_ms ({}), which must be > 0",
                c.lease_timeout_ms, c.heartbeat_interval_ms
            ));
        }
        if c.target_height < 16 {
            return bad("cluster.target_height must be at least 16".into());
        }
        if self.frames.max_height < 16 || !(1..=100).contains(&self.frames.quality) {
            return bad(format!(
                "frames.max_height ({}) must be at least 16 and frames.quality ({}) between 1 and 100",
                self.frames.max_height, self.frames.quality
            ));
        }
        crate::parse_interval_ms(&self.frames.every).map_err(|e| ConfigError::Invalid(format!("frames.every: {e}")))?;
        self.object_store.validate().map_err(ConfigError::Invalid)?;
        self.live.validate().map_err(ConfigError::Invalid)?;
        self.security.validate().map_err(ConfigError::Invalid)?;
        self.sources.validate(&self.security).map_err(ConfigError::Invalid)?;
        self.retention.validate().map_err(ConfigError::Invalid)?;
        if self.coordinator.cache_mb == 0 || self.coordinator.snapshot_timeout_s == 0 {
            return bad("coordinator.cache_mb and coordinator.snapshot_timeout_s must be at least 1".into());
        }
        let w = &self.worker;
        if w.capacity == 0 || w.pipeline_depth == 0 || w.report_batch == 0 {
            return bad("worker.capacity, worker.pipeline_depth and worker.report_batch must be at least 1".into());
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return bad(format!("log.format is '{}': use text or json", self.log.format));
        }
        parse_host_port(&w.listen).map_err(|e| ConfigError::Invalid(format!("worker.listen: {e}")))?;
        if let Some(l) = &self.coordinator.listen {
            parse_host_port(l).map_err(|e| ConfigError::Invalid(format!("coordinator.listen: {e}")))?;
        }
        for (name, m) in &self.models {
            m.validate(name).map_err(ConfigError::Invalid)?;
        }
        for m in &w.models {
            if !self.models.contains_key(m) {
                return bad(format!(
                    "worker.models lists '{m}', which is not a model in the registry; known models: {}",
                    self.model_names().join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The address coordinator `id` serves on: `coordinator.listen`, else its peer entry.
    pub fn coordinator_listen(&self, id: u64) -> Result<String, ConfigError> {
        if let Some(l) = &self.coordinator.listen {
            return Ok(l.clone());
        }
        self.cluster
            .coordinators
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.addr.clone())
            .ok_or_else(|| ConfigError::Invalid(format!("coordinator id {id} is not in cluster.coordinators; add it or pass --listen")))
    }

    /// Every coordinator address, for clients and workers.
    pub fn coordinator_addrs(&self) -> Vec<String> {
        self.cluster.coordinators.iter().map(|p| p.addr.clone()).collect()
    }

    pub fn coordinator_data_dir(&self, id: u64) -> PathBuf {
        PathBuf::from(self.coordinator.data_dir.replace("{id}", &id.to_string()))
    }

    pub fn worker_data_dir(&self, name: &str) -> PathBuf {
        PathBuf::from(self.worker.data_dir.replace("{name}", name))
    }

    /// The registry's model names, sorted.
    pub fn model_names(&self) -> Vec<&str> {
        self.models.keys().map(String::as_str).collect()
    }

    /// A model's files as paths under `worker.models_dir`.
    pub fn model_paths(&self, name: &str) -> Option<Vec<PathBuf>> {
        let dir = Path::new(&self.worker.models_dir);
        self.models.get(name).map(|m| m.files.iter().map(|f| dir.join(f)).collect())
    }
}

/// Parse `--peers 1=127.0.0.1:7400,2=127.0.0.1:7410`.
pub fn parse_peers(s: &str) -> Result<Vec<Peer>, ConfigError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (id, addr) = p
                .split_once('=')
                .ok_or_else(|| ConfigError::Invalid(format!("peer '{p}': expected ID=HOST:PORT, e.g. 1=127.0.0.1:7400")))?;
            let id: u64 = id.trim().parse().map_err(|_| ConfigError::Invalid(format!("peer '{p}': id must be a number")))?;
            parse_host_port(addr.trim()).map_err(|e| ConfigError::Invalid(format!("peer '{p}': {e}")))?;
            Ok(Peer { id, addr: addr.trim().to_string() })
        })
        .collect()
}

/// Check `HOST:PORT`, returning the port.
pub fn parse_host_port(s: &str) -> Result<u16, String> {
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("'{s}' is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("'{s}' has no host"));
    }
    port.parse::<u16>().map_err(|_| format!("'{s}': port must be a number from 0 to 65535"))
}

/// The built-in models, always in the registry, in their canonical order.
pub const BUILTIN_MODELS: &[&str] = &["objects", "joy", "colors"];

/// The 80 COCO labels in the standard order: the default `labels` of the
/// detector families.
pub const COCO_LABELS: [&str; 80] = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
];

/// How a model's files are run and decoded.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    /// NanoDet (what `objects` is): one ONNX file, outputs `[1,n,nc]` and
    /// `[1,n,44]` per stride 8, 16, 32.
    Nanodet,
    /// MTCNN faces plus emotion and gender classifiers (what `joy` is): five
    /// files, P-Net, R-Net, O-Net, emotion, gender.
    Mtcnn,
    /// k-means colour palette (what `colors` is): no file.
    Kmeans,
    /// A YOLOv8 ONNX export: one output `[1, 4+nc, N]` (cx, cy, w, h in input
    /// pixels, then class scores; no objectness).
    Yolov8,
    /// A YOLOv5 ONNX export: one output `[1, N, 5+nc]` (cx, cy, w, h,
    /// objectness, class scores).
    Yolov5,
}

impl ModelFamily {
    pub const ALL: [ModelFamily; 5] =
        [ModelFamily::Nanodet, ModelFamily::Mtcnn, ModelFamily::Kmeans, ModelFamily::Yolov8, ModelFamily::Yolov5];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::Nanodet => "nanodet",
            ModelFamily::Mtcnn => "mtcnn",
            ModelFamily::Kmeans => "kmeans",
            ModelFamily::Yolov8 => "yolov8",
            ModelFamily::Yolov5 => "yolov5",
        }
    }

    /// Whether the family is a box detector with input size, labels and thresholds.
    pub fn is_detector(self) -> bool {
        matches!(self, ModelFamily::Nanodet | ModelFamily::Yolov8 | ModelFamily::Yolov5)
    }

    /// How many files a model of this family names, and what they are.
    pub fn files_expected(self) -> (usize, &'static str) {
        match self {
            ModelFamily::Nanodet | ModelFamily::Yolov8 | ModelFamily::Yolov5 => (1, "one ONNX file, e.g. files = [\"mydet.onnx\"]"),
            ModelFamily::Mtcnn => (5, "five ONNX files: P-Net, R-Net, O-Net, emotion classifier, gender classifier"),
            ModelFamily::Kmeans => (0, "no files"),
        }
    }

    /// A model of this family with every key at its default (no files).
    pub fn defaults(self) -> ModelConfig {
        let detector = |size: u32, score: f64, nms: f64, max: u32| ModelConfig {
            family: self,
            files: Vec::new(),
            input_size: Some(size),
            labels: Some(COCO_LABELS.iter().map(|s| s.to_string()).collect()),
            score_threshold: Some(score),
            nms_threshold: Some(nms),
            max_detections: Some(max),
            engine: ModelEngine::Tract,
        };
        match self {
            ModelFamily::Nanodet => detector(416, 0.35, 0.6, 100),
            ModelFamily::Yolov8 | ModelFamily::Yolov5 => detector(640, 0.25, 0.45, 300),
            ModelFamily::Mtcnn | ModelFamily::Kmeans => ModelConfig {
                family: self,
                files: Vec::new(),
                input_size: None,
                labels: None,
                score_threshold: None,
                nms_threshold: None,
                max_detections: None,
                engine: ModelEngine::Tract,
            },
        }
    }
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One model in the registry (`[models.NAME]`). Detector keys (`input_size`,
/// `labels`, the thresholds) are always set for detector families after
/// loading and absent for the others.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub family: ModelFamily,
    /// File names, relative to `worker.models_dir` (or absolute).
    #[serde(default)]
    pub files: Vec<String>,
    /// Square input side in pixels (detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<u32>,
    /// Class labels in class-id order (detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Candidates scoring below this are dropped (detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_threshold: Option<f64>,
    /// Per-class NMS drops a box overlapping a kept one by IoU > this (detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nms_threshold: Option<f64>,
    /// At most this many boxes per frame (detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_detections: Option<u32>,
    /// Which engine runs the model's ONNX files: `tract` (default) or
    /// `onnxruntime` (from `worker.onnxruntime_library`).
    #[serde(default, skip_serializing_if = "ModelEngine::is_tract")]
    pub engine: ModelEngine,
}

/// `engine` of a registry entry.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelEngine {
    #[default]
    Tract,
    Onnxruntime,
}

impl ModelEngine {
    pub fn is_tract(&self) -> bool {
        *self == ModelEngine::Tract
    }
}

/// A `[models.NAME]` table as written: every key optional, merged onto the
/// built-in of that name (or the family's defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    family: Option<ModelFamily>,
    files: Option<Vec<String>>,
    input_size: Option<u32>,
    labels: Option<Vec<String>>,
    score_threshold: Option<f64>,
    nms_threshold: Option<f64>,
    max_detections: Option<u32>,
    engine: Option<ModelEngine>,
}

/// The built-in registry: `objects` (NanoDet-m), `joy` (MTCNN + classifiers)
/// and `colors` (k-means).
pub fn builtin_models() -> BTreeMap<String, ModelConfig> {
    let mut objects = ModelFamily::Nanodet.defaults();
    objects.files = vec!["nanodet_m_416_coco.onnx".into()];
    let mut joy = ModelFamily::Mtcnn.defaults();
    joy.files = [
        "mtcnn_pnet.onnx",
        "mtcnn_rnet.onnx",
        "mtcnn_onet.onnx",
        "emotion_mini_xception_fer2013.onnx",
        "gender_oarriaga_gray64.onnx",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let colors = ModelFamily::Kmeans.defaults();
    [("objects", objects), ("joy", joy), ("colors", colors)].into_iter().map(|(n, m)| (n.to_string(), m)).collect()
}

/// Merges one written entry onto the built-in of the same name; a family
/// different from the built-in's (or a new name) starts from that family's
/// defaults instead.
fn resolve_entry(name: &str, e: ModelEntry) -> Result<ModelConfig, String> {
    let builtin = builtin_models().remove(name);
    let mut m = match (builtin, e.family) {
        (Some(b), None) => b,
        (Some(b), Some(f)) if b.family == f => b,
        (_, Some(f)) => f.defaults(),
        (None, None) => {
            return Err(format!(
                "models.{name}: `family` is missing; a model that is not built in ({}) needs family = one of {}",
                BUILTIN_MODELS.join(", "),
                ModelFamily::ALL.map(|f| f.as_str()).join(", ")
            ))
        }
    };
    if let Some(v) = e.files {
        m.files = v;
    }
    if e.input_size.is_some() {
        m.input_size = e.input_size;
    }
    if e.labels.is_some() {
        m.labels = e.labels;
    }
    if e.score_threshold.is_some() {
        m.score_threshold = e.score_threshold;
    }
    if e.nms_threshold.is_some() {
        m.nms_threshold = e.nms_threshold;
    }
    if e.max_detections.is_some() {
        m.max_detections = e.max_detections;
    }
    if let Some(v) = e.engine {
        m.engine = v;
    }
    Ok(m)
}

/// `[models]`: the built-ins, overridden and extended by the file's tables.
fn deserialize_registry<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, ModelConfig>, D::Error> {
    let written = BTreeMap::<String, ModelEntry>::deserialize(d)?;
    let mut models = builtin_models();
    for (name, entry) in written {
        let m = resolve_entry(&name, entry).map_err(serde::de::Error::custom)?;
        models.insert(name, m);
    }
    Ok(models)
}

impl ModelConfig {
    /// Labels, defaulting to COCO.
    pub fn labels(&self) -> Vec<String> {
        self.labels.clone().unwrap_or_else(|| COCO_LABELS.iter().map(|s| s.to_string()).collect())
    }

    /// Checks the keys against the family, naming `models.NAME` in errors.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        let fam = self.family;
        let at = format!("models.{name} (family {fam})");
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
            return Err(format!("models.{name:?}: a model name uses only letters, digits, '_', '-' and '.'"));
        }
        let (n, what) = fam.files_expected();
        if self.files.len() != n {
            let found = if self.files.is_empty() { "no `files` key (or an empty list)".to_string() } else { format!("{} files", self.files.len()) };
            return Err(format!("{at}: `files` must list {what}; found {found}"));
        }
        if let Some(f) = self.files.iter().find(|f| f.trim().is_empty()) {
            return Err(format!("{at}: `files` has an empty name {f:?}"));
        }
        if fam == ModelFamily::Kmeans && self.engine != ModelEngine::Tract {
            return Err(format!("{at}: `engine` applies to ONNX models; k-means runs no model"));
        }
        if !fam.is_detector() {
            let extra = [
                ("input_size", self.input_size.is_some()),
                ("labels", self.labels.is_some()),
                ("score_threshold", self.score_threshold.is_some()),
                ("nms_threshold", self.nms_threshold.is_some()),
                ("max_detections", self.max_detections.is_some()),
            ];
            if let Some((k, _)) = extra.iter().find(|(_, set)| *set) {
                return Err(format!("{at}: `{k}` does not apply to this family; it takes only `files`"));
            }
            return Ok(());
        }
        match self.input_size {
            Some(s) if (32..=4096).contains(&s) && s % 32 == 0 => {}
            Some(s) => return Err(format!("{at}: input_size is {s}; use a multiple of 32 from 32 to 4096")),
            None => return Err(format!("{at}: input_size is missing")),
        }
        match &self.labels {
            Some(l) if l.is_empty() => return Err(format!("{at}: labels is empty; list the class names in class-id order")),
            Some(l) => {
                if let Some(i) = l.iter().position(|s| s.trim().is_empty()) {
                    return Err(format!("{at}: label {i} is empty"));
                }
            }
            None => return Err(format!("{at}: labels is missing")),
        }
        for (k, v) in [("score_threshold", self.score_threshold), ("nms_threshold", self.nms_threshold)] {
            match v {
                Some(v) if (0.0..=1.0).contains(&v) => {}
                Some(v) => return Err(format!("{at}: {k} is {v}; use a number from 0 to 1")),
                None => return Err(format!("{at}: {k} is missing")),
            }
        }
        match self.max_detections {
            Some(m) if m >= 1 => {}
            _ => return Err(format!("{at}: max_detections must be at least 1")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_local_cluster() {
        let c = Config::load(None, &BTreeMap::new()).unwrap();
        assert_eq!(c.coordinator_addrs(), vec!["127.0.0.1:7400"]);
        assert_eq!(c.coordinator_listen(1).unwrap(), "127.0.0.1:7400");
        assert_eq!(c.coordinator_data_dir(3), PathBuf::from("./data/coordinator-3"));
        assert!(c.coordinator_listen(2).is_err());
    }

    #[test]
    fn example_file_parses_and_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster.toml.example");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::from_toml(&text, &path).unwrap();
        c.validate().unwrap();
        assert_eq!(c, Config::default(), "cluster.toml.example must document the defaults");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let p = Path::new("x.toml");
        let e = Config::from_toml("[cluster]\nshard_frame = 3\n", p).unwrap_err();
        assert!(e.to_string().contains("shard_frame"), "{e}");
        let mut c = Config::default();
        c.cluster.lease_timeout_ms = 100;
        assert!(c.validate().unwrap_err().to_string().contains("lease_timeout_ms"));
        c = Config::default();
        c.cluster.coordinators.push(Peer { id: 1, addr: "127.0.0.1:1".into() });
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn live_drop_policy_is_checked() {
        let e = parse("[live]\ndrop_policy = \"newest\"\n").unwrap_err();
        assert!(e.to_string().contains("live.drop_policy"), "{e}");
        let e = parse("[live]\ndrop_policy = \"every_nth\"\nkeep_every = 0\n").unwrap_err();
        assert!(e.to_string().contains("keep_every"), "{e}");
        let c = parse("[live]\ndrop_policy = \"every_nth\"\nkeep_every = 3\n").unwrap();
        assert_eq!((c.live.drop_policy.as_str(), c.live.keep_every), ("every_nth", 3));
    }

    #[test]
    fn security_settings_are_checked() {
        let e = parse("[security]\ntls_cert = \"c.pem\"\n").unwrap_err();
        assert!(e.to_string().contains("tls_key"), "{e}");
        let e = parse("[security]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap_err();
        assert!(e.to_string().contains("tls_ca"), "{e}");
        assert!(parse("[security]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_ca = \"ca.pem\"\n").is_ok());
        assert!(parse("[security]\ntls_ca = \"ca.pem\"\n").is_ok(), "a worker may set the CA alone");
        let e = parse("[security]\nrequire_client_cert = true\n").unwrap_err();
        assert!(e.to_string().contains("panoptes certs"), "{e}");
        let e = parse("[security]\nmax_request_bytes = 10\n").unwrap_err();
        assert!(e.to_string().contains("max_request_bytes"), "{e}");
        assert!(parse("[security]\ntls_cert = \"c\"\ntls_key = \"k\"\ntls_ca = \"ca\"\nrequire_client_cert = true\n").is_ok());
        assert!(!Config::default().security.web_plain_http, "the web UI follows tls_cert unless told otherwise");
        // Tokens protect the user-facing calls only; the internal ones need the secret.
        let e = parse("[security]\ntokens_file = \"tokens\"\n").unwrap_err();
        assert!(e.to_string().contains("cluster_secret_file") && e.to_string().contains("accept anyone"), "{e}");
        assert!(parse("[sources]\nfile_dirs = []\n[security]\ntokens_file = \"tokens\"\ncluster_secret_file = \"secret\"\n").is_ok());
        assert!(parse("[security]\ncluster_secret_file = \"secret\"\n").is_ok(), "a secret alone is fine");
        assert!(parse("[security]\ntls_cert = \"c\"\ntls_key = \"k\"\ntls_ca = \"ca\"\nweb_plain_http = true\n").unwrap().security.web_plain_http);
    }

    /// The default `sources.file_dirs`, `["/"]`, lets whoever submits read
    /// any file the nodes can: fine for one user without tokens; with
    /// tokens the config must name the directories (or `[]`).
    #[test]
    fn tokens_need_file_dirs_set_explicitly() {
        let secure = "[security]\ntokens_file = \"tokens\"\ncluster_secret_file = \"secret\"\n";
        let e = parse(secure).unwrap_err().to_string();
        assert!(e.contains("security.tokens_file is set but sources.file_dirs is not"), "{e}");
        assert!(e.contains("e.g. file_dirs = [\"/srv/videos\"], or to [] to allow no local files"), "{e}");
        for dirs in ["[]", "[\"/srv/videos\"]", "[\"/\"]"] {
            let c = parse(&format!("[sources]\nfile_dirs = {dirs}\n{secure}")).unwrap_or_else(|e| panic!("{dirs}: {e}"));
            assert!(c.sources.file_dirs.is_some(), "{dirs}");
        }
        // Without tokens (one user), no file at all and an empty [sources] keep allowing any file.
        assert_eq!(Config::default().sources.file_dirs(), vec!["/".to_string()]);
        assert_eq!(parse("[sources]\nallow_networks = []\n").unwrap().sources.file_dirs(), vec!["/".to_string()]);
        assert_eq!(parse("[sources]\nfile_dirs = [\"/v\"]\n").unwrap().sources.file_dirs(), vec!["/v".to_string()]);
        // The probe deadline.
        assert_eq!(Config::default().sources.probe_timeout_s, 120);
        assert_eq!(parse("[sources]\nprobe_timeout_s = 5\n").unwrap().sources.probe_timeout_s, 5);
        let e = parse("[sources]\nprobe_timeout_s = 0\n").unwrap_err().to_string();
        assert!(e.contains("sources.probe_timeout_s must be at least 1"), "{e}");
    }

    #[test]
    fn env_overrides_the_file() {
        let mut env = BTreeMap::new();
        env.insert("PANOPTES_MODELS_DIR".to_string(), "/m".to_string());
        let c = Config::load(None, &env).unwrap();
        assert_eq!(c.worker.models_dir, "/m");
    }

    #[test]
    fn peers_parse() {
        let p = parse_peers("1=127.0.0.1:7400, 2=127.0.0.1:7410").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1], Peer { id: 2, addr: "127.0.0.1:7410".into() });
        assert!(parse_peers("1:127.0.0.1:7400").is_err());
        assert!(parse_peers("x=127.0.0.1:7400").is_err());
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let c = Config::from_toml(text, Path::new("x.toml"))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn a_user_registry_adds_to_the_builtins() {
        let c = parse(
            r#"
            [worker]
            models = ["mydet", "colors"]
            [models.mydet]
            family = "yolov8"
            files = ["mydet.onnx"]
            input_size = 320
            labels = ["cat", "dog"]
            "#,
        )
        .unwrap();
        assert_eq!(c.model_names(), vec!["colors", "joy", "mydet", "objects"]);
        let m = &c.models["mydet"];
        assert_eq!(m.family, ModelFamily::Yolov8);
        assert_eq!(m.files, vec!["mydet.onnx"]);
        assert_eq!(m.input_size, Some(320));
        assert_eq!(m.labels.as_deref(), Some(&["cat".to_string(), "dog".to_string()][..]));
        // unset thresholds take the family's defaults
        assert_eq!((m.score_threshold, m.nms_threshold, m.max_detections), (Some(0.25), Some(0.45), Some(300)));
        assert_eq!(c.models["objects"], builtin_models()["objects"]);
        assert_eq!(c.model_paths("mydet").unwrap(), vec![PathBuf::from("./models/mydet.onnx")]);
        let v5 = parse("[models.v5]\nfamily = \"yolov5\"\nfiles = [\"v5.onnx\"]\n").unwrap();
        assert_eq!(v5.models["v5"].labels().len(), 80);
    }

    #[test]
    fn a_builtin_is_overridden_key_by_key() {
        let c = parse("[models.objects]\nscore_threshold = 0.5\n[models.joy]\nfiles = [\"a\", \"b\", \"c\", \"d\", \"e\"]\n").unwrap();
        let o = &c.models["objects"];
        assert_eq!(o.score_threshold, Some(0.5));
        assert_eq!(o.files, vec!["nanodet_m_416_coco.onnx"]);
        assert_eq!((o.nms_threshold, o.max_detections, o.input_size), (Some(0.6), Some(100), Some(416)));
        assert_eq!(o.labels().len(), 80);
        assert_eq!(c.models["joy"].files, vec!["a", "b", "c", "d", "e"]);
        assert_eq!(c.models["colors"], builtin_models()["colors"]);
        // a different family replaces the built-in, starting from that family's defaults
        let c = parse("[models.objects]\nfamily = \"yolov8\"\nfiles = [\"yolov8n.onnx\"]\n").unwrap();
        assert_eq!(c.models["objects"].family, ModelFamily::Yolov8);
        assert_eq!(c.models["objects"].score_threshold, Some(0.25));
    }

    #[test]
    fn the_object_store_and_picture_rate_are_checked() {
        let err = |t: &str| parse(t).unwrap_err().to_string();
        let c = parse("[object_store]\nurl = \"s3://pics/a/b/\"\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true\n").unwrap();
        assert_eq!(c.object_store.bucket_and_prefix().unwrap(), ("pics".to_string(), "a/b".to_string()));
        assert!(!parse("").unwrap().object_store.enabled());
        let e = err("[object_store]\nurl = \"s3://pics\"\nendpoint = \"http://127.0.0.1:9000\"\n");
        assert!(e.contains("allow_http = true"), "{e}");
        let e = err("[object_store]\nurl = \"gs://pics\"\n");
        assert!(e.contains("s3://BUCKET"), "{e}");
        let e = err("[object_store]\nurl = \"s3:///x\"\n");
        assert!(e.contains("names no bucket"), "{e}");
        let e = err("[object_store]\nurl = \"s3://p\"\nendpoint = \"ftp://h\"\n");
        assert!(e.contains("http:// or https://"), "{e}");
        let e = err("[frames]\nevery = \"1 fortnight\"\n");
        assert!(e.contains("frames.every"), "{e}");
        assert_eq!(parse("[frames]\nevery = \"250ms\"\n").unwrap().frames.every, "250ms");
        assert_eq!(crate::parse_interval_ms("250ms"), Ok(250));
        assert_eq!(crate::parse_interval_ms("2"), Ok(2000));
        assert_eq!(crate::parse_interval_ms("0"), Ok(0));
        assert_eq!(crate::format_interval_ms(1500), "1500ms");
        assert_eq!(crate::format_interval_ms(60_000), "1m");
    }

    #[test]
    fn bad_models_are_refused_with_clear_messages() {
        let err = |t: &str| parse(t).unwrap_err().to_string();
        let e = err("[models.d]\nfamily = \"yolov9\"\nfiles = [\"d.onnx\"]\n");
        assert!(e.contains("yolov9") && e.contains("yolov8"), "{e}");
        let e = err("[models.d]\nfiles = [\"d.onnx\"]\n");
        assert!(e.contains("models.d") && e.contains("`family` is missing"), "{e}");
        let e = err("[models.d]\nfamily = \"yolov8\"\n");
        assert!(e.contains("models.d (family yolov8)") && e.contains("`files` must list one ONNX file"), "{e}");
        let e = err("[models.d]\nfamily = \"yolov8\"\nfiles = [\"d.onnx\"]\nscore_threshold = 1.5\n");
        assert!(e.contains("score_threshold is 1.5"), "{e}");
        let e = err("[models.d]\nfamily = \"yolov8\"\nfiles = [\"d.onnx\"]\nnms_threshold = -0.1\n");
        assert!(e.contains("nms_threshold is -0.1"), "{e}");
        let e = err("[models.d]\nfamily = \"yolov8\"\nfiles = [\"d.onnx\"]\nmax_detections = 0\n");
        assert!(e.contains("max_detections must be at least 1"), "{e}");
        let e = err("[models.d]\nfamily = \"yolov8\"\nfiles = [\"d.onnx\"]\ninput_size = 100\n");
        assert!(e.contains("input_size is 100"), "{e}");
        let e = err("[models.d]\nfamily = \"yolov8\"\nfiles = [\"d.onnx\"]\nlabels = []\n");
        assert!(e.contains("labels is empty"), "{e}");
        let e = err("[models.d]\nfamily = \"yolov8\"\nfile = [\"d.onnx\"]\n");
        assert!(e.contains("unknown field `file`"), "{e}");
        let e = err("[models.colors]\nscore_threshold = 0.5\n");
        assert!(e.contains("models.colors (family kmeans)") && e.contains("`score_threshold` does not apply"), "{e}");
        let e = err("[models.joy]\nfiles = [\"p.onnx\"]\n");
        assert!(e.contains("five ONNX files") && e.contains("found 1 files"), "{e}");
        let e = err("[worker]\nmodels = [\"objects\", \"nope\"]\n");
        assert!(e.contains("worker.models lists 'nope'") && e.contains("colors, joy, objects"), "{e}");
    }
}
