//! Tracked objects (issue 18, part 1): an IoU tracker of the SORT family,
//! written here, fed a detector's committed results in frame order.
//!
//! Deterministic: the same detections in the same frame order give the same
//! tracks and ids, whoever computes them. Since a job's committed results
//! are the same whether it ran as one shard, was split across workers, or
//! was a live stream resumed elsewhere, so are its tracks.
//!
//! Each analysed frame, in order:
//! 1. tracks not seen for longer than `max_gap_s` of stream time end;
//! 2. every (track, detection) pair of the same label whose boxes overlap by
//!    at least `min_iou` (intersection over union) is a candidate; pairs are
//!    taken greedily by IoU, highest first (ties: lower track id, then the
//!    detection's place in the frame's list), each track and detection at
//!    most once;
//! 3. a detection left over starts a new track (ids count from 1 in the
//!    order tracks start; within a frame, in the detections' order).
//!
//! There is no motion model (no Kalman filter): at the frame rates analysed
//! here consecutive boxes of one object overlap well; a fast object that
//! jumps further than its own size between analysed frames gets a new id.

/// One detection of a frame: a label, a score and a box `[x1, y1, x2, y2]`
/// in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub label: String,
    pub score: f64,
    pub bbox: [f64; 4],
}

/// A tracked object.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub id: u64,
    pub label: String,
    pub first_frame: u64,
    pub last_frame: u64,
    pub first_time: f64,
    pub last_time: f64,
    pub best_score: f64,
    /// Its box in every frame it was seen in, in frame order.
    pub path: Vec<(u64, [f64; 4])>,
}

impl Track {
    /// The track as `panoptes tracks --json` prints it: `{"track_id",
    /// "label","first_frame","last_frame","first_time","last_time",
    /// "best_score","frames","path":[[frame,[x1,y1,x2,y2]],…]}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "track_id": self.id,
            "label": self.label,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "best_score": self.best_score,
            "frames": self.path.len(),
            "path": self.path.iter().map(|(f, b)| serde_json::json!([f, b])).collect::<Vec<_>>(),
        })
    }
}

/// How detections are joined into tracks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerConfig {
    /// The least overlap (IoU) for a detection to continue a track.
    pub min_iou: f64,
    /// A track not seen for longer than this (seconds of stream time) ends.
    pub max_gap_s: f64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig { min_iou: 0.3, max_gap_s: 1.0 }
    }
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes (0 when either
/// has no area).
pub fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f64; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// The tracker's state between frames.
#[derive(Debug, Default)]
pub struct Tracker {
    cfg: TrackerConfig,
    active: Vec<Track>,
    ended: Vec<Track>,
    next_id: u64,
    last_frame: Option<u64>,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker { cfg, active: Vec::new(), ended: Vec::new(), next_id: 1, last_frame: None }
    }

    /// Feed one analysed frame (frames in increasing order; a frame given
    /// again or out of order is an error). Returns each detection's track id.
    pub fn update(&mut self, frame: u64, time: f64, detections: &[Detection]) -> Result<Vec<u64>, String> {
        if self.last_frame.is_some_and(|l| frame <= l) {
            return Err(format!("frame {frame} came after frame {}: the tracker needs frames in increasing order", self.last_frame.unwrap()));
        }
        self.last_frame = Some(frame);
        // 1. End the tracks not seen for too long.
        let gap = self.cfg.max_gap_s;
        let (gone, keep): (Vec<Track>, Vec<Track>) = std::mem::take(&mut self.active).into_iter().partition(|t| time - t.last_time > gap);
        self.ended.extend(gone);
        self.active = keep;
        // 2. Greedy matching by IoU.
        let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
        for (ti, t) in self.active.iter().enumerate() {
            let last = &t.path.last().expect("a track has a box").1;
            for (di, d) in detections.iter().enumerate() {
                if d.label == t.label {
                    let o = iou(last, &d.bbox);
                    if o >= self.cfg.min_iou {
                        pairs.push((o, ti, di));
                    }
                }
            }
        }
        // Highest IoU first; ties by track id (the active list is in id order), then detection index.
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut ids = vec![0u64; detections.len()];
        let mut track_used = vec![false; self.active.len()];
        for (_, ti, di) in pairs {
            if track_used[ti] || ids[di] != 0 {
                continue;
            }
            track_used[ti] = true;
            let t = &mut self.active[ti];
            let d = &detections[di];
            t.last_frame = frame;
            t.last_time = time;
            t.best_score = t.best_score.max(d.score);
            t.path.push((frame, d.bbox));
            ids[di] = t.id;
        }
        // 3. New tracks for what is left.
        for (di, d) in detections.iter().enumerate() {
            if ids[di] == 0 {
                let id = self.next_id;
                self.next_id += 1;
                self.active.push(Track {
                    id,
                    label: d.label.clone(),
                    first_frame: frame,
                    last_frame: frame,
                    first_time: time,
                    last_time: time,
                    best_score: d.score,
                    path: vec![(frame, d.bbox)],
                });
                ids[di] = id;
            }
        }
        Ok(ids)
    }

    /// The tracks that ended since the last call (not seen for longer than
    /// `max_gap_s` by the last frame fed), in id order: for printing tracks
    /// as they end while a live job runs.
    pub fn take_ended(&mut self) -> Vec<Track> {
        let mut out = std::mem::take(&mut self.ended);
        out.sort_by_key(|t| t.id);
        out
    }

    /// Every track, ended or not, in id order.
    pub fn finish(self) -> Vec<Track> {
        let mut all = self.ended;
        all.extend(self.active);
        all.sort_by_key(|t| t.id);
        all
    }
}

