//! `panoptes stats` (issue 18, part 3: windows) on real processes: a
//! fixture clip with one person in every frame, analysed by a cluster as a
//! job split across three workers, gives exactly the windows that the same
//! code computes from `panoptes analyze` of the clip in one process;
//! `--follow` on a live push prints, window by window, what a read
//! afterwards gives; bad windows are refused with what to give instead.
use std::time::Duration;

use panoptes_common::windows::{WindowSpec, Windower};
use panoptes_tests::{astronaut_flv, bin, finish_push, fixture, models_dir, push_file, wait_for, Cluster};
use serde_json::Value;

fn lines(out: &std::process::Output) -> Vec<Value> {
    assert!(out.status.success(), "panoptes failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect()
}

#[test]
fn windows_of_a_split_job_equal_those_of_one_process_and_bad_windows_are_refused() {
    let clip = fixture("astronaut_zoom.mkv");
    let c = Cluster::start(&["w1", "w2", "w3"]);
    c.wait_workers(3);
    let s = c.cli_json(&["submit", clip.to_str().unwrap(), "--models", "objects,colors", "--no-frames", "--wait", "--json"]);
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    assert!(s["shards_total"].as_u64().unwrap() >= 2, "the job was not split: {s}");
    let job = s["job_id"].as_str().unwrap().to_string();

    // The same clip in one process, windowed by the same code.
    let a = std::process::Command::new(bin())
        .args(["analyze", clip.to_str().unwrap(), "--models", "objects,colors", "--json", "--models-dir"])
        .arg(models_dir())
        .output()
        .unwrap();
    let rows = lines(&a);
    assert_eq!(rows.len(), 48, "24 frames × 2 models");
    for (window, slide) in [("500ms", None), ("1s", Some("250ms"))] {
        let size = panoptes_common::parse_interval_ms(window).unwrap();
        let step = slide.map(|s| panoptes_common::parse_interval_ms(s).unwrap());
        let mut w = Windower::new(WindowSpec::new(size, step).unwrap());
        for r in &rows {
            w.add(r["frame"].as_u64().unwrap(), r["timestamp"].as_f64().unwrap(), r["model"].as_str().unwrap(), &r["results"]);
        }
        let want: Vec<Value> = w.finish().iter().map(|x| x.to_json()).collect();

        let mut args = vec!["stats", &job, "--window", window, "--json"];
        if let Some(s) = slide {
            args.extend(["--slide", s]);
        }
        let got = lines(&c.cli(&args));
        assert_eq!(got, want, "--window {window} --slide {slide:?}: the cluster's windows differ from one process's");
        // What the windows hold, for the record: a person in every frame, one track.
        assert!(got.len() >= 2, "{got:?}");
        for x in &got {
            assert_eq!(x["late"], false, "{x}");
            assert!(x["frames"].as_u64().unwrap() > 0, "{x}");
            assert_eq!(x["objects"]["person"]["detections"], x["frames"], "a person in every frame: {x}");
            assert_eq!(x["objects"]["person"]["tracks"], 1, "{x}");
            assert!(x["dominant_color"]["color"].as_str().is_some_and(|c| c.starts_with('#')), "{x}");
        }
        let frames: u64 = got.iter().map(|x| x["frames"].as_u64().unwrap()).sum();
        if slide.is_none() {
            assert_eq!(frames, 24, "tumbling windows hold every frame once: {got:?}");
        } else {
            assert!(frames > 24, "sliding windows share frames: {got:?}");
        }
    }
    // The human form: one line per window.
    let out = c.cli(&["stats", &job, "--window", "500ms"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.lines().count() >= 2 && text.contains("person") && text.contains("track(s)"), "{text}");

    // Bad windows: refused before anything is read, saying what to give.
    for (args, says) in [
        (vec!["--window", "0"], "a window of 0"),
        (vec!["--window", "1s", "--slide", "2s"], "longer than the window"),
        (vec!["--window", "soon"], "--window soon"),
    ] {
        let out = c.cli(&[&["stats", job.as_str()][..], &args[..]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "stats {args:?}: {err}");
    }
    // A window longer than the job keeps its results cannot be whole.
    let s = c.cli_json(&["submit", clip.to_str().unwrap(), "--models", "colors", "--no-frames", "--keep", "2s", "--wait", "--json"]);
    let out = c.cli(&["stats", s["job_id"].as_str().unwrap(), "--window", "10s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("keeps its results") && err.contains("at most 2s"), "{err}");
}

/// `panoptes stats --follow` started before a live push prints each window
/// as it closes, the rest when the job ends: together exactly the windows a
/// read afterwards gives, none of them late (a live stream's frames come in
/// order).
#[test]
fn stats_follow_a_live_job_window_by_window() {
    let c = Cluster::start(&["w1"]);
    c.wait_workers(1);
    let clip = astronaut_flv(c.dir.path());
    let live = c.cli_json(&["live", "--models", "objects", "--json"]);
    let (job, url) = (live["job_id"].as_str().unwrap().to_string(), live["rtmp_url"].as_str().unwrap().to_string());
    let follow = c
        .cli_command(&["stats", &job, "--window", "250ms", "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run panoptes stats --follow");
    wait_for("the worker to listen for the publisher", Duration::from_secs(30), || {
        c.workers[0].log_text().contains("waiting for the publisher").then_some(())
    });
    assert!(finish_push(push_file(&url, &clip), Duration::from_secs(60)), "push to {url} failed");
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    let followed = lines(&follow.wait_with_output().expect("stats --follow ends with the job"));
    let read = lines(&c.cli(&["stats", &job, "--window", "250ms", "--json"]));
    assert!(read.len() >= 2 && read.iter().any(|w| w["objects"]["person"]["detections"].as_u64() > Some(0)), "{read:?}");
    assert!(followed.iter().all(|w| w["late"] == false), "{followed:?}");
    assert_eq!(followed, read, "--follow printed other windows than a read afterwards");
}
