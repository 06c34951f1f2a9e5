//! `cargo xtask bench [--quick]`: every benchmark of issue 8 in one run, one
//! table (section, row, value, baseline, ratio, goal), printed and written to
//! the top of docs/BENCHMARKS.md with the date, core count and load.
//!
//! Each section runs real code side by side with its baseline in the same
//! run, so ratios hold on a loaded machine even when absolute figures move.
//! A section that cannot run (no Python, no sample video, …) becomes a row
//! saying why, and the others still run.
//!
//! - Decode + resize: `media/examples/decode_resize.rs` (the worker's
//!   `Decoder` + `Converter`, one thread) versus `ffmpeg -threads 1`.
//! - Inference: `worker/examples/model_latency.rs` (tract) versus
//!   `xtask/bench/ort_latency.py` (onnxruntime, one thread).
//! - End to end: a local cluster (target/debug/panoptes) on the sample video
//!   versus the sum of its stages measured by `worker/examples/stage_costs.rs`.
//! - Coordinator: `load.rs` (simulated workers against real coordinators).
//! - Memory: worker RSS sampled from /proc during the end-to-end runs.
//! - Events: a job's frame rate with a dead webhook against none (`events.rs`).
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{load, root, spawn, start_coordinator, Proc};

mod cluster;
mod coordinator;
mod events;
mod live;
mod procs;
mod stages;
pub(crate) use live::{live_measure, LiveTick};
pub(crate) use procs::{clock_ticks, proc_cpu_ticks, proc_memory, wait_for_workers};
use cluster::{end_to_end, versus_python};
use coordinator::coordinator;
use live::live;
use stages::{decode_resize, inference};


/// How much work each section does: `--quick` keeps the whole run within a
/// few minutes on a loaded 2-core machine; the full run is for the docs.
struct Plan {
    /// Frames of the generated 1280×720 clip.
    hd_frames: u32,
    /// Best of this many runs on each side.
    decode_runs: u32,
    model_iterations: u32,
    /// Frame step of the end-to-end jobs on the sample video (250 frames).
    e2e_step: u32,
    coord_workers: Vec<usize>,
    coord_seconds: u64,
    /// Seconds of the live RTMP push.
    live_seconds: u32,
    /// Frames of the clips run against the Python loop.
    python_frames: u32,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan { hd_frames: 250, decode_runs: 3, model_iterations: 10, e2e_step: 5, coord_workers: vec![16, 64], coord_seconds: 4, live_seconds: 10, python_frames: 60 }
        } else {
            Plan { hd_frames: 750, decode_runs: 5, model_iterations: 20, e2e_step: 1, coord_workers: vec![16, 64, 256], coord_seconds: 10, live_seconds: 30, python_frames: 250 }
        }
    }
}

/// One line of the table.
struct Row {
    section: &'static str,
    row: String,
    value: String,
    baseline: String,
    /// Ours relative to the baseline, higher is better (see [`NOTES`]).
    ratio: Option<f64>,
    goal: String,
}

