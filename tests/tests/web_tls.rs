//! The web UI over HTTPS: a coordinator with `security.tls_cert`/`tls_key`
//! (and without `web_plain_http`) serves its web port with the node
//! certificate. Checked with the `curl` CLI (scripts/setup.sh installs it):
//! the API answers a client trusting the cluster's CA, over HTTP/2 and
//! HTTP/1.1; a client trusting another CA (or only the system's) and a
//! plain-HTTP client get no API answer; a job submitted over gRPC shows up
//! over HTTPS and its results stream (server-sent events) streams; and the
//! server keeps answering after the failed handshakes.
use std::process::{Command, Output};
use std::time::Duration;

use panoptes_tests::{make_video, node_address, Cluster, Tls};
use serde_json::Value;

/// `curl --silent --show-error ARGS`, every run bounded by its `--max-time`.
fn curl(args: &[&str]) -> Output {
    Command::new("curl").args(["--silent", "--show-error"]).args(args).output().expect("run curl (scripts/setup.sh installs it)")
}

/// GET `url` trusting `ca`: (HTTP status, body), with extra curl `args`.
fn get(ca: &str, url: &str, args: &[&str]) -> (u16, String) {
    let mut all = vec!["--max-time", "60", "--cacert", ca, "--write-out", "\n%{http_code}"];
    all.extend_from_slice(args);
    all.push(url);
    let o = curl(&all);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "curl {url} failed ({:?}): {}{out}", o.status.code(), String::from_utf8_lossy(&o.stderr));
    let (body, code) = out.rsplit_once('\n').unwrap_or_else(|| panic!("no status line from curl: {out}"));
    (code.trim().parse().unwrap_or_else(|_| panic!("bad status '{code}' from curl")), body.to_string())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The built-in model names `GET /api/models` lists.
fn model_names(body: &str) -> Vec<String> {
    json(body).as_array().unwrap_or_else(|| panic!("not a list: {body}")).iter().filter_map(|m| m["name"].as_str().map(String::from)).collect()
}

#[test]
fn web_ui_serves_https_with_the_node_certificate() {
    let Some(tls) = panoptes_tests::test_tls() else {
        panic!("this test needs the harness's TLS: unset PANOPTES_TEST_TLS=0");
    };
    let mut c = Cluster::start(&[]);
    // The harness keeps the web port on plain HTTP for the other web tests
    // (`web_plain_http = true` in its [security] lines): drop that line and
    // restart the coordinator, which then serves the web UI over HTTPS.
    let cfg_path = c.dir.path().join("cluster.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(cfg.contains("web_plain_http = true\n"), "{cfg}");
    std::fs::write(&cfg_path, cfg.replace("web_plain_http = true\n", "")).unwrap();
    c.restart_coordinator();
    c.leader();
    c.start_worker("w1");
    let node = c.coordinators[0].as_ref().expect("coordinator 1 is running");
    let url = node_address(node, "web", Duration::from_secs(30));
    let web = url.strip_prefix("https://").unwrap_or_else(|| panic!("the web page is not on https: {url}")).trim_end_matches('/').to_string();
    assert!(!node.log_text().contains("web UI on http://"), "{}", node.log_text());
    let base = format!("https://{web}");
    let ca = tls.path("ca.pem");

    // (a) The API over HTTPS, trusting the cluster's CA: HTTP/2 (ALPN) and HTTP/1.1.
    for proto in ["--http2", "--http1.1"] {
        let (status, body) = get(&ca, &format!("{base}/api/models"), &[proto]);
        assert_eq!(status, 200, "{proto}: {body}");
        assert!(model_names(&body).iter().any(|n| n == "colors"), "{proto}: {body}");
    }
    let (status, page) = get(&ca, &format!("{base}/"), &[]);
    assert_eq!(status, 200);
    assert!(page.contains("Panoptes"), "{page}");

    // (b) A client trusting another CA, or only the system's: certificate refused.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Tls::make(other_dir.path(), &[]);
    let other_ca = other.path("ca.pem");
    // Each CA `panoptes certs` makes has a name of its own, so OpenSSL finds
    // no issuer for the certificate: curl's exit 60 (certificate problem).
    let url = format!("{base}/api/models");
    let o = curl(&["--max-time", "30", "--cacert", &other_ca, &url]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(60), "trusting another CA: not a failed verification: {err}{}", String::from_utf8_lossy(&o.stdout));
    assert!(o.stdout.is_empty(), "trusting another CA: {}", String::from_utf8_lossy(&o.stdout));
    let o = curl(&["--max-time", "30", &url]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(60), "trusting only the system's CAs: not a certificate error: {err}{}", String::from_utf8_lossy(&o.stdout));
    assert!(err.contains("certificate"), "{err}");
    assert!(o.stdout.is_empty(), "{}", String::from_utf8_lossy(&o.stdout));

    // (c) Plain HTTP to the HTTPS port: no API answer.
    let o = curl(&["--max-time", "30", &format!("http://{web}/api/models")]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "plain HTTP got an answer: {out}");
    assert!(!out.contains("colors"), "plain HTTP got the API's answer: {out}");

    // (d) A job submitted over gRPC, seen over HTTPS; its results stream
    // (server-sent events) streams over TLS.
    let video = c.dir.path().join("clip.mp4");
    make_video(&video, 20, "160x120", 10);
    let j = c.cli_json(&["submit", video.to_str().unwrap(), "--models", "colors", "--json"]);
    let job = j["job_id"].as_str().unwrap_or_else(|| panic!("no job id: {j}")).to_string();
    let (status, body) = get(&ca, &format!("{base}/api/jobs/{job}"), &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["job_id"], job.as_str(), "{body}");
    // The stream ends when the job does; --max-time bounds the wait (exit 28
    // then, with what arrived so far on stdout).
    let url = format!("{base}/api/jobs/{job}/results/stream");
    let o = curl(&["--max-time", "180", "--no-buffer", "--cacert", &ca, &url]);
    let sse = String::from_utf8_lossy(&o.stdout);
    assert!(matches!(o.status.code(), Some(0) | Some(28)), "the stream failed: {}{sse}", String::from_utf8_lossy(&o.stderr));
    assert!(sse.lines().any(|l| l.starts_with("data:")), "no server-sent event over HTTPS: {sse}\n{}", c.logs());
    let s = c.wait_finished(&job, Duration::from_secs(180));
    assert_eq!(s["state"], "completed", "{s}");

    // (e) The failed handshakes did not stop the server.
    let (status, body) = get(&ca, &format!("{base}/api/models"), &[]);
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&ca, &format!("{base}/api/jobs/{job}"), &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["state"], "completed", "{body}");
    let log = c.coordinator_log(1);
    assert!(!log.contains("web server stopped") && !log.contains("panicked"), "{log}");
}
