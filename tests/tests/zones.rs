//! Tracks and zones (issue 18, parts 1 and 2) on real processes. The leader
//! tracks each job's detections over its committed frames; results carry
//! `track_id` and the `zones` a detection stands in.
//!
//! - One clip as a file job split across three workers and pushed live
//!   over RTMP gives the same tracks, zones and zone alerts, and exactly
//!   what the same code gives on `panoptes analyze` of it in one process.
//! - A zone added to a running live job applies from the first frame not
//!   yet tracked, and only from there; bad zones are refused with what to
//!   write.
use std::time::Duration;

use panoptes_common::tracking::TrackBook;
use panoptes_tests::{astronaut_flv, bin, finish_push, models_dir, push_file, wait_for, Cluster};
use serde_json::Value;

/// The right 61% of the frame: the astronaut's feet (the middle of the
/// box's bottom edge) cross into it as the clip zooms in.
const ZONE: &str = "right=0.385,0,1,0,1,1,0.385,1";
const RULE: &str = "arrive: person enters right";

fn lines(out: &std::process::Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// (rule, frame) of a job's alerts.
fn alerts(c: &Cluster, job: &str) -> Vec<(String, u64)> {
    lines(&c.cli(&["alerts", job, "--json"])).iter().map(|a| (a["rule"].as_str().unwrap().to_string(), a["frame"].as_u64().unwrap())).collect()
}

#[test]
fn a_file_job_split_three_ways_and_the_same_clip_live_give_the_same_tracks_and_zones() {
    // The live job analyses every frame (the `lag` policy with room to
    // spare), as the file job does: two cores run three workers here.
    let c = Cluster::start_configured(1, &["w1", "w2", "w3"], "\n[live]\ndrop_policy = \"lag\"\nmax_lag_ms = 60000\n");
    c.wait_workers(3);
    let clip = astronaut_flv(c.dir.path());
    let path = clip.to_str().unwrap();

    // One process: the same code over `panoptes analyze`.
    let a = std::process::Command::new(bin()).args(["analyze", path, "--models", "objects", "--json", "--zone", ZONE, "--models-dir"]).arg(models_dir()).output().unwrap();
    let mut book = TrackBook::default();
    for r in lines(&a) {
        book.add(r["frame"].as_u64().unwrap(), r["timestamp"].as_f64().unwrap(), &r["results"]);
    }
    let want: Vec<Value> = book.finish().iter().map(|t| t.to_json()).collect();
    assert_eq!(want.len(), 1, "{want:?}");
    assert_eq!(want[0]["zones"], serde_json::json!(["right"]), "the astronaut never enters the zone: {want:?}");

    // A file job, split.
    let s = c.cli_json(&["submit", path, "--models", "objects", "--no-frames", "--zone", ZONE, "--rule", RULE, "--wait", "--json"]);
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    assert!(s["shards_total"].as_u64().unwrap() >= 2, "the job was not split: {s}");
    let file_job = s["job_id"].as_str().unwrap().to_string();
    let file_tracks = lines(&c.cli(&["tracks", &file_job, "--json"]));
    assert_eq!(file_tracks, want, "the split job's tracks differ from one process's");
    let file_alerts = alerts(&c, &file_job);
    let entered = want[0]["path"].as_array().unwrap().iter().map(|p| p[0].as_u64().unwrap());
    assert_eq!(file_alerts.len(), 1, "{file_alerts:?}");
    // Results carry the ids and zones: every detection its track, those standing in the zone "right".
    let rows = lines(&c.cli(&["results", &file_job, "--json"]));
    let dets: Vec<&Value> = rows.iter().flat_map(|r| r["results"].as_array().unwrap()).collect();
    assert!(!dets.is_empty() && dets.iter().all(|d| d["track_id"] == 1), "{rows:?}");
    let first_in = rows.iter().find(|r| r["results"][0]["zones"] == serde_json::json!(["right"])).map(|r| r["frame"].as_u64().unwrap());
    assert_eq!(first_in, Some(file_alerts[0].1), "the alert is not at the first frame in the zone");
    assert!(entered.clone().any(|f| f < file_alerts[0].1), "the track began inside the zone: nothing was crossed");
    let st = c.cli_json(&["status", &file_job, "--json"]);
    assert_eq!((st["tracks"].as_u64(), st["alerts_up_to_date"].as_bool()), (Some(1), Some(true)), "{st}");
    assert_eq!(st["zones"][0]["zone"], ZONE, "{st}");

    // The same clip live.
    let live = c.cli_json(&["live", "--models", "objects", "--zone", ZONE, "--rule", RULE, "--json"]);
    let (job, url) = (live["job_id"].as_str().unwrap().to_string(), live["rtmp_url"].as_str().unwrap().to_string());
    wait_for("a worker to listen for the publisher", Duration::from_secs(30), || c.workers.iter().any(|w| w.log_text().contains("waiting for the publisher")).then_some(()));
    assert!(finish_push(push_file(&url, &clip), Duration::from_secs(60)), "push to {url} failed");
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    assert_eq!(lines(&c.cli(&["tracks", &job, "--json"])), want, "the live job's tracks differ from the file job's");
    assert_eq!(alerts(&c, &job), file_alerts);
}

#[test]
fn a_zone_added_to_a_running_live_job_applies_from_then_and_bad_zones_are_refused() {
    let c = Cluster::start(&["w1"]);
    c.wait_workers(1);
    // The astronaut four times over (8 s pushed in real time): in the zone
    // for the second half of each pass.
    let one = astronaut_flv(c.dir.path());
    let clip = c.dir.path().join("astronaut-4.flv");
    let st = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-stream_loop", "3", "-i"])
        .arg(&one)
        .args(["-c", "copy"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(st.success());

    for (args, says) in [
        (vec!["--zone", "door=0,0,1,1"], "at least 3"),
        (vec!["--zone", "door=0,0,-2,0,1,1"], "out of range"),
        (vec!["--zone", "door=0,0,0.5,0,640,480"], "mixes fractions"),
        (vec!["--zone", "door=0,0,1,0,1,1", "--zone", "door=0,0,1,0,0,1"], "two zones"),
        (vec!["--rule", "person enters door"], "no zones"),
        (vec!["--zone", ZONE, "--rule", "person enters door"], "no zone 'door'"),
    ] {
        let mut full = vec!["submit", clip.to_str().unwrap(), "--models", "objects"];
        full.extend(args.iter());
        let out = c.cli(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{args:?}: {err}");
    }

    let live = c.cli_json(&["live", "--models", "objects", "--json"]);
    let (job, url) = (live["job_id"].as_str().unwrap().to_string(), live["rtmp_url"].as_str().unwrap().to_string());
    let out = c.cli(&["zone", &job, "door=0,0,1,1"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("at least 3"), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the worker to listen for the publisher", Duration::from_secs(30), || c.workers[0].log_text().contains("waiting for the publisher").then_some(()));
    let push = push_file(&url, &clip);
    // Once some frames are tracked, add the zone.
    wait_for("the first frames to be tracked", Duration::from_secs(30), || {
        let s = c.cli_json(&["status", &job, "--json"]);
        (s["alerts_evaluated_to_frame"].as_u64().unwrap_or(0) > 0).then_some(())
    });
    let s = c.cli_json(&["zone", &job, ZONE, "--json"]);
    let from = s["zones"][0]["from_frame"].as_u64().unwrap();
    assert!(from > 0, "{s}");
    assert!(finish_push(push, Duration::from_secs(60)), "push to {url} failed");
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());

    let rows = lines(&c.cli(&["results", &job, "--json"]));
    let zoned: Vec<u64> = rows.iter().filter(|r| r["results"].as_array().unwrap().iter().any(|d| d.get("zones").is_some())).map(|r| r["frame"].as_u64().unwrap()).collect();
    assert!(!zoned.is_empty(), "no detection in the zone after it was added at frame {from}");
    assert!(zoned.iter().all(|f| *f >= from), "a frame before the zone was added is in it: {zoned:?}, from {from}");
    let tracks = lines(&c.cli(&["tracks", &job, "--json"]));
    assert!(tracks.iter().any(|t| t["zones"] == serde_json::json!(["right"])), "{tracks:?}");

    // A finished job takes no zone; nor does a job without a detector.
    let out = c.cli(&["zone", &job, "late=0,0,1,0,1,1"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("completed"), "{}", String::from_utf8_lossy(&out.stderr));
    let live = c.cli_json(&["live", "--models", "colors", "--json"]);
    let out = c.cli(&["zone", live["job_id"].as_str().unwrap(), ZONE]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no detector"), "{}", String::from_utf8_lossy(&out.stderr));
    c.cli(&["cancel", live["job_id"].as_str().unwrap()]);
}
