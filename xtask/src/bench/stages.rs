//! The stages on their own: decode + resize against FFmpeg, inference (tract) against onnxruntime.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::*;

pub(super) fn decode_resize(plan: &Plan, bins: &Bins, work: &Path) -> Vec<Row> {
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

pub(super) fn inference(plan: &Plan, bins: &Bins, models_dir: &Path) -> Vec<Row> {
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
