//! The state machine on sled: every applied batch of log entries becomes one
//! atomic sled batch (changed jobs, workers, counters, new results and the
//! last applied log id together), so a crash leaves the store at some applied
//! index and openraft re-applies what follows from the log.
//!
//! Layout of the `sm` tree (ids big-endian so scans run in order):
//! `m/applied`, `m/membership`, `m/counters` · `j/<job>` · `w/<name>` ·
//! `q/<request id>` · `r/<job><frame><model index>` → (timestamp, JSON) ·
//! `f/<job><frame>` → the reference of the frame's stored picture ([`PictureRef`]; the
//! picture itself is in this node's [`PictureStore`], outside Raft).
//!
//! Snapshots are files ([`snapfile`]) written, sent, received and installed
//! as streams: memory does not grow with the state. Installing fills a new
//! tree (`sm.N`) and switches to it with one durable write (`sm_meta/active`).
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::apply::{Changes, ResultSink, State};
use super::command::{Freed, PictureRef, Response};
use crate::pictures::PictureHome;
use super::snapfile;
use crate::raft::types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::raft::log_store::{remove_in_batches, MAX_BATCH_OPS};

const K_APPLIED: &[u8] = b"m/applied";
const K_MEMBERSHIP: &[u8] = b"m/membership";
const K_COUNTERS: &[u8] = b"m/counters";

fn job_key(job: u64) -> Vec<u8> {
    let mut k = b"j/".to_vec();
    k.extend_from_slice(&job.to_be_bytes());
    k
}

/// `s/<job>` — the prefix of a job's shards, each under its own key so that
/// a report rewrites the one shard it moved, not all of them (a 20-minute
/// clip has 300 shards: rewriting them with every report made sled write
/// ~20 KB an apply, most of the data directory's size).
fn shards_prefix(job: u64) -> Vec<u8> {
    let mut k = b"s/".to_vec();
    k.extend_from_slice(&job.to_be_bytes());
    k
}

fn shard_key(job: u64, shard: u32) -> Vec<u8> {
    let mut k = shards_prefix(job);
    k.extend_from_slice(&shard.to_be_bytes());
    k
}

/// `p/<job>` — a job's plan (its keyframes: 2 KB for a 20-minute clip),
/// written once, not with every change of the job.
fn plan_key(job: u64) -> Vec<u8> {
    let mut k = b"p/".to_vec();
    k.extend_from_slice(&job.to_be_bytes());
    k
}

fn worker_key(name: &str) -> Vec<u8> {
    let mut k = b"w/".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

fn request_key(rid: &str) -> Vec<u8> {
    let mut k = b"q/".to_vec();
    k.extend_from_slice(rid.as_bytes());
    k
}

/// `r/<job>` — the prefix of every result of a job.
pub fn results_prefix(job: u64) -> Vec<u8> {
    let mut k = b"r/".to_vec();
    k.extend_from_slice(&job.to_be_bytes());
    k
}

pub fn result_key(job: u64, frame: u64, model: u8) -> Vec<u8> {
    let mut k = results_prefix(job);
    k.extend_from_slice(&frame.to_be_bytes());
    k.push(model);
    k
}

/// `f/<job>` — the prefix of every stored picture of a job.
pub fn frames_prefix(job: u64) -> Vec<u8> {
    let mut k = b"f/".to_vec();
    k.extend_from_slice(&job.to_be_bytes());
    k
}

pub fn frame_key(job: u64, frame: u64) -> Vec<u8> {
    let mut k = frames_prefix(job);
    k.extend_from_slice(&frame.to_be_bytes());
    k
}

/// One stored result row.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub frame: u64,
    pub model: u8,
    pub timestamp: f64,
    pub results_json: String,
}

fn decode_result(key: &[u8], val: &[u8]) -> Option<ResultRow> {
    if key.len() != 2 + 8 + 8 + 1 {
        return None;
    }
    let frame = u64::from_be_bytes(key[10..18].try_into().ok()?);
    let (timestamp, results_json): (f64, String) = bincode::deserialize(val).ok()?;
    Some(ResultRow { frame, model: key[18], timestamp, results_json })
}

#[derive(Serialize, Deserialize)]
struct Counters {
    next_job: u64,
    next_epoch: u64,
}

fn sm_read<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}

fn sm_write<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

/// What the state machine has applied, readable by the services.
#[derive(Debug, Default)]
pub struct Applied {
    pub state: State,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// What of each job's plan and shards is in the tree: an apply writes
    /// the ones that differ.
    persisted: HashMap<u64, Persisted>,
}

