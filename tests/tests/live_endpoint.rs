//! `panoptes live` given only a follower's address: the follower forwards the
//! request to the leader (which knows the workers' heartbeats), and the stream
//! it hands out works. Real processes; every wait is bounded.
use std::process::{Command, Stdio};
use std::time::Duration;

use panoptes_tests::{wait_for, Cluster};
use serde_json::Value;

#[test]
fn a_follower_forwards_a_live_endpoint_request_to_the_leader() {
    let c = Cluster::start_replicated(3, &["w1"]);
    let leader = c.leader();
    c.wait_workers(1);
    let follower = (1..=3u64).find(|id| *id != leader).unwrap();
    let addr = &c.coordinator_addrs[follower as usize - 1];
    // Only the follower's address: the client cannot fail over to the leader itself.
    let out = wait_for("a live endpoint through the follower", Duration::from_secs(30), || {
        let out = c.cli_at(addr, &["live", "--models", "colors", "--json"]);
        out.status.success().then_some(out)
    });
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = v["job_id"].as_str().unwrap().to_string();
    let url = v["rtmp_url"].as_str().unwrap().to_string();
    assert!(url.starts_with("rtmp://127.0.0.1:") && url.contains("/live/"), "{url}");
    assert!(c.coordinator_log(follower).contains("forwarding a live endpoint request to the leader"), "{}", c.coordinator_log(follower));

    // The endpoint is real: a push to it is analysed and the job completes.
    c.wait_push_listening(0, &url);
    let st = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "2"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-f", "flv", &url])
        .stdout(Stdio::null())
        .spawn()
        .expect("run ffmpeg (is the FFmpeg CLI installed?)");
    let mut push = st;
    let st = wait_for("the push to end", Duration::from_secs(60), || push.try_wait().unwrap());
    assert!(st.success(), "push to {url} failed");
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    assert!(!c.results(&job).is_empty());
}
