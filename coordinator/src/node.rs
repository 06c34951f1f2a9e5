//! A coordinator process: opens its sled store, starts openraft, serves the
//! public, worker and Raft gRPC services, and runs the leader's duties
//! (`crate::leader`) while it leads. The handle they share is `handle.rs`.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use openraft::BasicNode;
use panoptes_common::config::CoordinatorConfig;
use panoptes_proto::credentials::ClusterSecret;
use tracing::{info, warn};

use crate::raft::log_store::{open_db_with_cache, LogStore};
use crate::raft::network::Network;
use crate::raft::types::Raft;
use crate::pictures::store::PictureStore;
use crate::pictures::object::ObjectPictures;
use crate::picture_copies::Pictures;
use crate::pictures::PictureHome;
use crate::store::StateMachineStore;

use crate::handle::Coordinator;

/// Run a coordinator until `shutdown` resolves.
pub async fn run(config: CoordinatorConfig, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    // `join`: joining a running cluster (`panoptes cluster add-member`):
    // never initialise a new cluster, wait to be added instead.
    let CoordinatorConfig { id, listen, data_dir, peers: others, join, settings: cfg } = config;
    panoptes_media::init();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("failed to create data dir {}", data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("failed to listen on {} (is another node using it?)", listen))?;
    let local: SocketAddr = listener.local_addr()?;
    let addr = local.to_string();
    panoptes_common::addresses::note(&data_dir, "grpc", &addr);
    let mut peers = others;
    peers.insert(id, addr.clone());

    let db_path = data_dir.join("raft.sled");
    let cache_bytes = cfg.coordinator.cache_mb << 20;
    let compress = cfg.coordinator.compress_store;
    let db = tokio::task::spawn_blocking(move || open_db_with_cache(&db_path, cache_bytes, compress))
        .await?
        .with_context(|| format!("failed to open the store in {}", data_dir.display()))?;
    let log_store = LogStore::open(&db).context("failed to open the Raft log")?;
    let picture_store = Arc::new(
        PictureStore::open(data_dir.join("pictures"), &db).with_context(|| format!("failed to open the picture store in {}", data_dir.display()))?,
    );
    let home = if cfg.object_store.enabled() {
        let o = ObjectPictures::open(&cfg.object_store).map_err(anyhow::Error::msg)?;
        info!(object_store = %o.url(), "stored pictures go to the object store");
        PictureHome::Object(Arc::new(o))
    } else {
        PictureHome::Local(picture_store.clone())
    };
    // Event sinks: checked now, so that a bad one stops the start with its reason.
    let sinks = crate::events::sinks(&cfg.events, id).map_err(anyhow::Error::msg)?;
    for w in &cfg.events.webhooks {
        crate::api::check_source_policy(w, &cfg).await.map_err(|s| anyhow::anyhow!("events.webhooks: {} (the [sources] network rules apply to webhooks too)", s.message()))?;
    }
    let sm = StateMachineStore::open(&db, data_dir.join("snapshots"), home.clone()).context("failed to open the state machine")?;
    let reader = sm.reader();

    let hb = cfg.coordinator.raft_heartbeat_ms.max(20);
    let raft_cfg = openraft::Config {
        cluster_name: "panoptes".into(),
        heartbeat_interval: hb,
        election_timeout_min: hb * 3,
        election_timeout_max: hb * 6,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.coordinator.snapshot_logs.max(10)),
        max_in_snapshot_log_to_keep: 100,
        install_snapshot_timeout: cfg.coordinator.snapshot_timeout_s * 1000,
        // Snapshot chunks (streamed from the file) well below the transport's message limit.
        snapshot_max_chunk_size: 4 << 20,
        ..Default::default()
    }
    .validate()
    .context("invalid Raft timing settings")?;
    // Read once at start-up: what this node presents to its peers.
    let secret = ClusterSecret::from_file(cfg.security.cluster_secret_file.as_deref()).map_err(anyhow::Error::msg)?;
    let network = Network::new(id).with_secret(secret.clone());
    let snapshot_sends = network.snapshot_sends();
    let raft = Raft::new(id, Arc::new(raft_cfg), network, log_store, sm).await.context("failed to start Raft")?;

    let pictures = Arc::new(Pictures::new(id, &home, picture_store.clone(), raft.clone(), secret.clone()));
    let leader = crate::leader::Leader::new(Duration::from_millis(cfg.cluster.lease_timeout_ms));
    let node = Arc::new(Coordinator {
        id: id,
        addr: addr.clone(),
        raft: raft.clone(),
        pictures: pictures.clone(),
        snapshot_sends,
        reader,
        cfg,
        peers: peers.clone(),
        leader,
        channels: Mutex::default(),
        probes: crate::probes::ProbePool::new(crate::probes::PROBE_THREADS).context("cannot start the probe threads")?,
    });

    // Bootstrap: the lowest-numbered member initialises a brand-new cluster with
    // every configured member; on restart the stored membership is used. A
    // member started with --join never initialises: the leader adds it
    // (`panoptes cluster add-member`) and it learns the membership from the log.
    let lowest = *peers.keys().next().expect("peers contain this node");
    let initialized = raft.is_initialized().await?;
    if join && !initialized {
        info!(id = id, %addr, "waiting to be added to a running cluster (panoptes cluster add-member {} {addr})", id);
    }
    if !join && lowest == id && !initialized {
        let members: BTreeMap<u64, BasicNode> = peers.iter().map(|(id, a)| (*id, BasicNode { addr: a.clone() })).collect();
        info!(members = ?members.keys().collect::<Vec<_>>(), "initialising a new cluster");
        if let Err(e) = raft.initialize(members).await {
            warn!(error = %e, "cluster initialisation skipped");
        }
    }

    // Prometheus metrics and /healthz over HTTP, on the gRPC port + 10000
    // (a free port when that one is taken): printed in the log.
    let n = node.clone();
    let http = crate::metrics::serve(local, raft.clone(), id, node.reader.clone(), move || n.leader.live_workers().len())
        .await
        .context("failed to serve metrics over HTTP")?;
    info!(id = id, addr = %http, "metrics on http://{http}/metrics (health: http://{http}/healthz)");
    panoptes_common::addresses::note(&data_dir, "metrics", &http.to_string());

    // Standard gRPC tooling: health checking (SERVING while a leader is
    // known) and server reflection (v1, and v1alpha for older clients).
    let (health, health_service) = tonic_health::server::health_reporter();
    crate::metrics::track_health(raft.clone(), health).await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(panoptes_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().context("invalid gRPC descriptor set for reflection")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("invalid gRPC descriptor set for reflection")?;

    info!(id = id, %addr, data_dir = %data_dir.display(), "coordinator listening");
    println!("coordinator {} listening on {addr}", id);

    let leader_loop = tokio::spawn(crate::leader::run(node.clone()));
    let analytics_loop = tokio::spawn(crate::leader::analytics(node.clone()));
    let repair = tokio::spawn(pictures.clone().repair_loop(node.reader.clone()));
    let retention = tokio::spawn(crate::retention::retention_loop(node.clone()));
    let deliveries: Vec<_> = sinks
        .into_iter()
        .map(|s| {
            info!(sink = %s.shown(), "events go to this sink while this member leads");
            tokio::spawn(crate::leader::deliver(node.clone(), s))
        })
        .collect();
    // TCP_NODELAY on every accepted connection (tonic sets it only on
    // listeners it binds itself): with Nagle on, the server's small HTTP/2
    // frames (WINDOW_UPDATE for a report over 64 KiB, a reply's trailers)
    // waited for delayed ACKs, ~12 ms a report with pictures.
    // At most security.max_connections at once (crate::conn_limit).
    let sec = &node.cfg.security;
    let incoming = crate::conn_limit::capped(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)), sec.max_connections);
    // Authentication and rate limiting (docs/SECURITY.md): on when a tokens
    // file or a cluster secret is configured; plain development mode keeps
    // every call open as before.
    let gate = if sec.tokens_file.is_none() && sec.cluster_secret_file.is_none() {
        None
    } else {
        let auth = crate::auth::Auth::from_files(sec.tokens_file.as_deref(), sec.cluster_secret_file.as_deref()).map_err(anyhow::Error::msg)?;
        info!(tokens = sec.tokens_file.is_some(), cluster_secret = sec.cluster_secret_file.is_some(), "gRPC authentication on");
        let limiter = crate::auth::RateLimiter::new(sec.rate_limit_per_s, sec.rate_limit_burst);
        Some(Arc::new(crate::auth::Gate { auth, limiter }))
    };
    let max_request = usize::try_from(sec.max_request_bytes).unwrap_or(usize::MAX);
    let served = server_builder(sec)?
        .layer(crate::auth::GateLayer(gate.clone()))
        .add_service(crate::raft::service::server(raft.clone(), picture_store))
        .add_service(crate::api::server(node.clone()).max_decoding_message_size(max_request))
        .add_service(crate::worker_api::server(node.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    leader_loop.abort();
    analytics_loop.abort();
    for d in deliveries {
        d.abort();
    }
    repair.abort();
    retention.abort();
    let _ = raft.shutdown().await;
    crate::raft::log_store::flush(&db).await.ok();
    served.context("gRPC server failed")?;
    info!(id = id, "coordinator stopped");
    Ok(())
}

/// The gRPC server, over TLS when `security.tls_cert` is set: then with
/// `tls_ca`, client certificates signed by it are checked, and required with
/// `require_client_cert`.
fn server_builder(sec: &panoptes_common::config::SecuritySection) -> anyhow::Result<tonic::transport::Server> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    // HTTP/2 windows large enough that a report with its pictures (or a
    // snapshot chunk) is not held back by flow control (the default is 64 KiB).
    let builder = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        // A client that stops answering (gone without closing) is dropped.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    // Validated: a certificate comes with its key (`SecuritySection::validate`).
    let (Some(cert), Some(key)) = (&sec.tls_cert, &sec.tls_key) else { return Ok(builder) };
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read the {what} {} (security.tls_*; make them with `panoptes certs`)", p.display()))
    };
    // A client that does not finish its TLS handshake in 10 s is dropped.
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read("certificate", cert)?, read("private key", key)?)).timeout(Duration::from_secs(10));
    if let Some(ca) = &sec.tls_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read("CA certificate", ca)?)).client_auth_optional(!sec.require_client_cert);
    }
    let client_certs = match (&sec.tls_ca, sec.require_client_cert) {
        (_, true) => "required",
        (None, false) => "not checked",
        (Some(_), false) => "optional",
    };
    info!(cert = %cert.display(), client_certs, "gRPC over TLS");
    builder.tls_config(tls).context("invalid TLS certificate or key (security.tls_cert, tls_key)")
}
