//! `panoptes stats JOB --window 5s [--slide 1s]`: a job's results in
//! event-time windows (issue 18, part 3), computed here from its committed
//! results by `panoptes_common::windows` (the window semantics are there).
use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use panoptes_client::pb;
use panoptes_common::windows::{Window, WindowSpec, Windower};
use serde_json::Value;

use super::{connect, explain, ClientOpts};

#[derive(Args)]
pub struct StatsArgs {
    /// Job id, e.g. job-3.
    job: String,
    /// The window length, in stream time: 5s, 1m, 1h, 500ms.
    #[arg(long, default_value = "5s")]
    window: String,
    /// Start a window every this much stream time (sliding windows, each
    /// frame in several); by default the window length (tumbling windows).
    #[arg(long)]
    slide: Option<String>,
    /// Only this model's results (by default every model of the job).
    #[arg(long)]
    model: Option<String>,
    /// While the job runs (a live stream), print each window as it closes,
    /// and the rest when the job ends.
    #[arg(long)]
    follow: bool,
    /// One JSON object per window: {"start","end","late","frames",
    /// "objects":{LABEL:{"detections","max_in_frame","tracks"}},
    /// "faces":{"faces","max_in_frame","emotions","genders"},
    /// "dominant_color":{"color","frames"}|null}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientOpts,
}

pub async fn stats(a: StatsArgs) -> Result<ExitCode> {
    let interval = |flag: &str, v: &str| panoptes_common::parse_interval_ms(v).map_err(|e| anyhow::anyhow!("{flag} {v}: {e}"));
    let size = interval("--window", &a.window)?;
    let slide = a.slide.as_deref().map(|s| interval("--slide", s)).transpose()?;
    let spec = WindowSpec::new(size, slide).map_err(|e| anyhow::anyhow!("--window {} --slide {}: {e}", a.window, a.slide.as_deref().unwrap_or(&a.window)))?;
    let client = connect(&a.client)?;
    let job = client.status(pb::JobRef { job_id: a.job.clone() }).await.map_err(|s| explain(s, &client))?;
    if job.keep_s > 0 && size > job.keep_s.saturating_mul(1000) {
        bail!(
            "--window {} is longer than {} keeps its results ({} s of stream time, submit --keep): no window would be whole; use at most {}s",
            a.window,
            a.job,
            job.keep_s,
            job.keep_s
        );
    }
    let req = pb::ResultsRequest { job_id: a.job.clone(), model: a.model.clone().unwrap_or_default(), follow: a.follow, ..Default::default() };
    let mut stream = client.stream_results(req).await.map_err(|s| explain(s, &client))?;
    let mut windows = Windower::new(spec);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0usize;
    while let Some(r) = stream.message().await.map_err(|s| explain(s, &client))? {
        let results: Value = serde_json::from_str(&r.results_json).context("coordinator sent invalid results JSON")?;
        windows.add(r.frame, r.timestamp, &r.model, &results);
        if a.follow {
            for w in windows.take_closed() {
                print_window(&mut out, &w, a.json)?;
                printed += 1;
            }
            out.flush()?;
        }
    }
    let untracked: Vec<String> = windows.untracked().into_iter().map(str::to_string).collect();
    for w in &windows.finish() {
        print_window(&mut out, w, a.json)?;
        printed += 1;
    }
    if printed == 0 && !a.json {
        writeln!(out, "no windows: {} has no analysed frames yet", a.job)?;
    }
    out.flush()?;
    if !untracked.is_empty() {
        eprintln!(
            "note: some {} detections carried no track id (not tracked yet), so their windows give no track counts; \
             run stats again once `panoptes status` says alerts_up_to_date",
            untracked.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_window(out: &mut impl Write, w: &Window, json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", w.to_json())?;
        return Ok(());
    }
    let mut line = format!("{:>9.2}–{:<9.2}s  {:>5} frame(s)", w.start_ms as f64 / 1000.0, w.end_ms as f64 / 1000.0, w.frames);
    for (label, s) in &w.objects {
        let tracks = s.tracks.as_ref().map(|t| format!(", {} track(s)", t.len())).unwrap_or_default();
        line.push_str(&format!("  {label} {} (max {}/frame{tracks})", s.detections, s.max_in_frame));
    }
    if w.faces.faces > 0 {
        let emotions: Vec<String> = w.faces.emotions.iter().map(|(e, n)| format!("{e} {n}")).collect();
        line.push_str(&format!("  faces {} ({})", w.faces.faces, emotions.join(", ")));
    }
    if let Some((c, n)) = w.dominant_color() {
        line.push_str(&format!("  colour {c} ({n} frame(s))"));
    }
    if w.late {
        line.push_str("  [late: frames that arrived after the window closed]");
    }
    writeln!(out, "{line}")?;
    Ok(())
}
