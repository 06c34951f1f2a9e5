//! The replicated state: jobs, shards, leases, workers and results.
pub mod apply;
pub mod command;
pub mod model;
pub mod outcome;
