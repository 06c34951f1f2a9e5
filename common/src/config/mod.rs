//! `cluster.toml`: one file describes a whole cluster; every key has a default
//! so that no file at all gives a working local cluster on 127.0.0.1.
//! Command-line flags override the file (the binary applies them), and a few
//! environment variables override both where noted.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod env;
mod events;
mod models;
mod node;
mod sections;
#[cfg(test)]
mod tests;

pub use events::*;
pub use models::*;
pub use node::*;
pub use sections::*;

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
    pub events: EventsSection,
    #[serde(default)]
    pub alerts: AlertsSection,
    /// The model registry: every analysis a worker can load, by name. The
    /// built-ins (`objects`, `joy`, `colors`) are always present; a file's
    /// `[models.NAME]` tables override their keys or add new models.
    #[serde(default = "builtin_models", deserialize_with = "deserialize_registry")]
    pub models: BTreeMap<String, ModelConfig>,
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
            events: EventsSection::default(),
            alerts: AlertsSection::default(),
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
    /// overrides from `env` (pass `std::env::vars()` in binaries, a map in
    /// tests; every key as `PANOPTES_<SECTION>_<KEY>`, see `env.rs`), then
    /// validate.
    pub fn load(path: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let (text, origin) = match path {
            Some(p) => (std::fs::read_to_string(p).map_err(|e| ConfigError::Read { path: p.to_path_buf(), source: e })?, p.to_path_buf()),
            None => (String::new(), PathBuf::from("(no file, the defaults)")),
        };
        let parse_error = |message: String| ConfigError::Parse { path: origin.clone(), message };
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| parse_error(e.to_string()))?;
        let applied = env::overlay(&mut table, env)?;
        let cfg = if applied.is_empty() {
            // The file's own errors name its lines.
            Self::from_toml(&text, &origin)?
        } else {
            Config::deserialize(toml::Value::Table(table)).map_err(|e| parse_error(env::explain(e.to_string(), &applied)))?
        };
        cfg.validate().map_err(|e| match e {
            ConfigError::Invalid(m) => ConfigError::Invalid(env::explain(m, &applied)),
            other => other,
        })?;
        Ok(cfg)
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
        self.events.validate().map_err(ConfigError::Invalid)?;
        self.alerts.validate().map_err(ConfigError::Invalid)?;
        if self.coordinator.cache_mb == 0 || self.coordinator.snapshot_timeout_s == 0 {
            return bad("coordinator.cache_mb and coordinator.snapshot_timeout_s must be at least 1".into());
        }
        let w = &self.worker;
        if w.capacity == 0 || w.pipeline_depth == 0 || w.report_batch == 0 {
            return bad("worker.capacity, worker.pipeline_depth and worker.report_batch must be at least 1".into());
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
