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
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{load, root, spawn, start_coordinator, Proc};

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
(steady), from /proc.";

pub fn run(quick: bool, models_dir: PathBuf, only: &[String]) -> Result<()> {
    const SECTIONS: [&str; 6] = ["decode", "inference", "python", "e2e", "coordinator", "live"];
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

fn decode_resize(plan: &Plan, bins: &Bins, work: &Path) -> Vec<Row> {
    println!("==> decode + resize: 1280x720 H.264, {} frames, one thread, best of {}", plan.hd_frames, plan.decode_runs);
    let label = format!("1280×720 H.264, {} frames, 1 thread", plan.hd_frames);
    match decode_resize_measure(plan, bins, work) {
        Ok((ours, ffmpeg, size)) => {
            println!("    ours {ours:.1} frames/s, ffmpeg {ffmpeg:.1} frames/s");
            vec![Row::new("Decode + resize", format!("{label} → RGB24 {}×{}", size.0, size.1), format!("{ours:.0} frames/s"))
                .baseline(format!("{ffmpeg:.0} frames/s (ffmpeg -threads 1)"), ours / ffmpeg)
                .goal("≥ 0.95")]
        }
        Err(e) => vec![Row::not_measured("Decode + resize", label, &e)],
    }
}

fn decode_resize_measure(plan: &Plan, bins: &Bins, work: &Path) -> Result<(f64, f64, (u64, u64))> {
    let clip = hd_clip(work, plan.hd_frames)?;
    let clip_s = clip.display().to_string();
    let limit = Duration::from_secs(300);
    let (mut ours, mut ffmpeg, mut size) = (0.0f64, 0.0f64, (0, 0));
    for _ in 0..plan.decode_runs {
        // Ours: the example's own clock, from opening the decoder to the last frame.
        let out = output(Command::new(&bins.decode_resize).arg(&clip).arg("720").env("PANOPTES_DECODE_THREADS", "1"), "decode_resize", limit)?;
        let v = json_line(&out, "decode_resize")?;
        if v["frames"].as_u64() != Some(plan.hd_frames as u64) {
            bail!("decode_resize decoded {} frames of {}", v["frames"], plan.hd_frames);
        }
        ours = ours.max(v["frames_per_s"].as_f64().unwrap_or(0.0));
        size = (v["width"].as_u64().unwrap_or(0), v["height"].as_u64().unwrap_or(0));
        // ffmpeg: wall clock of the whole process, to the same size and format.
        let t = Instant::now();
        output(
            Command::new("ffmpeg")
                .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-threads", "1", "-i", &clip_s, "-filter_threads", "1"])
                .args(["-vf", &format!("scale={}:{}:flags=bilinear", size.0, size.1), "-pix_fmt", "rgb24", "-f", "null", "-"]),
            "ffmpeg",
            limit,
        )?;
        ffmpeg = ffmpeg.max(plan.hd_frames as f64 / t.elapsed().as_secs_f64());
    }
    Ok((ours, ffmpeg, size))
}

/// A generated 1280×720 25 fps H.264 clip (moving test pattern with noise, so
/// it does not compress to nothing), made once.
fn hd_clip(dir: &Path, frames: u32) -> Result<PathBuf> {
    let out = dir.join(format!("hd720-{frames}.mp4"));
    if out.exists() {
        return Ok(out);
    }
    let tmp = dir.join(format!("hd720-{frames}.tmp.mp4"));
    output(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-vf", "noise=alls=12:allf=t"])
            .args(["-frames:v", &frames.to_string(), "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p"])
            .arg(&tmp),
        "ffmpeg (making the 1280x720 clip)",
        Duration::from_secs(600),
    )?;
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

// ---------------------------------------------------------------- inference

fn inference(plan: &Plan, bins: &Bins, models_dir: &Path) -> Vec<Row> {
    println!("==> inference: tract vs onnxruntime, one thread, median of {}", plan.model_iterations);
    let tract = match output(
        Command::new(&bins.model_latency).arg(models_dir).arg(plan.model_iterations.to_string()).current_dir(root()),
        "model_latency",
        Duration::from_secs(900),
    ) {
        Ok(out) => crate::json_lines(&out),
        Err(e) => return vec![Row::not_measured("Inference", "tract vs onnxruntime", &e)],
    };
    let ort = crate::python_with_onnxruntime().and_then(|py| {
        output(
            Command::new(py).arg(root().join("xtask/bench/ort_latency.py")).arg(models_dir).arg(plan.model_iterations.to_string()),
            "ort_latency.py",
            Duration::from_secs(600),
        )
        .map(|o| crate::json_lines(&o))
    });
    let mut rows = Vec::new();
    for t in tract.iter().filter(|t| t["kind"] == "model") {
        let name = t["model"].as_str().unwrap_or("?");
        let shape = t["shape"].as_array().map(|a| a.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("×")).unwrap_or_default();
        let tm = t["tract_ms"].as_f64().unwrap_or(f64::NAN);
        let row = Row::new("Inference", format!("{name} {shape}"), format!("{tm:.2} ms (tract)"));
        rows.push(match &ort {
            Ok(ort) => match ort.iter().find(|o| o["model"] == name).and_then(|o| o["ort_ms"].as_f64()) {
                Some(om) => row.baseline(format!("{om:.2} ms (onnxruntime)"), om / tm),
                None => Row { baseline: "not measured: ort_latency.py has no such model".into(), ..row },
            },
            Err(e) => Row { baseline: format!("not measured: {}", one_line(e)), ..row },
        });
        println!("    {}: {}, {}", rows.last().unwrap().row, rows.last().unwrap().value, rows.last().unwrap().baseline);
    }
    rows
}

// ---------------------------------------------------------------- end to end + memory

/// One cluster run: the job's analysed frames/s and each worker's memory.
struct ClusterRun {
    frames: u64,
    fps: f64,
    /// Per worker: (peak KiB, steady KiB).
    rss: Vec<(u64, u64)>,
    /// CPU time of the coordinator and the workers, from submit to completion, per analysed frame.
    cpu_ms: Option<f64>,
    /// (frame, model) results that are `{"error": ...}` instead of an analysis.
    errors: u64,
}

impl ClusterRun {
    /// "N frames", and the errors if any: a frame whose analysis failed costs less.
    fn frames_text(&self) -> String {
        match self.errors {
            0 => format!("{} frames", self.frames),
            e => format!("{} frames, {e} failed analyses", self.frames),
        }
    }
}

fn end_to_end(plan: &Plan, bins: &Bins, models_dir: &Path, work: &Path, cores: usize) -> (Vec<Row>, Vec<Row>) {
    const ALL: &str = "objects,joy,colors";
    let (e2e, mem) = ("End to end", "Memory");
    let clip = match crate::sample(PathBuf::from("target/panoptes-sample/sample.mp4")).map(|_| root().join("target/panoptes-sample/sample.mp4")) {
        Ok(c) => c,
        Err(e) => return (vec![Row::not_measured(e2e, "cluster vs sum of stages", &e)], vec![Row::not_measured(mem, "worker RSS", &e)]),
    };
    let step = plan.e2e_step;
    let pin = Command::new("taskset").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    let on = format!("sample video, {ALL}, frame step {step}");
    let mut rows = Vec::new();

    // The limit, pinned like the single worker, is measured before and after
    // the single-worker run and the better of the two kept, so that a burst
    // of load during one of them does not make the cluster look better.
    let stage_costs = || -> Result<Value> {
        println!("==> end to end: sum of stages in one process, one thread ({on})");
        let mut cmd = if pin { Command::new("taskset") } else { Command::new(&bins.stage_costs) };
        if pin {
            cmd.arg("-c").arg("0").arg(&bins.stage_costs);
        }
        cmd.arg(models_dir).arg(&clip).arg(ALL).arg(step.to_string()).arg("720").env("PANOPTES_DECODE_THREADS", "1");
        let v = json_line(&output(&mut cmd, "stage_costs", Duration::from_secs(1200))?, "stage_costs")?;
        println!("    {:.1} ms per frame, {:.2} frames/s", v["total_ms"].as_f64().unwrap_or(f64::NAN), v["limit_fps"].as_f64().unwrap_or(f64::NAN));
        Ok(v)
    };
    let mut limits = vec![stage_costs()];
    let pinned = if pin { ", pinned to 1 core" } else { "" };
    let mut runs: Vec<(String, Result<ClusterRun>)> = Vec::new();
    for (models, workers) in [(ALL, 1usize), (ALL, 2), ("colors", 1), ("objects", 1)] {
        println!("==> end to end: 1 coordinator, {workers} worker(s), {models}, frame step {step}");
        let r = cluster_run(bins, models_dir, work, &clip, models, step, workers, pin.then_some(cores), false, None);
        match &r {
            Ok(r) => println!("    {} at {:.2} frames/s, {:.1} CPU ms/frame; worker RSS (peak, steady) KiB: {:?}", r.frames_text(), r.fps, r.cpu_ms.unwrap_or(f64::NAN), r.rss),
            Err(e) => println!("    failed: {e:#}"),
        }
        runs.push((format!("{models}/{workers}"), r));
        if runs.len() == 1 {
            limits.push(stage_costs());
        }
    }
    let total_ms = |v: &Value| v["total_ms"].as_f64().unwrap_or(f64::INFINITY);
    let best = limits.iter().filter_map(|l| l.as_ref().ok()).min_by(|a, b| total_ms(a).total_cmp(&total_ms(b)));
    let limit_cpu_ms = limits
        .iter()
        .filter_map(|l| l.as_ref().ok())
        .filter_map(|v| Some(v["cpu_ticks"].as_f64()? * 1000.0 / clock_ticks() / v["frames"].as_f64()?))
        .min_by(f64::total_cmp);
    let limit_fps = match best {
        Some(v) => {
            let ms = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            let mut parts = vec![format!("decode {:.1}", ms("decode_ms")), format!("resize {:.1}", ms("resize_ms"))];
            for (m, t) in v["models"].as_object().into_iter().flatten() {
                parts.push(format!("{m} {:.1}", t.as_f64().unwrap_or(f64::NAN)));
            }
            let fps = ms("limit_fps");
            let label = format!("sum-of-stages limit, 1 process, 1 thread{pinned}, best of {} ({on})", limits.len());
            rows.push(Row::new(e2e, label, format!("{fps:.2} frames/s = 1000 ÷ {:.1} ms ({})", ms("total_ms"), parts.join(" + "))));
            Some(fps)
        }
        None => {
            let e = limits.into_iter().find_map(Result::err).unwrap_or_else(|| anyhow::anyhow!("no measurement"));
            rows.push(Row::not_measured(e2e, "sum-of-stages limit", &e));
            None
        }
    };
    let get = |k: &str| runs.iter().find(|(n, _)| n == k).map(|(_, r)| r).unwrap();
    match (get(&format!("{ALL}/1")), limit_fps) {
        (Ok(one), Some(limit)) => rows.push(
            Row::new(e2e, format!("cluster: 1 coordinator + 1 worker{pinned}"), format!("{:.2} frames/s ({})", one.fps, one.frames_text()))
                .baseline(format!("{limit:.2} frames/s (sum-of-stages limit)"), one.fps / limit)
                .goal("≥ 0.9"),
        ),
        (Ok(one), None) => rows.push(Row::new(e2e, format!("cluster: 1 coordinator + 1 worker{pinned}"), format!("{:.2} frames/s", one.fps))),
        (Err(e), _) => rows.push(Row::not_measured(e2e, "cluster: 1 coordinator + 1 worker", e)),
    }
    // The wall clock moves with whatever else runs on the machine; CPU time
    // much less: the cluster's CPU per frame against the one process's.
    if let (Ok(ClusterRun { cpu_ms: Some(cluster), .. }), Some(one)) = (get(&format!("{ALL}/1")), limit_cpu_ms) {
        rows.push(
            Row::new(e2e, "CPU per analysed frame: cluster (coordinator + 1 worker)", format!("{cluster:.1} ms"))
                .baseline(format!("{one:.1} ms (1 process, 1 thread)"), one / cluster)
                .goal("≥ 0.9"),
        );
    }
    let two_label = format!("cluster: 1 coordinator + 2 workers{}", if pin { ", 1 core each" } else { "" });
    match (get(&format!("{ALL}/2")), get(&format!("{ALL}/1"))) {
        (Ok(two), Ok(one)) => rows.push(
            Row::new(e2e, two_label, format!("{:.2} frames/s ({})", two.fps, two.frames_text()))
                .baseline(format!("{:.2} frames/s (1 worker)", one.fps), two.fps / one.fps)
                .goal(format!("{cores}.0 ideal")),
        ),
        (Ok(two), Err(_)) => rows.push(Row::new(e2e, two_label, format!("{:.2} frames/s", two.fps))),
        (Err(e), _) => rows.push(Row::not_measured(e2e, two_label, e)),
    }

    let mut memory = Vec::new();
    for models in ["colors", "objects", ALL] {
        let label = format!("worker RSS, models {models}");
        memory.push(match get(&format!("{models}/1")) {
            Ok(r) => match r.rss.first() {
                Some(&(peak, steady)) => Row::new(mem, label, format!("peak {:.0} MiB, steady {:.0} MiB", peak as f64 / 1024.0, steady as f64 / 1024.0)),
                None => Row::new(mem, label, "not measured: no sample of the worker's /proc status"),
            },
            Err(e) => Row::not_measured(mem, label, e),
        });
    }
    (rows, memory)
}

/// Start 1 coordinator and `workers` workers (each pinned to its own core
/// when `pin_cores` is given), wait until they are registered, run one job
/// on `clip` and measure it; stop everything.
#[allow(clippy::too_many_arguments)]
fn cluster_run(
    bins: &Bins,
    models_dir: &Path,
    work: &Path,
    clip: &Path,
    models: &str,
    step: u32,
    workers: usize,
    pin_cores: Option<usize>,
    pictures: bool,
    worker_config: Option<&Path>,
) -> Result<ClusterRun> {
    let dir = work.join(format!("e2e-{}-w{workers}", models.replace(',', "-")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let bin = bins.panoptes.display().to_string();
    let s = |v: &str| v.to_string();
    let (coord, addr) = start_coordinator(&bins.panoptes, &dir)?;
    let mut procs: Vec<Proc> = Vec::new();
    for i in 0..workers {
        let name = format!("w{}", i + 1);
        let mut args = vec![
            s("worker"),
            s("--name"),
            name.clone(),
            s("--coordinator"),
            addr.clone(),
            s("--models-dir"),
            models_dir.display().to_string(),
            s("--models"),
            s(models),
            s("--data-dir"),
            dir.join(&name).display().to_string(),
        ];
        if let Some(c) = worker_config {
            args.extend([s("--config"), c.display().to_string()]);
        }
        // taskset execs the worker, so the child's pid is the worker's.
        let prog = match pin_cores {
            Some(cores) => {
                args.splice(0..0, [s("-c"), (i % cores).to_string(), bin.clone()]);
                PathBuf::from("taskset")
            }
            None => bins.panoptes.clone(),
        };
        let (p, _) = spawn(&name, &prog, &args, &dir.join(format!("{name}.log")))?;
        procs.push(p);
    }
    wait_for_workers(&bins.panoptes, &addr, workers)?;
    let pids: Vec<u32> = procs.iter().map(Proc::pid).chain([coord.pid()]).collect();
    let cpu_before: Option<u64> = pids.iter().map(|&p| proc_cpu_ticks(p)).sum();

    // Sample every worker's memory while the job runs.
    let stop = Arc::new(AtomicBool::new(false));
    let samplers: Vec<_> = procs
        .iter()
        .map(|p| {
            let (pid, stop) = (p.pid(), stop.clone());
            std::thread::spawn(move || {
                let (mut peak, mut rss) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    if let Some((r, hwm)) = proc_memory(pid) {
                        rss.push(r);
                        peak = peak.max(hwm);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if let Some((_, hwm)) = proc_memory(pid) {
                    peak = peak.max(hwm);
                }
                rss.sort_unstable();
                rss.get(rss.len() / 2).map(|&steady| (peak, steady))
            })
        })
        .collect();
    let status = output(
        Command::new(&bins.panoptes)
            .args(["submit", &clip.display().to_string(), "--models", models, "--frame-step", &step.to_string(), "--wait", "--json"])
            .args(if pictures { &[][..] } else { &["--no-frames"][..] })
            .args(["--coordinator", &addr]),
        "panoptes submit --wait",
        Duration::from_secs(1800),
    );
    stop.store(true, Ordering::Relaxed);
    let rss: Vec<(u64, u64)> = samplers.into_iter().filter_map(|h| h.join().ok().flatten()).collect();
    let status = json_line(&status?, "submit")?;
    if status["state"] != "completed" {
        bail!("the job did not complete: {status}; logs in {}", dir.display());
    }
    let job = status["job_id"].as_str().unwrap_or_default();
    let m = json_line(&output(Command::new(&bins.panoptes).args(["metrics", job, "--json", "--coordinator", &addr]), "panoptes metrics", Duration::from_secs(30))?, "metrics")?;
    let frames = status["frames_done"].as_u64().unwrap_or(0);
    // From the first lease (the probe and the wait for a worker's tick are
    // not analysis) to completion.
    let secs = m["wall_time_s"].as_f64().unwrap_or(0.0) - m["queue_wait_s"].as_f64().unwrap_or(0.0);
    if secs <= 0.0 || frames == 0 {
        bail!("the job reported no usable timing: {m}");
    }
    let cpu_after: Option<u64> = pids.iter().map(|&p| proc_cpu_ticks(p)).sum();
    let cpu_ms = cpu_after.zip(cpu_before).map(|(b, a)| (b - a) as f64 * 1000.0 / clock_ticks() / frames as f64);
    drop(procs);
    drop(coord);
    let errors = m["errors"].as_u64().unwrap_or(0);
    Ok(ClusterRun { frames, fps: frames as f64 / secs, rss, cpu_ms, errors })
}

// ---------------------------------------------------------------- versus the Python loop

/// What a user would write instead: one Python process, PyAV decoding,
/// onnxruntime (the better of 1 and 2 intra-op threads), the same ONNX files and the same
/// contract (`xtask/bench/python_loop.py`, checked against the fixtures'
/// expected results), against `panoptes analyze` and a 1-coordinator +
/// 1-worker cluster on the same clips: the sample video scaled to 640×272
/// and to 1280×720. Nothing is pinned: each side uses the machine's cores as
/// it would by default.
fn versus_python(plan: &Plan, bins: &Bins, models_dir: &Path, work: &Path) -> Vec<Row> {
    const ALL: &str = "objects,joy,colors";
    let section = "vs Python";
    let py = match crate::python_with_onnxruntime() {
        Ok(p) => p,
        Err(e) => return vec![Row::not_measured(section, "the Python onnxruntime loop", &e)],
    };
    let sample = root().join("target/panoptes-sample/sample.mp4");
    if let Err(e) = crate::sample(sample.clone()) {
        return vec![Row::not_measured(section, "the Python onnxruntime loop", &e)];
    }
    let script = root().join("xtask/bench/python_loop.py");
    // The onnxruntime engine for the ONNX models (colors runs none).
    let ort_config = work.join("onnxruntime.toml");
    if let Err(e) = std::fs::write(&ort_config, "[models.objects]\nengine = \"onnxruntime\"\n\n[models.joy]\nengine = \"onnxruntime\"\n") {
        return vec![Row::not_measured(section, "onnxruntime engine config", &e.into())];
    }
    let mut rows = Vec::new();
    for size in ["640x272", "1280x720"] {
        let clip = work.join(format!("python-{size}-{}.mp4", plan.python_frames));
        if !clip.exists() {
            let made = Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
                .arg(&sample)
                .args(["-frames:v", &plan.python_frames.to_string(), "-vf", &format!("scale={}", size.replace('x', ":")), "-c:v", "libx264", "-pix_fmt", "yuv420p"])
                .arg(&clip)
                .status();
            if !made.is_ok_and(|s| s.success()) {
                rows.push(Row::not_measured(section, size, &anyhow::anyhow!("ffmpeg could not make the {size} clip from {}", sample.display())));
                continue;
            }
        }
        let on = format!("{}, {} frames", size.replace('x', "×"), plan.python_frames);
        for (models, goal, pictures) in [(ALL, "≥ 1.0", false), ("colors", "≥ 2.0", true)] {
            // onnxruntime's 2 intra-op threads are what the issue names, but its
            // spinning pool threads fight the loop's own decode and numpy on 2
            // cores (measured: 2 threads at half the speed of 1): the baseline
            // is the better of 1 and 2 threads.
            let mut best: Option<(f64, u32)> = None;
            let mut failed = None;
            for threads in [1u32, 2] {
                println!("==> vs Python: {on}, {models}: the Python loop (onnxruntime, {threads} thread(s))");
                let fps = output(
                    Command::new(&py).arg(&script).arg(&clip).args(["--models", models, "--threads", &threads.to_string(), "--models-dir"]).arg(models_dir),
                    "python_loop.py",
                    Duration::from_secs(1800),
                )
                .and_then(|o| json_line(&o, "python_loop.py"))
                .and_then(|v| v["fps"].as_f64().context("no fps"));
                match fps {
                    Ok(f) => {
                        println!("    {f:.2} frames/s");
                        if best.is_none_or(|(b, _)| f > b) {
                            best = Some((f, threads));
                        }
                    }
                    Err(e) => failed = Some(e),
                }
            }
            let Some((python, threads)) = best else {
                let e = failed.unwrap_or_else(|| anyhow::anyhow!("no run"));
                rows.push(Row::not_measured(section, format!("{on}, {models}: the Python loop"), &e));
                continue;
            };
            let baseline = format!("{python:.2} frames/s (Python loop, onnxruntime, best of 1 and 2 threads: {threads})");
            // Per engine: tract (the default), then onnxruntime for the ONNX models.
            let engines: &[(&str, Option<&Path>, &str)] =
                if pictures { &[("", None, goal)] } else { &[("", None, goal), (", onnxruntime engine", Some(&ort_config), "≥ 1.5")] };
            for &(engine, config, goal) in engines {
                if !pictures {
                    let what = format!("{on}, {models}: panoptes analyze{engine}");
                    println!("==> vs Python: {what}");
                    // The summary is on stderr (stdout holds the results): swap them.
                    let mut cmd = Command::new("sh");
                    cmd.args(["-c", "exec \"$0\" \"$@\" 2>&1 >/dev/null"]).arg(&bins.panoptes).arg("analyze").arg(&clip);
                    cmd.args(["--models", models, "--json", "--models-dir"]).arg(models_dir);
                    if let Some(c) = config {
                        cmd.arg("--config").arg(c);
                    }
                    let analyze = output(&mut cmd, "panoptes analyze", Duration::from_secs(1800))
                        .and_then(|o| json_line(&o, "panoptes analyze"))
                        .and_then(|v| v["summary"]["fps"].as_f64().context("no summary"));
                    rows.push(match analyze {
                        Ok(f) => {
                            println!("    {f:.2} frames/s");
                            Row::new(section, what, format!("{f:.2} frames/s")).baseline(baseline.clone(), f / python).goal(goal)
                        }
                        Err(e) => Row::not_measured(section, what, &e),
                    });
                }
                let what = format!("{on}, {models}: 1 coordinator + 1 worker{}{engine}", if pictures { ", pictures stored" } else { "" });
                println!("==> vs Python: {what}");
                rows.push(match cluster_run(bins, models_dir, work, &clip, models, 1, 1, None, pictures, config) {
                    Ok(r) => {
                        println!("    {:.2} frames/s", r.fps);
                        Row::new(section, what, format!("{:.2} frames/s ({})", r.fps, r.frames_text())).baseline(baseline.clone(), r.fps / python).goal(goal)
                    }
                    Err(e) => Row::not_measured(section, what, &e),
                });
            }
        }
    }
    rows
}

// ---------------------------------------------------------------- live

fn live(plan: &Plan, bins: &Bins, models_dir: &Path, work: &Path) -> Vec<Row> {
    let label = format!("frame arrival → committed result, 25 fps 640×480 RTMP push, {} s", plan.live_seconds);
    let mut rows = Vec::new();
    for models in ["colors", "objects"] {
        println!("==> live: {label}, {models}");
        match live_measure(&bins.panoptes, models_dir, work, models, plan.live_seconds.into(), None) {
            // The target (issue 17): p50 within one frame's analysis + 50 ms, p99 within twice that.
            Ok(LiveRun { p50, p99, analysed, dropped, analysis_ms, .. }) => rows.push(
                Row::new(
                    "Live",
                    format!("{label}, {models}"),
                    format!("p50 {p50:.0} ms, p99 {p99:.0} ms ({analysed} frames analysed, {dropped} dropped; latest policy)"),
                )
                .baseline(format!("{:.0} ms = analysis {analysis_ms:.0} ms/frame + 50 ms", analysis_ms + 50.0), (analysis_ms + 50.0) / p50.max(1.0))
                .goal(format!("≥ 1.0, and p99 ≤ {:.0} ms", 2.0 * (analysis_ms + 50.0))),
            ),
            Err(e) => rows.push(Row::not_measured("Live", format!("{label}, {models}"), &e)),
        }
    }
    rows
}

/// What a live-push monitor (see [`live_measure`]) is shown on each call.
pub(crate) struct LiveTick<'a> {
    /// Since the push started (its first attempt).
    pub elapsed: Duration,
    /// The worker process (spawned directly, so this is the worker's own pid).
    pub worker_pid: u32,
    pub panoptes: &'a Path,
    pub addr: &'a str,
    pub job: &'a str,
}

/// Called every `.0` while the push runs, from the calling thread.
pub(crate) type LiveMonitor<'m> = (Duration, &'m mut dyn FnMut(&LiveTick));

/// A completed live job: its latency percentiles and frame counts.
pub(crate) struct LiveRun {
    pub job: String,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    /// `frames_done` of the job.
    pub analysed: u64,
    pub dropped: u64,
    /// Analysis time per analysed frame, every model (ms): the job's inference time ÷ frames.
    pub analysis_ms: f64,
}

/// One coordinator, one worker, one live job (in `work/live-MODELS`); push a
/// generated stream in real time with the FFmpeg CLI for `seconds`; the job's
/// latency percentiles once it completes. With a `monitor`, it is called
/// every so often while the push runs (to sample the worker, print progress).
pub(crate) fn live_measure(panoptes: &Path, models_dir: &Path, work: &Path, models: &str, seconds: u64, monitor: Option<LiveMonitor>) -> Result<LiveRun> {
    let dir = work.join(format!("live-{}", models.replace(',', "-")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let s = |v: &str| v.to_string();
    let (_coord, addr) = start_coordinator(panoptes, &dir)?;
    let (worker, _) = spawn(
        "w1",
        panoptes,
        &[
            s("worker"),
            s("--name"),
            s("w1"),
            s("--coordinator"),
            addr.clone(),
            s("--models-dir"),
            models_dir.display().to_string(),
            s("--models"),
            s(models),
            s("--data-dir"),
            dir.join("w1").display().to_string(),
        ],
        &dir.join("w1.log"),
    )?;
    wait_for_workers(panoptes, &addr, 1)?;
    let e = json_line(&output(Command::new(panoptes).args(["live", "--models", models, "--json", "--coordinator", &addr]), "panoptes live", Duration::from_secs(60))?, "live")?;
    let (job, url) = (e["job_id"].as_str().unwrap_or_default().to_string(), e["rtmp_url"].as_str().unwrap_or_default().to_string());
    // The worker starts listening at its next lease tick: retry a push that
    // fails at once (refused, or no handshake yet), bounded.
    let push = || -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = Instant::now();
            let pushed = output(
                Command::new("ffmpeg")
                    .args(["-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=640x480:rate=25", "-t", &seconds.to_string()])
                    .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p", "-f", "flv", &url]),
                "ffmpeg push",
                Duration::from_secs(seconds + 60),
            );
            match pushed {
                Ok(_) => return Ok(()),
                Err(_) if Instant::now() < deadline && attempt.elapsed() < Duration::from_secs(3) => std::thread::sleep(Duration::from_millis(300)),
                Err(e) => return Err(e),
            }
        }
    };
    match monitor {
        None => push()?,
        Some((every, f)) => std::thread::scope(|sc| {
            let started = Instant::now();
            let h = sc.spawn(push);
            let mut next = every;
            while !h.is_finished() {
                if started.elapsed() >= next {
                    f(&LiveTick { elapsed: started.elapsed(), worker_pid: worker.pid(), panoptes, addr: &addr, job: &job });
                    next += every;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the push thread panicked")))
        })?,
    }
    let status = |what| -> Result<Value> { json_line(&output(Command::new(panoptes).args(["status", &job, "--json", "--coordinator", &addr]), what, Duration::from_secs(30))?, what) };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = status("status")?;
        match st["state"].as_str() {
            Some("completed") => break,
            Some("failed" | "cancelled") => bail!("the live job ended {}: {}", st["state"], st["error"]),
            _ if Instant::now() > deadline => bail!("the live job did not complete after the push ended: {st}"),
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    }
    let m = json_line(&output(Command::new(panoptes).args(["metrics", &job, "--json", "--coordinator", &addr]), "metrics", Duration::from_secs(30))?, "metrics")?;
    let st = status("status")?;
    let l = &m["latency_ms"];
    let q = |k: &str| l[k].as_f64().unwrap_or(f64::NAN);
    let analysed = st["frames_done"].as_u64().unwrap_or(0);
    let inference_s: f64 = m["inference_time_s"].as_object().into_iter().flatten().filter_map(|(_, v)| v.as_f64()).sum();
    let analysis_ms = inference_s * 1000.0 / analysed.max(1) as f64;
    Ok(LiveRun { p50: q("p50"), p95: q("p95"), p99: q("p99"), analysed, dropped: m["frames_dropped"].as_u64().unwrap_or(0), analysis_ms, job })
}

/// Wait (at most 120 s: workers load their models first) until `n` workers are registered and active.
pub(crate) fn wait_for_workers(bin: &Path, addr: &str, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = Command::new(bin).args(["cluster", "status", "--json", "--coordinator", addr]).output()?;
        let active = serde_json::from_slice::<Value>(&out.stdout)
            .map(|v| v["workers"].as_array().map_or(0, |w| w.iter().filter(|w| w["state"] == "active").count()))
            .unwrap_or(0);
        if active >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {active} of {n} workers registered within 120 s");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// CPU time (user + system) of a process so far, in clock ticks.
pub(crate) fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`, nearly always 100).
pub(crate) fn clock_ticks() -> f64 {
    Command::new("getconf").arg("CLK_TCK").output().ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
}

/// (VmRSS, VmHWM) of a process in KiB.
pub(crate) fn proc_memory(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| s.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok());
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

// ---------------------------------------------------------------- coordinator

fn coordinator(plan: &Plan) -> Vec<Row> {
    let section = "Coordinator";
    let (batch, seconds) = (8, plan.coord_seconds);
    let video = match load::make_clip(&root().join("target/panoptes-bench"), 100_000) {
        Ok(v) => v,
        Err(e) => return vec![Row::not_measured(section, "committed rows/s", &e)],
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return vec![Row::not_measured(section, "committed rows/s", &e.into())],
    };
    let mut rows = Vec::new();
    let mut single: Vec<(usize, f64)> = Vec::new();
    for c in [1usize, 3] {
        for &w in &plan.coord_workers {
            println!("==> coordinator: {c} coordinator(s), {w} simulated workers, {batch} frames per report, {seconds} s");
            let label = format!("{c} coordinator{}, {w} simulated workers", if c > 1 { "s" } else { "" });
            let r = rt.block_on(load::run(&load::LoadOptions { coordinators: c, workers: w, batch, seconds, video: video.clone() }));
            rows.push(match r {
                Ok(r) => {
                    println!("    {:.0} rows/s, commit p50 {:.1} ms, p99 {:.1} ms, {} refused", r.rows_per_s, r.p50_ms, r.p99_ms, r.refused);
                    let row = Row::new(section, label, format!("{:.0} rows/s; commit p50 {:.1} ms, p99 {:.1} ms", r.rows_per_s, r.p50_ms, r.p99_ms));
                    if c == 1 {
                        single.push((w, r.rows_per_s));
                        row
                    } else {
                        match single.iter().find(|(sw, _)| *sw == w) {
                            Some(&(_, base)) => row.baseline(format!("{base:.0} rows/s (1 coordinator)"), r.rows_per_s / base),
                            None => row,
                        }
                    }
                }
                Err(e) => Row::not_measured(section, label, &e),
            });
        }
    }
    rows
}

// ---------------------------------------------------------------- output

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
