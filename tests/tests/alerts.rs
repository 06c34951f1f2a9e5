//! Alert rules (issue 18, part 4) on real processes. A clip made of the
//! astronaut fixture (a person) blacked out for 6 frames in every 12 gives
//! runs of "someone" and "no one". The cluster's alerts, read with
//! `panoptes alerts`, are exactly those the same rule code finds in
//! `panoptes analyze` of the clip in one process: for a job split across
//! workers, and through a `kill -9` of the Raft leader while the alerts are
//! being recorded (each alert once: no alert lost, none repeated). Bad rules
//! are refused at submit, saying what is wrong.
use std::path::Path;
use std::time::Duration;

use panoptes_tests::{blinking_clip, expected_alerts, wait_for, Cluster};
use serde_json::Value;

const RULES: [&str; 3] = ["someone: count(person) >= 1 for 100ms", "empty: no object for 100ms, cooldown 1s", "crowd: count(person) >= 5"];

fn expected(clip: &Path) -> Vec<(String, u64, f64)> {
    expected_alerts(clip, &RULES)
}

fn submit_with_rules(c: &Cluster, clip: &Path, wait: bool) -> Value {
    let mut args = vec!["submit", clip.to_str().unwrap(), "--models", "objects", "--no-frames", "--json"];
    for r in RULES {
        args.extend(["--rule", r]);
    }
    if wait {
        args.push("--wait");
    }
    c.cli_json(&args)
}

/// Submit `clip` with the rules and wait until its first two alerts are
/// recorded while it still runs (for `who` to be killed mid-way); its id.
fn submit_and_wait_for_alerts(c: &Cluster, clip: &Path, who: &str) -> String {
    let s = submit_with_rules(c, clip, false);
    let job = s["job_id"].as_str().unwrap().to_string();
    wait_for("the first alerts to be recorded", Duration::from_secs(120), || {
        let s = c.cli_json(&["status", &job, "--json"]);
        (s["alerts"].as_u64() >= Some(2)).then_some(())
    });
    let s = c.cli_json(&["status", &job, "--json"]);
    assert_ne!(s["state"], "completed", "the job ended before {who} could be killed mid-way: {s}");
    job
}