#[derive(Debug, Default)]
struct Persisted {
    plan: bool,
    shards: Vec<super::model::Shard>,
}

/// The sled tree that holds the state machine now. Installing a snapshot
/// fills a fresh tree and then switches to it, so readers ask for the
/// current one each time.
type ActiveTree = Arc<RwLock<sled::Tree>>;

/// A cheap handle for reading the applied state and results.
#[derive(Clone)]
pub struct StateReader {
    applied: Arc<RwLock<Applied>>,
    db: sled::Db,
    tree: ActiveTree,
    notify: watch::Receiver<u64>,
}

impl StateReader {
    /// Run `f` on the applied state under a read lock (keep it short).
    pub fn read<T>(&self, f: impl FnOnce(&Applied) -> T) -> T {
        f(&self.applied.read().expect("state lock poisoned"))
    }

    fn tree(&self) -> sled::Tree {
        self.tree.read().expect("tree lock poisoned").clone()
    }

    /// Results of `job` in (frame, model) order, optionally one frame only,
    /// starting after `after` (a key from a previous call), at most `limit`
    /// rows; also the key to continue after. Reads only what it returns.
    pub fn results(&self, job: u64, frame: Option<u64>, after: Option<&[u8]>, limit: usize) -> (Vec<ResultRow>, Option<Vec<u8>>) {
        let prefix = match frame {
            Some(f) => {
                let mut p = results_prefix(job);
                p.extend_from_slice(&f.to_be_bytes());
                p
            }
            None => results_prefix(job),
        };
        let tree = self.tree();
        let mut rows = Vec::new();
        let mut last = None;
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match after {
            Some(a) => {
                let mut start = a.to_vec();
                start.push(0);
                Box::new(tree.range(start..).take_while({
                    let prefix = prefix.clone();
                    move |r| r.as_ref().map(|(k, _)| k.starts_with(&prefix)).unwrap_or(true)
                }))
            }
            None => Box::new(tree.scan_prefix(&prefix)),
        };
        for item in iter {
            let Ok((k, v)) = item else { break };
            if let Some(row) = decode_result(&k, &v) {
                rows.push(row);
            }
            last = Some(k.to_vec());
            if rows.len() >= limit {
                break;
            }
        }
        (rows, last)
    }

    /// Retention: the first frame at or after `from` whose results are
    /// stamped `cutoff` or later, scanning at most `max_rows` rows (then the
    /// frame reached so far); `None` when nothing before it is older.
    pub fn retention_cut(&self, job: u64, from: u64, cutoff: f64, max_rows: usize) -> Option<u64> {
        let mut cut = from;
        for (n, (k, v)) in self.tree().range(result_key(job, from, 0)..results_prefix(job.saturating_add(1))).flatten().enumerate() {
            let row = decode_result(&k, &v)?;
            if row.timestamp >= cutoff || n >= max_rows {
                break;
            }
            cut = row.frame + 1;
        }
        (cut > from).then_some(cut)
    }

    /// Results of `job` for frames in `[start, end)`, in (frame, model) order.
    pub fn results_between(&self, job: u64, start: u64, end: u64) -> Vec<ResultRow> {
        if end <= start {
            return Vec::new();
        }
        self.tree().range(result_key(job, start, 0)..result_key(job, end, 0)).flatten().filter_map(|(k, v)| decode_result(&k, &v)).collect()
    }

    /// The reference of a frame's stored picture, if the job kept one.
    pub fn picture_ref(&self, job: u64, frame: u64) -> Option<PictureRef> {
        let v = self.tree().get(frame_key(job, frame)).ok()??;
        bincode::deserialize(&v).ok()
    }

    /// The frames of `job` nearest `frame` that have a stored picture: the
    /// last at or before it, and the first after it.
    pub fn pictured_near(&self, job: u64, frame: u64) -> (Option<u64>, Option<u64>) {
        let tree = self.tree();
        let frame_of = |r: sled::Result<(sled::IVec, sled::IVec)>| -> Option<u64> {
            let (k, _) = r.ok()?;
            Some(u64::from_be_bytes(k.get(10..18)?.try_into().ok()?))
        };
        let before = tree.range(frame_key(job, 0)..=frame_key(job, frame)).next_back().and_then(frame_of);
        let after = match frame.checked_add(1) {
            Some(next) => tree.range(frame_key(job, next)..).next().filter(|r| r.as_ref().map(|(k, _)| k.starts_with(&frames_prefix(job))).unwrap_or(false)).and_then(frame_of),
            None => None,
        };
        (before, after)
    }

