//! `cargo xtask long-job [--minutes 20] [--coordinators 1,3]`: what a long
//! recording costs a coordinator. A 640×360 25 fps H.264 clip of the given
//! length (made once with the FFmpeg CLI, `testsrc2`), analysed with
//! `colors` on every frame by 1 worker, on 1 and on 3 coordinators, three
//! times: `--no-frames`, with the default picture rate (`--pictures-every
//! 1s`) and with a picture of every frame (`--pictures-every 0`). For each
//! run: every
//! coordinator's peak RSS (VmHWM), its data directory's bytes against the
//! bytes of results + pictures it holds, and the frame rate (first lease to
//! completion); and the ratio of the frame rate with pictures to without,
//! for each picture rate.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bench::{clock_ticks, json_line, output, proc_cpu_ticks, proc_memory, wait_for_workers};
use crate::{root, spawn};

/// The picture rates measured: none (`--no-frames`), then `--pictures-every` these.
const PICTURES: [Option<&str>; 3] = [None, Some("1s"), Some("0")];

fn pictures_label(p: Option<&str>) -> String {
    match p {
        None => "--no-frames".into(),
        Some("0") => "a picture of every frame (--pictures-every 0)".into(),
        Some(e) => format!("a picture per {e} (--pictures-every {e}, the default)"),
    }
}

struct Run {
    coordinators: usize,
    pictures: Option<&'static str>,
    frames: u64,
    fps: f64,
    /// Per coordinator: peak RSS KiB, data dir bytes, held bytes (results + pictures).
    members: Vec<(u64, u64, u64)>,
    /// CPU time a frame (ms): the worker's, and all coordinators' together.
    cpu_ms: (f64, f64),
    /// The worker's stage times a frame (ms): decode, resize, inference.
    stages_ms: (f64, f64, f64),
}

pub fn run(
    minutes: u64,
    coordinators: &[usize],
    models_dir: PathBuf,
    only: &[String],
    config: Option<&Path>,
    json_out: bool,
) -> Result<()> {
    let say = |s: String| {
        if json_out {
            eprintln!("{s}")
        } else {
            println!("{s}")
        }
    };
    let panoptes = root().join("target/debug/panoptes");
    if !panoptes.exists() {
        bail!(
            "{} is missing: run `cargo build -p panoptes` first",
            panoptes.display()
        );
    }
    let work = root().join("target/panoptes-longjob");
    std::fs::create_dir_all(&work)?;
    let clip = work.join(format!("clip-{minutes}min-640x360.mp4"));
    if !clip.exists() {
        say(format!(
            "==> making a {minutes}-minute 640x360 25 fps H.264 clip: {}",
            clip.display()
        ));
        let tmp = clip.with_extension("tmp.mp4");
        let st = Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc2=size=640x360:rate=25:duration={}", minutes * 60),
            ])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "250",
                "-pix_fmt",
                "yuv420p",
            ])
            .arg(&tmp)
            .status()
            .context("run ffmpeg (is the FFmpeg CLI installed? scripts/setup.sh installs it)")?;
        if !st.success() {
            bail!("ffmpeg could not make the clip");
        }
        std::fs::rename(&tmp, &clip)?;
    }
    let mut runs = Vec::new();
    for &n in coordinators {
        for pictures in PICTURES.into_iter().filter(|p| only.is_empty() || only.iter().any(|o| o == p.unwrap_or("none"))) {
            say(format!(
                "==> {n} coordinator(s), 1 worker, colors on every frame, {}",
                pictures_label(pictures)
            ));
            let r = one(&panoptes, &models_dir, &work, &clip, n, pictures, config)?;
            for (i, (rss, disk, held)) in r.members.iter().enumerate() {
                say(format!(
                    "    coordinator {}: peak RSS {:.0} MiB, data dir {:.1} MiB for {:.1} MiB held ({:.2}x)",
                    i + 1,
                    *rss as f64 / 1024.0,
                    mib(*disk),
                    mib(*held),
                    *disk as f64 / (*held).max(1) as f64
                ));
            }
            say(format!(
                "    {} frames at {:.0} frames/s; CPU a frame: worker {:.2} ms, coordinators {:.2} ms; stages a frame: decode {:.2} ms, resize {:.2} ms, colors {:.2} ms",
                r.frames, r.fps, r.cpu_ms.0, r.cpu_ms.1, r.stages_ms.0, r.stages_ms.1, r.stages_ms.2
            ));
            runs.push(r);
        }
    }
    let mut out = Vec::new();
    for &n in coordinators {
        let of = |p: Option<&str>| runs.iter().find(|r| r.coordinators == n && r.pictures == p);
        for p in PICTURES.into_iter().skip(1) {
            if let (Some(with), Some(without)) = (of(p), of(None)) {
                say(format!(
                    "==> {n} coordinator(s): frame rate with {} / with --no-frames = {:.2}",
                    pictures_label(p),
                    with.fps / without.fps
                ));
            }
        }
    }
    for r in &runs {
        out.push(json!({
            "coordinators": r.coordinators, "pictures": r.pictures.is_some(), "pictures_every": r.pictures, "frames": r.frames, "frames_per_s": r.fps,
            "worker_cpu_ms_per_frame": r.cpu_ms.0, "coordinators_cpu_ms_per_frame": r.cpu_ms.1,
            "members": r.members.iter().map(|(rss, disk, held)| json!({"peak_rss_mib": *rss as f64 / 1024.0, "data_dir_mib": mib(*disk), "held_mib": mib(*held)})).collect::<Vec<_>>(),
        }));
    }
    if json_out {
        println!(
            "{}",
            json!({"command": format!("cargo xtask long-job --minutes {minutes}"), "minutes": minutes, "runs": out})
        );
    }
    Ok(())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Bytes of the files under `p`, recursively.
