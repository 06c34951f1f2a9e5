//! A live stream's ingest port takes connections that are not its
//! publisher's (a port scan, a bare TCP connection, garbage, an HTTP
//! request, an RTMP handshake cut short) without cost to the job: each is
//! closed, the stream keeps waiting, and the publisher that comes next is
//! analysed (issue 19, "Live ingest"). Before, each such connection failed
//! the stream's shard, and the third failed the job. Real processes; every
//! wait is bounded.
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use panoptes_tests::{finish_push, push_stream, wait_for, Cluster};

const CLOSED: &str = "closed a connection that sent no stream this worker could read";
/// The shard's error when its publisher's stream could not be read.
const FAILED: &str = "or it could not be read";

#[test]
fn connections_that_are_not_a_stream_do_not_cost_a_live_job() {
    let c = Cluster::start(&["w1"]);
    c.wait_workers(1);
    let v = c.cli_json(&["live", "--models", "colors", "--json"]);
    let job = v["job_id"].as_str().unwrap().to_string();
    let url = v["rtmp_url"].as_str().unwrap().to_string();
    let port = c.wait_push_listening(0, &url);

    let mut rtmp_cut_short = vec![3u8]; // C0: RTMP version 3, then half of C1
    rtmp_cut_short.extend(std::iter::repeat_n(0u8, 700));
    let visitors: [(&str, Vec<u8>); 4] = [
        ("a bare TCP connection", Vec::new()),
        ("garbage", (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec()),
        ("an RTMP handshake cut short", rtmp_cut_short),
    ];
    for (i, (what, bytes)) in visitors.iter().enumerate() {
        // Between two of them FFmpeg listens again: retry a refused connect.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut s = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("connect to the ingest port {port} for {what}: {e}\n{}", c.logs()),
            }
        };
        let _ = s.write_all(bytes);
        let _ = s.shutdown(Shutdown::Write);
        drop(s);
        // Closed and waited on (now), or taken as the stream failing (before).
        let failed_shard = wait_for(&format!("the worker to close {what}"), Duration::from_secs(30), || {
            let log = c.workers[0].log_text();
            let failed = log.matches(FAILED).count();
            (log.matches(CLOSED).count() > i || failed > 0).then_some(failed)
        });
        assert_eq!(failed_shard, 0, "{what} failed the live stream's shard\n{}", c.logs());
        let st = c.cli_json(&["status", &job, "--json"]);
        assert_eq!(st["state"], "running", "{what} cost the live job: {st}\n{}", c.logs());
    }
    assert!(c.results(&job).is_empty(), "frames were analysed before any publisher came");

    // The publisher that comes next is analysed.
    assert!(finish_push(push_stream(&url, "160x120", 2), Duration::from_secs(60)), "push to {url} failed after the visitors\n{}", c.logs());
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    assert!(!c.results(&job).is_empty(), "the publisher's frames were not analysed");
}
