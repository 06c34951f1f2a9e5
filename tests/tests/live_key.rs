//! A push to a live stream's port with another stream key is refused (the
//! publisher is disconnected, its push fails) and the stream keeps waiting
//! for its own publisher. Real processes; every wait is bounded.
use std::time::Duration;

use panoptes_tests::{finish_push, push_stream, Cluster};

#[test]
fn a_push_with_a_wrong_stream_key_is_refused_and_the_right_one_is_analysed() {
    let c = Cluster::start(&["w1"]);
    c.wait_workers(1);
    let v = c.cli_json(&["live", "--models", "colors", "--json"]);
    let job = v["job_id"].as_str().unwrap().to_string();
    let url = v["rtmp_url"].as_str().unwrap().to_string();
    let port = c.wait_push_listening(0, &url);

    let wrong = format!("rtmp://127.0.0.1:{port}/live/not-the-key");
    assert!(!finish_push(push_stream(&wrong, "160x120", 3), Duration::from_secs(30)), "a push with a wrong stream key was accepted");
    assert!(c.workers[0].log_text().contains("refused a publisher that pushed to another stream key"), "{}", c.logs());
    assert_eq!(c.cli_json(&["status", &job, "--json"])["state"], "running", "the refused push ended the stream");
    assert!(c.results(&job).is_empty(), "frames of the refused push were analysed");

    // The stream still takes its own publisher.
    assert!(finish_push(push_stream(&url, "160x120", 2), Duration::from_secs(60)), "push to {url} failed after a refused one");
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    assert!(!c.results(&job).is_empty());
}