/// Wait until the job ended and its rules were evaluated over all of it; its alerts.
fn recorded(c: &Cluster, job: &str) -> Vec<Value> {
    let s = c.wait_finished(job, Duration::from_secs(180));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    wait_for("the rules to be evaluated over every frame", Duration::from_secs(30), || {
        let s = c.cli_json(&["status", job, "--json"]);
        (s["alerts_up_to_date"] == true).then_some(())
    });
    let out = c.cli(&["alerts", job, "--json"]);
    assert!(out.status.success(), "alerts: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn check(job: &str, got: &[Value], want: &[(String, u64, f64)]) {
    let seen: Vec<(String, u64, f64)> = got.iter().map(|a| (a["rule"].as_str().unwrap().to_string(), a["frame"].as_u64().unwrap(), a["since"].as_f64().unwrap())).collect();
    assert_eq!(seen, want, "the cluster's alerts differ from one process's");
    for (i, a) in got.iter().enumerate() {
        assert_eq!(a["id"], format!("{job}/{}", i + 1), "ids are the job and the alert's place: {a}");
        assert_eq!(a["job_id"], job);
    }
}

#[test]
fn alerts_of_a_split_job_equal_those_of_one_process_and_bad_rules_are_refused() {
    let c = Cluster::start(&["w1", "w2", "w3"]);
    c.wait_workers(3);
    let clip = blinking_clip(c.dir.path(), 2);
    let want = expected(&clip);
    // Runs of 6 frames with and without a person: "someone" and "empty" fire per run, "crowd" never.
    assert!(want.iter().filter(|w| w.0 == "someone").count() >= 3 && want.iter().any(|w| w.0 == "empty"), "{want:?}");
    assert!(!want.iter().any(|w| w.0 == "crowd"), "{want:?}");

    let s = submit_with_rules(&c, &clip, true);
    let job = s["job_id"].as_str().unwrap().to_string();
    assert!(s["shards_total"].as_u64().unwrap() >= 2, "the job was not split: {s}");
    assert_eq!(s["rules"].as_array().map(Vec::len), Some(3), "{s}");
    let got = recorded(&c, &job);
    check(&job, &got, &want);
    let s = c.cli_json(&["status", &job, "--json"]);
    assert_eq!(s["alerts"].as_u64(), Some(want.len() as u64), "{s}");
    // Every job's alerts, and the human form.
    let all = c.cli(&["alerts", "--json"]);
    assert_eq!(String::from_utf8_lossy(&all.stdout).lines().count(), want.len());
    let text = String::from_utf8_lossy(&c.cli(&["alerts", &job]).stdout).to_string();
    assert!(text.contains("someone") && text.contains(&format!("{job}/1")), "{text}");

    // Bad rules: refused at submit, nothing created.
    for (rule, says) in [
        ("count(unicorn) >= 1", "has the label 'unicorn'"),
        ("emotion angry", "add joy to --models"),
        ("people everywhere", "is not a rule"),
        ("count(person) >= 1 for soon", "for soon"),
        ("no person", "needs how long"),
    ] {
        let out = c.cli(&["submit", clip.to_str().unwrap(), "--models", "objects", "--rule", rule]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "--rule {rule:?}: {err}");
    }
    let out = c.cli(&["submit", clip.to_str().unwrap(), "--models", "objects", "--rule", "x: count(person) >= 1", "--rule", "x: no object for 1s"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("two rules are named 'x'"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = c.cli(&["submit", clip.to_str().unwrap(), "--models", "colors", "--rule", "no object for 1s"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("runs no detector"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The Raft leader `kill -9`ed once the first alerts are recorded, while
/// the job runs: the new leader goes on from the last recorded evaluation,
/// so every alert is recorded exactly once.
#[test]
fn a_leader_killed_while_alerts_are_recorded_loses_and_repeats_none() {
    let mut c = Cluster::start_replicated(3, &["w1"]);
    c.wait_workers(1);
    let clip = blinking_clip(c.dir.path(), 8);
    let want = expected(&clip);
    assert!(want.len() >= 10, "{want:?}");
    let job = submit_and_wait_for_alerts(&c, &clip, "the leader");
    let old = c.leader();
    c.kill_coordinator(old);
    let got = recorded(&c, &job);
    assert_ne!(c.leader(), old);
    check(&job, &got, &want);
}

/// A worker `kill -9`ed while alerts fire: its lease expires, the other
/// worker goes on from the committed cursor, and the alerts are still
/// exactly those of one process (the rules read committed results only).
#[test]
fn a_worker_killed_while_alerts_fire_changes_no_alert() {
    let mut c = Cluster::start(&["w1", "w2"]);
    c.wait_workers(2);
    let clip = blinking_clip(c.dir.path(), 8);
    let want = expected(&clip);
    let job = submit_and_wait_for_alerts(&c, &clip, "a worker");
    c.workers[0].kill9();
    let got = recorded(&c, &job);
    check(&job, &got, &want);
    // Its tracks too: exactly those of one process over the same clip.
    let a = std::process::Command::new(panoptes_tests::bin())
        .args(["analyze", clip.to_str().unwrap(), "--models", "objects", "--json", "--models-dir"])
        .arg(panoptes_tests::models_dir())
        .output()
        .unwrap();
    let mut book = panoptes_common::tracking::TrackBook::default();
    for l in String::from_utf8_lossy(&a.stdout).lines() {
        let r: Value = serde_json::from_str(l).unwrap();
        book.add(r["frame"].as_u64().unwrap(), r["timestamp"].as_f64().unwrap(), &r["results"]);
    }
    let want_tracks: Vec<Value> = book.finish().iter().map(|t| t.to_json()).collect();
    let out = c.cli(&["tracks", &job, "--json"]);
    let got_tracks: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!want_tracks.is_empty());
    assert_eq!(got_tracks, want_tracks, "a worker's kill changed the job's tracks");
}

/// Rules on a live push (`panoptes live --rule`): `alerts --follow`, started
/// before the push, prints each alert as it is recorded and ends with the
/// job, having printed exactly what a read afterwards gives.
#[test]
fn alerts_follow_a_live_push() {
    let c = Cluster::start(&["w1"]);
    c.wait_workers(1);
    let clip = panoptes_tests::astronaut_flv(c.dir.path());
    let live = c.cli_json(&["live", "--models", "objects", "--rule", "someone: count(person) >= 1 for 200ms", "--rule", "crowd: count(person) >= 5", "--json"]);
    let (job, url) = (live["job_id"].as_str().unwrap().to_string(), live["rtmp_url"].as_str().unwrap().to_string());
    let follow = c.cli_command(&["alerts", &job, "--follow", "--json"]).stdout(std::process::Stdio::piped()).spawn().expect("run panoptes alerts --follow");
    wait_for("the worker to listen for the publisher", Duration::from_secs(30), || {
        c.workers[0].log_text().contains("waiting for the publisher").then_some(())
    });
    assert!(panoptes_tests::finish_push(panoptes_tests::push_file(&url, &clip), Duration::from_secs(60)), "push to {url} failed");
    let got = recorded(&c, &job);
    let out = follow.wait_with_output().expect("alerts --follow ends with the job");
    let followed: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(got.len(), 1, "a person throughout: one run, one alert: {got:?}");
    assert_eq!(got[0]["rule"], "someone");
    assert_eq!(followed, got, "--follow printed other alerts than a read afterwards");
}
