//! Client side of the coordinators' Raft transport: openraft messages, bincode-encoded, carried in
//! `RaftPayload` over tonic gRPC.
//!
//! One tonic [`Channel`] is cached per peer (created lazily with `Endpoint::connect_lazy`, so it
//! connects on first use and reconnects by itself after failures); every [`NetworkConnection`]
//! openraft creates for that peer clones it (channels are cheap handles onto one HTTP/2
//! connection). A channel is only replaced if the peer's address changes.
use std::collections::HashMap;
use std::error::Error;
use std::future::Future;
use std::io::SeekFrom;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, SnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RPCTypes, Snapshot, Vote};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use panoptes_proto::credentials::ClusterSecret;
use panoptes_proto::raft::raft_service_client::RaftServiceClient;
use panoptes_proto::raft::RaftPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::raft::types::{NodeId, TypeConfig};

/// Largest gRPC message accepted or sent by the Raft transport, both directions, client and
/// server (snapshot chunks and large append batches).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// An AppendEntries batch is cut to about this many bytes: it must travel and
/// be flushed within one heartbeat interval (openraft's timeout for it), or a
/// lagging follower is sent the same oversized batch again and again.
pub const MAX_APPEND_BYTES: u64 = 4 * 1024 * 1024;

/// The last chunk of a snapshot is answered once the receiver has installed
/// it, which takes time in proportion to its size: its deadline is the
/// configured snapshot timeout plus the size at this (slow disk) rate, so a
/// large snapshot is not abandoned and sent again forever.
const MIN_INSTALL_BYTES_PER_S: u64 = 8 << 20;

/// A chunk that fails (timeout, connection lost) is sent again this many
/// times, with a doubling pause, before the transfer is given up (openraft
/// then starts a new one when the peer answers again).
const SNAPSHOT_CHUNK_TRIES: u32 = 5;

/// How long establishing a TCP connection to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 keep-alive ping interval/timeout: detects dead peers on idle connections.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

struct Peer {
    addr: String,
    channel: Channel,
}

/// The [`RaftNetworkFactory`] for the coordinator: hands out [`NetworkConnection`]s that share one
/// cached channel per peer. Cheap to clone (clones share the cache).
#[derive(Clone)]
pub struct Network {
    self_id: NodeId,
    peers: Arc<Mutex<HashMap<NodeId, Peer>>>,
    /// Presented on every Raft RPC (peers refuse them without it when one is configured).
    secret: ClusterSecret,
    sends: SnapshotSends,
}

/// The snapshots this member is sending to its peers now (as the leader),
/// for `cluster status`: per peer, bytes sent and the snapshot's size.
#[derive(Clone, Default)]
pub struct SnapshotSends(Arc<Mutex<HashMap<NodeId, (u64, u64)>>>);

impl SnapshotSends {
    /// (bytes sent, snapshot size) of the transfer to `peer`, if one runs.
    pub fn get(&self, peer: NodeId) -> Option<(u64, u64)> {
        self.map().get(&peer).copied()
    }

