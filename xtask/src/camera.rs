//! `cargo xtask camera [--hours 24] [--keep 1h] [--coordinators 1]`: a
//! simulated camera that streams for days, to see whether a coordinator's
//! memory and disk stay flat under retention. Real coordinator processes
//! (Raft over gRPC, sled and picture segments on disk); the camera and its
//! worker are simulated in this process: a worker registers, a live job is
//! created with `--keep`, the worker leases its stream and reports 25 fps of
//! stream time (one result row of `colors`' size and one stored JPEG per
//! frame, `--batch` frames a report) as fast as the coordinators commit, so
//! 24 hours of stream take far less. Every simulated `--sample-min` minutes
//! each coordinator's RSS and data directory are read; at the end, per
//! simulated hour, and the spread after the first hour (flat = close to 1).
//!
//! `--join`: when the stream ends, a new coordinator joins the cluster that
//! holds it all (`cluster add-member`). It is timed to a voter (snapshot
//! installed, log caught up) and to holding every picture the others hold
//! (the repair pass), with its peak RSS and the leader's view of the snapshot
//! transfer (`cluster status`: `behind`, `snapshot_sent_bytes`).
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use panoptes_proto::api::panoptes_client::PanoptesClient;
use panoptes_proto::api::{JobRef, LiveRequest};
use panoptes_proto::failover::Coordinators;
use panoptes_proto::worker::worker_api_client::WorkerApiClient;
use panoptes_proto::worker::{HeartbeatRequest, LeaseRef, LeaseRequest, RegisterRequest};
use serde_json::json;

use crate::bench::proc_memory;
use crate::load::{sim_report, start_coordinators};
use crate::longjob::dir_bytes;
use crate::root;

const FPS: u64 = crate::load::SIM_FPS;

pub struct Options {
    pub hours: u64,
    pub keep: String,
    pub coordinators: usize,
    pub batch: u64,
    pub sample_min: u64,
    pub no_pictures: bool,
    /// Detections (tracked, with a zone and rules) instead of colours.
    pub objects: bool,
    pub join: bool,
    pub json: bool,
}

/// One reading, at `frame` of the stream.
struct Sample {
    frame: u64,
    wall_s: f64,
    /// Per coordinator: RSS KiB, data directory bytes.
    members: Vec<(u64, u64)>,
    retained_from: u64,
}

