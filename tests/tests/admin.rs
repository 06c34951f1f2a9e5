//! The admin surface, end to end with real processes: `cluster status`,
//! adding and removing coordinators, draining a worker.
use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::{Duration, Instant};

use panoptes_tests::{make_video, Cluster};
use serde_json::Value;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn text(o: &Output) -> String {
    format!("exit {:?}\nstdout: {}\nstderr: {}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

fn status(c: &Cluster) -> Value {
    c.cli_json(&["cluster", "status", "--json"])
}

/// Poll `cluster status --json` until `pred` holds (bounded).
fn wait_status(c: &Cluster, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(c);
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "cluster status never showed {what}: {s}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn member(s: &Value, id: u64) -> Option<&Value> {
    s["members"].as_array()?.iter().find(|m| m["id"] == id)
}

fn worker<'a>(s: &'a Value, name: &str) -> Option<&'a Value> {
    s["workers"].as_array()?.iter().find(|w| w["name"] == name)
}

fn voters(v: &Value) -> Vec<u64> {
    v["voters"].as_array().unwrap_or_else(|| panic!("no voters in {v}")).iter().map(|x| x.as_u64().unwrap()).collect()
}

/// Every analysed (frame, model) exactly once.
fn assert_exactly_once(c: &Cluster, job: &str, frames: u64, step: u64, models: &[&str]) {
    let mut seen: BTreeMap<(u64, String), usize> = BTreeMap::new();
    for r in c.results(job) {
        *seen.entry((r["frame"].as_u64().unwrap(), r["model"].as_str().unwrap().to_string())).or_default() += 1;
    }
    for f in (0..frames).step_by(step as usize) {
        for m in models {
            assert_eq!(seen.get(&(f, m.to_string())), Some(&1), "frame {f} model {m} not stored exactly once");
        }
    }
    assert_eq!(seen.len() as u64, frames.div_ceil(step) * models.len() as u64, "unexpected extra results");
}

/// (a) A 3-member cluster with 2 workers: the documented JSON shape, one
/// leader, three healthy members, two active workers; a follower's answer
/// names the same leader (it asks the leader).
#[test]
fn a01_cluster_status_has_the_documented_shape() {
    let c = Cluster::start_replicated(3, &["w1", "w2"]);
    let s = wait_status(&c, "3 healthy members and 2 workers heard from", |s| {
        s["members"].as_array().is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["healthy"] == true))
            && s["workers"].as_array().is_some_and(|w| w.len() == 2 && w.iter().all(|w| w["last_heartbeat_ms"].is_u64()))
    });
    assert_eq!(keys(&s), set(&["leader", "term", "members", "workers", "jobs"]), "{s}");
    for m in s["members"].as_array().unwrap() {
        assert_eq!(keys(m), set(&["id", "addr", "role", "last_log_index", "healthy", "behind", "snapshot_sent_bytes", "snapshot_bytes"]), "{m}");
        assert!(m["last_log_index"].as_u64().unwrap() > 0, "{m}");
        assert!(["behind", "snapshot_sent_bytes", "snapshot_bytes"].iter().all(|k| m[k].is_u64()), "{m}");
    }
    for w in s["workers"].as_array().unwrap() {
        assert_eq!(keys(w), set(&["name", "addr", "state", "capacity", "active_shards", "last_heartbeat_ms", "ingest"]), "{w}");
        assert_eq!(w["state"], "active", "{w}");
        assert_eq!(w["active_shards"], 0, "{w}");
        assert!(w["capacity"].as_u64().unwrap() >= 1, "{w}");
    }
    let j = &s["jobs"];
    assert!(keys(j).is_superset(&set(&["queued", "running", "completed", "failed"])), "{j}");
    assert!(keys(j).iter().all(|k| ["queued", "running", "completed", "failed", "cancelled"].contains(&k.as_str())), "{j}");
    assert!(s["term"].as_u64().unwrap() >= 1, "{s}");

    let leader = s["leader"].as_u64().unwrap();
    let leaders: Vec<&Value> = s["members"].as_array().unwrap().iter().filter(|m| m["role"] == "leader").collect();
    assert_eq!(leaders.len(), 1, "{s}");
    assert_eq!(leaders[0]["id"], leader, "{s}");
    let mut names: Vec<&str> = s["workers"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["w1", "w2"]);

    // Any member answers with the leader's view.
    for (i, addr) in c.coordinator_addrs.iter().enumerate() {
        let v = json_of(&c.cli_at(addr, &["cluster", "status", "--json"]));
        assert_eq!(v["leader"], leader, "coordinator {} names another leader: {v}", i + 1);
        assert_eq!(v["members"].as_array().unwrap().len(), 3, "{v}");
    }
    // The table.
    let out = c.cli(&["cluster", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("MEMBERS") && t.contains("WORKERS") && t.contains("healthy") && t.contains("w2"), "{t}");
}