    fn set(&self, peer: NodeId, sent: u64, size: u64) {
        self.map().insert(peer, (sent, size));
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, (u64, u64)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Clears a peer's entry in [`SnapshotSends`] when its transfer ends, however it ends.
struct SendEntry {
    sends: SnapshotSends,
    peer: NodeId,
}

impl Drop for SendEntry {
    fn drop(&mut self) {
        self.sends.map().remove(&self.peer);
    }
}

impl Network {
    /// A network for the node `self_id` (the id is used in timeout reports only).
    pub fn new(self_id: NodeId) -> Network {
        Network { self_id, peers: Arc::new(Mutex::new(HashMap::new())), secret: ClusterSecret::default(), sends: SnapshotSends::default() }
    }

    /// The snapshot transfers this member runs (shared with its clones).
    pub fn snapshot_sends(&self) -> SnapshotSends {
        self.sends.clone()
    }

    /// The same network, presenting the cluster secret on every RPC.
    pub fn with_secret(mut self, secret: ClusterSecret) -> Network {
        self.secret = secret;
        self
    }

    /// The cached channel to `target` at `addr` ("host:port"), created lazily on first request or
    /// when the address changed.
    fn channel(&self, target: NodeId, addr: &str) -> Result<Channel, String> {
        let mut peers = self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(peer) = peers.get(&target) {
            if peer.addr == addr {
                return Ok(peer.channel.clone());
            }
        }
        let channel = endpoint(addr)?.connect_lazy();
        peers.insert(target, Peer { addr: addr.to_string(), channel: channel.clone() });
        Ok(channel)
    }
}

/// The endpoint for a peer's "host:port": TLS when this process has a CA
/// configured (`panoptes_proto::tls`), plain text otherwise.
fn endpoint(addr: &str) -> Result<Endpoint, String> {
    Ok(panoptes_proto::tls::endpoint(addr)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NetworkConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> NetworkConnection {
        let client = match self.channel(target, &node.addr) {
            Ok(channel) => Ok(RaftServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE)),
            Err(e) => {
                tracing::warn!(target_node = target, addr = %node.addr, error = %e, "bad raft peer address");
                Err(format!("bad address {:?} for raft node {target}: {e}", node.addr))
            }
        };
        NetworkConnection {
            self_id: self.self_id,
            target,
            node: node.clone(),
            client,
            secret: self.secret.clone(),
            sends: self.sends.clone(),
        }
    }
}

/// Raft RPCs to one peer over its cached channel.
pub struct NetworkConnection {
    self_id: NodeId,
    target: NodeId,
    node: BasicNode,
    /// `Err` if the peer's address could not be parsed; every RPC then reports it unreachable.
    client: Result<RaftServiceClient<Channel>, String>,
    secret: ClusterSecret,
    sends: SnapshotSends,
}

#[derive(Debug)]
struct BadAddress(String);

impl std::fmt::Display for BadAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for BadAddress {}

impl NetworkConnection {
    /// Send one RPC: bincode `req`, call `action` on the peer, decode the `Result<Resp, E>` it
    /// replies with, and map every failure into openraft's `RPCError`.
    async fn call<Req, Resp, E>(
        &mut self,
        action: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        self.call_within(action, req, option.hard_ttl()).await
    }

    /// [`Self::call`] with its own deadline.
    async fn call_within<Req, Resp, E>(
        &mut self,
        action: RPCTypes,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(msg) => return Err(RPCError::Unreachable(Unreachable::new(&BadAddress(msg.clone())))),
        };
        let data = bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if data.len() > MAX_MESSAGE_SIZE {
            tracing::warn!(len = data.len(), max = MAX_MESSAGE_SIZE, %action, "raft rpc payload exceeds the message size limit");
        }
        let mut request = tonic::Request::new(RaftPayload { data });
        // The grpc-timeout header: tonic enforces it on the client side, and the server sees it.
        request.set_timeout(ttl);
        self.secret.apply(&mut request);

        let result = match action {
            RPCTypes::Vote => client.vote(request).await,
            RPCTypes::AppendEntries => client.append_entries(request).await,
            RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = match result {
            Ok(r) => r.into_inner(),
            Err(status) => return Err(self.status_to_rpc_error(action, status, ttl)),
        };
        let decoded: Result<Resp, E> =
            bincode::deserialize(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }

    fn status_to_rpc_error<E: Error>(
        &self,
        action: RPCTypes,
        status: tonic::Status,
        ttl: Duration,
    ) -> RPCError<NodeId, BasicNode, E> {
        use tonic::Code;
        tracing::debug!(target_node = self.target, %action, code = ?status.code(), message = status.message(), "raft rpc failed");
        match status.code() {
            // Connection refused / reset, peer down, DNS failure: back off before retrying.
            Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
            // Our own deadline (the grpc-timeout we set from hard_ttl): tonic reports it as
            // Cancelled("Timeout expired"), a server as DeadlineExceeded.
            Code::DeadlineExceeded => RPCError::Timeout(self.timeout(action, ttl)),
            Code::Cancelled if status.message().to_ascii_lowercase().contains("timeout") => {
                RPCError::Timeout(self.timeout(action, ttl))
            }
            // Anything else (reset mid-call, protocol error, …): openraft retries.
            _ => RPCError::Network(NetworkError::new(&status)),
        }
    }

    fn timeout(&self, action: RPCTypes, ttl: Duration) -> Timeout<NodeId> {
        Timeout { action, id: self.self_id, target: self.target, timeout: ttl }
    }
}

impl RaftNetwork<TypeConfig> for NetworkConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        // Ask openraft to cut a batch over MAX_APPEND_BYTES to what fits, instead of sending it
        // and timing out over and over. (A single entry cannot be cut; it is sent as it is.)
        let n = rpc.entries.len() as u64;
        if n > 1 {
            let size = bincode::serialized_size(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            if size > MAX_APPEND_BYTES {
                let fit = (n as u128 * MAX_APPEND_BYTES as u128 / size as u128) as u64;
                return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fit.clamp(1, n - 1))));
            }
        }
        self.call(RPCTypes::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(RPCTypes::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RPCTypes::Vote, &rpc, &option).await
    }