/// The detections in a detector's result (`[{label, score, box}, …]`, the
/// `objects` analysis and user detectors); entries without them are skipped.
pub fn detections_of(results: &serde_json::Value) -> Vec<Detection> {
    results
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let b = d.get("box")?.as_array()?;
            let bbox = [b.first()?.as_f64()?, b.get(1)?.as_f64()?, b.get(2)?.as_f64()?, b.get(3)?.as_f64()?];
            Some(Detection { label: d.get("label")?.as_str()?.to_string(), score: d.get("score")?.as_f64()?, bbox })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(label: &str, x: f64, y: f64) -> Detection {
        Detection { label: label.into(), score: 0.9, bbox: [x, y, x + 100.0, y + 100.0] }
    }

    fn run(frames: &[(u64, f64, Vec<Detection>)]) -> (Vec<Vec<u64>>, Vec<Track>) {
        let mut t = Tracker::new(TrackerConfig::default());
        let ids = frames.iter().map(|(f, time, d)| t.update(*f, *time, d).unwrap()).collect();
        (ids, t.finish())
    }

    #[test]
    fn a_moving_box_keeps_its_id() {
        let frames: Vec<_> = (0..20).map(|i| (i, i as f64 * 0.04, vec![det("person", i as f64 * 10.0, 0.0)])).collect();
        let (ids, tracks) = run(&frames);
        assert!(ids.iter().all(|v| v == &vec![1]), "{ids:?}");
        assert_eq!(tracks.len(), 1);
        let t = &tracks[0];
        assert_eq!((t.first_frame, t.last_frame, t.path.len(), t.label.as_str()), (0, 19, 20, "person"));
    }

    #[test]
    fn two_objects_and_labels_are_kept_apart() {
        // A person and a car overlapping, and a second person far away.
        let frames: Vec<_> = (0..5)
            .map(|i| {
                let x = i as f64 * 5.0;
                (i, i as f64 * 0.04, vec![det("person", x, 0.0), det("car", x + 10.0, 0.0), det("person", 500.0 - x, 300.0)])
            })
            .collect();
        let (ids, tracks) = run(&frames);
        assert!(ids.iter().all(|v| v == &vec![1, 2, 3]), "{ids:?}");
        assert_eq!(tracks.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(), ["person", "car", "person"]);
    }

    #[test]
    fn a_short_gap_keeps_the_id_and_a_long_one_ends_the_track() {
        let (ids, tracks) = run(&[
            (0, 0.0, vec![det("dog", 0.0, 0.0)]),
            (10, 0.4, vec![]),
            (20, 0.8, vec![det("dog", 5.0, 0.0)]),  // 0.8 s unseen: the same track
            (80, 3.2, vec![det("dog", 10.0, 0.0)]), // 2.4 s unseen: a new one
        ]);
        assert_eq!(ids, vec![vec![1], vec![], vec![1], vec![2]]);
        assert_eq!(tracks.len(), 2);
        assert_eq!((tracks[0].first_frame, tracks[0].last_frame), (0, 20));
    }

    #[test]
    fn the_best_overlap_wins_and_the_result_does_not_depend_on_list_order() {
        // Two tracks; in the next frame the detections come in the other order.
        let a = [(0, 0.0, vec![det("person", 0.0, 0.0), det("person", 60.0, 0.0)])];
        let mut next = a.to_vec();
        next.push((1, 0.04, vec![det("person", 62.0, 0.0), det("person", 2.0, 0.0)]));
        let (ids, _) = run(&next);
        assert_eq!(ids[1], vec![2, 1], "each box continues the track it overlaps most");
        assert!(Tracker::new(TrackerConfig::default()).update(3, 0.0, &[]).is_ok());
        let mut t = Tracker::new(TrackerConfig::default());
        t.update(5, 0.2, &[]).unwrap();
        assert!(t.update(5, 0.2, &[]).is_err(), "a frame given twice");
    }

    #[test]
    fn ended_tracks_are_taken_once_and_finish_gives_the_rest() {
        let mut t = Tracker::new(TrackerConfig::default());
        t.update(0, 0.0, &[det("cat", 0.0, 0.0)]).unwrap();
        assert!(t.take_ended().is_empty());
        t.update(50, 2.0, &[det("cat", 300.0, 300.0)]).unwrap(); // the first ended, a second began
        let ended = t.take_ended();
        assert_eq!(ended.iter().map(|t| t.id).collect::<Vec<_>>(), [1]);
        assert!(t.take_ended().is_empty());
        assert_eq!(t.finish().iter().map(|t| t.id).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn iou_and_detections_of_results() {
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 10.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[20.0, 0.0, 30.0, 10.0]), 0.0);
        assert!((iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-12);
        let r = serde_json::json!([{"label": "person", "class_id": 0, "score": 0.74, "box": [11.6, 12.66, 355.51, 496.03]}, {"color": "#fff"}]);
        assert_eq!(detections_of(&r), vec![Detection { label: "person".into(), score: 0.74, bbox: [11.6, 12.66, 355.51, 496.03] }]);
    }
}
