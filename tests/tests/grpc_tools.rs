//! Observability of the coordinators, end to end with real processes:
//! standard gRPC tooling (server reflection and health checking, driven by
//! Python's grpcio without any stub or .proto file), and each coordinator's
//! Prometheus metrics and health over HTTP, read with a plain TCP stream.
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use panoptes_tests::{http_get, make_video, metrics_addr, sample, workspace, Cluster, Node};
use serde_json::Value;

/// A venv with grpcio, its reflection and health-checking packages, under
/// target/ (made once, from PyPI).
fn python() -> PathBuf {
    let venv = workspace().join("target/python-grpc/tools-venv");
    let py = venv.join("bin/python");
    let ok = |py: &PathBuf| {
        Command::new(py).args(["-c", "import grpc, grpc_reflection, grpc_health"]).status().map(|s| s.success()).unwrap_or(false)
    };
    if !ok(&py) {
        let st = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().expect("run python3 -m venv");
        assert!(st.success(), "python3 -m venv failed (install python3-venv)");
        let st = Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--timeout", "60"])
            .args(["grpcio==1.76.0", "grpcio-reflection==1.76.0", "grpcio-health-checking==1.76.0"])
            .status()
            .expect("run pip");
        assert!(st.success() && ok(&py), "could not install grpcio, grpcio-reflection and grpcio-health-checking into {}", venv.display());
    }
    py
}

/// Scrape `addr` until `done` holds for the text (bounded); the last scrape.
fn scrape_until(addr: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http_get(addr, "/metrics");
        assert_eq!(code, 200, "GET /metrics: {body}");
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "metrics at {addr} never showed {what}:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_coordinators_serve_metrics_on_their_own_ports_and_answer_reflection_and_health() {
    let py = python();
    let c = Cluster::start_replicated(3, &[]);
    let leader = c.leader();

    // Every coordinator serves its metrics on a port of its own, derived
    // from its gRPC port unless that one was taken.
    let nodes: Vec<&Node> = c.coordinators.iter().flatten().collect();
    let addrs: Vec<String> = nodes.iter().map(|n| metrics_addr(n)).collect();
    for (i, a) in addrs.iter().enumerate() {
        assert!(!addrs[..i].contains(a), "two coordinators share the metrics address {a}: {addrs:?}");
        let grpc_port: u32 = c.coordinator_addrs[i].rsplit_once(':').unwrap().1.parse().unwrap();
        let port: u32 = a.rsplit_once(':').unwrap().1.parse().unwrap();
        assert!(
            port == grpc_port + 10000 || grpc_port + 10000 > 65535 || nodes[i].log_text().contains("metrics port taken"),
            "coordinator {} listens on {}, serves metrics on {a}",
            i + 1,
            c.coordinator_addrs[i]
        );
    }

    // They agree on the leader and the term; only the leader says it leads.
    // (A sample's value is a float in the text format: `1` or `1.0`.)
    let leader_id = format!("panoptes_coordinator_raft_leader_id {leader}");
    let texts: Vec<String> =
        addrs.iter().map(|a| scrape_until(a, &leader_id, |t| sample(t, "panoptes_coordinator_raft_leader_id") == Some(leader as f64))).collect();
    let term = sample(&texts[0], "panoptes_coordinator_raft_term").unwrap();
    assert!(term >= 1.0, "{}", texts[0]);
    for (i, t) in texts.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(sample(t, "panoptes_coordinator_raft_term"), Some(term), "coordinator {id}:\n{t}");
        assert_eq!(sample(t, "panoptes_coordinator_raft_is_leader"), Some(if id == leader { 1.0 } else { 0.0 }), "coordinator {id}:\n{t}");
        assert_eq!(sample(t, "panoptes_coordinator_raft_members{role=\"voter\"}"), Some(3.0), "coordinator {id}:\n{t}");
        assert!(sample(t, "panoptes_coordinator_raft_last_log_index").is_some_and(|v| v >= 1.0), "coordinator {id}:\n{t}");
        assert!(t.lines().any(|l| l == "# TYPE panoptes_coordinator_raft_term gauge"), "coordinator {id}:\n{t}");
        assert_eq!(http_get(&addrs[i], "/healthz").0, 200, "coordinator {id}'s /healthz");
    }

    // A follower, with nothing but the server's reflection: list the
    // services, build messages from the reflected descriptors, call the API;
    // and check health.
    let follower = (1..=3u64).find(|i| *i != leader).unwrap();
    let addr = &c.coordinator_addrs[follower as usize - 1];
    let mut cmd = Command::new(&py);
    cmd.arg(workspace().join("tests/python/reflect_health.py")).arg(addr);
    if let Some(t) = panoptes_tests::test_tls() {
        t.client_env(&mut cmd);
    }
    let out = cmd.output().expect("run reflect_health.py");
    assert!(out.status.success(), "reflect_health.py failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), c.logs());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    // Each version of reflection lists itself among the services.
    for (list, version) in [("services_v1alpha", "v1alpha"), ("services_v1", "v1")] {
        let reflection = format!("grpc.reflection.{version}.ServerReflection");
        for service in ["panoptes.v1.Panoptes", "panoptes.worker.v1.WorkerApi", "grpc.health.v1.Health", &reflection] {
            assert!(v[list].as_array().unwrap().iter().any(|s| s == service), "{list} lacks {service}: {v}");
        }
    }
    assert_eq!(v["file"], "panoptes.proto", "{v}");
    assert!(v["methods"].as_array().unwrap().iter().any(|m| m == "Submit"), "{v}");
    for model in ["colors", "joy", "objects"] {
        assert!(v["models"].as_array().unwrap().iter().any(|m| m == model), "ListModels lacks {model}: {v}");
    }
    assert_eq!(v["cluster"]["leader"], leader, "{v}");
    assert_eq!(v["cluster"]["members"], 3, "{v}");
    assert!(v["cluster"]["term"].as_u64().is_some_and(|t| t as f64 >= term), "{v}");
    for service in ["", "panoptes.v1.Panoptes", "panoptes.worker.v1.WorkerApi"] {
        assert_eq!(v["health"][service], "SERVING", "health of {service:?}: {v}");
    }
    assert_eq!(v["health"]["no.such.Service"], "NOT_FOUND", "{v}");
}

