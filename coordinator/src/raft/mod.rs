//! The coordinator's Raft: types, sled log store, state machine store, gRPC transport.
pub mod types;
pub mod log_store;
pub mod network;
pub mod service;

/// The leader as `m` knows it. A leader removed from the membership steps
/// down but keeps its vote, so openraft still names it: not a leader then.
pub fn known_leader(m: &openraft::RaftMetrics<u64, openraft::BasicNode>) -> Option<u64> {
    m.current_leader.filter(|l| *l != m.id || m.state == openraft::ServerState::Leader)
}
