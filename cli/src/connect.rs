//! Reaching the cluster from a command: the client its --coordinator,
//! --config, --token and --tls-* options make, and failed calls explained.
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use panoptes_client::{pb, Authorization, Client};

use crate::args::ClientOpts;
use crate::config::{install_node_tls, load_config, split_addrs};

pub(crate) fn connect(c: &ClientOpts) -> Result<Client> {
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

/// A failed call as an error that says what to do next.
pub(crate) fn explain(s: tonic::Status, client: &Client) -> anyhow::Error {
    anyhow!(panoptes_client::explain(&s, client.addrs()))
}

pub(crate) async fn status_of(client: &Client, job: &str) -> Result<pb::JobStatus> {
    client.status(pb::JobRef { job_id: job.to_string() }).await.map_err(|s| explain(s, client))
}
