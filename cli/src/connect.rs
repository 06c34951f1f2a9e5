//! Reaching the cluster from a command: the client its --coordinator,
//! --config, --token and --tls-* options make, and failed calls explained.
use anyhow::{anyhow, Result};
use panoptes_client::{pb, Authorization, Client};
use panoptes_common::config::{ClientConfig, ClientFlags};

use crate::args::ClientOpts;
use crate::config::{install_tls, load_config};

pub(crate) fn connect(c: &ClientOpts) -> Result<Client> {
    let file = if c.coordinator.is_none() || c.config.is_some() { Some(load_config(c.config.as_deref())?) } else { None };
    let flags = ClientFlags {
        coordinator: c.coordinator.clone(),
        token: c.token.clone(),
        tls_ca: c.tls_ca.clone(),
        tls_cert: c.tls_cert.clone(),
        tls_key: c.tls_key.clone(),
    };
    let cfg = ClientConfig::build(flags, file.as_ref(), c.config.is_some())?;
    let auth = match &cfg.token {
        Some(t) => Authorization::bearer(t).map_err(|e| anyhow!(e))?,
        None => Authorization::default(),
    };
    if let Some(tls) = &cfg.tls {
        install_tls(tls).map_err(|e| anyhow!(e))?;
    }
    Ok(Client::new(&cfg.coordinators).map_err(|e| anyhow!(e))?.with_auth(auth))
}

/// A failed call as an error that says what to do next.
pub(crate) fn explain(s: tonic::Status, client: &Client) -> anyhow::Error {
    anyhow!(panoptes_client::explain(&s, client.addrs()))
}

pub(crate) async fn status_of(client: &Client, job: &str) -> Result<pb::JobStatus> {
    client.status(pb::JobRef { job_id: job.to_string() }).await.map_err(|s| explain(s, client))
}
