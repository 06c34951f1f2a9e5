//! Generated gRPC types and services for Panoptes.

/// The public API (clients, CLI).
pub mod api {
    tonic::include_proto!("panoptes.v1");
}

/// The worker API (workers to coordinators).
pub mod worker {
    tonic::include_proto!("panoptes.worker.v1");
}

/// The coordinators' Raft transport.
pub mod raft {
    tonic::include_proto!("panoptes.raft.v1");
}

/// Encoded `FileDescriptorSet` of every service, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/panoptes_descriptor.bin"));

/// Reaching "any coordinator": one lazily-connected channel per address, and
/// failover to the next address when a call finds a node down or not leading.
pub mod failover {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tonic::transport::Channel;
    use tonic::{Code, Status};

    #[derive(Clone)]
    pub struct Coordinators {
        addrs: Arc<Vec<String>>,
        channels: Arc<Vec<Channel>>,
        current: Arc<AtomicUsize>,
        /// Presented by callers of the WorkerApi (see [`Coordinators::secret`]).
        secret: crate::credentials::ClusterSecret,
    }

    impl Coordinators {
        /// `addrs` are `HOST:PORT` (or `http://HOST:PORT`). Nothing connects until a call.
        pub fn new(addrs: &[String]) -> Result<Self, String> {
            if addrs.is_empty() {
                return Err("no coordinator address given".into());
            }
            let mut channels = Vec::new();
            for a in addrs {
                let ep = crate::tls::endpoint(a).map_err(|e| format!("bad coordinator address '{a}': {e}"))?.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true);
                channels.push(ep.connect_lazy());
            }
            Ok(Self { addrs: Arc::new(addrs.to_vec()), channels: Arc::new(channels), current: Arc::new(AtomicUsize::new(0)), secret: Default::default() })
        }

        /// The same coordinators, with the cluster secret that worker calls present.
        pub fn with_secret(mut self, secret: crate::credentials::ClusterSecret) -> Self {
            self.secret = secret;
            self
        }

        /// The cluster secret to present (an interceptor: `XClient::with_interceptor(ch, c.secret())`).
        pub fn secret(&self) -> crate::credentials::ClusterSecret {
            self.secret.clone()
        }

        pub fn addrs(&self) -> &[String] {
            &self.addrs
        }

        /// The channel to try now, and its index.
        pub fn pick(&self) -> (usize, Channel) {
            let i = self.current.load(Ordering::Relaxed) % self.channels.len();
            (i, self.channels[i].clone())
        }

        /// Move on from index `i` (if nobody else already did).
        pub fn rotate(&self, i: usize) {
            let _ = self.current.compare_exchange(i, (i + 1) % self.channels.len(), Ordering::Relaxed, Ordering::Relaxed);
        }

        /// Call `f` on a coordinator; on a retryable failure try the next one,
        /// for up to `attempts` tries in all, pausing a little between rounds.
        /// While coordinators answer but no leader is known yet (an election),
        /// keep trying for up to [`ELECTION_PATIENCE`]; when nothing answers at
        /// all, give up after `attempts`.
        pub async fn call<T, F, Fut>(&self, attempts: usize, mut f: F) -> Result<T, Status>
        where
            F: FnMut(Channel) -> Fut,
            Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
        {
            let mut election_deadline: Option<std::time::Instant> = None;
            let mut n = 0usize;
            loop {
                let (i, ch) = self.pick();
                match f(ch).await {
                    Ok(r) => return Ok(r.into_inner()),
                    Err(s) if retryable(&s) => {
                        if no_leader_yet(&s) {
                            election_deadline.get_or_insert_with(|| std::time::Instant::now() + ELECTION_PATIENCE);
                        }
                        let last = Status::new(s.code(), format!("{} ({})", with_causes(&s), self.addrs[i]));
                        self.rotate(i);
                        n += 1;
                        let electing = election_deadline.is_some_and(|d| std::time::Instant::now() < d);
                        if n >= attempts.max(1) && !electing {
                            return Err(last);
                        }
                        if n % self.channels.len() == 0 {
                            let round = (n / self.channels.len()) as u64;
                            tokio::time::sleep(Duration::from_millis((200 * round).min(1000))).await;
                        }
                    }
                    Err(s) => return Err(s),
                }
            }
        }
    }

    /// A status's message followed by its causes (a failed TLS handshake is
    /// only named in a transport error's source chain).
    pub fn with_causes(s: &Status) -> String {
        let mut m = s.message().to_string();
        let mut src = std::error::Error::source(s);
        while let Some(e) = src {
            let t = e.to_string();
            if !m.contains(&t) {
                m.push_str(": ");
                m.push_str(&t);
            }
            src = e.source();
        }
        m
    }

    /// How long a caller waits for a leader to be elected.
    pub const ELECTION_PATIENCE: Duration = Duration::from_secs(20);

    /// A coordinator answered, but there is no leader to commit through yet.
    fn no_leader_yet(s: &Status) -> bool {
        s.code() == Code::Unavailable && (s.message().contains("election in progress") || s.message().contains("cannot commit"))
    }

    /// Worth trying another coordinator (or again later)?
    pub fn retryable(s: &Status) -> bool {
        matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted)
            || (s.code() == Code::Unknown && s.message().contains("transport"))
    }
}

/// Cluster credentials: the secret members and workers present on
/// cluster-internal calls (see docs/SECURITY.md). A user's token is
/// `panoptes_client::Authorization`.
pub mod credentials {
    use tonic::metadata::{Ascii, MetadataValue};
    use tonic::service::Interceptor;
    use tonic::{Request, Status};

    /// The metadata header that carries the cluster secret (checked by
    /// `coordinator/src/auth.rs`).
    pub const SECRET_HEADER: &str = "x-panoptes-cluster-secret";

