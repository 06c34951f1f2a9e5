//! Starting the server: the web port derived from the gRPC port, binding
//! it, and serving over plain HTTP or HTTPS (the TLS certificate and key).
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::Router;
use panoptes_client::Client;
use panoptes_common::http::Limits;
use tracing::{info, warn};

use crate::relay;
use crate::routes::router;
use crate::state::Web;

/// The web address for a coordinator serving gRPC on `grpc`: same host, port
/// + 20000 ([`panoptes_common::addresses::derived`]).
pub fn derived_http_addr(grpc: &SocketAddr) -> SocketAddr {
    panoptes_common::addresses::derived(grpc, panoptes_common::addresses::Derived::Web)
}

/// Where to dial a coordinator that listens on `listen`: a wildcard host
/// (0.0.0.0, [::]) is reached on loopback.
fn dial_addr(listen: &SocketAddr) -> SocketAddr {
    let mut a = *listen;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    a
}

/// The certificate chain and private key (PEM files) the web port serves
/// HTTPS with: the coordinator's `security.tls_cert` and `security.tls_key`.
#[derive(Clone, Debug)]
pub struct WebTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Start the web UI of the coordinator that listens on `listen` (gRPC),
/// with `peers` (the other coordinators' addresses) to fail over to, over
/// HTTPS with `tls` when given. Logs "web UI on http://…/" (or https) and
/// returns the bound address; a failure is logged, not fatal: the
/// coordinator runs on without its web page.
pub async fn start(listen: &str, peers: Vec<String>, tls: Option<WebTls>, hosts: Vec<String>) -> Option<SocketAddr> {
    let grpc: SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(e) => {
            warn!(%listen, error = %e, "web UI not started: the listen address is not IP:PORT");
            return None;
        }
    };
    // With port 0 this coordinator's own port is unknown here: use the others.
    let mut coords: Vec<String> = Vec::new();
    if grpc.port() != 0 {
        coords.push(dial_addr(&grpc).to_string());
    }
    coords.extend(peers);
    if coords.is_empty() {
        warn!(%listen, "web UI not started: the coordinator listens on port 0 and has no peers to reach; give --listen HOST:PORT");
        return None;
    }
    let (served, scheme) = match &tls {
        Some(t) => (serve_tls(derived_http_addr(&grpc), coords, t, hosts).await, "https"),
        None => (serve(derived_http_addr(&grpc), coords, hosts).await, "http"),
    };
    match served {
        Ok(a) => {
            info!(addr = %a, "web UI on {scheme}://{a}/ (API: {scheme}://{a}/api/openapi.json)");
            Some(a)
        }
        Err(e) => {
            warn!(error = %e, "web UI not started");
            None
        }
    }
}

/// Serve the page and the API over plain HTTP on `http` (a free port on the
/// same host when it is taken), calling the coordinators at `coordinators`
/// (`HOST:PORT`, tried in order). Returns the bound address; serves until
/// the process ends. It answers requests for IP addresses, `localhost`,
/// this machine's host name and `hosts` ([`guard`](crate::routes::guard)).
pub async fn serve(http: SocketAddr, coordinators: Vec<String>, hosts: Vec<String>) -> std::io::Result<SocketAddr> {
    serve_limited(http, coordinators, hosts, Limits::default()).await
}

/// [`serve`] with other [`Limits`].
pub async fn serve_limited(http: SocketAddr, coordinators: Vec<String>, hosts: Vec<String>, limits: Limits) -> std::io::Result<SocketAddr> {
    let (listener, app) = bind(http, coordinators, hosts).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(panoptes_common::http::accept_loop(listener, app, None, limits, "web UI"));
    Ok(bound)
}

/// [`serve`] over HTTPS with the certificate chain and key in `tls` (no
/// client certificate asked for: browsers have none, tokens do the auth).
/// A bad certificate or key file is an error naming the file and its key.
pub async fn serve_tls(http: SocketAddr, coordinators: Vec<String>, tls: &WebTls, hosts: Vec<String>) -> std::io::Result<SocketAddr> {
    let acceptor = tls_acceptor(tls).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let (listener, app) = bind(http, coordinators, hosts).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(panoptes_common::http::accept_loop(listener, app, Some(acceptor), Limits::default(), "web UI"));
    Ok(bound)
}

/// The listener on `http` (or a free port on the same host) and the routes.
async fn bind(http: SocketAddr, coordinators: Vec<String>, hosts: Vec<String>) -> std::io::Result<(tokio::net::TcpListener, Router)> {
    let client = Client::new(&coordinators).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = panoptes_common::http::bind_or_free(http, "web").await?;
    let mut hosts: Vec<String> = hosts.iter().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        hosts.push(h.trim().to_ascii_lowercase());
    }
    let web = Web { client, seq: Arc::new(AtomicU64::new(0)), relays: Arc::default(), hosts: Arc::new(hosts) };
    tokio::spawn(relay::end_abandoned(web.relays.clone()));
    Ok((listener, router(web)))
}

/// The rustls server (ring provider, TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1
/// by ALPN, no client certificates) for the PEM files in `tls`.
fn tls_acceptor(tls: &WebTls) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate {} (security.tls_cert): {e}", tls.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {} (security.tls_cert): expected PEM `CERTIFICATE` blocks", tls.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| format!("cannot read the private key {} (security.tls_key): {e}", tls.key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup for the web UI: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("invalid TLS certificate or key for the web UI ({} / {}; security.tls_cert, tls_key): {e}", tls.cert.display(), tls.key.display()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_port_is_grpc_port_plus_20000_or_free() {
        assert_eq!(derived_http_addr(&"127.0.0.1:7400".parse().unwrap()), "127.0.0.1:27400".parse().unwrap());
        assert_eq!(derived_http_addr(&"127.0.0.1:50000".parse().unwrap()).port(), 0);
        assert_eq!(derived_http_addr(&"127.0.0.1:0".parse().unwrap()).port(), 0);
        assert_eq!(dial_addr(&"0.0.0.0:7400".parse().unwrap()), "127.0.0.1:7400".parse().unwrap());
    }
}
