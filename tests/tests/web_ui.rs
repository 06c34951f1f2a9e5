//! Issue 9: the web page in headless Chromium, driven by playwright-core
//! (`tests/web/ui.spec.mjs`) against a real local cluster (1 coordinator,
//! 1 worker): submit a generated clip, see its results, open it in History,
//! load an annotated frame. Screenshots of each tab go to
//! `target/web-screenshots/`.
//!
//! A second scenario (`tests/web/ui_token.spec.mjs`) runs the page against a
//! cluster with a tokens file: it asks for a token, then works with one.
//!
//! Needs Debian's `chromium` (scripts/setup.sh installs it) and Node.js with
//! npm; playwright-core (pinned) is installed by this test into
//! `target/web-ui-node/` on first use.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use panoptes_tests::{make_token, make_video, web_addr, workspace, Cluster};

/// The version the Debian Chromium of this machine kind is known to work with.
const PLAYWRIGHT_CORE: &str = "playwright-core@1.64.1";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
}

/// Wait for `child` for at most `limit`, killing it after that.
fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait for child").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} did not finish within {limit:?}\nstdout: {}\nstderr: {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    child.wait_with_output().unwrap()
}

/// playwright-core in `target/web-ui-node/node_modules` (npm, pinned version).
fn playwright_dir() -> PathBuf {
    // The tests of this file run in parallel: one npm install at a time.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = target_dir().join("web-ui-node");
    let want = PLAYWRIGHT_CORE.rsplit('@').next().unwrap();
    let pkg = dir.join("node_modules/playwright-core/package.json");
    let have = std::fs::read_to_string(&pkg).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()).and_then(|v| v["version"].as_str().map(str::to_string));
    if have.as_deref() != Some(want) {
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--save-exact", "--prefix"])
            .arg(&dir)
            .arg(PLAYWRIGHT_CORE)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run npm (install Node.js and npm: apt-get install nodejs npm)");
        let out = wait_bounded(child, Duration::from_secs(300), "npm install playwright-core");
        assert!(out.status.success(), "npm install {PLAYWRIGHT_CORE} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    dir
}

/// Where the drivers save their screenshots.
fn shots_dir() -> PathBuf {
    target_dir().join("web-screenshots")
}

/// Run the browser driver `tests/web/SPEC` (headless Chromium through
/// playwright-core) against the web UI of `c`, with `clip` to submit and
/// the `extra` environment; `shots` are the screenshots it takes (removed
/// first; the last is the one it saves on failure). Its findings: the JSON
/// of its last stdout line.
fn run_driver(c: &Cluster, spec: &str, clip: &Path, shots: &[&str], extra: &[(&str, &str)]) -> serde_json::Value {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: run `bash scripts/setup.sh` (installs Debian's chromium) or set CHROMIUM");
    let pw = playwright_dir();
    let dir = shots_dir();
    for name in shots {
        let _ = std::fs::remove_file(dir.join(format!("{name}.png")));
    }
    let mut cmd = Command::new("node");
    cmd.arg(workspace().join("tests/web").join(spec))
        .env("WEB_URL", format!("http://{}/", web_addr(c)))
        .env("CLIP", clip)
        .env("SHOTS_DIR", &dir)
        .env("PW_NODE_DIR", &pw)
        .env("CHROMIUM", &chromium)
        .envs(extra.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_bounded(cmd.spawn().expect("run node"), Duration::from_secs(400), spec);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test {spec} failed (screenshot: {}):\n{stdout}\n{}\n{}",
        dir.join(format!("{}.png", shots.last().unwrap())).display(),
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    let found: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("the driver's findings as JSON");
    eprintln!("browser test {spec}: {found}");
    found
}

#[test]
fn w10_the_page_in_headless_chromium() {
    let c = Cluster::start(&["w1"]);
    let clip = c.dir.path().join("ui-clip.mp4");
    make_video(&clip, 60, "320x240", 25);
    let found = run_driver(&c, "ui.spec.mjs", &clip, &["submit", "webcam", "history", "history-frame", "failure"], &[]);
    assert!(found["submit_rows"].as_u64().unwrap() >= 1, "{found}");
    assert!(found["thumbs"].as_u64().unwrap() >= 2, "{found}");
    assert!(found["frame_width"].as_u64().unwrap() > 0, "{found}");
    assert!(found.get("page_errors").is_none(), "the page threw: {found}");
    // The Webcam tab: Chromium's fake camera became a live job with results
    // (where the cluster offers live ingest at all).
    let live = found["live"].as_str().unwrap_or("");
    if live.starts_with("Live job") {
        assert!(found["live_results"].as_u64().unwrap_or(0) >= 3, "the webcam's live job got no results: {found}\n{}", c.logs());
    } else {
        assert!(live.contains("cannot start a live job"), "{found}");
    }
    for name in ["submit", "webcam", "history", "history-frame"] {
        let p = shots_dir().join(format!("{name}.png"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "no screenshot at {}", p.display());
    }
}

/// The page against a cluster with a tokens file (docs/SECURITY.md): it says
/// it needs a token (on load and on submit), refuses a wrong one, and with a
/// user token typed into its Token control submits a clip whose results
/// arrive over the fetch-based event stream; the token never goes in a URL.
#[test]
fn w11_the_page_with_a_tokens_file() {
    let (user, user_line) = make_token("user", "browser");
    let (admin, admin_line) = make_token("admin", "root");
    let c = Cluster::start_secure(&["w1"], &admin, |dir| {
        let file = dir.join("tokens");
        std::fs::write(&file, format!("{user_line}\n{admin_line}\n")).unwrap();
        let secret = dir.join("cluster.secret");
        std::fs::write(&secret, "ui-cluster-secret\n").unwrap();
        format!("\n[security]\ntokens_file = \"{}\"\ncluster_secret_file = \"{}\"\n", file.display(), secret.display())
    });
    let clip = c.dir.path().join("ui-token-clip.mp4");
    make_video(&clip, 40, "320x240", 25);
    let found = run_driver(
        &c,
        "ui_token.spec.mjs",
        &clip,
        &["token-needed", "token-submit", "token-history", "token-failure"],
        &[("PANOPTES_UI_TOKEN", user.as_str())],
    );
    assert_eq!(found["submit_without_token"], 401, "{found}");
    assert!(found["load_message"].as_str().unwrap_or("").contains("needs a token"), "{found}");
    assert!(found["submit_rows"].as_u64().unwrap_or(0) >= 1, "{found}");
    assert!(found["thumbs"].as_u64().unwrap_or(0) >= 2, "{found}");
    assert!(found["frame_width"].as_u64().unwrap_or(0) > 0, "{found}");
    assert!(found.get("page_errors").is_none(), "the page threw: {found}");
    // The Webcam tab's live job (where the cluster offers live ingest): its
    // pieces went with the token (the driver checks every request's header).
    let live = found["live"].as_str().unwrap_or("");
    if live.starts_with("Live job") {
        assert!(found["live_results"].as_u64().unwrap_or(0) >= 3, "the webcam's live job got no results: {found}\n{}", c.logs());
        assert!(found.get("live_error").is_none(), "{found}");
    } else {
        assert!(live.contains("cannot start a live job"), "{found}");
    }
    let logs = c.logs();
    for secret in [&user, &admin] {
        assert!(!logs.contains(secret.as_str()), "a token is in a log");
    }
}

/// The Dashboard tab (issue 18) against a running live push with an alert
/// rule and a zone: while the stream runs it shows the newest analysed
/// frame, the alerts, the window chart and the tracks; once the job ends,
/// the alerts it lists are the ones the cluster recorded, the zone is
/// listed and drawn on the frame, and the track says it entered it.
#[test]
fn w12_the_dashboard_follows_a_live_push() {
    let c = Cluster::start(&["w1"]);
    c.wait_workers(1);
    // Long enough to watch (~12 s in real time): runs of a person and of nothing.
    let mkv = panoptes_tests::blinking_clip(c.dir.path(), 12);
    let flv = c.dir.path().join("dashboard.flv");
    let made = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(&mkv)
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "12", "-pix_fmt", "yuv420p", "-f", "flv"])
        .arg(&flv)
        .status()
        .expect("run ffmpeg");
    assert!(made.success());
    let zone = "right=0.385,0,1,0,1,1,0.385,1";
    let live = c.cli_json(&["live", "--models", "objects", "--pictures-every", "0", "--rule", "someone: count(person) >= 1 for 100ms", "--zone", zone, "--json"]);
    let (job, url) = (live["job_id"].as_str().unwrap().to_string(), live["rtmp_url"].as_str().unwrap().to_string());
    panoptes_tests::wait_for("the worker to listen for the publisher", Duration::from_secs(30), || {
        c.workers[0].log_text().contains("waiting for the publisher").then_some(())
    });
    let push = panoptes_tests::push_file(&url, &flv);
    let found = run_driver(&c, "dashboard.spec.mjs", &flv, &["dashboard-running", "dashboard", "dashboard-failure"], &[("JOB", job.as_str())]);
    assert!(panoptes_tests::finish_push(push, Duration::from_secs(60)), "push to {url} failed");
    assert_eq!(found["state_while_shown"], "running", "the dashboard showed the job only after it ended: {found}");
    assert_eq!(found["final_state"], "completed", "{found}");
    let recorded = String::from_utf8_lossy(&c.cli(&["alerts", &job, "--json"]).stdout).lines().count() as u64;
    assert!(recorded >= 2, "{recorded} alerts recorded");
    assert_eq!(found["alerts"].as_u64(), Some(recorded), "the dashboard lists other alerts than the cluster recorded: {found}");
    assert!(found["alert_text"].as_str().unwrap_or("").starts_with("someone at"), "{found}");
    assert!(found["bars"].as_u64().unwrap_or(0) >= 5 && found["tracks"].as_u64().unwrap_or(0) >= 1, "{found}");
    assert!(found["status_text"].as_str().unwrap_or("").contains("zones: right"), "{found}");
    assert!(found["track_text"].as_str().unwrap_or("").contains("entered right"), "{found}");
    assert!(found["zone_pixels"].as_u64().unwrap_or(0) > 100, "the zone is not outlined on the frame: {found}");
    assert!(found["frame_width"].as_u64().unwrap_or(0) > 0 && found["frame"].as_u64().is_some(), "{found}");
    assert_eq!(found["error_shown"], false, "{found}");
    assert!(found.get("page_errors").is_none(), "the page threw: {found}");
}
