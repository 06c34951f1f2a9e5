//! Raft type declarations, in one place.
use crate::state::command::{Request, Response};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The coordinator's Raft: replicated commands are [`Request`]s.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        // A file: snapshots are streamed from and to disk (state/snapfile.rs).
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Entry = openraft::Entry<TypeConfig>;
