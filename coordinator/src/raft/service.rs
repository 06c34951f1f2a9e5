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

use crate::pictures::store::PictureStore;
use crate::pictures::{GetPictures, PutPictures};
use crate::raft::network::MAX_MESSAGE_SIZE;
use crate::raft::types::{NodeId, Raft, TypeConfig};

/// The gRPC `RaftService` backed by a local openraft node and this node's pictures.
#[derive(Clone)]
pub struct RaftGrpc {
    raft: Raft,
    pictures: Arc<PictureStore>,
}

impl RaftGrpc {
    pub fn new(raft: Raft, pictures: Arc<PictureStore>) -> RaftGrpc {
        RaftGrpc { raft, pictures }
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
pub fn server(raft: Raft, pictures: Arc<PictureStore>) -> RaftServiceServer<RaftGrpc> {
    RaftServiceServer::new(RaftGrpc::new(raft, pictures))
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

    async fn put_pictures(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.on_pictures::<PutPictures, _>("put_pictures", request, crate::pictures::serve_put).await
    }

    async fn get_pictures(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.on_pictures::<GetPictures, _>("get_pictures", request, crate::pictures::serve_get).await
    }
}
