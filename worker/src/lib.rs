//! The Panoptes worker: decoding, resizing and per-model analysis of leased
//! shards, in ractor actors under supervisors.
pub mod analysis;
pub mod ingest_gate;
pub mod lobby;
pub mod local;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod pipeline;
#[cfg(test)]
mod supervision_tests;
