//! Stored pictures in a real S3-compatible server: s3s-fs (crates.io; built
//! by scripts/setup.sh into target/tools), started here on 127.0.0.1 with
//! access keys, in front of a directory. Three coordinators keep their
//! pictures there (`[object_store]`): every picture is one object, no
//! coordinator keeps a copy, each draws frames from the server; while the
//! server is down a job waits (its reports are retried) and loses nothing,
//! and a frame asked for says the store cannot be read; prune and retention
//! delete the objects.
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use panoptes_tests::{free_port, make_video, wait_for, workspace, Cluster};

const BUCKET: &str = "pics";
const PREFIX: &str = "panoptes";

fn s3s_fs() -> PathBuf {
    let b = workspace().join("target/tools/bin/s3s-fs");
    assert!(b.exists(), "{} is missing: run scripts/setup.sh (it builds the S3 server this test starts)", b.display());
    b
}

/// An s3s-fs process serving `root` on 127.0.0.1:`port`; killed when dropped.
struct S3Server {
    child: Option<Child>,
    root: PathBuf,
    port: u16,
    log: PathBuf,
}

impl S3Server {
    fn start(root: &Path, port: u16, log: &Path) -> S3Server {
        let mut s = S3Server { child: None, root: root.to_path_buf(), port, log: log.to_path_buf() };
        s.restart();
        s
    }

    fn restart(&mut self) {
        let logf = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string(), "--access-key", "panoptes-test", "--secret-key", "not-a-real-secret"])
            .arg(&self.root)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for("s3s-fs to listen", Duration::from_secs(30), || TcpStream::connect(&addr).ok());
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The frames of `job` (its number) that have an object, in order.
    fn frames(&self, job: &str) -> Vec<u64> {
        let dir = self.root.join(BUCKET).join(PREFIX).join(job.trim_start_matches("job-"));
        let mut frames: Vec<u64> = std::fs::read_dir(dir)
            .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.split('-').next()?.parse().ok()).collect())
            .unwrap_or_default();
        frames.sort();
        frames
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Files under `p`, recursively.
fn files(p: &Path) -> usize {
    std::fs::read_dir(p).map(|d| d.flatten().map(|e| if e.path().is_dir() { files(&e.path()) } else { 1 }).sum()).unwrap_or(0)
}

#[test]
fn pictures_live_in_an_s3_server_and_nothing_is_lost_while_it_is_down() {
    let s3dir = tempfile::tempdir().unwrap();
    let root = s3dir.path().join("root");
    std::fs::create_dir_all(root.join(BUCKET)).unwrap();
    let creds = s3dir.path().join("s3.credentials");
    std::fs::write(&creds, "panoptes-test\nnot-a-real-secret\n").unwrap();
    let port = free_port();
    let mut s3 = S3Server::start(&root, port, &s3dir.path().join("s3s-fs.log"));
    let extra = format!(
        "\n[object_store]\nurl = \"s3://{BUCKET}/{PREFIX}\"\nendpoint = \"http://127.0.0.1:{port}\"\nallow_http = true\ncredentials_file = \"{}\"\n[retention]\nevery_s = 1\n",
        creds.display()
    );
    let c = Cluster::start_configured(3, &["w1"], &extra);

    // A picture of every frame: one object each, none on the coordinators.
    let clip = c.dir.path().join("clip.mp4");
    make_video(&clip, 120, "160x120", 25);
    let s = c.cli_json(&["submit", clip.to_str().unwrap(), "--models", "colors", "--pictures-every", "0", "--wait", "--json"]);
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    let first = s["job_id"].as_str().unwrap().to_string();
    assert_eq!(s3.frames(&first), (0..120).collect::<Vec<u64>>(), "one object a frame");
    for i in 1..=3 {
        assert_eq!(files(&c.dir.path().join(format!("c{i}/pictures"))), 0, "coordinator {i} keeps no picture of its own");
    }
    let png = c.dir.path().join("f.png");
    for addr in &c.coordinator_addrs {
        for frame in ["0", "119"] {
            let out = c.cli_at(addr, &["frame", &first, frame, "-o", png.to_str().unwrap()]);
            assert!(out.status.success(), "frame {frame} from {addr}: {}", text(&out));
        }
    }

    // The server goes away while a job runs: the job waits and loses nothing.
    let long = c.dir.path().join("long.mp4");
    make_video(&long, 400, "160x120", 25);
    let s = c.cli_json(&["submit", long.to_str().unwrap(), "--models", "colors", "--pictures-every", "0", "--json"]);
    let job = s["job_id"].as_str().unwrap().to_string();
    wait_for("the job to commit frames", Duration::from_secs(60), || {
        (c.cli_json(&["status", &job, "--json"])["frames_done"].as_u64().unwrap_or(0) > 0).then_some(())
    });
    s3.stop();
    let out = c.cli(&["frame", &first, "0", "-o", png.to_str().unwrap()]);
    assert!(!out.status.success() && text(&out).contains(&format!("s3://{BUCKET}/{PREFIX}")), "a frame while the store is down: {}", text(&out));
    std::thread::sleep(Duration::from_secs(3));
    let st = c.cli_json(&["status", &job, "--json"]);
    assert_eq!(st["state"], "running", "the job waits for the store: {st}");
    s3.restart();
    let done = c.wait_finished(&job, Duration::from_secs(180));
    assert_eq!(done["state"], "completed", "{done}\n{}", c.logs());
    assert_eq!(c.frames_once(&job), (0..400).collect(), "every frame's results once");
    assert_eq!(s3.frames(&job), (0..400).collect::<Vec<u64>>(), "every frame's picture");

    // Prune deletes a finished job's objects.
    std::thread::sleep(Duration::from_millis(1100));
    let p = c.cli_json(&["prune", "--older-than", "1s", "--json"]);
    assert_eq!(p["jobs"], 2, "{p}");
    wait_for("the pruned jobs' objects to be deleted", Duration::from_secs(30), || {
        (s3.frames(&first).is_empty() && s3.frames(&job).is_empty()).then_some(())
    });

    // Retention trims objects below the window as the job goes.
    let s = c.cli_json(&["submit", long.to_str().unwrap(), "--models", "colors", "--pictures-every", "0", "--keep", "4s", "--wait", "--json"]);
    assert_eq!(s["state"], "completed", "{s}");
    let kept = s["job_id"].as_str().unwrap().to_string();
    // 400 frames at 25 fps (15.96 s), 4 s kept: frames from 299 (11.96 s) on.
    wait_for("the trim to reach the window in the store", Duration::from_secs(60), || {
        (s3.frames(&kept) == (299..400).collect::<Vec<u64>>()).then_some(())
    });
    assert!(!c.logs().contains("not-a-real-secret"), "the object store's secret key is in a log");
}
