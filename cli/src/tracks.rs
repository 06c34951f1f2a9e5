//! `panoptes tracks JOB`: the job's tracked objects (issue 18, part 1),
//! computed here from its committed detections, read in frame order, by
//! the tracker in `panoptes_common::tracking`. The same results give the
//! same tracks, whether the job ran as one shard or was split across
//! workers.
use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use panoptes_common::tracking::{detections_of, Track, Tracker, TrackerConfig};
use panoptes_client::pb;
use serde_json::Value;

use super::{connect, explain, ClientOpts};

#[derive(Args)]
pub struct TracksArgs {
    /// Job id, e.g. job-3.
    job: String,
    /// The detector whose boxes are tracked.
    #[arg(long, default_value = "objects")]
    model: String,
    /// The least box overlap (intersection over union, 0-1) for a detection to continue a track.
    #[arg(long, default_value_t = 0.3)]
    min_iou: f64,
    /// A track unseen for longer than this (stream time: 500ms, 2s, 1m) ends; seen again, it is a new track.
    #[arg(long, default_value = "1s")]
    max_gap: String,
    /// One JSON object per track: {"track_id","label","first_frame","last_frame","first_time","last_time","best_score","frames","path":[[frame,[x1,y1,x2,y2]],...]}.
    #[arg(long)]
    json: bool,
    /// While the job runs (a live stream), print each track as it ends; the
    /// tracks still open are printed when the job ends.
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    client: ClientOpts,
}

pub async fn tracks(a: TracksArgs) -> Result<ExitCode> {
    if !(0.0..=1.0).contains(&a.min_iou) || a.min_iou == 0.0 {
        bail!("--min-iou {} is not above 0 and at most 1 (e.g. 0.3)", a.min_iou);
    }
    let max_gap_ms = panoptes_common::parse_interval_ms(&a.max_gap).map_err(|e| anyhow::anyhow!("--max-gap: {e}"))?;
    let client = connect(&a.client)?;
    let req = pb::ResultsRequest { job_id: a.job.clone(), model: a.model.clone(), follow: a.follow, ..Default::default() };
    let mut stream = client.stream_results(req).await.map_err(|s| explain(s, &client))?;
    let mut tracker = Tracker::new(TrackerConfig { min_iou: a.min_iou, max_gap_s: max_gap_ms as f64 / 1000.0 });
    let mut frames = 0u64;
    let mut printed = 0usize;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(r) = stream.message().await.map_err(|s| explain(s, &client))? {
        let results: Value = serde_json::from_str(&r.results_json).context("coordinator sent invalid results JSON")?;
        tracker.update(r.frame, r.timestamp, &detections_of(&results)).map_err(anyhow::Error::msg)?;
        frames += 1;
        if a.follow {
            for t in tracker.take_ended() {
                print_track(&mut out, &t, a.json)?;
                printed += 1;
            }
            out.flush()?;
        }
    }
    let rest = if a.follow {
        let mut rest = tracker.take_ended();
        rest.extend(tracker.finish());
        rest
    } else {
        tracker.finish()
    };
    for t in &rest {
        print_track(&mut out, t, a.json)?;
        printed += 1;
    }
    if printed == 0 && !a.json {
        writeln!(out, "no tracks: no '{}' detections in {frames} analysed frame(s) of {}", a.model, a.job)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn print_track(out: &mut impl Write, t: &Track, json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", t.to_json())?;
    } else {
        writeln!(
            out,
            "track {:>4}  {:<14} frames {}–{} ({:.2}–{:.2} s), seen in {} frame(s), best score {:.2}",
            t.id,
            t.label,
            t.first_frame,
            t.last_frame,
            t.first_time,
            t.last_time,
            t.path.len(),
            t.best_score
        )?;
    }
    Ok(())
}
