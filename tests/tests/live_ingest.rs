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

use panoptes_tests::{finish_push, node_address, push_stream, wait_for, Cluster};

/// What the worker logs when it closes such a connection: its ingest gate
/// (before FFmpeg sees it: see worker/src/ingest_gate.rs), or the ingest
/// thread (a whole handshake, then no stream FFmpeg could read).
const CLOSED: [&str; 2] = ["ingest gate: closed a connection that", "closed a connection that sent no stream this worker could read"];

fn closed_count(log: &str) -> usize {
    CLOSED.iter().map(|m| log.matches(m).count()).sum()
}
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
            (closed_count(&log) > i || failed > 0).then_some(failed)
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

/// A connection that connects and then sends nothing (or trickles) held
/// FFmpeg's one accept for live.idle_timeout_s (here 10 minutes), and the
/// publisher who came meanwhile was refused. Now the worker's gate closes it
/// after live.handshake_timeout_s and passes the publisher at once; the
/// same gate stands in front of the ingest lobby.
#[test]
fn a_silent_or_trickling_connection_does_not_hold_the_ingest_port() {
    let c = Cluster::start_with_live("idle_timeout_s = 600\nhandshake_timeout_s = 2");
    c.wait_workers(1);
    let v = c.cli_json(&["live", "--models", "colors", "--json"]);
    let job = v["job_id"].as_str().unwrap().to_string();
    let url = v["rtmp_url"].as_str().unwrap().to_string();
    let port = c.wait_push_listening(0, &url);

    // Silent: connected, never a byte.
    let silent = TcpStream::connect(("127.0.0.1", port)).expect("connect to the ingest port");
    // Trickling: the RTMP version byte, then a byte every half second (a
    // whole handshake would take 25 minutes).
    let mut trickle = TcpStream::connect(("127.0.0.1", port)).expect("connect to the ingest port");
    let trickler = std::thread::spawn(move || {
        for _ in 0..120 {
            if trickle.write_all(&[3]).is_err() {
                return true; // closed by the worker
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    });
    // The publisher, while both are connected.
    assert!(
        finish_push(push_stream(&url, "160x120", 2), Duration::from_secs(60)),
        "the publisher could not push to {url} while a silent and a trickling connection were open\n{}",
        c.logs()
    );
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    assert!(!c.results(&job).is_empty(), "the publisher's frames were not analysed");
    assert!(trickler.join().unwrap(), "the trickling connection was never closed\n{}", c.logs());
    drop(silent);
    let log = c.workers[0].log_text();
    assert!(log.contains("did not send an RTMP handshake within 2 s"), "{}", c.logs());

    // The ingest lobby: a silent connection is closed the same way.
    let lobby = node_address(&c.workers[0], "lobby", Duration::from_secs(10));
    let lobby_port: u16 = lobby.rsplit_once(':').and_then(|(_, r)| r.split('/').next()?.parse().ok()).unwrap_or_else(|| panic!("no port in {lobby}"));
    let _quiet = TcpStream::connect(("127.0.0.1", lobby_port)).expect("connect to the ingest lobby");
    wait_for("the lobby's gate to close a silent connection", Duration::from_secs(30), || {
        let log = c.workers[0].log_text();
        log.lines().any(|l| l.contains("ingest lobby") && l.contains("did not send an RTMP handshake within 2 s")).then_some(())
    });
}