    /// Picture references in key order (job, frame), starting after `after`
    /// (job, frame), at most `limit`: what `pictures::repair` walks.
    pub fn picture_refs(&self, after: Option<(u64, u64)>, limit: usize) -> Vec<(u64, u64, PictureRef)> {
        let start = match after {
            Some((j, f)) => {
                let mut k = frame_key(j, f);
                k.push(0);
                k
            }
            None => b"f/".to_vec(),
        };
        self.tree()
            .range(start..)
            .take_while(|r| r.as_ref().map(|(k, _)| k.starts_with(b"f/")).unwrap_or(false))
            .flatten()
            .filter_map(|(k, v)| {
                let job = u64::from_be_bytes(k.get(2..10)?.try_into().ok()?);
                let frame = u64::from_be_bytes(k.get(10..18)?.try_into().ok()?);
                Some((job, frame, bincode::deserialize(&v).ok()?))
            })
            .take(limit)
            .collect()
    }

    /// Bytes sled holds on disk for this node's whole database (log and state).
    pub fn disk_size(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Resolves when something new is applied (or after the receiver closes).
    pub async fn changed(&mut self) {
        let _ = self.notify.changed().await;
    }
}

/// Names the tree that holds the state machine (key [`K_ACTIVE`]); switching
/// it is the one durable write that makes an installed snapshot current.
const META_TREE: &str = "sm_meta";
const K_ACTIVE: &[u8] = b"active";
/// In a state tree filled from a snapshot: that snapshot's last log id.
const K_INSTALLED: &[u8] = b"m/installed";
/// The current snapshot, meta and data in one file ([`snapfile`]).
const CURRENT_SNAPSHOT: &str = "current.snap";
/// A received snapshot is written to the new tree in batches of about this
/// many bytes (and at most [`MAX_BATCH_OPS`] records).
const INSTALL_BATCH_BYTES: usize = 64 << 10;

pub struct StateMachineStore {
    db: sled::Db,
    tree: ActiveTree,
    applied: Arc<RwLock<Applied>>,
    notify: watch::Sender<u64>,
    snapshot_dir: PathBuf,
    /// Serialises replacing `current.snap` (a build and an install may finish together).
    publish: Arc<Mutex<()>>,
    /// The file the snapshot being received is written to.
    receiving: Option<PathBuf>,
    /// Where the pictures are: a deleted job's go with it.
    pictures: PictureHome,
}

/// The generation of a state tree's name: `sm` is 0, `sm.N` is N.
fn generation(name: &[u8]) -> u64 {
    std::str::from_utf8(name).ok().and_then(|n| n.strip_prefix("sm.")).and_then(|g| g.parse().ok()).unwrap_or(0)
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

impl StateMachineStore {
    pub fn open(db: &sled::Db, snapshot_dir: PathBuf, pictures: PictureHome) -> Result<Self, StorageError> {
        std::fs::create_dir_all(&snapshot_dir).map_err(sm_read)?;
        let meta = db.open_tree(META_TREE).map_err(sm_read)?;
        let active = meta.get(K_ACTIVE).map_err(sm_read)?.map(|v| v.to_vec()).unwrap_or_else(|| b"sm".to_vec());
        // Trees of installs that a crash interrupted before their switch.
        for name in db.tree_names() {
            if name.starts_with(b"sm.") && name.as_ref() != active.as_slice() {
                tracing::info!(tree = %String::from_utf8_lossy(&name), "dropping a state tree left by an interrupted snapshot install");
                db.drop_tree(&name).map_err(sm_write)?;
            }
        }
        let tree = db.open_tree(&active).map_err(sm_read)?;
        clean_snapshot_dir(&snapshot_dir, &tree)?;
        let applied = load(&tree)?;
        let idx = applied.last_applied.map(|l| l.index).unwrap_or(0);
        let (notify, _) = watch::channel(idx);
        Ok(Self {
            db: db.clone(),
            tree: Arc::new(RwLock::new(tree)),
            applied: Arc::new(RwLock::new(applied)),
            notify,
            snapshot_dir,
            publish: Arc::default(),
            receiving: None,
            pictures,
        })
    }

    pub fn reader(&self) -> StateReader {
        StateReader { applied: self.applied.clone(), db: self.db.clone(), tree: self.tree.clone(), notify: self.notify.subscribe() }
    }
}

/// Remove what a crash left in the snapshot directory (partial builds and
/// receptions), and a current snapshot older than the snapshot this state
/// was installed from (a crash between the switch and keeping the received
/// file): openraft then builds a new one from the state.
fn clean_snapshot_dir(dir: &Path, tree: &sled::Tree) -> Result<(), StorageError> {
    for entry in std::fs::read_dir(dir).map_err(sm_read)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".tmp") || name.ends_with(".part") || name == "current.meta" {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let current = dir.join(CURRENT_SNAPSHOT);
    if !current.exists() {
        return Ok(());
    }
    let installed: Option<LogId> = match tree.get(K_INSTALLED).map_err(sm_read)? {
        Some(v) => bincode::deserialize(&v).map_err(sm_read)?,
        None => None,
    };
    let keep = match std::fs::File::open(&current).and_then(snapfile::read_meta) {
        Ok(m) => m.last_log_id >= installed,
        Err(e) => {
            tracing::warn!(error = %e, "the current snapshot file is unreadable; a new one is built from the state");
            false
        }
    };
    if !keep {
        std::fs::remove_file(&current).map_err(sm_write)?;
    }
    Ok(())
}

fn load(tree: &sled::Tree) -> Result<Applied, StorageError> {
    let mut a = Applied::default();
    if let Some(v) = tree.get(K_APPLIED).map_err(sm_read)? {
        a.last_applied = bincode::deserialize(&v).map_err(sm_read)?;
    }
    if let Some(v) = tree.get(K_MEMBERSHIP).map_err(sm_read)? {
        a.membership = bincode::deserialize(&v).map_err(sm_read)?;
    }
    if let Some(v) = tree.get(K_COUNTERS).map_err(sm_read)? {
        let c: Counters = bincode::deserialize(&v).map_err(sm_read)?;
        a.state.next_job = c.next_job;
        a.state.next_epoch = c.next_epoch;
    }
    for item in tree.scan_prefix(b"j/") {
        let (_, v) = item.map_err(sm_read)?;
        let job: super::model::Job = bincode::deserialize(&v).map_err(sm_read)?;
        a.state.jobs.insert(job.id, job);
    }
    // Shards in key order: (job, index). A job written before shards had
    // keys of their own keeps the ones in its record.
    // `s/<job>…` and `p/<job>`: the job id after the two-byte prefix.
    let job_of = |k: &[u8]| -> Result<u64, StorageError> {
        k.get(2..10).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).ok_or_else(|| sm_read(std::io::Error::other(format!("bad key {k:?}"))))
    };
    let mut shards: HashMap<u64, Vec<super::model::Shard>> = HashMap::new();
    for item in tree.scan_prefix(b"s/") {
        let (k, v) = item.map_err(sm_read)?;
        shards.entry(job_of(&k)?).or_default().push(bincode::deserialize(&v).map_err(sm_read)?);
    }
    for (id, s) in shards {
        if let Some(j) = a.state.jobs.get_mut(&id) {
            j.shards = s;
        }
    }
    // A job whose plan is still in its record has it written under its key
    // at its next change.
    let mut planned: HashSet<u64> = HashSet::new();
    for item in tree.scan_prefix(b"p/") {
        let (k, v) = item.map_err(sm_read)?;
        let job = job_of(&k)?;
        planned.insert(job);
        if let Some(j) = a.state.jobs.get_mut(&job) {
            j.plan = Some(bincode::deserialize(&v).map_err(sm_read)?);
        }
    }
    a.persisted = a.state.jobs.iter().map(|(id, j)| (*id, Persisted { plan: planned.contains(id), shards: j.shards.clone() })).collect();
    for item in tree.scan_prefix(b"w/") {
        let (_, v) = item.map_err(sm_read)?;
        let w: super::model::WorkerRec = bincode::deserialize(&v).map_err(sm_read)?;
        a.state.workers.insert(w.name.clone(), w);
    }
    for item in tree.scan_prefix(b"q/") {
        let (k, v) = item.map_err(sm_read)?;
        let rid = String::from_utf8_lossy(&k[2..]).to_string();
        a.state.request_ids.insert(rid, bincode::deserialize(&v).map_err(sm_read)?);
    }
    Ok(a)
}
/// Results written during one apply call, checked against the tree and the
/// not-yet-written batch.
struct SledSink<'a> {
    tree: &'a sled::Tree,
    batch: &'a mut sled::Batch,
    pending: HashSet<Vec<u8>>,
    error: Option<sled::Error>,
    /// Writes in `batch` so far.
    ops: usize,
}

