//! What each kind of process runs with: the raw file (with the environment
//! over it, `Config::load`) and the command line's flags, checked and
//! resolved once into a [`CoordinatorConfig`], a [`WorkerConfig`] or a
//! [`ClientConfig`], which is then passed down unchanged. Nothing in these
//! means "none" by being empty, and no part of a process copies keys out of
//! the raw file again.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{Config, ConfigError, DropPolicyName, LiveSection, ModelConfig, Peer};

/// The onnxruntime library's file name in `worker.models_dir`, where
/// `cargo xtask models` puts it (`worker.onnxruntime_library` unset).
pub const ONNXRUNTIME_LIBRARY: &str = "libonnxruntime.so";

/// `panoptes coordinator`'s flags (each overrides its key).
#[derive(Debug, Clone, Default)]
pub struct CoordinatorFlags {
    pub id: u64,
    /// `--peers`: every coordinator, this one included.
    pub peers: Option<Vec<Peer>>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// `--join`: start as a new member of a running cluster.
    pub join: bool,
}

/// A coordinator as it runs.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub id: u64,
    /// Where it serves gRPC (its web page and metrics ports derive from it).
    pub listen: String,
    pub data_dir: PathBuf,
    /// The other coordinators: id → address.
    pub peers: BTreeMap<u64, String>,
    pub join: bool,
    /// Every section, checked (`Config::validate`).
    pub settings: Config,
}

impl CoordinatorConfig {
    /// The coordinator `flags` name, run with `cfg`: the flags applied, the
    /// whole checked, its address and directory resolved.
    pub fn build(mut cfg: Config, flags: CoordinatorFlags) -> Result<CoordinatorConfig, ConfigError> {
        if let Some(p) = flags.peers {
            cfg.cluster.coordinators = p;
        }
        if let Some(l) = flags.listen {
            cfg.coordinator.listen = Some(l);
        }
        cfg.validate()?;
        let listen = cfg.coordinator_listen(flags.id)?;
        let data_dir = flags.data_dir.unwrap_or_else(|| cfg.coordinator_data_dir(flags.id));
        let peers = cfg.cluster.coordinators.iter().filter(|p| p.id != flags.id).map(|p| (p.id, p.addr.clone())).collect();
        Ok(CoordinatorConfig { id: flags.id, listen, data_dir, peers, join: flags.join, settings: cfg })
    }
}

/// `panoptes worker`'s flags (each overrides its key).
#[derive(Debug, Clone, Default)]
pub struct WorkerFlags {
    pub name: String,
    pub listen: Option<String>,
    pub models_dir: Option<PathBuf>,
    pub models: Option<Vec<String>>,
    pub threads: Option<u32>,
    pub capacity: Option<u32>,
    /// `--coordinator`: the coordinators to reach (default: `cluster.coordinators`).
    pub coordinators: Option<Vec<String>>,
    pub data_dir: Option<PathBuf>,
}

impl WorkerFlags {
    /// No flag but the name.
    pub fn named(name: &str) -> Self {
        WorkerFlags { name: name.to_string(), ..Default::default() }
    }
}

/// A worker as it runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub name: String,
    /// The coordinators it registers with (any of them; it follows the leader).
    pub coordinators: Vec<String>,
    /// `worker.listen`: the host and first port of its ingest ports (port 0: any free).
    pub listen: String,
    /// Where it writes `addresses.json`; `None` (a local run): nowhere.
    pub data_dir: Option<PathBuf>,
    pub models_dir: PathBuf,
    /// The analyses it loads and offers.
    pub models: Vec<String>,
    /// The model registry: how each name in `models` is loaded.
    pub registry: BTreeMap<String, ModelConfig>,
    /// For models with `engine = "onnxruntime"`.
    pub onnxruntime_library: PathBuf,
    /// Shards worked on at once.
    pub capacity: u32,
    /// Analyses run at once (0: one per core this process may use).
    pub threads: u32,
    /// `security.cluster_secret_file`, read when the worker starts.
    pub cluster_secret_file: Option<PathBuf>,
    /// What every shard runs with.
    pub shard: ShardSettings,
}

