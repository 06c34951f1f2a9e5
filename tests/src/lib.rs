//! Helpers for end-to-end tests: real `panoptes` processes on 127.0.0.1,
//! real video files made with the FFmpeg CLI, bounded waits everywhere.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod chaos;

/// Clusters are heavy on a 2-core machine: tests that start one take this lock.
static CLUSTER_LOCK: Mutex<()> = Mutex::new(());

pub fn cluster_lock() -> MutexGuard<'static, ()> {
    CLUSTER_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// `target/debug/panoptes` (built by `cargo build --workspace --bins`).
pub fn bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let b = dir.join("panoptes");
    assert!(b.exists(), "{} is missing: run `cargo build -p panoptes` before the tests", b.display());
    b
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A file of the repository's `fixtures/` (lossless clips and the reference's
/// expected results); a missing one fails the test.
pub fn fixture(name: &str) -> PathBuf {
    let p = workspace().join("fixtures").join(name);
    assert!(p.is_file(), "{} is missing: the fixtures are part of the repository", p.display());
    p
}

/// The models directory (env `PANOPTES_MODELS_DIR`, else the repository's
/// `models/`, which `scripts/setup.sh` makes); missing models fail the test.
pub fn models_dir() -> PathBuf {
    let d = std::env::var_os("PANOPTES_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("models"));
    assert!(
        d.join("nanodet_m_416_coco.onnx").is_file(),
        "no models in {}: run `bash scripts/setup.sh` (or set PANOPTES_MODELS_DIR)",
        d.display()
    );
    d
}

/// `panoptes token --role ROLE --name NAME`: (token, tokens-file line).
pub fn make_token(role: &str, name: &str) -> (String, String) {
    let out = Command::new(bin()).args(["token", "--role", role, "--name", name]).output().expect("run panoptes token");
    assert!(out.status.success(), "panoptes token: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let token = lines.next().and_then(|l| l.strip_prefix("token: ")).expect("a `token: ...` line").to_string();
    let line = lines.next().expect("a tokens-file line").to_string();
    assert!(line.starts_with(&format!("{role} {name} ")), "{line}");
    assert!(!line.contains(&token), "the tokens-file line holds the hash, not the token");
    (token, line)
}

/// Make a test video with the FFmpeg CLI: `frames` frames of testsrc at 25 fps, a keyframe every `gop`.
pub fn make_video(path: &Path, frames: u32, size: &str, gop: u32) {
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", &format!("testsrc=size={size}:rate=25")])
        .args(["-frames:v", &frames.to_string(), "-c:v", "libx264", "-preset", "ultrafast", "-g", &gop.to_string(), "-bf", "2", "-pix_fmt", "yuv420p"])
        .arg(path)
        .status()
        .expect("run ffmpeg");
    assert!(st.success(), "ffmpeg failed to make {}", path.display());
}

/// A `panoptes` process; killed (SIGKILL) when dropped.
pub struct Node {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    pub first_line: String,
    /// Its `--data-dir`, where it writes `addresses.json`.
    pub data_dir: Option<PathBuf>,
}

impl Node {
    pub fn spawn(name: &str, args: &[String], log: &Path) -> Node {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        Self::spawn_command(name, cmd, log)
    }

    /// Start `cmd` (a `panoptes` command line, possibly wrapped, e.g. by
    /// `ip netns exec`), stderr to `log`, and wait (bounded) for its first
    /// line on stdout.
    pub fn spawn_command(name: &str, mut cmd: Command, log: &Path) -> Node {
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let data_dir = args.iter().position(|a| a == "--data-dir").and_then(|i| args.get(i + 1)).map(PathBuf::from);
        let logf = std::fs::File::create(log).expect("create log");
        if !cmd.get_envs().any(|(k, _)| k == "PANOPTES_LOG_LEVEL") {
            cmd.env("PANOPTES_LOG_LEVEL", "info");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            if let Some(l) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let first_line = match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} did not start; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
            }
        };
        Node { name: name.to_string(), child, log: log.to_path_buf(), first_line, data_dir }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send a signal by name (e.g. "STOP", "CONT") to the process.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.name);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A local cluster: one coordinator and named workers, in a temp dir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// Every coordinator address, comma-separated (what clients and workers get).
    pub addr: String,
    /// Coordinator `id` is `coordinators[id - 1]`.
    pub coordinators: Vec<Option<Node>>,
    pub coordinator_addrs: Vec<String>,
    pub workers: Vec<Node>,
    /// The bearer token the CLI helpers pass (PANOPTES_TOKEN); None in plain mode.
    pub token: Option<String>,
    _lock: MutexGuard<'static, ()>,
}