impl ResultSink for SledSink<'_> {
    fn contains(&self, job: u64, frame: u64, model: u8) -> bool {
        let k = result_key(job, frame, model);
        if self.pending.contains(&k) {
            return true;
        }
        match self.tree.contains_key(&k) {
            Ok(b) => b,
            Err(_) => false,
        }
    }

    fn put(&mut self, job: u64, frame: u64, model: u8, timestamp: f64, results_json: &str) {
        let k = result_key(job, frame, model);
        match bincode::serialize(&(timestamp, results_json)) {
            Ok(v) => self.batch.insert(k.clone(), v),
            Err(e) => self.error = Some(sled::Error::Unsupported(e.to_string())),
        }
        self.ops += 1;
        self.pending.insert(k);
    }

    fn put_frame(&mut self, job: u64, frame: u64, image: &PictureRef) {
        match bincode::serialize(image) {
            Ok(v) => self.batch.insert(frame_key(job, frame), v),
            Err(e) => self.error = Some(sled::Error::Unsupported(e.to_string())),
        }
        self.ops += 1;
    }

    fn trim(&mut self, job: u64, from: u64, before: u64, results: bool, pictures: bool) -> Freed {
        let mut freed = Freed::default();
        if results {
            self.remove_range(result_key(job, from, 0), result_key(job, before, 0), false, &mut freed);
        }
        if pictures {
            self.remove_range(frame_key(job, from), frame_key(job, before), true, &mut freed);
        }
        freed
    }

    fn delete_job(&mut self, job: u64) -> Freed {
        let mut freed = Freed::default();
        for (prefix, is_frame) in [(results_prefix(job), false), (frames_prefix(job), true)] {
            // Every key of the job: the prefix, then a frame number (and a model).
            let mut end = prefix.clone();
            end.extend_from_slice(&[0xff; 16]);
            self.remove_range(prefix, end, is_frame, &mut freed);
        }
        freed
    }
}