/// The settings every shard of a worker runs with, handed to each shard as
/// they are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardSettings {
    /// Frames in flight (decoded, not yet acknowledged).
    pub depth: u32,
    /// Frames per report.
    pub batch: u32,
    /// Restarts of a crashed stage before the shard is reported failed.
    pub max_restarts: u32,
    /// A file shard's source must yield a frame at least this often
    /// (`sources.probe_timeout_s`).
    pub stall_limit: Duration,
    /// `[live]`.
    pub live: LiveConfig,
}

impl ShardSettings {
    /// As one shard runs them: at least one frame in flight, reports no
    /// larger than the frames in flight, and no restart for a live shard
    /// (a live stream cannot be replayed: a failed stage fails it).
    pub fn for_shard(self, live: bool) -> ShardSettings {
        let depth = self.depth.max(1);
        ShardSettings { depth, batch: self.batch.clamp(1, depth), max_restarts: if live { 0 } else { self.max_restarts }, ..self }
    }
}

impl WorkerConfig {
    /// Note an address this worker serves on in its `addresses.json`
    /// (nowhere without a data directory).
    pub fn note_address(&self, name: &str, addr: &str) {
        if let Some(d) = &self.data_dir {
            crate::addresses::note(d, name, addr);
        }
    }

    /// The worker `flags` name, run with `cfg`: the flags applied and the
    /// whole checked. Its data directory is the flag's, else
    /// `worker.data_dir` for its name.
    pub fn build(cfg: &Config, flags: WorkerFlags) -> Result<WorkerConfig, ConfigError> {
        let mut w = Self::local(cfg, flags)?;
        if w.data_dir.is_none() {
            w.data_dir = Some(cfg.worker_data_dir(&w.name));
        }
        Ok(w)
    }

    /// A worker that writes nowhere (`panoptes analyze`, tests): the flags
    /// applied and checked; no data directory unless a flag names one.
    pub fn local(cfg: &Config, flags: WorkerFlags) -> Result<WorkerConfig, ConfigError> {
        let mut c = cfg.clone();
        if let Some(l) = flags.listen {
            c.worker.listen = l;
        }
        if let Some(m) = flags.models_dir {
            c.worker.models_dir = m.display().to_string();
        }
        if let Some(m) = flags.models {
            c.worker.models = m;
        }
        if let Some(t) = flags.threads {
            c.worker.threads = t;
        }
        if let Some(n) = flags.capacity {
            c.worker.capacity = n;
        }
        c.validate()?;
        let w = &c.worker;
        let models_dir = PathBuf::from(&w.models_dir);
        Ok(WorkerConfig {
            name: flags.name,
            coordinators: flags.coordinators.unwrap_or_else(|| c.coordinator_addrs()),
            listen: w.listen.clone(),
            data_dir: flags.data_dir,
            onnxruntime_library: w.onnxruntime_library.clone().unwrap_or_else(|| models_dir.join(ONNXRUNTIME_LIBRARY)),
            models_dir,
            models: w.models.clone(),
            registry: c.models.clone(),
            capacity: w.capacity,
            threads: w.threads,
            cluster_secret_file: c.security.cluster_secret_file.clone(),
            shard: ShardSettings {
                depth: w.pipeline_depth,
                batch: w.report_batch,
                max_restarts: w.max_restarts,
                stall_limit: Duration::from_secs(c.sources.probe_timeout_s),
                live: LiveConfig::from_section(&c.live),
            },
        })
    }
}

/// A client's flags (`--coordinator`, `--token`, `--tls-*`) and, when
/// given or needed, the configuration file.
#[derive(Debug, Clone, Default)]
pub struct ClientFlags {
    pub coordinator: Option<String>,
    pub token: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// How a client (the CLI, the web server) reaches the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// The coordinators to try, in order (any answers; calls follow the leader).
    pub coordinators: Vec<String>,
    /// A bearer token for every call.
    pub token: Option<String>,
    /// TLS for every connection; `None`: plain.
    pub tls: Option<ClientTls>,
}

