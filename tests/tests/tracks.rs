//! `panoptes tracks` (issue 18, part 1) on real processes: a fixture clip
//! with one person in every frame, analysed by a cluster as a job of two
//! shards on three workers, gives the one track it should, and exactly the
//! tracks that the same tracker computes from `panoptes analyze` of the
//! clip in one process: how a job was split does not change its tracks.
//! `--follow` on a live job prints the same tracks as a read afterwards.
use panoptes_common::tracking::TrackBook;
use std::time::Duration;

use panoptes_tests::{astronaut_flv, bin, finish_push, fixture, models_dir, push_file, wait_for, Cluster};
use serde_json::Value;

#[test]
fn tracks_of_a_split_job_equal_those_of_one_process() {
    let clip = fixture("astronaut_zoom.mkv");
    let c = Cluster::start(&["w1", "w2", "w3"]);
    c.wait_workers(3);
    let s = c.cli_json(&["submit", clip.to_str().unwrap(), "--models", "objects", "--no-frames", "--wait", "--json"]);
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    assert_eq!(s["frames_done"], 24, "{s}");
    assert!(s["shards_total"].as_u64().unwrap() >= 2, "the job was not split: {s}");
    let job = s["job_id"].as_str().unwrap();

    let out = c.cli(&["tracks", job, "--json"]);
    assert!(out.status.success(), "tracks: {}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The astronaut photo, zoomed slowly: one person, the same track throughout.
    assert_eq!(got.len(), 1, "{got:?}");
    let t = &got[0];
    assert_eq!((t["track_id"].as_u64(), t["label"].as_str(), t["first_frame"].as_u64(), t["last_frame"].as_u64(), t["frames"].as_u64()), (Some(1), Some("person"), Some(0), Some(23), Some(24)), "{t}");

    // The same clip in one process, tracked by the same code.
    let a = std::process::Command::new(bin())
        .args(["analyze", clip.to_str().unwrap(), "--models", "objects", "--json", "--models-dir"])
        .arg(models_dir())
        .output()
        .unwrap();
    assert!(a.status.success(), "analyze: {}", String::from_utf8_lossy(&a.stderr));
    let mut book = TrackBook::default();
    for l in String::from_utf8_lossy(&a.stdout).lines() {
        let r: Value = serde_json::from_str(l).unwrap();
        assert!(r["results"].as_array().unwrap().iter().all(|d| d["track_id"].is_u64()), "analyze gave a detection no track id: {r}");
        book.add(r["frame"].as_u64().unwrap(), r["timestamp"].as_f64().unwrap(), &r["results"]);
    }
    let want: Vec<Value> = book.finish().iter().map(|t| t.to_json()).collect();
    assert_eq!(got, want, "the cluster's tracks differ from one process's");

    // A job without the detector says so.
    let s = c.cli_json(&["submit", clip.to_str().unwrap(), "--models", "colors", "--no-frames", "--wait", "--json"]);
    let out = c.cli(&["tracks", s["job_id"].as_str().unwrap()]);
    assert!(!out.status.success(), "tracks of a job without objects succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("objects"), "{err}");
}

/// `panoptes tracks --follow` started before a live push: it waits while
/// the stream runs, prints tracks as they end, and exits when the job
/// completes, having printed exactly the tracks a read afterwards gives.
#[test]
fn tracks_follow_a_live_job_to_its_end() {
    let c = Cluster::start(&["w1"]);
    c.wait_workers(1);
    let clip = astronaut_flv(c.dir.path());
    let live = c.cli_json(&["live", "--models", "objects", "--json"]);
    let (job, url) = (live["job_id"].as_str().unwrap().to_string(), live["rtmp_url"].as_str().unwrap().to_string());
    let follow = c.cli_command(&["tracks", &job, "--follow", "--json"]).stdout(std::process::Stdio::piped()).spawn().expect("run panoptes tracks --follow");
    wait_for("the worker to listen for the publisher", Duration::from_secs(30), || {
        c.workers[0].log_text().contains("waiting for the publisher").then_some(())
    });
    assert!(finish_push(push_file(&url, &clip), Duration::from_secs(60)), "push to {url} failed");
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    let out = follow.wait_with_output().expect("tracks --follow ends with the job");
    assert!(out.status.success(), "tracks --follow: {}", String::from_utf8_lossy(&out.stderr));
    let mut followed: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    followed.sort_by_key(|t| t["track_id"].as_u64());
    let after = c.cli(&["tracks", &job, "--json"]);
    let read: Vec<Value> = String::from_utf8_lossy(&after.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(read.iter().any(|t| t["label"] == "person"), "no person track in the live job: {read:?}");
    assert_eq!(followed, read, "--follow printed other tracks than a read afterwards");
}
