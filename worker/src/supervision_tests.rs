//! The supervision of model actors, end to end through a real
//! `ShardSupervisor` (decoder, resizer, reporter and all) with
//! `ReportSink::Local`, over a small clip made with the ffmpeg CLI, and with
//! fake analyses that crash on chosen frames. (Beside the pipeline, not in
//! it: it runs shards through `local.rs`, which uses the pipeline.)
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use panoptes_proto::worker::FrameReport;
use serde_json::{json, Value};

use crate::pipeline::model::tests::actors_started;
use crate::metrics;
use panoptes_common::metrics::{counter, gauge, histogram};
use crate::analysis::{Analysis, RgbFrame};
use crate::local::{analyze, LocalRun};

const FRAMES: u64 = 12;

/// A 32x32 clip of `FRAMES` grey frames whose level is 20 × the frame
/// number, stored losslessly as RGB (FFV1, bgr0), so an analysis can tell
/// which frame it is given.
fn make_clip(dir: &Path) -> PathBuf {
    let path = dir.join("numbered.mkv");
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("color=c=black:s=32x32:r=10,format=rgb24,geq=r='N*20':g='N*20':b='N*20'")
        .args(["-frames:v", &FRAMES.to_string(), "-c:v", "ffv1", "-pix_fmt", "bgr0"])
        .arg(&path)
        .output()
        .expect("run the ffmpeg CLI");
    assert!(out.status.success(), "ffmpeg failed: {}", String::from_utf8_lossy(&out.stderr));
    path
}

fn frame_number(rgb: &RgbFrame) -> u64 {
    (f64::from(rgb.data[0]) / 20.0).round() as u64
}

/// Answers `[frame number]`; crashes on frame `on` (every frame if `None`)
/// the first `times` times it sees it, by panicking or, with `as_error`, by
/// returning an error.
struct Crashy {
    name: String,
    on: Option<u64>,
    times: u32,
    as_error: bool,
    crashes: AtomicU32,
}

impl Crashy {
    fn new(name: &str, on: Option<u64>, times: u32) -> Arc<Self> {
        Arc::new(Self { name: name.into(), on, times, as_error: false, crashes: AtomicU32::new(0) })
    }
}

impl Analysis for Crashy {
    fn name(&self) -> &str {
        &self.name
    }
    fn analyze(&self, rgb: &RgbFrame) -> anyhow::Result<Value> {
        let frame = frame_number(rgb);
        if self.on.is_none_or(|on| on == frame) && self.crashes.load(Ordering::SeqCst) < self.times {
            self.crashes.fetch_add(1, Ordering::SeqCst);
            if self.as_error {
                anyhow::bail!("bad input on {frame}");
            }
            panic!("boom on {frame}");
        }
        Ok(json!([frame]))
    }
}

/// Runs the local pipeline over the clip with these analyses; the frames reported, in order.
async fn run(analyses: Vec<Arc<dyn Analysis>>, max_restarts: u32) -> anyhow::Result<Vec<FrameReport>> {
    run_with(analyses, max_restarts, 1).await
}

/// [`run`] with `threads` frames analysed at once (lanes per model: `threads`, at most the depth, 3).
async fn run_with(analyses: Vec<Arc<dyn Analysis>>, max_restarts: u32, threads: u32) -> anyhow::Result<Vec<FrameReport>> {
    let dir = tempfile::tempdir()?;
    let clip = make_clip(dir.path());
    let run = LocalRun {
        source: clip.to_str().unwrap().to_string(),
        analyses: analyses.into_iter().map(|a| (a.name().to_string(), a)).collect(),
        frame_step: 1,
        target_height: 16,
        settings: crate::pipeline::ShardSettings {
            depth: 3,
            batch: 2,
            max_restarts,
            stall_limit: Duration::from_secs(120),
            live: Default::default(),
        },
        threads,
    };
    let mut frames = Vec::new();
    let done = analyze(run, |f| {
        frames.push(f);
        Ok(())
    });
    // A bound on the wait, not a timing assertion: the run takes about a second.
    tokio::time::timeout(Duration::from_secs(300), done).await.expect("the local run did not finish within 300 s")?;
    Ok(frames)
}