impl Row {
    fn new(section: &'static str, row: impl Into<String>, value: impl Into<String>) -> Self {
        Row { section, row: row.into(), value: value.into(), baseline: "—".into(), ratio: None, goal: "—".into() }
    }
    fn baseline(mut self, b: impl Into<String>, ratio: f64) -> Self {
        self.baseline = b.into();
        self.ratio = Some(ratio);
        self
    }
    fn goal(mut self, g: impl Into<String>) -> Self {
        self.goal = g.into();
        self
    }
    fn not_measured(section: &'static str, row: impl Into<String>, why: &anyhow::Error) -> Self {
        Row::new(section, row, format!("not measured: {}", one_line(why)))
    }
    fn cells(&self) -> [String; 6] {
        let ratio = self.ratio.map_or("—".to_string(), |r| format!("{r:.2}"));
        [self.section.to_string(), self.row.clone(), self.value.clone(), self.baseline.clone(), ratio, self.goal.clone()]
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").lines().next().unwrap_or_default().chars().take(160).collect()
}

/// How to read the table; written under it in docs/BENCHMARKS.md.
const NOTES: &str = "\
How to read it: *ratio* is ours relative to the baseline with higher = better
(frames/s ÷ baseline frames/s; for times, baseline ms ÷ our ms). Decode +
resize: the worker's own `Decoder` + `Converter` (swscale `SWS_BILINEAR` to
RGB24 at the worker's target height, 720) on one thread
(`PANOPTES_DECODE_THREADS=1`, `media/examples/decode_resize.rs`) versus
`ffmpeg -threads 1 -filter_threads 1 -i CLIP -vf scale=W:H:flags=bilinear
-pix_fmt rgb24 -f null -`, best of several runs each; ffmpeg's time includes
its process start. Inference: one thread each, same ONNX file and input,
median. End to end: the sample video (`cargo xtask sample`: 250 frames
960×540, faces in the astronaut part), `objects,joy,colors`, `--no-frames`
(no stored pictures, so the cluster does exactly the measured stages);
analysed frames/s from the job's first lease to its completion. The limit
is 1000 ÷ (decode + resize + every model, ms per analysed frame, one
process, one thread, same frames; the better of a run before and one after
the single worker's). Each worker, and the limit's process, is pinned to its
own core (`taskset`) so that one worker is compared with one thread; the
coordinator is not pinned. 2 workers ÷ 1 worker is the scaling on this
machine's cores (2.0 is ideal with two idle cores; other builds share them).
Because the wall clock moves with whatever else runs, the CPU row compares
CPU time instead: the coordinator's and the worker's user + system time from
submit to completion per analysed frame, against the one process's over its
loop.
vs Python: `xtask/bench/python_loop.py`, the loop a user would write
instead (PyAV decoding, onnxruntime with the better of 1 and 2 intra-op
threads: on 2 cores its spinning pool threads made 2 slower than 1; numpy and
Pillow, the same ONNX files and contract; it matches the fixtures' expected
results), against `panoptes analyze` and a 1-coordinator + 1-worker cluster
(`worker.threads` = all cores) on the sample video scaled to 640×272 and
1280×720; frames/s from the first decode to the last result (Python,
`analyze`: model loading excluded) or from the first lease to completion
(cluster). The `colors` rows store a picture a second, as a cluster job does
by default.
Coordinator: simulated workers (in the bench process, on the same machine)
lease shards and report 8 frames per report as fast as they are
acknowledged; rows/s counts committed (frame, model) rows, latency is report
sent to commit acknowledged; 3-coordinator rows compare with 1 coordinator.
Live: one coordinator and one worker; `panoptes live`, then the FFmpeg CLI
pushes a generated 640×480 stream at 25 fps in real time (`-re`); latency is
each frame's arrival at the worker to its results' commit acknowledgement,
p50/p99 over the job (frames dropped when analysis lags are not in it),
with the default drop policy `latest`; the baseline is the target of issue
17, one frame's analysis (the job's inference time per analysed frame, all
models) + 50 ms, and the ratio is that ÷ p50.
Memory: the worker's VmHWM (peak) and median VmRSS while its job ran
(steady), from /proc.
Events: the sample video with `objects`, a zone and three alert rules
that keep firing, on 1 coordinator + 1 worker, with no `[events]` sink
(the baseline) and with a webhook where nothing listens (every delivery
fails and backs off for the whole job); frames/s from the first lease to
completion, the ratio dead ÷ none.";

pub fn run(quick: bool, models_dir: PathBuf, only: &[String]) -> Result<()> {
    const SECTIONS: [&str; 7] = ["decode", "inference", "python", "e2e", "coordinator", "live", "events"];
    if let Some(bad) = only.iter().find(|o| !SECTIONS.contains(&o.as_str())) {
        bail!("unknown section '{bad}': use {}", SECTIONS.join(", "));
    }
    let want = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let started = Instant::now();
    let plan = Plan::new(quick);
    let work = root().join("target/panoptes-bench");
    std::fs::create_dir_all(&work)?;
    let load_before = loadavg();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("==> cargo xtask bench{}: {cores} cores, load average {load_before}", if quick { " --quick" } else { "" });
    let bins = build()?;

    let mut rows = Vec::new();
    if want("decode") {
        rows.extend(decode_resize(&plan, &bins, &work));
    }
    if want("inference") {
        rows.extend(inference(&plan, &bins, &models_dir));
    }
    if want("python") {
        rows.extend(versus_python(&plan, &bins, &models_dir, &work));
    }
    let (e2e, memory) = if want("e2e") { end_to_end(&plan, &bins, &models_dir, &work, cores) } else { (Vec::new(), Vec::new()) };
    rows.extend(e2e);
    if want("coordinator") {
        rows.extend(coordinator(&plan));
    }
    if want("live") {
        rows.extend(live(&plan, &bins, &models_dir, &work));
    }
    if want("events") {
        rows.extend(events::dead_sink(plan.e2e_step, &bins, &models_dir, &work));
    }
    rows.extend(memory);

    let load_after = loadavg();
    let date = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let command = format!("cargo xtask bench{}", if quick { " --quick" } else { "" });
    let wall = started.elapsed().as_secs_f64();
    println!("\n{command}, {date}: {cores} cores, load average {load_before} at the start, {load_after} at the end; {:.0} s in all\n", wall);
    print!("{}", text_table(&rows));
    if !only.is_empty() {
        println!("\n(--only: docs/BENCHMARKS.md left as it is)");
        return Ok(());
    }
    let doc = root().join("docs/BENCHMARKS.md");
    write_doc(&doc, &command, &date, cores, &load_before, &load_after, wall, &rows)?;
    println!("\nwritten to {}", doc.display());
    Ok(())
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The binaries the bench runs (debug profile: our crates at opt-level 1,
/// every dependency at 3, as the project runs them).
struct Bins {
    panoptes: PathBuf,
    decode_resize: PathBuf,
    stage_costs: PathBuf,
    model_latency: PathBuf,
}

fn build() -> Result<Bins> {
    println!("==> building (debug profile): the workspace's binaries, tests and examples");
    cargo_build(WORKSPACE_BUILD)?;
    let d = root().join("target/debug");
    Ok(Bins {
        panoptes: d.join("panoptes"),
        decode_resize: d.join("examples/decode_resize"),
        stage_costs: d.join("examples/stage_costs"),
        model_latency: d.join("examples/model_latency"),
    })
}

/// What xtask builds: the whole workspace with its tests and examples, so
/// that features unify as in `cargo test --workspace` and nothing built for
/// the suite is rebuilt (`-p panoptes` alone selects fewer features of
/// tonic, rustls and others, and rebuilds them and the binary).
pub(crate) const WORKSPACE_BUILD: &[&str] = &["--workspace", "--bins", "--tests", "--examples"];

/// `cargo build --quiet ARGS` in the workspace (debug profile).
pub(crate) fn cargo_build(args: &[&str]) -> Result<()> {
    let st = Command::new("cargo").arg("build").arg("--quiet").args(args).current_dir(root()).status().context("run cargo build")?;
    if !st.success() {
        bail!("cargo build {} failed (see above)", args.join(" "));
    }
    Ok(())
}

/// Run a command to completion, at most `limit`; its stdout. Fails with its stderr.
pub(crate) fn output(cmd: &mut Command, what: &str, limit: Duration) -> Result<Vec<u8>> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("cannot start {what}"))?;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = String::new();
        let _ = err.read_to_string(&mut b);
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        bail!("{what} failed ({status}): {}", stderr.trim());
    }
    Ok(stdout)
}

