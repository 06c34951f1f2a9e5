//! The coordinator's Raft: types, sled log store, state machine store, gRPC transport.
pub mod types;
pub mod log_store;
pub mod network;
pub mod service;