/// The CA that signs the cluster's certificates, and the certificate the
/// client presents (when the cluster asks for one).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientConfig {
    /// The flags over the file `file` (loaded when the caller gave
    /// `--config` or no `--coordinator`): addresses from `--coordinator`,
    /// else `cluster.coordinators`; TLS from `--tls-*`, else the file's
    /// `[security]` when a file was given (a node's config names its own
    /// certificate, which then also serves as the client's).
    pub fn build(flags: ClientFlags, file: Option<&Config>, file_given: bool) -> Result<ClientConfig, ConfigError> {
        let coordinators = match &flags.coordinator {
            Some(s) => split_addrs(s),
            None => file.map(Config::coordinator_addrs).unwrap_or_default(),
        };
        let tls = match (flags.tls_ca, file) {
            (Some(ca), _) => Some(ClientTls { ca, cert: flags.tls_cert, key: flags.tls_key }),
            (None, Some(cfg)) if file_given => cfg.node_tls(),
            _ if flags.tls_cert.is_some() => {
                return Err(ConfigError::Invalid("--tls-cert needs --tls-ca too (the CA that signs the cluster's certificates)".into()))
            }
            _ => None,
        };
        Ok(ClientConfig { coordinators, token: flags.token, tls })
    }
}

impl Config {
    /// The TLS a node's own outgoing connections use: `security.tls_ca`
    /// set, presenting the node's certificate (when it has one).
    pub fn node_tls(&self) -> Option<ClientTls> {
        let s = &self.security;
        Some(ClientTls { ca: s.tls_ca.clone()?, cert: s.tls_cert.clone(), key: s.tls_key.clone() })
    }
}

/// `a,b , c` → `["a", "b", "c"]`.
pub fn split_addrs(s: &str) -> Vec<String> {
    s.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect()
}

/// `[live]` as a worker runs it, handed unchanged to every live shard and
/// to the ingest lobby.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LiveConfig {
    /// Fail when no publisher connects within this many seconds.
    pub connect_timeout_s: u64,
    /// A publisher silent this long is taken as gone (end of stream).
    pub idle_timeout_s: u64,
    /// A connection to the ingest port must complete its RTMP handshake
    /// this soon, or it is closed.
    pub handshake_timeout_s: u64,
    /// What to do with frames when analysis is slower than the stream.
    pub policy: DropPolicy,
    /// Pull sources: how a dropped source is reopened.
    pub reconnect: Reconnect,
}

impl LiveConfig {
    pub fn from_section(l: &LiveSection) -> Self {
        LiveConfig {
            connect_timeout_s: l.connect_timeout_s,
            idle_timeout_s: l.idle_timeout_s,
            handshake_timeout_s: l.handshake_timeout_s,
            policy: DropPolicy::from_section(l),
            reconnect: Reconnect::from_section(l),
        }
    }
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self::from_section(&LiveSection::default())
    }
}

/// `[live] reconnect_*`: a pull source that drops (or cannot be opened) is
/// reopened up to `attempts` times in a row, waiting `backoff` doubled each
/// time, at most `max_backoff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconnect {
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self::from_section(&LiveSection::default())
    }
}

impl Reconnect {
    pub fn from_section(l: &LiveSection) -> Self {
        Reconnect {
            attempts: l.reconnect_attempts,
            backoff: Duration::from_millis(l.reconnect_backoff_ms),
            max_backoff: Duration::from_millis(l.reconnect_max_backoff_ms),
        }
    }

    /// The wait before reopening attempt `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        self.backoff.saturating_mul(1u32 << n.saturating_sub(1).min(20)).min(self.max_backoff)
    }
}

/// `[live] drop_policy`: which frames of a live stream are not analysed when
/// analysis is slower than the stream. Either way memory and lag stay bounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DropPolicy {
    /// The freshest frame first (the default): a frame goes to analysis as
    /// soon as a lane of every model is free; at most one frame waits, and a
    /// newer frame replaces it (the replaced one is dropped).
    #[default]
    Latest,
    /// Frames wait (decoded, in arrival order) for pipeline credit; a frame
    /// that has waited longer than `max_lag` is dropped, oldest first.
    Lag { max_lag: Duration },
    /// Analyse one frame in `keep_every` (of those `frame_step` keeps); a kept
    /// frame that finds the pipeline full is dropped at once.
    EveryNth { keep_every: u64 },
}

impl DropPolicy {
    /// The policy `[live]` names.
    pub fn from_section(l: &LiveSection) -> Self {
        match l.drop_policy {
            DropPolicyName::EveryNth => DropPolicy::EveryNth { keep_every: u64::from(l.keep_every.max(1)) },
            DropPolicyName::Latest => DropPolicy::Latest,
            DropPolicyName::Lag => DropPolicy::Lag { max_lag: Duration::from_millis(l.max_lag_ms.max(1)) },
        }
    }
}
