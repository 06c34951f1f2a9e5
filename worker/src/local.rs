//! `panoptes analyze`: the worker's own shard pipeline (the same supervisor,
//! decoder, resizer, model actors and reporter) run on one machine with no
//! cluster. The whole video is one shard whose reports go to a local channel
//! instead of the coordinators.
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use panoptes_proto::worker::shard_assignment::Kind;
use panoptes_proto::worker::{FileShard, FrameReport, KeyframeSeek, ShardAssignment};
use ractor::Actor;

use crate::analysis::Analysis;
use crate::pipeline::supervisor::ShardSupervisor;
use crate::pipeline::{ReportSink, ShardJob, ShardKind, ShardSettings};

pub struct LocalRun {
    pub source: String,
    /// Analyses in output order, with their names.
    pub analyses: Vec<(String, Arc<dyn Analysis>)>,
    pub frame_step: u64,
    pub target_height: u32,
    /// The worker's shard settings (`WorkerConfig::shard`); the probe,
    /// which reads the whole source, stops at their `stall_limit`
    /// (`sources.probe_timeout_s`): a source that trickles bytes fails.
    pub settings: ShardSettings,
    /// Frames analysed at once (0: one per core).
    pub threads: u32,
}

/// Analyse `run.source`, calling `on_frame` for every analysed frame in
/// order, with one output per analysis in the given order.
pub async fn analyze(run: LocalRun, mut on_frame: impl FnMut(FrameReport) -> Result<()>) -> Result<()> {
    panoptes_media::init();
    let source = panoptes_media::normalize_source(&run.source)?;
    let src = source.clone();
    let limit = run.settings.stall_limit;
    let info = tokio::task::spawn_blocking(move || panoptes_media::probe_within(&src, &[], limit)).await??;
    if info.frames == 0 {
        bail!("'{source}' has no video frames to analyse");
    }
    let seek = info.keyframe_before(0);
    let assignment = ShardAssignment {
        job_id: "local".into(),
        shard: 0,
        epoch: 1,
        source: source.clone(),
        models: run.analyses.iter().map(|(n, _)| n.clone()).collect(),
        frame_step: run.frame_step.max(1),
        start_frame: 0,
        end_frame: info.frames,
        resume_frame: 0,
        target_height: run.target_height,
        // `analyze` prints results only: no pictures.
        frames_height: 0,
        frames_quality: 0,
        frames_every_ms: 0,
        kind: Some(Kind::File(FileShard { seek: seek.map(|(frame, pts)| KeyframeSeek { frame, pts }), pts0: info.pts0, fps: info.fps })),
    };
    let kind = ShardKind::of(&assignment).map_err(anyhow::Error::msg)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let job = ShardJob {
        worker: "local".into(),
        assignment,
        kind,
        analyses: run.analyses.iter().map(|(_, a)| a.clone()).collect(),
        sink: ReportSink::Local(tx),
        settings: run.settings.for_shard(false),
        compute: crate::pipeline::Compute::new(run.threads),
        lobby: Default::default(),
    };
    let (actor, handle) = Actor::spawn(None, ShardSupervisor, job).await.context("failed to start the pipeline")?;
    let mut done = false;
    while let Some(report) = rx.recv().await {
        if !report.error.is_empty() {
            actor.stop(None);
            bail!("{}", report.error);
        }
        for f in report.frames {
            on_frame(f)?;
        }
        if report.done {
            done = true;
            break;
        }
    }
    let _ = handle.await;
    if !done {
        bail!("the pipeline stopped before the end of '{source}'");
    }
    Ok(())
}