/// Every frame exactly once, in order; model `m`'s result for frame `f` as `expect(m, f)`.
fn check_frames(frames: &[FrameReport], names: &[&str], expect: impl Fn(&str, u64) -> Value) {
    let numbers: Vec<u64> = frames.iter().map(|f| f.frame).collect();
    assert_eq!(numbers, (0..FRAMES).collect::<Vec<_>>(), "every frame once, in order");
    for f in frames {
        let models: Vec<&str> = f.outputs.iter().map(|o| o.model.as_str()).collect();
        assert_eq!(models, names, "frame {}", f.frame);
        for o in &f.outputs {
            let got: Value = serde_json::from_str(&o.results_json).unwrap();
            assert_eq!(got, expect(&o.model, f.frame), "frame {} model {}", f.frame, o.model);
        }
    }
}

/// The value of counter `name` for `model`.
fn count(name: &str, model: &str) -> u64 {
    counter(name, &[("model", model)]).get()
}

fn distinct(ids: &[ractor::ActorId]) -> usize {
    ids.iter().collect::<std::collections::HashSet<_>>().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_crashing_once_is_restarted_and_the_frame_retried() {
    let crashy = Crashy::new("crash-once", Some(5), 1);
    let steady = Crashy::new("steady-a", None, 0);
    let frames = run(vec![crashy.clone(), steady], 3).await.unwrap();
    check_frames(&frames, &["crash-once", "steady-a"], |_, f| json!([f]));
    assert_eq!(crashy.crashes.load(Ordering::SeqCst), 1);
    // The crashed actor was replaced by a new one (not caught in place); the
    // other model's actor was left alone.
    let started = actors_started("crash-once");
    assert_eq!((started.len(), distinct(&started)), (2, 2), "{started:?}");
    assert_eq!(actors_started("steady-a").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_crashing_twice_gets_an_error_result_and_the_job_goes_on() {
    let crashy = Crashy::new("crash-always-4", Some(4), u32::MAX);
    let steady = Crashy::new("steady-b", None, 0);
    let frames = run(vec![steady, crashy.clone()], 3).await.unwrap();
    check_frames(&frames, &["steady-b", "crash-always-4"], |m, f| {
        if m == "crash-always-4" && f == 4 {
            json!({ "error": "crash-always-4 failed on frame 4: boom on 4" })
        } else {
            json!([f])
        }
    });
    // Crashed on the frame and on its retry: two restarts.
    assert_eq!(crashy.crashes.load(Ordering::SeqCst), 2);
    let started = actors_started("crash-always-4");
    assert_eq!((started.len(), distinct(&started)), (3, 3), "{started:?}");
    assert_eq!(actors_started("steady-b").len(), 1);
    // The metrics tell the same story (the model names are unique to this test).
    assert_eq!(count(metrics::FRAMES_ANALYSED, "steady-b"), FRAMES);
    assert_eq!(count(metrics::FRAMES_ANALYSED, "crash-always-4"), FRAMES - 1);
    assert_eq!(count(metrics::ANALYSIS_ERRORS, "crash-always-4"), 1);
    assert_eq!(count(metrics::MODEL_RESTARTS, "crash-always-4"), 2);
    assert_eq!(count(metrics::MODEL_RESTARTS, "steady-b"), 0);
    assert_eq!(histogram(metrics::INFERENCE_SECONDS, &[("model", "steady-b")]).count(), FRAMES);
    // The shard is over: its part of the queue gauge is withdrawn.
    assert_eq!(gauge(metrics::MODEL_QUEUE_FRAMES, &[("model", "crash-always-4")]).get(), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysis_error_is_supervised_like_a_panic() {
    let failing = Arc::new(Crashy { name: "err-on-2".into(), on: Some(2), times: u32::MAX, as_error: true, crashes: AtomicU32::new(0) });
    let frames = run(vec![failing], 3).await.unwrap();
    check_frames(&frames, &["err-on-2"], |_, f| {
        if f == 2 {
            json!({ "error": "err-on-2 failed on frame 2: bad input on 2" })
        } else {
            json!([f])
        }
    });
    assert_eq!(actors_started("err-on-2").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_crashing_on_every_frame_fails_the_shard_after_max_restarts() {
    let crashy = Crashy::new("crash-every", None, u32::MAX);
    let steady = Crashy::new("steady-c", None, 0);
    let err = run(vec![crashy.clone(), steady], 3).await.expect_err("the shard must fail").to_string();
    // Frame 0: crash, retry crash (error result); frame 1: crash, then a fourth crash in a row.
    assert!(err.contains("crashed 4 times") && err.contains("max_restarts (3)"), "{err}");
    assert!(err.contains("crash-every failed on frame 1: boom on 1"), "{err}");
    assert_eq!(crashy.crashes.load(Ordering::SeqCst), 4);
    assert_eq!(actors_started("crash-every").len(), 4);
}

/// Panics on every frame in `bad`, every time.
struct BadFrames {
    name: String,
    bad: Vec<u64>,
}

impl Analysis for BadFrames {
    fn name(&self) -> &str {
        &self.name
    }
    fn analyze(&self, rgb: &RgbFrame) -> anyhow::Result<Value> {
        let frame = frame_number(rgb);
        if self.bad.contains(&frame) {
            panic!("bad frame {frame}");
        }
        Ok(json!([frame]))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sporadic_bad_frames_never_fail_the_shard() {
    // Three bad frames cost six restarts in all, more than max_restarts (3),
    // but never more than two in a row: every bad frame gets its error result.
    let bad = Arc::new(BadFrames { name: "bad-3-6-9".into(), bad: vec![3, 6, 9] });
    let frames = run(vec![bad], 3).await.unwrap();
    check_frames(&frames, &["bad-3-6-9"], |_, f| {
        if [3, 6, 9].contains(&f) {
            json!({ "error": format!("bad-3-6-9 failed on frame {f}: bad frame {f}") })
        } else {
            json!([f])
        }
    });
    assert_eq!(actors_started("bad-3-6-9").len(), 7);
}

/// Counts the analyses running at once, over every instance sharing `inside`
/// and `most`; each call waits (at most 20 s) until `want` run at once, so a
/// pipeline that runs frames one at a time shows `most == 1`, not a race.
struct Overlapping {
    name: String,
    want: usize,
    inside: Arc<std::sync::Mutex<usize>>,
    most: Arc<std::sync::atomic::AtomicUsize>,
    seen: std::sync::Mutex<Vec<u64>>,
}

impl Analysis for Overlapping {
    fn name(&self) -> &str {
        &self.name
    }
    fn analyze(&self, rgb: &RgbFrame) -> anyhow::Result<Value> {
        let frame = frame_number(rgb);
        self.seen.lock().unwrap().push(frame);
        let now = {
            let mut n = self.inside.lock().unwrap();
            *n += 1;
            *n
        };
        self.most.fetch_max(now, Ordering::SeqCst);
        for _ in 0..2000 {
            if self.most.load(Ordering::SeqCst) >= self.want {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Stay inside a little, so that an oversubscribing pipeline would show more than `want`.
        std::thread::sleep(Duration::from_millis(20));
        *self.inside.lock().unwrap() -= 1;
        Ok(json!([frame]))
    }
}

fn overlapping(name: &str, want: usize, inside: &Arc<std::sync::Mutex<usize>>, most: &Arc<std::sync::atomic::AtomicUsize>) -> Arc<Overlapping> {
    Arc::new(Overlapping { name: name.into(), want, inside: inside.clone(), most: most.clone(), seen: Default::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_one_shard_are_analysed_in_parallel_and_reported_in_order() {
    let (inside, most) = (Arc::default(), Arc::default());
    let par = overlapping("lanes-3", 3, &inside, &most);
    let frames = run_with(vec![par.clone()], 3, 3).await.unwrap();
    check_frames(&frames, &["lanes-3"], |_, f| json!([f]));
    assert_eq!(most.load(Ordering::SeqCst), 3, "three lanes of one model ran at once");
    // Each frame analysed once: lanes split the frames, they do not repeat them.
    let mut seen = par.seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, (0..FRAMES).collect::<Vec<_>>());
    assert_eq!(actors_started("lanes-3").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_bound_the_analyses_running_at_once_over_all_models() {
    // Two models with up to two lanes each would run four frames at once;
    // two threads allow two.
    let (inside, most) = (Arc::default(), Arc::default());
    let a = overlapping("threads-a", 2, &inside, &most);
    let b = overlapping("threads-b", 2, &inside, &most);
    let frames = run_with(vec![a, b], 3, 2).await.unwrap();
    check_frames(&frames, &["threads-a", "threads-b"], |_, f| json!([f]));
    assert_eq!(most.load(Ordering::SeqCst), 2, "never more analyses at once than worker.threads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_one_lane_is_retried_there_and_the_other_lanes_go_on() {
    let crashy = Crashy::new("lane-crash-once", Some(5), 1);
    let frames = run_with(vec![crashy.clone()], 3, 3).await.unwrap();
    check_frames(&frames, &["lane-crash-once"], |_, f| json!([f]));
    assert_eq!(crashy.crashes.load(Ordering::SeqCst), 1);
    // Three lanes, and one replacement for the lane that crashed.
    assert_eq!(actors_started("lane-crash-once").len(), 4);
}