/// A free TCP port on 127.0.0.1 (bound, then released), for a node's
/// `--listen`. Taken from 10000-19999, below Linux's ephemeral range
/// (32768-60999): a port in that range can be taken as the local port of an
/// outgoing connection between this check and the node's own bind, or
/// while a killed node is down before its restart; worst, peers retrying a
/// connection to a node that is not up yet can connect to themselves
/// (TCP self-connect on loopback) and hold its port. That failed a CI run
/// with "Address already in use" (admin b01, coordinator-3). The derived ports
/// (+10000 metrics, +20000 web) then fall in 20000-39999, and those fall
/// back to any free port when taken.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
        ^ ((std::process::id() as u64) << 20);
    for _ in 0..1000 {
        // SplitMix64 over a shared counter: distinct tries, spread over the range.
        let mut z = seed.wrapping_add(NEXT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let port = 10_000 + ((z ^ (z >> 31)) % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 10000-19999 on 127.0.0.1 after 1000 tries")
}

pub const TEST_CONFIG: &str = r#"
[cluster]
shard_frames = 20
lease_timeout_ms = 4000
heartbeat_interval_ms = 500


[coordinator]
# Snapshot (and compact the Raft log) often, so every test crosses snapshots.
snapshot_logs = 10

[worker]
report_batch = 4
pipeline_depth = 8

[sources]
# Test sources are served from this machine's loopback.
allow_networks = ["127.0.0.1", "::1"]
# Test videos are made in temporary directories; clusters with tokens must
# name the directories explicitly (this is the default without tokens).
file_dirs = ["/"]
"#;

// ---------------------------------------------------------------------------
// TLS: every test cluster serves gRPC over TLS and requires client
// certificates, unless PANOPTES_TEST_TLS=0 (for debugging with plain-text
// tools). Nodes get the `[security]` lines; the CLI gets PANOPTES_TLS_*.

/// Are the test clusters on TLS? (`PANOPTES_TEST_TLS=0` turns it off.)
pub fn tls_on() -> bool {
    std::env::var("PANOPTES_TEST_TLS").map(|v| v != "0").unwrap_or(true)
}

/// A set of certificates made by `panoptes certs`.
#[derive(Clone, Debug)]
pub struct Tls {
    pub dir: PathBuf,
}

impl Tls {
    /// A new CA and node/client certificates in `dir`, the node certificate
    /// valid for localhost, 127.0.0.1, ::1 and `hosts`.
    pub fn make(dir: &Path, hosts: &[&str]) -> Tls {
        let mut cmd = Command::new(bin());
        cmd.args(["certs", "--out"]).arg(dir);
        if !hosts.is_empty() {
            cmd.args(["--hosts", &hosts.join(",")]);
        }
        let out = cmd.output().expect("run panoptes certs");
        assert!(out.status.success(), "panoptes certs failed: {}", String::from_utf8_lossy(&out.stderr));
        Tls { dir: dir.to_path_buf() }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The `[security]` lines of a node: TLS with its node certificate,
    /// client certificates required. The web UI port stays plain HTTP
    /// (`web_plain_http`): the web tests use a plain HTTP client, and
    /// `tests/tests/web_tls.rs` covers the web UI over HTTPS.
    pub fn node_lines(&self) -> String {
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_ca = \"{}\"\nrequire_client_cert = true\nweb_plain_http = true\n",
            self.path("node.pem"),
            self.path("node.key"),
            self.path("ca.pem")
        )
    }

    /// Point a `panoptes` client command at these certificates.
    pub fn client_env(&self, cmd: &mut Command) {
        cmd.env("PANOPTES_TLS_CA", self.path("ca.pem")).env("PANOPTES_TLS_CERT", self.path("client.pem")).env("PANOPTES_TLS_KEY", self.path("client.key"));
    }
}

/// The certificates of this test process's clusters (made once), or `None`
/// when TLS is off.
pub fn test_tls() -> Option<&'static Tls> {
    static TLS: std::sync::OnceLock<Option<(tempfile::TempDir, Tls)>> = std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        tls_on().then(|| {
            let d = tempfile::tempdir().expect("tempdir");
            let t = Tls::make(d.path(), &[]);
            (d, t)
        })
    })
    .as_ref()
    .map(|(_, t)| t)
}

