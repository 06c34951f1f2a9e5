//! Issue 9: every route of the HTTP/JSON API against a real local cluster
//! (1 coordinator + 1 worker, a generated clip, model `colors`), error cases
//! included, through a minimal HTTP/1.1 client over `std::net::TcpStream`.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use panoptes_tests::{make_video, web_addr, Cluster};
use serde_json::{json, Value};

/// One HTTP answer.
#[derive(Debug)]
struct Http {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }
    /// An error answer: JSON `{"error": message}` with this status.
    fn assert_error(&self, status: u16, contains: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"));
        let msg = self.json()["error"].as_str().unwrap_or_else(|| panic!("no error message: {}", self.text())).to_string();
        assert!(msg.contains(contains), "error '{msg}' should mention '{contains}'");
    }
}

/// `method path` with an optional JSON body; reads until the server closes
/// (`Connection: close`), for at most `limit`.
fn request_within(addr: &str, method: &str, path: &str, body: Option<&str>, limit: Duration) -> Http {
    request_with(addr, method, path, &[("Host", addr), ("Content-Type", "application/json")], body, limit)
}

/// `method path` with these headers (and `Connection: close`).
fn request_with(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>, limit: Duration) -> Http {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to the web UI at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = body.unwrap_or("");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let head = format!("{method} {path} HTTP/1.1\r\n{extra}Connection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let deadline = Instant::now() + limit;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("{method} {path}: read failed: {e}"),
        }
        assert!(Instant::now() < deadline, "{method} {path}: no complete answer within {limit:?}; so far:\n{}", String::from_utf8_lossy(&raw));
    }
    parse(&raw)
}

fn request(addr: &str, method: &str, path: &str, body: Option<&str>) -> Http {
    request_within(addr, method, path, body, Duration::from_secs(60))
}

fn parse(raw: &[u8]) -> Http {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP head");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Http { status, headers, body }
}

/// Undo `Transfer-Encoding: chunked`.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).split(';').next().unwrap().trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// Server-sent events as (event, data) pairs.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for block in body.split("\n\n") {
        let mut event = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            }
        }
        if !data.is_empty() {
            out.push((event, serde_json::from_str(&data).unwrap_or_else(|e| panic!("event data not JSON ({e}): {data}"))));
        }
    }
    out
}

