//! End to end, with real processes: 1 coordinator (Raft on sled), 2 workers
//! (FFmpeg + tract), the CLI.
use std::collections::BTreeMap;
use std::time::Duration;

use panoptes_tests::{http_get, make_video, metrics_addr, sample, Cluster};

/// Frames analysed for `model`, summed over the cluster's workers (their
/// Prometheus counters).
fn analysed_by_workers(c: &Cluster, model: &str) -> f64 {
    c.workers
        .iter()
        .map(|w| {
            let (code, text) = http_get(&metrics_addr(w), "/metrics");
            assert_eq!(code, 200);
            sample(&text, &format!("panoptes_worker_frames_analysed_total{{model=\"{model}\"}}")).unwrap_or_else(|| panic!("no {model} series:\n{text}"))
        })
        .sum()
}

/// 1. Every analysed (frame, model) is stored exactly once, both workers take
///    part, and a coordinator killed with -9 comes back with the same results.
#[test]
fn t01_exactly_once_two_workers_and_coordinator_restart() {
    let mut c = Cluster::start(&["w1", "w2"]);
    let video = c.dir.path().join("clip.mp4");
    make_video(&video, 160, "320x240", 10);

    let out = c.cli(&["submit", video.to_str().unwrap(), "--models", "objects,colors", "--frame-step", "2", "--wait", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("submit: {}\n{}", String::from_utf8_lossy(&out.stderr), c.logs()));
    assert_eq!(status["state"], "completed", "{status}\n{}", c.logs());
    assert!(out.status.success());
    let job = status["job_id"].as_str().unwrap().to_string();
    assert_eq!(status["frames_total"], 80);
    assert_eq!(status["frames_done"], 80);

    let results = c.results(&job);
    let mut seen: BTreeMap<(u64, String), usize> = BTreeMap::new();
    for r in &results {
        *seen.entry((r["frame"].as_u64().unwrap(), r["model"].as_str().unwrap().to_string())).or_default() += 1;
        assert!(r["results"].is_array(), "{r}");
        assert!(r["timestamp"].is_f64(), "{r}");
    }
    for f in (0..160).step_by(2) {
        for m in ["objects", "colors"] {
            assert_eq!(seen.get(&(f, m.to_string())), Some(&1), "frame {f} model {m} not present exactly once");
        }
    }
    assert_eq!(results.len(), 160, "unexpected extra results");
    // Ordered by frame, then model in the job's order.
    let order: Vec<(u64, usize)> = results.iter().map(|r| (r["frame"].as_u64().unwrap(), if r["model"] == "objects" { 0 } else { 1 })).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "results are not ordered by frame then model");
    // Timestamps follow 25 fps.
    assert!((results[2]["timestamp"].as_f64().unwrap() - 0.08).abs() < 1e-6, "{}", results[2]);
    // colors: 3 colours whose fractions sum to 1.
    let colors = &results[1]["results"];
    let sum: f64 = colors.as_array().unwrap().iter().map(|c| c["fraction"].as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 0.002, "{colors}");

    for w in &c.workers {
        assert!(w.log_text().contains("shard started"), "worker {} took no shard:\n{}", w.name, w.log_text());
    }

    let snap = c.dir.path().join("c1/snapshots/current.snap");
    assert!(snap.exists(), "no snapshot was built; the log was never compacted");

    c.restart_coordinator();
    let again = c.results(&job);
    assert_eq!(again, results, "results changed across a coordinator restart");
    let s2 = c.cli_json(&["status", &job, "--json"]);
    assert_eq!(s2["state"], "completed");
    assert_eq!(s2["frames_done"], 80);
}