/// `config` with `lines` added to its `[security]` table (which is added
/// when missing).
pub fn with_security(config: &str, lines: &str) -> String {
    if lines.is_empty() {
        return config.to_string();
    }
    match config.find("\n[security]\n") {
        Some(i) => {
            let at = i + "\n[security]\n".len();
            format!("{}{lines}{}", &config[..at], &config[at..])
        }
        None => format!("{config}\n[security]\n{lines}"),
    }
}

/// [`TEST_CONFIG`] followed by `extra`, with this process's TLS settings.
pub fn test_config(extra: &str) -> String {
    with_security(&format!("{TEST_CONFIG}{extra}"), &test_tls().map(|t| t.node_lines()).unwrap_or_default())
}

/// A `panoptes` command with the test clusters' client TLS settings.
pub fn client_command() -> Command {
    let mut cmd = Command::new(bin());
    if let Some(t) = test_tls() {
        t.client_env(&mut cmd);
    }
    cmd
}

/// A gRPC endpoint for `addr` with the test clusters' client TLS settings
/// (for tests that call the API directly).
pub fn grpc_endpoint(addr: &str) -> tonic::transport::Endpoint {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        if let Some(t) = test_tls() {
            panoptes_proto::tls::install_client(&t.path("ca.pem"), &t.path("client.pem"), &t.path("client.key")).expect("test client TLS");
        }
    });
    panoptes_proto::tls::endpoint(addr).expect("endpoint")
}

impl Cluster {
    pub fn start(workers: &[&str]) -> Cluster {
        Self::start_replicated(1, workers)
    }

    /// `n` coordinators forming one Raft cluster, and the named workers.
    pub fn start_replicated(n: u64, workers: &[&str]) -> Cluster {
        Self::start_with(n, workers, "", None)
    }

    /// One coordinator with `extra` appended to the test config (e.g. a
    /// `[security]` block naming files in `dir`), the CLI helpers passing
    /// `token`. `prepare` writes those files into the cluster directory first.
    pub fn start_secure(workers: &[&str], token: &str, prepare: impl FnOnce(&std::path::Path) -> String) -> Cluster {
        Self::start_secure_replicated(1, workers, token, prepare)
    }