impl SledSink<'_> {
    /// Remove the keys in `[from, to)`; what they were.
    ///
    /// A job's deletion removes every key it has (hundreds of thousands for
    /// a long job), and sled's memory grows with the size of a batch: the
    /// removals go to the tree in batches of [`MAX_BATCH_OPS`] ahead of the
    /// apply's own batch. A crash in between leaves some keys removed and
    /// the entry not applied; it is applied again at restart, which removes
    /// the rest (a removal is idempotent). Keys this apply wrote itself are
    /// also removed from its own batch, where they were inserted.
    fn remove_range(&mut self, from: Vec<u8>, to: Vec<u8>, is_frame: bool, freed: &mut Freed) {
        let SledSink { tree, batch, pending, ops, .. } = self;
        let keys = tree.range(from..to).map(|item| {
            let (k, v) = item?;
            freed.bytes += (k.len() + v.len()) as u64;
            if is_frame {
                freed.frames += 1;
                // The picture itself, kept outside the tree.
                freed.bytes += bincode::deserialize::<PictureRef>(&v).map(|r| r.len as u64).unwrap_or(0);
            } else {
                freed.results += 1;
            }
            if pending.remove(k.as_ref()) {
                batch.remove(k.clone());
                *ops += 1;
            }
            Ok(k)
        });
        if let Err(e) = remove_in_batches(tree, keys) {
            self.error = Some(e);
        }
    }
}

