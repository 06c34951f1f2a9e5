//! The state machine on sled: every applied batch of log entries becomes one
//! atomic sled batch (changed jobs, workers, counters, new results and the
//! last applied log id together), so a crash leaves the store at some applied
//! index and openraft re-applies what follows from the log.
//!
//! Layout of the `sm` tree (ids big-endian so scans run in order):
//! `m/applied`, `m/membership`, `m/counters` · `j/<job>` · `w/<name>` ·
//! `q/<request id>` · `r/<job><frame><model index>` → (timestamp, JSON) ·
//! `f/<job><frame>` → the frame's stored picture ([`FrameImage`]).
use std::collections::HashSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::apply::{Changes, ResultSink, State};
use super::command::{FrameImage, Freed, Response};
use crate::raft::types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const K_APPLIED: &[u8] = b"m/applied";
const K_MEMBERSHIP: &[u8] = b"m/membership";
const K_COUNTERS: &[u8] = b"m/counters";

fn job_key(job: u64) -> Vec<u8> {
    let mut k = b"j/".to_vec();
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
}

/// A cheap handle for reading the applied state and results.
#[derive(Clone)]
pub struct StateReader {
    applied: Arc<RwLock<Applied>>,
    db: sled::Db,
    tree: sled::Tree,
    notify: watch::Receiver<u64>,
}

impl StateReader {
    /// Run `f` on the applied state under a read lock (keep it short).
    pub fn read<T>(&self, f: impl FnOnce(&Applied) -> T) -> T {
        f(&self.applied.read().expect("state lock poisoned"))
    }

