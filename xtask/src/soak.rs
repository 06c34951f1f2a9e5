//! `cargo xtask soak [--minutes M] [--models LIST]`: one long live RTMP push
//! (the live benchmark of `bench/live.rs`, [`bench::live_measure`], stretched to
//! minutes) to see whether the worker's memory and the latency hold steady.
//!
//! While the push runs, the worker's VmRSS is read from /proc every
//! [`SAMPLE_EVERY`] and a progress line printed every [`PROGRESS_EVERY`];
//! at the end: RSS at start / end / min / max / median, latency percentiles,
//! frames analysed and dropped, and the end/start RSS ratio.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::bench::{self, LiveTick};
use crate::root;

const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const PROGRESS_EVERY: u64 = 6; // samples, i.e. 30 s
/// The "start" sample is the first at least this far into the push: the
/// stream flows, the decoder and the models have made their first allocations.
const START_AFTER: Duration = Duration::from_secs(10);

pub fn run(minutes: u64, models: &str, models_dir: PathBuf, json_out: bool, build: bool) -> Result<()> {
    // With --json, stdout carries only the final object; the rest goes to stderr.
    let say = |s: String| if json_out { eprintln!("{s}") } else { println!("{s}") };
    let seconds = minutes * 60;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let load_before = bench::loadavg();
    say(format!("==> cargo xtask soak: {minutes} min live RTMP push (640x480, 25 fps), models {models}; {cores} cores, load average {load_before}"));
    if build {
        say("==> building (debug profile): panoptes".into());
        bench::cargo_build(bench::WORKSPACE_BUILD)?;
    }
    let panoptes = root().join("target/debug/panoptes");
    if !panoptes.exists() {
        anyhow::bail!("{} is missing: run `cargo build -p panoptes` first (or pass --build)", panoptes.display());
    }
    let built = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC", "-r"]).arg(&panoptes).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    say(format!("    using {} (built {built})", panoptes.display()));
    let work = root().join("target/panoptes-soak");
    std::fs::create_dir_all(&work)?;
    say(format!("    logs in {}", work.join(format!("live-{}", models.replace(',', "-"))).display()));

    // (seconds into the push, VmRSS KiB), and the worker's VmHWM (peak) so far.
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut hwm = 0u64;
    let mut ticks = 0u64;
    let mut monitor = |t: &LiveTick| {
        ticks += 1;
        let mem = bench::proc_memory(t.worker_pid);
        if let Some((rss, peak)) = mem {
            samples.push((t.elapsed.as_secs_f64(), rss));
            hwm = hwm.max(peak);
        }
        if ticks.is_multiple_of(PROGRESS_EVERY) {
            let done = frames_done(t.panoptes, t.addr, t.job).map_or("?".to_string(), |n| n.to_string());
            let rss = mem.map_or("?".to_string(), |(r, _)| format!("{:.1}", mib(r)));
            say(format!("    [{:>4.0} s / {seconds} s] worker RSS {rss} MiB, frames_done {done}", t.elapsed.as_secs_f64()));
        }
    };
    let started = Instant::now();
    let r = bench::live_measure(&panoptes, &models_dir, &work, models, seconds, Some((SAMPLE_EVERY, &mut monitor)))?;
    let wall = started.elapsed().as_secs_f64();
    anyhow::ensure!(!samples.is_empty(), "no sample of the worker's /proc status was taken");

    let start = samples.iter().find(|(t, _)| *t >= START_AFTER.as_secs_f64()).unwrap_or(&samples[0]);
    let end = *samples.last().unwrap();
    let mut sorted: Vec<u64> = samples.iter().map(|s| s.1).collect();
    sorted.sort_unstable();
    let (min, max, median) = (sorted[0], *sorted.last().unwrap(), sorted[sorted.len() / 2]);
    let ratio = end.1 as f64 / start.1 as f64;
    let load_after = bench::loadavg();

    if json_out {
        let v = json!({
            "command": format!("cargo xtask soak --minutes {minutes} --models {models}"),
            "minutes": minutes,
            "models": models,
            "push_s": seconds,
            "wall_s": (wall * 10.0).round() / 10.0,
            "cores": cores,
            "load_before": load_before,
            "load_after": load_after,
            "panoptes_built": built,
            "job_id": r.job,
            "rss_kib": {
                "start": start.1, "start_at_s": round1(start.0),
                "end": end.1, "end_at_s": round1(end.0),
                "min": min, "max": max, "median": median,
                "peak_hwm": hwm,
            },
            "rss_end_over_start": (ratio * 1000.0).round() / 1000.0,
            "rss_samples": samples.iter().map(|&(t, k)| json!([round1(t), k])).collect::<Vec<_>>(),
            "latency_ms": {"p50": r.p50, "p95": r.p95, "p99": r.p99},
            "frames_analysed": r.analysed,
            "frames_dropped": r.dropped,
        });
        println!("{v}");
    } else {
        println!("\ncargo xtask soak --minutes {minutes} --models {models}: job {}, {seconds} s push, {wall:.0} s in all; load average {load_before} at the start, {load_after} at the end", r.job);
        println!("worker RSS:     start {:.1} MiB (at {:.0} s), end {:.1} MiB (at {:.0} s)", mib(start.1), start.0, mib(end.1), end.0);
        println!("                min {:.1} MiB, max {:.1} MiB, median {:.1} MiB over {} samples every {} s; peak (VmHWM) {:.1} MiB", mib(min), mib(max), mib(median), samples.len(), SAMPLE_EVERY.as_secs(), mib(hwm));
        println!("latency:        p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms (frame arrival → committed result)", r.p50, r.p95, r.p99);
        println!("frames:         {} analysed, {} dropped", r.analysed, r.dropped);
        println!("RSS end/start = {ratio:.2}");
    }
    Ok(())
}

fn frames_done(panoptes: &Path, addr: &str, job: &str) -> Option<u64> {
    let out = bench::output(Command::new(panoptes).args(["status", job, "--json", "--coordinator", addr]), "status", Duration::from_secs(10)).ok()?;
    bench::json_line(&out, "status").ok()?["frames_done"].as_u64()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
