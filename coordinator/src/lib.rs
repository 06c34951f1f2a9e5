//! The Panoptes coordinator: a Raft-replicated state machine (openraft + sled)
//! holding jobs, shards, leases and results, and the gRPC services in front of it.
pub mod crash;
pub mod picture_copies;
pub mod pictures;
pub mod raft;
pub mod retention;
pub mod scheduling;
#[cfg(test)]
mod sequences;
pub mod state;
pub mod store;

pub use panoptes_common::now_ms;
pub mod api;
pub mod auth;
pub mod conn_limit;
pub mod events;
pub mod handle;
pub mod leader;
pub mod metrics;
pub mod node;
pub mod probes;
pub mod status;
pub mod worker_api;
