//! Live drop policies (`[live] drop_policy`), end to end with real processes:
//! a worker configured with `latest` (the default), `lag` or `every_nth`, the FFmpeg CLI pushing a
//! generated stream in real time. Every wait is bounded; the only bounds on
//! measured values (latency, memory) are generous ones that an unbounded
//! queue would break on a stream this long.
use std::collections::BTreeSet;
use std::time::Duration;

use panoptes_tests::{finish_push, push_stream, http_get, metrics_addr, sample, wait_for, Cluster};
use serde_json::Value;

/// `panoptes live`, then wait until the worker listens for the publisher.
fn create(c: &Cluster, models: &str) -> (String, String) {
    let v = c.cli_json(&["live", "--models", models, "--json"]);
    let job = v["job_id"].as_str().unwrap_or_else(|| panic!("no job_id in {v}")).to_string();
    let url = v["rtmp_url"].as_str().unwrap_or_else(|| panic!("no rtmp_url in {v}")).to_string();
    let port = url.rsplit_once(':').unwrap().1.split('/').next().unwrap().to_string();
    wait_for("the worker to listen for the publisher", Duration::from_secs(30), || {
        c.workers.iter().any(|w| w.log_text().contains("waiting for the publisher") && w.log_text().contains(&format!(":{port}/live/"))).then_some(())
    });
    (job, url)
}

/// The frames of a job that `model` analysed, each once and in order.
fn frames(c: &Cluster, job: &str, model: &str) -> Vec<u64> {
    let frames: Vec<u64> = c.results(job).iter().filter(|r| r["model"] == model).map(|r| r["frame"].as_u64().unwrap()).collect();
    let unique: BTreeSet<u64> = frames.iter().copied().collect();
    assert_eq!(unique.len(), frames.len(), "a frame of {job} has two results: {frames:?}");
    frames
}

/// The worker's dropped-frame count for `reason` (its Prometheus metrics).
fn dropped_for(c: &Cluster, reason: &str) -> f64 {
    let (code, text) = http_get(&metrics_addr(&c.workers[0]), "/metrics");
    assert_eq!(code, 200);
    sample(&text, &format!("panoptes_worker_live_frames_dropped_total{{reason=\"{reason}\"}}"))
        .unwrap_or_else(|| panic!("no dropped-frames series for {reason} in the worker's metrics:\n{text}"))
}

/// Resident memory of a process, in KiB (/proc/PID/status VmRSS).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn lag_policy_keeps_latency_and_memory_bounded_when_analysis_is_slower_than_the_stream() {
    // One thread: objects alone is then slower than a 1280x720 stream, and
    // the worker's memory is that of one frame in analysis at a time, so
    // what grows is the queue this test bounds.
    let c = Cluster::start_with_live_worker("drop_policy = \"lag\"\nmax_lag_ms = 500", &["--threads", "1"]);
    let (job, url) = create(&c, "objects");
    let pid = c.workers[0].child.id();
    let seconds = 16u32;
    let p = push_stream(&url, "1280x720", seconds);
    // Memory once the stream flows (the model and decoder are set up).
    wait_for("first results", Duration::from_secs(30), || (!c.results(&job).is_empty()).then_some(()));
    let rss_start = rss_kib(pid);
    assert!(finish_push(p, Duration::from_secs(120)), "push to {url} failed");
    let rss_end = rss_kib(pid);
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());

    let got = frames(&c, &job, "objects");
    let m = c.cli_json(&["metrics", &job, "--json"]);
    let dropped = m["frames_dropped"].as_u64().unwrap();
    let pushed = u64::from(seconds) * 25;
    assert!(dropped > 0, "objects on 1280x720 at 25 fps on one thread kept up with the stream? {m}");
    // Every frame pushed was analysed exactly once or counted as dropped.
    assert_eq!(got.len() as u64 + dropped, pushed, "{} analysed + {dropped} dropped; metrics {m}", got.len());
    assert!(dropped_for(&c, "lag") + dropped_for(&c, "full") >= 1.0);
    assert_eq!(dropped_for(&c, "every_nth"), 0.0);
    // Bounded lag: a frame waits at most max_lag_ms, then at most a pipeline's
    // depth of frames ahead of it. An unbounded queue would reach most of the
    // stream's length (16 s) by its end; the bound is generous on purpose.
    let p99 = m["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p99 < f64::from(seconds) * 1000.0 / 2.0, "latency p99 {p99} ms grows with the stream: {m}");
    // Bounded memory: the waiting frames are capped (a growing queue of
    // 1280x720 frames would add about 1.4 MB per frame, 600 MB over this push).
    assert!(rss_end < rss_start + 300 * 1024, "worker RSS grew from {rss_start} KiB to {rss_end} KiB");
    eprintln!("{job}: {} analysed, {dropped} dropped, latency {}, RSS {rss_start} -> {rss_end} KiB", got.len(), m["latency_ms"]);
}

#[test]
fn latest_policy_analyses_the_freshest_frame_and_replaces_the_waiting_one() {
    // No drop_policy set: `latest` is the default.
    let c = Cluster::start_with_live("");
    let (job, url) = create(&c, "objects,joy");
    let seconds = 12u32;
    assert!(finish_push(push_stream(&url, "1280x720", seconds), Duration::from_secs(120)), "push to {url} failed");
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    let got = frames(&c, &job, "joy");
    let m = c.cli_json(&["metrics", &job, "--json"]);
    let dropped = m["frames_dropped"].as_u64().unwrap();
    let pushed = u64::from(seconds) * 25;
    assert!(dropped > 0, "objects,joy on 1280x720 at 25 fps kept up with the stream? {m}");
    assert_eq!(got.len() as u64 + dropped, pushed, "{} analysed + {dropped} dropped; metrics {m}", got.len());
    // Every drop was a waiting frame replaced by a newer one: none queued, none aged out.
    assert_eq!(dropped_for(&c, "replaced"), dropped as f64, "{m}");
    assert_eq!(dropped_for(&c, "lag") + dropped_for(&c, "full") + dropped_for(&c, "every_nth"), 0.0);
    // The last frame pushed is analysed: it waits for a free lane, nothing replaces it.
    assert_eq!(got.last().copied(), Some(pushed - 1), "{got:?}");
    // Not a timing check: a queue would make a frame's wait grow with the stream (12 s).
    let p99 = m["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p99 < f64::from(seconds) * 1000.0 / 2.0, "latency p99 {p99} ms grows with the stream: {m}");
    eprintln!("{job}: {} analysed, {dropped} dropped, latency {}", got.len(), m["latency_ms"]);
}

#[test]
fn every_nth_policy_analyses_one_frame_in_keep_every() {
    let c = Cluster::start_with_live("drop_policy = \"every_nth\"\nkeep_every = 3");
    let (job, url) = create(&c, "colors");
    assert!(finish_push(push_stream(&url, "320x240", 4), Duration::from_secs(60)), "push to {url} failed");
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    let got = frames(&c, &job, "colors");
    assert!(!got.is_empty());
    assert!(got.iter().all(|f| f % 3 == 0), "a frame not kept by keep_every = 3 was analysed: {got:?}");
    let m: Value = c.cli_json(&["metrics", &job, "--json"]);
    let dropped = m["frames_dropped"].as_u64().unwrap();
    assert_eq!(got.len() as u64 + dropped, 100, "{m}");
    // Two frames in three are left out by the policy (a few more if full).
    assert!(dropped_for(&c, "every_nth") >= 66.0, "{m}");
    assert_eq!(dropped_for(&c, "lag"), 0.0);
}
