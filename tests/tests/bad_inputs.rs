//! Issue 7: a corpus of bad inputs, each with the clear error it must get,
//! then proof that the cluster is still healthy.
//!
//! One cluster (1 coordinator, 1 worker). Every CLI case is submitted with
//! `panoptes submit` and is either refused at submit (exit code 2, the
//! message on stderr) or accepted and then `failed` with its error (the
//! leader probes every source before planning it). A few inputs are not
//! errors, and the table says what they get instead:
//! - a still image (PNG): FFmpeg reads it as a video of one frame, and that is
//!   what it is: the job completes with frame 0 analysed;
//! - a frame step larger than the video: only frame 0 is analysed (frames n
//!   with n % step == 0), the job completes; a step of 0 is refused by the CLI,
//!   while the API keeps reading 0 as its documented default (1);
//! - `file:///etc/passwd`: a local path like any other (confining local sources
//!   to allowed directories comes with the security work); it is no video.
//!
//! Raw gRPC cases follow (garbage and truncated protobuf, a 100 MB message,
//! reports from a worker for a shard it does not hold). At the end a good job
//! completes, `cluster status` shows the worker active, and both processes
//! are still running. Run with `--nocapture` to see the corpus as a table.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use panoptes_proto::api as api_pb;
use panoptes_proto::worker as worker_pb;
use panoptes_tests::{free_port, make_video, Cluster, TEST_CONFIG};
use prost::bytes::{Buf, BufMut};
use serde_json::Value;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// What a bad input must get.
enum Expect {
    /// `submit` exits with code 2 and stderr contains every substring.
    Refused,
    /// `submit` accepts it; the job ends `failed`, its error containing every substring.
    Failed,
    /// Not an error (see the module comment): the job completes with this many analysed frames.
    Completes(u64),
}

struct Case {
    what: &'static str,
    /// `panoptes submit` arguments (`--coordinator` is added).
    args: Vec<String>,
    expect: Expect,
    /// Substrings of the error (Refused, Failed).
    must: Vec<String>,
}

fn case(what: &'static str, args: Vec<String>, expect: Expect, must: &[&str]) -> Case {
    Case { what, args, expect, must: must.iter().map(|s| s.to_string()).collect() }
}

