//! Server side of the coordinators' Raft transport: decodes the bincode-encoded openraft request in
//! a `RaftPayload`, hands it to the local [`Raft`], and replies with the bincode-encoded
//! `Result<Response, RaftError<…>>` (so Raft-level errors travel back to the caller as values,
//! and gRPC `Status` errors mean transport or decoding trouble only).
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use panoptes_proto::raft::raft_service_server::{RaftService, RaftServiceServer};
use panoptes_proto::raft::RaftPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use crate::auth::{Access, Gate};
use crate::pictures::store::PictureStore;
use crate::pictures::{GetPictures, PutPictures};
use crate::raft::network::MAX_MESSAGE_SIZE;
use crate::raft::types::{NodeId, Raft, TypeConfig};

/// The gRPC `RaftService` backed by a local openraft node and this node's pictures.
#[derive(Clone)]
pub struct RaftGrpc {
    raft: Raft,
    pictures: Arc<PictureStore>,
    /// The access rules, to check the token a forwarded user or admin
    /// command carries (None: no tokens or secret configured).
    gate: Option<Arc<Gate>>,
}

impl RaftGrpc {
    pub fn new(raft: Raft, pictures: Arc<PictureStore>, gate: Option<Arc<Gate>>) -> RaftGrpc {
        RaftGrpc { raft, pictures, gate }
    }

    /// May another member have this node commit `req`? Workers' commands
    /// (the gate checked the cluster secret), and users' and admins'
    /// commands that carry their caller's token with the role they need;
    /// never the leader's own duties, which a member that is not the leader
    /// has no business proposing.
    fn may_forward(&self, req: &crate::state::command::Request, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        use crate::state::command::Origin;
        let need = match req.origin() {
            Origin::Worker => return Ok(()),
            Origin::Leader => {
                return Err(Status::permission_denied(format!("{} is the leader's own duty: it is not taken from another member", req.kind())));
            }
            Origin::User => Access::User,
            Origin::Admin => Access::Admin,
        };
        let Some(g) = &self.gate else { return Ok(()) };
        let caller = g.auth.check_token(metadata, need).map_err(|s| Status::new(s.code(), format!("forwarded {}: {}", req.kind(), s.message())))?;
        // A job records who submitted it: the token the follower forwards,
        // not a name the forwarder chose.
        match req.owner() {
            Some(owner) if owner != caller.owner() => Err(Status::permission_denied(format!(
                "forwarded {}: it names owner '{owner}', but the caller's token is '{}'",
                req.kind(),
                caller.owner()
            ))),
            _ => Ok(()),
        }
    }
}

impl RaftGrpc {
    /// A pictures call: decode it, answer it on the blocking pool (the store
    /// reads and syncs files), encode the `Result<T, String>`.
    async fn on_pictures<M: DeserializeOwned + Send + 'static, T: Serialize + Send + 'static>(
        &self,
        what: &str,
        request: Request<RaftPayload>,
        serve: fn(&PictureStore, M) -> Result<T, String>,
    ) -> Result<Response<RaftPayload>, Status> {
        let msg: M = decode(what, request)?;
        let store = self.pictures.clone();
        let reply = tokio::task::spawn_blocking(move || serve(&store, msg)).await.unwrap_or_else(|e| Err(format!("the store task failed: {e}")));
        encode(what, &reply)
    }
}

/// The tonic service for `raft`, with the transport's message size limits
/// ([`MAX_MESSAGE_SIZE`] in both directions).
pub fn server(raft: Raft, pictures: Arc<PictureStore>, gate: Option<Arc<Gate>>) -> RaftServiceServer<RaftGrpc> {
    RaftServiceServer::new(RaftGrpc::new(raft, pictures, gate))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

fn decode<T: DeserializeOwned>(what: &str, req: Request<RaftPayload>) -> Result<T, Status> {
    bincode::deserialize(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("cannot decode raft {what} request: {e}")))
}

fn encode<T: Serialize>(what: &str, reply: &T) -> Result<Response<RaftPayload>, Status> {
    let data =
        bincode::serialize(reply).map_err(|e| Status::internal(format!("cannot encode raft {what} reply: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let req: VoteRequest<NodeId> = decode("vote", request)?;
        let reply = self.raft.vote(req).await;
        encode("vote", &reply)
    }

    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let req: AppendEntriesRequest<TypeConfig> = decode("append_entries", request)?;
        let reply = self.raft.append_entries(req).await;
        encode("append_entries", &reply)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> = decode("install_snapshot", request)?;
        let reply = self.raft.install_snapshot(req).await;
        encode("install_snapshot", &reply)
    }

    async fn forward(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let metadata = request.metadata().clone();
        let req: crate::state::command::Request = decode("forward", request)?;
        self.may_forward(&req, &metadata)?;
        // Commit here only if this node leads; never forward twice.
        let reply: Result<crate::state::command::Response, String> =
            self.raft.client_write(req).await.map(|r| r.data).map_err(|e| e.to_string());
        encode("forward", &reply)
    }

    async fn put_pictures(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.on_pictures::<PutPictures, _>("put_pictures", request, crate::pictures::serve_put).await
    }

    async fn get_pictures(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.on_pictures::<GetPictures, _>("get_pictures", request, crate::pictures::serve_get).await
    }
}