    /// Results of `job` in (frame, model) order, optionally one frame only,
    /// starting after `after` (a key from a previous call).
    pub fn results(&self, job: u64, frame: Option<u64>, after: Option<&[u8]>, limit: usize) -> (Vec<ResultRow>, Option<Vec<u8>>) {
        let prefix = match frame {
            Some(f) => {
                let mut p = results_prefix(job);
                p.extend_from_slice(&f.to_be_bytes());
                p
            }
            None => results_prefix(job),
        };
        let mut rows = Vec::new();
        let mut last = None;
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match after {
            Some(a) => {
                let mut start = a.to_vec();
                start.push(0);
                Box::new(self.tree.range(start..).take_while({
                    let prefix = prefix.clone();
                    move |r| r.as_ref().map(|(k, _)| k.starts_with(&prefix)).unwrap_or(true)
                }))
            }
            None => Box::new(self.tree.scan_prefix(&prefix)),
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

    /// Results of `job` for frames in `[start, end)`, in (frame, model) order.
    pub fn results_between(&self, job: u64, start: u64, end: u64) -> Vec<ResultRow> {
        if end <= start {
            return Vec::new();
        }
        self.tree.range(result_key(job, start, 0)..result_key(job, end, 0)).flatten().filter_map(|(k, v)| decode_result(&k, &v)).collect()
    }

    /// The stored picture of a frame, if the job kept one.
    pub fn frame_image(&self, job: u64, frame: u64) -> Option<FrameImage> {
        let v = self.tree.get(frame_key(job, frame)).ok()??;
        bincode::deserialize(&v).ok()
    }

    /// How many pictures a job has stored, and their bytes.
    pub fn frame_images_size(&self, job: u64) -> (u64, u64) {
        let mut n = 0;
        let mut bytes = 0;
        for (_, v) in self.tree.scan_prefix(frames_prefix(job)).flatten() {
            n += 1;
            bytes += v.len() as u64;
        }
        (n, bytes)
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

pub struct StateMachineStore {
    db: sled::Db,
    tree: sled::Tree,
    applied: Arc<RwLock<Applied>>,
    notify: watch::Sender<u64>,
    snapshot_dir: PathBuf,
}

impl StateMachineStore {
    pub fn open(db: &sled::Db, snapshot_dir: PathBuf) -> Result<Self, StorageError> {
        std::fs::create_dir_all(&snapshot_dir).map_err(sm_read)?;
        let tree = db.open_tree("sm").map_err(sm_read)?;
        let applied = load(&tree)?;
        let idx = applied.last_applied.map(|l| l.index).unwrap_or(0);
        let (notify, _) = watch::channel(idx);
        Ok(Self { db: db.clone(), tree, applied: Arc::new(RwLock::new(applied)), notify, snapshot_dir })
    }

    pub fn reader(&self) -> StateReader {
        StateReader { applied: self.applied.clone(), db: self.db.clone(), tree: self.tree.clone(), notify: self.notify.subscribe() }
    }
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
        self.pending.insert(k);
    }

    fn put_frame(&mut self, job: u64, frame: u64, image: &FrameImage) {
        match bincode::serialize(image) {
            Ok(v) => self.batch.insert(frame_key(job, frame), v),
            Err(e) => self.error = Some(sled::Error::Unsupported(e.to_string())),
        }
    }

    fn delete_job(&mut self, job: u64) -> Freed {
        let mut freed = Freed::default();
        for (prefix, is_frame) in [(results_prefix(job), false), (frames_prefix(job), true)] {
            for item in self.tree.scan_prefix(&prefix) {
                let (k, v) = match item {
                    Ok(kv) => kv,
                    Err(e) => {
                        self.error = Some(e);
                        return freed;
                    }
                };
                freed.bytes += (k.len() + v.len()) as u64;
                if is_frame {
                    freed.frames += 1;
                } else {
                    freed.results += 1;
                }
                self.batch.remove(k.clone());
                self.pending.remove(k.as_ref());
            }
        }
        freed
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let a = self.applied.read().expect("state lock poisoned");
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut guard = self.applied.write().expect("state lock poisoned");
        let a = &mut *guard;
        let mut batch = sled::Batch::default();
        let mut ch = Changes::default();
        let mut out = Vec::new();
        let mut sink = SledSink { tree: &self.tree, batch: &mut batch, pending: HashSet::new(), error: None };
        for entry in entries {
            a.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Response::Ok),
                EntryPayload::Normal(req) => out.push(a.state.apply(&req, &mut sink, &mut ch)),
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Response::Ok);
                }
            }
        }
        if let Some(e) = sink.error.take() {
            return Err(sm_write(e));
        }
        drop(sink);
        for id in &ch.jobs {
            if let Some(j) = a.state.jobs.get(id) {
                batch.insert(job_key(*id), bincode::serialize(j).map_err(sm_write)?);
                if let Some(rid) = &j.spec.request_id {
                    batch.insert(request_key(rid), bincode::serialize(id).map_err(sm_write)?);
                }
            }
        }
        for (id, rid) in &ch.removed_jobs {
            batch.remove(job_key(*id));
            if let Some(rid) = rid {
                batch.remove(request_key(rid));
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
        self.tree.apply_batch(batch).map_err(sm_write)?;
        let idx = a.last_applied.map(|l| l.index).unwrap_or(0);
        drop(guard);
        self.notify.send_replace(idx);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            tree: self.tree.clone(),
            applied: self.applied.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = bincode::deserialize(&data).map_err(sm_read)?;
        {
            let mut guard = self.applied.write().expect("state lock poisoned");
            self.tree.clear().map_err(sm_write)?;
            let mut batch = sled::Batch::default();
            for (k, v) in rows {
                batch.insert(k, v);
            }
            batch.insert(K_APPLIED, bincode::serialize(&meta.last_log_id).map_err(sm_write)?);
            batch.insert(K_MEMBERSHIP, bincode::serialize(&meta.last_membership).map_err(sm_write)?);
            self.tree.apply_batch(batch).map_err(sm_write)?;
            *guard = load(&self.tree)?;
        }
        crate::raft::log_store::flush(&self.db).await.map_err(sm_write)?;
        save_snapshot_files(&self.snapshot_dir, meta, &data)?;
        self.notify.send_replace(meta.last_log_id.map(|l| l.index).unwrap_or(0));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let meta_path = self.snapshot_dir.join("current.meta");
        if !meta_path.exists() {
            return Ok(None);
        }
        let meta: SnapshotMeta = bincode::deserialize(&std::fs::read(&meta_path).map_err(sm_read)?).map_err(sm_read)?;
        let data = std::fs::read(self.snapshot_dir.join("current.snap")).map_err(sm_read)?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn save_snapshot_files(dir: &Path, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
    let sig = Some(meta.signature());
    let w = |e: std::io::Error| -> StorageError { StorageIOError::write_snapshot(sig.clone(), AnyError::new(&e)).into() };
    write_durably(&dir.join("current.snap"), data).map_err(w)?;
    let m = bincode::serialize(meta).map_err(sm_write)?;
    write_durably(&dir.join("current.meta"), &m).map_err(w)?;
    Ok(())
}

pub struct SnapshotBuilder {
    db: sled::Db,
    tree: sled::Tree,
    applied: Arc<RwLock<Applied>>,
    snapshot_dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Hold the read lock so no apply runs while the tree is copied: the
        // copy and its last_applied agree.
        let (rows, last_applied, membership) = {
            let a = self.applied.read().expect("state lock poisoned");
            let mut rows = Vec::new();
            for item in self.tree.iter() {
                let (k, v) = item.map_err(sm_read)?;
                if k.as_ref() == K_APPLIED || k.as_ref() == K_MEMBERSHIP {
                    continue;
                }
                rows.push((k.to_vec(), v.to_vec()));
            }
            (rows, a.last_applied, a.membership.clone())
        };
        // The state machine is written without fsync; make it durable before
        // openraft may purge the log entries this snapshot covers.
        crate::raft::log_store::flush(&self.db).await.map_err(sm_write)?;
        let data = bincode::serialize(&rows).map_err(sm_write)?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, crate::now_ms()),
            None => format!("none-{}", crate::now_ms()),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        save_snapshot_files(&self.snapshot_dir, &meta, &data)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}