/// One row of the printed table.
struct Row {
    what: String,
    how: &'static str,
    observed: String,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

fn ffmpeg(args: &[&str]) {
    let st = Command::new("ffmpeg").args(["-v", "error", "-y"]).args(args).status().expect("run ffmpeg");
    assert!(st.success(), "ffmpeg {args:?} failed");
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(n: usize, mut x: u32) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn truncate_copy(src: &Path, dst: &Path, fraction: f64) {
    let data = std::fs::read(src).unwrap();
    std::fs::write(dst, &data[..(data.len() as f64 * fraction) as usize]).unwrap();
}

// ---------------------------------------------------------------------------
// A tiny HTTP server on 127.0.0.1: 404 for everything but /page.html, which
// is a 200 with Content-Type text/html, /trickle.mp4, which sends its
// headers and then a byte a second, /moved.mp4, a redirect to 127.0.0.2,
// /local.m3u8 (a segment file:///srv/videos/private.ts), /master.m3u8, /keyed.m3u8 and
// /manifest.mpd (a variant, an AES key and DASH segments on 127.0.0.2),
// /cut.ts (a body cut off halfway), /list.m3u8, an HLS playlist whose
// segments are on 127.0.0.2 (refused by the policy), and /stalls.ts, which serves its clip
// whole to the first request (the coordinator's probe) and to later ones
// (the worker's decode) the first half, then a byte a second. It stops when
// dropped, and in any case after 10 minutes.

struct HttpServer {
    addr: String,
    /// The clip of /stalls.ts, and how many requests it has had.
    stall_clip: Arc<std::sync::Mutex<(Vec<u8>, u32)>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let stall_clip: Arc<std::sync::Mutex<(Vec<u8>, u32)>> = Arc::default();
        let clip = stall_clip.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((s, _)) => Self::answer(s, &clip),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        HttpServer { addr, stall_clip, stop, thread: Some(thread) }
    }

    /// The clip /stalls.ts serves.
    fn set_stall_clip(&self, data: Vec<u8>) {
        self.stall_clip.lock().unwrap().0 = data;
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn answer(mut s: TcpStream, stall_clip: &std::sync::Mutex<(Vec<u8>, u32)>) {
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        if path == "/cut.ts" {
            // The clip of /stalls.ts, announced whole, then cut off halfway:
            // the connection closes with half the body sent.
            let data = stall_clip.lock().unwrap().0.clone();
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", data.len());
            let _ = s.write_all(&data[..data.len() / 2]);
            return;
        }
        if path == "/stalls.ts" {
            let (data, first) = {
                let mut g = stall_clip.lock().unwrap();
                g.1 += 1;
                (g.0.clone(), g.1 == 1)
            };
            std::thread::spawn(move || {
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: {}\r\n\r\n", data.len());
                if first {
                    let _ = s.write_all(&data);
                    return;
                }
                let half = data.len() / 2;
                if s.write_all(&data[..half]).is_err() {
                    return;
                }
                for b in data[half..].iter().take(120) {
                    if s.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
            return;
        }
        if path == "/moved.mp4" {
            // A redirect to an address the policy refuses: FFmpeg would
            // follow it on its own, past the check of the submitted URL.
            let _ = write!(s, "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:9/clip.mp4\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
        // More playlists: a master playlist whose variant, and a media
        // playlist whose AES key, are on 127.0.0.2; a DASH manifest.
        let listed = match path {
            "/local.m3u8" => Some((
                "application/vnd.apple.mpegurl",
                "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:1.0,\nfile:///srv/videos/private.ts\n#EXT-X-ENDLIST\n".to_string(),
            )),
            "/master.m3u8" => Some(("application/vnd.apple.mpegurl", "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000,RESOLUTION=160x120\nhttp://127.0.0.2:9/variant.m3u8\n".to_string())),
            "/keyed.m3u8" => Some((
                "application/vnd.apple.mpegurl",
                "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n\
                 #EXT-X-KEY:METHOD=AES-128,URI=\"http://127.0.0.2:9/key.bin\"\n#EXTINF:1.0,\nseg0.ts\n#EXT-X-ENDLIST\n"
                    .to_string(),
            )),
            "/manifest.mpd" => Some((
                "application/dash+xml",
                "<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" type=\"static\" mediaPresentationDuration=\"PT2S\" minBufferTime=\"PT1S\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\">\n\
                 <BaseURL>http://127.0.0.2:9/</BaseURL>\n<Period><AdaptationSet mimeType=\"video/mp4\"><Representation id=\"0\" codecs=\"avc1.64000a\" bandwidth=\"96800\" width=\"160\" height=\"120\">\n\
                 <SegmentTemplate timescale=\"1000\" duration=\"1000\" initialization=\"init.m4s\" media=\"chunk-$Number$.m4s\" startNumber=\"1\"/>\n\
                 </Representation></AdaptationSet></Period>\n</MPD>\n"
                    .to_string(),
            )),
            _ => None,
        };
        if let Some((ctype, body)) = listed {
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            return;
        }
        if path == "/list.m3u8" {
            // An HLS playlist on this (allowed) server whose segments are on
            // 127.0.0.2, an address the source policy refuses.
            let body = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n\
                        #EXTINF:1.0,\nhttp://127.0.0.2:9/seg0.ts\n#EXTINF:1.0,\nhttp://127.0.0.2:9/seg1.ts\n#EXT-X-ENDLIST\n";
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            return;
        }
        if path == "/trickle.mp4" {
            // Headers, then a byte a second (each well within any read
            // timeout) for up to 2 minutes, or until the client goes away;
            // on a thread of its own, so the other paths are still served.
            std::thread::spawn(move || {
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 100000000\r\n\r\n");
                for _ in 0..120 {
                    if s.write_all(b"\0").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
            return;
        }
        let (status, ctype, body) = if path == "/page.html" {
            ("200 OK", "text/html; charset=utf-8", "<!doctype html><html><head><title>Hello</title></head><body><p>Not a video.</p></body></html>\n".repeat(20))
        } else {
            ("404 Not Found", "text/plain", "not found\n".to_string())
        };
        let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Raw gRPC: a codec that sends and receives bytes as they are, so that a
// call can carry what no generated client would send.

#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut v = vec![0u8; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

async fn channel(addr: &str) -> Channel {
    panoptes_tests::grpc_endpoint(addr)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Call `path` with `body` as the whole protobuf message.
async fn raw_call(addr: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel(addr).await);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(tonic::Request::new(body), PathAndQuery::from_static(path), RawCodec).await.map(|r| r.into_inner())
}

/// A report from `name` for `shard` of `job` at `epoch`, carrying frame 0 with
/// a result no real analysis would give.
fn report(name: &str, job: &str, shard: u32, epoch: u64) -> worker_pb::ReportRequest {
    worker_pb::ReportRequest {
        name: name.into(),
        job_id: job.into(),
        shard,
        epoch,
        frames: vec![worker_pb::FrameReport {
            frame: 0,
            timestamp: 0.0,
            outputs: vec![worker_pb::ModelOutput { model: "colors".into(), results_json: r#"[{"intruder":true}]"#.into(), error: false }],
            ..Default::default()
        }],
        next_frame: 1,
        done: true,
        ..Default::default()
    }
}

/// Send `r` to the WorkerApi: `Ok((accepted, reason))` or the gRPC error.
async fn send_report(addr: &str, r: worker_pb::ReportRequest) -> Result<(bool, String), Status> {
    let mut c = worker_pb::worker_api_client::WorkerApiClient::new(channel(addr).await);
    c.report(r).await.map(|r| {
        let r = r.into_inner();
        (r.accepted, r.reason)
    })
}

/// Poll `status` until `f` holds (bounded).
fn wait_status(c: &Cluster, job: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = c.cli_json(&["status", job, "--json"]);
        if f(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{job} never {what}: {s}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `sources.probe_timeout_s` of the corpus cluster: the trickling source
/// must fail within it (the default is 120 s).
const PROBE_TIMEOUT_S: u64 = 8;

#[test]
fn every_bad_input_gets_its_error_and_the_cluster_stays_healthy() {
    // Appended to the harness config, whose last table is [sources].
    assert!(TEST_CONFIG.rsplit("\n[").next().unwrap().starts_with("sources]"), "the harness config changed; update this test");
    let mut c = Cluster::start_configured(1, &["w1"], &format!("probe_timeout_s = {PROBE_TIMEOUT_S}\n"));
    let d = c.dir.path().to_path_buf();
    let p = |name: &str| d.join(name).display().to_string();
    let http = HttpServer::start();

    // ---- the files
    make_video(&d.join("good.mp4"), 30, "160x120", 10);
    make_video(&d.join("long.mp4"), 100, "160x120", 10); // moov atom at the end
    truncate_copy(&d.join("long.mp4"), &d.join("truncated.mp4"), 0.3);
    ffmpeg(&["-i", &p("long.mp4"), "-c", "copy", "-movflags", "faststart", &p("fast.mp4")]);
    truncate_copy(&d.join("fast.mp4"), &d.join("truncated-fast.mp4"), 0.3);
    {
        // An intact container whose video data is noise: mdat sits between ftyp and the trailing moov.
        let mut data = std::fs::read(d.join("long.mp4")).unwrap();
        let mdat = data.windows(4).position(|w| w == b"mdat").unwrap() + 4;
        let moov = data.windows(4).rposition(|w| w == b"moov").unwrap() - 4;
        data[mdat..moov].copy_from_slice(&noise(moov - mdat, 7));
        std::fs::write(d.join("garbage-video.mp4"), data).unwrap();
    }
    std::fs::write(d.join("random.mp4"), noise(200_000, 12345)).unwrap();
    std::fs::write(d.join("random.bin"), noise(50_000, 999)).unwrap();
    std::fs::write(d.join("empty.mp4"), b"").unwrap();
    ffmpeg(&["-f", "lavfi", "-i", "sine=frequency=440:duration=1", &p("sine.wav")]);
    ffmpeg(&["-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v", "1", &p("still.png")]);
    let cover = ["-map", "0", "-map", "1", "-c:a", "libmp3lame", "-c:v", "png", "-id3v2_version", "3", "-disposition:v", "attached_pic"];
    ffmpeg(&[&["-i", &p("sine.wav"), "-i", &p("still.png")][..], &cover, &[&p("cover.mp3")]].concat());
    std::fs::create_dir(d.join("a-directory")).unwrap();
    // A FIFO: opening it for reading waited for a writer, pinning a thread.
    assert!(std::process::Command::new("mkfifo").arg(d.join("fifo.mp4")).status().unwrap().success());
    std::os::unix::fs::symlink(d.join("fifo.mp4"), d.join("link-to-fifo.mp4")).unwrap();
    let closed_port = free_port(); // bound, then released: nothing listens there
    let long_name = "n".repeat(10_000);
    let long_model = "m".repeat(10_000);
    let long_source = format!("/{}", "s/".repeat(3000));
    let (png, wav, mp3, dir) = (p("still.png"), p("sine.wav"), p("cover.mp3"), p("a-directory"));
    let (missing, empty) = (p("no-such-video.mp4"), p("empty.mp4"));
    let (truncated, truncated_fast, garbage) = (p("truncated.mp4"), p("truncated-fast.mp4"), p("garbage-video.mp4"));
    let (random, random_bin, good) = (p("random.mp4"), p("random.bin"), p("good.mp4"));
    let (url404, html, trickle, stalls) = (http.url("missing.mp4"), http.url("page.html"), http.url("trickle.mp4"), http.url("stalls.ts"));
    let (playlist, moved) = (http.url("list.m3u8"), http.url("moved.mp4"));
    let local_list = http.url("local.m3u8");
    let (master, keyed, mpd, cut) = (http.url("master.m3u8"), http.url("keyed.m3u8"), http.url("manifest.mpd"), http.url("cut.ts"));
    ffmpeg(&["-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-frames:v", "30", "-c:v", "libx264", "-g", "30", "-f", "mpegts", &p("stalls.ts")]);
    http.set_stall_clip(std::fs::read(d.join("stalls.ts")).unwrap());
    let stalled = format!("no frame came from the source in {PROBE_TIMEOUT_S} s");
    let too_slow = format!("the source sent too little data in {PROBE_TIMEOUT_S} s: ");
    let refused_url = format!("http://127.0.0.1:{closed_port}/clip.mp4");

    let colors = |src: &str, more: &[&str]| -> Vec<String> {
        [src, "--models", "colors"].iter().chain(more).map(|s| s.to_string()).collect()
    };
    let models = |list: &str| -> Vec<String> { vec![good.clone(), "--models".into(), list.into()] };
    use Expect::*;
    let cases = vec![
        // Containers and files.
        case("truncated container (moov lost)", colors(&truncated, &[]), Failed, &[&truncated, "corrupt or unsupported data (Invalid data found when processing input)"]),
        case("truncated container (data cut short)", colors(&truncated_fast, &[]), Failed, &[&truncated_fast, "truncated: the container lists 100 video frames but only"]),
        case("corrupt video data in an intact container", colors(&garbage, &[]), Failed, &[&garbage, "corrupt or unsupported data (cannot decode the first video frame"]),
        case("random bytes", colors(&random, &[]), Failed, &[&random, "corrupt or unsupported data"]),
        case("random bytes named .bin", colors(&random_bin, &[]), Failed, &[&random_bin, "corrupt or unsupported data"]),
        case("empty file", colors(&empty, &[]), Failed, &[&empty, "empty file, 0 bytes"]),
        case("audio-only file", colors(&wav, &[]), Failed, &[&wav, "is not a video: no video stream (streams: audio)"]),
        case("audio with only a cover image", colors(&mp3, &[]), Failed, &[&mp3, "is not a video: no video stream (only an attached cover picture)"]),
        case("image-only file (PNG): a 1-frame video", colors(&png, &[]), Completes(1), &[]),
        case("missing path", colors(&missing, &[]), Failed, &[&missing, "No such file or directory"]),
        case("a directory", colors(&dir, &[]), Failed, &[&dir, "is a directory, not a regular file; give the path of a video file"]),
        case("a FIFO (named pipe)", colors(&p("fifo.mp4"), &[]), Failed, &[&p("fifo.mp4"), "is a FIFO (named pipe), not a regular file; give the path of a video file"]),
        // (The job's source is the path the link resolves to at submit.)
        case("a symlink to a FIFO", colors(&p("link-to-fifo.mp4"), &[]), Failed, &[&p("fifo.mp4"), "is a FIFO (named pipe), not a regular file"]),
        case("a device (/dev/zero)", colors("/dev/zero", &[]), Failed, &["'/dev/zero'", "is a character device, not a regular file; give the path of a video file"]),
        case("a device (/dev/urandom)", colors("/dev/urandom", &[]), Failed, &["'/dev/urandom'", "is a character device, not a regular file"]),
        case("file:///etc/passwd (a local path, not a video)", colors("file:///etc/passwd", &[]), Failed, &["'/etc/passwd'"]),
        // Network sources.
        case("HTTP 404", colors(&url404, &[]), Failed, &[&url404, "404 Not Found"]),
        case("HTTP 200 with Content-Type text/html", colors(&html, &[]), Failed, &[&html, "the server sent Content-Type 'text/html; charset=utf-8', not a video"]),
        // Within every read timeout, but too slow: stopped at sources.probe_timeout_s.
        case("HTTP server sending a byte a second", colors(&trickle, &[]), Failed, &[&trickle, &too_slow, "sources.probe_timeout_s"]),
        case("HTTP server that stalls after the probe (the worker's decode)", colors(&stalls, &[]), Failed, &[&stalls, &stalled, "sources.probe_timeout_s"]),
        case("HLS playlist whose segments are on a refused address", colors(&playlist, &[]), Failed, &[&playlist, "'http://127.0.0.2:9/seg0.ts'", "which is not opened", "sources.allow_networks"]),
        case("HLS playlist whose segment is a local file", colors(&local_list, &[]), Failed, &[&local_list, "'file:///srv/videos/private.ts'", "may lead only to network URLs"]),
        case("HLS master playlist whose variant is on a refused address", colors(&master, &[]), Failed, &[&master, "'http://127.0.0.2:9/variant.m3u8'", "which is not opened", "sources.allow_networks"]),
        case("HLS playlist whose AES key is on a refused address", colors(&keyed, &[]), Failed, &[&keyed, "'http://127.0.0.2:9/key.bin'", "which is not opened", "sources.allow_networks"]),
        case("DASH manifest (its segments would be fetched past the policy)", colors(&mpd, &[]), Failed, &[&mpd, "not allowed for network sources", "DASH manifest"]),
        case("HTTP body cut off halfway (the server closes the connection)", colors(&cut, &[]), Failed, &[&cut, "the connection broke before the end of the video"]),
        case("HTTP redirect to a refused address", colors(&moved, &[]), Failed, &[&moved, "HTTP redirects are not followed: submit the URL the redirect points to"]),
        case("unreachable host (a closed port)", colors(&refused_url, &[]), Failed, &[&refused_url, "connection refused"]),
        // Credentials in a URL (user:password@, a signed query) are not echoed.
        case("credentials in an unreachable URL", colors(&format!("http://viewer:hunter2@127.0.0.1:{closed_port}/clip.mp4?sig=s3cr3t"), &[]), Failed, &[&format!("'http://***@127.0.0.1:{closed_port}/clip.mp4?***'"), "connection refused"]),
        case("unreachable host (port 1)", colors("http://127.0.0.1:1/clip.mp4", &[]), Failed, &["'http://127.0.0.1:1/clip.mp4'", "connection refused"]),
        case("unresolvable host name", colors("http://no-such-host.invalid/clip.mp4", &[]), Failed, &["'http://no-such-host.invalid/clip.mp4'", "host name 'no-such-host.invalid' not found"]),
        // Schemes and FFmpeg protocols.
        case("gopher://", colors("gopher://example.com/x.mp4", &[]), Refused, &["unsupported source 'gopher://example.com/x.mp4'", "URL scheme 'gopher://' is not supported", "http://"]),
        case("ftp://", colors("ftp://example.com/x.mp4", &[]), Refused, &["URL scheme 'ftp://' is not supported"]),
        case("javascript:", colors("javascript:alert(1)", &[]), Refused, &["'javascript:' is a URL scheme or FFmpeg protocol, not a video source"]),
        case("data: (inline data)", colors("data:video/mp4;base64,AAAAIGZ0eXBpc29t", &[]), Refused, &["'data:' is a URL scheme or FFmpeg protocol"]),
        case("concat: (FFmpeg protocol)", colors(&format!("concat:{good}|{good}"), &[]), Refused, &["'concat:' is a URL scheme or FFmpeg protocol"]),
        case("subfile, (FFmpeg protocol with options)", colors("subfile,,start,0,end,1000,,:/etc/passwd", &[]), Refused, &["'subfile:' is a URL scheme or FFmpeg protocol"]),
        case("pipe: (FFmpeg protocol)", colors("pipe:0", &[]), Refused, &["'pipe:' is a URL scheme or FFmpeg protocol"]),
        case("crypto: (FFmpeg protocol)", colors(&format!("crypto:{good}"), &[]), Refused, &["'crypto:' is a URL scheme or FFmpeg protocol"]),
        case("async: (FFmpeg protocol)", colors(&format!("async:file:{good}"), &[]), Refused, &["'async:' is a URL scheme or FFmpeg protocol"]),
        case("file:// naming a remote host", colors("file://otherhost/x.mp4", &[]), Refused, &["file:// URLs naming a remote host are not supported"]),
        // Parameters.
        case("frame step 0", colors(&good, &["--frame-step", "0"]), Refused, &["--frame-step must be at least 1"]),
        case("frame step negative", colors(&good, &["--frame-step", "-3"]), Refused, &["frame step -3 is negative; use 1 (every frame) or more"]),
        case("frame step larger than the video", colors(&good, &["--frame-step", "1000"]), Completes(1), &[]),
        case("frame step i64::MAX", colors(&good, &["--frame-step", &i64::MAX.to_string()]), Completes(1), &[]),
        case("unknown model", models("objects,unicorns"), Refused, &["unknown model 'unicorns'; known models: colors, joy, objects"]),
        case("duplicated model", models("colors,colors"), Refused, &["model 'colors' is listed twice"]),
        case("empty model name", models("colors,"), Refused, &["an empty model name is in the list; known models:"]),
        case("absurdly long job name", colors(&good, &["--name", &long_name]), Refused, &["name is 10000 characters long; the limit is 256"]),
        case("absurdly long model name", models(&long_model), Refused, &["(10000 characters)'; known models:"]),
        case("absurdly long source", colors(&long_source, &[]), Refused, &["source is 6001 bytes long; the limit is 4096"]),
        case("empty source", colors("", &[]), Refused, &["source is empty"]),
    ];
    let mut rows: Vec<Row> = Vec::new();
    // Every mismatch of the corpus, reported together at the end.
    let mut wrong: Vec<String> = Vec::new();
    let mut check = |what: &str, how: &'static str, observed: String, ok: bool, expected: &str| {
        if !ok {
            wrong.push(format!("{what}: expected {expected}, got: {observed}"));
        }
        rows.push(Row { what: what.into(), how, observed });
    };

    // ---- submit every case; refusals are checked at once, accepted jobs collected
    let mut jobs: Vec<(usize, String)> = Vec::new();
    for (i, k) in cases.iter().enumerate() {
        let mut argv: Vec<&str> = vec!["submit"];
        argv.extend(k.args.iter().map(String::as_str));
        argv.push("--json");
        let out = c.cli(&argv);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        match (&k.expect, out.status.code()) {
            (Refused, code) => {
                let ok = code == Some(2) && k.must.iter().all(|m| stderr.contains(m.as_str()));
                check(k.what, "refused at submit (exit 2)", format!("exit {code:?}: {stderr}{stdout}"), ok, &format!("exit 2 and {:?}", k.must));
            }
            (_, Some(0)) => {
                let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{}: {e}: {stdout}", k.what));
                jobs.push((i, v["job_id"].as_str().unwrap().to_string()));
            }
            (_, code) => check(k.what, "refused at submit", format!("exit {code:?}: {stderr}"), false, "to be accepted"),
        }
    }

    // ---- every accepted job ends as it must
    for (i, job) in &jobs {
        let k = &cases[*i];
        let s = c.wait_finished(job, Duration::from_secs(180));
        let error = s["error"].as_str().unwrap_or_default().to_string();
        match k.expect {
            Failed => {
                let ok = s["state"] == "failed" && k.must.iter().all(|m| error.contains(m.as_str()));
                check(k.what, "accepted, job failed", format!("{}: {error}", s["state"]), ok, &format!("failed with {:?}", k.must));
            }
            Completes(frames) => {
                let analysed: Vec<u64> = c.results(job).iter().map(|l| l["frame"].as_u64().unwrap()).collect();
                let ok = s["state"] == "completed" && s["frames_done"] == frames && analysed == [0];
                let observed = format!("{}: {} frame(s) analysed {analysed:?} {error}", s["state"], s["frames_done"]);
                check(k.what, "accepted, completed", observed, ok, &format!("completed, {frames} frame(s): [0]"));
            }
            Refused => unreachable!(),
        }
    }
    // ---- `panoptes analyze` (no cluster) on the trickling server: its probe
    // has the same deadline (before, it waited as long as the server trickled).
    {
        let what = "panoptes analyze of an HTTP server sending a byte a second";
        let cfg = d.join("cluster.toml");
        let out = panoptes_tests::client_command()
            .args(["analyze", &trickle, "--models", "colors", "--config"])
            .arg(&cfg)
            .output()
            .expect("run panoptes analyze");
        let stderr = text(&out.stderr);
        let ok = !out.status.success() && stderr.contains(&too_slow) && stderr.contains("sources.probe_timeout_s");
        check(what, "analyze exits with an error", format!("{:?}: {stderr}", out.status.code()), ok, &format!("{too_slow:?} and sources.probe_timeout_s"));
    }
    drop(check);
    assert!(wrong.is_empty(), "{} of {} cases went wrong:\n{}\n{}", wrong.len(), cases.len(), wrong.join("\n"), c.logs());
    let failed_job = jobs.iter().find(|(i, _)| matches!(cases[*i].expect, Failed)).map(|(_, j)| j.clone()).unwrap();
    let addr = c.coordinator_addrs[0].clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    // ---- malformed and oversized gRPC messages
    const SUBMIT: &str = "/panoptes.v1.Panoptes/Submit";
    let garbage_cases: [(&str, Vec<u8>); 3] = [
        ("gRPC Submit: bytes that are no protobuf (wire type 7)", vec![0x0f, 0xff, 0xff, 0xff, 0xff, 0xff]),
        ("gRPC Submit: truncated protobuf (length past the end)", vec![0x0a, 0x64, b'/', b'x']),
        ("gRPC Submit: a string field that is not UTF-8", vec![0x0a, 0x02, 0xff, 0xfe, 0x12, 0x06, b'c', b'o', b'l', b'o', b'r', b's']),
    ];
    for (what, body) in garbage_cases {
        let e = rt.block_on(raw_call(&addr, SUBMIT, body)).expect_err(what);
        // INTERNAL, as gRPC's status-code table specifies for a request
        // that cannot be parsed (doc/statuscodes.md: "Error parsing request
        // proto"); the message says what was wrong.
        assert_eq!(e.code(), Code::Internal, "{what}: {e:?}");
        assert!(e.message().contains("failed to decode Protobuf message"), "{what}: {e:?}");
        rows.push(Row { what: what.into(), how: "gRPC error", observed: format!("{:?}: {}", e.code(), e.message()) });
    }
    {
        let what = "gRPC Submit of 100 MB (a 100 MB name)";
        let req = api_pb::SubmitRequest { source: good.clone(), models: vec!["colors".into()], name: "x".repeat(100 << 20), ..Default::default() };
        let e = rt.block_on(async { api_pb::panoptes_client::PanoptesClient::new(channel(&addr).await).submit(req).await }).expect_err(what);
        assert!(matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted), "{what}: {e:?}");
        assert!(e.message().contains("message length too large"), "{what}: {e:?}");
        rows.push(Row { what: what.into(), how: "gRPC error", observed: format!("{:?}: {}", e.code(), e.message()) });
    }

    // ---- a worker reporting for a shard it does not hold. With w1 drained,
    // the job is planned but nobody leases its shards: it stays running with
    // every shard pending while the intruders report.
    let out = c.cli(&["worker", "drain", "w1"]);
    assert!(out.status.success(), "drain: {}", text(&out.stderr));
    let j = c.cli_json(&["submit", &good, "--models", "colors", "--json"]);
    let job = j["job_id"].as_str().unwrap().to_string();
    wait_status(&c, &job, "was planned", |s| s["state"] == "running" && s["shards_total"].as_u64().unwrap_or(0) > 0);
    let refusals: Vec<(&str, worker_pb::ReportRequest, &str)> = vec![
        ("report from an unknown worker for a pending shard", report("intruder", &job, 0, 1), "stale lease"),
        ("report from w1 for a shard it was never granted", report("w1", &job, 0, 7), "stale lease"),
        ("report for a shard the job does not have", report("w1", &job, 99, 1), "no shard 99"),
        ("report for a job that does not exist", report("w1", "job-999", 0, 1), "unknown job 999"),
        ("report for a job that failed", report("w1", &failed_job, 0, 1), "job is failed"),
    ];
    for (what, r, must) in refusals {
        let (accepted, reason) = rt.block_on(send_report(&addr, r)).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert!(!accepted && reason.contains(must), "{what}: accepted={accepted} reason={reason}");
        rows.push(Row { what: what.into(), how: "report refused", observed: reason });
    }
    let e = rt.block_on(send_report(&addr, report("w1", "banana", 0, 1))).expect_err("a job id that is no job id");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    rows.push(Row { what: "report with a malformed job id".into(), how: "gRPC error", observed: format!("{:?}: {}", e.code(), e.message()) });
    assert!(c.results(&job).is_empty(), "a refused report stored something");

    // Undrained, w1 runs the job; the intruders' frame 0 is nowhere.
    let out = c.cli(&["worker", "drain", "w1", "--undo"]);
    assert!(out.status.success(), "undrain: {}", text(&out.stderr));
    let s = c.wait_finished(&job, Duration::from_secs(180));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    let results = c.results(&job);
    assert_eq!(results.len(), 30, "one colors result per frame");
    assert!(results.iter().all(|r| !r.to_string().contains("intruder")), "an intruder's result was stored");
    // A late report for the finished job, at an epoch nobody was given.
    let (accepted, reason) = rt.block_on(send_report(&addr, report("intruder", &job, 0, u64::MAX))).unwrap();
    assert!(!accepted && reason.contains("job is completed"), "{reason}");
    rows.push(Row { what: "report for a shard of a finished job".into(), how: "report refused", observed: reason });
    assert_eq!(c.results(&job).len(), 30);

    // ---- the cluster is healthy: a good job completes, the worker is active, nothing crashed
    let out = c.cli(&["submit", &good, "--models", "colors,objects", "--wait", "--json"]);
    assert!(out.status.success(), "a good job after the corpus: {} {}\n{}", text(&out.stdout), text(&out.stderr), c.logs());
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((s["state"].as_str(), s["frames_done"].as_u64()), (Some("completed"), Some(30)), "{s}");
    let cs = c.cli_json(&["cluster", "status", "--json"]);
    let w1 = cs["workers"].as_array().unwrap().iter().find(|w| w["name"] == "w1").cloned();
    assert_eq!(w1.as_ref().map(|w| w["state"].clone()), Some(Value::from("active")), "{cs}");
    assert_eq!(cs["members"][0]["healthy"], true, "{cs}");
    for n in c.coordinators.iter_mut().flatten().chain(c.workers.iter_mut()) {
        assert!(n.child.try_wait().unwrap().is_none(), "{} exited during the corpus:\n{}", n.name, n.log_text());
    }
    for n in c.coordinators.iter().flatten().chain(c.workers.iter()) {
        let log = n.log_text();
        assert!(!log.contains("panicked"), "{} panicked:\n{log}", n.name);
        // The credentials of the URL case are in no log either.
        assert!(!log.contains("hunter2") && !log.contains("s3cr3t"), "{} logged a URL's credentials:\n{log}", n.name);
    }

    // ---- the corpus, as a table
    assert!(rows.len() >= 22);
    eprintln!("{} bad inputs:", rows.len());
    for r in &rows {
        eprintln!("| {} | {} | {} |", r.what, r.how, r.observed.replace('\n', " "));
    }
}
