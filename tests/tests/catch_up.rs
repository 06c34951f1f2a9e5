//! Catching up, with real processes: a follower that was down while jobs
//! committed hundreds of entries (with pictures) is shown behind by `cluster
//! status`, restarts while another job runs, catches up by a snapshot (the
//! leader compacted what it lacked) and the log, and ends holding exactly
//! what the leader holds, read from it alone.
use std::time::Duration;

use panoptes_tests::{follower_away_during_a_job, make_video, wait_for, Cluster, FollowerAway};
use serde_json::Value;

/// Member `id`'s entry in `cluster status --json` asked of `addr`.
fn member(c: &Cluster, addr: &str, id: u64) -> Option<Value> {
    let out = c.cli_at(addr, &["cluster", "status", "--json"]);
    let s: Value = serde_json::from_slice(&out.stdout).ok()?;
    s["members"].as_array()?.iter().find(|m| m["id"] == id).cloned()
}

#[test]
fn a_follower_that_was_down_under_load_catches_up_and_status_shows_how_far_behind_it_is() {
    // While it is down: 600 frames with pictures, ~150 reports.
    let FollowerAway { mut c, leader, follower: f, leader_addr: l_addr, follower_addr: f_addr, job: job_a } = follower_away_during_a_job(600);
    let m = member(&c, &l_addr, f).expect("the leader's status");
    assert_eq!(m["healthy"], false, "{m}");
    let behind = m["behind"].as_u64().expect("behind is a number");
    assert!(behind >= 150, "a member that missed ~150 reports is shown {behind} entries behind: {m}");
    let table = String::from_utf8_lossy(&c.cli_at(&l_addr, &["cluster", "status"]).stdout).to_string();
    let row = table.lines().find(|l| l.contains(&f_addr)).unwrap_or_default();
    assert!(table.contains("BEHIND") && row.contains(&format!(" {behind} ")), "the table shows no BEHIND {behind} for {f_addr}:\n{table}");

    // Back while another job commits.
    let b = c.dir.path().join("b.mp4");
    make_video(&b, 400, "96x64", 25);
    let s = c.cli_json(&["submit", b.to_str().unwrap(), "--models", "colors", "--pictures-every", "0", "--json"]);
    let job_b = s["job_id"].as_str().expect("job id").to_string();
    c.start_coordinator(f);
    let done = c.wait_finished(&job_b, Duration::from_secs(180));
    assert_eq!(done["state"], "completed", "{done}\n{}", c.logs());

    let m = wait_for("the follower to be healthy and 0 entries behind", Duration::from_secs(120), || {
        member(&c, &l_addr, f).filter(|m| m["healthy"] == true && m["behind"] == 0)
    });
    assert_eq!(m["snapshot_bytes"], 0, "no snapshot is being sent once it caught up: {m}");
    for job in [&job_a, &job_b] {
        let (want_rows, want_status) = c.held_by(&l_addr, job).expect("the leader's results");
        let (rows, status) = wait_for("the follower to hold the leader's results", Duration::from_secs(30), || {
            c.held_by(&f_addr, job).filter(|(rows, _)| *rows == want_rows)
        });
        assert!(!rows.is_empty());
        for k in ["state", "frames_done", "frames_total"] {
            assert_eq!(status[k], want_status[k], "{job} {k}: follower {status}\nleader {want_status}");
        }
    }
    // It caught up by a snapshot: the leader had compacted what it lacked.
    let log = c.coordinator_log(leader);
    assert!(log.contains("sending a snapshot") && log.contains("snapshot sent and installed"), "no snapshot was sent:\n{log}");
    assert!(!c.coordinator_log(f).contains("panicked"));
}
