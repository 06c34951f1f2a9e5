//! Per-model tract latency on fixed inputs, and per-frame latency of each
//! analysis on a real frame. Prints one JSON object per line.
//! Used by `cargo xtask bench-models`; run alone with
//! `cargo run -p panoptes-worker --example model_latency -- MODELS_DIR [ITERATIONS] [ONLY]`
//! (ONLY: run just the models whose file name contains it, no analyses;
//! for profiling one model under perf or callgrind).
use std::path::PathBuf;
use std::time::Instant;

use panoptes_worker::analysis;
use tract_onnx::prelude::*;

/// The inputs every side of the benchmark feeds the models (NHWC or NCHW as each expects).
const CASES: &[(&str, &[usize])] = &[
    ("nanodet_m_416_coco.onnx", &[1, 3, 416, 416]),
    ("mtcnn_pnet.onnx", &[1, 288, 384, 3]),
    ("mtcnn_rnet.onnx", &[1, 24, 24, 3]),
    ("mtcnn_onet.onnx", &[1, 48, 48, 3]),
    ("emotion_mini_xception_fer2013.onnx", &[1, 64, 64, 1]),
    ("gender_oarriaga_gray64.onnx", &[1, 64, 64, 1]),
];

/// The same deterministic input the Python side builds.
fn input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5).collect();
    tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), data).unwrap().into()
}

fn median_ms(mut f: impl FnMut(), iterations: usize) -> f64 {
    f(); // warm-up
    let mut t: Vec<f64> = (0..iterations)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[t.len() / 2]
}

fn main() -> TractResult<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "models".into()));
    let iterations: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    let only = args.next();
    for (file, shape) in CASES.iter().filter(|(f, _)| only.as_ref().is_none_or(|o| f.contains(o.as_str()))) {
        let plan = tract_onnx::onnx()
            .model_for_path(dir.join(file))?
            .with_input_fact(0, f32::fact(shape.to_vec()).into())?
            .into_optimized()?
            .into_runnable()?;
        let x = input(shape);
        let ms = median_ms(|| drop(plan.run(tvec!(x.clone().into())).unwrap()), iterations);
        println!("{}", serde_json::json!({"kind": "model", "model": file, "shape": shape, "tract_ms": ms}));
    }
    if only.is_some() {
        return Ok(());
    }
    // Whole analyses on a real 640x480 frame (the fixture's astronaut still).
    let clip = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/stills.mkv");
    if let Ok(frames) = panoptes_media::decode_rgb(clip, 1, 0, 1, 720) {
        let frame = &frames[0].2;
        for name in ["objects", "joy", "colors"] {
            let a = analysis::load(name, &dir).map_err(|e| anyhow::anyhow!("{e}"))?;
            let ms = median_ms(|| drop(a.analyze(frame).unwrap()), iterations);
            println!("{}", serde_json::json!({"kind": "analysis", "model": name, "frame": [frame.width, frame.height], "tract_ms": ms}));
        }
    }
    Ok(())
}