impl StateMachineStore {
    /// Apply entries from `entries` (at least one) until the batch holds
    /// about [`MAX_BATCH_OPS`] writes, then write that batch with the last
    /// applied entry's id: a crash leaves every group whole or absent.
    fn apply_group(&mut self, entries: &mut impl Iterator<Item = Entry>, out: &mut Vec<Response>) -> Result<(), StorageError> {
        let mut guard = self.applied.write().expect("state lock poisoned");
        let tree = self.tree.read().expect("tree lock poisoned").clone();
        let a = &mut *guard;
        let mut batch = sled::Batch::default();
        let mut ch = Changes::default();
        let mut sink = SledSink { tree: &tree, batch: &mut batch, pending: HashSet::new(), error: None, ops: 0 };
        for entry in entries.by_ref() {
            a.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Response::Ok),
                EntryPayload::Normal(req) => out.push(a.state.apply(&req, &mut sink, &mut ch)),
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Response::Ok);
                }
            }
            if sink.ops >= MAX_BATCH_OPS {
                break;
            }
        }
        if let Some(e) = sink.error.take() {
            return Err(sm_write(e));
        }
        drop(sink);
        // Who holds which frames, as applied: a line per event, with its
        // fields (the chaos checker replays them, tests/src/chaos.rs).
        for e in &ch.events {
            e.log();
        }
        for id in &ch.jobs {
            if let Some(j) = a.state.jobs.get_mut(id) {
                // The record without its plan and shards; then those that moved.
                let (shards, plan) = (std::mem::take(&mut j.shards), j.plan.take());
                let record = bincode::serialize(&*j);
                (j.shards, j.plan) = (shards, plan);
                batch.insert(job_key(*id), record.map_err(sm_write)?);
                let persisted = a.persisted.entry(*id).or_default();
                if let (Some(plan), false) = (&j.plan, persisted.plan) {
                    batch.insert(plan_key(*id), bincode::serialize(plan).map_err(sm_write)?);
                    persisted.plan = true;
                }
                let persisted = &mut persisted.shards;
                if let Some(rid) = &j.spec.request_id {
                    batch.insert(request_key(rid), bincode::serialize(id).map_err(sm_write)?);
                }
                for (i, s) in j.shards.iter().enumerate() {
                    if persisted.get(i) != Some(s) {
                        batch.insert(shard_key(*id, s.index), bincode::serialize(s).map_err(sm_write)?);
                        match persisted.get_mut(i) {
                            Some(p) => p.clone_from(s),
                            None => persisted.push(s.clone()),
                        }
                    }
                }
                if persisted.len() > j.shards.len() {
                    for gone in persisted.drain(j.shards.len()..) {
                        if !j.shards.iter().any(|s| s.index == gone.index) {
                            batch.remove(shard_key(*id, gone.index));
                        }
                    }
                }
            }
        }
        for (id, rid) in &ch.removed_jobs {
            batch.remove(job_key(*id));
            if let Some(rid) = rid {
                batch.remove(request_key(rid));
            }
            batch.remove(plan_key(*id));
            for s in a.persisted.remove(id).unwrap_or_default().shards {
                batch.remove(shard_key(*id, s.index));
            }
            for k in tree.scan_prefix(shards_prefix(*id)).keys() {
                batch.remove(k.map_err(sm_read)?);
            }
        }
        for name in &ch.workers {
            if let Some(w) = a.state.workers.get(name) {
                batch.insert(worker_key(name), bincode::serialize(w).map_err(sm_write)?);
            }
        }
        let counters = Counters { next_job: a.state.next_job, next_epoch: a.state.next_epoch };
        batch.insert(K_COUNTERS, bincode::serialize(&counters).map_err(sm_write)?);
        batch.insert(K_APPLIED, bincode::serialize(&a.last_applied).map_err(sm_write)?);
        batch.insert(K_MEMBERSHIP, bincode::serialize(&a.membership).map_err(sm_write)?);
        tree.apply_batch(batch).map_err(sm_write)?;
        let idx = a.last_applied.map(|l| l.index).unwrap_or(0);
        drop(guard);
        // A deleted job's pictures (this node's own copies; a crash before
        // this leaves them for `pictures::repair` to collect).
        for (id, _) in &ch.removed_jobs {
            self.pictures.delete_job(*id);
        }
        for (id, before) in &ch.trimmed_pictures {
            self.pictures.trim(*id, *before);
        }
        self.notify.send_replace(idx);
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let a = self.applied.read().expect("state lock poisoned");
        Ok((a.last_applied, a.membership.clone()))
    }

    /// Entries are applied in groups, each one sled batch that ends with
    /// the group's last log id: a group closes once its batch holds
    /// [`MAX_BATCH_OPS`] writes (a follower catching up is handed hundreds
    /// of entries at once, and sled's memory grows with the size of a batch).
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            self.apply_group(&mut entries, &mut out)?;
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            tree: self.tree.clone(),
            applied: self.applied.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
            publish: self.publish.clone(),
        }
    }

    /// A received snapshot is streamed to a file of its own in the snapshot
    /// directory, chunk by chunk, never held in memory.
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        if let Some(old) = self.receiving.take() {
            let _ = tokio::fs::remove_file(old).await;
        }
        let path = self.snapshot_dir.join(format!("recv-{}.part", unique()));
        let f = tokio::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).await.map_err(sm_write)?;
        self.receiving = Some(path);
        Ok(Box::new(f))
    }

    /// Install a received snapshot, atomically with respect to a crash at
    /// any point: its records are streamed into a fresh tree (checked
    /// against the file's checksum), made durable, and only then does one
    /// durable write name that tree the state machine. A crash before the
    /// switch leaves the old state (the new tree is dropped at start-up); a
    /// crash after it leaves the new one.
    async fn install_snapshot(&mut self, meta: &SnapshotMeta, mut snapshot: Box<tokio::fs::File>) -> Result<(), StorageError> {
        use tokio::io::AsyncWriteExt;
        snapshot.flush().await.map_err(sm_write)?;
        snapshot.sync_all().await.map_err(sm_write)?;
        let file = snapshot.into_std().await;
        let received = self.receiving.take();
        let (db, tree, applied, dir, publish, meta) =
            (self.db.clone(), self.tree.clone(), self.applied.clone(), self.snapshot_dir.clone(), self.publish.clone(), meta.clone());
        let idx = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        tokio::task::spawn_blocking(move || install_from_file(&db, &tree, &applied, &dir, &publish, &meta, file, received))
            .await
            .map_err(sm_write)??;
        self.notify.send_replace(idx);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let path = self.snapshot_dir.join(CURRENT_SNAPSHOT);
        let _guard = self.publish.lock().expect("publish lock poisoned");
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(sm_read(e)),
        };
        let meta = snapfile::read_meta(&file).map_err(sm_read)?;
        // Reopen: openraft reads the file from its start.
        let file = std::fs::File::open(&path).map_err(sm_read)?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) }))
    }
}

