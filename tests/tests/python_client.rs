//! A client in another language: Python's grpcio, with stubs generated from
//! the project's `panoptes.proto` alone, submits a job to a real cluster and
//! reads its results (unary and server-streaming), and the results equal what
//! the Rust CLI reads.
use std::path::PathBuf;
use std::process::Command;

use panoptes_tests::{make_video, workspace, Cluster};

/// A venv with grpcio and grpcio-tools under target/ (made once, from PyPI).
fn python() -> PathBuf {
    let venv = workspace().join("target/python-grpc/venv");
    let py = venv.join("bin/python");
    let ok = |py: &PathBuf| Command::new(py).args(["-c", "import grpc, grpc_tools"]).status().map(|s| s.success()).unwrap_or(false);
    if !ok(&py) {
        let st = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().expect("run python3 -m venv");
        assert!(st.success(), "python3 -m venv failed (install python3-venv)");
        let st = Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--timeout", "60", "grpcio==1.76.0", "grpcio-tools==1.76.0"])
            .status()
            .expect("run pip");
        assert!(st.success() && ok(&py), "could not install grpcio into {}", venv.display());
    }
    py
}

#[test]
fn a_python_grpc_client_submits_and_reads_results() {
    let py = python();
    let c = Cluster::start(&["w1"]);
    let video = c.dir.path().join("clip.mp4");
    make_video(&video, 30, "160x120", 10);
    let addr = c.coordinator_addrs[0].clone();
    let mut cmd = Command::new(&py);
    cmd.arg(workspace().join("tests/python/panoptes_client.py")).arg(workspace().join("proto/proto")).arg(&addr).arg(&video).arg("colors");
    if let Some(t) = panoptes_tests::test_tls() {
        t.client_env(&mut cmd);
    }
    let out = cmd
        .output()
        .expect("run the Python client");
    assert!(out.status.success(), "Python client failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), c.logs());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(v["state"], "JOB_STATE_COMPLETED");
    assert_eq!(v["frames_done"], 30);
    assert_eq!(v["streamed"], 30);
    // 30 results, 7 a page: 4 full pages and one of 2 (GetResults reads page by page).
    assert_eq!(v["pages"], 5, "{v}");
    assert_eq!(v["unknown_job"], "NOT_FOUND");
    let job = v["job_id"].as_str().unwrap();
    let rust: Vec<serde_json::Value> = c.results(job);
    let py_rows = v["rows"].as_array().unwrap();
    assert_eq!(py_rows.len(), rust.len());
    for (p, r) in py_rows.iter().zip(&rust) {
        assert_eq!(p["frame"], r["frame"]);
        assert_eq!(p["model"], r["model"]);
        assert_eq!(p["results"], r["results"], "Python and the CLI read different results");
    }
}
