//! Live RTMP push streams, end to end with real processes: `panoptes live`
//! creates an endpoint on a worker, the FFmpeg CLI pushes a generated stream
//! in real time (`-re`), results are readable while it runs, and the job
//! completes when the push ends. Every wait is bounded.
use std::collections::BTreeSet;
use std::time::Duration;

use panoptes_tests::{finish_push, free_port, push_file, push_stream, wait_for, Cluster};
use serde_json::Value;

fn create(c: &Cluster, models: &str, step: u32) -> (String, String) {
    let v = c.cli_json(&["live", "--models", models, "--frame-step", &step.to_string(), "--json"]);
    let job = v["job_id"].as_str().unwrap_or_else(|| panic!("no job_id in {v}")).to_string();
    let url = v["rtmp_url"].as_str().unwrap_or_else(|| panic!("no rtmp_url in {v}")).to_string();
    assert!(url.starts_with("rtmp://127.0.0.1:") && url.contains("/live/"), "{url}");
    (job, url)
}

/// Wait until the job's worker listens on the URL's port (its lease started).
fn wait_listening(c: &Cluster, url: &str) {
    let port = url.rsplit_once(':').unwrap().1.split('/').next().unwrap().to_string();
    wait_for("the worker to listen for the publisher", Duration::from_secs(30), || {
        c.workers.iter().any(|w| w.log_text().contains("waiting for the publisher") && w.log_text().contains(&format!(":{port}/live/"))).then_some(())
    });
}

/// The analysed frames of a job: each once, every one a multiple of `step`.
fn frames(c: &Cluster, job: &str, step: u64) -> Vec<u64> {
    let rows = c.results(job);
    let frames: Vec<u64> = rows.iter().map(|r| r["frame"].as_u64().unwrap()).collect();
    let unique: BTreeSet<u64> = frames.iter().copied().collect();
    assert_eq!(unique.len(), frames.len(), "a frame of {job} has two results: {frames:?}");
    assert!(frames.windows(2).all(|w| w[0] < w[1]), "results of {job} not ordered by frame");
    assert!(frames.iter().all(|f| f % step == 0), "a frame of {job} is not a multiple of {step}");
    frames
}

