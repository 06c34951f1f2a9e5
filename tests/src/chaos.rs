//! The chaos suite: a seeded random schedule of faults against a real cluster, and the invariant checker.
//!
//! One run: 3 coordinators (Raft, sled) and 3 workers, several jobs at once,
//! and a schedule drawn from the seed — `kill -9` of a worker or of the Raft
//! leader then a restart, SIGSTOP of a worker past its lease then SIGCONT,
//! a short SIGSTOP of the leader, a follower restarted, and (where network
//! namespaces can be created) a network partition of one worker past its
//! lease and of the current leader.
//! Afterwards [`Outcome::violations`] lists every broken invariant:
//! every job completed; every (frame, model) result present exactly once and
//! equal to a fault-free `panoptes analyze`; every result observed during the
//! run still present at the end; no two leases of a job ever covered the same
//! frames at once (from the lease events the coordinators log, `lease=grant|release|split`,
//! as the state machine applies them: `state/outcome.rs`).
//! Everything is printed with the seed and the command that replays it.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{bin, cluster_lock, make_video, models_dir, tls_on, with_security, workspace, Node, Tls, TEST_CONFIG};

/// The lease timeout of [`TEST_CONFIG`] (`cluster.lease_timeout_ms`).
const LEASE_TIMEOUT_MS: u64 = 4000;

// ---------------------------------------------------------------------------
// Seeded randomness and the schedule.

/// SplitMix64: tiny, seedable, good enough to draw a schedule.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.next_u64() as usize % xs.len()]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// `kill -9` a worker, restart it after `hold`.
    KillWorker,
    /// `kill -9` the current Raft leader, restart it after `hold`.
    KillLeader,
    /// SIGSTOP a worker past the lease timeout, then SIGCONT.
    StopWorker,
    /// SIGSTOP the leader for `hold` (shorter or longer than an election), then SIGCONT.
    StopLeader,
    /// `kill -9` a follower and restart it at once (it catches up from disk and the leader).
    RestartFollower,
    /// Cut the namespaced worker's link past the lease timeout, then restore it.
    PartitionWorker,
    /// Cut the current leader's link for `hold` (shorter or longer than an
    /// election), then restore it.
    PartitionLeader,
}

pub const KINDS: [FaultKind; 7] = [
    FaultKind::KillWorker,
    FaultKind::KillLeader,
    FaultKind::StopWorker,
    FaultKind::StopLeader,
    FaultKind::RestartFollower,
    FaultKind::PartitionWorker,
    FaultKind::PartitionLeader,
];

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillWorker => "kill-worker",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::StopWorker => "stop-worker",
            FaultKind::StopLeader => "stop-leader",
            FaultKind::RestartFollower => "restart-follower",
            FaultKind::PartitionWorker => "partition-worker",
            FaultKind::PartitionLeader => "partition-leader",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Worker index for worker faults; a pick among followers for `RestartFollower`.
    pub target: usize,
    /// Pause before the fault.
    pub delay_ms: u64,
    /// How long the fault lasts (down, stopped or partitioned).
    pub hold_ms: u64,
}

