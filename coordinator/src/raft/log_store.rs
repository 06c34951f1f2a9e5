//! The Raft log and vote, stored in sled.
//!
//! Layout (two trees of the coordinator's single `sled::Db`; no other tree is touched):
//!
//! * `raft_log`:  key = log index as `u64` big-endian (so key order is index order),
//!   value = bincode([`Entry`]).
//! * `raft_meta`: `vote` → bincode(`Vote`), `last_purged_log_id` → bincode(`LogId`),
//!   `committed` → bincode(`Option<LogId>`).
//!
//! Durability: `append` (before the flush callback fires), `save_vote`, `truncate` and `purge`
//! all flush (see [`flush`]) before reporting success. `save_committed` does not flush on its own:
//! sled recovers a prefix of its writes after a crash, and the committed id is written after the
//! entries it refers to, so a recovered committed id never points past the recovered log; it is
//! made durable by the next flush (append, vote, or sled's periodic flush, or on drop).
//!
//! Writes are serialized by openraft (all `RaftLogStorage` methods are called from the Raft core
//! task, one at a time); the cloned readers handed out by `get_log_reader` only read.
// openraft's StorageError is large; it is the error type the traits demand.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::time::Duration;

use openraft::storage::{LogFlushed, RaftLogStorage};

/// Make everything written to sled so far durable, on tokio's blocking pool.
///
/// Not `flush_async`: sled 0.34 runs that flush on its own small thread pool,
/// which also performs the writes the flush waits for, so concurrent flushes
/// can occupy every pool thread and wait for each other forever (sled issues
/// #1241 and #1308; it hung our in-process Raft test under load).
pub async fn flush(tree: &sled::Tree) -> sled::Result<usize> {
    let t = tree.clone();
    match tokio::task::spawn_blocking(move || t.flush()).await {
        Ok(r) => r,
        Err(e) => Err(sled::Error::ReportableBug(format!("the flush task failed: {e}"))),
    }
}
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::raft::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// Name of the sled tree holding log entries.
pub const LOG_TREE: &str = "raft_log";
/// Name of the sled tree holding the vote, last purged log id and committed log id.
pub const META_TREE: &str = "raft_meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged_log_id";
const KEY_COMMITTED: &[u8] = b"committed";

/// How often, and how long apart, [`open_db`] retries when sled cannot lock the database.
const OPEN_RETRIES: u32 = 50;
const OPEN_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Open (or create) the sled database at `path`.
///
/// Reopening a path in the same process right after dropping the previous `sled::Db` sometimes
/// fails with "could not acquire lock" while sled's background threads still hold the old file;
/// that case is retried (up to 50 × 100 ms). Any other error is returned at once. This blocks the
/// calling thread while retrying: from async code prefer `tokio::task::spawn_blocking`.
pub fn open_db(path: &Path) -> io::Result<sled::Db> {
    open_db_with_cache(path, DEFAULT_CACHE_BYTES, true)
}

/// The most writes in one sled batch, where we choose (a purge here; the
/// state machine's applies, deletions and snapshot installs). sled's memory
/// grows with the size of a batch and is not given back: 500,000 small
/// records inserted in 8 MiB batches took a process to 1.6 GiB, in 64 KiB
/// batches to 125 MiB; removing them in one batch, 1.7 GiB, in batches of
/// 500, 124 MiB (sled 0.34.7, measured in session 9;
/// `coordinator/tests/install_memory.rs`).
pub const MAX_BATCH_OPS: usize = 1000;

/// Remove `keys` from `tree` in order, in batches of [`MAX_BATCH_OPS`]: a
/// crash midway leaves the keys after some point, never a gap before it.
pub fn remove_in_batches(tree: &sled::Tree, keys: impl IntoIterator<Item = sled::Result<sled::IVec>>) -> sled::Result<()> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for key in keys {
        batch.remove(key?);
        n += 1;
        if n == MAX_BATCH_OPS {
            tree.apply_batch(std::mem::take(&mut batch))?;
            n = 0;
        }
    }
    if n > 0 {
        tree.apply_batch(batch)?;
    }
    Ok(())
}