pub(crate) fn json_line(out: &[u8], what: &str) -> Result<Value> {
    crate::json_lines(out).pop().with_context(|| format!("{what} printed no JSON: {}", String::from_utf8_lossy(out)))
}

// ---------------------------------------------------------------- decode + resize

const HEADER: [&str; 6] = ["section", "row", "value", "baseline", "ratio", "goal"];

fn text_table(rows: &[Row]) -> String {
    let cells: Vec<[String; 6]> = rows.iter().map(Row::cells).collect();
    let mut width = HEADER.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: [&str; 6]| {
        let mut l = String::new();
        for (i, (s, w)) in c.iter().zip(width).enumerate() {
            let pad = w - s.chars().count();
            // Ratios right-aligned, everything else left.
            if i == 4 {
                l.push_str(&" ".repeat(pad));
                l.push_str(s);
            } else {
                l.push_str(s);
                l.push_str(&" ".repeat(pad));
            }
            l.push_str("  ");
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(HEADER);
    for c in &cells {
        out.push_str(&line([&c[0], &c[1], &c[2], &c[3], &c[4], &c[5]]));
    }
    out
}

const BEGIN: &str = "<!-- cargo xtask bench: generated section, replaced on every run -->";
const END: &str = "<!-- end of the generated section -->";

/// Replace the generated section at the top of `doc`, keeping everything else.
#[allow(clippy::too_many_arguments)]
fn write_doc(doc: &Path, command: &str, date: &str, cores: usize, load_before: &str, load_after: &str, wall: f64, rows: &[Row]) -> Result<()> {
    let mut md = format!("{BEGIN}\n## Latest run\n\n`{command}`, {date}: {cores} cores, load average {load_before} at the start, {load_after} at the end; {:.0} s in all.\n\n", wall);
    md.push_str("| section | row | value | baseline | ratio | goal |\n|---|---|---|---|---:|---|\n");
    for r in rows {
        let c = r.cells().map(|s| s.replace('|', "\\|"));
        md.push_str(&format!("| {} |\n", c.join(" | ")));
    }
    md.push('\n');
    md.push_str(NOTES);
    md.push_str(&format!("\n{END}\n"));
    let old = std::fs::read_to_string(doc).unwrap_or_else(|_| "# Benchmarks\n".into());
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => {
            let tail = &old[e + END.len()..];
            format!("{}{md}{}", &old[..b], tail.strip_prefix('\n').unwrap_or(tail))
        }
        _ => {
            // First run: after the title line.
            let (title, rest) = old.split_once('\n').unwrap_or((&old, ""));
            format!("{title}\n\n{md}\n{}", rest.trim_start())
        }
    };
    std::fs::write(doc, new).with_context(|| format!("cannot write {}", doc.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_section_is_replaced_and_the_rest_kept() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-doc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let doc = dir.join("B.md");
        std::fs::write(&doc, "# Benchmarks\n\nhand-written notes\n").unwrap();
        let rows = vec![Row::new("S", "r|1", "v").baseline("b", 0.5).goal("≥ 1")];
        write_doc(&doc, "cmd", "today", 2, "1 1 1", "2 2 2", 3.0, &rows).unwrap();
        write_doc(&doc, "cmd2", "tomorrow", 2, "1 1 1", "2 2 2", 3.0, &rows).unwrap();
        let s = std::fs::read_to_string(&doc).unwrap();
        assert!(s.starts_with("# Benchmarks\n\n<!--"));
        assert_eq!(s.matches(BEGIN).count(), 1);
        assert!(s.contains("`cmd2`, tomorrow") && !s.contains("`cmd`,"));
        assert!(s.contains("| S | r\\|1 | v | b | 0.50 | ≥ 1 |"));
        assert!(s.trim_end().ends_with("hand-written notes"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// `panoptes worker` arguments for a benchmark's worker `name` (data under `dir/name`).
fn worker_args(name: &str, addr: &str, models_dir: &Path, models: &str, dir: &Path) -> Vec<String> {
    let data = dir.join(name).display().to_string();
    ["worker", "--name", name, "--coordinator", addr, "--models-dir", &models_dir.display().to_string(), "--models", models, "--data-dir", &data]
        .map(String::from)
        .to_vec()
}