/// `n` faults drawn from the seed. The first ones go through every kind once
/// (in a seeded order) so that even a short schedule mixes kinds.
pub fn schedule(seed: u64, n: usize, workers: usize) -> Vec<Fault> {
    let mut rng = Rng::new(seed);
    let mut kinds = KINDS.to_vec();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.range(0, i as u64) as usize);
    }
    (0..n)
        .map(|i| {
            let kind = if i < kinds.len() { kinds[i] } else { *rng.pick(&KINDS) };
            let hold_ms = match kind {
                FaultKind::KillWorker => rng.range(300, 3000),
                FaultKind::KillLeader => rng.range(500, 4000),
                FaultKind::StopWorker | FaultKind::PartitionWorker => LEASE_TIMEOUT_MS + rng.range(1000, 4000),
                FaultKind::StopLeader => rng.range(300, 3000),
                FaultKind::PartitionLeader => rng.range(1000, LEASE_TIMEOUT_MS + 2000),
                FaultKind::RestartFollower => rng.range(0, 2000),
            };
            Fault { kind, target: rng.range(0, workers as u64 - 1) as usize, delay_ms: rng.range(500, 3000), hold_ms }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Clips, jobs and the fault-free reference.

#[derive(Clone, Copy, Debug)]
pub struct Clip {
    pub name: &'static str,
    pub frames: u64,
    pub size: &'static str,
    pub gop: u32,
}

pub const CLIPS: [Clip; 2] = [Clip { name: "a", frames: 240, size: "320x240", gop: 10 }, Clip { name: "b", frames: 160, size: "256x192", gop: 8 }];
/// The long job of [`Options::long`]: 8 minutes of 25 fps video, 600 shards
/// of the tests' 20 frames, analysed with `colors` only (its reference is
/// quick to compute). It is submitted first and runs through every fault, so
/// the faults meet a job whose log is compacted into snapshots many times
/// over, and snapshots that members install while it runs.
pub const LONG_CLIP: Clip = Clip { name: "long", frames: 12_000, size: "160x120", gop: 25 };
const LONG_MODELS: &str = "colors";
const MODEL_SETS: [&str; 3] = ["objects,colors", "colors", "objects"];

#[derive(Clone, Debug)]
pub struct JobSpec {
    pub clip: Clip,
    pub models: &'static str,
    pub step: u64,
}

/// `n` jobs drawn from the seed (a stream independent of the schedule's).
pub fn jobs(seed: u64, n: usize) -> Vec<JobSpec> {
    let mut rng = Rng::new(seed ^ 0x6A09_E667_F3BC_C908);
    (0..n).map(|i| JobSpec { clip: CLIPS[i % CLIPS.len()], models: *rng.pick(&MODEL_SETS), step: *rng.pick(&[1, 2, 3]) }).collect()
}

type Key = (u64, String);

/// The clip file and its fault-free results for every model at step 1
/// (`objects,colors`; `colors` for [`LONG_CLIP`]), cached under
/// `target/chaos-ref/` and recomputed when the `panoptes` binary is newer.
fn reference(clip: &Clip) -> (PathBuf, BTreeMap<Key, Value>) {
    let models = if clip.name == LONG_CLIP.name { LONG_MODELS } else { "objects,colors" };
    let dir = workspace().join("target").join("chaos-ref");
    std::fs::create_dir_all(&dir).expect("create target/chaos-ref");
    let tag = format!("{}-{}-{}-g{}", clip.name, clip.frames, clip.size, clip.gop);
    let video = dir.join(format!("{tag}.mp4"));
    let refs = dir.join(format!("{tag}.jsonl"));
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if !video.exists() {
        make_video(&video, clip.frames as u32, clip.size, clip.gop);
    }
    if mtime(&refs).is_none() || mtime(&refs) < mtime(&bin()) {
        let out = Command::new(bin())
            .args(["analyze", video.to_str().unwrap(), "--models", models, "--json", "--models-dir"])
            .arg(models_dir())
            .output()
            .expect("run panoptes analyze");
        assert!(out.status.success(), "reference analyze of {} failed: {}", video.display(), String::from_utf8_lossy(&out.stderr));
        std::fs::write(&refs, &out.stdout).expect("write reference");
    }
    let text = std::fs::read_to_string(&refs).expect("read reference");
    let map: BTreeMap<Key, Value> = text.lines().map(|l| serde_json::from_str::<Value>(l).expect("reference line")).map(|v| (key(&v), v)).collect();
    assert_eq!(map.len() as u64, clip.frames * models.split(',').count() as u64, "reference {} is incomplete: delete it and rerun", refs.display());
    (video, map)
}

fn key(v: &Value) -> Key {
    (v["frame"].as_u64().unwrap_or(u64::MAX), v["model"].as_str().unwrap_or("?").to_string())
}

/// The results a fault-free run of `job` gives.
fn expected(job: &JobSpec, reference: &BTreeMap<Key, Value>) -> BTreeMap<Key, Value> {
    let models: Vec<&str> = job.models.split(',').collect();
    reference.iter().filter(|((f, m), _)| f % job.step == 0 && models.contains(&m.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

// ---------------------------------------------------------------------------
// Network namespace for partitions.

/// The suite's network, where `ip netns` works (root): a bridge on the host,
/// and a network namespace for each coordinator and for the last worker,
/// each joined to the bridge by a veth pair. Setting a node's host-side veth
/// down cuts it off from every other node and from the CLI (a partition);
/// the other workers and the CLI run on the host and reach the coordinators
/// over the bridge. Everything made is removed on drop.
struct Net {
    bridge: String,
    /// The bridge's address (the namespaces' default gateway).
    gateway: String,
    /// Coordinators 1..=3, then the worker.
    nodes: Vec<NsNode>,
}

struct NsNode {
    ns: String,
    /// Host side of the veth pair (on the bridge).
    veth: String,
    ip: String,
}

/// Index of the worker's namespace in [`Net::nodes`].
const NET_WORKER: usize = 3;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn ip_line(line: &str) -> Result<(), String> {
    ip(&line.split_whitespace().collect::<Vec<_>>())
}

impl Net {
    fn create() -> Result<Net, String> {
        if std::env::var("PANOPTES_CHAOS_NETNS").as_deref() == Ok("0") {
            return Err("disabled by PANOPTES_CHAOS_NETNS=0".into());
        }
        let pid = std::process::id();
        let x = pid % 200 + 20;
        let gateway = format!("10.215.{x}.1");
        let mut net = Net { bridge: format!("pcb{pid}"), gateway: gateway.clone(), nodes: Vec::new() };
        // On any error `net` drops and removes what was made so far.
        ip_line(&format!("link add {} type bridge", net.bridge))?;
        ip_line(&format!("addr add {gateway}/24 dev {}", net.bridge))?;
        ip_line(&format!("link set {} up", net.bridge))?;
        for (i, name) in ["c1", "c2", "c3", "w"].iter().enumerate() {
            let node = NsNode { ns: format!("pchaos{pid}{name}"), veth: format!("pc{pid}{name}h"), ip: format!("10.215.{x}.{}", 11 + i) };
            let peer = format!("pc{pid}{name}n");
            let (ns, veth, addr) = (node.ns.clone(), node.veth.clone(), node.ip.clone());
            ip_line(&format!("netns add {ns}"))?;
            net.nodes.push(node);
            for step in [
                format!("link add {veth} type veth peer name {peer}"),
                format!("link set {veth} master {}", net.bridge),
                format!("link set {veth} up"),
                format!("link set {peer} netns {ns}"),
                format!("-n {ns} addr add {addr}/24 dev {peer}"),
                format!("-n {ns} link set {peer} up"),
                format!("-n {ns} link set lo up"),
                format!("-n {ns} route add default via {gateway}"),
            ] {
                ip_line(&step)?;
            }
        }
        Ok(net)
    }

    /// Cut (`false`) or restore (`true`) node `i`'s only link.
    fn link(&self, i: usize, up: bool) {
        let n = &self.nodes[i];
        let r = ip(&["link", "set", &n.veth, if up { "up" } else { "down" }]);
        assert!(r.is_ok(), "partition: {r:?}");
        if up {
            // The default route may have gone with the carrier; put it back.
            let _ = ip(&["-n", &n.ns, "route", "replace", "default", "via", &self.gateway]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &self.nodes {
            let _ = ip(&["link", "del", &n.veth]);
            let _ = ip(&["netns", "del", &n.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

// ---------------------------------------------------------------------------
// The cluster under test.

/// Start `panoptes` (optionally inside a network namespace) and wait (bounded)
/// for its first line on stdout, as `Node::spawn` does.
fn spawn(name: &str, netns: Option<&str>, args: &[String], log: &Path) -> Node {
    let mut cmd = match netns {
        // `ip netns exec` execs the binary: the child's pid is the node's.
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    cmd.args(args);
    Node::spawn_command(name, cmd, log)
}

struct ChaosCluster {
    dir: tempfile::TempDir,
    addrs: Vec<String>,
    coordinators: Vec<Option<Node>>,
    /// (name, process if running, namespace).
    workers: Vec<(String, Option<Node>, Option<String>)>,
    /// The cluster's certificates (TLS on every connection), unless TLS is off.
    tls: Option<Tls>,
    /// Dropped after every node (fields drop in order).
    net: Option<Net>,
}

impl ChaosCluster {
    fn start(net: Option<Net>, workers: usize) -> ChaosCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        // Each coordinator in its namespace has an address of its own (any
        // port will do); without namespaces they share 127.0.0.1.
        let addrs: Vec<String> = match &net {
            Some(n) => n.nodes[..3].iter().map(|c| format!("{}:7400", c.ip)).collect(),
            None => (0..3).map(|_| format!("127.0.0.1:{}", crate::free_port())).collect(),
        };
        // The coordinators' certificate names their addresses.
        let hosts: Vec<&str> = net.iter().flat_map(|n| n.nodes[..3].iter().map(|c| c.ip.as_str())).collect();
        let tls = tls_on().then(|| Tls::make(&dir.path().join("certs"), &hosts));
        std::fs::write(dir.path().join("cluster.toml"), with_security(TEST_CONFIG, &tls.as_ref().map(|t| t.node_lines()).unwrap_or_default())).unwrap();
        let mut c = ChaosCluster { dir, addrs, coordinators: vec![None, None, None], workers: Vec::new(), tls, net };
        for id in 1..=3 {
            c.start_coordinator(id);
        }
        c.leader();
        for i in 0..workers {
            // The last worker lives in the namespace, when there is one.
            let ns = if i + 1 == workers { c.net.as_ref().map(|n| n.nodes[NET_WORKER].ns.clone()) } else { None };
            c.workers.push((format!("w{}", i + 1), None, ns));
            c.start_worker(i);
        }
        c
    }

    fn cfg(&self) -> String {
        self.dir.path().join("cluster.toml").display().to_string()
    }

    fn start_coordinator(&mut self, id: u64) {
        let peers: Vec<String> = self.addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let data = self.dir.path().join(format!("c{id}")).display().to_string();
        let args: Vec<String> = ["coordinator", "--config", &self.cfg(), "--id", &id.to_string(), "--listen", &self.addrs[id as usize - 1], "--peers", &peers.join(","), "--data-dir", &data]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let log = self.dir.path().join(format!("coordinator-{id}-{stamp}.log"));
        let ns = self.net.as_ref().map(|n| n.nodes[id as usize - 1].ns.clone());
        self.coordinators[id as usize - 1] = Some(spawn(&format!("coordinator-{id}"), ns.as_deref(), &args, &log));
    }

    fn kill_coordinator(&mut self, id: u64) {
        if let Some(mut n) = self.coordinators[id as usize - 1].take() {
            n.kill9();
        }
    }

    fn start_worker(&mut self, i: usize) {
        let (name, ns) = (self.workers[i].0.clone(), self.workers[i].2.clone());
        let data = self.dir.path().join(&name).display().to_string();
        let args: Vec<String> =
            ["worker", "--config", &self.cfg(), "--name", &name, "--coordinator", &self.addrs.join(","), "--models-dir", &models_dir().display().to_string(), "--data-dir", &data]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let log = self.dir.path().join(format!("{name}-{stamp}.log"));
        self.workers[i].1 = Some(spawn(&name, ns.as_deref(), &args, &log));
    }

    fn cli(&self) -> Cli {
        Cli { addrs: self.addrs.join(","), tls: self.tls.clone() }
    }

    /// The current leader's id (bounded wait).
    fn leader(&self) -> u64 {
        let cli = self.cli();
        crate::wait_for("a Raft leader", Duration::from_secs(60), || cli.json(&["cluster", "status", "--json"])?["leader"].as_u64().filter(|l| *l > 0))
    }

    /// The last lines of every running node's log.
    fn logs(&self) -> String {
        let mut s = String::new();
        for n in self.coordinators.iter().flatten().chain(self.workers.iter().filter_map(|w| w.1.as_ref())) {
            let t = n.log_text();
            let tail: Vec<&str> = t.lines().rev().take(25).collect();
            s.push_str(&format!("--- {} (last lines)\n{}\n", n.name, tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
        s
    }
}

/// The CLI against every coordinator, each call bounded by `timeout(1)` so
/// that a SIGSTOPped member cannot hang the suite.
#[derive(Clone)]
struct Cli {
    addrs: String,
    tls: Option<Tls>,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new("timeout");
        cmd.args(["-s", "KILL", "20"]).arg(bin()).args(args).args(["--coordinator", &self.addrs]);
        if let Some(t) = &self.tls {
            t.client_env(&mut cmd);
        }
        let out = cmd
            .output()
            .expect("run panoptes through timeout(1)");
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        serde_json::from_str(&self.run(args)?).ok()
    }

    fn results(&self, job: &str) -> Option<Vec<Value>> {
        self.run(&["results", job, "--json"])?.lines().map(|l| serde_json::from_str(l).ok()).collect()
    }
}

// ---------------------------------------------------------------------------
// Observations during the run ("acknowledged" results).

#[derive(Default)]
struct Observed {
    /// Every result read back while faults were injected (committed: members apply only committed entries).
    results: HashMap<String, BTreeMap<Key, Value>>,
    max_done: HashMap<String, u64>,
    /// A read answered by a member that lags shows a smaller `frames_done`: counted, not a loss.
    lagging_reads: u64,
    /// A result that changed between two reads: a violation.
    changed: Vec<String>,
}

fn observe(cli: &Cli, jobs: &[String], obs: &Mutex<Observed>, round: usize) {
    for (i, job) in jobs.iter().enumerate() {
        if let Some(done) = cli.json(&["status", job, "--json"]).and_then(|s| s["frames_done"].as_u64()) {
            let mut o = obs.lock().unwrap();
            let max = o.max_done.get(job).copied().unwrap_or(0);
            if done < max {
                o.lagging_reads += 1;
            }
            o.max_done.insert(job.clone(), max.max(done));
        }
        // Results are larger: one job per round.
        if round % jobs.len() == i {
            if let Some(rs) = cli.results(job) {
                let mut o = obs.lock().unwrap();
                let mut changed = Vec::new();
                let seen = o.results.entry(job.clone()).or_default();
                for r in rs {
                    let k = key(&r);
                    match seen.get(&k) {
                        Some(old) if *old != r => changed.push(format!("job {job}: result {k:?} changed from {old} to {r}")),
                        Some(_) => {}
                        None => {
                            seen.insert(k, r);
                        }
                    }
                }
                o.changed.extend(changed);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The lease audit.

#[derive(Clone, Debug, PartialEq)]
struct Lease {
    job: u64,
    shard: u64,
    worker: String,
    from: u64,
    to: u64,
}

#[derive(Default, Debug)]
pub struct LeaseAudit {
    /// Distinct leases (epochs) seen granted.
    pub leases: usize,
    pub expiries: usize,
    pub splits: usize,
    pub violations: Vec<String>,
}

/// A lease event's kind (`grant`, `release`, `split`) and fields, from the
/// line the coordinator's store logs for it (`state/outcome.rs`
/// `LeaseEvent::log`: `… lease=KIND job=… shard=… epoch=… …`).
fn fields(line: &str) -> Option<(String, HashMap<String, String>)> {
    let rest = &line[line.find(" lease=")? + 1..];
    let f: HashMap<String, String> =
        rest.split_whitespace().filter_map(|t| t.split_once('=')).map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string())).collect();
    Some((f.get("lease")?.clone(), f))
}

fn num(f: &HashMap<String, String>, k: &str) -> u64 {
    f.get(k).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX)
}

fn range(f: &HashMap<String, String>) -> (u64, u64) {
    let n = |k: &str| f.get(k).and_then(|v| v.parse().ok());
    (n("from").unwrap_or(0), n("to").unwrap_or(u64::MAX))
}

/// Replay the lease events of every coordinator log (each incarnation
/// of each member, in its apply order): at no point may two live leases of
/// one job cover a common frame, and every member must agree on what each
/// epoch (a fencing token, never reused) was granted for.
pub fn audit_leases(logs: &[PathBuf]) -> LeaseAudit {
    let mut a = LeaseAudit::default();
    let mut by_epoch: HashMap<u64, Lease> = HashMap::new();
    for path in logs {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let file = path.file_name().unwrap().to_string_lossy();
        // Live leases on this member: epoch -> lease (the shard's uncommitted frames at grant time).
        let mut live: BTreeMap<u64, Lease> = BTreeMap::new();
        let mut add = |live: &mut BTreeMap<u64, Lease>, a: &mut LeaseAudit, epoch: u64, l: Lease, line: &str| {
            for (e, o) in live.iter() {
                if o.job == l.job && o.from < l.to && l.from < o.to {
                    a.violations.push(format!("{file}: lease {epoch} ({l:?}) overlaps live lease {e} ({o:?}) at: {line}"));
                }
            }
            match by_epoch.get(&epoch) {
                Some(o) if *o != l => a.violations.push(format!("{file}: epoch {epoch} is {l:?} here but {o:?} on another member")),
                Some(_) => {}
                None => {
                    by_epoch.insert(epoch, l.clone());
                }
            }
            live.insert(epoch, l);
        };
        for line in text.lines() {
            let Some((kind, f)) = fields(line) else { continue };
            match kind.as_str() {
                "grant" => {
                    let (from, to) = range(&f);
                    let l = Lease { job: num(&f, "job"), shard: num(&f, "shard"), worker: f.get("worker").cloned().unwrap_or_default(), from, to };
                    add(&mut live, &mut a, num(&f, "epoch"), l, line);
                }
                "release" => {
                    live.remove(&num(&f, "epoch"));
                    a.expiries += 1;
                }
                "split" => {
                    let at = num(&f, "at");
                    // The victim keeps [from, at) (a member restarted later may not know it).
                    if let Some(v) = live.get_mut(&num(&f, "epoch")) {
                        v.to = v.to.min(at);
                    }
                    let (from, to) = range(&f);
                    let l = Lease { job: num(&f, "job"), shard: num(&f, "new_shard"), worker: f.get("worker").cloned().unwrap_or_default(), from, to };
                    add(&mut live, &mut a, num(&f, "new_epoch"), l, line);
                    a.splits += 1;
                }
                _ => {}
            }
        }
    }
    a.leases = by_epoch.len();
    a
}

// ---------------------------------------------------------------------------
// The run.

pub struct Options {
    pub seed: u64,
    pub faults: usize,
    pub jobs: usize,
    /// The test name, for the replay command.
    pub test: &'static str,
    /// Also run [`LONG_CLIP`] from the start to the end of the schedule.
    pub long: bool,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub seed: u64,
    pub faults: BTreeMap<&'static str, u32>,
    pub skipped: Vec<String>,
    pub jobs: usize,
    pub results_checked: usize,
    pub duplicates: usize,
    pub losses: usize,
    pub leases: usize,
    /// Faults injected while some job was queued or running.
    pub faults_under_load: u32,
    pub lagging_reads: u64,
    pub secs: f64,
    pub violations: Vec<String>,
}

impl Outcome {
    /// One line for `cargo xtask chaos` to collect.
    pub fn summary(&self) -> String {
        let faults: u32 = self.faults.values().sum();
        let kinds: Vec<String> = self.faults.iter().map(|(k, n)| format!("{k}:{n}")).collect();
        format!(
            "CHAOS-SUMMARY seed={} faults={} under_load={} kinds={} not_run={} jobs={} results={} duplicates={} losses={} leases={} violations={} secs={:.0}",
            self.seed,
            faults,
            self.faults_under_load,
            if kinds.is_empty() { "-".into() } else { kinds.join(",") },
            if self.skipped.is_empty() { "-" } else { "partitions" },
            self.jobs,
            self.results_checked,
            self.duplicates,
            self.losses,
            self.leases,
            self.violations.len(),
            self.secs
        )
    }
}

/// Call `f` until it returns something, for at most `limit`.
fn retry<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn say(seed: u64, t0: Instant, msg: &str) {
    println!("[chaos seed={seed} +{:6.1}s] {msg}", t0.elapsed().as_secs_f64());
}

/// One chaos run. Panics only when the harness itself cannot go on (a node
/// that does not start); broken invariants are listed in the outcome.
pub fn run(opts: &Options) -> Outcome {
    let seed = opts.seed;
    let t0 = Instant::now();
    let replay = format!("PANOPTES_CHAOS_SEED={seed} PANOPTES_CHAOS_FAULTS={} cargo test -p panoptes-tests --test chaos -- --ignored --nocapture {}", opts.faults, opts.test);
    say(seed, t0, &format!("replay with: {replay}"));
    let _lock = cluster_lock();
    let plan = schedule(seed, opts.faults, 3);
    // `opts.jobs` at the start, then one more right before each fault, so
    // that every fault meets work in progress however fast the machine is.
    let mut specs = jobs(seed, opts.jobs + opts.faults);
    let mut clips = CLIPS.to_vec();
    if opts.long {
        specs.insert(0, JobSpec { clip: LONG_CLIP, models: LONG_MODELS, step: 1 });
        clips.push(LONG_CLIP);
    }
    // Jobs submitted before the first fault; one more right before each fault.
    let initial = opts.jobs + opts.long as usize;
    let refs: Vec<(PathBuf, BTreeMap<Key, Value>)> = clips.iter().map(reference).collect();
    let clip_ref = |c: &Clip| &refs[clips.iter().position(|x| x.name == c.name).unwrap()];

    let mut out = Outcome { seed, jobs: specs.len(), ..Default::default() };
    // Partitions need network namespaces (root). Without them the run
    // fails, unless PANOPTES_CHAOS_NETNS=0 said to run without them: then
    // the summary line says that partitions were not run.
    let net = match Net::create() {
        Ok(n) => Some(n),
        Err(e) => {
            out.skipped.push(format!("partition-worker and partition-leader: no network namespaces ({e})"));
            if std::env::var("PANOPTES_CHAOS_NETNS").as_deref() != Ok("0") {
                out.violations.push(format!(
                    "partition faults could not be injected: no network namespaces ({e}); run as root with `ip netns` working, or set PANOPTES_CHAOS_NETNS=0 to run without partitions (the summary then says `not_run=partitions`)"
                ));
            }
            None
        }
    };
    for s in &out.skipped {
        say(seed, t0, &format!("skipping {s}"));
    }
    let mut c = ChaosCluster::start(net, 3);
    let cli = c.cli();
    crate::wait_for("3 workers registered", Duration::from_secs(90), || {
        let cs = cli.json(&["cluster", "status", "--json"])?;
        (cs["workers"].as_array()?.len() >= 3).then_some(())
    });

    // Submit job `i` of `specs` (a request id makes a retried submit idempotent).
    let submitted: Arc<Mutex<Vec<String>>> = Arc::default();
    let submit = |i: usize| {
        let j = &specs[i];
        let video = clip_ref(&j.clip).0.display().to_string();
        let rid = format!("chaos-{seed}-{i}");
        let step = j.step.to_string();
        let v = crate::wait_for(&format!("submit of job {i}"), Duration::from_secs(60), || {
            cli.json(&["submit", &video, "--models", j.models, "--frame-step", &step, "--request-id", &rid, "--json"])
        });
        let id = v["job_id"].as_str().unwrap_or_else(|| panic!("submit: {v}")).to_string();
        say(seed, t0, &format!("job {id}: clip {} ({} frames), models {}, every {} frame(s)", j.clip.name, j.clip.frames, j.models, j.step));
        submitted.lock().unwrap().push(id);
    };
    for i in 0..initial {
        submit(i);
    }

    // Read results back all along, from another thread.
    let obs = Arc::new(Mutex::new(Observed::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let observer = {
        let (cli, jobs, obs, stop) = (cli.clone(), submitted.clone(), obs.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let jobs = jobs.lock().unwrap().clone();
                observe(&cli, &jobs, &obs, round);
                round += 1;
                std::thread::sleep(Duration::from_millis(700));
            }
        })
    };
    crate::wait_for("the first committed frames", Duration::from_secs(120), || {
        obs.lock().unwrap().max_done.values().any(|d| *d > 0).then_some(())
    });

    // The schedule.
    let mut rng = Rng::new(seed ^ 0xBB67_AE85_84CA_A73B);
    for (n, f) in plan.iter().enumerate() {
        submit(initial + n);
        std::thread::sleep(Duration::from_millis(f.delay_ms));
        // Did the fault meet work in progress? (Reported, not required.)
        let ids = submitted.lock().unwrap().clone();
        let busy = ids.iter().any(|id| cli.json(&["status", id, "--json"]).is_some_and(|s| matches!(s["state"].as_str(), Some("queued" | "running"))));
        let hold = Duration::from_millis(f.hold_ms);
        let what = match f.kind {
            FaultKind::KillWorker => {
                let name = c.workers[f.target].0.clone();
                if let Some(mut w) = c.workers[f.target].1.take() {
                    w.kill9();
                }
                std::thread::sleep(hold);
                c.start_worker(f.target);
                format!("kill -9 {name}, restarted after {hold:?}")
            }
            FaultKind::KillLeader => {
                let l = c.leader();
                c.kill_coordinator(l);
                std::thread::sleep(hold);
                c.start_coordinator(l);
                format!("kill -9 leader coordinator-{l}, restarted after {hold:?}")
            }
            FaultKind::StopWorker => {
                let w = c.workers[f.target].1.as_ref().expect("worker running");
                w.signal("STOP");
                std::thread::sleep(hold);
                w.signal("CONT");
                format!("SIGSTOP {} for {hold:?} (lease timeout {LEASE_TIMEOUT_MS} ms), SIGCONT", w.name)
            }
            FaultKind::StopLeader => {
                let l = c.leader();
                let node = c.coordinators[l as usize - 1].as_ref().expect("leader running");
                node.signal("STOP");
                std::thread::sleep(hold);
                node.signal("CONT");
                format!("SIGSTOP leader coordinator-{l} for {hold:?}, SIGCONT")
            }
            FaultKind::RestartFollower => {
                let l = c.leader();
                let followers: Vec<u64> = (1..=3).filter(|i| *i != l).collect();
                let id = *rng.pick(&followers);
                c.kill_coordinator(id);
                std::thread::sleep(hold);
                c.start_coordinator(id);
                format!("kill -9 follower coordinator-{id}, restarted after {hold:?}")
            }
            FaultKind::PartitionWorker | FaultKind::PartitionLeader if c.net.is_none() => {
                say(seed, t0, &format!("fault {}/{}: {} skipped (no network namespaces)", n + 1, plan.len(), f.kind.name()));
                continue;
            }
            FaultKind::PartitionWorker => {
                let net = c.net.as_ref().expect("checked above");
                net.link(NET_WORKER, false);
                std::thread::sleep(hold);
                net.link(NET_WORKER, true);
                format!("partition {} (namespace {}) for {hold:?}, healed", c.workers.last().unwrap().0, net.nodes[NET_WORKER].ns)
            }
            FaultKind::PartitionLeader => {
                let l = c.leader();
                let net = c.net.as_ref().expect("checked above");
                net.link(l as usize - 1, false);
                std::thread::sleep(hold);
                net.link(l as usize - 1, true);
                format!("partition leader coordinator-{l} (namespace {}) for {hold:?}, healed", net.nodes[l as usize - 1].ns)
            }
        };
        *out.faults.entry(f.kind.name()).or_default() += 1;
        out.faults_under_load += busy as u32;
        let done: u64 = obs.lock().unwrap().max_done.values().sum();
        say(seed, t0, &format!("fault {}/{}: {what} (frames done so far: {done})", n + 1, plan.len()));
    }

    let job_ids = submitted.lock().unwrap().clone();
    // Wait (bounded) for every job.
    let mut finals = Vec::new();
    for id in &job_ids {
        let deadline = Instant::now() + Duration::from_secs(600);
        let s = loop {
            let s = cli.json(&["status", id, "--json"]);
            if let Some(s) = s.filter(|s| matches!(s["state"].as_str(), Some("completed" | "failed" | "cancelled"))) {
                break s;
            }
            if Instant::now() > deadline {
                out.violations.push(format!("job {id} did not finish within 600 s\n{}", c.logs()));
                break Value::Null;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        finals.push(s);
    }
    stop.store(true, Ordering::Relaxed);
    observer.join().expect("observer thread");
    let obs = std::mem::take(&mut *obs.lock().unwrap());
    out.lagging_reads = obs.lagging_reads;
    out.violations.extend(obs.changed.iter().cloned());

    // The checker.
    for ((id, spec), status) in job_ids.iter().zip(&specs).zip(&finals) {
        if status.is_null() {
            continue;
        }
        if status["state"] != "completed" {
            out.violations.push(format!("job {id} ended {}: {status}", status["state"]));
        }
        let want = expected(spec, &clip_ref(&spec.clip).1);
        let Some(got) = retry(Duration::from_secs(60), || cli.results(id)) else {
            out.violations.push(format!("job {id}: results could not be read"));
            continue;
        };
        let mut have: BTreeMap<Key, Value> = BTreeMap::new();
        for r in got {
            let k = key(&r);
            if have.insert(k.clone(), r).is_some() {
                out.duplicates += 1;
                out.violations.push(format!("job {id}: (frame, model) {k:?} present twice"));
            }
        }
        for (k, w) in &want {
            match have.get(k) {
                None => out.violations.push(format!("job {id}: result {k:?} missing")),
                Some(g) if g != w => out.violations.push(format!("job {id}: result {k:?} differs from the fault-free run: {g} vs {w}")),
                Some(_) => {}
            }
            out.results_checked += 1;
        }
        for k in have.keys().filter(|k| !want.contains_key(*k)) {
            out.violations.push(format!("job {id}: unexpected result {k:?}"));
        }
        for (k, v) in obs.results.get(id).into_iter().flatten() {
            if have.get(k) != Some(v) {
                out.losses += 1;
                out.violations.push(format!("job {id}: result {k:?} was read during the run but is gone or changed at the end"));
            }
        }
        let frames = want.keys().map(|(f, _)| *f).collect::<BTreeSet<_>>().len() as u64;
        let done = status["frames_done"].as_u64().unwrap_or(0);
        let max = obs.max_done.get(id).copied().unwrap_or(0);
        if done != frames || done < max {
            out.violations.push(format!("job {id}: frames_done {done} at the end (expected {frames}; {max} was read during the run)"));
        }
    }

    let mut logs: Vec<PathBuf> = std::fs::read_dir(c.dir.path())
        .expect("read cluster dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("coordinator-")))
        .collect();
    logs.sort();
    let audit = audit_leases(&logs);
    out.leases = audit.leases;
    if audit.leases == 0 {
        out.violations.push("no lease-audit lines in the coordinator logs: is target/debug/panoptes up to date?".into());
    }
    out.violations.extend(audit.violations);
    out.secs = t0.elapsed().as_secs_f64();

    say(seed, t0, &format!(
        "faults injected: {:?} ({} while jobs ran); jobs {}; results checked {}; duplicates {}; losses {}; leases audited {} ({} expired, {} split); lagging reads {}",
        out.faults, out.faults_under_load, out.jobs, out.results_checked, out.duplicates, out.losses, audit.leases, audit.expiries, audit.splits, out.lagging_reads
    ));
    if !out.violations.is_empty() {
        // Keep the cluster's files for the post-mortem.
        let kept = c.dir.path().to_path_buf();
        std::mem::forget(std::mem::replace(&mut c.dir, tempfile::tempdir().unwrap()));
        say(seed, t0, &format!("{} violation(s); logs kept in {}", out.violations.len(), kept.display()));
        for v in &out.violations {
            println!("VIOLATION: {v}");
        }
    }
    println!("{}", out.summary());
    say(seed, t0, &format!("replay with: {replay}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_a_function_of_the_seed() {
        assert_eq!(schedule(7, 12, 3), schedule(7, 12, 3));
        assert_ne!(schedule(7, 12, 3), schedule(8, 12, 3));
        let kinds: BTreeSet<FaultKind> = schedule(7, KINDS.len(), 3).iter().map(|f| f.kind).collect();
        assert_eq!(kinds.len(), KINDS.len(), "the first faults cover every kind once");
        assert!(schedule(9, 40, 3).iter().all(|f| f.target < 3));
    }

    #[test]
    fn the_audit_finds_overlapping_leases_and_accepts_expiry_and_split() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("coordinator-1-1.log");
        std::fs::write(
            &ok,
            "x INFO lease granted lease=grant job=1 shard=0 epoch=1 worker=w1 from=0 to=20\n\
             x INFO lease split lease=split job=1 shard=0 epoch=1 at=10 new_shard=2 new_epoch=2 worker=w2 from=10 to=20\n\
             x INFO lease ended lease=release job=1 shard=0 epoch=1 reason=expired\n\
             x INFO lease granted lease=grant job=1 shard=0 epoch=3 worker=w3 from=4 to=10\n\
             x INFO lease granted lease=grant job=2 shard=0 epoch=4 worker=w1 from=0 to=20\n",
        )
        .unwrap();
        let a = audit_leases(&[ok.clone()]);
        assert!(a.violations.is_empty(), "{:?}", a.violations);
        assert_eq!((a.leases, a.expiries, a.splits), (4, 1, 1));
        let bad = dir.path().join("coordinator-2-1.log");
        std::fs::write(&bad, "x lease granted lease=grant job=1 shard=0 epoch=1 worker=w1 from=0 to=20\nx lease granted lease=grant job=1 shard=0 epoch=5 worker=w2 from=5 to=20\n").unwrap();
        assert_eq!(audit_leases(&[bad.clone()]).violations.len(), 1);
        // Two members disagreeing about one epoch.
        let other = dir.path().join("coordinator-3-1.log");
        std::fs::write(&other, "x lease granted lease=grant job=1 shard=0 epoch=1 worker=w2 from=0 to=20\n").unwrap();
        assert_eq!(audit_leases(&[ok, other]).violations.len(), 1);
    }
}