    /// The cluster secret a worker or coordinator presents on cluster-internal
    /// calls (WorkerApi, RaftService). Empty when no secret is configured, and
    /// then it adds nothing. Cheap to clone.
    #[derive(Clone, Default)]
    pub struct ClusterSecret(Option<MetadataValue<Ascii>>);

    impl ClusterSecret {
        /// Read `security.cluster_secret_file` once (whitespace trimmed).
        /// `None` (the key unset) means no secret; an unreadable or empty
        /// file is an error naming the file.
        pub fn from_file(path: Option<&std::path::Path>) -> Result<ClusterSecret, String> {
            let Some(path) = path else { return Ok(ClusterSecret(None)) };
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read cluster secret file {}: {e} (security.cluster_secret_file)", path.display()))?;
            ClusterSecret::from_text(&text).map_err(|e| format!("cluster secret file {}: {e}", path.display()))
        }

        /// The secret from its text (whitespace trimmed).
        pub fn from_text(text: &str) -> Result<ClusterSecret, String> {
            let t = text.trim();
            if t.is_empty() {
                return Err("the secret is empty: write a long random string into it".into());
            }
            let v = t.parse().map_err(|_| "the secret has characters a header cannot carry: use printable ASCII".to_string())?;
            Ok(ClusterSecret(Some(v)))
        }

        pub fn is_set(&self) -> bool {
            self.0.is_some()
        }

        /// Add the secret header to `req` (nothing when no secret is set).
        pub fn apply<T>(&self, req: &mut Request<T>) {
            if let Some(v) = &self.0 {
                req.metadata_mut().insert(SECRET_HEADER, v.clone());
            }
        }
    }

    impl Interceptor for ClusterSecret {
        fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
            self.apply(&mut req);
            Ok(req)
        }
    }

    /// Never print the secret itself.
    impl std::fmt::Debug for ClusterSecret {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(if self.is_set() { "ClusterSecret(set)" } else { "ClusterSecret(none)" })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::credentials::{ClusterSecret, SECRET_HEADER};

    #[test]
    fn the_cluster_secret_is_trimmed_and_sent_only_when_set() {
        let mut req = tonic::Request::new(());
        ClusterSecret::default().apply(&mut req);
        assert!(req.metadata().get(SECRET_HEADER).is_none());
        ClusterSecret::from_text("  s3cret\n").unwrap().apply(&mut req);
        assert_eq!(req.metadata().get(SECRET_HEADER).unwrap(), "s3cret");
        assert!(ClusterSecret::from_text(" \n").is_err());
        assert!(!ClusterSecret::from_file(None).unwrap().is_set());
        let e = ClusterSecret::from_file(Some(std::path::Path::new("/nonexistent/panoptes-secret"))).unwrap_err();
        assert!(e.contains("/nonexistent/panoptes-secret"), "{e}");
    }
}

/// TLS for this process's outgoing gRPC connections (CLI, worker, web,
/// coordinator to coordinator): set once at start-up from `[security]` or the
/// CLI's `--tls-*` options; every channel is then made by [`tls::endpoint`].
pub mod tls {
    use std::sync::OnceLock;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    static CLIENT: OnceLock<ClientTlsConfig> = OnceLock::new();

    /// Use TLS for every connection from now on, trusting the CA in the PEM
    /// file `ca`, and presenting the certificate `cert` with its key `key`
    /// when both are given (for clusters with `require_client_cert`). An
    /// empty `ca` leaves connections in plain text. The first call wins.
    pub fn install_client(ca: &str, cert: &str, key: &str) -> Result<(), String> {
        if ca.is_empty() {
            if !cert.is_empty() || !key.is_empty() {
                return Err("a client certificate needs the CA that signs the servers' certificates too (security.tls_ca or --tls-ca)".into());
            }
            return Ok(());
        }
        let read = |what: &str, path: &str| std::fs::read(path).map_err(|e| format!("cannot read the {what} {path}: {e} (make one with `panoptes certs`)"));
        let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("CA certificate", ca)?));
        match (cert.is_empty(), key.is_empty()) {
            (true, true) => {}
            (false, false) => cfg = cfg.identity(Identity::from_pem(read("certificate", cert)?, read("private key", key)?)),
            _ => return Err("a client certificate and its key go together: give both or neither".into()),
        }
        let _ = CLIENT.set(cfg);
        Ok(())
    }

    /// Is TLS on for this process's connections?
    pub fn enabled() -> bool {
        CLIENT.get().is_some()
    }

    /// The endpoint for `HOST:PORT` (a leading `http://` or `https://` is
    /// ignored): `https` with the installed TLS settings, or plain `http`.
    pub fn endpoint(addr: &str) -> Result<Endpoint, String> {
        let bare = addr.trim_start_matches("http://").trim_start_matches("https://");
        match CLIENT.get() {
            Some(cfg) => Endpoint::from_shared(format!("https://{bare}"))
                .and_then(|e| e.tls_config(cfg.clone()))
                .map_err(|e| format!("{e}")),
            None => Endpoint::from_shared(format!("http://{bare}")).map_err(|e| format!("{e}")),
        }
    }

    /// A hint to add to a connection error: what to check on either side.
    pub fn hint() -> &'static str {
        if enabled() {
            "TLS is on: check that the server's certificate is signed by the CA given (--tls-ca / security.tls_ca) and names the address used, and, if the cluster requires client certificates (a closed connection), that --tls-cert/--tls-key name a certificate signed by the cluster's CA"
        } else {
            "if the cluster serves TLS (security.tls_cert), pass --tls-ca FILE (or set PANOPTES_TLS_CA)"
        }
    }
}
