//! Cameras: a `v4l2://` source is a live job pinned to the worker the camera
//! is attached to (`v4l2://WORKER/dev/videoN`, or `submit v4l2:///dev/videoN
//! --worker WORKER`), opened there with libavdevice's v4l2 demuxer.
//!
//! This machine has no camera (no /dev/video*, and no kernel modules, so no
//! v4l2loopback), so the test checks what can be checked without one: the
//! submit-time checks, the pinning (the job goes to the named one of two
//! workers), a missing device, and a character device that is no camera
//! (/dev/null), which only the v4l2 demuxer itself can refuse. Bounded waits.
use std::time::Duration;

use panoptes_tests::{make_video, wait_for, Cluster};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_camera_source_runs_on_its_worker_and_fails_clearly_without_a_camera() {
    let mut c = Cluster::start_with_live("reconnect_attempts = 1\nreconnect_backoff_ms = 100\nreconnect_max_backoff_ms = 100");
    c.start_worker("w2");
    wait_for("two workers", Duration::from_secs(30), || {
        let s = c.cli_json(&["cluster", "status", "--json"]);
        (s["workers"].as_array().map_or(0, |w| w.len()) == 2).then_some(())
    });

    // Refused at submit, each with what to do.
    let refused: [(&[&str], &str); 4] = [
        (&["v4l2:///dev/video0"], "--worker"),
        (&["v4l2:///dev/video0", "--worker", "nosuch"], "no worker named 'nosuch'"),
        (&["v4l2://w1/etc/passwd"], "under /dev/"),
        (&["/tmp/clip.mp4", "--worker", "w1"], "--worker is for cameras"),
    ];
    for (args, must) in refused {
        let mut a = vec!["submit"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--models", "colors", "--json"]);
        let o = c.cli(&a);
        assert_eq!(o.status.code(), Some(2), "{args:?} was accepted: {}", String::from_utf8_lossy(&o.stdout));
        assert!(stderr(&o).contains(must), "{args:?}: missing {must:?} in: {}", stderr(&o));
    }

    // A device missing on w2, and /dev/null (a character device, no camera):
    // each job runs on w2 only, and fails naming the device and the worker.
    let cases = [("/dev/video-panoptes-missing", "no device /dev/video-panoptes-missing on worker w2"), ("/dev/null", "/dev/null on worker w2")];
    for (dev, must) in cases {
        let v = c.cli_json(&["submit", &format!("v4l2://{dev}"), "--worker", "w2", "--models", "colors", "--json"]);
        let job = v["job_id"].as_str().unwrap_or_else(|| panic!("submit {dev}: {v}")).to_string();
        let s = c.wait_finished(&job, Duration::from_secs(60));
        assert_eq!(s["state"], "failed", "{s}");
        let err = s["error"].as_str().unwrap_or_default().to_string();
        assert!(err.contains(must), "{dev}: missing {must:?} in: {err}");
        assert_eq!(s["source"], format!("v4l2://w2{dev}"), "{s}");
        // Leased to w2, never to w1.
        let id = job.trim_start_matches("job-");
        let log = c.coordinator_log(1);
        let leased: Vec<&str> = log.lines().filter(|l| l.contains("shard leased") && l.contains(&format!("job_id={id} "))).collect();
        assert!(!leased.is_empty() && leased.iter().all(|l| l.contains("worker=w2")), "{dev}: leases {leased:?}");
        println!("{dev}: {err}");
    }

    // Everything else keeps running: a file job completes.
    let video = c.dir.path().join("clip.mp4");
    make_video(&video, 20, "160x120", 10);
    let s = c.cli_json(&["submit", video.to_str().unwrap(), "--models", "colors", "--wait", "--json"]);
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
}
