//! The built-in analyses against the reference fixtures in the repository's
//! `fixtures/` (real models from `models/`, made by `scripts/setup.sh`), judged by the spec's
//! Equality rule. Every disagreement is printed; agreement must be 100%.
//!
//! Frames come from the worker's own decoder and converter (panoptes-media).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use panoptes_worker::analysis::{self, Analysis, Engine, RgbFrame};

/// The spec's Equality rule (test support; its own unit tests run here too).
#[path = "support/equality.rs"]
mod equality;
use serde_json::Value;

/// The repository's `fixtures/`: clips and the reference's expected results.
fn fixtures_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    assert!(d.join("stills.mkv").is_file(), "{} has no stills.mkv: the fixtures are part of the repository", d.display());
    d
}

/// The models: `PANOPTES_MODELS_DIR`, else the repository's `models/`
/// (`scripts/setup.sh` makes it). Missing models fail the test.
fn models_dir() -> PathBuf {
    let d = std::env::var_os("PANOPTES_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"));
    assert!(
        d.join("nanodet_m_416_coco.onnx").is_file(),
        "no models in {}: run `bash scripts/setup.sh` (or set PANOPTES_MODELS_DIR)",
        d.display()
    );
    d
}

/// The onnxruntime engine, from `libonnxruntime.so` in the models directory
/// (`cargo xtask models` puts it there). Missing, the test fails: the
/// fixtures must pass on both engines.
fn onnxruntime() -> Engine {
    let library = models_dir().join(analysis::ONNXRUNTIME_LIBRARY);
    assert!(library.is_file(), "no {}: run `bash scripts/setup.sh` (cargo xtask models fetches it)", library.display());
    Engine::Onnxruntime { library }
}

/// Every frame of the clip as packed RGB24, through the worker's own decoder
/// and swscale conversion (panoptes-media), as in the cluster.
fn decode_rgb(clip: &Path) -> Vec<RgbFrame> {
    panoptes_media::decode_rgb(clip.to_str().unwrap(), 1, 0, u64::MAX, 720)
        .unwrap_or_else(|e| panic!("decode {}: {e}", clip.display()))
        .into_iter()
        .map(|(_, _, f)| f)
        .collect()
}

/// Expected records keyed by (frame, model).
fn expected(path: &Path) -> BTreeMap<(u64, String), Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("fixture line is JSON");
            let frame = v["frame"].as_u64().expect("frame");
            let model = v["model"].as_str().expect("model").to_owned();
            ((frame, model), v["results"].clone())
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    agreed: usize,
    total: usize,
    exact: usize,
    time: Duration,
}

