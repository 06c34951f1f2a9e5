//! Retention while a job runs (`--keep`), with real processes: the leader
//! trims what is older than the window on every member, stored pictures
//! included; a bad `--keep` is refused at submit with what to do.
use std::time::Duration;

use panoptes_tests::{make_video, wait_for, Cluster};
use serde_json::Value;

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn keep_trims_results_and_pictures_older_than_the_window_on_every_member() {
    let c = Cluster::start_configured(3, &["w1"], "\n[retention]\nevery_s = 1\n");
    // 600 frames at 25 fps: 24 s of stream time; keep the newest 4 s.
    let video = c.dir.path().join("clip.mp4");
    make_video(&video, 600, "96x64", 25);
    let s = c.cli_json(&["submit", video.to_str().unwrap(), "--models", "colors", "--keep", "4s", "--pictures-every", "0", "--wait", "--json"]);
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    assert_eq!(s["keep_s"], 4, "{s}");
    let job = s["job_id"].as_str().unwrap().to_string();
    // The newest frame is 599 (23.96 s): frames stamped before 19.96 s go,
    // so frame 499 (19.96 s) is the first kept.
    let st = wait_for("the trim to reach the window", Duration::from_secs(60), || {
        let st = c.cli_json(&["status", &job, "--json"]);
        (st["retained_from_frame"].as_u64() == Some(499)).then_some(st)
    });
    assert_eq!(st["frames_done"], 600, "what was analysed is still counted: {st}");
    for addr in &c.coordinator_addrs {
        let rows = wait_for("every member to apply the trim", Duration::from_secs(30), || {
            let out = c.cli_at(addr, &["results", &job, "--json"]);
            let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            (rows.len() == 101).then_some(rows)
        });
        let frames: Vec<u64> = rows.iter().map(|r| r["frame"].as_u64().unwrap()).collect();
        assert_eq!(frames, (499..600).collect::<Vec<u64>>(), "coordinator {addr} keeps another window");
        let png = c.dir.path().join("f.png");
        let gone = c.cli_at(addr, &["frame", &job, "10", "-o", png.to_str().unwrap()]);
        assert!(!gone.status.success(), "frame 10's picture should be deleted: {}", text(&gone));
        let kept = c.cli_at(addr, &["frame", &job, "550", "-o", png.to_str().unwrap()]);
        assert!(kept.status.success(), "frame 550's picture should be kept: {}", text(&kept));
    }
}

#[test]
fn a_bad_keep_is_refused_at_submit_with_what_to_do() {
    let c = Cluster::start_configured(1, &[], "\n[live]\nmax_lag_ms = 5000\n");
    let video = c.dir.path().join("clip.mp4");
    make_video(&video, 10, "96x64", 10);
    let v = video.to_str().unwrap();
    for (keep, says) in [("soon", "'soon' is not a duration"), ("3y", "unknown unit 'y'"), ("0", "would keep nothing")] {
        let out = c.cli(&["submit", v, "--models", "colors", "--keep", keep]);
        assert_eq!(out.status.code(), Some(2), "--keep {keep}: {}", text(&out));
        assert!(text(&out).contains(says), "--keep {keep}: {}", text(&out));
    }
    let out = c.cli(&["submit", v, "--models", "colors", "--keep", "1h", "--keep-what", "frames"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Shorter than a live frame may lag: refused by the coordinator.
    let out = c.cli(&["live", "--models", "colors", "--keep", "2s"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("shorter than a live frame may lag") && text(&out).contains("keep at least 5s"), "{}", text(&out));
    // Nothing was created, and the cluster still takes a good submission.
    let s = c.cli_json(&["submit", v, "--models", "colors", "--keep", "1h", "--json"]);
    assert_eq!(s["job_id"], "job-1", "{s}");
}
