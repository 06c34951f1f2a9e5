//! Events out (issue 18, part 5) against real servers: a Mosquitto broker
//! from Debian, started here on a free loopback port, with `mosquitto_sub`
//! listening; a webhook receiver (a small HTTP server in this test) that
//! refuses its first two POSTs; and a webhook URL where nothing listens.
//! The Raft leader of three coordinators is `kill -9`ed while alerts are
//! being recorded. Every alert reaches the broker and the live webhook at
//! least once, each copy with the same event id and body, the webhook's
//! signed with the secret; the dead webhook holds nothing up (the job
//! completes, the other sinks get everything, its failures are counted).
//! Track events (a track starting, entering and leaving a zone, ending) go
//! the same way, on their own topic, each exactly as one process computes
//! them. Bad sinks stop a coordinator at start, saying why.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use panoptes_tests::{bin, blinking_clip, expected_analytics, free_port, http_get, metrics_addr, sample, wait_for, Cluster};
use serde_json::Value;
use sha2::Sha256;

const RULES: [&str; 3] = ["someone: count(person) >= 1 for 100ms", "empty: no object for 100ms", "arrive: person enters right"];
/// The right 61% of the frame: the astronaut's feet (the middle of the
/// box's bottom edge) cross into it as the clip zooms, and out again when
/// the clip loops.
const ZONE: &str = "right=0.385,0,1,0,1,1,0.385,1";
const SECRET: &str = "webhook-test-secret-81c4";

/// One POST the receiver took: its headers (lower-case names) and body.
#[derive(Clone, Debug)]
struct Post {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// An HTTP/1.1 server on loopback recording every POST; the first `refuse`
/// get 503. Connections are served until the test ends.
fn webhook_receiver(refuse: usize) -> (u16, Arc<Mutex<Vec<Post>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
    let seen = posts.clone();
    let refused = Arc::new(Mutex::new(0usize));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (posts, refused) = (seen.clone(), refused.clone());
            std::thread::spawn(move || serve(conn, &posts, &refused, refuse));
        }
    });
    (port, posts)
}

fn serve(conn: TcpStream, posts: &Mutex<Vec<Post>>, refused: &Mutex<usize>, refuse: usize) {
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let status = {
            let mut n = refused.lock().unwrap();
            if *n < refuse {
                *n += 1;
                "503 Service Unavailable"
            } else {
                posts.lock().unwrap().push(Post { headers, body });
                "200 OK"
            }
        };
        if w.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// A Mosquitto broker on `port` (loopback only, anonymous), killed on drop.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn broker(dir: &std::path::Path) -> (Broker, u16) {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")).unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto (Debian's mosquitto package; scripts/setup.sh installs it)");
    let b = Broker(child);
    wait_for("mosquitto to listen", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()));
    (b, port)
}

/// `mosquitto_sub -v` on `panoptes/#`: its lines (`TOPIC PAYLOAD`), as they come.
fn subscribe(port: u16) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-v", "-t", "panoptes/#"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto_sub (Debian's mosquitto-clients)");
    let out = child.stdout.take().unwrap();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    (child, lines)
}

fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn alerts_reach_mosquitto_and_a_webhook_at_least_once_through_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, mqtt_port) = broker(dir.path());
    let (mut sub, mqtt_lines) = subscribe(mqtt_port);
    let (hook_port, posts) = webhook_receiver(2);
    let dead_port = free_port();
    let secret_file = dir.path().join("webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let events = format!(
        "\n[events]\nmqtt_url = \"mqtt://127.0.0.1:{mqtt_port}\"\nwebhooks = [\"http://127.0.0.1:{hook_port}/hook\", \"http://127.0.0.1:{dead_port}/hook\"]\nwebhook_secret_file = \"{}\"\n",
        secret_file.display()
    );
    let mut c = Cluster::start_configured(3, &["w1"], &events);
    c.wait_workers(1);
    let clip = blinking_clip(c.dir.path(), 8);
    let (want, want_tracks) = expected_analytics(&clip, &RULES, &[ZONE]);
    assert!(want.len() >= 10, "{want:?}");
    assert!(want.iter().any(|a| a.0 == "arrive") && want_tracks.iter().any(|t| t.0 == "leave"), "the zone is never crossed: {want_tracks:?}");

    let mut args = vec!["submit", clip.to_str().unwrap(), "--models", "objects", "--no-frames", "--json", "--zone", ZONE];
    for r in RULES {
        args.extend(["--rule", r]);
    }
    let job = c.cli_json(&args)["job_id"].as_str().unwrap().to_string();
    wait_for("the first alerts to reach the webhook", Duration::from_secs(120), || (posts.lock().unwrap().len() >= 2).then_some(()));
    let s = c.cli_json(&["status", &job, "--json"]);
    assert_ne!(s["state"], "completed", "the job ended before the leader could be killed mid-way: {s}");
    let old = c.leader();
    c.kill_coordinator(old);

    let s = c.wait_finished(&job, Duration::from_secs(180));
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    let mut ids: BTreeSet<String> = (1..=want.len()).map(|i| format!("{job}/{i}")).collect();
    ids.extend((1..=want_tracks.len()).map(|i| format!("{job}/t/{i}")));
    wait_for("every alert at the webhook and the broker", Duration::from_secs(90), || {
        let hooked: BTreeSet<String> = posts.lock().unwrap().iter().filter_map(|p| p.headers.get("x-panoptes-event-id").cloned()).collect();
        let published: BTreeSet<String> = mqtt_lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.split_once(' ').and_then(|(_, p)| serde_json::from_str::<Value>(p).ok()).and_then(|v| v["event_id"].as_str().map(str::to_string)))
            .collect();
        (ids.is_subset(&hooked) && ids.is_subset(&published)).then_some(())
    });
    let _ = sub.kill();

    // The alerts themselves: exactly those of one process, each once.
    let out = c.cli(&["alerts", &job, "--json"]);
    let recorded: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seen: Vec<(String, u64, f64)> = recorded.iter().map(|a| (a["rule"].as_str().unwrap().into(), a["frame"].as_u64().unwrap(), a["since"].as_f64().unwrap())).collect();
    assert_eq!(seen, want);

    // Every copy of an event carries the same id and body, signed.
    let mut bodies: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for p in posts.lock().unwrap().iter() {
        let id = p.headers["x-panoptes-event-id"].clone();
        assert_eq!(p.headers.get("idempotency-key"), Some(&id), "{p:?}");
        assert_eq!(p.headers.get("x-panoptes-signature"), Some(&format!("sha256={}", signature(&p.body))), "a bad signature: {p:?}");
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(v["event_id"], id.as_str());
        assert_eq!(v["type"], if id.contains("/t/") { "track" } else { "alert" });
        assert_eq!(*bodies.entry(id).or_insert_with(|| p.body.clone()), p.body, "two copies of an event differ");
    }
    for (i, w) in want.iter().enumerate() {
        let v: Value = serde_json::from_slice(&bodies[&format!("{job}/{}", i + 1)]).unwrap();
        assert_eq!((v["rule"].as_str().unwrap(), v["frame"].as_u64().unwrap()), (w.0.as_str(), w.1), "{v}");
    }
    // Track events: exactly those of one process, in order.
    for (i, w) in want_tracks.iter().enumerate() {
        let v: Value = serde_json::from_slice(&bodies[&format!("{job}/t/{}", i + 1)]).unwrap();
        // Entering and leaving a zone are updates: `update` says which.
        let change = v["update"].as_str().or(v["change"].as_str()).unwrap().to_string();
        assert_eq!(v["change"], if change == "enter" || change == "leave" { "update" } else { change.as_str() }, "{v}");
        let got = (change, v["track_id"].as_u64().unwrap(), v["zone"].as_str().map(str::to_string), v["frame"].as_u64().unwrap());
        assert_eq!(&got, w, "track event {}: {v}", i + 1);
        assert_eq!(v["label"], "person", "{v}");
    }
    let s = c.cli_json(&["status", &job, "--json"]);
    assert_eq!(s["track_events"].as_u64(), Some(want_tracks.len() as u64), "{s}");
    let lines = mqtt_lines.lock().unwrap().clone();
    let topic = format!("panoptes/{job}/alerts");
    let tracks_topic = format!("panoptes/{job}/tracks");
    for l in &lines {
        let (t, payload) = l.split_once(' ').unwrap();
        if t.starts_with("panoptes/status/panoptes-coordinator-") {
            assert!(payload == "online" || payload == "offline", "{l}");
            continue;
        }
        let v: Value = serde_json::from_str(payload).unwrap();
        let id = v["event_id"].as_str().unwrap();
        assert_eq!(t, if id.contains("/t/") { &tracks_topic } else { &topic }, "{l}");
        assert_eq!(bodies[id], payload.as_bytes(), "the broker's copy differs from the webhook's: {l}");
    }
    assert!(lines.iter().any(|l| l.starts_with("panoptes/status/panoptes-coordinator-") && l.ends_with(" online")), "no availability message: {lines:?}");

    let copies = |n: usize, of: &str| format!("{n} {of} copies of {} events", ids.len());
    let published = lines.iter().filter(|l| l.starts_with(&topic) || l.starts_with(&tracks_topic)).count();
    println!("EVENTS: {}; {}", copies(posts.lock().unwrap().len(), "webhook"), copies(published, "MQTT"));

    // The dead webhook: its failures are counted, and it held nothing up.
    let leader = c.leader();
    let addr = metrics_addr(c.coordinators[leader as usize - 1].as_ref().unwrap());
    let (_, metrics) = http_get(&addr, "/metrics");
    let errors = sample(&metrics, "panoptes_coordinator_event_errors_total{sink=\"webhook\"}");
    assert!(errors.is_some_and(|v| v > 0.0), "the dead webhook's failures are not counted:\n{metrics}");
}

#[test]
fn bad_event_sinks_stop_a_coordinator_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, "x-secret\n").unwrap();
    for (events, says) in [
        ("mqtt_url = \"http://127.0.0.1:1883\"", "not an MQTT URL"),
        ("mqtt_url = \"mqtt://127.0.0.1:port\"", "not a port"),
        ("webhooks = [\"http://127.0.0.1:9/hook\"]", "webhook_secret_file"),
        (&format!("webhooks = [\"http://10.1.2.3:9/hook\"]\nwebhook_secret_file = \"{}\"", secret.display()), "[sources] network rules"),
    ] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, format!("[sources]\nallow_networks = [\"127.0.0.1\"]\n[events]\n{events}\n")).unwrap();
        let data = tempfile::tempdir().unwrap();
        let out = Command::new(bin())
            .args(["coordinator", "--id", "1", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
            .arg(data.path())
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "[events] {events}: {err}");
    }
}