/// Runs `models` over both clips; prints every disagreement and the
/// per-model agreement and speed; returns the disagreements.
fn check(models: &[&str], engine: &Engine) -> Vec<String> {
    let fixtures = fixtures_dir();
    let models_dir = models_dir();
    let loaded: Vec<(String, Arc<dyn Analysis>)> = models
        .iter()
        .map(|&m| {
            let t = Instant::now();
            let a = analysis::load_on(m, &models_dir, engine).unwrap_or_else(|e| panic!("load {m} on {engine:?}: {e}"));
            eprintln!("loaded {m} on {engine:?} in {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
            (m.to_owned(), a)
        })
        .collect();
    let mut failures = Vec::new();
    for clip in ["stills", "astronaut_zoom"] {
        let frames = decode_rgb(&fixtures.join(format!("{clip}.mkv")));
        let want = expected(&fixtures.join(format!("{clip}.expected.jsonl")));
        let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
        for (name, a) in &loaded {
            let tally = tallies.entry(name.as_str()).or_default();
            for (n, frame) in frames.iter().enumerate() {
                let Some(reference) = want.get(&(n as u64, name.clone())) else {
                    failures.push(format!("{clip} frame {n} {name}: no expected record"));
                    continue;
                };
                let t = Instant::now();
                let ours = a
                    .analyze(frame)
                    .unwrap_or_else(|e| panic!("{clip} frame {n} {name}: {e:#}"));
                tally.time += t.elapsed();
                tally.total += 1;
                if &ours == reference {
                    tally.exact += 1;
                }
                match equality::agree(name, reference, &ours) {
                    Ok(()) => tally.agreed += 1,
                    Err(why) => {
                        let msg = format!("{clip} frame {n} {name}: {why}\n    reference {reference}\n    ours      {ours}");
                        eprintln!("DISAGREE {msg}");
                        failures.push(msg);
                    }
                }
            }
        }
        for (name, t) in &tallies {
            eprintln!(
                "{clip:>15} {name:<8} agree {}/{} ({:.1}%), identical {}/{}, {:.1} ms/frame",
                t.agreed,
                t.total,
                100.0 * t.agreed as f64 / t.total.max(1) as f64,
                t.exact,
                t.total,
                t.time.as_secs_f64() * 1e3 / t.total.max(1) as f64
            );
        }
    }
    failures
}

#[test]
fn colors_and_objects_agree_with_reference() {
    let failures = check(&["colors", "objects"], &Engine::Tract);
    assert!(
        failures.is_empty(),
        "{} disagreement(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn objects_on_onnxruntime_agrees_with_reference() {
    let failures = check(&["objects"], &onnxruntime());
    assert!(failures.is_empty(), "{} disagreement(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn joy_on_onnxruntime_agrees_with_reference() {
    let failures = check(&["joy"], &onnxruntime());
    assert!(failures.is_empty(), "{} disagreement(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn a_missing_onnxruntime_library_names_the_key_and_the_fix() {
    let engine = Engine::Onnxruntime { library: PathBuf::from("/nonexistent/libonnxruntime.so") };
    // Only the first load in a process tries the library; this test's own
    // process may have loaded the real one already, so it runs in a child.
    if std::env::var_os("PANOPTES_TEST_ORT_MISSING").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_missing_onnxruntime_library_names_the_key_and_the_fix", "--nocapture"])
            .env("PANOPTES_TEST_ORT_MISSING", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        return;
    }
    let err = analysis::load_on("objects", &models_dir(), &engine).err().expect("loaded without a library").to_string();
    assert!(err.contains("/nonexistent/libonnxruntime.so") && err.contains("worker.onnxruntime_library") && err.contains("cargo xtask models"), "{err}");
}

#[test]
fn joy_agrees_with_reference() {
    let failures = check(&["joy"], &Engine::Tract);
    assert!(
        failures.is_empty(),
        "{} disagreement(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn analyses_are_shareable_across_threads() {
    // One loaded analysis, called from two threads at once, gives the same
    // answers as one thread.
    let frames = decode_rgb(&fixtures_dir().join("stills.mkv"));
    for name in ["colors", "objects", "joy"] {
        let a = analysis::load(name, &models_dir()).unwrap();
        let serial: Vec<Value> = frames.iter().map(|f| a.analyze(f).unwrap()).collect();
        let parallel: Vec<Value> = std::thread::scope(|s| {
            let handles: Vec<_> = frames
                .iter()
                .map(|f| s.spawn(|| a.analyze(f).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(serial, parallel, "{name}");
    }
}

#[test]
fn bad_model_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = analysis::load("objects", dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("nanodet_m_416_coco.onnx: not found"), "{err}");
    std::fs::write(dir.path().join("nanodet_m_416_coco.onnx"), b"not onnx").unwrap();
    let err = analysis::load("objects", dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("nanodet_m_416_coco.onnx"), "{err}");
    // A model of another layout (the emotion classifier) under NanoDet's name.
    std::fs::copy(
        models_dir().join("emotion_mini_xception_fer2013.onnx"),
        dir.path().join("nanodet_m_416_coco.onnx"),
    )
    .unwrap();
    let err = analysis::load("objects", dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("nanodet_m_416_coco.onnx: does not run on an f32 input [1, 3, 416, 416]"),
        "{err}"
    );
}
