//! Project chores as subcommands: `cargo xtask <models|sample|demo|bench|bench-models|bench-coordinator|chaos|soak|long-job|camera>`.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::Value;

mod bench;
mod camera;
mod chaos;
mod load;
mod longjob;
mod models;
mod soak;

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[derive(Parser)]
#[command(name = "xtask", about = "Panoptes project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Prepare the ONNX models directory.
    Models {
        /// Copy already-built models from this directory (e.g. ../shared/models) and verify their checksums.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Where to put them.
        #[arg(long, default_value = "models")]
        out: PathBuf,
    },
    /// Make the sample video from photos scikit-image ships (astronaut, cat, coffee, motorcycle, rocket).
    Sample {
        #[arg(long, default_value = "target/panoptes-sample/sample.mp4")]
        out: PathBuf,
    },
    /// Per-model latency: tract (our path) versus onnxruntime (Python, one thread), same files and inputs, one run.
    BenchModels {
        #[arg(long, default_value = "models")]
        models_dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        iterations: u32,
    },
    /// Coordinator throughput: committed result rows/s and report commit latency
    /// with many simulated workers, on 1 and 3 coordinators (real processes).
    BenchCoordinator {
        /// Simulated worker counts to try.
        #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
        workers: Vec<usize>,
        /// Coordinator group sizes to try.
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        coordinators: Vec<usize>,
        /// Frames per report.
        #[arg(long, default_value_t = 8)]
        batch: u64,
        /// Seconds per configuration.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Every benchmark in one table (decode + resize, inference, end to end, coordinator, live, memory),
    /// printed and written to the top of docs/BENCHMARKS.md.
    Bench {
        /// Smaller runs (a few minutes in all) instead of the full ones.
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value = "models")]
        models_dir: PathBuf,
        /// Run only these sections (decode, inference, e2e, coordinator, live),
        /// print the table and leave docs/BENCHMARKS.md alone.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// The chaos suite: 3 coordinators, 3 workers, 3 jobs and a seeded schedule of
    /// faults per seed, then the invariant checker (tests/tests/chaos.rs `chaos_long`).
    Chaos {
        /// Run seeds 1..=N.
        #[arg(long, default_value_t = 10)]
        seeds: u64,
        /// Run this one seed only (replay).
        #[arg(long)]
        seed: Option<u64>,
        /// Faults per run.
        #[arg(long, default_value_t = 8)]
        faults: usize,
    },
    /// Live soak: one long real-time RTMP push into one worker, watching its memory and latency.
    ///
    /// Starts 1 coordinator and 1 worker (target/debug/panoptes, logs in
    /// target/panoptes-soak), creates a live job with MODELS and pushes a
    /// generated 640x480 25 fps H.264 stream to it with the FFmpeg CLI (`-re`)
    /// for M minutes, as the `live` section of `cargo xtask bench` does.
    /// While the push runs it reads the worker's VmRSS from /proc every 5 s
    /// and prints a progress line every 30 s (elapsed, RSS, frames_done).
    /// At the end: worker RSS at start (first sample at least 10 s into the
    /// push, once the stream flows), at end (last sample before the push
    /// ends), min / max / median of all samples and the peak (VmHWM);
    /// latency p50 / p95 / p99 (frame arrival at the worker to its results'
    /// commit, from `panoptes metrics --json`); frames analysed and dropped;
    /// and the verdict "RSS end/start = X.XX" (about 1.00 when memory is flat).
    Soak {
        /// Minutes of the push.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        minutes: u64,
        /// Models of the live job, comma-separated.
        #[arg(long, default_value = "objects")]
        models: String,
        #[arg(long, default_value = "models")]
        models_dir: PathBuf,
        /// Print the result as one JSON object on stdout (progress goes to stderr).
        #[arg(long)]
        json: bool,
        /// Run `cargo build -p panoptes --bin panoptes` first (by default
        /// target/debug/panoptes is used as it is; its build time is printed).
        #[arg(long)]
        build: bool,
    },
    /// What a long recording costs a coordinator: a 640x360 25 fps clip of
    /// --minutes, `colors` on every frame, 1 worker, on each number of
    /// coordinators given, with --no-frames, a picture a second (the default)
    /// and a picture of every frame; prints each
    /// coordinator's peak RSS, data directory against the bytes it holds, and
    /// the frame rate with pictures / without. Uses target/debug/panoptes.
    LongJob {
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
        minutes: u64,
        /// Cluster sizes to run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        coordinators: Vec<usize>,
        #[arg(long, default_value = "models")]
        models_dir: PathBuf,
        /// Only these picture settings, comma-separated: none, 1s, 0 (every
        /// frame). Default: all three.
        #[arg(long, value_delimiter = ',')]
        pictures: Vec<String>,
        /// A cluster config for the coordinators (default: none, the defaults).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the result as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// A simulated camera streaming for --hours at 25 fps into a live job with
    /// --keep, as fast as the coordinators commit (the worker is simulated:
    /// one result row and one stored JPEG a frame); prints each coordinator's
    /// RSS and data directory per simulated hour and their spread once the
    /// retention window is full. Uses target/debug/panoptes.
    Camera {
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..))]
        hours: u64,
        #[arg(long, default_value = "1h")]
        keep: String,
        #[arg(long, default_value_t = 1)]
        coordinators: usize,
        /// Frames a report (25 = a second of stream).
        #[arg(long, default_value_t = 25)]
        batch: u64,
        /// Read RSS and disk every this many simulated minutes.
        #[arg(long, default_value_t = 15)]
        sample_min: u64,
        /// Results only, no stored pictures.
        #[arg(long)]
        no_pictures: bool,
        /// Detections instead of colours: the live job runs `objects` with a
        /// zone and two alert rules, each simulated frame holds three people
        /// walking across it (a new track each time one wraps around), so
        /// the leader tracks them, stores each detection's track and zones
        /// and records track events and alerts: the cost of tracking.
        #[arg(long)]
        objects: bool,
        /// When the stream ends, start one more coordinator and add it with
        /// `cluster add-member`: how long it takes to install the snapshot,
        /// become a voter and repair every picture, and its peak RSS.
        #[arg(long)]
        join: bool,
        /// Print the result as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Start a local cluster (1 coordinator, 2 workers), analyse the sample video, print what was found, stop.
    Demo {
        #[arg(long, default_value = "models")]
        models_dir: PathBuf,
        #[arg(long, default_value = "target/panoptes-sample/sample.mp4")]
        video: PathBuf,
        #[arg(long, default_value = "objects,colors")]
        models: String,
        #[arg(long, default_value_t = 2)]
        frame_step: u32,
    },
}

