//! Issue 5's user surface against a real local cluster (1 coordinator, 2
//! workers): stored frames drawn with their results (`frame`), one frame's
//! results, metrics, videos, cancel, prune, `results --follow`, and
//! `submit --wait` when piped.
use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use panoptes_render::{decode_png, face_color, object_color, to_px, Image, LINE};
use panoptes_tests::{fixture, make_video, Cluster};
use serde_json::Value;

/// The share of pixels along a vertical edge (inside the box's line) that
/// have colour `c`: labels or other boxes may cover a few.
fn edge_share(img: &Image, x: i64, y0: i64, y1: i64, c: [u8; 3]) -> f64 {
    let (mut hit, mut n) = (0, 0);
    for y in (y0 + 12).max(0)..(y1 - 2).min(img.height as i64) {
        if x < 0 || x >= img.width as i64 {
            continue;
        }
        n += 1;
        if img.pixel(x as u32, y as u32) == c {
            hit += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        hit as f64 / n as f64
    }
}

#[test]
fn u01_frame_is_drawn_with_its_results() {
    let c = Cluster::start(&["w1", "w2"]);
    let clip = fixture("astronaut_zoom.mkv");
    let s = c.cli_json(&["submit", clip.to_str().unwrap(), "--models", "objects,joy,colors", "--frame-step", "6", "--pictures-every", "0", "--wait", "--json"]);
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    let job = s["job_id"].as_str().unwrap();

    // One frame's results: exactly one line per model.
    let out = c.cli(&["results", job, "--frame", "6", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let models: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["objects", "joy", "colors"]);
    assert!(rows.iter().all(|r| r["frame"] == 6));

    let png = c.dir.path().join("f6.png");
    let f = c.cli_json(&["frame", job, "6", "-o", png.to_str().unwrap(), "--json"]);
    let img = decode_png(&std::fs::read(&png).unwrap()).expect("a PNG");
    assert_eq!((img.width as u64, img.height as u64), (f["width"].as_u64().unwrap(), f["height"].as_u64().unwrap()));
    assert!(img.height <= 360, "stored frames are reduced to frames.max_height");
    let sx = img.width as f64 / f["analysed_width"].as_f64().unwrap();
    let sy = img.height as f64 / f["analysed_height"].as_f64().unwrap();

    let objects = &rows[0]["results"];
    let faces = &rows[1]["results"];
    let palette = &rows[2]["results"];
    assert!(!objects.as_array().unwrap().is_empty() && !faces.as_array().unwrap().is_empty(), "the fixture shows a person and a face: {rows:?}");
    // Every box is drawn in its colour along its left and right edges.
    for (it, colour) in objects
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o, object_color(o["class_id"].as_u64().unwrap())))
        .chain(faces.as_array().unwrap().iter().map(|f| (f, face_color(f["joy"].as_bool().unwrap()))))
    {
        let b = to_px(&it["box"], sx, sy).unwrap();
        let left = edge_share(&img, b.x0.max(0), b.y0, b.y1, colour);
        let right = edge_share(&img, (b.x1 - LINE).min(img.width as i64 - 1), b.y0, b.y1, colour);
        assert!(left > 0.8 && right > 0.8, "box {it} not drawn in {colour:?}: left {left:.2}, right {right:.2}");
    }
    // The palette's colours along the bottom edge, in order.
    let bottom: Vec<[u8; 3]> = (0..img.width).map(|x| img.pixel(x, img.height - 1)).collect();
    for p in palette.as_array().unwrap() {
        let hex = panoptes_render::parse_hex(p["color"].as_str().unwrap()).unwrap();
        assert!(bottom.contains(&hex), "palette colour {p} missing from the swatches");
    }

    // A frame that was not analysed, and a job without frames, say why.
    let out = c.cli(&["frame", job, "7", "-o", png.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no analysed frame 7"), "{}", String::from_utf8_lossy(&out.stderr));
    let s2 = c.cli_json(&["submit", clip.to_str().unwrap(), "--models", "colors", "--no-frames", "--wait", "--json"]);
    let out = c.cli(&["frame", s2["job_id"].as_str().unwrap(), "0", "-o", png.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("keeps no frame pictures"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The analysed frames of `job` (frames `0..frames` step `step`) that have a
/// stored picture, asked frame by frame.
fn pictured(c: &Cluster, job: &str, frames: u64, step: u64) -> Vec<u64> {
    let png = c.dir.path().join("pictured.png");
    (0..frames).step_by(step as usize).filter(|n| c.cli(&["frame", job, &n.to_string(), "-o", png.to_str().unwrap()]).status.success()).collect()
}

/// A job keeps a picture per `--pictures-every` of stream time (the
/// cluster's frames.every, 1 s, by default): the first analysed frame at or
/// after each multiple, the same however the clip is cut into shards (here
/// at keyframes 21, 42, ...: mid-second). Another frame's picture is refused
/// with the nearest that have one; `--nearest` draws one of those.
#[test]
fn u07_pictures_are_kept_at_a_rate() {
    let c = Cluster::start(&["w1", "w2"]);
    let clip = c.dir.path().join("rate.mp4");
    make_video(&clip, 150, "160x120", 7);
    let v = clip.to_str().unwrap();

    let s = c.cli_json(&["submit", v, "--models", "colors", "--frame-step", "2", "--wait", "--json"]);
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    assert!(s["shards_total"].as_u64().unwrap() >= 4, "the clip is cut into shards: {s}");
    assert_eq!((s["pictures"].as_bool(), s["pictures_every_ms"].as_u64()), (Some(true), Some(1000)), "{s}");
    let job = s["job_id"].as_str().unwrap();
    assert_eq!(pictured(&c, job, 150, 2), [0, 26, 50, 76, 100, 126], "one a second, 25 fps, every 2nd frame analysed");
    let text = String::from_utf8_lossy(&c.cli(&["status", job]).stdout).to_string();
    assert!(text.contains("pictures: one per 1s of stream time"), "{text}");

    let png = c.dir.path().join("near.png");
    let out = c.cli(&["frame", job, "60", "-o", png.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("keeps one per 1s") && err.contains("the nearest with one are frames 50 and 76") && err.contains("--nearest"), "{err}");
    let f = c.cli_json(&["frame", job, "60", "--nearest", "-o", png.to_str().unwrap(), "--json"]);
    assert_eq!(f["frame"], 50, "{f}");
    assert!(decode_png(&std::fs::read(&png).unwrap()).is_ok());
    let out = c.cli(&["frame", job, "140", "--nearest", "-o", png.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("frame 126 (the nearest frame to 140 with a stored picture)"), "{}", String::from_utf8_lossy(&out.stdout));

    // Five a second; every frame.
    let s = c.cli_json(&["submit", v, "--models", "colors", "--frame-step", "2", "--pictures-every", "200ms", "--wait", "--json"]);
    assert_eq!(s["pictures_every_ms"], 200, "{s}");
    assert_eq!(pictured(&c, s["job_id"].as_str().unwrap(), 50, 2), [0, 6, 10, 16, 20, 26, 30, 36, 40, 46]);
    let s = c.cli_json(&["submit", v, "--models", "colors", "--pictures-every", "0", "--wait", "--json"]);
    assert_eq!(pictured(&c, s["job_id"].as_str().unwrap(), 40, 1), (0..40).collect::<Vec<u64>>());
    let text = String::from_utf8_lossy(&c.cli(&["status", s["job_id"].as_str().unwrap()]).stdout).to_string();
    assert!(text.contains("pictures: every analysed frame"), "{text}");

    // Bad values say what is meant.
    for (bad, says) in [("5x", "unknown unit 'x'"), ("soon", "not an interval")] {
        let out = c.cli(&["submit", v, "--models", "colors", "--pictures-every", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "--pictures-every {bad}: {err}");
    }
    let out = c.cli(&["submit", v, "--models", "colors", "--pictures-every", "1s", "--no-frames"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cannot be used with"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn u02_metrics_videos_follow_cancel_and_prune() {
    // A picture of every frame, so that prune's count of them is known.
    let c = Cluster::start_configured(1, &["w1", "w2"], "\n[frames]\nevery = \"0\"\n");
    let short = c.dir.path().join("short.mp4");
    make_video(&short, 40, "160x120", 10);
    let long = c.dir.path().join("long.mp4");
    make_video(&long, 600, "320x240", 10);

    // `submit --wait` piped: one final line on stdout, no progress bar.
    let out = c.cli(&["submit", short.to_str().unwrap(), "--models", "colors", "--wait"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("completed: 40 of 40 frames"), "{text}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\r'), "a progress bar was drawn on a pipe");
    let first = text.split_whitespace().next().unwrap().to_string();

    // Follow a running job: lines arrive while it runs, the stream ends with it.
    let j = c.cli_json(&["submit", short.to_str().unwrap(), "--models", "colors,objects", "--json"]);
    let job = j["job_id"].as_str().unwrap().to_string();
    let follow = panoptes_tests::client_command()
        .args(["results", &job, "--follow", "--json", "--coordinator", &c.addr])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = follow.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 80, "every (frame, model) once, then the stream ended with the job");
    let st = c.cli_json(&["status", &job, "--json"]);
    assert_eq!(st["state"], "completed", "the follow stream ended before the job: {st}");

    // Metrics, in the documented shape.
    let m = c.cli_json(&["metrics", &job, "--json"]);
    // One shape for the CLI and the web API (panoptes_client::views::metrics_json).
    for k in ["job_id", "frames_extracted", "ingest_time_s", "resize_time_s", "inference_time_s", "avg_message_bytes", "wall_time_s", "frames_per_s", "errors", "queue_wait_s", "frames_dropped", "latency_ms", "reconnects", "gap_ms"] {
        assert!(m.get(k).is_some(), "metrics lack {k}: {m}");
    }
    assert_eq!(m["frames_extracted"], 40);
    assert!(m["inference_time_s"]["objects"].as_f64().unwrap() > 0.0 && m["inference_time_s"]["colors"].as_f64().unwrap() > 0.0, "{m}");
    assert!(m["avg_message_bytes"].as_f64().unwrap() > 0.0 && m["frames_per_s"].as_f64().unwrap() > 0.0, "{m}");
    assert_eq!(m["errors"], 0);

    // Cancel a long job mid-way: it stops and its leases are freed.
    let l = c.cli_json(&["submit", long.to_str().unwrap(), "--models", "objects", "--json"]);
    let long_job = l["job_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while c.cli_json(&["status", &long_job, "--json"])["frames_done"].as_u64().unwrap_or(0) < 4 {
        assert!(Instant::now() < deadline, "the long job made no progress\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = c.cli(&["cancel", &long_job]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st = c.cli_json(&["status", &long_job, "--json"]);
    assert_eq!(st["state"], "cancelled");
    let cs = c.cli_json(&["cluster", "status", "--json"]);
    let active: u64 = cs["workers"].as_array().unwrap().iter().map(|w| w["active_shards"].as_u64().unwrap_or(0)).sum();
    assert_eq!(active, 0, "a cancelled job kept leases: {cs}");

    // Videos: finished jobs, newest first.
    let v = c.cli_json(&["videos", "--json"]);
    let ids: Vec<&str> = v.as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [long_job.as_str(), job.as_str(), first.as_str()], "{v}");
    let finished: Vec<u64> = v.as_array().unwrap().iter().map(|v| v["finished_at"].as_u64().unwrap()).collect();
    assert!(finished.windows(2).all(|w| w[0] >= w[1]), "not newest first: {v}");
    for k in ["id", "name", "source", "state", "frames", "finished_at"] {
        assert!(v[0].get(k).is_some(), "videos lack {k}: {v}");
    }

    // Prune: everything that finished is gone, and says what it freed.
    std::thread::sleep(Duration::from_millis(1100));
    let p = c.cli_json(&["prune", "--older-than", "1s", "--json"]);
    assert_eq!(p["jobs"], 3, "{p}");
    assert_eq!(p["results"], 40 + 80 + st["frames_done"].as_u64().unwrap(), "{p}");
    assert_eq!(p["frames"], 40 + 40 + st["frames_done"].as_u64().unwrap(), "{p}");
    assert!(p["bytes"].as_u64().unwrap() > 0);
    let pruned: BTreeSet<&str> = p["job_ids"].as_array().unwrap().iter().map(|j| j.as_str().unwrap()).collect();
    assert_eq!(pruned, BTreeSet::from([first.as_str(), job.as_str(), long_job.as_str()]));
    for id in [&first, &job, &long_job] {
        for args in [vec!["status", id.as_str()], vec!["results", id.as_str(), "--json"], vec!["metrics", id.as_str()], vec!["frame", id.as_str(), "0"]] {
            let out = c.cli(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?} still answers after prune");
            assert!(String::from_utf8_lossy(&out.stderr).contains("no job"), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    assert_eq!(c.cli_json(&["videos", "--json"]), Value::Array(vec![]));
    let again = c.cli_json(&["prune", "--older-than", "0s", "--json"]);
    assert_eq!(again["jobs"], 0);
}