pub fn run(o: Options) -> Result<()> {
    let say = |s: String| if o.json { eprintln!("{s}") } else { println!("{s}") };
    let bin = root().join("target/debug/panoptes");
    if !bin.exists() {
        bail!("{} is missing: run `cargo build -p panoptes` first", bin.display());
    }
    let keep_s = age_s(&o.keep).with_context(|| format!("--keep {}: give a duration such as 1h, 30m or 90s", o.keep))?;
    let work = root().join(format!("target/panoptes-camera/c{}", o.coordinators));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let jpeg = if o.no_pictures { Vec::new() } else { picture(&work)? };
    std::fs::write(
        work.join("cluster.toml"),
        "[cluster]\nlease_timeout_ms = 20000\nheartbeat_interval_ms = 1000\n[coordinator]\nsnapshot_logs = 5000\n[retention]\nevery_s = 1\n",
    )?;
    let (procs, addrs) = start_coordinators(&bin, &work, o.coordinators, Some(&work.join("cluster.toml")))?;
    let pids: Vec<u32> = procs.iter().map(|p| p.pid()).collect();
    let total = o.hours * 3600 * FPS;
    say(format!(
        "==> a simulated {} h camera at {FPS} fps ({total} frames, {} per report, {}), --keep {}, on {} coordinator(s); data in {}",
        o.hours,
        o.batch,
        if o.no_pictures { "no pictures".to_string() } else { format!("a {:.1} KB JPEG a frame", jpeg.len() as f64 / 1000.0) },
        o.keep,
        o.coordinators,
        work.display()
    ));

    let rt = tokio::runtime::Runtime::new()?;
    let samples = rt.block_on(stream(&o, &addrs, &pids, &work, total, &jpeg, &say))?;
    let joined = if o.join { Some(join(&bin, &work, &addrs, &say)?) } else { None };
    drop(procs);

    // Per simulated hour: the last sample in it.
    let hour_frames = 3600 * FPS;
    let mut table = Vec::new();
    for h in 1..=o.hours {
        if let Some(s) = samples.iter().rev().find(|s| s.frame <= h * hour_frames) {
            table.push((h, s));
        }
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    say(format!("\n{:>5} {:>10} {:>8}  {}", "hour", "frames", "wall s", "per coordinator: RSS MiB / data dir MiB"));
    for (h, s) in &table {
        let m: Vec<String> = s.members.iter().map(|(rss, disk)| format!("{:>6.0} / {:>7.0}", *rss as f64 / 1024.0, mib(*disk))).collect();
        say(format!("{h:>5} {:>10} {:>8.0}  {}", s.frame, s.wall_s, m.join("   ")));
    }
    // After the first hour of stream (plus a margin for the window to fill and trims to start): the spread.
    let settled: Vec<&Sample> = samples.iter().filter(|s| s.frame >= (keep_s + 900) * FPS).collect();
    let mut out_members = Vec::new();
    for i in 0..o.coordinators {
        let rss: Vec<u64> = settled.iter().map(|s| s.members[i].0).collect();
        let disk: Vec<u64> = settled.iter().map(|s| s.members[i].1).collect();
        let (rmin, rmax) = (rss.iter().min().copied().unwrap_or(0), rss.iter().max().copied().unwrap_or(0));
        let (dmin, dmax) = (disk.iter().min().copied().unwrap_or(0), disk.iter().max().copied().unwrap_or(0));
        let end = settled.last().map(|s| s.members[i]).unwrap_or_default();
        let first = settled.first().map(|s| s.members[i]).unwrap_or_default();
        say(format!(
            "==> coordinator {}: after the window filled ({} samples): RSS {:.0}-{:.0} MiB (end / first {:.2}), data dir {:.0}-{:.0} MiB (end / first {:.2})",
            i + 1,
            settled.len(),
            rmin as f64 / 1024.0,
            rmax as f64 / 1024.0,
            end.0 as f64 / first.0.max(1) as f64,
            mib(dmin),
            mib(dmax),
            end.1 as f64 / first.1.max(1) as f64
        ));
        out_members.push(json!({
            "rss_mib_min": rmin as f64 / 1024.0, "rss_mib_max": rmax as f64 / 1024.0,
            "rss_end_over_first": end.0 as f64 / first.0.max(1) as f64,
            "data_dir_mib_min": mib(dmin), "data_dir_mib_max": mib(dmax),
            "data_dir_end_over_first": end.1 as f64 / first.1.max(1) as f64,
        }));
    }
    let last = samples.last();
    let wall = last.map_or(0.0, |s| s.wall_s);
    say(format!(
        "==> {} frames in {wall:.0} s ({:.0} frames/s, {:.0}x real time); kept from frame {} at the end",
        last.map_or(0, |s| s.frame),
        last.map_or(0.0, |s| s.frame as f64 / s.wall_s.max(1e-9)),
        last.map_or(0.0, |s| s.frame as f64 / FPS as f64 / s.wall_s.max(1e-9)),
        last.map_or(0, |s| s.retained_from)
    ));
    if o.json {
        println!(
            "{}",
            json!({
                "command": format!("cargo xtask camera --hours {} --keep {} --coordinators {}{}", o.hours, o.keep, o.coordinators, if o.no_pictures { " --no-pictures" } else { "" }),
                "frames": last.map_or(0, |s| s.frame), "wall_s": wall, "picture_bytes": jpeg.len(),
                "hours": table.iter().map(|(h, s)| json!({"hour": h, "frames": s.frame, "members": s.members.iter().map(|(r, d)| json!({"rss_mib": *r as f64 / 1024.0, "data_dir_mib": mib(*d)})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
                "after_first_hour": out_members,
                "join": joined,
            })
        );
    }
    Ok(())
}

/// `--join`: start coordinator n+1 with `--join`, add it with `cluster
/// add-member`, and follow it until it is a voter and its picture store holds
/// as many bytes as coordinator 1's. Its process stops when this returns.
fn join(bin: &Path, work: &Path, addrs: &[String], say: &dyn Fn(String)) -> Result<serde_json::Value> {
    let id = addrs.len() + 1;
    let addr = format!("127.0.0.1:{}", crate::load::free_port());
    let peers: Vec<String> = addrs.iter().chain(std::iter::once(&addr)).enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
    let dir = work.join(format!("c{id}"));
    let args: Vec<String> = ["coordinator", "--id", &id.to_string(), "--listen", &addr, "--peers", &peers.join(","), "--join", "--config"]
        .iter()
        .map(|s| s.to_string())
        .chain([work.join("cluster.toml").display().to_string(), "--data-dir".into(), dir.display().to_string()])
        .collect();
    let held_by_1 = dir_bytes(&work.join("c1"));
    let pictures_1 = dir_bytes(&work.join("c1").join("pictures"));
    say(format!(
        "==> coordinator {id} joins a cluster holding {:.0} MiB ({:.0} MiB of pictures) on coordinator 1",
        held_by_1 as f64 / 1048576.0,
        pictures_1 as f64 / 1048576.0
    ));
    let (node, _) = crate::spawn(&format!("coordinator-{id}"), bin, &args, &work.join(format!("c{id}.log")))?;
    let t0 = Instant::now();
    let mut add = Command::new(bin)
        .args(["cluster", "add-member", &id.to_string(), &addr, "--timeout", "3600", "--json", "--coordinator", &addrs.join(",")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run panoptes cluster add-member")?;
    let status = |addrs: &str| -> Option<serde_json::Value> {
        let out = Command::new(bin).args(["cluster", "status", "--json", "--coordinator", addrs]).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let (mut snapshot_bytes, mut voter_s, mut max_behind) = (0u64, None, 0u64);
    let deadline = t0 + Duration::from_secs(3600);
    let pictures_s = loop {
        std::thread::sleep(Duration::from_secs(2));
        if voter_s.is_none() {
            if let Some(st) = add.try_wait()? {
                let mut out = String::new();
                if let Some(mut e) = add.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut out);
                }
                if !st.success() {
                    bail!("cluster add-member {id} failed after {:.0} s: {out}; logs in {}", t0.elapsed().as_secs_f64(), work.display());
                }
                voter_s = Some(t0.elapsed().as_secs_f64());
                say(format!("    coordinator {id} is a voter after {:.1} s", t0.elapsed().as_secs_f64()));
            }
        }
        let me = status(&addrs.join(",")).and_then(|s| s["members"].as_array()?.iter().find(|m| m["id"] == id as u64).cloned());
        let behind = me.as_ref().and_then(|m| m["behind"].as_u64()).unwrap_or(0);
        max_behind = max_behind.max(behind);
        snapshot_bytes = snapshot_bytes.max(me.as_ref().and_then(|m| m["snapshot_bytes"].as_u64()).unwrap_or(0));
        let pictures = dir_bytes(&dir.join("pictures"));
        let (rss, hwm) = proc_memory(node.pid()).unwrap_or((0, 0));
        say(format!(
            "    [{:>6.1} s] behind {behind}, snapshot {} of {} bytes sent; its pictures {:.0} of {:.0} MiB; RSS {:.0} MiB (peak {:.0})",
            t0.elapsed().as_secs_f64(),
            me.as_ref().map_or("-".to_string(), |m| m["snapshot_sent_bytes"].to_string()),
            me.as_ref().map_or("-".to_string(), |m| m["snapshot_bytes"].to_string()),
            pictures as f64 / 1048576.0,
            pictures_1 as f64 / 1048576.0,
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        ));
        if voter_s.is_some() && pictures >= pictures_1 {
            break t0.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            bail!("coordinator {id} did not catch up within an hour; logs in {}", work.display());
        }
    };
    let peak = proc_memory(node.pid()).map_or(0, |(_, hwm)| hwm);
    let voter_s = voter_s.unwrap_or(pictures_s);
    let disk = dir_bytes(&dir);
    say(format!(
        "==> coordinator {id}: a voter after {voter_s:.1} s (snapshot of {:.1} MiB, {max_behind} entries behind at most), every picture after {pictures_s:.1} s ({:.0} MiB/s of pictures); peak RSS {:.0} MiB; data dir {:.0} MiB (coordinator 1: {:.0} MiB)",
        snapshot_bytes as f64 / 1048576.0,
        pictures_1 as f64 / 1048576.0 / pictures_s.max(1e-9),
        peak as f64 / 1024.0,
        disk as f64 / 1048576.0,
        held_by_1 as f64 / 1048576.0
    ));
    drop(node);
    Ok(json!({
        "id": id, "voter_s": voter_s, "pictures_s": pictures_s, "snapshot_bytes": snapshot_bytes, "max_behind": max_behind,
        "pictures_mib": pictures_1 as f64 / 1048576.0, "peak_rss_mib": peak as f64 / 1024.0,
        "data_dir_mib": disk as f64 / 1048576.0, "data_dir_mib_coordinator_1": held_by_1 as f64 / 1048576.0,
    }))
}

/// "90s", "30m", "1h", "2d" in seconds (the coordinator checks --keep itself).
fn age_s(s: &str) -> Option<u64> {
    let (n, unit) = s.trim().split_at(s.trim().len().checked_sub(1)?);
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.parse::<u64>().ok().map(|n| n * mult)
}

/// A 320x180 JPEG (what a worker stores for a reduced frame), made once with the FFmpeg CLI.
fn picture(work: &Path) -> Result<Vec<u8>> {
    let out = work.join("frame.jpg");
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-frames:v", "1", "-q:v", "4"])
        .arg(&out)
        .status()
        .context("run ffmpeg (scripts/setup.sh installs it)")?;
    if !st.success() {
        bail!("ffmpeg could not make the picture");
    }
    Ok(std::fs::read(out)?)
}

async fn stream(o: &Options, addrs: &[String], pids: &[u32], work: &Path, total: u64, jpeg: &[u8], say: &dyn Fn(String)) -> Result<Vec<Sample>> {
    let coords = Coordinators::new(addrs).map_err(anyhow::Error::msg)?;
    let name = "camera-worker".to_string();
    let model = if o.objects { "objects" } else { "colors" };
    // An ingest address nothing listens on: the camera is simulated, no one pushes.
    let ingest = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
    coords
        .call(20, |ch| {
            let r = RegisterRequest { name: name.clone(), addr: ingest.clone(), capacity: 1, models: vec![model.to_string()] };
            async move { WorkerApiClient::new(ch).register(r).await }
        })
        .await
        .context("register the simulated worker")?;
    let held: Arc<Mutex<Vec<LeaseRef>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let hb = {
        let (coords, name, held, stop) = (coords.clone(), name.clone(), held.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let leases = held.lock().unwrap().clone();
                let _ = coords
                    .call(3, |ch| {
                        let r = HeartbeatRequest { name: name.clone(), leases: leases.clone() };
                        async move { WorkerApiClient::new(ch).heartbeat(r).await }
                    })
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await; // a heartbeat: the worker is live
    let job = coords
        .call(20, |ch| {
            let (rules, zones) = if o.objects {
                (vec!["arrive: person enters right".to_string(), "crowd: count(person) >= 3 for 10s, cooldown 1m".to_string()], vec!["right=0.5,0,1,0,1,1,0.5,1".to_string()])
            } else {
                (Vec::new(), Vec::new())
            };
            let r = LiveRequest { pictures_every: "0".into(), no_frames: false, models: vec![model.into()], name: "camera".into(), frame_step: 1, keep: o.keep.clone(), keep_what: "both".into(), rules, zones };
            async move { PanoptesClient::new(ch).create_live_endpoint(r).await }
        })
        .await
        .context("create the live job")?
        .job_id;
    let deadline = Instant::now() + Duration::from_secs(60);
    let a = loop {
        let l = coords
            .call(3, |ch| {
                let r = LeaseRequest { name: name.clone(), free_slots: 1 };
                async move { WorkerApiClient::new(ch).lease(r).await }
            })
            .await;
        if let Some(a) = l.ok().and_then(|l| l.shards.into_iter().find(|s| s.job_id == job)) {
            break a;
        }
        if Instant::now() > deadline {
            bail!("the live job's stream was never leased to the simulated worker");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    *held.lock().unwrap() = vec![LeaseRef { job_id: a.job_id.clone(), shard: a.shard, epoch: a.epoch }];

    let every = o.sample_min * 60 * FPS;
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut next = a.resume_frame;
    let mut next_sample = every;
    while next < total {
        let upto = (next + o.batch).min(total);
        // The analysed frame's size goes with every frame (zones in fractions need it).
        let picture = if jpeg.is_empty() { o.objects.then_some((jpeg, 320, 180)) } else { Some((jpeg, 320, 180)) };
        let req = sim_report(&name, &a, next..upto, false, picture, o.objects);
        let r = coords
            .call(5, |ch| {
                let r = req.clone();
                async move { WorkerApiClient::new(ch).max_encoding_message_size(64 << 20).report(r).await }
            })
            .await;
        match r {
            Ok(resp) if resp.accepted => next = upto,
            Ok(resp) => bail!("the report of frames {next}..{upto} was refused: {}", resp.reason),
            Err(e) => {
                say(format!("    report of frames {next}..{upto} not delivered ({}); retrying", e.message()));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        if next >= next_sample || next >= total {
            next_sample += every;
            let members: Vec<(u64, u64)> = pids
                .iter()
                .enumerate()
                .map(|(i, pid)| (proc_memory(*pid).map_or(0, |(rss, _)| rss), dir_bytes(&work.join(format!("c{}", i + 1)))))
                .collect();
            let st = coords
                .call(5, |ch| {
                    let r = JobRef { job_id: job.clone() };
                    async move { PanoptesClient::new(ch).get_status(r).await }
                })
                .await?;
            let wall_s = start.elapsed().as_secs_f64();
            let m: Vec<String> = members.iter().map(|(r, d)| format!("{:.0} MiB RSS, {:.0} MiB on disk", *r as f64 / 1024.0, *d as f64 / 1048576.0)).collect();
            say(format!(
                "    [{:>5.2} h of {} h, {wall_s:>6.0} s] {}; kept from frame {}",
                next as f64 / (3600 * FPS) as f64,
                o.hours,
                m.join(" | "),
                st.retained_from_frame
            ));
            samples.push(Sample { frame: next, wall_s, members, retained_from: st.retained_from_frame });
        }
    }
    stop.store(true, Ordering::Relaxed);
    hb.abort();
    Ok(samples)
}
