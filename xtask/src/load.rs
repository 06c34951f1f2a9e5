//! Coordinator throughput under a synthetic load: real coordinator processes
//! (Raft over gRPC, sled on disk), and many simulated workers in this process
//! that register, lease shards, heartbeat and report results as fast as the
//! coordinators acknowledge them. No analysis runs: the point is the cost of
//! committing results (Raft append, replication, apply to sled), which bounds
//! how large a cluster one coordinator group can serve.
//!
//! Measures committed result rows per second (one row = one (frame, model)
//! result) and the commit latency of each report (send to acknowledgement).
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use panoptes_proto::api::panoptes_client::PanoptesClient;
use panoptes_proto::api::{JobRef, SubmitRequest};
use panoptes_proto::failover::Coordinators;
use panoptes_proto::worker::worker_api_client::WorkerApiClient;
use panoptes_proto::worker::{FrameReport, HeartbeatRequest, LeaseRef, LeaseRequest, ModelOutput, RegisterRequest, ReportRequest, ShardAssignment};

use crate::{root, spawn, Proc};

/// One measured configuration.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub coordinators: usize,
    pub workers: usize,
    pub rows: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub reports: u64,
    pub refused: u64,
}

pub struct LoadOptions {
    pub coordinators: usize,
    pub workers: usize,
    /// Frames reported per report (the workers' `report_batch`).
    pub batch: u64,
    /// Stop after this long (or when the job completes).
    pub seconds: u64,
    pub video: PathBuf,
}

/// A long, tiny clip (probing is a demux pass, so its length costs little).
pub fn make_clip(dir: &Path, frames: u64) -> Result<PathBuf> {
    let out = dir.join(format!("load-{frames}.mp4"));
    if out.exists() {
        return Ok(out);
    }
    std::fs::create_dir_all(dir)?;
    let st = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25"])
        .args(["-frames:v", &frames.to_string(), "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p"])
        .arg(&out)
        .status()
        .context("run ffmpeg")?;
    if !st.success() {
        bail!("ffmpeg could not make the load clip");
    }
    Ok(out)
}

// 2,000 shards of the 100,000-frame clip: work for up to 1,000 simulated workers.
const CONFIG: &str = r#"
[cluster]
shard_frames = 50
lease_timeout_ms = 20000
heartbeat_interval_ms = 1000
[coordinator]
snapshot_logs = 5000
"#;

/// A colors-like result (about the size of the real one).
fn row_json(frame: u64) -> String {
    format!(
        r#"[{{"rgb":[{},{},{}],"fraction":0.41}},{{"rgb":[12,200,37],"fraction":0.33}},{{"rgb":[250,250,250],"fraction":0.26}}]"#,
        frame % 256,
        (frame / 256) % 256,
        (frame * 7) % 256
    )
}