/// `panoptes analyze` of `clip` with `colors`: frame → its results.
fn analyse_file(clip: &std::path::Path) -> std::collections::BTreeMap<u64, Value> {
    let out = std::process::Command::new(panoptes_tests::bin())
        .args(["analyze", clip.to_str().unwrap(), "--models", "colors", "--json", "--models-dir"])
        .arg(panoptes_tests::models_dir())
        .output()
        .expect("run panoptes analyze");
    assert!(out.status.success(), "analyze: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["frame"].as_u64().unwrap(), v["results"].clone()))
        .collect()
}

fn metrics(c: &Cluster, job: &str) -> Value {
    c.cli_json(&["metrics", job, "--json"])
}

#[test]
fn two_live_streams_are_analysed_while_they_run_and_complete_when_the_pushes_end() {
    let c = Cluster::start(&["w1", "w2"]);
    wait_for("two workers", Duration::from_secs(30), || {
        let s = c.cli_json(&["cluster", "status", "--json"]);
        (s["workers"].as_array().map_or(0, |w| w.len()) == 2).then_some(())
    });
    let (a, url_a) = create(&c, "colors", 1);
    let (b, url_b) = create(&c, "colors", 2);
    assert_ne!(url_a, url_b);
    wait_listening(&c, &url_a);
    wait_listening(&c, &url_b);

    // Both push the same encoded clip, packets as they are: every analysed
    // frame can be checked against `panoptes analyze` of the file, so a
    // frame is known to be the one pushed with that number, and the frames
    // not analysed are known without the worker's own count of them.
    let clip = c.dir.path().join("pushed.flv");
    let made = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "8"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-f", "flv"])
        .arg(&clip)
        .status()
        .expect("run ffmpeg");
    assert!(made.success());
    let reference = analyse_file(&clip);
    assert_eq!(reference.len(), 200);
    // testsrc2 moves: frames differ, so a frame given another number would not match.
    let distinct: BTreeSet<String> = reference.values().map(|v| v.to_string()).collect();
    assert!(distinct.len() > 150, "only {} distinct results in 200 frames", distinct.len());
    let (pa, pb) = (push_file(&url_a, &clip), push_file(&url_b, &clip));
    // Results appear while the streams run.
    wait_for("results before the pushes end", Duration::from_secs(8), || (!c.results(&a).is_empty() && !c.results(&b).is_empty()).then_some(()));
    assert_eq!(c.cli_json(&["status", &a, "--json"])["state"], "running", "{a} ended before its push");
    assert!(finish_push(pa, Duration::from_secs(60)), "push to {url_a} failed");
    assert!(finish_push(pb, Duration::from_secs(60)), "push to {url_b} failed");

    for (job, step, pushed) in [(&a, 1u64, 200u64), (&b, 2, 100)] {
        let s = c.wait_finished(job, Duration::from_secs(60));
        assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
        assert_eq!(s["live"], true, "a live job not marked live: {s}");
        let got = frames(&c, job, step);
        for r in c.results(job) {
            let f = r["frame"].as_u64().unwrap();
            assert_eq!(Some(&r["results"]), reference.get(&f), "{job}: frame {f} is not the frame pushed with that number");
        }
        let m = metrics(&c, job);
        let dropped = m["frames_dropped"].as_u64().unwrap();
        assert_eq!(s["frames_done"].as_u64().unwrap(), got.len() as u64);
        // Every frame pushed was analysed exactly once (each checked above)
        // or dropped: the frames not analysed, counted here, are what the
        // worker says it dropped.
        let missing = (0..pushed).map(|i| i * step).filter(|f| !got.contains(f)).count() as u64;
        assert_eq!(missing, dropped, "{job}: {missing} pushed frames not analysed, but the worker counted {dropped} dropped; metrics {m}");
        assert_eq!(got.len() as u64 + dropped, pushed, "{job}: {} analysed + {dropped} dropped; metrics {m}", got.len());
        if dropped == 0 {
            let want: Vec<u64> = (0..pushed).map(|i| i * step).collect();
            assert_eq!(got, want, "{job}: frames not contiguous");
        }
        assert!(m["latency_ms"]["samples"].as_u64().unwrap() >= got.len() as u64, "{m}");
        assert!(m["latency_ms"]["p99"].as_f64().unwrap() >= m["latency_ms"]["p50"].as_f64().unwrap());
        eprintln!("{job}: {} frames, {dropped} dropped, latency {}", got.len(), m["latency_ms"]);
    }

    // A push to a finished stream's URL, or to a port no stream listens on, is refused.
    assert!(!finish_push(push_stream(&url_a, "160x120", 2), Duration::from_secs(30)), "a push to a finished stream was accepted");
    let unknown = format!("rtmp://127.0.0.1:{}/live/no-such-key", free_port());
    assert!(!finish_push(push_stream(&unknown, "160x120", 2), Duration::from_secs(30)), "a push to an unknown key was accepted");
}

#[test]
fn two_live_streams_run_at_once_on_one_worker() {
    let mut c = Cluster::start(&[]);
    c.start_worker_with_capacity("w1", 2);
    c.wait_workers(1);
    let (a, url_a) = create(&c, "colors", 1);
    let (b, url_b) = create(&c, "colors", 1);
    // Both on w1, each on its own slot port with its own key.
    assert_ne!(url_a.rsplit_once(':').unwrap().1.split('/').next(), url_b.rsplit_once(':').unwrap().1.split('/').next());
    wait_listening(&c, &url_a);
    wait_listening(&c, &url_b);
    // Both slots are taken (the streams wait for their publishers): a third
    // stream finds no room on the only worker.
    let out = c.cli(&["live", "--models", "colors", "--json"]);
    assert!(!out.status.success(), "a third stream got a slot on a worker of capacity 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no worker can ingest a live stream now"), "{}", String::from_utf8_lossy(&out.stderr));
    let (pa, pb) = (push_stream(&url_a, "160x120", 4), push_stream(&url_b, "160x120", 4));
    assert!(finish_push(pa, Duration::from_secs(60)), "push to {url_a} failed");
    assert!(finish_push(pb, Duration::from_secs(60)), "push to {url_b} failed");
    for job in [&a, &b] {
        let s = c.wait_finished(job, Duration::from_secs(60));
        assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
        let got = frames(&c, job, 1);
        let dropped = metrics(&c, job)["frames_dropped"].as_u64().unwrap();
        assert_eq!(got.len() as u64 + dropped, 100, "{job}: {} analysed + {dropped} dropped", got.len());
    }
    assert!(c.workers[0].log_text().matches("live stream leased").count() >= 2, "{}", c.logs());
}

#[test]
fn a_stream_faster_than_its_analysis_drops_frames_and_keeps_lag_bounded() {
    let c = Cluster::start(&["w1"]);
    c.wait_workers(1);
    let (job, url) = create(&c, "objects", 1);
    wait_listening(&c, &url);
    let p = push_stream(&url, "640x480", 10);
    assert!(finish_push(p, Duration::from_secs(60)), "push to {url} failed");
    // Bounded lag: once the push ends, at most a pipeline's depth of frames
    // remains to analyse, so the job completes soon after (bounded wait).
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    let got = frames(&c, &job, 1);
    let m = metrics(&c, &job);
    let dropped = m["frames_dropped"].as_u64().unwrap();
    assert!(dropped > 0, "objects on 640x480 at 25 fps kept up with the stream? {m}");
    assert_eq!(got.len() as u64 + dropped, 250, "{m}");
    eprintln!("{job}: {} frames analysed, {dropped} dropped, latency {}", got.len(), m["latency_ms"]);
}
