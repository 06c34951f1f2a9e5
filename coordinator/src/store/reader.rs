//! Reading the applied state and results ([`StateReader`]): a cheap handle
//! the services share.
#[allow(unused_imports)]
use super::*;

/// The sled tree that holds the state machine now. Installing a snapshot
/// fills a fresh tree and then switches to it, so readers ask for the
/// current one each time.
pub(super) type ActiveTree = Arc<RwLock<sled::Tree>>;

/// A cheap handle for reading the applied state and results.
#[derive(Clone)]
pub struct StateReader {
    pub(super) applied: Arc<RwLock<Applied>>,
    pub(super) db: sled::Db,
    pub(super) tree: ActiveTree,
    pub(super) notify: watch::Receiver<u64>,
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
        self.results_from(job, frame, 0, after, limit)
    }

    /// [`Self::results`] of frames from `from_frame` on.
    pub fn results_from(&self, job: u64, frame: Option<u64>, from_frame: u64, after: Option<&[u8]>, limit: usize) -> (Vec<ResultRow>, Option<Vec<u8>>) {
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
            None if frame.is_none() && from_frame > 0 => Box::new(tree.range(result_key(job, from_frame, 0)..).take_while({
                let prefix = prefix.clone();
                move |r| r.as_ref().map(|(k, _)| k.starts_with(&prefix)).unwrap_or(true)
            })),
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
        self.mark(&tree, job, &mut rows);
        (rows, last)
    }

    /// Retention: the first frame at or after `from` whose results are
    /// stamped `cutoff` or later, scanning at most `max_rows` rows (then the
    /// frame reached so far); `None` when nothing before it is older.
    pub fn retention_cut(&self, job: u64, from: u64, cutoff: f64, max_rows: usize) -> Option<u64> {
        let mut cut = from;
        let rows = self.tree().range(result_key(job, from, 0)..results_prefix(job.saturating_add(1))).flatten().filter_map(|(k, v)| decode_result(&k, &v));
        for (n, row) in rows.enumerate() {
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
        let tree = self.tree();
        let mut rows: Vec<ResultRow> = tree.range(result_key(job, start, 0)..result_key(job, end, 0)).flatten().filter_map(|(k, v)| decode_result(&k, &v)).collect();
        self.mark(&tree, job, &mut rows);
        rows
    }

    /// Put the marks of `rows`' detections (their track ids and zones,
    /// `k/`) into their results. `rows` are in (frame, model) order.
    fn mark(&self, tree: &sled::Tree, job: u64, rows: &mut [ResultRow]) {
        let (Some(first), Some(last)) = (rows.first().map(|r| r.frame), rows.last().map(|r| r.frame)) else { return };
        let mut at = 0;
        for (k, v) in tree.range(marks_key(job, first, 0)..=marks_key(job, last, u8::MAX)).flatten() {
            let Some((frame, model, marks)) = decode_marks(&k, &v) else { continue };
            while at < rows.len() && (rows[at].frame, rows[at].model) < (frame, model) {
                at += 1;
            }
            if let Some(r) = rows.get_mut(at).filter(|r| (r.frame, r.model) == (frame, model)) {
                r.results_json = panoptes_common::tracking::annotate_json(&r.results_json, &marks);
            }
        }
    }

    /// A job's recorded track event number `seq`.
    pub fn track_event(&self, job: u64, seq: u64) -> Option<panoptes_common::tracking::TrackEvent> {
        bincode::deserialize(&self.tree().get(track_event_key(job, seq)).ok()??).ok()
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