/// `objects` results of simulated frame `frame` of a 320×180 picture: three
/// people walking left to right, each across in 20 s, then from the left
/// again (a new track: the box jumps).
fn people_json(frame: u64) -> String {
    let people: Vec<String> = (0..3u64)
        .map(|k| {
            let x = ((frame + k * 167) % 500) as f64 * 0.56;
            format!(r#"{{"label":"person","class_id":0,"score":0.8,"box":[{x:.2},{},30,90]}}"#, 40 + k * 20)
        })
        .collect();
    format!("[{}]", people.join(","))
}

struct Shared {
    rows: AtomicU64,
    reports: AtomicU64,
    refused: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
    stop: AtomicBool,
}

/// Start the coordinators, run the simulated workers, stop everything.
pub async fn run(opts: &LoadOptions) -> Result<LoadResult> {
    let bin = root().join("target/debug/panoptes");
    if !bin.exists() {
        bail!("{} is missing: run `cargo build -p panoptes` first", bin.display());
    }
    let work = root().join(format!("target/panoptes-bench/load-c{}-w{}", opts.coordinators, opts.workers));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    std::fs::write(work.join("cluster.toml"), CONFIG)?;
    let (procs, addrs) = start_coordinators(&bin, &work, opts.coordinators, Some(&work.join("cluster.toml")))?;
    let coords = Coordinators::new(&addrs).map_err(anyhow::Error::msg)?;

    let job = coords
        .call(20, |ch| {
            let r = SubmitRequest {
                source: opts.video.display().to_string(),
                models: vec!["colors".into()],
                frame_step: 1,
                name: "load".into(),
                request_id: String::new(),
                target_height: 0,
                no_frames: true,
                ..Default::default()
            };
            async move { PanoptesClient::new(ch).submit(r).await }
        })
        .await
        .context("submit the load job")?
        .job_id;
    // Wait until the job is planned.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = coords.call(5, |ch| {
            let r = JobRef { job_id: job.clone() };
            async move { PanoptesClient::new(ch).get_status(r).await }
        }).await?;
        if st.shards_total > 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the load job was never planned: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let shared = Arc::new(Shared {
        rows: AtomicU64::new(0),
        reports: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let mut tasks = Vec::new();
    let start = Instant::now();
    for i in 0..opts.workers {
        let coords = coords.clone();
        let shared = shared.clone();
        let batch = opts.batch;
        tasks.push(tokio::spawn(async move { sim_worker(format!("sim-{i}"), coords, shared, batch).await }));
    }
    let limit = Duration::from_secs(opts.seconds);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let st = coords.call(5, |ch| {
            let r = JobRef { job_id: job.clone() };
            async move { PanoptesClient::new(ch).get_status(r).await }
        }).await?;
        if start.elapsed() >= limit || st.finished_at_ms > 0 {
            break;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    drop(procs);
    let mut lat = std::mem::take(&mut *shared.latencies_us.lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| if lat.is_empty() { 0.0 } else { lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0 };
    let rows = shared.rows.load(Ordering::Relaxed);
    Ok(LoadResult {
        coordinators: opts.coordinators,
        workers: opts.workers,
        rows,
        seconds: elapsed,
        rows_per_s: rows as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        reports: shared.reports.load(Ordering::Relaxed),
        refused: shared.refused.load(Ordering::Relaxed),
    })
}

/// The frame rate of the simulated streams.
pub(crate) const SIM_FPS: u64 = 25;

/// A simulated worker's report of `frames` under lease `a`: [`SIM_FPS`]
/// timestamps, one `colors`-sized row a frame and, with `picture` (a JPEG
/// and its width and height), that picture for every frame.
pub(crate) fn sim_report(name: &str, a: &ShardAssignment, frames: std::ops::Range<u64>, done: bool, picture: Option<(&[u8], u32, u32)>, objects: bool) -> ReportRequest {
    let next_frame = frames.end;
    let (jpeg, width, height) = picture.unwrap_or_default();
    ReportRequest {
        name: name.to_string(),
        job_id: a.job_id.clone(),
        shard: a.shard,
        epoch: a.epoch,
        frames: frames
            .map(|f| FrameReport {
                frame: f,
                timestamp: f as f64 / SIM_FPS as f64,
                outputs: vec![if objects {
                    ModelOutput { model: "objects".into(), results_json: people_json(f), error: false }
                } else {
                    ModelOutput { model: "colors".into(), results_json: row_json(f), error: false }
                }],
                jpeg: jpeg.to_vec(),
                width,
                height,
            })
            .collect(),
        next_frame,
        done,
        error: String::new(),
        times: None,
    }
}

/// One simulated worker: capacity 1, leases a shard, reports it in batches.
async fn sim_worker(name: String, coords: Coordinators, shared: Arc<Shared>, batch: u64) -> Result<()> {
    coords
        .call(10, |ch| {
            let r = RegisterRequest { name: name.clone(), addr: String::new(), capacity: 1, models: vec!["colors".into()] };
            async move { WorkerApiClient::new(ch).register(r).await }
        })
        .await?;
    let held: Arc<Mutex<Option<LeaseRef>>> = Arc::default();
    // Heartbeats, as a real worker sends them.
    let hb = {
        let (coords, name, held, shared) = (coords.clone(), name.clone(), held.clone(), shared.clone());
        tokio::spawn(async move {
            while !shared.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                let leases: Vec<LeaseRef> = held.lock().unwrap().iter().cloned().collect();
                let _ = coords.call(3, |ch| {
                    let r = HeartbeatRequest { name: name.clone(), leases: leases.clone() };
                    async move { WorkerApiClient::new(ch).heartbeat(r).await }
                }).await;
            }
        })
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let lease = coords.call(3, |ch| {
            let r = LeaseRequest { name: name.clone(), free_slots: 1 };
            async move { WorkerApiClient::new(ch).lease(r).await }
        }).await;
        let Some(a) = lease.ok().and_then(|l| l.shards.into_iter().next()) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        *held.lock().unwrap() = Some(LeaseRef { job_id: a.job_id.clone(), shard: a.shard, epoch: a.epoch });
        let mut next = a.resume_frame;
        while next < a.end_frame && !shared.stop.load(Ordering::Relaxed) {
            let upto = (next + batch).min(a.end_frame);
            let req = sim_report(&name, &a, next..upto, upto == a.end_frame, None, false);
            let t = Instant::now();
            let r = coords.call(3, |ch| {
                let r = req.clone();
                async move { WorkerApiClient::new(ch).report(r).await }
            }).await;
            let us = t.elapsed().as_micros() as u64;
            match r {
                Ok(resp) if resp.accepted => {
                    shared.rows.fetch_add(resp.stored as u64, Ordering::Relaxed);
                    shared.reports.fetch_add(1, Ordering::Relaxed);
                    shared.latencies_us.lock().unwrap().push(us);
                    next = upto;
                }
                Ok(_) => {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        *held.lock().unwrap() = None;
    }
    hb.abort();
    Ok(())
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `n` coordinators forming one Raft cluster on free loopback ports, data in
/// `work/c{id}`, logs in `work/c{id}.log`; their processes and addresses.
pub(crate) fn start_coordinators(bin: &Path, work: &Path, n: usize, config: Option<&Path>) -> Result<(Vec<Proc>, Vec<String>)> {
    let addrs: Vec<String> = (0..n).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let peers: Vec<String> = addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
    let mut procs: Vec<Proc> = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let id = (i + 1).to_string();
        let mut args: Vec<String> = ["coordinator", "--id", &id, "--listen", a, "--peers", &peers.join(",")].iter().map(|s| s.to_string()).collect();
        args.extend(["--data-dir".into(), work.join(format!("c{id}")).display().to_string()]);
        if let Some(c) = config {
            args.extend(["--config".into(), c.display().to_string()]);
        }
        let (p, _) = spawn(&format!("coordinator-{id}"), bin, &args, &work.join(format!("c{id}.log")))?;
        procs.push(p);
    }
    Ok((procs, addrs))
}
