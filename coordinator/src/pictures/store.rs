//! A coordinator's own copy of stored pictures, outside the Raft log and the
//! state machine: per job, append-only segment files
//! (`pictures/<job>/<segment>.pics`, raw JPEG bytes back to back) and an
//! index in this node's sled database (trees `pic_index`, `pic_segments`),
//! which is not replicated. Raft carries only a [`PictureRef`] per picture.
//!
//! A put is durable when it returns (segment fsync, then the index flushed).
//! A crash between the two leaves bytes that no index entry names: the
//! picture counts as missing here and is fetched again from a peer
//! (`pictures::repair`). Deleting a job removes its folder; retention
//! deletes whole segments, so the disk is given back at once.
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::state::command::{FrameImage, PictureRef};

/// A segment is closed and a new one begun past this size.
const SEGMENT_BYTES: u64 = 32 << 20;

/// Where one picture lies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Loc {
    seg: u64,
    offset: u64,
    len: u32,
    crc: u32,
    width: u32,
    height: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct SegMeta {
    /// The largest frame number in the segment, and its bytes.
    max_frame: u64,
    bytes: u64,
}

struct OpenSegment {
    id: u64,
    file: File,
    len: u64,
}

pub struct PictureStore {
    dir: PathBuf,
    db: sled::Db,
    /// `<job><frame><epoch>` → [`Loc`].
    index: sled::Tree,
    /// `<job><segment>` → [`SegMeta`].
    segments: sled::Tree,
    /// The segment each job appends to; puts are serialised by this lock.
    open: Mutex<HashMap<u64, OpenSegment>>,
}

fn key(job: u64, frame: u64, epoch: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&job.to_be_bytes());
    k[8..16].copy_from_slice(&frame.to_be_bytes());
    k[16..].copy_from_slice(&epoch.to_be_bytes());
    k
}

fn seg_key(job: u64, seg: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&job.to_be_bytes());
    k[8..].copy_from_slice(&seg.to_be_bytes());
    k
}

fn be(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap_or([0; 8]))
}

fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

impl PictureStore {
    pub fn open(dir: PathBuf, db: &sled::Db) -> io::Result<PictureStore> {
        std::fs::create_dir_all(&dir)?;
        Ok(PictureStore {
            dir,
            db: db.clone(),
            index: db.open_tree("pic_index").map_err(other)?,
            segments: db.open_tree("pic_segments").map_err(other)?,
            open: Mutex::default(),
        })
    }

    fn job_dir(&self, job: u64) -> PathBuf {
        self.dir.join(job.to_string())
    }

    fn seg_path(&self, job: u64, seg: u64) -> PathBuf {
        self.job_dir(job).join(format!("{seg}.pics"))
    }