fn sample(out: PathBuf) -> Result<()> {
    let out = root().join(out);
    if out.exists() {
        println!("sample video: {}", out.display());
        return Ok(());
    }
    let dir = out.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir)?;
    let wheel_dir = dir.join("wheel");
    let photos = ["astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg"];
    if !photos.iter().all(|p| dir.join(p).exists()) {
        println!("fetching sample photos (the scikit-image wheel from PyPI, ~15 MB)…");
        let st = Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:", "--python-version", "3.11", "-d"])
            .arg(&wheel_dir)
            .arg("scikit-image==0.24.0")
            .status()
            .context("failed to run pip (python3 -m pip)")?;
        if !st.success() {
            bail!("pip download scikit-image failed; is PyPI reachable?");
        }
        let wheel = std::fs::read_dir(&wheel_dir)?.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "whl"));
        let wheel = wheel.context("no wheel downloaded")?;
        let script = format!(
            "import zipfile,sys\nz=zipfile.ZipFile(sys.argv[1])\nfor n in {photos:?}:\n    open(sys.argv[2]+'/'+n,'wb').write(z.read('skimage/data/'+n))\n"
        );
        let st = Command::new("python3").args(["-c", &script]).arg(&wheel).arg(&dir).status()?;
        if !st.success() {
            bail!("could not extract the photos from {}", wheel.display());
        }
    }
    // 2 s per photo at 25 fps, 960x540, a slow zoom so frames differ; H.264 with a keyframe every second.
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y"]);
    for p in &photos {
        cmd.args(["-loop", "1", "-framerate", "25", "-t", "2", "-i"]).arg(dir.join(p));
    }
    let mut filter = String::new();
    for i in 0..photos.len() {
        filter.push_str(&format!(
            "[{i}:v]scale=960:540:force_original_aspect_ratio=decrease,pad=960:540:(ow-iw)/2:(oh-ih)/2,setsar=1,\
             zoompan=z='1+0.002*on':d=1:s=960x540:fps=25,format=yuv420p[v{i}];"
        ));
    }
    for i in 0..photos.len() {
        filter.push_str(&format!("[v{i}]"));
    }
    filter.push_str(&format!("concat=n={}:v=1:a=0[out]", photos.len()));
    let tmp = out.with_extension("tmp.mp4");
    cmd.args(["-filter_complex", &filter, "-map", "[out]", "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "2", "-pix_fmt", "yuv420p"]).arg(&tmp);
    let st = cmd.status().context("failed to run ffmpeg")?;
    if !st.success() {
        bail!("ffmpeg could not make the sample video");
    }
    std::fs::rename(&tmp, &out)?;
    println!("sample video: {} (5 photos, 10 s, 250 frames, 960x540 H.264)", out.display());
    Ok(())
}

/// A child process whose first stdout line we wait for; killed on drop.
pub(crate) struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        terminate(&mut self.child);
        let _ = self.child.wait();
    }
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
}

