//! The cluster config as the commands read it: the file with the
//! PANOPTES_* environment over it, address lists, and the TLS a node's own
//! outgoing connections use.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};
use panoptes_common::config::{ClientTls, Config};

fn env_map() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

pub(crate) fn load_config(path: Option<&Path>) -> Result<Config> {
    Ok(Config::load(path, &env_map())?)
}

/// A node's own outgoing connections (to coordinators, Raft peers, the web
/// API's calls) use TLS when security.tls_ca is set, presenting the node's
/// certificate.
pub(crate) fn install_node_tls(cfg: &Config) -> Result<()> {
    match cfg.node_tls() {
        Some(tls) => install_tls(&tls).map_err(|e| anyhow!("invalid [security] TLS settings: {e}")),
        None => Ok(()),
    }
}

/// Every gRPC connection this process makes uses `tls`.
pub(crate) fn install_tls(tls: &ClientTls) -> Result<(), String> {
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    panoptes_proto::tls::install_client(&tls.ca.display().to_string(), &path(&tls.cert), &path(&tls.key))
}