pub(crate) fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn one(
    panoptes: &Path,
    models_dir: &Path,
    work: &Path,
    clip: &Path,
    n: usize,
    pictures: Option<&'static str>,
    config: Option<&Path>,
) -> Result<Run> {
    let dir = work.join(format!(
        "c{n}-{}",
        match pictures {
            None => "no-frames".to_string(),
            Some(e) => format!("pictures-every-{e}"),
        }
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (coords, addrs) = crate::load::start_coordinators(panoptes, &dir, n, config)?;
    let addr = addrs.join(",");
    let wargs: Vec<String> = [
        "worker",
        "--name",
        "w1",
        "--coordinator",
        &addr,
        "--models-dir",
        &models_dir.display().to_string(),
        "--models",
        "colors",
        "--data-dir",
        &dir.join("w1").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let worker = spawn("w1", panoptes, &wargs, &dir.join("w1.log"))?.0;
    wait_for_workers(panoptes, &addr, 1)?;
    let mut submit = Command::new(panoptes);
    submit.args([
        "submit",
        &clip.display().to_string(),
        "--models",
        "colors",
        "--wait",
        "--json",
        "--coordinator",
        &addr,
    ]);
    match pictures {
        None => submit.arg("--no-frames"),
        Some(e) => submit.args(["--pictures-every", e]),
    };
    let status = json_line(
        &output(
            &mut submit,
            "panoptes submit --wait",
            Duration::from_secs(3600),
        )?,
        "submit",
    )?;
    if status["state"] != "completed" {
        bail!(
            "the job did not complete: {status}; logs in {}",
            dir.display()
        );
    }
    let job = status["job_id"].as_str().unwrap_or_default().to_string();
    let m = json_line(
        &output(
            Command::new(panoptes).args(["metrics", &job, "--json", "--coordinator", &addr]),
            "metrics",
            Duration::from_secs(60),
        )?,
        "metrics",
    )?;
    let frames = status["frames_done"].as_u64().unwrap_or(0);
    let secs = m["wall_time_s"].as_f64().unwrap_or(0.0) - m["queue_wait_s"].as_f64().unwrap_or(0.0);
    let per = |k: f64| k * 1000.0 / frames.max(1) as f64;
    let inference: f64 = m["inference_time_s"].as_object().map(|o| o.values().filter_map(|v| v.as_f64()).sum()).unwrap_or(0.0);
    let stages_ms = (per(m["ingest_time_s"].as_f64().unwrap_or(0.0)), per(m["resize_time_s"].as_f64().unwrap_or(0.0)), per(inference));
    // CPU so far (start-up included), before the reads below add to it.
    let tick_ms = 1000.0 / clock_ticks();
    let per_frame = |ticks: u64| ticks as f64 * tick_ms / frames.max(1) as f64;
    let cpu_ms = (
        per_frame(proc_cpu_ticks(worker.pid()).unwrap_or(0)),
        per_frame(coords.iter().filter_map(|c| proc_cpu_ticks(c.pid())).sum()),
    );
    // Let followers apply the last entries and repair fetch what they lack.
    std::thread::sleep(Duration::from_secs(if n > 1 { 8 } else { 1 }));
    let mut members = Vec::new();
    for (i, (c, a)) in coords.iter().zip(&addrs).enumerate() {
        let peak = proc_memory(c.pid()).map(|(_, hwm)| hwm).unwrap_or(0);
        let out = output(
            Command::new(panoptes).args(["results", &job, "--json", "--coordinator", a]),
            "results",
            Duration::from_secs(600),
        )?;
        let results: u64 = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|r| r["results"].to_string().len() as u64 + 8 + 19) // JSON, timestamp, key
            .sum();
        let data = dir.join(format!("c{}", i + 1));
        members.push((
            peak,
            dir_bytes(&data),
            results + dir_bytes(&data.join("pictures")),
        ));
    }
    drop(worker);
    drop(coords);
    Ok(Run {
        coordinators: n,
        pictures,
        frames,
        fps: if secs > 0.0 {
            frames as f64 / secs
        } else {
            0.0
        },
        members,
        cpu_ms,
        stages_ms,
    })
}
