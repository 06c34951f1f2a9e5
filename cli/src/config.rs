//! The cluster config as the commands read it: the file with the
//! PANOPTES_* environment over it, address lists, and the TLS a node's own
//! outgoing connections use.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};
use panoptes_common::config::Config;

fn env_map() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

pub(crate) fn load_config(path: Option<&Path>) -> Result<Config> {
    Ok(Config::load(path, &env_map())?)
}

pub(crate) fn split_addrs(s: &str) -> Vec<String> {
    s.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect()
}

/// A node's own outgoing connections (to coordinators, Raft peers, the web
/// API's calls) use TLS when security.tls_ca is set, presenting the node's
/// certificate.
pub(crate) fn install_node_tls(cfg: &Config) -> Result<()> {
    let s = &cfg.security;
    panoptes_proto::tls::install_client(&s.tls_ca, &s.tls_cert, &s.tls_key).map_err(|e| anyhow!("invalid [security] TLS settings: {e}"))
}
