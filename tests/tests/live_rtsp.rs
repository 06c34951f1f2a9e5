//! RTSP pull sources: an rtsp:// URL given to `submit` becomes a live job on
//! one worker, which opens the stream itself with FFmpeg (libavformat's RTSP
//! client), analyses and commits its frames as they arrive, reopens it when
//! it drops, and completes the job when it ends and does not come back (the
//! same end rule as the rtmp:// pull tests in live_pull.rs).
//!
//! Why this file has its own RTSP server: no RTSP server lean enough for CI
//! is packaged in Debian, and the FFmpeg CLI cannot serve RTSP playback (it
//! only receives RTSP ANNOUNCE/RECORD pushes). So the test runs a minimal
//! one, plain std: the FFmpeg CLI encodes a generated stream to RTP on two
//! UDP ports of 127.0.0.1 (`-f rtp -sdp_file`), and the server answers
//! OPTIONS, DESCRIBE (FFmpeg's SDP with control URLs), SETUP, PLAY,
//! GET_PARAMETER and TEARDOWN for one stream, relaying the RTP packets over
//! the RTSP connection (interleaved, RFC 2326 §10.12). A SETUP asking for
//! UDP gets 461 Unsupported Transport: FFmpeg, which tries UDP first unless
//! told `rtsp_transport`, then asks for TCP, as it does with cameras that
//! only stream over TCP. Everything listens on 127.0.0.1 and stops when the
//! stream ends or the server is dropped; every wait is bounded.
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use panoptes_tests::{free_port, wait_for, Cluster};