#[allow(clippy::too_many_arguments)]
fn install_from_file(
    db: &sled::Db,
    tree: &ActiveTree,
    applied: &RwLock<Applied>,
    dir: &Path,
    publish: &Mutex<()>,
    meta: &SnapshotMeta,
    mut file: std::fs::File,
    received: Option<PathBuf>,
) -> Result<(), StorageError> {
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0)).map_err(sm_read)?;
    let (mut reader, file_meta) = snapfile::Reader::new(&file).map_err(sm_read)?;
    if file_meta.last_log_id != meta.last_log_id || file_meta.snapshot_id != meta.snapshot_id {
        return Err(sm_read(std::io::Error::other(format!(
            "the received snapshot file is {} at {:?}, openraft installs {} at {:?}",
            file_meta.snapshot_id, file_meta.last_log_id, meta.snapshot_id, meta.last_log_id
        ))));
    }
    let old_name = tree.read().expect("tree lock poisoned").name();
    let new_name = format!("sm.{}", generation(&old_name) + 1);
    let _ = db.drop_tree(new_name.as_bytes());
    let new = db.open_tree(new_name.as_bytes()).map_err(sm_write)?;
    let mut fill = || -> Result<u64, StorageError> {
        let (mut batch, mut bytes, mut records) = (sled::Batch::default(), 0usize, 0u64);
        while let Some((k, v)) = reader.next_record().map_err(sm_read)? {
            bytes += k.len() + v.len();
            records += 1;
            batch.insert(k, v);
            if bytes >= INSTALL_BATCH_BYTES || records % MAX_BATCH_OPS as u64 == 0 {
                new.apply_batch(std::mem::take(&mut batch)).map_err(sm_write)?;
                bytes = 0;
            }
            crate::crash::point("snapshot-install:record");
        }
        batch.insert(K_APPLIED, bincode::serialize(&meta.last_log_id).map_err(sm_write)?);
        batch.insert(K_MEMBERSHIP, bincode::serialize(&meta.last_membership).map_err(sm_write)?);
        batch.insert(K_INSTALLED, bincode::serialize(&meta.last_log_id).map_err(sm_write)?);
        new.apply_batch(batch).map_err(sm_write)?;
        db.flush().map_err(sm_write)?;
        Ok(records)
    };
    let records = match fill() {
        Ok(n) => n,
        Err(e) => {
            drop(new);
            let _ = db.drop_tree(new_name.as_bytes());
            return Err(e);
        }
    };
    crate::crash::point("snapshot-install:before-switch");
    // The switch: one key, made durable.
    db.open_tree(META_TREE).and_then(|m| m.insert(K_ACTIVE, new_name.as_bytes())).map_err(sm_write)?;
    db.flush().map_err(sm_write)?;
    crate::crash::point("snapshot-install:after-switch");
    {
        let mut a = applied.write().expect("state lock poisoned");
        let state = load(&new)?;
        *tree.write().expect("tree lock poisoned") = new;
        *a = state;
    }
    if let Err(e) = db.drop_tree(&old_name) {
        tracing::warn!(error = %e, "dropping the replaced state tree failed; it is dropped at the next start");
    }
    tracing::info!(snapshot = %meta.snapshot_id, last_log_id = ?meta.last_log_id, records, "snapshot installed");
    // Keep the received file as this node's current snapshot: renamed when
    // it is the file begun for this reception, else (openraft may hand over
    // another file) streamed into a new one.
    use std::os::unix::fs::MetadataExt;
    let same = |p: &Path| -> bool {
        match (std::fs::metadata(p), file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    };
    let keep = match received {
        Some(p) if same(&p) => p,
        other => {
            if let Some(p) = other {
                let _ = std::fs::remove_file(p);
            }
            let copy = dir.join(format!("copy-{}.tmp", unique()));
            let mut out = std::fs::File::create(&copy).map_err(sm_write)?;
            file.seek(std::io::SeekFrom::Start(0)).map_err(sm_read)?;
            std::io::copy(&mut file, &mut out).map_err(sm_write)?;
            out.sync_all().map_err(sm_write)?;
            copy
        }
    };
    publish_snapshot(dir, publish, &keep, meta)?;
    Ok(())
}