/// (b) A 4th coordinator joins (and does not bootstrap a cluster of its
/// own), catches up and shows in status; it is removed again, then a
/// follower is removed; the remaining two still commit a job; the last voter
/// cannot be removed.
#[test]
fn b01_members_are_added_and_removed_and_the_cluster_still_commits() {
    let mut c = Cluster::start_replicated(3, &["w1"]);
    let before = wait_status(&c, "3 healthy members", |s| s["members"].as_array().is_some_and(|m| m.iter().filter(|m| m["healthy"] == true).count() == 3));
    let leader = before["leader"].as_u64().unwrap();
    let leader_log = member(&before, leader).unwrap()["last_log_index"].as_u64().unwrap();

    let (id, addr) = c.start_joining_coordinator();
    assert_eq!(id, 4);
    // Started with --join, it waits to be added: no cluster, no leader of its own.
    let alone = json_of(&c.cli_at(&addr, &["cluster", "status", "--json"]));
    assert_eq!(alone["leader"], 0, "the joining coordinator formed a cluster of its own: {alone}");
    assert_eq!(alone["members"].as_array().map(|m| m.len()), Some(0), "{alone}");

    let out = c.cli(&["cluster", "add-member", "4", &addr, "--timeout", "60", "--json"]);
    assert!(out.status.success(), "add-member failed: {}\n{}", text(&out), c.logs());
    let added = json_of(&out);
    assert_eq!(voters(&added), [1, 2, 3, 4], "{added}");
    // Adding it again changes nothing.
    let again = c.cli(&["cluster", "add-member", "4", &addr, "--json"]);
    assert!(again.status.success(), "{}", text(&again));

    let s = wait_status(&c, "member 4 healthy and caught up", |s| {
        member(s, 4).is_some_and(|m| m["healthy"] == true && m["last_log_index"].as_u64().unwrap_or(0) >= leader_log)
    });
    let m4 = member(&s, 4).unwrap();
    assert_eq!(m4["addr"], addr.as_str(), "{s}");
    assert_eq!(m4["role"], "follower", "{s}");
    assert_eq!(s["members"].as_array().unwrap().len(), 4, "{s}");
    // The new member answers too, with the leader's view.
    let from4 = json_of(&c.cli_at(&addr, &["cluster", "status", "--json"]));
    assert_eq!(from4["members"].as_array().unwrap().len(), 4, "{from4}");

    // Remove it again (then stop it, as documented).
    let out = c.cli(&["cluster", "remove-member", "4", "--json"]);
    assert!(out.status.success(), "remove-member 4 failed: {}\n{}", text(&out), c.logs());
    assert_eq!(voters(&json_of(&out)), [1, 2, 3]);
    c.kill_coordinator(4);

    // Remove a follower, and stop it.
    let leader = status(&c)["leader"].as_u64().unwrap();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let out = c.cli(&["cluster", "remove-member", &follower.to_string(), "--json"]);
    assert!(out.status.success(), "remove-member {follower} failed: {}\n{}", text(&out), c.logs());
    let left: Vec<u64> = (1..=3).filter(|i| *i != follower).collect();
    assert_eq!(voters(&json_of(&out)), left);
    c.kill_coordinator(follower);
    let missing = c.cli(&["cluster", "remove-member", "9"]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("coordinator 9 is not a member"), "{}", text(&missing));

    let s = wait_status(&c, "the 2 remaining members healthy", |s| {
        s["members"].as_array().is_some_and(|m| m.len() == 2 && m.iter().all(|m| m["healthy"] == true))
    });
    let ids: Vec<u64> = s["members"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, left, "{s}");

    // Two voters still commit: a small job completes, results exactly once.
    let video = c.dir.path().join("small.mp4");
    make_video(&video, 40, "160x120", 10);
    let out = c.cli(&["submit", video.to_str().unwrap(), "--models", "colors", "--wait", "--json"]);
    let done = json_of(&out);
    assert_eq!(done["state"], "completed", "{done}\n{}", c.logs());
    assert_exactly_once(&c, done["job_id"].as_str().unwrap(), 40, 1, &["colors"]);

    // Down to one voter; the last voter cannot be removed.
    let leader = status(&c)["leader"].as_u64().unwrap();
    let other = left.iter().copied().find(|i| *i != leader).unwrap();
    let out = c.cli(&["cluster", "remove-member", &other.to_string()]);
    assert!(out.status.success(), "remove-member {other} failed: {}\n{}", text(&out), c.logs());
    c.kill_coordinator(other);
    let last = c.cli(&["cluster", "remove-member", &leader.to_string()]);
    assert_eq!(last.status.code(), Some(2), "{}", text(&last));
    assert!(String::from_utf8_lossy(&last.stderr).contains("last voting member"), "{}", text(&last));
}