    /// The snapshot file, sent as `install_snapshot` chunks (of
    /// `Config::snapshot_max_chunk_size`, below MAX_MESSAGE_SIZE), read from
    /// disk one at a time. Unlike openraft's default sender, the last chunk's
    /// deadline grows with the snapshot's size (its answer waits for the
    /// install), and the progress is kept for `cluster status`.
    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        mut snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let io = |e: std::io::Error| StreamingError::Network(NetworkError::new(&e));
        let chunk = option.snapshot_chunk_size().unwrap_or(4 << 20);
        let size = snapshot.snapshot.seek(SeekFrom::End(0)).await.map_err(io)?;
        let last_ttl = option.hard_ttl() + Duration::from_secs(size / MIN_INSTALL_BYTES_PER_S);
        let _entry = SendEntry { sends: self.sends.clone(), peer: self.target };
        tracing::info!(target_node = self.target, snapshot = %snapshot.meta.snapshot_id, bytes = size, "sending a snapshot");
        let mut cancel = std::pin::pin!(cancel);
        let mut offset = 0u64;
        let mut failures = 0u32;
        loop {
            if let Some(closed) = cancel.as_mut().now_or_never() {
                return Err(closed.into());
            }
            snapshot.snapshot.seek(SeekFrom::Start(offset)).await.map_err(io)?;
            let mut data = Vec::with_capacity(chunk);
            (&mut snapshot.snapshot).take(chunk as u64).read_to_end(&mut data).await.map_err(io)?;
            let n = data.len() as u64;
            let done = offset + n >= size;
            // With the last chunk in flight, the peer is (about to be) installing.
            self.sends.set(self.target, if done { size } else { offset }, size);
            let req: InstallSnapshotRequest<TypeConfig> = InstallSnapshotRequest { vote, meta: snapshot.meta.clone(), offset, data, done };
            let ttl = if done { last_ttl } else { option.hard_ttl() };
            let r: Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>> =
                self.call_within(RPCTypes::InstallSnapshot, &req, ttl).await;
            let err = match r {
                Ok(resp) => {
                    if resp.vote > vote || done {
                        if done {
                            tracing::info!(target_node = self.target, bytes = size, "snapshot sent and installed");
                        }
                        return Ok(SnapshotResponse::new(resp.vote));
                    }
                    failures = 0;
                    offset += n;
                    continue;
                }
                Err(RPCError::RemoteError(RemoteError { source: RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m)), .. })) => {
                    // The receiver lost the transfer (it restarted): from the start.
                    tracing::warn!(target_node = self.target, mismatch = %m, "the peer lost the snapshot transfer; sending it from the start");
                    offset = 0;
                    continue;
                }
                Err(RPCError::RemoteError(RemoteError { target, target_node, source: RaftError::Fatal(f) })) => {
                    return Err(RemoteError { target, target_node, source: f }.into());
                }
                Err(e) => e,
            };
            failures += 1;
            tracing::warn!(target_node = self.target, offset, error = %err, failures, "a snapshot chunk was not delivered");
            if failures >= SNAPSHOT_CHUNK_TRIES {
                return Err(match err {
                    RPCError::Timeout(t) => t.into(),
                    RPCError::Unreachable(u) => u.into(),
                    RPCError::Network(n) => n.into(),
                    other => NetworkError::new(&other).into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100) * (1 << failures.min(5))).await;
        }
    }
}
