//! Observability of a worker, end to end with real processes: its Prometheus
//! metrics and health over HTTP (read with a plain TCP stream), its metrics
//! port when two workers share a host, and its JSON logs carrying the job,
//! shard and frame of each line.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use panoptes_tests::{bin, client_command, free_port, http_get, make_video, metrics_addr, models_dir, sample, wait_for, web_addr, Cluster, Node};
use serde_json::Value;

/// Scrape `addr` until every series in `want` has its value (bounded); the last scrape.
fn scrape_until(addr: &str, want: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http_get(addr, "/metrics");
        assert_eq!(code, 200, "GET /metrics: {body}");
        let missing: Vec<String> =
            want.iter().filter(|(s, v)| sample(&body, s) != Some(*v)).map(|(s, v)| format!("{s} = {v} (got {:?})", sample(&body, s))).collect();
        if missing.is_empty() {
            return body;
        }
        assert!(Instant::now() < deadline, "metrics never reached {missing:?}:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Submit `video` for `colors` every other frame and wait; (job id, frames analysed).
fn run_colors_job(c: &Cluster, video: &Path) -> (String, f64) {
    let out = c.cli(&["submit", video.to_str().unwrap(), "--models", "colors", "--frame-step", "2", "--wait", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("submit: {}\n{}", String::from_utf8_lossy(&out.stderr), c.logs()));
    assert_eq!(status["state"], "completed", "{status}\n{}", c.logs());
    let frames = status["frames_done"].as_u64().unwrap();
    assert_eq!(Some(frames), status["frames_total"].as_u64(), "{status}");
    (status["job_id"].as_str().unwrap().to_string(), frames as f64)
}

/// Start a worker like `Cluster::start_worker` does, with extra arguments and
/// environment variables.
fn spawn_worker(c: &Cluster, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Node {
    let log = c.dir.path().join(format!("{name}.log"));
    let mut cmd = Command::new(bin());
    cmd.arg("worker").arg("--config").arg(c.dir.path().join("cluster.toml"));
    cmd.args(["--name", name, "--coordinator", &c.addr]).arg("--models-dir").arg(models_dir());
    cmd.arg("--data-dir").arg(c.dir.path().join(name)).args(extra);
    cmd.envs(env.iter().copied());
    Node::spawn_command(name, cmd, &log)
}

#[test]
fn worker_serves_metrics_and_health_and_logs_job_shard_and_frame_as_json() {
    let mut c = Cluster::start(&["w1"]);
    let w1 = metrics_addr(&c.workers[0]);
    wait_for("w1's /healthz to answer 200 (it registers)", Duration::from_secs(60), || (http_get(&w1, "/healthz").0 == 200).then_some(()));

    // 1. A small job on w1 (3 shards of 10 analysed frames): the counts match it.
    let video = c.dir.path().join("clip.mp4");
    make_video(&video, 60, "160x120", 10);
    let (_job, frames) = run_colors_job(&c, &video);
    // The job completes once its last report is committed; the worker counts
    // the acknowledgement (and drops the shard) just after: scrape until then.
    let text = scrape_until(
        &w1,
        &[
            ("panoptes_worker_results_acknowledged_total", frames),
            ("panoptes_worker_shards_active", 0.0),
            ("panoptes_worker_model_queue_frames{model=\"colors\"}", 0.0),
            ("panoptes_worker_reporter_pending_frames", 0.0),
        ],
    );
    for (series, want) in [
        ("panoptes_worker_frames_analysed_total{model=\"colors\"}", frames),
        ("panoptes_worker_inference_seconds_count{model=\"colors\"}", frames),
        ("panoptes_worker_inference_seconds_bucket{model=\"colors\",le=\"+Inf\"}", frames),
        ("panoptes_worker_frames_decoded_total", frames),
        ("panoptes_worker_results_reported_total", frames),
        ("panoptes_worker_analysis_errors_total{model=\"colors\"}", 0.0),
        ("panoptes_worker_registered", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series}:\n{text}");
    }
    for series in ["panoptes_worker_leases_granted_total", "panoptes_worker_shards_ended_total{outcome=\"finished\"}", "panoptes_worker_report_commit_seconds_count"] {
        assert!(sample(&text, series).is_some_and(|v| v >= 1.0), "{series}:\n{text}");
    }
    for line in [
        "# TYPE panoptes_worker_frames_analysed_total counter",
        "# TYPE panoptes_worker_inference_seconds histogram",
        "# TYPE panoptes_worker_decode_seconds histogram",
        "# TYPE panoptes_worker_shards_active gauge",
        "# HELP panoptes_worker_frames_analysed_total Frames a model analysed successfully.",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?}:\n{text}");
    }
    assert_eq!(http_get(&w1, "/healthz").0, 200);
    // Text logs: a shard's lines name the job and the shard.
    let log1 = c.workers[0].log_text();
    let started = log1.lines().find(|l| l.contains("shard started")).unwrap_or_else(|| panic!("no shard started:\n{log1}"));
    assert!(started.contains("job_id=") && started.contains("shard="), "{started}");

    // 2. A second worker on the same host, listening on a port of its own and
    //    logging JSON: its metrics port is derived from that port (unless
    //    taken) and differs from w1's.
    let listen = free_port();
    let w2 = spawn_worker(&c, "w2", &["--listen", &format!("127.0.0.1:{listen}")], &[("PANOPTES_LOG_FORMAT", "json"), ("PANOPTES_LOG_LEVEL", "debug")]);
    c.workers.push(w2);
    let w2 = metrics_addr(&c.workers[1]);
    assert_ne!(w1, w2, "two workers on one host share a metrics address");
    let port: u16 = w2.rsplit_once(':').unwrap().1.parse().unwrap();
    // (Past port 55535 there is no port + 10000: any free port then.)
    let derived = listen.checked_add(10000);
    assert!(
        derived.is_none_or(|d| d == port) || c.workers[1].log_text().contains("metrics port taken"),
        "w2 listens on {listen}, metrics on {w2}"
    );
    wait_for("w2's /healthz to answer 200", Duration::from_secs(60), || (http_get(&w2, "/healthz").0 == 200).then_some(()));

    // 3. With w1 gone, w2 runs the next job: every line of its log is a JSON
    //    object, and its shard's lines carry job_id and shard (and frame for
    //    per-frame lines) as top-level fields.
    c.workers[0].kill9();
    let (job2, frames2) = run_colors_job(&c, &video);
    scrape_until(&w2, &[("panoptes_worker_frames_analysed_total{model=\"colors\"}", frames2), ("panoptes_worker_shards_active", 0.0)]);
    let log2 = c.workers[1].log_text();
    let lines: Vec<Value> = log2
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l}")))
        .collect();
    let of_job: Vec<&Value> = lines.iter().filter(|v| v["job_id"] == job2.as_str()).collect();
    let started = of_job.iter().find(|v| v["message"] == "shard started").unwrap_or_else(|| panic!("no 'shard started' for {job2}:\n{log2}"));
    assert!(started["shard"].is_u64() && started["level"] == "INFO" && started["timestamp"].is_string(), "{started}");
    let analysed = of_job.iter().find(|v| v["message"] == "frame analysed").unwrap_or_else(|| panic!("no 'frame analysed' for {job2}:\n{log2}"));
    assert!(analysed["shard"].is_u64() && analysed["frame"].is_u64() && analysed["model"] == "colors", "{analysed}");
    let acked = of_job.iter().find(|v| v["message"] == "report acknowledged").unwrap_or_else(|| panic!("no 'report acknowledged' for {job2}:\n{log2}"));
    assert!(acked["shard"].is_u64(), "{acked}");
    // Every frame of the job was analysed by w2, and logged with its frame number.
    let mut logged: Vec<u64> = of_job.iter().filter(|v| v["message"] == "frame analysed").filter_map(|v| v["frame"].as_u64()).collect();
    logged.sort();
    logged.dedup();
    assert_eq!(logged.len() as f64, frames2, "{logged:?}");
}

/// A result stream whose client went away ends on the coordinator even when
/// it has nothing to send. A job that cannot end (no worker runs it) is
/// followed over gRPC (`results --follow`), then over the web API's event
/// stream; the coordinator counts each open stream, and the count goes back
/// to 0 when the client is gone (before, it stayed until the job ended).
#[test]
fn result_streams_end_when_their_client_goes_away() {
    use std::io::{Read, Write};
    const OPEN: &str = "panoptes_coordinator_result_streams";
    let c = Cluster::start(&[]);
    let clip = c.dir.path().join("never-run.mp4");
    make_video(&clip, 30, "96x64", 25);
    let job = c.cli_json(&["submit", clip.to_str().unwrap(), "--models", "colors", "--json"])["job_id"].as_str().unwrap().to_string();
    let m = metrics_addr(c.coordinators[0].as_ref().unwrap());
    scrape_until(&m, &[(OPEN, 0.0)]);

    let mut follow = client_command()
        .args(["results", &job, "--follow", "--coordinator", &c.coordinator_addrs[0]])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start results --follow");
    scrape_until(&m, &[(OPEN, 1.0)]);
    // Several rounds of the stream's wait later, it is still open.
    std::thread::sleep(Duration::from_secs(3));
    scrape_until(&m, &[(OPEN, 1.0)]);
    follow.kill().unwrap();
    follow.wait().unwrap();
    scrape_until(&m, &[(OPEN, 0.0)]);

    let web = web_addr(&c);
    let mut s = std::net::TcpStream::connect(&web).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /api/jobs/{job}/results/stream HTTP/1.1\r\nHost: {web}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("event: status") {
        let n = s.read(&mut buf).expect("the event stream's first event");
        assert!(n > 0, "the event stream ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    scrape_until(&m, &[(OPEN, 1.0)]);
    drop(s);
    scrape_until(&m, &[(OPEN, 0.0)]);
}