pub(crate) fn spawn(name: &str, bin: &Path, args: &[String], log: &Path) -> Result<(Proc, String)> {
    let logf = std::fs::File::create(log)?;
    let mut child = Command::new(bin).args(args).stdout(Stdio::piped()).stderr(logf).spawn().with_context(|| format!("failed to start {name}"))?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = true;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if first {
                let _ = tx.send(line);
                first = false;
            }
        }
    });
    let mut p = Proc { name: name.to_string(), child };
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => Ok((p, line)),
        Err(_) => {
            let _ = p.child.kill();
            bail!("{} did not start; see {}", p.name, log.display())
        }
    }
}

/// A one-member coordinator on a free port of 127.0.0.1, data in `dir/c1`,
/// log in `dir/coordinator.log`; the process and its address.
pub(crate) fn start_coordinator(bin: &Path, dir: &Path) -> Result<(Proc, String)> {
    let args: Vec<String> = ["coordinator", "--id", "1", "--listen", "127.0.0.1:0", "--data-dir", &dir.join("c1").display().to_string()]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let (p, line) = spawn("coordinator", bin, &args, &dir.join("coordinator.log"))?;
    let addr = line.rsplit(' ').next().context("the coordinator printed no address")?.to_string();
    Ok((p, addr))
}