/// 2. A corrupt file and a missing file fail with an error naming the
///    problem; the cluster keeps serving other jobs.
#[test]
fn t02_bad_sources_fail_clearly_and_the_cluster_keeps_serving() {
    let c = Cluster::start(&["w1"]);
    let corrupt = c.dir.path().join("corrupt.mp4");
    let mut bytes = Vec::new();
    let mut x = 12345u32;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push(x as u8);
    }
    std::fs::write(&corrupt, &bytes).unwrap();
    let missing = c.dir.path().join("no-such-video.mp4");

    let j1 = c.cli_json(&["submit", corrupt.to_str().unwrap(), "--models", "colors", "--json"]);
    let j2 = c.cli_json(&["submit", missing.to_str().unwrap(), "--models", "colors", "--json"]);
    let good = c.dir.path().join("good.mp4");
    make_video(&good, 30, "160x120", 10);
    let j3 = c.cli_json(&["submit", good.to_str().unwrap(), "--models", "colors", "--json"]);

    let s1 = c.wait_finished(j1["job_id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!(s1["state"], "failed", "{s1}");
    let e1 = s1["error"].as_str().unwrap();
    assert!(e1.contains("corrupt.mp4") && (e1.contains("corrupt") || e1.contains("not a video") || e1.contains("Invalid data")), "{e1}");

    let s2 = c.wait_finished(j2["job_id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!(s2["state"], "failed", "{s2}");
    let e2 = s2["error"].as_str().unwrap();
    assert!(e2.contains("no-such-video.mp4") && e2.to_lowercase().contains("no such file"), "{e2}");

    let s3 = c.wait_finished(j3["job_id"].as_str().unwrap(), Duration::from_secs(180));
    assert_eq!(s3["state"], "completed", "{s3}\n{}", c.logs());
    assert_eq!(s3["frames_done"], 30);

    // `submit --wait` exits non-zero for a failed job.
    let out = c.cli(&["submit", missing.to_str().unwrap(), "--models", "colors", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
}

/// 3. Bad parameters are refused at submit time with what to do instead.
#[test]
fn t03_bad_parameters_are_refused_at_submit() {
    let c = Cluster::start(&[]);
    let out = c.cli(&["submit", "/tmp/x.mp4", "--models", "objects,unicorns"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown model 'unicorns'") && err.contains("objects") && err.contains("colors"), "{err}");

    let out = c.cli(&["submit", "/tmp/x.mp4", "--models", "colors,colors"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("listed twice"));

    let out = c.cli(&["submit", "/tmp/x.mp4", "--models", "colors", "--frame-step", "-3"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("negative"), "{}", String::from_utf8_lossy(&out.stderr));

    let out = c.cli(&["submit", "gopher://example/x", "--models", "colors"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).to_lowercase().contains("gopher"), "{}", String::from_utf8_lossy(&out.stderr));

    let out = c.cli(&["status", "job-999", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job job-999"));

    let out = c.cli(&["status", "banana"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a job id"));
}

/// 4. A worker killed with -9 while it holds a lease loses nothing: the lease
///    expires, the unacknowledged frames are leased again, and every
///    (frame, model) is still stored exactly once.
#[test]
fn t04_worker_killed_mid_shard_loses_nothing() {
    let mut c = Cluster::start(&["w1", "w2"]);
    let video = c.dir.path().join("long.mp4");
    make_video(&video, 240, "320x240", 10);
    let j = c.cli_json(&["submit", video.to_str().unwrap(), "--models", "objects,colors", "--json"]);
    let job = j["job_id"].as_str().unwrap().to_string();

    // Freeze w1 while the coordinator says it holds a lease, then kill it:
    // that lease can only end by expiring.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let w1_busy = |c: &Cluster| {
        let cs = c.cli_json(&["cluster", "status", "--json"]);
        cs["workers"].as_array().unwrap().iter().any(|w| w["name"] == "w1" && w["active_shards"] == 1)
    };
    loop {
        if w1_busy(&c) {
            c.workers[0].signal("STOP");
            if w1_busy(&c) {
                break;
            }
            c.workers[0].signal("CONT");
        }
        assert!(std::time::Instant::now() < deadline, "w1 never took a shard\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    c.workers[0].kill9();

    let s = c.wait_finished(&job, Duration::from_secs(300));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    assert_eq!(s["frames_done"], 240);
    let log = c.coordinator_log(1);
    assert!(log.contains("lease expired"), "the killed worker's lease never expired:\n{log}");

    let results = c.results(&job);
    assert_eq!(results.len(), 480);
    let mut seen = std::collections::BTreeSet::new();
    for r in &results {
        assert!(seen.insert((r["frame"].as_u64().unwrap(), r["model"].as_str().unwrap().to_string())), "duplicate {r}");
    }
}

/// 5. `panoptes analyze` (no cluster) and a cluster run of the same clip give
///    identical results, for all three analyses, on a clip with real content.
#[test]
fn t05_analyze_and_cluster_give_identical_results() {
    let c = Cluster::start(&["w1", "w2"]);
    let clip = panoptes_tests::fixture("astronaut_zoom.mkv");
    let clip = clip.to_str().unwrap();
    let models = "objects,joy,colors";

    let out = std::process::Command::new(panoptes_tests::bin())
        .args(["analyze", clip, "--models", models, "--frame-step", "3", "--json", "--models-dir"])
        .arg(panoptes_tests::models_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "analyze failed: {}", String::from_utf8_lossy(&out.stderr));
    let local: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(local.len(), 8 * 3, "24 frames, every 3rd, 3 models");
    assert!(local.iter().any(|r| r["model"] == "joy" && !r["results"].as_array().unwrap().is_empty()), "no face found");

    let s = c.cli_json(&["submit", clip, "--models", models, "--frame-step", "3", "--wait", "--json"]);
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    let cluster = c.results(s["job_id"].as_str().unwrap());
    assert_eq!(local, cluster, "analyze and the cluster disagree");
}

/// 6. Three coordinators: the Raft leader is killed with -9 while a job runs;
///    a new leader takes over, the job completes, and every (frame, model) is
///    stored exactly once. Clients and workers only know the member list.
#[test]
fn t06_leader_killed_mid_job_three_coordinators() {
    let mut c = Cluster::start_replicated(3, &["w1", "w2"]);
    let video = c.dir.path().join("clip.mp4");
    make_video(&video, 200, "320x240", 10);
    let j = c.cli_json(&["submit", video.to_str().unwrap(), "--models", "objects,colors", "--json"]);
    let job = j["job_id"].as_str().unwrap().to_string();

    // Wait for progress, then kill the leader.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let s = c.cli_json(&["status", &job, "--json"]);
        if s["frames_done"].as_u64().unwrap_or(0) >= 20 {
            assert_eq!(s["state"], "running", "finished before the leader could be killed: {s}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress: {s}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let old = c.leader();
    c.kill_coordinator(old);

    let s = c.wait_finished(&job, Duration::from_secs(300));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    assert_eq!(s["frames_done"], 200);
    let new = c.leader();
    assert_ne!(new, old, "the killed member still leads");

    let results = c.results(&job);
    assert_eq!(results.len(), 400, "expected 200 frames x 2 models");
    let mut seen = std::collections::BTreeSet::new();
    for r in &results {
        assert!(seen.insert((r["frame"].as_u64().unwrap(), r["model"].as_str().unwrap().to_string())), "duplicate {r}");
    }

    // The killed member comes back, catches up, and serves the same results.
    c.start_coordinator(old);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let only_old = c.coordinator_addrs[old as usize - 1].clone();
    loop {
        let out = panoptes_tests::client_command()
            .args(["status", &job, "--json", "--coordinator", &only_old])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["state"] == "completed" && v["frames_done"] == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "restarted member never caught up: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// 7. Work stealing wastes no analysis: a job of one shard (one keyframe,
///    fewer than 2 × shard_frames frames) is split for the idle second
///    worker, and the holder, told of the cut in its report's answer, stops
///    decoding there. Every frame is analysed exactly once over both workers.
#[test]
fn t07_a_stolen_tail_is_analysed_once() {
    let c = Cluster::start(&["w1", "w2"]);
    let video = c.dir.path().join("one-shard.mp4");
    make_video(&video, 39, "640x480", 250);
    let status = c.cli_json(&["submit", video.to_str().unwrap(), "--models", "objects,joy", "--no-frames", "--wait", "--json"]);
    assert_eq!(status["state"], "completed", "{status}\n{}", c.logs());
    assert_eq!(status["frames_done"], 39, "{status}");
    let job = status["job_id"].as_str().unwrap();
    assert_eq!(c.results(job).len(), 78, "one result per frame and model");
    let splits: usize = c.coordinators.iter().flatten().map(|n| n.log_text().matches("lease=split").count()).sum();
    assert!(splits >= 1, "the idle worker stole nothing from a 6-second shard, so this test shows nothing:\n{}", c.logs());
    for m in ["objects", "joy"] {
        assert_eq!(analysed_by_workers(&c, m), 39.0, "{m}: frames analysed by the workers for 39 frames in the job ({splits} splits)\n{}", c.logs());
    }
}

/// 8. Read your writes through a follower: a job submitted through a
///    follower and read back through the same connection at once is found
///    (the follower waits for a job id it has not applied yet instead of
///    answering "no job"; `submit --wait` through a follower polls exactly
///    like this and could fail that way).
#[test]
fn t08_a_job_submitted_through_a_follower_is_found_there_at_once() {
    use panoptes_proto::api::{self as pb, panoptes_client::PanoptesClient};
    let c = Cluster::start_replicated(3, &["w1"]);
    let leader = c.leader();
    let follower = c.coordinator_addrs.iter().enumerate().find(|(i, _)| *i as u64 + 1 != leader).map(|(_, a)| a.clone()).unwrap();
    let video = c.dir.path().join("clip.mp4");
    make_video(&video, 10, "160x120", 10);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ch = panoptes_tests::grpc_endpoint(&follower).connect().await.expect("connect to the follower");
        let mut client = PanoptesClient::new(ch);
        for round in 0..30 {
            let req = pb::SubmitRequest { source: video.display().to_string(), models: vec!["colors".into()], no_frames: true, ..Default::default() };
            let job = client.submit(req).await.unwrap_or_else(|e| panic!("round {round}: submit: {e:?}")).into_inner().job_id;
            let st = client.get_status(pb::JobRef { job_id: job.clone() }).await;
            assert!(st.is_ok(), "round {round}: status of {job} through the follower {follower}: {st:?}");
        }
    });
}