#[test]
fn the_coordinator_counts_reports_and_stored_results_of_a_job() {
    let c = Cluster::start(&["w1"]);
    let addr = metrics_addr(c.coordinators[0].as_ref().unwrap());
    assert_eq!(http_get(&addr, "/healthz").0, 200);

    // A small job: 40 frames, every other one analysed, one model.
    let video = c.dir.path().join("clip.mp4");
    make_video(&video, 40, "160x120", 10);
    let out = c.cli(&["submit", video.to_str().unwrap(), "--models", "colors", "--frame-step", "2", "--wait", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("submit: {}\n{}", String::from_utf8_lossy(&out.stderr), c.logs()));
    assert_eq!(status["state"], "completed", "{status}\n{}", c.logs());
    let frames = status["frames_done"].as_f64().unwrap();
    assert_eq!(frames, 20.0, "{status}");

    // The job is complete once its last report is committed; the counters
    // move just after the commit: scrape until they show the whole job.
    let rows = frames * 1.0; // × models
    let text = scrape_until(&addr, "every result row stored", |t| sample(t, "panoptes_coordinator_results_stored_total") == Some(rows));
    assert_eq!(sample(&text, "panoptes_coordinator_raft_is_leader"), Some(1.0), "{text}");
    assert!(sample(&text, "panoptes_coordinator_raft_term").is_some_and(|v| v >= 1.0), "{text}");
    assert!(sample(&text, "panoptes_coordinator_raft_last_applied_index").is_some_and(|v| v >= 1.0), "{text}");
    for series in ["panoptes_coordinator_reports_accepted_total", "panoptes_coordinator_leases_granted_total", "panoptes_coordinator_report_commit_seconds_count"] {
        assert!(sample(&text, series).is_some_and(|v| v >= 1.0), "{series}:\n{text}");
    }
    for (series, want) in [
        ("panoptes_coordinator_jobs{state=\"completed\"}", 1.0),
        ("panoptes_coordinator_jobs{state=\"running\"}", 0.0),
        ("panoptes_coordinator_shards{state=\"leased\"}", 0.0),
        ("panoptes_coordinator_shards{state=\"pending\"}", 0.0),
        ("panoptes_coordinator_workers_registered", 1.0),
        ("panoptes_coordinator_workers_live", 1.0),
        ("panoptes_coordinator_reports_refused_total{reason=\"invalid\"}", 0.0),
        ("panoptes_coordinator_forwarded_calls_total", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series}:\n{text}");
    }
    for line in [
        "# TYPE panoptes_coordinator_reports_accepted_total counter",
        "# TYPE panoptes_coordinator_results_stored_total counter",
        "# TYPE panoptes_coordinator_report_commit_seconds histogram",
        "# TYPE panoptes_coordinator_jobs gauge",
        "# HELP panoptes_coordinator_raft_term The current Raft term.",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?}:\n{text}");
    }
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    assert_eq!(http_get(&addr, "/nope").0, 404);
}