#[test]
fn w01_every_route_against_a_real_cluster() {
    let c = Cluster::start(&["w1"]);
    let web = web_addr(&c);
    let web = web.as_str();

    // The page and its assets, embedded in the binary.
    let page = request(web, "GET", "/", None);
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.text().contains("Panoptes") && page.text().contains("/app.js"));
    for (path, ctype) in [("/app.js", "text/javascript"), ("/dashboard.js", "text/javascript"), ("/style.css", "text/css")] {
        let r = request(web, "GET", path, None);
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(ctype), "{path}");
        assert!(!r.body.is_empty());
    }
    let spec = request(web, "GET", "/api/openapi.json", None);
    assert_eq!(spec.status, 200);
    let spec = spec.json();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert!(spec["paths"]["/api/jobs/{id}/frames/{n}.png"].is_object());
    request(web, "GET", "/api/nothing-here", None).assert_error(404, "openapi");

    // Models: the registry's built-ins.
    let models = request(web, "GET", "/api/models", None);
    assert_eq!(models.status, 200);
    let names: Vec<String> = models.json().as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_string()).collect();
    for m in ["objects", "joy", "colors"] {
        assert!(names.iter().any(|n| n == m), "{m} missing from {names:?}");
    }

    // Submitting: bad input is 400 with the coordinator's own message.
    let clip = c.dir.path().join("web-clip.mp4");
    make_video(&clip, 50, "320x240", 25);
    let src = clip.display().to_string();
    let submit = |body: Value| request(web, "POST", "/api/jobs", Some(&body.to_string()));
    submit(json!({"source": src, "models": ["nope"]})).assert_error(400, "unknown model 'nope'");
    submit(json!({"source": src, "models": ["colors"], "frame_step": -1})).assert_error(400, "frame step -1");
    submit(json!({"source": src, "models": ["colors"], "frame_step": "two"})).assert_error(400, "frame_step");
    submit(json!({"source": "", "models": ["colors"]})).assert_error(400, "source is empty");
    submit(json!({"source": src})).assert_error(400, "no models");
    submit(json!({"source": src, "models": ["colors"], "pictures_every": "2 fortnights"})).assert_error(400, "--pictures-every");
    request(web, "POST", "/api/jobs", Some("{not json")).assert_error(400, "not valid JSON");
    // Before any route: a host this server does not answer for (a page
    // elsewhere that made its name resolve here: DNS rebinding) and a POST
    // that does not say it is JSON (a form on another site posts text/plain
    // without asking the browser first) are refused.
    let t = Duration::from_secs(30);
    let job = json!({"source": src, "models": ["colors"]}).to_string();
    let port = web.rsplit(':').next().unwrap();
    request_with(web, "GET", "/api/videos", &[("Host", &format!("rebind.example:{port}"))], None, t).assert_error(421, "security.web_hosts");
    request_with(web, "POST", "/api/jobs", &[("Host", "attacker.example"), ("Content-Type", "application/json")], Some(&job), t).assert_error(421, "attacker.example");
    for ctype in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        request_with(web, "POST", "/api/jobs", &[("Host", web), ("Content-Type", ctype)], Some(&job), t).assert_error(415, "Content-Type: application/json");
    }
    request_with(web, "POST", "/api/live", &[("Host", web)], Some("{}"), t).assert_error(415, "application/json");
    for host in [format!("localhost:{port}"), format!("[::1]:{port}"), "127.0.0.1".to_string()] {
        let r = request_with(web, "GET", "/api/videos", &[("Host", &host)], None, t);
        assert_eq!(r.status, 200, "Host: {host}: {}", r.text());
    }

    let r = submit(json!({"source": src, "name": "web clip", "models": ["colors"], "frame_step": 2}));
    assert_eq!(r.status, 201, "{}", r.text());
    let job = r.json()["job_id"].as_str().unwrap().to_string();

    // Live results as server-sent events, from right after the submission to the end.
    let sse = request_within(web, "GET", &format!("/api/jobs/{job}/results/stream"), None, Duration::from_secs(180));
    assert_eq!(sse.status, 200, "{}", sse.text());
    assert!(sse.header("content-type").unwrap().starts_with("text/event-stream"));
    let events = sse_events(&sse.text());
    assert_eq!(events.first().map(|e| e.0.as_str()), Some("status"), "{events:?}");
    let (last, end) = events.last().unwrap();
    assert_eq!(last, "end", "{events:?}");
    assert_eq!(end["state"], "completed", "{end}\n{}", c.logs());
    let mut streamed: Vec<u64> = events.iter().filter(|e| e.0 == "result").map(|e| e.1["frame"].as_u64().unwrap()).collect();
    streamed.sort();
    assert_eq!(streamed, (0..50).step_by(2).collect::<Vec<u64>>(), "one result per analysed frame (every 2nd of 50)");

    // Status.
    let s = request(web, "GET", &format!("/api/jobs/{job}"), None);
    assert_eq!(s.status, 200);
    let s = s.json();
    assert_eq!((s["state"].as_str(), s["name"].as_str(), s["frames_done"].as_u64()), (Some("completed"), Some("web clip"), Some(25)), "{s}");
    assert_eq!((s["pictures"].as_bool(), s["pictures_every_ms"].as_u64()), (Some(true), Some(1000)), "the default: a picture per second: {s}");
    request(web, "GET", "/api/jobs/job-999999", None).assert_error(404, "job-999999");
    request(web, "GET", "/api/jobs/nonsense", None).assert_error(400, "nonsense");

    // All results, as JSON lines, the same as the stream's.
    let all = request(web, "GET", &format!("/api/jobs/{job}/results"), None);
    assert_eq!(all.status, 200);
    assert_eq!(all.header("content-type"), Some("application/x-ndjson"));
    let rows: Vec<Value> = all.text().lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(rows.len(), 25);
    assert!(rows.iter().all(|r| r["model"] == "colors" && r["results"].as_array().is_some_and(|a| !a.is_empty())), "{rows:?}");
    request(web, "GET", "/api/jobs/job-999999/results", None).assert_error(404, "job-999999");
    request(web, "GET", "/api/jobs/job-999999/results/stream", None).assert_error(404, "job-999999");

    // One frame's results; a frame never analysed (odd) is 404; not a number is 400.
    let f = request(web, "GET", &format!("/api/jobs/{job}/frames/4"), None);
    assert_eq!(f.status, 200, "{}", f.text());
    let f = f.json();
    assert_eq!(f.as_array().unwrap().len(), 1);
    assert_eq!((f[0]["frame"].as_u64(), f[0]["model"].as_str()), (Some(4), Some("colors")));
    assert_eq!(f[0], rows[2]);
    request(web, "GET", &format!("/api/jobs/{job}/frames/5"), None).assert_error(404, "frame 5");
    request(web, "GET", &format!("/api/jobs/{job}/frames/four"), None).assert_error(400, "frame 'four'");
    request(web, "GET", "/api/jobs/job-999999/frames/4", None).assert_error(404, "job-999999");

    // The frame drawn with its results, as PNG. The job keeps a picture per
    // second of stream time (frames.every): of these analysed frames (every
    // 2nd at 25 fps), 0 and 26.
    let png = request(web, "GET", &format!("/api/jobs/{job}/frames/26.png"), None);
    assert_eq!(png.status, 200, "{}", png.text());
    assert_eq!(png.header("content-type"), Some("image/png"));
    assert_eq!(png.header("x-frame"), Some("26"));
    let img = panoptes_render::decode_png(&png.body).expect("a PNG");
    assert_eq!(img.width.to_string(), png.header("x-frame-width").unwrap());
    assert_eq!(img.height.to_string(), png.header("x-frame-height").unwrap());
    assert_eq!(png.header("x-analysed-width"), Some("320"));
    request(web, "GET", &format!("/api/jobs/{job}/frames/4.png"), None).assert_error(404, "the nearest with one are frames 0 and 26");
    for (asked, drawn) in [(4, "0"), (24, "0"), (26, "26"), (48, "26"), (9999, "26")] {
        let near = request(web, "GET", &format!("/api/jobs/{job}/frames/{asked}.png?nearest=1"), None);
        assert_eq!((near.status, near.header("x-frame")), (200, Some(drawn)), "frame {asked} with nearest=1: {}", near.text());
    }
    request(web, "GET", &format!("/api/jobs/{job}/frames/4.png?nearest=maybe"), None).assert_error(400, "nearest=1");
    request(web, "GET", &format!("/api/jobs/{job}/frames/5.png"), None).assert_error(404, "");
    request(web, "GET", &format!("/api/jobs/{job}/frames/x.png"), None).assert_error(400, "frame 'x'");
    request(web, "GET", "/api/jobs/job-999999/frames/4.png", None).assert_error(404, "job-999999");

    // Metrics.
    let m = request(web, "GET", &format!("/api/jobs/{job}/metrics"), None);
    assert_eq!(m.status, 200);
    let m = m.json();
    assert_eq!(m["job_id"], job.as_str());
    // The same shape as `panoptes metrics --json` (panoptes_client::views).
    assert!(m["latency_ms"]["samples"].is_number() && m["frames_dropped"].is_number(), "{m}");
    assert!(m["frames_per_s"].as_f64().unwrap() > 0.0 && m["inference_time_s"]["colors"].is_number(), "{m}");
    request(web, "GET", "/api/jobs/job-999999/metrics", None).assert_error(404, "job-999999");

    // Analytics: windows of stream time (50 frames at 25 fps, every 2nd
    // analysed: two windows of a second), tracks, alerts.
    let st = request(web, "GET", &format!("/api/jobs/{job}/stats?window=1s"), None);
    assert_eq!(st.status, 200, "{}", st.text());
    let windows = st.json()["windows"].as_array().cloned().unwrap();
    assert_eq!(windows.iter().map(|w| (w["start"].as_f64().unwrap(), w["frames"].as_u64().unwrap())).collect::<Vec<_>>(), vec![(0.0, 13), (1.0, 12)], "{windows:?}");
    assert!(windows.iter().all(|w| w["dominant_color"]["color"].is_string()), "{windows:?}");
    let sliding = request(web, "GET", &format!("/api/jobs/{job}/stats?window=1s&slide=500ms&model=colors"), None).json();
    assert_eq!(sliding["windows"].as_array().map(Vec::len), Some(4), "{sliding}");
    request(web, "GET", &format!("/api/jobs/{job}/stats?window=0"), None).assert_error(400, "a window of 0");
    request(web, "GET", &format!("/api/jobs/{job}/stats?window=1s&slide=2s"), None).assert_error(400, "longer than the window");
    request(web, "GET", &format!("/api/jobs/{job}/stats?bogus=1"), None).assert_error(400, "unknown query 'bogus'");
    request(web, "GET", "/api/jobs/job-999999/stats", None).assert_error(404, "job-999999");
    let tr = request(web, "GET", &format!("/api/jobs/{job}/tracks?model=colors"), None);
    assert_eq!((tr.status, tr.json()["tracks"].as_array().map(Vec::len)), (200, Some(0)), "{}", tr.text());
    request(web, "GET", &format!("/api/jobs/{job}/tracks"), None).assert_error(400, "did not run model 'objects'");
    let al = request(web, "GET", &format!("/api/jobs/{job}/alerts"), None);
    assert_eq!(al.status, 200);
    assert_eq!(al.json(), json!({"alerts": [], "dropped": 0}));
    assert_eq!(request(web, "GET", "/api/alerts", None).json()["alerts"], json!([]));
    request(web, "GET", "/api/jobs/job-999999/alerts", None).assert_error(404, "job-999999");
    submit(json!({"source": src, "models": ["colors"], "rules": ["crowd: count(person) >= 3"]})).assert_error(400, "runs no detector");
    submit(json!({"source": src, "models": ["colors"], "rules": "crowd"})).assert_error(400, "'rules' must be a list");
    // Zones: checked at submit; a finished job (or one without a detector) takes none.
    submit(json!({"source": src, "models": ["objects"], "zones": ["door=0,0,1,1"]})).assert_error(400, "at least 3");
    submit(json!({"source": src, "models": ["objects"], "zones": "door"})).assert_error(400, "'zones' must be a list");
    let zone = |body: &str| request(web, "POST", &format!("/api/jobs/{job}/zones"), Some(body));
    zone("{}").assert_error(400, "give the zone");
    zone(r#"{"zone": "door=0,0,2"}"#).assert_error(400, "pairs");
    zone(r#"{"zone": "door=0,0,1,0,1,1"}"#).assert_error(409, "no detector");
    request(web, "POST", "/api/jobs/job-999999/zones", Some(r#"{"zone": "door=0,0,1,0,1,1"}"#)).assert_error(404, "job-999999");
    let st = request(web, "GET", &format!("/api/jobs/{job}/stats?window=1s&from_frame=26"), None);
    assert_eq!(st.json()["windows"].as_array().map(|w| w.iter().map(|w| w["frames"].as_u64().unwrap()).sum::<u64>()), Some(12), "{}", st.text());
    request(web, "GET", &format!("/api/jobs/{job}/stats?from_frame=soon"), None).assert_error(400, "from_frame=soon");

    // Finished videos, newest first: ours.
    let v = request(web, "GET", "/api/videos", None);
    assert_eq!(v.status, 200);
    let v = v.json();
    assert_eq!(v[0]["job_id"], job.as_str(), "{v}");
    assert_eq!((v[0]["state"].as_str(), v[0]["name"].as_str()), (Some("completed"), Some("web clip")));

    // Live endpoints: 501 with the coordinator's message where live ingest
    // is not built, 503 when no worker can ingest a stream now (this
    // cluster's worker serves no ingest address); else a job and the URL to push to.
    let live = request(web, "POST", "/api/live", Some(&json!({"models": ["colors"], "name": "cam"}).to_string()));
    if live.status == 501 || live.status == 503 {
        live.assert_error(live.status, "live");
    } else {
        assert_eq!(live.status, 201, "{}", live.text());
        let l = live.json();
        assert!(l["job_id"].is_string() && l["rtmp_url"].is_string(), "{l}");
    }
    if live.status != 501 {
        let bad = json!({"models": ["nope"]}).to_string();
        request(web, "POST", "/api/live", Some(&bad)).assert_error(400, "unknown model 'nope'");
    }
    request(web, "POST", "/api/live", Some("[]")).assert_error(400, "JSON object");
    // Browser media for live jobs only; ending a stream that was never started is 404.
    request(web, "POST", &format!("/api/live/{job}/media"), Some("webm bytes")).assert_error(409, "not a live job");
    request(web, "POST", "/api/live/job-999999/media", Some("webm bytes")).assert_error(404, "job-999999");
    request(web, "DELETE", &format!("/api/live/{job}/media"), None).assert_error(404, "no browser stream");
}