fn demo(models_dir: PathBuf, video: PathBuf, models: String, frame_step: u32) -> Result<()> {
    let root = root();
    let bin = root.join("target/debug/panoptes");
    if !bin.exists() {
        bail!("{} is missing: run `cargo build -p panoptes` first", bin.display());
    }
    let video = root.join(video);
    let models_dir = root.join(models_dir);
    let work = root.join("target/panoptes-demo");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    println!("starting a local cluster: 1 coordinator, 2 workers (logs in {})", work.display());
    let s = |v: &str| v.to_string();
    let (coord, addr) = start_coordinator(&bin, &work)?;
    let mut workers = Vec::new();
    for w in ["w1", "w2"] {
        let (p, _) = spawn(
            w,
            &bin,
            &[
                s("worker"),
                s("--name"),
                s(w),
                s("--coordinator"),
                addr.clone(),
                s("--models-dir"),
                models_dir.display().to_string(),
                s("--models"),
                models.clone(),
                s("--data-dir"),
                work.join(w).display().to_string(),
            ],
            &work.join(format!("{w}.log")),
        )?;
        workers.push(p);
    }
    println!("coordinator on {addr}; analysing {} with {models}, every {frame_step} frames…", video.display());
    let t = Instant::now();
    let out = Command::new(&bin)
        .args(["submit", &video.display().to_string(), "--models", &models, "--frame-step", &frame_step.to_string(), "--wait", "--json"])
        .args(["--coordinator", &addr])
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    let status: Value = serde_json::from_slice(&out.stdout).with_context(|| format!("submit failed: {}", String::from_utf8_lossy(&out.stderr)))?;
    if status["state"] != "completed" {
        bail!("the job did not complete: {status}");
    }
    let job = status["job_id"].as_str().unwrap_or_default().to_string();
    let out = Command::new(&bin).args(["results", &job, "--json", "--coordinator", &addr]).output()?;
    let mut labels: std::collections::BTreeMap<String, (u64, f64)> = Default::default();
    let mut colors: std::collections::BTreeMap<String, u64> = Default::default();
    let mut rows = 0;
    // The frame with the most objects, to draw.
    let mut busiest: Option<(usize, u64)> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line)?;
        rows += 1;
        match v["model"].as_str() {
            Some("objects") => {
                let n = v["results"].as_array().map(|a| a.len()).unwrap_or(0);
                if busiest.is_none_or(|(m, _)| n > m) {
                    busiest = Some((n, v["frame"].as_u64().unwrap_or(0)));
                }
                let mut seen = std::collections::BTreeSet::new();
                for d in v["results"].as_array().into_iter().flatten() {
                    let l = d["label"].as_str().unwrap_or("?").to_string();
                    let e = labels.entry(l.clone()).or_default();
                    e.1 = e.1.max(d["score"].as_f64().unwrap_or(0.0));
                    if seen.insert(l) {
                        e.0 += 1;
                    }
                }
            }
            Some("colors") => {
                if let Some(c) = v["results"][0]["color"].as_str() {
                    *colors.entry(c.to_string()).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    let frames = status["frames_done"].as_u64().unwrap_or(0);
    println!("\n{job} completed: {frames} frames analysed in {secs:.1}s ({:.1} frames/s), {rows} results", frames as f64 / secs);
    if !labels.is_empty() {
        println!("objects found (frames seen in, best score):");
        let mut l: Vec<_> = labels.into_iter().collect();
        l.sort_by_key(|e| std::cmp::Reverse(e.1 .0));
        for (label, (n, best)) in l.iter().take(12) {
            println!("  {label:<14} {n:>4} frames  {best:.2}");
        }
    }
    if !colors.is_empty() {
        let mut c: Vec<_> = colors.into_iter().collect();
        c.sort_by_key(|e| std::cmp::Reverse(e.1));
        println!("most frequent dominant colours: {}", c.iter().take(5).map(|(c, n)| format!("{c} ({n})")).collect::<Vec<_>>().join(", "));
    }
    if let Some((n, frame)) = busiest {
        let png = work.join(format!("{job}-frame-{frame}.png"));
        let f = Command::new(&bin).args(["frame", &job, &frame.to_string(), "-o"]).arg(&png).args(["--coordinator", &addr]).output()?;
        if f.status.success() {
            println!("frame {frame} ({n} objects) drawn with its results: {}", png.display());
        } else {
            println!("could not draw frame {frame}: {}", String::from_utf8_lossy(&f.stderr).trim());
        }
    }
    let m = Command::new(&bin).args(["metrics", &job, "--coordinator", &addr]).output()?;
    println!("\n{}", String::from_utf8_lossy(&m.stdout));
    println!("stopping the cluster");
    drop(workers);
    drop(coord);
    Ok(())
}

/// A Python with onnxruntime, numpy, Pillow and PyAV (what the bench's
/// Python loop, `xtask/bench/python_loop.py`, imports): the models venv if it
/// has them, else a small bench venv.
fn python_with_onnxruntime() -> Result<PathBuf> {
    let has_ort = |py: &Path| Command::new(py).args(["-c", "import onnxruntime, numpy, PIL, av"]).output().map(|o| o.status.success()).unwrap_or(false);
    for cand in ["target/xtask-models/venv/bin/python", "target/xtask-bench/venv/bin/python"] {
        let p = root().join(cand);
        if p.exists() && has_ort(&p) {
            return Ok(p);
        }
    }
    let venv = root().join("target/xtask-bench/venv");
    println!("==> creating a Python venv with onnxruntime, numpy, pillow and av in {}", venv.display());
    let st = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().context("python3 -m venv")?;
    if !st.success() {
        bail!("python3 -m venv failed: install python3-venv");
    }
    let py = venv.join("bin/python");
    let st = Command::new(&py).args(["-m", "pip", "install", "--quiet", "onnxruntime", "numpy", "pillow", "av"]).status()?;
    if !st.success() || !has_ort(&py) {
        bail!("could not install onnxruntime into {}", venv.display());
    }
    Ok(py)
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn bench_models(models_dir: PathBuf, iterations: u32) -> Result<()> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("==> tract (worker/examples/model_latency.rs), {iterations} iterations, median");
    let out = Command::new("cargo")
        .args(["run", "--quiet", "-p", "panoptes-worker", "--example", "model_latency", "--"])
        .arg(&models_dir)
        .arg(iterations.to_string())
        .current_dir(root())
        .output()
        .context("cargo run model_latency")?;
    if !out.status.success() {
        bail!("model_latency failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tract = json_lines(&out.stdout);
    println!("==> onnxruntime (xtask/bench/ort_latency.py), one thread");
    let py = python_with_onnxruntime()?;
    let out = Command::new(py).arg(root().join("xtask/bench/ort_latency.py")).arg(&models_dir).arg(iterations.to_string()).output()?;
    if !out.status.success() {
        bail!("ort_latency.py failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let ort = json_lines(&out.stdout);
    println!("\n{cores} cores, load average {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    println!("{:<36} {:>18} {:>10} {:>10} {:>11}", "model", "input", "tract ms", "ort ms", "tract/ort");
    for t in tract.iter().filter(|t| t["kind"] == "model") {
        let name = t["model"].as_str().unwrap_or("?");
        let tm = t["tract_ms"].as_f64().unwrap_or(f64::NAN);
        let om = ort.iter().find(|o| o["model"] == name).and_then(|o| o["ort_ms"].as_f64()).unwrap_or(f64::NAN);
        let shape = t["shape"].as_array().map(|a| a.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("x")).unwrap_or_default();
        println!("{name:<36} {shape:>18} {tm:>10.2} {om:>10.2} {:>11.2}", tm / om);
    }
    println!("\nwhole analyses on one 640x480 frame (tract path, preprocessing and decoding included):");
    for t in tract.iter().filter(|t| t["kind"] == "analysis") {
        println!("  {:<8} {:>8.2} ms/frame", t["model"].as_str().unwrap_or("?"), t["tract_ms"].as_f64().unwrap_or(f64::NAN));
    }
    Ok(())
}

fn bench_coordinator(workers: Vec<usize>, coordinators: Vec<usize>, batch: u64, seconds: u64) -> Result<()> {
    let video = load::make_clip(&root().join("target/panoptes-bench"), 100_000)?;
    let rt = tokio::runtime::Runtime::new()?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut rows = Vec::new();
    for &c in &coordinators {
        for &w in &workers {
            println!("==> {c} coordinator(s), {w} simulated workers, {batch} frames per report, {seconds} s");
            let r = rt.block_on(load::run(&load::LoadOptions { coordinators: c, workers: w, batch, seconds, video: video.clone() }))?;
            println!("    {} rows in {} reports, {:.1} s: {:.0} rows/s, commit p50 {:.1} ms, p99 {:.1} ms", r.rows, r.reports, r.seconds, r.rows_per_s, r.p50_ms, r.p99_ms);
            rows.push(r);
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\n{cores} cores, load average {} (the simulated workers run on the same machine)", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    println!("{:>12} {:>8} {:>10} {:>10} {:>9} {:>9} {:>8}", "coordinators", "workers", "rows", "rows/s", "p50 ms", "p99 ms", "refused");
    for r in &rows {
        println!("{:>12} {:>8} {:>10} {:>10.0} {:>9.1} {:>9.1} {:>8}", r.coordinators, r.workers, r.rows, r.rows_per_s, r.p50_ms, r.p99_ms, r.refused);
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Models { from, out } => models::run(from, root().join(out)),
        Cmd::Sample { out } => sample(out),
        Cmd::BenchModels { models_dir, iterations } => bench_models(root().join(models_dir), iterations),
        Cmd::BenchCoordinator { workers, coordinators, batch, seconds } => bench_coordinator(workers, coordinators, batch, seconds),
        Cmd::Bench { quick, models_dir, only } => bench::run(quick, root().join(models_dir), &only),
        Cmd::Demo { models_dir, video, models, frame_step } => demo(models_dir, video, models, frame_step),
        Cmd::Chaos { seeds, seed, faults } => chaos::run(seeds, seed, faults),
        Cmd::Soak { minutes, models, models_dir, json, build } => soak::run(minutes, &models, root().join(models_dir), json, build),
        Cmd::LongJob { minutes, coordinators, models_dir, pictures, config, json } => {
            longjob::run(minutes, &coordinators, root().join(models_dir), &pictures, config.as_deref(), json)
        }
        Cmd::Camera { hours, keep, coordinators, batch, sample_min, no_pictures, objects, join, json } => {
            camera::run(camera::Options { hours, keep, coordinators, batch: batch.max(1), sample_min: sample_min.max(1), no_pictures, objects, join, json })
        }
    }
}
