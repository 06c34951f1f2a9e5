//! Events: does a dead event sink slow analysis? (issue 18: "a dead webhook
//! endpoint does not slow the frame rate"). The same job twice on a
//! 1-coordinator + 1-worker cluster: the sample video with `objects`, a
//! zone and alert rules that fire often (so alerts and track events keep
//! coming): first with no `[events]` sink (the baseline), then with a
//! webhook where nothing listens, whose deliveries fail and back off for the
//! whole job. The ratio is frames/s with the dead sink ÷ without; both runs
//! track and evaluate rules alike, so only the sink differs.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use super::{json_line, output, wait_for_workers, worker_args, Bins, Row};
use crate::{load::free_port, root, spawn};

const ZONE: &str = "right=0.5,0,1,0,1,1,0.5,1";
const RULES: [&str; 3] = ["someone: count(person) >= 1", "empty: no object for 200ms", "arrive: person enters right"];

/// What one run gave.
struct Run {
    fps: f64,
    frames: u64,
    alerts: u64,
    track_events: u64,
}

pub(super) fn dead_sink(step: u32, bins: &Bins, models_dir: &Path, work: &Path) -> Vec<Row> {
    let section = "Events";
    let clip = match crate::sample(PathBuf::from("target/panoptes-sample/sample.mp4")).map(|_| root().join("target/panoptes-sample/sample.mp4")) {
        Ok(c) => c,
        Err(e) => return vec![Row::not_measured(section, "a dead webhook", &e)],
    };
    let row = format!("sample video, objects, frame step {step}, 3 rules and a zone: 1 coordinator + 1 worker, a webhook where nothing listens");
    let base = match run_job(bins, models_dir, work, &clip, step, false) {
        Ok(r) => r,
        Err(e) => return vec![Row::not_measured(section, row, &e)],
    };
    match run_job(bins, models_dir, work, &clip, step, true) {
        Ok(dead) => vec![Row::new(
            section,
            row,
            format!("{:.2} frames/s ({} frames; {} alerts and {} track events recorded, none deliverable)", dead.fps, dead.frames, dead.alerts, dead.track_events),
        )
        .baseline(format!("{:.2} frames/s (no event sink; {} alerts, {} track events)", base.fps, base.alerts, base.track_events), dead.fps / base.fps)
        .goal("≥ 0.95")],
        Err(e) => vec![Row::not_measured(section, row, &e)],
    }
}

fn run_job(bins: &Bins, models_dir: &Path, work: &Path, clip: &Path, step: u32, dead_sink: bool) -> Result<Run> {
    let dir = work.join(if dead_sink { "events-dead-webhook" } else { "events-none" });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("cluster.toml");
    let mut text = String::from("[sources]\nallow_networks = [\"127.0.0.1\"]\n");
    if dead_sink {
        let secret = dir.join("webhook.secret");
        std::fs::write(&secret, "bench-webhook-secret\n")?;
        text += &format!("[events]\nwebhooks = [\"http://127.0.0.1:{}/hook\"]\nwebhook_secret_file = \"{}\"\n", free_port(), secret.display());
    }
    std::fs::write(&config, text)?;
    println!("==> events: objects on the sample video, {}", if dead_sink { "a dead webhook" } else { "no event sink" });
    let args: Vec<String> = ["coordinator", "--id", "1", "--listen", "127.0.0.1:0", "--data-dir", &dir.join("c1").display().to_string(), "--config", &config.display().to_string()]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let (coord, line) = spawn("coordinator", &bins.panoptes, &args, &dir.join("coordinator.log"))?;
    let addr = line.rsplit(' ').next().unwrap_or_default().to_string();
    let (worker, _) = spawn("w1", &bins.panoptes, &worker_args("w1", &addr, models_dir, "objects", &dir), &dir.join("w1.log"))?;
    wait_for_workers(&bins.panoptes, &addr, 1)?;
    let mut cmd = Command::new(&bins.panoptes);
    cmd.args(["submit", &clip.display().to_string(), "--models", "objects", "--frame-step", &step.to_string(), "--no-frames", "--zone", ZONE]);
    for r in RULES {
        cmd.args(["--rule", r]);
    }
    cmd.args(["--wait", "--json", "--coordinator", &addr]);
    let status = json_line(&output(&mut cmd, "panoptes submit --wait", Duration::from_secs(1800))?, "submit")?;
    if status["state"] != "completed" {
        bail!("the job did not complete: {status}; logs in {}", dir.display());
    }
    let job = status["job_id"].as_str().unwrap_or_default().to_string();
    let m = json_line(&output(Command::new(&bins.panoptes).args(["metrics", &job, "--json", "--coordinator", &addr]), "panoptes metrics", Duration::from_secs(30))?, "metrics")?;
    let frames = status["frames_done"].as_u64().unwrap_or(0);
    let secs = m["wall_time_s"].as_f64().unwrap_or(0.0) - m["queue_wait_s"].as_f64().unwrap_or(0.0);
    if secs <= 0.0 || frames == 0 {
        bail!("the job reported no usable timing: {m}");
    }
    let st = json_line(&output(Command::new(&bins.panoptes).args(["status", &job, "--json", "--coordinator", &addr]), "panoptes status", Duration::from_secs(30))?, "status")?;
    let run = Run { fps: frames as f64 / secs, frames, alerts: st["alerts"].as_u64().unwrap_or(0), track_events: st["track_events"].as_u64().unwrap_or(0) };
    println!("    {:.2} frames/s, {} alerts, {} track events", run.fps, run.alerts, run.track_events);
    drop(worker);
    drop(coord);
    Ok(run)
}