    /// Keep `pictures` (frame, lease epoch, picture) of `job`; the
    /// references Raft carries for them. The segment is synced before this
    /// returns; the index is flushed too with `flush_index`, else it becomes
    /// durable with the next flush of this node's sled database: on the
    /// leader that is the Raft log append of the report that references the
    /// pictures (sled recovers a prefix of its writes, and the index was
    /// written first), which saves an fsync per report. Putting a picture
    /// again (a retried report) is harmless: the index then names the newer copy.
    pub fn put(&self, job: u64, pictures: &[(u64, u64, &FrameImage)], flush_index: bool) -> io::Result<Vec<PictureRef>> {
        if pictures.is_empty() {
            return Ok(Vec::new());
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(&job).is_some_and(|s| s.len >= SEGMENT_BYTES) {
            open.remove(&job);
        }
        if !open.contains_key(&job) {
            // Go on in the job's last segment while it has room (after a restart).
            let last = self.segments.scan_prefix(job.to_be_bytes()).keys().next_back().transpose().map_err(other)?.map(|k| be(&k[8..16]));
            std::fs::create_dir_all(self.job_dir(job))?;
            let mut id = last.unwrap_or(0);
            let mut file = OpenOptions::new().create(true).append(true).open(self.seg_path(job, id))?;
            if file.metadata()?.len() >= SEGMENT_BYTES {
                id += 1;
                file = OpenOptions::new().create(true).append(true).open(self.seg_path(job, id))?;
            }
            let len = file.metadata()?.len();
            open.insert(job, OpenSegment { id, file, len });
        }
        let seg = open.get_mut(&job).expect("opened above");
        let mut meta: SegMeta = match self.segments.get(seg_key(job, seg.id)).map_err(other)? {
            Some(v) => bincode::deserialize(&v).map_err(other)?,
            None => SegMeta::default(),
        };
        let mut buf = Vec::with_capacity(pictures.iter().map(|p| p.2.jpeg.len()).sum());
        let mut batch = sled::Batch::default();
        let mut refs = Vec::with_capacity(pictures.len());
        for (frame, epoch, img) in pictures {
            let crc = crc32fast::hash(&img.jpeg);
            let loc = Loc { seg: seg.id, offset: seg.len + buf.len() as u64, len: img.jpeg.len() as u32, crc, width: img.width, height: img.height };
            buf.extend_from_slice(&img.jpeg);
            batch.insert(&key(job, *frame, *epoch), bincode::serialize(&loc).map_err(other)?);
            refs.push(PictureRef { epoch: *epoch, len: loc.len, crc, width: img.width, height: img.height });
            meta.max_frame = meta.max_frame.max(*frame);
        }
        meta.bytes += buf.len() as u64;
        seg.file.write_all(&buf)?;
        seg.file.sync_data()?;
        seg.len += buf.len() as u64;
        self.segments.insert(seg_key(job, seg.id), bincode::serialize(&meta).map_err(other)?).map_err(other)?;
        self.index.apply_batch(batch).map_err(other)?;
        if flush_index {
            self.db.flush().map_err(other)?;
        }
        Ok(refs)
    }

    /// Does this node hold the picture `r` names?
    pub fn has(&self, job: u64, frame: u64, epoch: u64) -> bool {
        self.index.contains_key(key(job, frame, epoch)).unwrap_or(false)
    }

    /// The picture `r` names, if this node holds it intact.
    pub fn get(&self, job: u64, frame: u64, r: &PictureRef) -> io::Result<Option<FrameImage>> {
        let Some(v) = self.index.get(key(job, frame, r.epoch)).map_err(other)? else { return Ok(None) };
        let loc: Loc = bincode::deserialize(&v).map_err(other)?;
        let file = match File::open(self.seg_path(job, loc.seg)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut jpeg = vec![0; loc.len as usize];
        if file.read_exact_at(&mut jpeg, loc.offset).is_err() || crc32fast::hash(&jpeg) != loc.crc || loc.crc != r.crc {
            tracing::warn!(job, frame, "a stored picture is damaged or differs from its reference; it is fetched again");
            let _ = self.index.remove(key(job, frame, r.epoch));
            return Ok(None);
        }
        Ok(Some(FrameImage { jpeg, width: loc.width, height: loc.height }))
    }

    /// Delete every picture of `job`; the bytes given back.
    pub fn delete_job(&self, job: u64) -> io::Result<u64> {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&job);
        let bytes = self.drop_index(job, u64::MAX)?;
        match std::fs::remove_dir_all(self.job_dir(job)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(bytes)
    }

    /// Retention: forget the pictures of `job` below `frame`, and delete the
    /// segments that hold nothing else; the bytes given back.
    pub fn trim(&self, job: u64, frame: u64) -> io::Result<u64> {
        let current = self.open.lock().unwrap_or_else(|p| p.into_inner()).get(&job).map(|s| s.id);
        let mut freed = 0;
        for item in self.segments.scan_prefix(job.to_be_bytes()) {
            let (k, v) = item.map_err(other)?;
            let meta: SegMeta = bincode::deserialize(&v).map_err(other)?;
            let seg = be(&k[8..16]);
            if meta.max_frame < frame && Some(seg) != current {
                match std::fs::remove_file(self.seg_path(job, seg)) {
                    Ok(()) => freed += meta.bytes,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                self.segments.remove(k).map_err(other)?;
            }
        }
        self.drop_index(job, frame)?;
        Ok(freed)
    }

    /// Remove the index entries of `job` below `frame` (and, for a whole
    /// job, its segment records); the bytes they named.
    fn drop_index(&self, job: u64, frame: u64) -> io::Result<u64> {
        let mut bytes = 0;
        let mut batch = sled::Batch::default();
        for item in self.index.range(key(job, 0, 0)..key(job, frame, 0)) {
            let (k, v) = item.map_err(other)?;
            if let Ok(loc) = bincode::deserialize::<Loc>(&v) {
                bytes += loc.len as u64;
            }
            batch.remove(k);
        }
        if frame == u64::MAX {
            // The last frame number itself, and the segment records.
            for item in self.index.scan_prefix(key(job, u64::MAX, 0)[..16].to_vec()) {
                batch.remove(item.map_err(other)?.0);
            }
            self.index.apply_batch(batch).map_err(other)?;
            let mut segs = sled::Batch::default();
            for item in self.segments.scan_prefix(job.to_be_bytes()) {
                segs.remove(item.map_err(other)?.0);
            }
            self.segments.apply_batch(segs).map_err(other)?;
        } else {
            self.index.apply_batch(batch).map_err(other)?;
        }
        Ok(bytes)
    }

    /// The jobs this node holds pictures of.
    pub fn jobs(&self) -> Vec<u64> {
        let mut jobs: Vec<u64> = std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect())
            .unwrap_or_default();
        jobs.sort_unstable();
        jobs
    }

    /// Bytes of picture segments on disk.
    pub fn disk_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            std::fs::read_dir(p)
                .map(|d| {
                    d.flatten()
                        .map(|e| match e.metadata() {
                            Ok(m) if m.is_dir() => walk(&e.path()),
                            Ok(m) => m.len(),
                            Err(_) => 0,
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(n: u8, len: usize) -> FrameImage {
        FrameImage { jpeg: vec![n; len], width: 64, height: 48 }
    }

    fn store(dir: &Path) -> (sled::Db, PictureStore) {
        // Reopened right after the previous handle was dropped, sled's own
        // threads may hold the file lock for a moment longer (seen once
        // under a loaded machine): retry for a bounded while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match sled::Config::new().path(dir.join("db")).open() {
                Ok(db) => break db,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("reopening the test's sled db: {e}; retrying");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("cannot reopen the test's sled db: {e}"),
            }
        };
        let s = PictureStore::open(dir.join("pictures"), &db).unwrap();
        (db, s)
    }

    #[test]
    fn put_get_delete_and_trim_give_the_disk_back() {
        let tmp = tempfile::tempdir().unwrap();
        let (_db, s) = store(tmp.path());
        let (a, b) = (img(1, 1000), img(2, 2000));
        let refs = s.put(7, &[(0, 5, &a), (1, 5, &b)], true).unwrap();
        assert_eq!(refs[1], PictureRef { epoch: 5, len: 2000, crc: crc32fast::hash(&b.jpeg), width: 64, height: 48 });
        assert_eq!(s.get(7, 1, &refs[1]).unwrap(), Some(b.clone()));
        assert!(s.has(7, 0, 5) && !s.has(7, 0, 6) && !s.has(8, 0, 5));
        // Another epoch's picture of the same frame does not replace this one.
        let other = s.put(7, &[(0, 6, &img(9, 10))], true).unwrap();
        assert_eq!(s.get(7, 0, &refs[0]).unwrap(), Some(a));
        assert_eq!(s.get(7, 0, &other[0]).unwrap().unwrap().jpeg, vec![9; 10]);
        assert_eq!(s.disk_bytes(), 3010);
        assert_eq!(s.jobs(), vec![7]);
        assert_eq!(s.delete_job(7).unwrap(), 3010);
        assert_eq!(s.disk_bytes(), 0);
        assert_eq!(s.get(7, 1, &refs[1]).unwrap(), None);
        assert!(s.jobs().is_empty());
    }

    #[test]
    fn trim_deletes_whole_segments_below_the_frame() {
        let tmp = tempfile::tempdir().unwrap();
        let (_db, s) = store(tmp.path());
        let big = img(3, (SEGMENT_BYTES / 2 + 1) as usize);
        // Frames 0 and 1 fill segment 0; frame 2 starts segment 1, frame 3 too.
        let r: Vec<PictureRef> = (0..4).map(|f| s.put(1, &[(f, 1, &big)], true).unwrap()[0].clone()).collect();
        assert_eq!(s.segments.len(), 2);
        let before = s.disk_bytes();
        // Below frame 1: segment 0 still holds frame 1, nothing is deleted.
        assert_eq!(s.trim(1, 1).unwrap(), 0);
        assert_eq!(s.disk_bytes(), before);
        assert!(s.get(1, 0, &r[0]).unwrap().is_none(), "frame 0 is forgotten");
        assert!(s.get(1, 1, &r[1]).unwrap().is_some());
        // Below frame 3: segment 0 goes; segment 1 is being appended to and stays.
        assert_eq!(s.trim(1, 3).unwrap(), 2 * big.jpeg.len() as u64);
        assert_eq!(s.disk_bytes(), before - 2 * big.jpeg.len() as u64);
        assert!(s.get(1, 3, &r[3]).unwrap().is_some());
    }

    #[test]
    fn a_damaged_picture_counts_as_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let (_db, s) = store(tmp.path());
        let r = s.put(2, &[(0, 1, &img(5, 100))], true).unwrap();
        let f = OpenOptions::new().write(true).open(s.seg_path(2, 0)).unwrap();
        f.write_all_at(&[6], 10).unwrap();
        assert_eq!(s.get(2, 0, &r[0]).unwrap(), None);
        assert!(!s.has(2, 0, 1), "a damaged picture is dropped from the index, so repair fetches it");
    }

    #[test]
    fn puts_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let r = {
            let (_db, s) = store(tmp.path());
            s.put(3, &[(10, 2, &img(4, 50))], true).unwrap()
        };
        let (_db, s) = store(tmp.path());
        assert_eq!(s.get(3, 10, &r[0]).unwrap().unwrap().jpeg, vec![4; 50]);
        // Appends go on in the last segment.
        s.put(3, &[(11, 2, &img(5, 50))], true).unwrap();
        assert_eq!(s.segments.len(), 1);
        assert_eq!(s.disk_bytes(), 100);
    }
}
