//! The job commands, calls to the cluster: submit (and wait with a
//! progress bar), status, results, live, cancel, metrics, frame, prune, and
//! the lists of videos and models.
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use panoptes_client::pb;
use panoptes_client::views::{is_finished, metrics_json, state_name, status_json};
use serde_json::{json, Value};

use crate::args::{FrameArgs, JobArgs, ListArgs, LiveArgs, PruneArgs, ResultsArgs, SubmitArgs, ZoneArgs};
use crate::connect::{connect, explain, status_of};
use crate::render;

/// Local paths are resolved here (the coordinator's working directory differs).
pub(crate) fn resolve_source(source: &str) -> String {
    if source.contains("://") {
        return source.to_string();
    }
    let p = Path::new(source);
    match std::fs::canonicalize(p) {
        Ok(abs) => abs.display().to_string(),
        Err(_) if p.is_relative() => std::env::current_dir().map(|d| d.join(p).display().to_string()).unwrap_or_else(|_| source.to_string()),
        Err(_) => source.to_string(),
    }
}

pub(crate) async fn submit(a: SubmitArgs) -> Result<ExitCode> {
    // The API reads 0 as "the default (1)"; typed on the command line it is a mistake.
    if a.frame_step == 0 {
        anyhow::bail!("--frame-step must be at least 1 (1 analyses every frame, 2 every other frame, ...)");
    }
    // An empty source, or a name FFmpeg would read as a protocol (`concat:a|b`,
    // `data:…`, `pipe:0`) that is no file here, goes as given, for the
    // coordinator to refuse by name; made absolute it would look like a local
    // path (the empty one, the current directory).
    let protocol_like = {
        let len = a.source.find(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c))).unwrap_or(0);
        let rest = &a.source[len..];
        len > 0 && (rest.starts_with(':') || (rest.starts_with(',') && rest.contains(':')))
    };
    let as_given = a.source.trim().is_empty() || (protocol_like && !Path::new(&a.source).exists());
    let mut source = if as_given { a.source.clone() } else { resolve_source(&a.source) };
    if let Some(w) = &a.worker {
        match panoptes_media::device_source(&source) {
            Some((None, path)) => source = format!("v4l2://{w}{path}"),
            Some((Some(named), _)) if named != *w => anyhow::bail!("the source names worker '{named}' and --worker names '{w}': give one"),
            Some(_) => {}
            None => anyhow::bail!("--worker is for cameras (v4l2:///dev/videoN); other sources run on any worker"),
        }
    }
    let client = connect(&a.client)?;
    let req = pb::SubmitRequest {
        source,
        models: a.models.clone(),
        frame_step: a.frame_step,
        name: a.name.clone().unwrap_or_default(),
        request_id: a.request_id.clone().unwrap_or_else(|| format!("cli-{}-{}", std::process::id(), panoptes_common::now_ms())),
        target_height: 0,
        no_frames: a.pictures.no_frames,
        pictures_every: a.pictures.pictures_every.clone().unwrap_or_default(),
        keep: a.keep.keep.clone().unwrap_or_default(),
        keep_what: a.keep.keep_what.clone().unwrap_or_default(),
        rules: a.rules.rules.clone(),
        zones: a.rules.zones.clone(),
    };
    // Three tries per coordinator: a submit gets through a leader change.
    let resp = client.tries(3).submit(req).await.map_err(|s| explain(s, &client))?;
    let job = resp.job_id;
    if !a.wait {
        if a.json {
            println!("{}", json!({ "job_id": job }));
        } else {
            println!("{job}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let tty = std::io::stderr().is_terminal() && !a.json;
    if tty {
        eprintln!("submitted {job}; waiting for it to finish (Ctrl-C stops waiting, not the job)");
    }
    let started = Instant::now();
    let bar = tty.then(|| progress_bar(&job));
    let status = loop {
        let s = status_of(&client, &job).await?;
        if let Some(bar) = &bar {
            show_progress(bar, &render::progress(&s));
        }
        if is_finished(&s) {
            if let Some(bar) = &bar {
                bar.finish();
            }
            break s;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        let mut v = status_json(&status);
        v["wall_time_s"] = json!((secs * 1000.0).round() / 1000.0);
        println!("{v}");
    } else if status.error.is_empty() {
        println!(
            "{job} {}: {} of {} frames analysed in {:.1}s ({:.1} frames/s)",
            state_name(status.state),
            status.frames_done,
            status.frames_total,
            secs,
            status.frames_done as f64 / secs.max(1e-9)
        );
    } else {
        println!("{job} {}: {}", state_name(status.state), status.error);
    }
    Ok(if state_name(status.state) == "completed" { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The progress bar of `submit --wait` (indicatif, on standard error, which
/// it leaves alone when that is not a terminal).
fn progress_bar(job: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner().with_prefix(job.to_string());
    bar.set_style(indicatif::ProgressStyle::with_template("{prefix} {spinner} {msg} {elapsed}").expect("a valid template"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn show_progress(bar: &indicatif::ProgressBar, p: &render::Progress) {
    match p.length {
        Some(len) if bar.length() != Some(len) => {
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} frames  {per_sec}  ETA {eta}  {msg}")
                    .expect("a valid template")
                    .progress_chars("#>-"),
            );
            bar.set_length(len);
        }
        _ => {}
    }
    bar.set_position(p.position);
    bar.set_message(p.message.clone());
}

pub(crate) async fn status(a: JobArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let s = status_of(&client, &a.job).await?;
    if a.json {
        println!("{}", status_json(&s));
    } else {
        print!("{}", render::status_text(&s, state_name(s.state)));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn results(a: ResultsArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let req = pb::ResultsRequest {
        job_id: a.job.clone(),
        has_frame: a.frame.is_some(),
        frame: a.frame.unwrap_or(0),
        model: a.model.clone().unwrap_or_default(),
        follow: a.follow,
        ..Default::default()
    };
    let mut stream = client.stream_results(req).await.map_err(|s| explain(s, &client))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut n = 0u64;
    while let Some(r) = stream.message().await.map_err(|s| explain(s, &client))? {
        let results: Value = serde_json::from_str(&r.results_json).context("coordinator sent invalid results JSON")?;
        if a.json {
            writeln!(out, "{}", json!({"frame": r.frame, "timestamp": r.timestamp, "model": r.model, "results": results}))?;
        } else {
            writeln!(out, "{}", render::result_line(r.frame, r.timestamp, &r.model, &results))?;
        }
        n += 1;
        if a.follow {
            out.flush()?;
        }
    }
    out.flush()?;
    if n == 0 && a.frame.is_some() && !a.json {
        eprintln!("no results for frame {} (not analysed, or not committed yet)", a.frame.unwrap());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn cancel(a: JobArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let r = pb::JobRef { job_id: a.job.clone() };
    let s = client.cancel(r).await.map_err(|s| explain(s, &client))?;
    if a.json {
        println!("{}", status_json(&s));
    } else {
        println!("{} {}", s.job_id, state_name(s.state));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn zone(a: ZoneArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let s = client.add_zone(pb::AddZoneRequest { job_id: a.job.clone(), zone: a.zone.clone() }).await.map_err(|s| explain(s, &client))?;
    if a.json {
        println!("{}", status_json(&s));
    } else {
        let z = s.zones.last().map(|z| format!("{} (from frame {})", z.zone, z.from_frame)).unwrap_or_default();
        println!("{}: zone {z} added", s.job_id);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn live(a: LiveArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let req = pb::LiveRequest {
        models: a.models.clone(),
        name: a.name.clone().unwrap_or_default(),
        frame_step: a.frame_step,
        keep: a.keep.keep.clone().unwrap_or_default(),
        keep_what: a.keep.keep_what.clone().unwrap_or_default(),
        no_frames: a.pictures.no_frames,
        pictures_every: a.pictures.pictures_every.clone().unwrap_or_default(),
        rules: a.rules.rules.clone(),
        zones: a.rules.zones.clone(),
    };
    let e = client.create_live(req).await.map_err(|s| explain(s, &client))?;
    if a.json {
        println!("{}", json!({"job_id": e.job_id, "rtmp_url": e.rtmp_url}));
    } else {
        println!("{} created; push to {}", e.job_id, e.rtmp_url);
        println!("e.g. ffmpeg -re -i INPUT -c:v libx264 -preset ultrafast -tune zerolatency -f flv {}", e.rtmp_url);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn metrics(a: JobArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let r = pb::JobRef { job_id: a.job.clone() };
    let m = client.metrics(r).await.map_err(|s| explain(s, &client))?;
    let inference: BTreeMap<String, f64> = m.inference_time_s.clone().into_iter().collect();
    if a.json {
        println!("{}", metrics_json(&m));
    } else {
        print!("{}", render::metrics_text(&m, &inference));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn frame(a: FrameArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let r = pb::FrameRef { job_id: a.job.clone(), frame: a.frame, nearest: a.nearest };
    let f = client.annotated_frame(r).await.map_err(|s| explain(s, &client))?;
    let path = a.output.clone().unwrap_or_else(|| PathBuf::from(format!("{}-frame-{}.png", a.job, f.frame)));
    std::fs::write(&path, &f.png).with_context(|| format!("cannot write {}", path.display()))?;
    if a.json {
        println!(
            "{}",
            json!({"job_id": a.job, "frame": f.frame, "path": path.display().to_string(), "width": f.width, "height": f.height,
                   "analysed_width": f.analysed_width, "analysed_height": f.analysed_height, "bytes": f.png.len()})
        );
    } else {
        let instead = if f.frame != a.frame { format!(" (the nearest frame to {} with a stored picture)", a.frame) } else { String::new() };
        println!("{}: frame {}{instead} of {} drawn with its results ({}x{}, {} bytes)", path.display(), f.frame, a.job, f.width, f.height, f.png.len());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn prune(a: PruneArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let r = pb::PruneRequest { older_than_ms: a.older_than.as_millis() as u64 };
    let p = client.prune(r).await.map_err(|s| explain(s, &client))?;
    if a.json {
        println!(
            "{}",
            json!({"jobs": p.jobs, "job_ids": p.job_ids, "results": p.results, "frames": p.frames, "bytes": p.bytes,
                   "disk_bytes_before": p.disk_bytes_before, "disk_bytes_after": p.disk_bytes_after})
        );
    } else if p.jobs == 0 {
        println!("nothing to prune: no job finished more than {} ago", render::age(a.older_than));
    } else {
        println!(
            "pruned {} job(s) ({}): {} results, {} stored frames, {} freed in the store (on disk: {} before, {} now; sled reclaims space as it rewrites segments)",
            p.jobs,
            p.job_ids.join(", "),
            p.results,
            p.frames,
            render::bytes(p.bytes),
            render::bytes(p.disk_bytes_before),
            render::bytes(p.disk_bytes_after)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn videos(a: ListArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let r = client.videos(pb::ListVideosRequest { limit: 0 }).await.map_err(|s| explain(s, &client))?;
    if a.json {
        let v: Vec<Value> = r
            .videos
            .iter()
            .map(|v| json!({"id": v.job_id, "name": v.name, "source": v.source, "state": state_name(v.state), "frames": v.frames, "finished_at": v.finished_at_ms}))
            .collect();
        println!("{}", Value::Array(v));
    } else {
        print!("{}", render::videos_table(&r.videos, state_name));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn models(a: ListArgs) -> Result<ExitCode> {
    let client = connect(&a.client)?;
    let r = client.models(pb::ListModelsRequest {}).await.map_err(|s| explain(s, &client))?;
    if a.json {
        let v: Vec<Value> = r.models.iter().map(|m| json!({"name": m.name, "family": m.family, "files": m.files})).collect();
        println!("{}", Value::Array(v));
    } else {
        for m in &r.models {
            println!("{:<10} {:<10} {}", m.name, m.family, m.files.join(","));
        }
    }
    Ok(ExitCode::SUCCESS)
}
