//! Client side of the coordinators' Raft transport: openraft messages, bincode-encoded, carried in
//! `RaftPayload` over tonic gRPC.
//!
//! One tonic [`Channel`] is cached per peer (created lazily with `Endpoint::connect_lazy`, so it
//! connects on first use and reconnects by itself after failures); every [`NetworkConnection`]
//! openraft creates for that peer clones it (channels are cheap handles onto one HTTP/2
//! connection). A channel is only replaced if the peer's address changes.
use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, RPCTypes};
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
}

impl Network {
    /// A network for the node `self_id` (the id is used in timeout reports only).
    pub fn new(self_id: NodeId) -> Network {
        Network { self_id, peers: Arc::new(Mutex::new(HashMap::new())), secret: ClusterSecret::default() }
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
        NetworkConnection { self_id: self.self_id, target, node: node.clone(), client, secret: self.secret.clone() }
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
        request.set_timeout(option.hard_ttl());
        self.secret.apply(&mut request);

        let result = match action {
            RPCTypes::Vote => client.vote(request).await,
            RPCTypes::AppendEntries => client.append_entries(request).await,
            RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = match result {
            Ok(r) => r.into_inner(),
            Err(status) => return Err(self.status_to_rpc_error(action, status, option)),
        };
        let decoded: Result<Resp, E> =
            bincode::deserialize(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }

    fn status_to_rpc_error<E: Error>(
        &self,
        action: RPCTypes,
        status: tonic::Status,
        option: &RPCOption,
    ) -> RPCError<NodeId, BasicNode, E> {
        use tonic::Code;
        tracing::debug!(target_node = self.target, %action, code = ?status.code(), message = status.message(), "raft rpc failed");
        match status.code() {
            // Connection refused / reset, peer down, DNS failure: back off before retrying.
            Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
            // Our own deadline (the grpc-timeout we set from hard_ttl): tonic reports it as
            // Cancelled("Timeout expired"), a server as DeadlineExceeded.
            Code::DeadlineExceeded => RPCError::Timeout(self.timeout(action, option)),
            Code::Cancelled if status.message().to_ascii_lowercase().contains("timeout") => {
                RPCError::Timeout(self.timeout(action, option))
            }
            // Anything else (reset mid-call, protocol error, …): openraft retries.
            _ => RPCError::Network(NetworkError::new(&status)),
        }
    }

    fn timeout(&self, action: RPCTypes, option: &RPCOption) -> Timeout<NodeId> {
        Timeout { action, id: self.self_id, target: self.target, timeout: option.hard_ttl() }
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

    // `full_snapshot` uses openraft's default: the snapshot is sent as a series of
    // `install_snapshot` chunks (size from `Config::snapshot_max_chunk_size`, keep it below
    // MAX_MESSAGE_SIZE).
}
