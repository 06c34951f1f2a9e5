//! Snapshots: installing a received one into a fresh tree, publishing the
//! current file, and building one ([`SnapshotBuilder`]).
#[allow(unused_imports)]
use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) fn install_from_file(
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
pub(super) fn publish_snapshot(dir: &Path, publish: &Mutex<()>, path: &Path, meta: &SnapshotMeta) -> Result<(), StorageError> {
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
    pub(super) db: sled::Db,
    pub(super) tree: ActiveTree,
    pub(super) applied: Arc<RwLock<Applied>>,
    pub(super) snapshot_dir: PathBuf,
    pub(super) publish: Arc<Mutex<()>>,
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
