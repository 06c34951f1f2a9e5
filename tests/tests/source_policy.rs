//! Issue 7: the `[sources]` policy on a real cluster. With `allow_networks`
//! empty, network sources on loopback, link-local and private addresses
//! (however the address is written) are refused at submit, before any job
//! exists and without a single connection to them; with `file_dirs` set to
//! one directory, a file inside it is analysed while `..` escapes and
//! symlinks pointing out are refused. Afterwards a good job completes.
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use panoptes_proto::api as api_pb;
use panoptes_proto::api::panoptes_client::PanoptesClient;
use panoptes_tests::{make_video, Cluster, TEST_CONFIG};
use tonic::Code;

/// A real HTTP server for `clip` on `listener`, counting the connections it
/// gets; it stops when `stop` is set (it polls, so it ends by itself).
fn serve(listener: TcpListener, clip: Vec<u8>, hits: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    hits.fetch_add(1, Ordering::Relaxed);
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", clip.len());
                    let _ = s.write_all(&clip);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

#[test]
fn sources_are_confined_by_the_policy() {
    let root = tempfile::tempdir().unwrap();
    let videos = root.path().join("videos");
    std::fs::create_dir(&videos).unwrap();
    let inside = videos.join("clip.mp4");
    make_video(&inside, 30, "160x120", 10);
    let outside = root.path().join("outside.mp4");
    std::fs::copy(&inside, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, videos.join("link.mp4")).unwrap();

    // Loopback servers that would serve the clip, if anything reached them.
    let hits = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clip = std::fs::read(&inside).unwrap();
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let port4 = v4.local_addr().unwrap().port();
    let mut servers = vec![serve(v4, clip.clone(), hits.clone(), stop.clone())];
    // Without IPv6 on this machine the [::1] URL is still refused the same way.
    let port6 = match TcpListener::bind("[::1]:0") {
        Ok(l) => {
            let p = l.local_addr().unwrap().port();
            servers.push(serve(l, clip, hits.clone(), stop.clone()));
            p
        }
        Err(_) => port4,
    };

    // The harness config, with the policy under test instead of its loopback allowance.
    let (allowance, any_file) = (r#"allow_networks = ["127.0.0.1", "::1"]"#, r#"file_dirs = ["/"]"#);
    assert!(TEST_CONFIG.contains(allowance) && TEST_CONFIG.contains(any_file), "the harness config changed; update this test");
    let config = panoptes_tests::test_config("")
        .replace(allowance, "allow_networks = []")
        .replace(any_file, &format!("file_dirs = [{:?}]", videos.display().to_string()));
    let mut c = Cluster::start(&[]);
    std::fs::write(c.dir.path().join("cluster.toml"), config).unwrap();
    c.restart_coordinator();
    c.leader();
    c.start_worker("w1");

    let network = "add the address to sources.allow_networks in the cluster config";
    let file = "add its directory to sources.file_dirs in the cluster config";
    let escape = format!("{}/../outside.mp4", videos.display());
    let link = videos.join("link.mp4").display().to_string();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (format!("http://127.0.0.1:{port4}/clip.mp4"), vec!["is a loopback address", network]),
        (format!("http://[::1]:{port6}/clip.mp4"), vec!["is a loopback address", network]),
        ("http://169.254.169.254/latest/meta-data/".into(), vec!["is a link-local address", network]),
        ("http://10.0.0.1/clip.mp4".into(), vec!["is a private address", network]),
        (format!("http://2130706433:{port4}/clip.mp4"), vec!["is a loopback address", network]),
        (format!("http://x@0x7f.1:{port4}/clip.mp4"), vec!["is a loopback address", network]),
        (format!("http://localhost:{port4}/clip.mp4"), vec!["'localhost', which resolves to", network]),
        (escape.clone(), vec!["outside the directories local sources may be read from", file]),
        (link.clone(), vec!["outside the directories local sources may be read from", "(it resolves to", file]),
        (outside.display().to_string(), vec!["outside the directories local sources may be read from", file]),
    ];
    // Over gRPC, as any client may send them: the CLI resolves local paths
    // itself, and the coordinator must not rely on that.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let addr = c.coordinator_addrs[0].clone();
    for (source, must) in &cases {
        let req = api_pb::SubmitRequest { source: source.clone(), models: vec!["colors".into()], ..Default::default() };
        let e = rt
            .block_on(async { PanoptesClient::new(panoptes_tests::grpc_endpoint(&addr).connect().await.expect("connect")).submit(req).await })
            .expect_err(&format!("{source} was accepted"));
        assert_eq!(e.code(), Code::InvalidArgument, "{source}: {e:?}");
        let msg = e.message();
        assert!(msg.starts_with(&format!("'{source}'")), "{source}: the error does not name the source: {msg}");
        for m in must {
            assert!(msg.contains(m), "{source}: missing {m:?} in: {msg}");
        }
        println!("{source:<60} refused: {msg}");
    }
    // The CLI says the same, and exits 2.
    let out = c.cli(&["submit", &cases[0].0, "--models", "colors", "--json"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a loopback address") && stderr.contains(network), "{stderr}");
    let out = c.cli(&["submit", &escape, "--models", "colors", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(file), "{}", text(&out.stderr));
    // No refused source became a job.
    let listing = c.cli(&["videos", "--json"]);
    assert!(listing.status.success(), "videos: {}", text(&listing.stderr));
    let listed = text(&listing.stdout);
    assert!(!listed.contains("clip.mp4") && !listed.contains("outside") && !listed.contains("169.254"), "{listed}");

    // Refused before anything was opened: no connection reached the servers.
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
    assert_eq!(hits.load(Ordering::Relaxed), 0, "a refused source was fetched");

    // The cluster is fine: a file inside the allowed directory (also through `..`) is analysed.
    for source in [inside.display().to_string(), format!("{}/../videos/clip.mp4", videos.display())] {
        let j = c.cli_json(&["submit", &source, "--models", "colors", "--json"]);
        let job = j["job_id"].as_str().unwrap_or_else(|| panic!("{source}: {j}")).to_string();
        let s = c.wait_finished(&job, Duration::from_secs(180));
        assert_eq!(s["state"], "completed", "{source}: {s}\n{}", c.logs());
        assert_eq!(c.results(&job).len(), 30, "{source}: one colors result per frame");
    }
    assert!(Path::new(&link).exists());
}

/// The default `sources.file_dirs`, `["/"]`, lets whoever may submit read
/// any file the nodes can read: right for one user without tokens, not for
/// a cluster with tokens. A coordinator and a worker whose config sets
/// `security.tokens_file` without `sources.file_dirs` refuse to start, and
/// say what to set (before, both started and any token holder could read
/// any file on the coordinator's and workers' hosts).
#[test]
fn tokens_without_file_dirs_refuse_to_start() {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let (tokens, secret) = (dir.path().join("tokens"), dir.path().join("secret"));
    std::fs::write(&tokens, format!("user alice {}\n", "ab".repeat(32))).unwrap();
    std::fs::write(&secret, "a-cluster-secret\n").unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!("[cluster]\ncoordinators = [{{ id = 1, addr = \"127.0.0.1:{}\" }}]\n\n[security]\ntokens_file = {:?}\ncluster_secret_file = {:?}\n", panoptes_tests::free_port(), tokens.display().to_string(), secret.display().to_string()),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let data = dir.path().join("data").display().to_string();
    for args in [vec!["coordinator", "--id", "1", "--config", &cfg, "--data-dir", &data], vec!["worker", "--name", "w1", "--config", &cfg, "--data-dir", &data]] {
        let mut child = Command::new(panoptes_tests::bin()).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("`panoptes {}` started with tokens and the default file_dirs:\n{}", args[0], text(&out.stderr));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{}: {stderr}", args[0]);
        assert!(stderr.contains("security.tokens_file is set but sources.file_dirs is not"), "{}: {stderr}", args[0]);
        assert!(stderr.contains("Set sources.file_dirs to the directories videos may be read from"), "{}: {stderr}", args[0]);
    }
}
