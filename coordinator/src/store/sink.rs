//! Results and frame references written during one apply call ([`SledSink`]),
//! checked against the tree and the batch not yet written.
#[allow(unused_imports)]
use super::*;

/// Results written during one apply call, checked against the tree and the
/// not-yet-written batch.
pub(super) struct SledSink<'a> {
    pub(super) tree: &'a sled::Tree,
    pub(super) batch: &'a mut sled::Batch,
    pub(super) pending: HashSet<Vec<u8>>,
    pub(super) error: Option<sled::Error>,
    /// Writes in `batch` so far.
    pub(super) ops: usize,
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

    fn put_marks(&mut self, job: u64, frame: u64, model: u8, marks: &[panoptes_common::tracking::Mark]) {
        match bincode::serialize(marks) {
            Ok(v) => self.batch.insert(marks_key(job, frame, model), v),
            Err(e) => self.error = Some(sled::Error::Unsupported(e.to_string())),
        }
        self.ops += 1;
    }

    fn put_track_event(&mut self, job: u64, seq: u64, event: &panoptes_common::tracking::TrackEvent) {
        match bincode::serialize(event) {
            Ok(v) => self.batch.insert(track_event_key(job, seq), v),
            Err(e) => self.error = Some(sled::Error::Unsupported(e.to_string())),
        }
        self.ops += 1;
    }

    fn trim_track_events(&mut self, job: u64, from_seq: u64, before_frame: u64) -> u64 {
        let mut next = from_seq;
        let gone: Vec<sled::IVec> = self
            .tree
            .range(track_event_key(job, from_seq)..track_events_prefix(job.saturating_add(1)))
            .flatten()
            .take_while(|(k, v)| k.starts_with(&track_events_prefix(job)) && bincode::deserialize::<panoptes_common::tracking::TrackEvent>(v).is_ok_and(|e| e.frame < before_frame))
            .map(|(k, _)| k)
            .collect();
        for k in gone {
            next = k.get(10..18).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).map_or(next, |s| s + 1);
            self.batch.remove(k);
            self.ops += 1;
        }
        next
    }

    fn trim(&mut self, job: u64, from: u64, before: u64, results: bool, pictures: bool) -> Freed {
        let mut freed = Freed::default();
        if results {
            self.remove_range(result_key(job, from, 0), result_key(job, before, 0), false, &mut freed);
            self.remove_range(marks_key(job, from, 0), marks_key(job, before, 0), false, &mut freed);
        }
        if pictures {
            self.remove_range(frame_key(job, from), frame_key(job, before), true, &mut freed);
        }
        freed
    }

    fn delete_job(&mut self, job: u64) -> Freed {
        let mut freed = Freed::default();
        for (prefix, is_frame) in [(results_prefix(job), false), (marks_prefix(job), false), (frames_prefix(job), true), (track_events_prefix(job), false)] {
            // Every key of the job: the prefix, then a frame number (and a
            // model), or a track event's number.
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
            } else if k.starts_with(b"r/") {
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