/// Make `path` (a complete, synced snapshot file) the current snapshot by
/// one rename, unless the current one is newer.
fn publish_snapshot(dir: &Path, publish: &Mutex<()>, path: &Path, meta: &SnapshotMeta) -> Result<(), StorageError> {
    let sig = Some(meta.signature());
    let w = |e: std::io::Error| -> StorageError { StorageIOError::write_snapshot(sig.clone(), AnyError::new(&e)).into() };
    let _guard = publish.lock().expect("publish lock poisoned");
    let current = dir.join(CURRENT_SNAPSHOT);
    if let Ok(m) = std::fs::File::open(&current).and_then(snapfile::read_meta) {
        if m.last_log_id > meta.last_log_id {
            let _ = std::fs::remove_file(path);
            return Ok(());
        }
    }
    std::fs::rename(path, &current).map_err(w)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(w)?;
    Ok(())
}

pub struct SnapshotBuilder {
    db: sled::Db,
    tree: ActiveTree,
    applied: Arc<RwLock<Applied>>,
    snapshot_dir: PathBuf,
    publish: Arc<Mutex<()>>,
}

impl SnapshotBuilder {
    /// Stream the state tree into a new snapshot file; returns its meta and path.
    fn write(&self) -> Result<(SnapshotMeta, PathBuf), StorageError> {
        // Hold the read lock so no apply runs while the tree is written out:
        // the file and its last_applied agree. One record at a time.
        let a = self.applied.read().expect("state lock poisoned");
        let tree = self.tree.read().expect("tree lock poisoned").clone();
        let snapshot_id = match a.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, crate::now_ms()),
            None => format!("none-{}", crate::now_ms()),
        };
        let meta = SnapshotMeta { last_log_id: a.last_applied, last_membership: a.membership.clone(), snapshot_id };
        let path = self.snapshot_dir.join(format!("build-{}.tmp", unique()));
        let sig = Some(meta.signature());
        let w = |e: std::io::Error| -> StorageError { StorageIOError::write_snapshot(sig.clone(), AnyError::new(&e)).into() };
        let file = std::fs::File::create(&path).map_err(w)?;
        let mut out = snapfile::Writer::new(file, &meta).map_err(w)?;
        for item in tree.iter() {
            let (k, v) = item.map_err(sm_read)?;
            if [K_APPLIED, K_MEMBERSHIP, K_INSTALLED].contains(&k.as_ref()) {
                continue;
            }
            out.record(&k, &v).map_err(w)?;
        }
        let (file, _) = out.finish().map_err(w)?;
        drop(a);
        file.sync_all().map_err(w)?;
        Ok((meta, path))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let this = SnapshotBuilder {
            db: self.db.clone(),
            tree: self.tree.clone(),
            applied: self.applied.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
            publish: self.publish.clone(),
        };
        let (meta, path) = tokio::task::spawn_blocking(move || -> Result<_, StorageError> {
            let (meta, path) = this.write()?;
            // The state machine is written without fsync; make it durable
            // before openraft may purge the log entries this snapshot covers.
            this.db.flush().map_err(sm_write)?;
            publish_snapshot(&this.snapshot_dir, &this.publish, &path, &meta)?;
            Ok((meta, path))
        })
        .await
        .map_err(sm_write)??;
        let _ = path;
        let file = tokio::fs::File::open(self.snapshot_dir.join(CURRENT_SNAPSHOT)).await.map_err(sm_read)?;
        Ok(Snapshot { meta, snapshot: Box::new(file) })
    }
}
