//! The sum-of-stages limit: the per-frame cost of each stage of the worker's
//! pipeline — decode, resize (swscale to RGB24 at the target height), each
//! analysis — measured in one process on one thread over the same frames a
//! job with this frame step analyses. `1000 / total_ms` is the analysed
//! frames/s one core could reach if the cluster's own machinery (actors,
//! reports, Raft commits) cost nothing.
//!
//! Prints one JSON line:
//! `{"frames", "decode_ms", "resize_ms", "models": {NAME: ms}, "total_ms", "limit_fps", "cpu_ticks"}`
//! (milliseconds per analysed frame; model loading is not counted;
//! `cpu_ticks`: the process's CPU time over the same loop, which unlike the
//! wall clock does not grow when other processes share the core).
//!
//! Used by `cargo xtask bench`; run alone with
//! `PANOPTES_DECODE_THREADS=1 cargo run -p panoptes-worker --example stage_costs -- MODELS_DIR CLIP MODELS [FRAME_STEP] [TARGET_HEIGHT]`
//! e.g. `... -- models target/panoptes-sample/sample.mp4 objects,joy,colors 5 720`.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use panoptes_media::{Converter, Decoder};
use panoptes_worker::analysis;

/// This process's CPU time so far (user + system, in clock ticks), from
/// /proc/self/stat; `None` where there is no /proc.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!("usage: stage_costs MODELS_DIR CLIP MODELS [FRAME_STEP (1)] [TARGET_HEIGHT (720)]");
    }
    let dir = PathBuf::from(&args[0]);
    let clip = &args[1];
    let names: Vec<&str> = args[2].split(',').filter(|s| !s.is_empty()).collect();
    let step: u64 = args.get(3).map(|s| s.parse()).transpose().context("FRAME_STEP")?.unwrap_or(1).max(1);
    let target: u32 = args.get(4).map(|s| s.parse()).transpose().context("TARGET_HEIGHT")?.unwrap_or(720);

    let models = names
        .iter()
        .map(|n| analysis::load(n, &dir).map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<Result<Vec<_>>>()?;
    let info = panoptes_media::probe(clip).with_context(|| format!("probe {clip}"))?;
    let mut dec = Decoder::open(clip, None, info.pts0).with_context(|| format!("open {clip}"))?;
    let mut conv = Converter::new(target);

    let cpu0 = cpu_ticks();
    let (mut frames, mut decode_s, mut resize_s) = (0u64, 0.0, 0.0);
    let mut model_s = vec![0.0f64; models.len()];
    // As in the worker's decoder actor: an analysed frame's decode time
    // includes the frames skipped before it (the frame step).
    let mut t = Instant::now();
    while let Some(f) = dec.next_frame().with_context(|| format!("decode {clip}"))? {
        if f.index % step != 0 {
            continue;
        }
        decode_s += t.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let rgb = conv.convert(&f.frame)?;
        resize_s += t1.elapsed().as_secs_f64();
        for (m, s) in models.iter().zip(model_s.iter_mut()) {
            let t2 = Instant::now();
            std::hint::black_box(m.analyze(&rgb).with_context(|| format!("{} on frame {}", m.name(), f.index))?);
            *s += t2.elapsed().as_secs_f64();
        }
        frames += 1;
        t = Instant::now();
    }
    let cpu = cpu_ticks().zip(cpu0).map(|(b, a)| b - a);
    if frames == 0 {
        bail!("{clip}: no frame decoded");
    }
    let per = |s: f64| s * 1000.0 / frames as f64;
    let total = per(decode_s + resize_s + model_s.iter().sum::<f64>());
    let per_model: serde_json::Map<String, serde_json::Value> =
        names.iter().zip(&model_s).map(|(n, s)| (n.to_string(), per(*s).into())).collect();
    println!(
        "{}",
        serde_json::json!({
            "frames": frames, "decode_ms": per(decode_s), "resize_ms": per(resize_s),
            "models": per_model, "total_ms": total, "limit_fps": 1000.0 / total,
            "cpu_ticks": cpu,
        })
    );
    Ok(())
}
