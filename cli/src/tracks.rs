//! `panoptes tracks JOB`: the job's tracked objects (issue 18, part 1).
//! The leader tracks each detector's detections as they commit
//! (`panoptes_common::tracking`) and every detection of the results carries
//! its `track_id` (and the `zones` it stands in); this gathers them, read in
//! frame order, into tracks with their box paths. The same results give the
//! same tracks whether the job ran as one shard, was split across workers
//! or was a live stream resumed elsewhere.
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use panoptes_client::pb;
use panoptes_common::tracking::{TrackBook, TrackRecord, TrackerConfig};
use serde_json::Value;

use super::{connect, explain, ClientOpts};

#[derive(Args)]
pub struct TracksArgs {
    /// Job id, e.g. job-3.
    job: String,
    /// The detector whose tracks to show.
    #[arg(long, default_value = "objects")]
    model: String,
    /// One JSON object per track: {"track_id","label","first_frame","last_frame","first_time","last_time","best_score","frames","zones","path":[[frame,[x,y,w,h]],...]}.
    #[arg(long)]
    json: bool,
    /// While the job runs (a live stream), print each track as it ends
    /// (unseen for 1 s of stream time); the tracks still open are printed
    /// when the job ends.
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    client: ClientOpts,
}

pub async fn tracks(a: TracksArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let req = pb::ResultsRequest { job_id: a.job.clone(), model: a.model.clone(), follow: a.follow, ..Default::default() };
    let mut stream = client.stream_results(req).await.map_err(|s| explain(s, &client))?;
    let mut book = TrackBook::default();
    let max_gap_s = TrackerConfig::default().max_gap_s;
    let mut frames = 0u64;
    let mut printed = 0usize;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(r) = stream.message().await.map_err(|s| explain(s, &client))? {
        let results: Value = serde_json::from_str(&r.results_json).context("coordinator sent invalid results JSON")?;
        book.add(r.frame, r.timestamp, &results);
        frames += 1;
        if a.follow {
            for t in book.take_ended(max_gap_s) {
                print_track(&mut out, &t, a.json)?;
                printed += 1;
            }
            out.flush()?;
        }
    }
    for t in &book.finish() {
        print_track(&mut out, t, a.json)?;
        printed += 1;
    }
    if printed == 0 && !a.json {
        writeln!(out, "no tracks: no tracked '{}' detections in {frames} analysed frame(s) of {}", a.model, a.job)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn print_track(out: &mut impl Write, t: &TrackRecord, json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", t.to_json())?;
    } else {
        writeln!(
            out,
            "track {:>4}  {:<14} frames {}–{} ({:.2}–{:.2} s), seen in {} frame(s), best score {:.2}{}",
            t.id,
            t.label,
            t.first_frame,
            t.last_frame,
            t.first_time,
            t.last_time,
            t.path.len(),
            t.best_score,
            if t.zones.is_empty() { String::new() } else { format!(", zones {}", t.zones.join(", ")) }
        )?;
    }
    Ok(())
}
