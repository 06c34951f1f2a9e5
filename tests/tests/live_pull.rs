//! Pull sources: an rtmp:// URL given to `submit` becomes a live job on one
//! worker, which opens the stream itself. The FFmpeg CLI serves the stream
//! (`-listen 1`: an RTMP server for one player); the test kills that server
//! mid-stream and starts another on the same URL: the worker reopens the
//! source with backoff, frame numbers continue, the gap is counted, and the
//! job completes when the stream ends cleanly and does not come back.
//! Every wait is bounded.
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use panoptes_tests::{free_port, wait_for, Cluster};

/// Serve `seconds` of a generated stream, in real time, to the first player of `url`.
fn serve(url: &str, seconds: u32) -> Child {
    Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25"])
        .args(["-t", &seconds.to_string(), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25"])
        .args(["-f", "flv", "-listen", "1", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run ffmpeg (is the FFmpeg CLI installed?)")
}

#[test]
fn a_pull_source_that_drops_is_reopened_and_its_frames_continue() {
    let c = Cluster::start_with_live("reconnect_attempts = 3\nreconnect_backoff_ms = 200\nreconnect_max_backoff_ms = 400\nidle_timeout_s = 3");
    let url = format!("rtmp://127.0.0.1:{}/live/cam", free_port());
    let mut first = serve(&url, 60);
    let v = c.cli_json(&["submit", &url, "--models", "colors", "--json"]);
    let job = v["job_id"].as_str().unwrap_or_else(|| panic!("no job_id in {v}")).to_string();
    let s = c.cli_json(&["status", &job, "--json"]);
    assert_eq!(s["state"], "running", "a pull source is not probed: its job runs at once: {s}");

    // Drop the source mid-stream, then serve it again at the same URL.
    wait_for("results from the first server", Duration::from_secs(30), || (c.results(&job).len() >= 10).then_some(()));
    let _ = first.kill();
    let _ = first.wait();
    let mut second = serve(&url, 3);
    wait_for("the second server's stream to end", Duration::from_secs(60), || second.try_wait().unwrap());

    // It ended cleanly and does not come back: the job completes.
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    let unique = c.frames_once(&job);
    // Numbering continued across the reconnection: the last frame is beyond
    // what the second server alone sent (75 frames).
    let last = *unique.iter().last().unwrap();
    assert!(last >= 75 + 10 - 1, "frame numbers restarted after the reconnection: last frame {last}");
    assert!(c.workers[0].log_text().contains("pull source reopened"), "{}", c.logs());
    // Timestamps go on too (the second connection's clock is shifted).
    let ts: Vec<f64> = c.results(&job).iter().map(|r| r["timestamp"].as_f64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "timestamps went back after the reconnection: {ts:?}");
    let reconnects = c.worker_metric(0, &format!("panoptes_worker_live_reconnects_total{{job_id=\"{job}\"}}"));
    let gap = c.worker_metric(0, &format!("panoptes_worker_live_gap_ms_total{{job_id=\"{job}\"}}"));
    assert!(reconnects >= 1.0 && gap > 0.0, "reconnects {reconnects}, gap {gap} ms");
    // The job's own metrics carry them too.
    let m = c.cli_json(&["metrics", &job, "--json"]);
    assert_eq!(m["reconnects"].as_f64(), Some(reconnects), "{m}");
    assert_eq!(m["gap_ms"].as_f64(), Some(gap), "{m}");
    eprintln!("{job}: {} frames, last {last}, {reconnects} reconnects, gap {gap} ms", unique.len());
}

#[test]
fn a_pull_source_that_never_opens_fails_its_job_with_a_clear_error() {
    let c = Cluster::start_with_live("reconnect_attempts = 2\nreconnect_backoff_ms = 100\nreconnect_max_backoff_ms = 200");
    let url = format!("rtmp://127.0.0.1:{}/live/nothing", free_port());
    let v = c.cli_json(&["submit", &url, "--models", "colors", "--json"]);
    let job = v["job_id"].as_str().unwrap().to_string();
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "failed", "{s}");
    let err = s.to_string();
    assert!(err.contains("cannot open the pull source") && err.contains("reconnect_attempts"), "{s}");
}

#[test]
fn a_pull_source_resumes_on_another_worker_when_its_worker_dies() {
    let mut c = Cluster::start_with_live("reconnect_attempts = 3\nreconnect_backoff_ms = 200\nreconnect_max_backoff_ms = 400\nidle_timeout_s = 3");
    c.start_worker("w2");
    wait_for("two workers", Duration::from_secs(30), || {
        let s = c.cli_json(&["cluster", "status", "--json"]);
        (s["workers"].as_array().map_or(0, |w| w.len()) == 2).then_some(())
    });
    let url = format!("rtmp://127.0.0.1:{}/live/cam", free_port());
    let mut first = serve(&url, 60);
    let v = c.cli_json(&["submit", &url, "--models", "colors", "--json"]);
    let job = v["job_id"].as_str().unwrap().to_string();
    wait_for("results from the first worker", Duration::from_secs(30), || (c.results(&job).len() >= 10).then_some(()));
    let holder = wait_for("the worker reading the source", Duration::from_secs(10), || {
        c.workers.iter().position(|w| w.log_text().contains("opening the pull source"))
    });
    let other = 1 - holder;
    c.workers[holder].kill9();
    let _ = first.kill();
    let _ = first.wait();
    let before = c.results(&job).len();
    // Served again: the other worker takes the shard over once the lease expires.
    let mut second = serve(&url, 3);
    wait_for("the other worker to open the source", Duration::from_secs(30), || {
        c.workers[other].log_text().contains("opening the pull source").then_some(())
    });
    wait_for("the second server's stream to end", Duration::from_secs(60), || second.try_wait().unwrap());
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    let unique = c.frames_once(&job);
    assert!(unique.len() > before, "the other worker analysed nothing");
    // The other worker numbered on from the committed cursor: nothing it sent
    // was dropped as already committed, so its frames lie past the first's.
    let last = *unique.iter().last().unwrap();
    assert!(last >= 75 + 10 - 1, "frame numbers restarted on the other worker: last frame {last}");
    let ts: Vec<f64> = c.results(&job).iter().map(|r| r["timestamp"].as_f64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "timestamps went back on the other worker: {ts:?}");
}

#[test]
fn a_pull_source_that_goes_silent_and_does_not_come_back_fails_its_job_keeping_its_frames() {
    let c = Cluster::start_with_live("reconnect_attempts = 2\nreconnect_backoff_ms = 200\nreconnect_max_backoff_ms = 400\nidle_timeout_s = 2");
    let url = format!("rtmp://127.0.0.1:{}/live/cam", free_port());
    let mut server = serve(&url, 60);
    let v = c.cli_json(&["submit", &url, "--models", "colors", "--json"]);
    let job = v["job_id"].as_str().unwrap().to_string();
    wait_for("results from the source", Duration::from_secs(30), || (c.results(&job).len() >= 10).then_some(()));
    // The server freezes: its connection stays open but sends nothing (a
    // camera or a network that died), and it accepts no new connection.
    let st = Command::new("kill").args(["-STOP", &server.id().to_string()]).status().unwrap();
    assert!(st.success());
    let s = c.wait_finished(&job, Duration::from_secs(60));
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(s["state"], "failed", "{s}\n{}", c.logs());
    let err = s["error"].as_str().unwrap_or_default();
    assert!(err.contains("went silent after frame") && err.contains("live.idle_timeout_s") && err.contains(&url), "{s}");
    // What was committed before stays.
    let kept = c.frames_once(&job);
    assert!(kept.len() >= 10, "{} frames kept", kept.len());
    assert_eq!(s["frames_done"].as_u64(), Some(kept.len() as u64), "{s}");
}
