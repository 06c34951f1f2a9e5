//! Crash safety of snapshot installs, with real processes: a follower that
//! was away while the leader compacted its log must install a snapshot (of
//! results and stored pictures). It is aborted (as `kill -9` or a power cut
//! would stop it; coordinator/src/crash.rs) at points all through the
//! install: after the first record, in the middle, right before the switch
//! to the new state tree and right after it, and once from outside while the
//! snapshot is being received. Every time it restarts from what is on disk,
//! and at the end it holds exactly what the leader holds, read from it alone.
use std::time::Duration;

use panoptes_tests::{follower_away_during_a_job, wait_for, Cluster, FollowerAway};
fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn picture(c: &Cluster, addr: &str, job: &str, frame: u64) -> Vec<u8> {
    let png = c.dir.path().join(format!("{}-{frame}.png", addr.replace([':', '.'], "_")));
    let out = c.cli_at(addr, &["frame", job, &frame.to_string(), "-o", png.to_str().unwrap()]);
    assert!(out.status.success(), "frame {frame} from {addr}: {}", text(&out));
    std::fs::read(&png).unwrap()
}

#[test]
fn a_follower_killed_during_a_snapshot_install_restarts_and_ends_equal() {
    // While it is away: ~150 reports of 4 frames, each with its picture; the
    // leader snapshots every 10 entries and keeps 100, so the follower can
    // only catch up by a snapshot.
    let FollowerAway { mut c, follower: f, leader_addr: l_addr, follower_addr: f_addr, job, .. } = follower_away_during_a_job(600);
    let (want_rows, want_status) = c.held_by(&l_addr, &job).expect("the leader's results");
    assert_eq!(want_rows.len(), 600, "one result per frame");
    let want_pic = picture(&c, &l_addr, &job, 599);

    // Aborted at each point of the install; each restart starts the install again.
    for point in ["snapshot-install:record#1", "snapshot-install:record#700", "snapshot-install:before-switch", "snapshot-install:after-switch"] {
        c.start_coordinator_env(f, &[("PANOPTES_CRASH_AT", point)]);
        let log = c.wait_coordinator_exit(f, Duration::from_secs(90));
        let name = point.split('#').next().unwrap();
        assert!(log.contains(&format!("aborting at {name}")), "coordinator {f} stopped, but not at {point}:\n{log}");
    }
    // Once more, killed from outside as soon as it is up (while it receives
    // or installs, or just after).
    c.start_coordinator(f);
    std::thread::sleep(Duration::from_millis(300));
    c.kill_coordinator(f);

    c.start_coordinator(f);
    let (rows, status) = wait_for("the restarted follower to hold what the leader holds", Duration::from_secs(90), || {
        c.held_by(&f_addr, &job).filter(|(rows, _)| *rows == want_rows)
    });
    assert_eq!(rows.len(), 600);
    for k in ["state", "frames_done", "frames_total"] {
        assert_eq!(status[k], want_status[k], "{k}: follower {status}\nleader {want_status}");
    }
    assert_eq!(picture(&c, &f_addr, &job, 599), want_pic, "the stored picture differs");
    let log = c.coordinator_log(f);
    assert!(!log.contains("panicked"), "{log}");
}