/// A minimal RTSP server (RFC 2326, RTP over the RTSP connection only):
/// the FFmpeg CLI encodes `seconds` of testsrc to RTP on two UDP ports of
/// 127.0.0.1; this server describes that stream (FFmpeg's SDP), refuses UDP
/// transport with 461 (players then ask for TCP) and relays every RTP/RTCP
/// packet to each playing client, interleaved (`$`, channel, length). The
/// first player also gets what was sent before it played, so it sees the
/// stream from its first frame, as a player of `ffmpeg -listen 1` does.
/// When FFmpeg exits (end of stream) or the server is killed, the server
/// closes its connections and stops listening: players see the stream end.
struct RtspServer {
    url: String,
    ffmpeg: Arc<Mutex<Child>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

struct Shared {
    stop: AtomicBool,
    /// PLAY requests answered: players this server streamed to.
    plays: AtomicUsize,
    /// SETUP requests asking for RTP over UDP (answered 461).
    udp_setups: AtomicUsize,
    /// The stream's SDP once FFmpeg wrote it and sends packets.
    sdp: Mutex<Option<String>>,
    relay: Mutex<Relay>,
}

#[derive(Default)]
struct Relay {
    /// Packets sent before the first player played (channel, packet);
    /// `None` once it took them.
    backlog: Option<Vec<(u8, Vec<u8>)>>,
    players: Vec<Arc<Mutex<TcpStream>>>,
}

impl RtspServer {
    /// Serve `seconds` of a generated stream, in real time, at
    /// `rtsp://127.0.0.1:PORT/live/cam`.
    fn start(port: u16, seconds: u32) -> RtspServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("RTSP server: bind 127.0.0.1:{port}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let (rtp, rtcp) = udp_pair();
        let rtp_port = rtp.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let sdp_path = dir.path().join("stream.sdp");
        let child = Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25"])
            .args(["-t", &seconds.to_string(), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p"])
            .args(["-f", "rtp", &format!("rtp://127.0.0.1:{rtp_port}?pkt_size=1200"), "-sdp_file"])
            .arg(&sdp_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run ffmpeg (is the FFmpeg CLI installed?)");
        let ffmpeg = Arc::new(Mutex::new(child));
        let shared = Arc::new(Shared { stop: AtomicBool::new(false), plays: AtomicUsize::new(0), udp_setups: AtomicUsize::new(0), sdp: Mutex::new(None), relay: Mutex::new(Relay { backlog: Some(Vec::new()), players: Vec::new() }) });
        let mut threads = Vec::new();
        let got_packet = Arc::new(AtomicBool::new(false));
        for (channel, sock) in [(0u8, rtp), (1u8, rtcp)] {
            let (shared, got) = (shared.clone(), got_packet.clone());
            threads.push(std::thread::spawn(move || relay_udp(&shared, sock, channel, &got)));
        }
        {
            let (shared, ffmpeg) = (shared.clone(), ffmpeg.clone());
            let limit = Duration::from_secs(seconds as u64 + 60);
            threads.push(std::thread::spawn(move || supervise(&shared, &ffmpeg, &sdp_path, &got_packet, limit)));
        }
        {
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || accept(&shared, listener)));
        }
        RtspServer { url: format!("rtsp://127.0.0.1:{port}/live/cam"), ffmpeg, shared, threads, _dir: dir }
    }

    /// The stream ended (FFmpeg exited) and the server stopped.
    fn ended(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// How many players it streamed to (PLAY requests answered).
    fn plays(&self) -> usize {
        self.shared.plays.load(Ordering::Relaxed)
    }

    /// Stop at once, mid-stream: FFmpeg is killed, the connections closed.
    fn kill(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        {
            let mut c = self.ffmpeg.lock().unwrap();
            let _ = c.kill();
            let _ = c.wait();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two UDP sockets on 127.0.0.1 ports P (even, RTP) and P+1 (RTCP), where
/// FFmpeg's RTP muxer sends.
fn udp_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..100 {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p % 2 != 0 || p == u16::MAX {
            continue;
        }
        if let Ok(b) = UdpSocket::bind(("127.0.0.1", p + 1)) {
            return (a, b);
        }
    }
    panic!("RTSP server: no free UDP port pair on 127.0.0.1")
}

/// Relay the packets FFmpeg sends to `sock` on interleaved `channel`.
fn relay_udp(shared: &Shared, sock: UdpSocket, channel: u8, got: &AtomicBool) {
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = vec![0u8; 65536];
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(_) => continue, // timeout: check `stop`
        };
        got.store(true, Ordering::Relaxed);
        let mut relay = shared.relay.lock().unwrap();
        if let Some(backlog) = relay.backlog.as_mut() {
            if backlog.len() < 100_000 {
                backlog.push((channel, buf[..n].to_vec()));
            }
        }
        relay.players.retain(|p| write_interleaved(&mut p.lock().unwrap(), channel, &buf[..n]).is_ok());
    }
}

fn write_interleaved(s: &mut TcpStream, channel: u8, packet: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(4 + packet.len());
    frame.extend_from_slice(&[b'$', channel]);
    frame.extend_from_slice(&(packet.len() as u16).to_be_bytes());
    frame.extend_from_slice(packet);
    s.write_all(&frame)
}

/// Publish FFmpeg's SDP once it is written and packets flow; stop the
/// server when FFmpeg exits (after the last packets are relayed) or after
/// `limit`.
fn supervise(shared: &Shared, ffmpeg: &Mutex<Child>, sdp_path: &std::path::Path, got: &AtomicBool, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !shared.stop.load(Ordering::Relaxed) {
        if shared.sdp.lock().unwrap().is_none() && got.load(Ordering::Relaxed) {
            if let Ok(text) = std::fs::read_to_string(sdp_path) {
                if text.contains("m=video") && text.ends_with('\n') {
                    *shared.sdp.lock().unwrap() = Some(text);
                }
            }
        }
        let exited = {
            let mut c = ffmpeg.lock().unwrap();
            if Instant::now() > deadline {
                let _ = c.kill();
            }
            c.try_wait().ok().flatten().is_some()
        };
        if exited {
            std::thread::sleep(Duration::from_millis(300));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    shared.stop.store(true, Ordering::Relaxed);
}

/// Accept players until the server stops; each connection on its own thread.
fn accept(shared: &Arc<Shared>, listener: TcpListener) {
    let mut players = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                let shared = shared.clone();
                players.push(std::thread::spawn(move || serve_player(&shared, s)));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    drop(listener);
    for p in players {
        let _ = p.join();
    }
}

/// One RTSP connection: requests and their replies, RTCP from the player
/// (interleaved `$` frames) read and ignored, then the relayed stream.
fn serve_player(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let writer = Arc::new(Mutex::new(stream.try_clone().unwrap()));
    let mut reader = stream;
    let (mut buf, mut chunk) = (Vec::<u8>::new(), [0u8; 4096]);
    'conn: while !shared.stop.load(Ordering::Relaxed) {
        loop {
            if buf.first() == Some(&b'$') {
                if buf.len() < 4 {
                    break;
                }
                let n = 4 + u16::from_be_bytes([buf[2], buf[3]]) as usize;
                if buf.len() < n {
                    break;
                }
                buf.drain(..n);
                continue;
            }
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { break };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let body = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
            if buf.len() < end + 4 + body {
                break;
            }
            buf.drain(..end + 4 + body);
            let (reply, play, close) = reply(shared, &head);
            let mut w = writer.lock().unwrap();
            if w.write_all(reply.as_bytes()).is_err() || close {
                break 'conn;
            }
            drop(w);
            if play {
                let mut relay = shared.relay.lock().unwrap();
                let backlog = relay.backlog.take().unwrap_or_default();
                let mut w = writer.lock().unwrap();
                if backlog.iter().any(|(ch, p)| write_interleaved(&mut w, *ch, p).is_err()) {
                    break 'conn;
                }
                drop(w);
                relay.players.push(writer.clone());
                shared.plays.fetch_add(1, Ordering::Relaxed);
            }
        }
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    shared.relay.lock().unwrap().players.retain(|p| !Arc::ptr_eq(p, &writer));
    let _ = reader.shutdown(Shutdown::Both);
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The reply to one request: (text, start playing, close the connection).
fn reply(shared: &Shared, head: &str) -> (String, bool, bool) {
    const SESSION: &str = "5a3c9e01";
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, uri) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let cseq = header(head, "cseq").unwrap_or("0");
    let ok = |extra: &str| format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nServer: panoptes-test\r\n{extra}\r\n");
    match method {
        "OPTIONS" => (ok("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n"), false, false),
        "DESCRIBE" => {
            // FFmpeg writes the SDP when it starts sending: wait for it (bounded).
            let deadline = Instant::now() + Duration::from_secs(20);
            let sdp = loop {
                if let Some(s) = shared.sdp.lock().unwrap().clone() {
                    break Some(s);
                }
                if Instant::now() > deadline || shared.stop.load(Ordering::Relaxed) {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let Some(sdp) = sdp else {
                return (format!("RTSP/1.0 404 Not Found\r\nCSeq: {cseq}\r\n\r\n"), false, true);
            };
            let body = describe(&sdp);
            let base = if uri.ends_with('/') { uri.to_string() } else { format!("{uri}/") };
            let extra = format!("Content-Base: {base}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n", body.len());
            (ok(&extra) + &body, false, false)
        }
        "SETUP" => {
            let transport = header(head, "transport").unwrap_or("");
            if transport.contains("RTP/AVP/TCP") {
                (ok(&format!("Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: {SESSION};timeout=60\r\n")), false, false)
            } else {
                shared.udp_setups.fetch_add(1, Ordering::SeqCst);
                (format!("RTSP/1.0 461 Unsupported Transport\r\nCSeq: {cseq}\r\n\r\n"), false, false)
            }
        }
        "PLAY" => (ok(&format!("Session: {SESSION}\r\nRange: npt=0.000-\r\n")), true, false),
        "TEARDOWN" => (ok(&format!("Session: {SESSION}\r\n")), false, true),
        _ => (ok(&format!("Session: {SESSION}\r\n")), false, false),
    }
}

/// FFmpeg's SDP (for `rtp://` output) as a DESCRIBE body: no port (the
/// stream comes over the connection), and control URLs.
fn describe(sdp: &str) -> String {
    let mut out = String::new();
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with("a=control") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("m=") {
            out.push_str("a=control:*\r\n");
            let mut f: Vec<&str> = rest.split(' ').collect();
            if f.len() > 1 {
                f[1] = "0";
            }
            out.push_str(&format!("m={}\r\na=control:trackID=0\r\n", f.join(" ")));
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

#[test]
fn an_rtsp_source_is_pulled_reopened_when_it_drops_and_completes_when_it_ends() {
    let c = Cluster::start_with_live("reconnect_attempts = 3\nreconnect_backoff_ms = 200\nreconnect_max_backoff_ms = 400\nidle_timeout_s = 3");
    let port = free_port();
    let mut first = RtspServer::start(port, 60);
    let url = first.url.clone();
    let v = c.cli_json(&["submit", &url, "--models", "colors", "--json"]);
    let job = v["job_id"].as_str().unwrap_or_else(|| panic!("no job_id in {v}")).to_string();
    let s = c.cli_json(&["status", &job, "--json"]);
    assert_eq!(s["state"], "running", "a pull source is not probed: its job runs at once: {s}");

    // Frames arrive over RTSP and are committed while the stream plays.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.results(&job).len() < 20 {
        assert!(Instant::now() < deadline, "fewer than 20 results from the RTSP stream after 30 s: {}\n{}", c.cli_json(&["status", &job, "--json"]), c.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = c.workers[0].log_text();
    assert!(log.contains("opening the pull source") && log.contains(&url), "the worker did not open {url} itself:\n{}", c.logs());

    assert!(first.plays() >= 1, "the worker did not play the stream from the RTSP server");
    // Over UDP, FFmpeg would send to whatever address the server's reply
    // names, past the source policy: the worker asks for TCP only.
    assert_eq!(first.shared.udp_setups.load(Ordering::SeqCst), 0, "the worker asked the RTSP server for RTP over UDP");

    // Drop the source mid-stream, then serve it again at the same URL.
    first.kill();
    let second = RtspServer::start(port, 3);
    wait_for("the second RTSP server's stream to end", Duration::from_secs(60), || second.ended().then_some(()));

    // It ended and does not come back: the job completes.
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    let unique = c.frames_once(&job);
    // Numbering continued across the reconnection: the last frame is beyond
    // what the second server alone sent (75 frames).
    let last = *unique.iter().last().unwrap();
    assert!(last >= 75 + 20 - 1, "frame numbers restarted after the reconnection (or frames were lost): last frame {last}\n{}", c.logs());
    assert!(c.workers[0].log_text().contains("pull source reopened"), "{}", c.logs());
    assert!(second.plays() >= 1, "the worker did not play the second server's stream");
    let reconnects = c.worker_metric(0, &format!("panoptes_worker_live_reconnects_total{{job_id=\"{job}\"}}"));
    assert!(reconnects >= 1.0, "reconnects {reconnects}");
    eprintln!("{job}: {} frames over RTSP, last {last}, {reconnects} reconnects", unique.len());
}

#[test]
fn an_rtsp_source_that_never_opens_fails_its_job_with_a_clear_error() {
    let c = Cluster::start_with_live("reconnect_attempts = 2\nreconnect_backoff_ms = 100\nreconnect_max_backoff_ms = 200");
    let url = format!("rtsp://127.0.0.1:{}/live/nothing", free_port());
    let v = c.cli_json(&["submit", &url, "--models", "colors", "--json"]);
    let job = v["job_id"].as_str().unwrap_or_else(|| panic!("no job_id in {v}")).to_string();
    let s = c.wait_finished(&job, Duration::from_secs(60));
    assert_eq!(s["state"], "failed", "{s}");
    let err = s.to_string();
    assert!(err.contains("cannot open the pull source") && err.contains(&url) && err.contains("reconnect_attempts"), "{s}");
}
