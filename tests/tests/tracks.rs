//! `panoptes tracks` (issue 18, part 1) on real processes: a fixture clip
//! with one person in every frame, analysed by a cluster as a job of two
//! shards on three workers, gives the one track it should, and exactly the
//! tracks that the same tracker computes from `panoptes analyze` of the
//! clip in one process: how a job was split does not change its tracks.
use panoptes_common::tracking::{detections_of, Tracker, TrackerConfig};
use panoptes_tests::{bin, fixture, models_dir, Cluster};
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
    let mut tracker = Tracker::new(TrackerConfig::default());
    for l in String::from_utf8_lossy(&a.stdout).lines() {
        let r: Value = serde_json::from_str(l).unwrap();
        tracker.update(r["frame"].as_u64().unwrap(), r["timestamp"].as_f64().unwrap(), &detections_of(&r["results"])).unwrap();
    }
    let want: Vec<Value> = tracker
        .finish()
        .iter()
        .map(|t| {
            serde_json::json!({
                "track_id": t.id, "label": t.label, "first_frame": t.first_frame, "last_frame": t.last_frame,
                "first_time": t.first_time, "last_time": t.last_time, "best_score": t.best_score, "frames": t.path.len(),
                "path": t.path.iter().map(|(f, b)| serde_json::json!([f, b])).collect::<Vec<_>>(),
            })
        })
        .collect();
    assert_eq!(got, want, "the cluster's tracks differ from one process's");

    // A job without the detector says so.
    let s = c.cli_json(&["submit", clip.to_str().unwrap(), "--models", "colors", "--no-frames", "--wait", "--json"]);
    let out = c.cli(&["tracks", s["job_id"].as_str().unwrap()]);
    assert!(!out.status.success(), "tracks of a job without objects succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("objects"), "{err}");
}