/// Lines of the coordinators' logs where a shard was leased to `worker`
/// (including a part split off another worker's shard).
fn leases_logged(c: &Cluster, worker: &str) -> usize {
    let tag = format!("={worker}");
    (1..=c.coordinators.len() as u64)
        .map(|id| c.coordinator_log(id))
        .map(|log| log.lines().filter(|l| (l.contains("shard leased") || l.contains("work stolen")) && strip_ansi(l).contains(&tag)).count())
        .sum()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for ch in s.chars() {
        match (esc, ch) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, _) => out.push(ch),
        }
    }
    out
}

/// (c) `worker drain --hand-back` on a worker holding a lease mid-job: its
/// leases go back, it takes no new shard, the other worker finishes the job,
/// every result is stored once; `--undo` makes it take shards again; an
/// unknown worker is NOT_FOUND.
#[test]
fn c01_a_drained_worker_hands_back_and_takes_nothing_until_undrained() {
    let c = Cluster::start_replicated(3, &["w1", "w2"]);
    let video = c.dir.path().join("clip.mp4");
    make_video(&video, 240, "320x240", 10);
    let out = c.cli(&["submit", video.to_str().unwrap(), "--models", "objects", "--frame-step", "2", "--json"]);
    let job = json_of(&out)["job_id"].as_str().unwrap_or_else(|| panic!("{}", text(&out))).to_string();
    wait_status(&c, "w1 holding a lease", |s| worker(s, "w1").is_some_and(|w| w["active_shards"].as_u64().unwrap_or(0) >= 1));

    // Through a follower: the drain is forwarded to the leader.
    let leader = status(&c)["leader"].as_u64().unwrap();
    let follower = c.coordinator_addrs[(1..=3).find(|i| *i != leader).unwrap() as usize - 1].clone();
    let out = c.cli_at(&follower, &["worker", "drain", "w1", "--hand-back", "--json"]);
    assert!(out.status.success(), "drain failed: {}\n{}", text(&out), c.logs());
    let d = json_of(&out);
    assert_eq!(d["worker"], "w1");
    assert_eq!(d["draining"], true);
    assert!(d["leases_returned"].as_u64().unwrap() <= 1, "{d}");

    wait_status(&c, "w1 draining with no shard", |s| worker(s, "w1").is_some_and(|w| w["state"] == "draining" && w["active_shards"] == 0));
    let leased_before = leases_logged(&c, "w1");
    // Until the job ends, w1 holds nothing.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let s = status(&c);
        let w1 = worker(&s, "w1").unwrap();
        assert_eq!(w1["active_shards"], 0, "a draining worker got a shard: {s}");
        assert_eq!(w1["state"], "draining", "{s}");
        let st = c.cli_json(&["status", &job, "--json"]);
        if st["state"] != "running" && st["state"] != "queued" {
            assert_eq!(st["state"], "completed", "{st}\n{}", c.logs());
            break;
        }
        assert!(Instant::now() < deadline, "job not finished: {st}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(leases_logged(&c, "w1"), leased_before, "w1 was leased a shard while draining");
    assert!(leases_logged(&c, "w2") > 0, "w2 never took a shard");
    assert_exactly_once(&c, &job, 240, 2, &["objects"]);

    // Unknown worker.
    let out = c.cli(&["worker", "drain", "nobody"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no worker named 'nobody'"), "{}", text(&out));

    // Undrain w1 and drain w2 (without hand-back): the next job can only run on w1.
    let out = c.cli(&["worker", "drain", "w1", "--undo", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json_of(&out)["draining"], false);
    let out = c.cli(&["worker", "drain", "w2"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_status(&c, "w1 active, w2 draining", |s| {
        worker(s, "w1").is_some_and(|w| w["state"] == "active") && worker(s, "w2").is_some_and(|w| w["state"] == "draining")
    });
    let small = c.dir.path().join("small.mp4");
    make_video(&small, 40, "160x120", 10);
    let out = c.cli(&["submit", small.to_str().unwrap(), "--models", "colors", "--wait", "--json"]);
    let done = json_of(&out);
    assert_eq!(done["state"], "completed", "{done}\n{}", c.logs());
    assert!(leases_logged(&c, "w1") > leased_before, "the undrained w1 took no shard");
    assert_exactly_once(&c, done["job_id"].as_str().unwrap(), 40, 1, &["colors"]);
}