/// sled's page cache when the config does not say (`coordinator.cache_mb`);
/// sled's own default is 1 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// The zstd level of sled's pages in a store this build creates. sled
/// compresses each message it writes to its log-structured file; the
/// results (JSON) and Raft log entries compress about 3.5×, and so does the
/// garbage sled keeps between segment cleanings, which is what made a
/// coordinator's data directory 1.6–1.7× the bytes it holds at a picture a
/// second (1.03–1.09× with this and compressed snapshots;
/// docs/BENCHMARKS.md). The price is CPU: none measurable a frame on a
/// 20-minute clip, but one coordinator's highest commit rate (a simulated
/// camera sent as fast as it commits) falls from ~8,200 to ~4,800 frames/s:
/// sled compresses each small message on its own. `coordinator.compress_store
/// = false` makes the other choice. Levels of 13 and above are avoided: the
/// zstd 1.5.1 that sled 0.34's `zstd` 0.9 bundles had a rare corruption bug
/// there (zstd PR 3517).
pub const STORE_ZSTD_LEVEL: i32 = 3;

/// Whether the sled store at `path` was created compressed, from its `conf`
/// file; `None` for a new store. sled refuses to open a store with a setting
/// other than the one it was created with, so a data directory made by an
/// earlier build (uncompressed) stays uncompressed and keeps working.
fn created_compressed(path: &Path) -> Option<bool> {
    let conf = std::fs::read(path.join("conf")).ok()?;
    let text = String::from_utf8_lossy(&conf);
    text.lines().find_map(|l| l.strip_prefix("use_compression:")).map(|v| v.trim() == "true")
}

/// [`open_db`] with sled's page cache bounded to `cache_bytes`, a new store
/// compressed ([`STORE_ZSTD_LEVEL`]) or not as `compress` says
/// (`coordinator.compress_store`); an existing one is opened as it was
/// created.
pub fn open_db_with_cache(path: &Path, cache_bytes: u64, compress: bool) -> io::Result<sled::Db> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let compress = created_compressed(path).unwrap_or(compress);
        let cfg = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .use_compression(compress)
            .compression_factor(STORE_ZSTD_LEVEL);
        match cfg.open() {
            Ok(db) => return Ok(db),
            Err(e) => {
                let e = io::Error::from(e);
                let lock_busy = e.to_string().contains("could not acquire lock");
                if lock_busy && attempt < OPEN_RETRIES {
                    std::thread::sleep(OPEN_RETRY_DELAY);
                    continue;
                }
                let what = if lock_busy {
                    format!("still locked after {attempt} attempts (is another process using it?)")
                } else {
                    "open failed".to_string()
                };
                return Err(io::Error::new(e.kind(), format!("sled database {}: {what}: {e}", path.display())));
            }
        }
    }
}

/// Raft log storage backed by two sled trees. Cheap to clone: clones share the tree handles.
#[derive(Clone)]
pub struct LogStore {
    logs: sled::Tree,
    meta: sled::Tree,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("entries", &self.logs.len()).finish()
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, bincode::Error> {
    bincode::serialize(v)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(bytes)
}

fn read_logs_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_logs_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn read_vote_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_vote(AnyError::new(&e)).into()
}

fn write_vote_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_vote(AnyError::new(&e)).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read(AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write(AnyError::new(&e)).into()
}

/// Turn any `RangeBounds<u64>` into a half-open `[start, end)` over `u128`, so that
/// `..=u64::MAX` and `Excluded(u64::MAX)` need no special cases.
fn half_open(range: &impl RangeBounds<u64>) -> (u128, u128) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s as u128,
        Bound::Excluded(&s) => s as u128 + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e as u128 + 1,
        Bound::Excluded(&e) => e as u128,
        Bound::Unbounded => u64::MAX as u128 + 1,
    };
    (start, end)
}

impl LogStore {
    /// Open the log store on `db`, using (creating if needed) only the trees
    /// [`LOG_TREE`] and [`META_TREE`].
    pub fn open(db: &sled::Db) -> Result<LogStore, StorageError> {
        let logs = db.open_tree(LOG_TREE).map_err(read_logs_err)?;
        let meta = db.open_tree(META_TREE).map_err(read_err)?;
        Ok(LogStore { logs, meta })
    }

