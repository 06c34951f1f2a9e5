//! `panoptes analyze`: a video analysed on this machine by the worker's own
//! pipeline, no cluster; results printed as `results` prints them, with the
//! track ids (and zones) the cluster's leader would give them.
use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Value};

use crate::args::AnalyzeArgs;
use panoptes_common::config::{WorkerConfig, WorkerFlags};
use panoptes_common::analytics;
use panoptes_common::tracking::JobTracker;
use panoptes_common::zones::Zone;

use crate::config::load_config;
use crate::jobs::resolve_source;
use crate::render;

pub(crate) async fn analyze(a: AnalyzeArgs) -> Result<ExitCode> {
    panoptes_worker::memory::tune_allocator();
    let cfg = load_config(a.config.as_deref())?;
    if a.frame_step == 0 {
        anyhow::bail!("--frame-step must be at least 1");
    }
    let mut names: Vec<String> = Vec::new();
    for m in &a.models {
        let m = m.trim().to_string();
        if names.contains(&m) {
            anyhow::bail!("model '{m}' is listed twice");
        }
        names.push(m);
    }
    let flags = WorkerFlags { models_dir: a.models_dir.clone(), models: Some(names.clone()), threads: a.threads, ..WorkerFlags::named("local") };
    let opts = WorkerConfig::local(&cfg, flags)?;
    panoptes_common::logging::init(cfg.log.format, "warn");
    let load_started = std::time::Instant::now();
    let loaded = panoptes_worker::node::load_analyses(&opts)?;
    let load_s = load_started.elapsed().as_secs_f64();
    let analyses = names.iter().map(|n| (n.clone(), loaded[n].clone())).collect();
    let threads = panoptes_worker::pipeline::Compute::new(opts.threads).threads;
    let run = panoptes_worker::local::LocalRun {
        source: resolve_source(&a.source),
        analyses,
        frame_step: a.frame_step,
        target_height: cfg.cluster.target_height,
        settings: opts.shard,
        threads: threads as u32,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let json_out = a.json;
    let started = std::time::Instant::now();
    let mut frames = 0u64;
    // Tracks, as the cluster's leader gives them: the same code over the same frames in order.
    let zones = a.zones.iter().map(|z| Zone::parse(z).map_err(|e| anyhow::anyhow!("--zone: {e}"))).collect::<Result<Vec<Zone>>>()?;
    panoptes_common::zones::check_names(zones.iter().map(|z| z.name.as_str())).map_err(|e| anyhow::anyhow!("--zone: {e}"))?;
    let zone_refs: Vec<&Zone> = zones.iter().collect();
    let mut tracker = JobTracker::default();
    panoptes_worker::local::analyze(run, |f| {
        frames += 1;
        let size = (f.width > 0 && f.height > 0).then_some((f.width, f.height));
        let mut rows = f.outputs.iter().map(|o| Ok((o.model.as_str(), serde_json::from_str::<Value>(&o.results_json)?))).collect::<Result<Vec<(&str, Value)>>>()?;
        analytics::frame(&mut tracker, &[], &mut [], f.frame, f.timestamp, &mut rows, &zone_refs, size).map_err(anyhow::Error::msg)?;
        for (model, results) in rows {
            if json_out {
                writeln!(out, "{}", json!({"frame": f.frame, "timestamp": f.timestamp, "model": model, "results": results}))?;
            } else {
                writeln!(out, "{}", render::result_line(f.frame, f.timestamp, model, &results))?;
            }
        }
        Ok(())
    })
    .await?;
    out.flush()?;
    // The summary goes to stderr: stdout holds only results.
    let secs = started.elapsed().as_secs_f64();
    let fps = frames as f64 / secs.max(1e-9);
    if json_out {
        eprintln!("{}", json!({"summary": {"frames": frames, "seconds": secs, "fps": fps, "load_seconds": load_s, "threads": threads}}));
    } else {
        eprintln!("analysed {frames} frames in {secs:.1} s ({fps:.1} frames/s) on {threads} threads; models loaded in {load_s:.1} s");
    }
    Ok(ExitCode::SUCCESS)
}
