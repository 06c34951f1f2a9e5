//! The one way Panoptes serves HTTP: an axum router behind an accept loop
//! that bounds what slow, silent or many clients can hold. The web UI and
//! every node's `/metrics` + `/healthz` endpoint use it.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tracing::{debug, warn};

/// What a server gives slow, silent or many clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections held at once; one more is closed as it arrives.
    pub max_connections: usize,
    /// Time a client has to send a request's head (and, over TLS, to finish
    /// the handshake); then its connection is closed.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: 1024, header_read_timeout: Duration::from_secs(10) }
    }
}

/// A listener on `addr`, or on a free port of the same host when `addr` is
/// taken (logged, naming `what`). The caller prints or records the port it
/// got, so that nodes on one host never need their ports chosen by hand.
pub async fn bind_or_free(addr: SocketAddr, what: &str) -> std::io::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) => {
            let mut any = addr;
            any.set_port(0);
            warn!(%addr, error = %e, "{what} port taken; using a free one");
            tokio::net::TcpListener::bind(any).await
        }
    }
}

/// Accept connections forever, each served in its own task (handshaken
/// first over TLS, bounded), so a slow or plain-text client only ends its
/// own connection. At most `limits.max_connections` are held (one more is
/// closed at once), and a client that does not send a request's head within
/// `limits.header_read_timeout` is disconnected: a few thousand idle or
/// slow connections cannot use up the process. `what` names the server in
/// the log.
pub async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    what: &'static str,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // A connection reset before it was accepted is the client's
                // business; anything else (e.g. out of file descriptors):
                // wait a moment, as axum::serve does.
                if !matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset) {
                    warn!(error = %e, "{what}: accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, max = limits.max_connections, "{what}: connection limit reached; closing a new connection");
            drop(tcp);
            continue;
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tcp.set_nodelay(true);
            let mut conn = Builder::new(TokioExecutor::new());
            conn.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
            let service = TowerToHyperService::new(app);
            let served = match acceptor {
                None => conn.serve_connection_with_upgrades(TokioIo::new(tcp), service).await,
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            debug!(%peer, error = %e, "{what}: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            debug!(%peer, "{what}: TLS handshake timed out");
                            return;
                        }
                    };
                    conn.serve_connection_with_upgrades(TokioIo::new(stream), service).await
                }
            };
            if let Err(e) = served {
                debug!(%peer, error = %e, "{what}: connection ended with an error");
            }
        });
    }
}
