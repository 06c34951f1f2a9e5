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
    pub log: LogSection,
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
    /// Shards worked on at once.
    pub capacity: u32,
    /// Frames in flight per shard (decoded but not yet acknowledged).
    pub pipeline_depth: u32,
    /// Frames per report to the coordinator.
    pub report_batch: u32,
    /// A crashed stage is restarted this many times per shard before the shard is reported failed.
    pub max_restarts: u32,
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
        Self { data_dir: "./data/coordinator-{id}".into(), listen: None, snapshot_logs: 5_000, raft_heartbeat_ms: 250 }
    }
}

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            data_dir: "./data/worker-{name}".into(),
            listen: "127.0.0.1:0".into(),
            models_dir: "./models".into(),
            models: vec!["objects".into(), "joy".into(), "colors".into()],
            capacity: 1,
            pipeline_depth: 8,
            report_batch: 4,
            max_restarts: 3,
        }
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
            log: LogSection::default(),
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
}
