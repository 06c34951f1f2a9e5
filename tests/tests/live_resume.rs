//! A live RTMP push resumes on another worker: the worker ingesting it is
//! killed mid-push (`kill -9`), and the publisher pushes again, with the same
//! stream key, to another worker's ingest lobby (from `cluster status`). The
//! stream moves there once the dead worker's lease expires; its frames are
//! numbered on from the committed cursor, and the job completes when the
//! second push ends, with every frame's result stored once. A push of an
//! unknown key to a lobby is refused, and the lobby goes on working.
//! Real processes; every wait is bounded.
use std::time::Duration;

use panoptes_tests::{finish_push, push_stream, wait_for, Cluster};

#[test]
fn a_push_resumes_on_another_workers_ingest_lobby_when_its_worker_dies() {
    let mut c = Cluster::start_with_live("idle_timeout_s = 3\nconnect_timeout_s = 60");
    c.start_worker("w2");
    let status = wait_for("two workers with ingest lobbies", Duration::from_secs(30), || {
        let s = c.cli_json(&["cluster", "status", "--json"]);
        let ws = s["workers"].as_array().cloned().unwrap_or_default();
        (ws.len() == 2 && ws.iter().all(|w| w["ingest"].as_str().is_some_and(|i| i.starts_with("rtmp://127.0.0.1:") && i.ends_with("/live/")))).then_some(s)
    });
    let lobby = |name: &str| -> String {
        status["workers"].as_array().unwrap().iter().find(|w| w["name"] == name).unwrap()["ingest"].as_str().unwrap().to_string()
    };
    for w in &c.workers {
        wait_for("the worker's lobby", Duration::from_secs(10), || w.log_text().contains("live ingest lobby").then_some(()));
    }

    let v = c.cli_json(&["live", "--models", "colors", "--json"]);
    let job = v["job_id"].as_str().unwrap_or_else(|| panic!("no job_id in {v}")).to_string();
    let url = v["rtmp_url"].as_str().unwrap().to_string();
    let key = url.rsplit('/').next().unwrap().to_string();
    // Logs name the push URL without its stream key.
    let shown = format!("{}***", url.strip_suffix(&key).unwrap());
    let holder = wait_for("a worker listening for the publisher", Duration::from_secs(30), || {
        c.workers.iter().position(|w| w.log_text().contains("waiting for the publisher") && w.log_text().contains(&shown))
    });
    let other = 1 - holder;
    let other_name = ["w1", "w2"][other];

    // An unknown key pushed to a lobby is refused (the push fails).
    let stranger = push_stream(&format!("{}no-such-key", lobby(other_name)), "160x120", 3);
    assert!(!finish_push(stranger, Duration::from_secs(30)), "a push of an unknown key to a lobby succeeded");
    wait_for("the lobby's refusal in the log", Duration::from_secs(10), || {
        c.workers[other].log_text().contains("live lobby: refused a publisher").then_some(())
    });
    assert!(c.workers[other].log_text().contains("no live stream has the key 'no-such-key'"), "{}", c.workers[other].log_text());

    // Push; kill the ingesting worker mid-stream.
    let first = push_stream(&url, "160x120", 60);
    wait_for("results from the first worker", Duration::from_secs(30), || (c.results(&job).len() >= 20).then_some(()));
    c.workers[holder].kill9();
    let _ = finish_push(first, Duration::from_secs(1)); // its server is gone
    // Once the dead worker's lease expiry is committed (logged from the
    // state machine), no report of it can commit: this is the cursor.
    // (Pushed before the lease expires, the lobby would hold the publisher
    // until then, and frames queued meanwhile would arrive at once, beyond
    // the lag bound: dropped and counted. Here the test wants all.)
    let n = job.trim_start_matches("job-");
    wait_for("the dead worker's lease to expire", Duration::from_secs(30), || {
        let expired = format!(" job={n} ");
        c.coordinator_log(1).lines().any(|l| l.contains("lease=release") && l.contains(&expired) && l.contains("reason=expired")).then_some(())
    });
    let before: Vec<u64> = c.frames_once(&job).into_iter().collect();
    assert_eq!(c.cli_json(&["status", &job, "--json"])["state"], "running", "the job ended with its worker");

    // The publisher pushes the same key to the other worker's lobby: 4 s, 100 frames.
    let resumed_at = format!("{}{key}", lobby(other_name));
    let second = push_stream(&resumed_at, "160x120", 4);
    assert!(finish_push(second, Duration::from_secs(90)), "the push to {resumed_at} failed\n{}", c.logs());
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    assert_eq!(s["push_url"], resumed_at.as_str(), "{s}");
    assert!(c.workers[other].log_text().contains("the stream resumes on this worker"), "{}", c.logs());

    let got: Vec<u64> = c.frames_once(&job).into_iter().collect();
    assert_eq!(s["frames_done"].as_u64().unwrap(), got.len() as u64, "{s}");
    // What was committed before the kill is kept as it was.
    assert!(before.iter().all(|f| got.binary_search(f).is_ok()), "a committed frame disappeared");
    let after: Vec<u64> = got.iter().copied().filter(|f| !before.contains(f)).collect();
    let cursor = before.last().map_or(0, |f| f + 1);
    assert!(after.iter().all(|f| *f >= cursor), "the resumed stream renumbered committed frames: {after:?} vs cursor {cursor}");
    // Timestamps go on from the committed ones.
    let ts: Vec<f64> = c.results(&job).iter().map(|r| r["timestamp"].as_f64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "timestamps went back on the resumed stream: {ts:?}");
    let dropped = c.cli_json(&["metrics", &job, "--json"])["frames_dropped"].as_u64().unwrap();
    if dropped == 0 {
        // Nothing dropped: frames 0.. contiguous, the second push's 100 right after the cursor.
        assert_eq!(before.len() as u64, cursor, "frames before the kill are not contiguous");
        assert_eq!(after, (cursor..cursor + 100).collect::<Vec<u64>>(), "the resumed frames are not the second push's 100");
    } else {
        assert!(after.len() as u64 + dropped >= 100, "{} resumed frames + {dropped} dropped < 100 pushed", after.len());
    }
    // The stream key (whoever has it may publish into the job) is in no log.
    assert!(!c.logs().contains(&key), "the stream key {key} reached a log:\n{}", c.logs());
    eprintln!("{job}: {} frames before the kill, {} after the resume, {dropped} dropped", before.len(), after.len());
}
