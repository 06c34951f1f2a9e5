//! The sections of `cluster.toml` other than the model registry: their keys,
//! defaults and the checks each section makes of itself.
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::*;

/// A key that may be left out: `None` when it is absent, or empty as in
/// configs written before it was optional (`tokens_file = ""`).
pub(super) fn unless_empty<'de, D: Deserializer<'de>, T: From<String>>(d: D) -> Result<Option<T>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.trim().is_empty()).map(T::from))
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
    /// "onnxruntime"` (unset: `libonnxruntime.so` in `models_dir`, where
    /// `cargo xtask models` puts the one the onnxruntime wheel ships).
    #[serde(deserialize_with = "unless_empty", skip_serializing_if = "Option::is_none")]
    pub onnxruntime_library: Option<PathBuf>,
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectStoreSection {
    /// `s3://BUCKET[/PREFIX]`; unset: pictures stay on the coordinators.
    #[serde(deserialize_with = "unless_empty", skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// An S3-compatible server, e.g. `http://127.0.0.1:9000`; unset: AWS.
    #[serde(deserialize_with = "unless_empty", skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The bucket's region.
    pub region: String,
    /// A file of two lines: the access key id, then the secret key; unset:
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment.
    #[serde(deserialize_with = "unless_empty", skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// Allow a plain-HTTP endpoint (a server on this machine or a private network).
    pub allow_http: bool,
}

impl Default for ObjectStoreSection {
    fn default() -> Self {
        ObjectStoreSection { url: None, endpoint: None, region: "us-east-1".into(), credentials_file: None, allow_http: false }
    }
}

impl ObjectStoreSection {
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    /// The bucket and the key prefix `url` names.
    pub fn bucket_and_prefix(&self) -> Result<(String, String), String> {
        let url = self.url.as_deref().unwrap_or_default();
        let rest = url.trim().strip_prefix("s3://").ok_or_else(|| format!("object_store.url '{url}' must be s3://BUCKET or s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("object_store.url '{url}' names no bucket: use s3://BUCKET[/PREFIX]"));
        }
        Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        self.bucket_and_prefix()?;
        if self.region.trim().is_empty() {
            return Err("object_store.region is empty: name the bucket's region (the default is us-east-1)".into());
        }
        let Some(endpoint) = &self.endpoint else { return Ok(()) };
        if endpoint.starts_with("http://") && !self.allow_http {
            return Err(format!(
                "object_store.endpoint {endpoint} is plain HTTP: set object_store.allow_http = true if that is meant (a server on this machine or a private network)"
            ));
        }
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(format!("object_store.endpoint '{endpoint}' must be an http:// or https:// URL"));
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
    pub drop_policy: DropPolicyName,
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

/// `[live] drop_policy`, as the file names it (the worker's `DropPolicy`
/// adds the policy's parameters).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicyName {
    #[default]
    Latest,
    Lag,
    EveryNth,
}

/// `[log] format`: human-readable lines, or one JSON object per event.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for LiveSection {
    fn default() -> Self {
        Self {
            connect_timeout_s: 60,
            idle_timeout_s: 10,
            handshake_timeout_s: 5,
            drop_policy: DropPolicyName::Latest,
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
        if security.tokens_file.is_some() && self.file_dirs.is_none() {
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
    #[serde(deserialize_with = "unless_empty", skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(deserialize_with = "unless_empty", skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// The CA certificate (PEM) that signs the cluster's certificates. With
    /// it set, every outgoing gRPC connection (CLI, worker, coordinator to
    /// coordinator) uses TLS and verifies the server against it.
    #[serde(deserialize_with = "unless_empty", skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
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
    #[serde(deserialize_with = "unless_empty", skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
    /// A file holding the cluster secret that workers and coordinators
    /// present to each other; with it set, worker and Raft calls need it.
    #[serde(deserialize_with = "unless_empty", skip_serializing_if = "Option::is_none")]
    pub cluster_secret_file: Option<PathBuf>,
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
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            require_client_cert: false,
            web_plain_http: false,
            web_hosts: Vec::new(),
            tokens_file: None,
            cluster_secret_file: None,
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
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("security.tls_cert and security.tls_key go together: set both or neither".into());
        }
        if self.tls_cert.is_some() && self.tls_ca.is_none() {
            return Err("security.tls_cert needs security.tls_ca too: nodes reach each other over TLS and check each other's certificates against it (`panoptes certs` makes all three)".into());
        }
        if self.require_client_cert && (self.tls_ca.is_none() || self.tls_cert.is_none()) {
            return Err("security.require_client_cert needs security.tls_ca, tls_cert and tls_key (make them with `panoptes certs`)".into());
        }
        if self.tokens_file.is_some() && self.cluster_secret_file.is_none() {
            // Workers and coordinators call each other with the secret, not
            // with tokens: without it, anyone could register a worker,
            // report results or send Raft messages.
            return Err("security.tokens_file needs security.cluster_secret_file too: without it the worker and Raft services, which take no tokens, \
                        accept anyone (a forged Register, Report or Raft message). Make one with `head -c 32 /dev/urandom | base64 > cluster.secret` \
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
    pub format: LogFormat,
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
            onnxruntime_library: None,
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
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