    /// [`Cluster::start_secure`] with `n` coordinators.
    pub fn start_secure_replicated(n: u64, workers: &[&str], token: &str, prepare: impl FnOnce(&std::path::Path) -> String) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra = prepare(dir.path());
        Self::start_in(dir, n, workers, &extra, Some(token.to_string()))
    }

    /// `n` coordinators and the named workers, `extra` appended to the test config.
    pub fn start_configured(n: u64, workers: &[&str], extra: &str) -> Cluster {
        Self::start_with(n, workers, extra, None)
    }

    fn start_with(n: u64, workers: &[&str], extra: &str, token: Option<String>) -> Cluster {
        Self::start_in(tempfile::tempdir().expect("tempdir"), n, workers, extra, token)
    }

    fn start_in(dir: tempfile::TempDir, n: u64, workers: &[&str], extra: &str, token: Option<String>) -> Cluster {
        let lock = cluster_lock();
        std::fs::write(dir.path().join("cluster.toml"), test_config(extra)).unwrap();
        let addrs: Vec<String> = (0..n).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let mut c = Cluster {
            dir,
            addr: addrs.join(","),
            coordinators: (0..n).map(|_| None).collect(),
            coordinator_addrs: addrs,
            workers: Vec::new(),
            token,
            _lock: lock,
        };
        for id in 1..=n {
            c.start_coordinator(id);
        }
        c.leader(); // a brand-new cluster first elects its leader
        for w in workers {
            c.start_worker(w);
        }
        c
    }

    fn cfg(&self) -> String {
        self.dir.path().join("cluster.toml").display().to_string()
    }

    pub fn start_coordinator(&mut self, id: u64) {
        self.start_coordinator_env(id, &[]);
    }

    /// Start coordinator `id` with these extra environment variables (e.g.
    /// `PANOPTES_CRASH_AT`, coordinator/src/crash.rs).
    pub fn start_coordinator_env(&mut self, id: u64, env: &[(&str, &str)]) {
        let peers: Vec<String> = self.coordinator_addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let listen = self.coordinator_addrs[id as usize - 1].clone();
        let args: Vec<String> = vec![
            "coordinator".into(),
            "--config".into(),
            self.cfg(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            listen,
            "--peers".into(),
            peers.join(","),
            "--data-dir".into(),
            self.dir.path().join(format!("c{id}")).display().to_string(),
        ];
        let mut cmd = Command::new(bin());
        cmd.args(&args).envs(env.iter().copied());
        let n = Node::spawn_command(&format!("coordinator-{id}"), cmd, &self.dir.path().join(format!("coordinator-{id}-{}.log", now_id())));
        self.coordinators[id as usize - 1] = Some(n);
    }

    /// Wait (bounded) for coordinator `id` to exit by itself; returns its log.
    pub fn wait_coordinator_exit(&mut self, id: u64, limit: Duration) -> String {
        let node = self.coordinators[id as usize - 1].as_mut().expect("coordinator running");
        let deadline = Instant::now() + limit;
        while node.child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < deadline, "coordinator {id} did not exit within {limit:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = node.log_text();
        self.coordinators[id as usize - 1] = None;
        log
    }

    /// `kill -9` coordinator `id`.
    pub fn kill_coordinator(&mut self, id: u64) {
        if let Some(mut c) = self.coordinators[id as usize - 1].take() {
            c.kill9();
        }
    }

    /// `kill -9` the coordinator and start it again on the same address and data.
    pub fn restart_coordinator(&mut self) {
        self.kill_coordinator(1);
        self.start_coordinator(1);
    }

    /// The current Raft leader's id, as a live coordinator reports it (bounded wait).
    pub fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.cli(&["cluster", "status", "--json"]);
            if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                if let Some(l) = v["leader"].as_u64().filter(|l| *l > 0) {
                    return l;
                }
            }
            assert!(Instant::now() < deadline, "no leader elected\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The log of coordinator `id` (empty if it is not running).
    pub fn coordinator_log(&self, id: u64) -> String {
        self.coordinators[id as usize - 1].as_ref().map(|n| n.log_text()).unwrap_or_default()
    }

    pub fn start_worker(&mut self, name: &str) {
        let cfg = self.cfg();
        self.start_worker_with_config(name, &cfg);
    }

    /// Start worker `name` running `capacity` shards (live streams) at once.
    pub fn start_worker_with_capacity(&mut self, name: &str, capacity: u32) {
        let cfg = self.cfg();
        self.start_worker_args(name, &cfg, &["--capacity", &capacity.to_string()]);
    }

    /// Start worker `name` with its own config file (e.g. another `[security]`).
    pub fn start_worker_with_config(&mut self, name: &str, config: &str) {
        self.start_worker_args(name, config, &[]);
    }

    fn start_worker_args(&mut self, name: &str, config: &str, extra: &[&str]) {
        let mut args: Vec<String> = vec![
            "worker".into(),
            "--config".into(),
            config.into(),
            "--name".into(),
            name.into(),
            "--coordinator".into(),
            self.addr.clone(),
            "--models-dir".into(),
            models_dir().display().to_string(),
            "--data-dir".into(),
            self.dir.path().join(name).display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let n = Node::spawn(name, &args, &self.dir.path().join(format!("{name}.log")));
        self.workers.push(n);
    }

    /// Run the CLI against this cluster.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_at(&self.addr, args)
    }

    /// Run the CLI and parse its stdout as one JSON value.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{args:?}: not JSON ({e}); stdout={} stderr={}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        })
    }

    /// Wait (bounded) until `cluster status` lists `n` workers.
    pub fn wait_workers(&self, n: usize) {
        wait_for(&format!("{n} worker(s) to register"), Duration::from_secs(30), || {
            let s = self.cli_json(&["cluster", "status", "--json"]);
            (s["workers"].as_array().map_or(0, |w| w.len()) == n).then_some(())
        });
    }

    /// Wait (bounded) until worker `i` listens for the publisher of the
    /// live push URL `url` (its lease started); the URL's port.
    pub fn wait_push_listening(&self, i: usize, url: &str) -> u16 {
        let port: u16 = url.rsplit_once(':').and_then(|(_, r)| r.split('/').next()?.parse().ok()).unwrap_or_else(|| panic!("no port in {url}"));
        wait_for("the worker to listen for the publisher", Duration::from_secs(30), || {
            self.workers[i].log_text().contains(&format!(":{port}/live/")).then_some(())
        });
        port
    }

    /// Poll `status --json` until the job is finished (bounded).
    pub fn wait_finished(&self, job: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.cli_json(&["status", job, "--json"]);
            if matches!(s["state"].as_str(), Some("completed" | "failed" | "cancelled")) {
                return s;
            }
            assert!(Instant::now() < deadline, "job {job} not finished after {limit:?}: {s}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `results --json` as parsed lines.
    pub fn results(&self, job: &str) -> Vec<Value> {
        let out = self.cli(&["results", job, "--json"]);
        assert!(out.status.success(), "results failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
    }

    /// The job's analysed frame numbers, asserting that each has exactly one
    /// result (jobs of one model).
    pub fn frames_once(&self, job: &str) -> std::collections::BTreeSet<u64> {
        let frames: Vec<u64> = self.results(job).iter().map(|r| r["frame"].as_u64().unwrap()).collect();
        let unique: std::collections::BTreeSet<u64> = frames.iter().copied().collect();
        assert_eq!(unique.len(), frames.len(), "a frame of {job} has two results");
        unique
    }

    /// One series of worker `i`'s Prometheus metrics, written exactly as
    /// rendered (name and labels); 0 when absent.
    pub fn worker_metric(&self, i: usize, series: &str) -> f64 {
        let (_, text) = http_get(&metrics_addr(&self.workers[i]), "/metrics");
        sample(&text, series).unwrap_or(0.0)
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in self.coordinators.iter().flatten().chain(self.workers.iter()) {
            let t = n.log_text();
            let tail: Vec<&str> = t.lines().rev().take(30).collect();
            s.push_str(&format!("--- {} (last lines)\n{}\n", n.name, tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
        s
    }
}

fn now_id() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

// ---------------------------------------------------------------------------
// Admin helpers (tests/tests/admin.rs): membership changes and per-member calls.

impl Cluster {
    /// Start one more coordinator, with the next id and a fresh port, as a
    /// member joining the running cluster (`--join`: it never initialises a
    /// cluster of its own). Clients (`addr`) do not list it. Returns its id and address.
    pub fn start_joining_coordinator(&mut self) -> (u64, String) {
        let addr = format!("127.0.0.1:{}", free_port());
        self.coordinator_addrs.push(addr.clone());
        self.coordinators.push(None);
        let id = self.coordinators.len() as u64;
        let peers: Vec<String> = self.coordinator_addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let dir = self.dir.path().join(format!("c{id}")).display().to_string();
        let args: Vec<String> = ["coordinator", "--config", &self.cfg(), "--id", &id.to_string(), "--listen", &addr, "--peers", &peers.join(","), "--data-dir", &dir, "--join"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let log = self.dir.path().join(format!("coordinator-{id}-{}.log", now_id()));
        self.coordinators[id as usize - 1] = Some(Node::spawn(&format!("coordinator-{id}"), &args, &log));
        (id, addr)
    }

    /// Run the CLI against one coordinator only.
    pub fn cli_at(&self, addr: &str, args: &[&str]) -> Output {
        self.cli_command_at(addr, args).output().expect("run panoptes")
    }

    /// The CLI command [`Cluster::cli`] runs, to spawn it (a command that
    /// runs on, such as `--follow`).
    pub fn cli_command(&self, args: &[&str]) -> Command {
        self.cli_command_at(&self.addr, args)
    }

    fn cli_command_at(&self, addr: &str, args: &[&str]) -> Command {
        let mut cmd = client_command();
        cmd.args(args).args(["--coordinator", addr]);
        if let Some(t) = &self.token {
            cmd.env("PANOPTES_TOKEN", t);
        }
        cmd
    }

    /// A job's results (JSON lines) and status as coordinator `addr` itself
    /// holds them; `None` while it cannot answer.
    pub fn held_by(&self, addr: &str, job: &str) -> Option<(Vec<Value>, Value)> {
        let out = self.cli_at(addr, &["results", job, "--json"]);
        if !out.status.success() {
            return None;
        }
        let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
        let s: Value = serde_json::from_slice(&self.cli_at(addr, &["status", job, "--json"]).stdout).ok()?;
        Some((rows, s))
    }
}

/// A 3-coordinator cluster (worker `w1`) whose follower was killed while a
/// job of `frames` 96x64 frames, each with its stored picture, committed
/// (~frames/4 reports). With the test config's `snapshot_logs = 10` the
/// leader compacts what the follower lacks: it can catch up only by a
/// snapshot. The follower stays down.
pub struct FollowerAway {
    pub c: Cluster,
    pub leader: u64,
    pub follower: u64,
    pub leader_addr: String,
    pub follower_addr: String,
    /// The completed job's id.
    pub job: String,
}

pub fn follower_away_during_a_job(frames: u32) -> FollowerAway {
    let mut c = Cluster::start_replicated(3, &["w1"]);
    let leader = c.leader();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let follower_addr = c.coordinator_addrs[follower as usize - 1].clone();
    let leader_addr = c.coordinator_addrs[leader as usize - 1].clone();
    c.kill_coordinator(follower);
    let video = c.dir.path().join("while-away.mp4");
    make_video(&video, frames, "96x64", 25);
    // A picture of every frame: the snapshot the follower needs is large.
    let s = c.cli_json(&["submit", video.to_str().unwrap(), "--models", "colors", "--pictures-every", "0", "--wait", "--json"]);
    assert_eq!(s["state"], "completed", "{s}\n{}", c.logs());
    let job = s["job_id"].as_str().unwrap().to_string();
    FollowerAway { c, leader, follower, leader_addr, follower_addr, job }
}

// ---- HTTP and metrics helpers (plain TCP, no HTTP client crate) ----

/// `GET path` over HTTP/1.1 on a plain TCP stream: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_get_with(addr, path, &[])
}

/// [`http_get`] with extra request headers (`("authorization", "Bearer …")`).
pub fn http_get_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    http_request(addr, "GET", path, headers, None)
}

/// `METHOD path` with extra headers and an optional body (sent as
/// `application/octet-stream`): (status code, body).
pub fn http_request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    if let Some(b) = body {
        extra.push_str(&format!("Content-Type: application/octet-stream\r\nContent-Length: {}\r\n", b.len()));
    }
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n").unwrap();
    if let Some(b) = body {
        s.write_all(b).unwrap();
    }
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap_or_else(|e| panic!("read {method} {path} from {addr}: {e}"));
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP head in: {resp}"));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad status line: {head}"));
    (status, body.to_string())
}

/// Call `f` until it returns something, for at most `limit` (a bound, not a timing assertion).
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The address `node` wrote under `name` in its `addresses.json` (its data
/// directory; `panoptes_common::addresses`), bounded wait. Addresses are
/// read from there, not from logs.
pub fn node_address(node: &Node, name: &str, limit: Duration) -> String {
    let dir = node.data_dir.as_ref().unwrap_or_else(|| panic!("{} was started without --data-dir", node.name));
    wait_for(&format!("{} to write '{name}' in {}", node.name, dir.join(panoptes_common::addresses::FILE).display()), limit, || {
        panoptes_common::addresses::read(dir).get(name).cloned()
    })
}

/// A node's metrics address (HOST:PORT), from its `addresses.json`.
pub fn metrics_addr(node: &Node) -> String {
    node_address(node, "metrics", Duration::from_secs(60))
}

/// The web UI's address, from coordinator 1's log ("web UI on http://ADDR/").
pub fn web_addr(c: &Cluster) -> String {
    let node = c.coordinators[0].as_ref().expect("coordinator 1 is running");
    let url = node_address(node, "web", Duration::from_secs(30));
    url.strip_prefix("http://").unwrap_or_else(|| panic!("the web page is not on plain http: {url}")).trim_end_matches('/').to_string()
}

/// The value of one Prometheus series, written exactly as rendered (name and labels).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Start the FFmpeg CLI pushing `seconds` of a generated `size` test pattern
/// at 25 fps, in real time (`-re`), to the RTMP `url` (live tests).
pub fn push_stream(url: &str, size: &str, seconds: u32) -> Child {
    Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", &format!("testsrc=size={size}:rate=25")])
        .args(["-t", &seconds.to_string(), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run ffmpeg (is the FFmpeg CLI installed?)")
}

/// Push the encoded file `clip` (FLV, H.264) to `url` in real time
/// (`-re`), its packets as they are (`-c copy`): the worker decodes exactly
/// the frames `panoptes analyze` decodes from the file.
pub fn push_file(url: &str, clip: &Path) -> Child {
    Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-re", "-i"])
        .arg(clip)
        .args(["-c", "copy", "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run ffmpeg (is the FFmpeg CLI installed?)")
}

/// The fixture `astronaut_zoom.mkv` (a person in every frame) as H.264 in
/// FLV in `dir`, for an RTMP push (`push_file`).
pub fn astronaut_flv(dir: &Path) -> PathBuf {
    let clip = dir.join("astronaut.flv");
    let made = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(fixture("astronaut_zoom.mkv"))
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "12", "-pix_fmt", "yuv420p", "-f", "flv"])
        .arg(&clip)
        .status()
        .expect("run ffmpeg");
    assert!(made.success(), "ffmpeg could not make {}", clip.display());
    clip
}

/// The astronaut fixture looped `loops` times, blacked out in frames n with
/// n % 12 < 6 (lossless): runs of 6 frames with a person and 6 without, for
/// alert rules (`tests/tests/alerts.rs`, `events.rs`).
pub fn blinking_clip(dir: &Path, loops: u32) -> PathBuf {
    let out = dir.join(format!("blinking-{loops}.mkv"));
    let st = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-stream_loop", &(loops - 1).to_string(), "-i"])
        .arg(fixture("astronaut_zoom.mkv"))
        .args(["-vf", "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='lt(mod(n\\,12)\\,6)'", "-c:v", "ffv1", "-g", "12"])
        .arg(&out)
        .status()
        .expect("run ffmpeg");
    assert!(st.success(), "ffmpeg could not make {}", out.display());
    out
}

/// (rule, frame, since in seconds) of every alert `rules` give on `clip`
/// analysed with `objects` in one process (`panoptes analyze`), by the
/// cluster's own rule code.
pub fn expected_alerts(clip: &Path, rules: &[&str]) -> Vec<(String, u64, f64)> {
    expected_analytics(clip, rules, &[]).0
}

/// What the leader must record for `clip` analysed with `objects`, these
/// rules and zones: its alerts as (rule, frame, since), and its track
/// events as (change, track, zone, frame), computed by the same code over
/// `panoptes analyze` in one process.
pub fn expected_analytics(clip: &Path, rules: &[&str], zones: &[&str]) -> (Vec<(String, u64, f64)>, Vec<(String, u64, Option<String>, u64)>) {
    use panoptes_common::rules::{Rule, RuleState};
    use panoptes_common::zones::Zone;
    let a = Command::new(bin()).args(["analyze", clip.to_str().unwrap(), "--models", "objects", "--json", "--models-dir"]).arg(models_dir()).output().unwrap();
    assert!(a.status.success(), "analyze: {}", String::from_utf8_lossy(&a.stderr));
    let rules: Vec<Rule> = rules.iter().map(|r| Rule::parse(r).unwrap()).collect();
    let zones: Vec<Zone> = zones.iter().map(|z| Zone::parse(z).unwrap()).collect();
    let zones: Vec<&Zone> = zones.iter().collect();
    let size = clip_size(clip);
    let mut states = vec![RuleState::default(); rules.len()];
    let mut tracker = panoptes_common::tracking::JobTracker::default();
    let (mut alerts, mut events) = (Vec::new(), Vec::new());
    for l in String::from_utf8_lossy(&a.stdout).lines() {
        let r: Value = serde_json::from_str(l).unwrap();
        let mut rows = vec![("objects", r["results"].clone())];
        let out = panoptes_common::analytics::frame(&mut tracker, &rules, &mut states, r["frame"].as_u64().unwrap(), r["timestamp"].as_f64().unwrap(), &mut rows, &zones, Some(size)).unwrap();
        alerts.extend(out.fired.into_iter().map(|f| (f.rule, f.frame, f.since_ms as f64 / 1000.0)));
        events.extend(out.events);
    }
    events.extend(tracker.close());
    (alerts, events.into_iter().map(|e| (e.change.as_str().to_string(), e.track, e.zone, e.frame)).collect())
}

/// A clip's frame size, by ffprobe.
pub fn clip_size(clip: &Path) -> (u32, u32) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0"])
        .arg(clip)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    let (w, h) = text.trim().split_once(',').unwrap_or_else(|| panic!("ffprobe of {}: {text}", clip.display()));
    (w.parse().unwrap(), h.parse().unwrap())
}

/// Wait (bounded by `limit`, then killed) for a push to end; whether it succeeded.
pub fn finish_push(mut c: Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st.success();
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Cluster {
    /// One coordinator and worker `w1`, whose config has this `[live]` section.
    pub fn start_with_live(live: &str) -> Cluster {
        Self::start_with_live_worker(live, &[])
    }

    /// [`Cluster::start_with_live`], the worker started with these extra flags.
    pub fn start_with_live_worker(live: &str, worker_args: &[&str]) -> Cluster {
        let mut c = Cluster::start(&[]);
        let cfg = c.dir.path().join("cluster.toml");
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push_str(&format!("\n[live]\n{live}\n"));
        std::fs::write(&cfg, text).unwrap();
        let worker_cfg = c.cfg();
        c.start_worker_args("w1", &worker_cfg, worker_args);
        wait_for("a worker", Duration::from_secs(30), || {
            let s = c.cli_json(&["cluster", "status", "--json"]);
            (s["workers"].as_array().map_or(0, |w| w.len()) == 1).then_some(())
        });
        c
    }
}
