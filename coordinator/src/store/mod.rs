//! The state machine on sled: every applied batch of log entries becomes one
//! atomic sled batch (changed jobs, workers, counters, new results and the
//! last applied log id together), so a crash leaves the store at some applied
//! index and openraft re-applies what follows from the log.
//!
//! Layout of the `sm` tree (ids big-endian so scans run in order):
//! `m/applied`, `m/membership`, `m/counters` · `j/<job>` · `w/<name>` ·
//! `q/<request id>` · `r/<job><frame><model index>` → (timestamp, JSON) ·
//! `k/<job><frame><model index>` → the marks of its detections (track ids,
//! zones; merged into the results on read) ·
//! `s/<job><shard>`, `p/<job>`, `a/<job><seq>`, `v/<job><seq>` (a job's
//! shards, plan, recorded alerts and track events, kept out of its record so
//! that it stays small) ·
//! `f/<job><frame>` → the reference of the frame's stored picture ([`PictureRef`]; the
//! picture itself is in this node's [`PictureStore`](crate::pictures::store::PictureStore), outside Raft).
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

use crate::state::apply::{Changes, ResultSink, State};
use crate::state::command::{Freed, PictureRef, Response};
use crate::pictures::PictureHome;
use crate::raft::types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::raft::log_store::{remove_in_batches, MAX_BATCH_OPS};

mod keys;
pub mod snapfile;
mod reader;
mod sink;
mod snapshot;

pub use keys::*;
pub use reader::*;
use sink::*;
pub use snapshot::*;

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
    shards: Vec<crate::state::model::Shard>,
    /// The number of the last alert written under its key.
    alerts: u64,
    /// The first alert number kept under its key.
    alerts_from: u64,
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
        let job: crate::state::model::Job = bincode::deserialize(&v).map_err(sm_read)?;
        a.state.jobs.insert(job.id, job);
    }
    // Shards in key order: (job, index). A job written before shards had
    // keys of their own keeps the ones in its record.
    // `s/<job>…` and `p/<job>`: the job id after the two-byte prefix.
    let job_of = |k: &[u8]| -> Result<u64, StorageError> {
        k.get(2..10).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).ok_or_else(|| sm_read(std::io::Error::other(format!("bad key {k:?}"))))
    };
    let mut shards: HashMap<u64, Vec<crate::state::model::Shard>> = HashMap::new();
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
    // Alerts in key order: (job, sequence number).
    for item in tree.scan_prefix(b"a/") {
        let (k, v) = item.map_err(sm_read)?;
        if let Some(j) = a.state.jobs.get_mut(&job_of(&k)?) {
            j.alerts.fired.push(bincode::deserialize(&v).map_err(sm_read)?);
        }
    }
    a.persisted = a
        .state
        .jobs
        .iter()
        .map(|(id, j)| (*id, Persisted { plan: planned.contains(id), shards: j.shards.clone(), alerts: j.alerts.recorded(), alerts_from: j.alerts.first_seq() }))
        .collect();
    for item in tree.scan_prefix(b"w/") {
        let (_, v) = item.map_err(sm_read)?;
        let w: crate::state::model::WorkerRec = bincode::deserialize(&v).map_err(sm_read)?;
        a.state.workers.insert(w.name.clone(), w);
    }
    for item in tree.scan_prefix(b"q/") {
        let (k, v) = item.map_err(sm_read)?;
        let rid = String::from_utf8_lossy(&k[2..]).to_string();
        a.state.request_ids.insert(rid, bincode::deserialize(&v).map_err(sm_read)?);
    }
    Ok(a)
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
                // The record without its plan, shards and alerts; then those that moved.
                let (shards, plan, fired) = (std::mem::take(&mut j.shards), j.plan.take(), std::mem::take(&mut j.alerts.fired));
                let record = bincode::serialize(&*j);
                (j.shards, j.plan, j.alerts.fired) = (shards, plan, fired);
                batch.insert(job_key(*id), record.map_err(sm_write)?);
                let persisted = a.persisted.entry(*id).or_default();
                for (seq, f) in j.alerts.numbered().filter(|(seq, _)| *seq > persisted.alerts) {
                    batch.insert(alert_key(*id, seq), bincode::serialize(f).map_err(sm_write)?);
                }
                persisted.alerts = j.alerts.recorded();
                // Alerts retention deleted (their frames' results went).
                for seq in persisted.alerts_from..j.alerts.first_seq() {
                    batch.remove(alert_key(*id, seq));
                }
                persisted.alerts_from = j.alerts.first_seq();
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
            for k in tree.scan_prefix(shards_prefix(*id)).keys().chain(tree.scan_prefix(alerts_prefix(*id)).keys()) {
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