    /// Entries with index in `range`, in index order; absent entries are skipped.
    fn read_range(&self, range: &impl RangeBounds<u64>) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = half_open(range);
        if start >= end || start > u64::MAX as u128 {
            return Ok(Vec::new());
        }
        let lo = Bound::Included(index_key(start as u64));
        let hi = if end > u64::MAX as u128 { Bound::Unbounded } else { Bound::Excluded(index_key(end as u64)) };
        let mut out = Vec::new();
        for kv in self.logs.range::<[u8; 8], _>((lo, hi)) {
            let (_k, v) = kv.map_err(read_logs_err)?;
            out.push(decode::<Entry>(&v).map_err(read_logs_err)?);
        }
        Ok(out)
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.logs.last().map_err(read_logs_err)? {
            None => Ok(None),
            Some((_k, v)) => Ok(Some(decode::<Entry>(&v).map_err(read_logs_err)?.log_id)),
        }
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        match self.meta.get(KEY_LAST_PURGED).map_err(read_logs_err)? {
            None => Ok(None),
            Some(v) => Ok(Some(decode::<LogId>(&v).map_err(read_logs_err)?)),
        }
    }

    /// Remove every entry with index in `range`: in one sled batch, or with
    /// `chunked` (a purge removes up to `snapshot_logs` entries) by
    /// [`remove_in_batches`] from the lowest index up, so a crash midway
    /// leaves the entries above a point, never a hole.
    fn remove_range(&self, range: impl RangeBounds<u64>, chunked: bool) -> Result<(), StorageError> {
        let (start, end) = half_open(&range);
        if start >= end || start > u64::MAX as u128 {
            return Ok(());
        }
        let lo = Bound::Included(index_key(start as u64));
        let hi = if end > u64::MAX as u128 { Bound::Unbounded } else { Bound::Excluded(index_key(end as u64)) };
        let keys = self.logs.range::<[u8; 8], _>((lo, hi)).keys();
        if chunked {
            return remove_in_batches(&self.logs, keys).map_err(write_logs_err);
        }
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key.map_err(write_logs_err)?);
        }
        self.logs.apply_batch(batch).map_err(write_logs_err)
    }

    async fn flush_logs(&self) -> Result<(), StorageError> {
        // Flushing any tree flushes the whole sled page cache (and fsyncs).
        flush(&self.logs).await.map_err(write_logs_err)?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_range(&range)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        // Normally the last entry is above the purge point; `max` also covers an empty log and
        // leftovers of a purge interrupted by a crash.
        let last_log_id = std::cmp::max(self.last_entry_log_id()?, last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = encode(vote).map_err(write_vote_err)?;
        self.meta.insert(KEY_VOTE, bytes).map_err(write_vote_err)?;
        flush(&self.meta).await.map_err(write_vote_err)?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        match self.meta.get(KEY_VOTE).map_err(read_vote_err)? {
            None => Ok(None),
            Some(v) => Ok(Some(decode(&v).map_err(read_vote_err)?)),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // See the module docs for why this is not flushed here.
        let bytes = encode(&committed).map_err(write_err)?;
        self.meta.insert(KEY_COMMITTED, bytes).map_err(write_err)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        match self.meta.get(KEY_COMMITTED).map_err(read_err)? {
            None => Ok(None),
            Some(v) => Ok(decode::<Option<LogId>>(&v).map_err(read_err)?),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for entry in entries {
            let bytes = encode(&entry).map_err(write_logs_err)?;
            batch.insert(&index_key(entry.log_id.index), bytes);
            any = true;
        }
        if any {
            // One atomic batch: a crash never leaves a hole in the middle of an append.
            self.logs.apply_batch(batch).map_err(write_logs_err)?;
        }
        // Entries are readable now; make them durable before reporting the IO complete.
        match flush(&self.logs).await {
            Ok(_) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let io_err = io::Error::from(e);
                let sto = StorageError::from(StorageIOError::write_logs(AnyError::new(&io_err)));
                callback.log_io_completed(Err(io_err));
                Err(sto)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncate raft log since (inclusive)");
        self.remove_range(log_id.index.., false)?;
        self.flush_logs().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purge raft log up to (inclusive)");
        // Record the purge point first: if we crash before the entries are gone, get_log_state
        // still reports a consistent state and the next purge removes the leftovers.
        let bytes = encode(&log_id).map_err(write_logs_err)?;
        self.meta.insert(KEY_LAST_PURGED, bytes).map_err(write_logs_err)?;
        self.remove_range(..=log_id.index, true)?;
        self.flush_logs().await
    }
}
