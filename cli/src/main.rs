//! `panoptes`: run a coordinator or a worker, submit videos and read results.
use std::process::ExitCode;

use clap::Parser;

mod admin;
mod alerts;
mod analyze;
mod args;
mod config;
mod connect;
mod jobs;
mod node;
mod render;
mod stats;
mod tracks;

use admin::*;
use analyze::analyze;
use args::{Cli, ClusterCmd, Cmd, WorkerArgs, WorkerCmd};
use jobs::{cancel, frame, live, metrics, models, prune, results, status, submit, videos, zone};
use node::{run_coordinator, run_worker};

// What admin.rs (`use super::*`) and tracks.rs (`use super::{…}`) take from here.
use anyhow::{anyhow, Context, Result};
use args::{ClientOpts, ListArgs};
use clap::Args;
use connect::{connect, explain};
use panoptes_client::pb;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Coordinator(a) => run_coordinator(a).await.map(|_| ExitCode::SUCCESS),
        Cmd::Worker(WorkerArgs { cmd: Some(WorkerCmd::Drain(d)), .. }) => drain(d).await,
        Cmd::Worker(a) => run_worker(a).await.map(|_| ExitCode::SUCCESS),
        Cmd::Analyze(a) => analyze(a).await,
        Cmd::Token(a) => token(a),
        Cmd::Certs(a) => certs(a),
        Cmd::Submit(a) => submit(a).await,
        Cmd::Status(a) => status(a).await,
        Cmd::Results(a) => results(a).await,
        Cmd::Tracks(a) => tracks::tracks(a).await,
        Cmd::Stats(a) => stats::stats(a).await,
        Cmd::Alerts(a) => alerts::alerts(a).await,
        Cmd::Live(a) => live(a).await,
        Cmd::Cancel(a) => cancel(a).await,
        Cmd::Zone(a) => zone(a).await,
        Cmd::Metrics(a) => metrics(a).await,
        Cmd::Frame(a) => frame(a).await,
        Cmd::Prune(a) => prune(a).await,
        Cmd::Videos(a) => videos(a).await,
        Cmd::Models(a) => models(a).await,
        Cmd::Cluster { cmd: ClusterCmd::Status(a) } => cluster_status(a).await,
        Cmd::Cluster { cmd: ClusterCmd::AddMember(a) } => add_member(a).await,
        Cmd::Cluster { cmd: ClusterCmd::RemoveMember(a) } => remove_member(a).await,
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
