//! Shared helpers for the media integration tests: test clips made with the
//! ffmpeg CLI, a full reference decode, and a tiny HTTP file server.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use panoptes_media::{Converter, Decoder, RgbFrame};

/// Run the ffmpeg CLI (quiet, overwrite), panicking with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    ffmpeg_stdout(args);
}

/// Run the ffmpeg CLI and return its stdout.
pub fn ffmpeg_stdout(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("run ffmpeg CLI");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A fresh temp dir for one test (removed when dropped).
pub fn workdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Make the clip `name` in `dir` with the given ffmpeg arguments (the output
/// path is appended).
pub fn clip(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut all: Vec<&str> = args.to_vec();
    let out = path.to_str().unwrap().to_string();
    all.push(&out);
    ffmpeg(&all);
    path
}

/// 100 frames 320x240 @25, H.264 with B-frames (-bf 2), GOP 10, closed GOPs.
pub fn h264_bframes_mp4(dir: &Path) -> PathBuf {
    clip(
        dir,
        "bframes.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-frames:v",
            "100",
            "-c:v",
            "libx264",
            "-g",
            "10",
            "-bf",
            "2",
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One fully decoded frame of a reference run.
#[derive(Debug, Clone, PartialEq)]
pub struct RefFrame {
    pub index: u64,
    pub pts: i64,
    pub timestamp: f64,
    pub rgb: RgbFrame,
}

/// Decode every frame from frame 0 and convert it.
pub fn full_decode(source: &str, pts0: i64, target_height: u32) -> Vec<RefFrame> {
    decode_from(source, None, pts0, target_height, u64::MAX)
}

/// Decode up to `limit` frames, starting at `seek`.
pub fn decode_from(
    source: &str,
    seek: Option<(u64, i64)>,
    pts0: i64,
    target_height: u32,
    limit: u64,
) -> Vec<RefFrame> {
    let mut dec = Decoder::open(source, seek, pts0).expect("open decoder");
    let mut conv = Converter::new(target_height);
    let mut out = Vec::new();
    while (out.len() as u64) < limit {
        let Some(f) = dec.next_frame().expect("decode") else {
            break;
        };
        let rgb = conv.convert(&f.frame).expect("convert");
        out.push(RefFrame {
            index: f.index,
            pts: f.pts,
            timestamp: f.timestamp,
            rgb,
        });
    }
    out
}

// ---------------------------------------------------------------------------
// A tiny HTTP/1.1 file server: GET and HEAD of one path, with Range support,
// one request per connection, on a background thread that stops when the
// server is dropped (or after a minute at most).

pub struct HttpServer {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
    /// The `Host` header of every request, in order.
    pub hosts: Arc<std::sync::Mutex<Vec<String>>>,
    host: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Which file a request path names (`None`: 404).
type Files = Arc<dyn Fn(&str) -> Option<PathBuf> + Send + Sync>;

impl HttpServer {
    /// Serve `file` at `/<url_path>`; every other path is a 404.
    pub fn serve(file: PathBuf, url_path: &str) -> Self {
        let url_path = format!("/{}", url_path.trim_start_matches('/'));
        Self::start("127.0.0.1", Arc::new(move |p: &str| (p == url_path).then(|| file.clone())))
    }

    /// Serve every file directly in `dir` at `/<name>`, on `host` (a
    /// loopback address: 127.0.0.2 is a second host on the same machine).
    pub fn serve_dir(host: &str, dir: PathBuf) -> Self {
        Self::serve_dir_at(host, 0, dir)
    }

    /// [`HttpServer::serve_dir`] on a given port (0: any free one).
    pub fn serve_dir_on(host: &str, port: u16, dir: PathBuf) -> Self {
        Self::serve_dir_at(host, port, dir)
    }

    fn serve_dir_at(host: &str, port: u16, dir: PathBuf) -> Self {
        Self::start_on(
            host,
            port,
            Arc::new(move |p: &str| {
                let name = p.trim_start_matches('/');
                (!name.is_empty() && !name.contains('/') && !name.contains("..")).then(|| dir.join(name)).filter(|f| f.is_file())
            }),
        )
    }

    fn start(host: &str, files: Files) -> Self {
        Self::start_on(host, 0, files)
    }

    fn start_on(host: &str, port: u16, files: Files) -> Self {
        let listener = TcpListener::bind((host, port)).unwrap_or_else(|e| panic!("bind {host}:{port}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let hosts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop2, req2, hosts2) = (stop.clone(), requests.clone(), hosts.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((conn, _)) => {
                        req2.fetch_add(1, Ordering::SeqCst);
                        let (files, hosts) = (files.clone(), hosts2.clone());
                        std::thread::spawn(move || {
                            let _ = handle(conn, &*files, &hosts);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        });
        HttpServer {
            port,
            requests,
            hosts,
            host: host.to_string(),
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "http://{}:{}/{}",
            self.host,
            self.port,
            path.trim_start_matches('/')
        )
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(conn: TcpStream, files: &(dyn Fn(&str) -> Option<PathBuf> + Send + Sync), hosts: &std::sync::Mutex<Vec<String>>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range: Option<(u64, Option<u64>)> = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("host") {
                hosts.lock().unwrap().push(value.trim().to_string());
            }
            if name.trim().eq_ignore_ascii_case("range") {
                if let Some(spec) = value.trim().strip_prefix("bytes=") {
                    if let Some((a, b)) = spec.split_once('-') {
                        if let Ok(a) = a.trim().parse::<u64>() {
                            range = Some((a, b.trim().parse::<u64>().ok()));
                        }
                    }
                }
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let mut conn = conn;
    let file = files(path);
    let Some(file) = file.filter(|_| method == "GET" || method == "HEAD") else {
        let body = b"not found\n";
        write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        conn.write_all(body)?;
        return Ok(());
    };
    // A file that holds `REDIRECT <url>` is a redirect there.
    if let Some(to) = std::fs::read(&file).ok().and_then(|b| b.strip_prefix(b"REDIRECT ").map(|u| String::from_utf8_lossy(u).trim().to_string())) {
        write!(conn, "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    }
    let mut f = std::fs::File::open(&file)?;
    let total = f.metadata()?.len();
    let (status, start, end) = match range {
        Some((a, _)) if a >= total => {
            write!(
                conn,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
        Some((a, b)) => (
            "206 Partial Content",
            a,
            b.unwrap_or(total - 1).min(total - 1),
        ),
        None => ("200 OK", 0, total.saturating_sub(1)),
    };
    let len = if total == 0 { 0 } else { end - start + 1 };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\nContent-Length: {len}\r\nConnection: close\r\n"
    );
    if range.is_some() {
        head.push_str(&format!("Content-Range: bytes {start}-{end}/{total}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    if method == "HEAD" {
        return Ok(());
    }
    f.seek(SeekFrom::Start(start))?;
    let mut left = len;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        // The client may close early (after a seek): that is not an error here.
        if conn.write_all(&buf[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    Ok(())
}
