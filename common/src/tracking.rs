//! Tracked objects (issue 18, parts 1 and 2): an IoU tracker of the SORT
//! family, written here, fed a detector's committed results in frame order,
//! and the zones its tracks enter and leave.
//!
//! The leader runs it (`coordinator/src/leader/analytics.rs`) over each job's
//! committed results, one tracker per detector model, its state committed
//! through Raft with each evaluation; each detection's track id (and the
//! zones it is in) is stored beside its frame's results, which then carry
//! `track_id` (and `zones`). `panoptes analyze` runs the same code in one
//! process. Deterministic: the same detections in the same frame order give
//! the same tracks and ids, whoever computes them, so a job split across
//! workers, or a live stream resumed elsewhere, gets the tracks of one
//! shard.
//!
//! Each analysed frame, in order:
//! 1. tracks not seen for longer than `max_gap_s` of stream time end;
//! 2. every (track, detection) pair of the same label whose boxes overlap by
//!    at least `min_iou` (intersection over union) is a candidate; pairs are
//!    taken greedily by IoU, highest first (ties: lower track id, then the
//!    detection's place in the frame's list), each track and detection at
//!    most once;
//! 3. a detection left over starts a new track (ids count from 1 in the
//!    order tracks start; within a frame, in the detections' order);
//! 4. each track seen in the frame is in the zones that hold the middle of
//!    its box's bottom edge: it enters those it was not in, and leaves
//!    those it was in and no longer is (a track not seen in a frame stays
//!    where it was).
//!
//! There is no motion model (no Kalman filter): at the frame rates analysed
//! here consecutive boxes of one object overlap well; a fast object that
//! jumps further than its own size between analysed frames gets a new id.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::zones::Zone;

/// One detection of a frame: a label, a score and a box `[x1, y1, x2, y2]`
/// (corners) in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub label: String,
    pub score: f64,
    pub bbox: [f64; 4],
}

/// A tracked object (the tracker's record: its box path is in the results,
/// each detection carrying its `track_id`; see [`TrackBook`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    pub id: u64,
    pub label: String,
    pub first_frame: u64,
    pub last_frame: u64,
    pub first_time: f64,
    pub last_time: f64,
    pub best_score: f64,
    /// Frames it was seen in.
    pub frames: u64,
    /// Its box in the last frame seen (corners).
    pub last_box: [f64; 4],
    /// The zones it is in now, in the job's zone order.
    pub inside: Vec<String>,
    /// Every zone it has entered, in the order first entered.
    pub zones: Vec<String>,
}

/// What happened to a track, as published (`type: "track"` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrackChange {
    Start,
    Enter,
    Leave,
    End,
}

impl TrackChange {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackChange::Start => "start",
            TrackChange::Enter => "enter",
            TrackChange::Leave => "leave",
            TrackChange::End => "end",
        }
    }
}

/// A track started, entered or left a zone, or ended: at `frame` (for an
/// end: the last frame it was seen in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackEvent {
    pub change: TrackChange,
    pub model: String,
    pub track: u64,
    pub label: String,
    pub zone: Option<String>,
    pub frame: u64,
    pub time: f64,
}

/// How detections are joined into tracks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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

/// A detection's track and the zones it is in: what is stored beside a
/// frame's results and merged into them on read ([`annotate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    pub track: u64,
    pub zones: Vec<String>,
}

/// One frame's outcome: a mark per detection, in the detections' order,
/// and what happened to tracks.
#[derive(Debug, Default, PartialEq)]
pub struct Update {
    pub marks: Vec<Mark>,
    pub events: Vec<TrackEvent>,
}

/// One detector's tracker and its state between frames (serialisable: the
/// leader commits it with each evaluation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    cfg: TrackerConfig,
    model: String,
    active: Vec<Track>,
    next_id: u64,
    last_frame: Option<u64>,
}

impl Tracker {
    pub fn new(model: &str, cfg: TrackerConfig) -> Tracker {
        Tracker { cfg, model: model.to_string(), active: Vec::new(), next_id: 1, last_frame: None }
    }

    /// How many tracks have started.
    pub fn started(&self) -> u64 {
        self.next_id - 1
    }

    /// The tracks seen within `max_gap_s` of the last frame fed.
    pub fn active(&self) -> &[Track] {
        &self.active
    }

    /// Feed one analysed frame (frames in increasing order; a frame given
    /// again or out of order is an error) with the zones in force and the
    /// frame's size (for zones in fractions).
    pub fn update(&mut self, frame: u64, time: f64, detections: &[Detection], zones: &[&Zone], size: Option<(u32, u32)>) -> Result<Update, String> {
        if let Some(l) = self.last_frame.filter(|l| frame <= *l) {
            return Err(format!("frame {frame} came after frame {l}: the tracker needs frames in increasing order"));
        }
        self.last_frame = Some(frame);
        let mut events = Vec::new();
        // 1. End the tracks not seen for too long.
        let gap = self.cfg.max_gap_s;
        let (gone, keep): (Vec<Track>, Vec<Track>) = std::mem::take(&mut self.active).into_iter().partition(|t| time - t.last_time > gap);
        events.extend(gone.iter().map(|t| self.event(TrackChange::End, t, None, t.last_frame, t.last_time)));
        self.active = keep;
        // 2. Greedy matching by IoU.
        let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
        for (ti, t) in self.active.iter().enumerate() {
            for (di, d) in detections.iter().enumerate() {
                if d.label == t.label {
                    let o = iou(&t.last_box, &d.bbox);
                    if o >= self.cfg.min_iou {
                        pairs.push((o, ti, di));
                    }
                }
            }
        }
        // Highest IoU first; ties by track id (the active list is in id order), then detection index.
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut slot: Vec<Option<usize>> = vec![None; detections.len()];
        let mut track_used = vec![false; self.active.len()];
        for (_, ti, di) in pairs {
            if track_used[ti] || slot[di].is_some() {
                continue;
            }
            track_used[ti] = true;
            let (t, d) = (&mut self.active[ti], &detections[di]);
            t.last_frame = frame;
            t.last_time = time;
            t.best_score = t.best_score.max(d.score);
            t.frames += 1;
            t.last_box = d.bbox;
            slot[di] = Some(ti);
        }
        // 3. New tracks for what is left.
        for (di, d) in detections.iter().enumerate() {
            if slot[di].is_none() {
                let t = Track {
                    id: self.next_id,
                    label: d.label.clone(),
                    first_frame: frame,
                    last_frame: frame,
                    first_time: time,
                    last_time: time,
                    best_score: d.score,
                    frames: 1,
                    last_box: d.bbox,
                    inside: Vec::new(),
                    zones: Vec::new(),
                };
                self.next_id += 1;
                events.push(self.event(TrackChange::Start, &t, None, frame, time));
                self.active.push(t);
                slot[di] = Some(self.active.len() - 1);
            }
        }
        // 4. Zones, for the tracks seen, in the detections' order.
        let mut marks = Vec::with_capacity(detections.len());
        for ti in slot.into_iter().flatten() {
            let b = self.active[ti].last_box;
            let (x, y) = ((b[0] + b[2]) / 2.0, b[3]);
            let now: Vec<String> = zones.iter().filter(|z| z.contains(x, y, size)).map(|z| z.name.clone()).collect();
            let t = &self.active[ti];
            let left: Vec<String> = t.inside.iter().filter(|z| !now.contains(z)).cloned().collect();
            let entered: Vec<String> = now.iter().filter(|z| !t.inside.contains(z)).cloned().collect();
            for z in &left {
                events.push(self.event(TrackChange::Leave, t, Some(z), frame, time));
            }
            for z in &entered {
                events.push(self.event(TrackChange::Enter, t, Some(z), frame, time));
            }
            let t = &mut self.active[ti];
            for z in entered {
                if !t.zones.contains(&z) {
                    t.zones.push(z);
                }
            }
            t.inside = now.clone();
            marks.push(Mark { track: t.id, zones: now });
        }
        Ok(Update { marks, events })
    }

    /// End every track (the job ended): their end events, in id order.
    pub fn close(&mut self) -> Vec<TrackEvent> {
        std::mem::take(&mut self.active).iter().map(|t| self.event(TrackChange::End, t, None, t.last_frame, t.last_time)).collect()
    }

    fn event(&self, change: TrackChange, t: &Track, zone: Option<&String>, frame: u64, time: f64) -> TrackEvent {
        TrackEvent { change, model: self.model.clone(), track: t.id, label: t.label.clone(), zone: zone.cloned(), frame, time }
    }
}

/// The trackers of a job: one per detector model, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobTracker {
    pub models: BTreeMap<String, Tracker>,
    /// Every track has ended (the job ended and was tracked to its end).
    pub closed: bool,
}

impl JobTracker {
    /// One model's results of a frame (frames in order per model): the
    /// marks to store beside them, `None` when the results hold no
    /// detections (nothing to track: colours, faces, an error).
    pub fn feed(&mut self, model: &str, frame: u64, time: f64, results: &Value, zones: &[&Zone], size: Option<(u32, u32)>, events: &mut Vec<TrackEvent>) -> Result<Option<Vec<Mark>>, String> {
        if !is_detector_output(results) {
            // A detector's frame with nothing found still moves its tracker on, so tracks end on time.
            if let Some(t) = self.models.get_mut(model).filter(|_| results.as_array().is_some_and(|a| a.is_empty())) {
                events.extend(t.update(frame, time, &[], zones, size)?.events);
            }
            return Ok(None);
        }
        let t = self.models.entry(model.to_string()).or_insert_with(|| Tracker::new(model, TrackerConfig::default()));
        let u = t.update(frame, time, &detections_of(results), zones, size)?;
        events.extend(u.events);
        Ok(Some(u.marks))
    }

    /// End every track, once (the job ended).
    pub fn close(&mut self) -> Vec<TrackEvent> {
        if self.closed {
            return Vec::new();
        }
        self.closed = true;
        self.models.values_mut().flat_map(|t| t.close()).collect()
    }
}

/// Whether results are a detector's: a non-empty list whose first entry is
/// a detection.
fn is_detector_output(results: &Value) -> bool {
    results.as_array().and_then(|a| a.first()).and_then(detection_of).is_some()
}

/// One entry of a detector's result (`{label, score, box: [x, y, w, h]}`,
/// the `objects` analysis and user detectors), its box as corners; `None`
/// for an entry that is not a detection (a face, a colour).
pub fn detection_of(d: &Value) -> Option<Detection> {
    let b = d.get("box")?.as_array()?;
    let (x, y, w, h) = (b.first()?.as_f64()?, b.get(1)?.as_f64()?, b.get(2)?.as_f64()?, b.get(3)?.as_f64()?);
    Some(Detection { label: d.get("label")?.as_str()?.to_string(), score: d.get("score")?.as_f64()?, bbox: [x, y, x + w, y + h] })
}

/// The detections in a detector's result, in order ([`detection_of`]);
/// entries that are not detections are skipped.
pub fn detections_of(results: &Value) -> Vec<Detection> {
    results.as_array().into_iter().flatten().filter_map(detection_of).collect()
}

/// Put each detection's mark into its results: `"track_id"`, and
/// `"zones"` when it is in any. Marks are in the order of the entries that
/// [`detections_of`] reads.
pub fn annotate(results: &mut Value, marks: &[Mark]) {
    let mut marks = marks.iter();
    for d in results.as_array_mut().into_iter().flatten() {
        if detection_of(d).is_none() {
            continue;
        }
        let Some(m) = marks.next() else { return };
        if let Some(o) = d.as_object_mut() {
            o.insert("track_id".into(), m.track.into());
            if !m.zones.is_empty() {
                o.insert("zones".into(), m.zones.clone().into());
            }
        }
    }
}

/// The same, on results as JSON text (unchanged if it does not parse).
pub fn annotate_json(results_json: &str, marks: &[Mark]) -> String {
    match serde_json::from_str::<Value>(results_json) {
        Ok(mut v) => {
            annotate(&mut v, marks);
            v.to_string()
        }
        Err(_) => results_json.to_string(),
    }
}

/// A track as `panoptes tracks` shows it, gathered from results that carry
/// `track_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackRecord {
    pub id: u64,
    pub label: String,
    pub first_frame: u64,
    pub last_frame: u64,
    pub first_time: f64,
    pub last_time: f64,
    pub best_score: f64,
    /// The zones entered, in the order first entered.
    pub zones: Vec<String>,
    /// Its box (`[x, y, w, h]`, as in the results) in every frame it was seen in.
    pub path: Vec<(u64, [f64; 4])>,
}

impl TrackRecord {
    /// `{"track_id","label","first_frame","last_frame","first_time",
    /// "last_time","best_score","frames","zones","path":[[frame,[x,y,w,h]],…]}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "track_id": self.id,
            "label": self.label,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "best_score": self.best_score,
            "frames": self.path.len(),
            "zones": self.zones,
            "path": self.path.iter().map(|(f, b)| serde_json::json!([f, b])).collect::<Vec<_>>(),
        })
    }
}

/// Tracks gathered from one detector's results (with `track_id`) read in
/// frame order.
#[derive(Debug, Default)]
pub struct TrackBook {
    open: BTreeMap<u64, TrackRecord>,
    /// The latest timestamp read.
    watermark: f64,
}

impl TrackBook {
    /// One frame's results; the detections without `track_id` (not tracked
    /// yet) are skipped.
    pub fn add(&mut self, frame: u64, time: f64, results: &Value) {
        self.watermark = self.watermark.max(time);
        for d in results.as_array().into_iter().flatten() {
            let (Some(id), Some(det)) = (d.get("track_id").and_then(Value::as_u64), detection_of(d)) else { continue };
            let b = [det.bbox[0], det.bbox[1], det.bbox[2] - det.bbox[0], det.bbox[3] - det.bbox[1]];
            let raw: Option<[f64; 4]> = d.get("box").and_then(|v| serde_json::from_value(v.clone()).ok());
            let r = self.open.entry(id).or_insert_with(|| TrackRecord {
                id,
                label: det.label.clone(),
                first_frame: frame,
                last_frame: frame,
                first_time: time,
                last_time: time,
                best_score: det.score,
                zones: Vec::new(),
                path: Vec::new(),
            });
            r.last_frame = frame;
            r.last_time = time;
            r.best_score = r.best_score.max(det.score);
            r.path.push((frame, raw.unwrap_or(b)));
            for z in d.get("zones").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                if !r.zones.iter().any(|x| x == z) {
                    r.zones.push(z.to_string());
                }
            }
        }
    }

    /// The tracks unseen for longer than `max_gap_s` before the latest
    /// timestamp read (they have ended), in id order, given out once.
    pub fn take_ended(&mut self, max_gap_s: f64) -> Vec<TrackRecord> {
        let ended: Vec<u64> = self.open.values().filter(|r| self.watermark - r.last_time > max_gap_s).map(|r| r.id).collect();
        ended.iter().filter_map(|id| self.open.remove(id)).collect()
    }

    /// Every track not given out yet, in id order.
    pub fn finish(self) -> Vec<TrackRecord> {
        self.open.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn det(label: &str, x: f64, y: f64) -> Detection {
        Detection { label: label.into(), score: 0.9, bbox: [x, y, x + 100.0, y + 100.0] }
    }

    fn ids(u: &Update) -> Vec<u64> {
        u.marks.iter().map(|m| m.track).collect()
    }

    fn run(frames: &[(u64, f64, Vec<Detection>)]) -> (Vec<Vec<u64>>, Vec<TrackEvent>) {
        let mut t = Tracker::new("objects", TrackerConfig::default());
        let mut events = Vec::new();
        let ids = frames
            .iter()
            .map(|(f, time, d)| {
                let u = t.update(*f, *time, d, &[], None).unwrap();
                events.extend(u.events.iter().cloned());
                ids(&u)
            })
            .collect();
        events.extend(t.close());
        (ids, events)
    }

    fn changes(events: &[TrackEvent]) -> Vec<(TrackChange, u64, u64)> {
        events.iter().map(|e| (e.change, e.track, e.frame)).collect()
    }

    #[test]
    fn a_moving_box_keeps_its_id() {
        let frames: Vec<_> = (0..20).map(|i| (i, i as f64 * 0.04, vec![det("person", i as f64 * 10.0, 0.0)])).collect();
        let (ids, events) = run(&frames);
        assert!(ids.iter().all(|v| v == &vec![1]), "{ids:?}");
        assert_eq!(changes(&events), [(TrackChange::Start, 1, 0), (TrackChange::End, 1, 19)]);
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
        let (ids, events) = run(&frames);
        assert!(ids.iter().all(|v| v == &vec![1, 2, 3]), "{ids:?}");
        assert_eq!(events.iter().filter(|e| e.change == TrackChange::Start).map(|e| e.label.as_str()).collect::<Vec<_>>(), ["person", "car", "person"]);
    }

    #[test]
    fn a_short_gap_keeps_the_id_and_a_long_one_ends_the_track() {
        let (ids, events) = run(&[
            (0, 0.0, vec![det("dog", 0.0, 0.0)]),
            (10, 0.4, vec![]),
            (20, 0.8, vec![det("dog", 5.0, 0.0)]),  // 0.8 s unseen: the same track
            (80, 3.2, vec![det("dog", 10.0, 0.0)]), // 2.4 s unseen: a new one
        ]);
        assert_eq!(ids, vec![vec![1], vec![], vec![1], vec![2]]);
        assert_eq!(changes(&events), [(TrackChange::Start, 1, 0), (TrackChange::End, 1, 20), (TrackChange::Start, 2, 80), (TrackChange::End, 2, 80)]);
    }

    #[test]
    fn the_best_overlap_wins_and_the_result_does_not_depend_on_list_order() {
        // Two tracks; in the next frame the detections come in the other order.
        let (ids, _) = run(&[(0, 0.0, vec![det("person", 0.0, 0.0), det("person", 60.0, 0.0)]), (1, 0.04, vec![det("person", 62.0, 0.0), det("person", 2.0, 0.0)])]);
        assert_eq!(ids[1], vec![2, 1], "each box continues the track it overlaps most");
        let mut t = Tracker::new("objects", TrackerConfig::default());
        t.update(5, 0.2, &[], &[], None).unwrap();
        assert!(t.update(5, 0.2, &[], &[], None).is_err(), "a frame given twice");
    }

    #[test]
    fn tracks_enter_and_leave_zones_by_where_they_stand() {
        // The right half of a 400x200 frame, in fractions; a box walking right then back.
        let right = Zone::parse("right=0.5,0,1,0,1,1,0.5,1").unwrap();
        let mut t = Tracker::new("objects", TrackerConfig::default());
        let mut events = Vec::new();
        let mut inside = Vec::new();
        for (i, x) in [100.0, 130.0, 160.0, 190.0, 160.0, 130.0].iter().enumerate() {
            let u = t.update(i as u64, i as f64 * 0.1, &[det("person", *x, 50.0)], &[&right], Some((400, 200))).unwrap();
            inside.push(u.marks[0].zones.clone());
            events.extend(u.events);
        }
        // Bottom-middle x: 150, 180, 210, 240, 210, 180: inside from frame 2 to 4.
        assert_eq!(inside.iter().map(|z| z.len()).collect::<Vec<_>>(), [0, 0, 1, 1, 1, 0]);
        let got: Vec<(TrackChange, Option<String>, u64)> = events.iter().map(|e| (e.change, e.zone.clone(), e.frame)).collect();
        let r = Some("right".to_string());
        assert_eq!(got, [(TrackChange::Start, None, 0), (TrackChange::Enter, r.clone(), 2), (TrackChange::Leave, r, 5)]);
        assert_eq!(t.active()[0].zones, ["right"]);
    }

    #[test]
    fn a_state_carried_over_resumes_exactly() {
        let frames: Vec<(u64, f64, Vec<Detection>)> = (0..30).map(|i| (i, i as f64 * 0.1, if i % 7 == 3 { vec![] } else { vec![det("car", i as f64 * 3.0, 0.0), det("car", 300.0, i as f64)] })).collect();
        let mut whole = JobTracker::default();
        let mut halves = JobTracker::default();
        let (mut ev_whole, mut ev_halves) = (Vec::new(), Vec::new());
        let res = |d: &[Detection]| Value::Array(d.iter().map(|d| json!({"label": d.label, "score": d.score, "box": [d.bbox[0], d.bbox[1], d.bbox[2] - d.bbox[0], d.bbox[3] - d.bbox[1]]})).collect());
        let mut m_whole = Vec::new();
        let mut m_halves = Vec::new();
        for (f, t, d) in &frames {
            m_whole.push(whole.feed("objects", *f, *t, &res(d), &[], None, &mut ev_whole).unwrap());
        }
        for (i, (f, t, d)) in frames.iter().enumerate() {
            if i == 13 {
                halves = bincode_round_trip(&halves);
            }
            m_halves.push(halves.feed("objects", *f, *t, &res(d), &[], None, &mut ev_halves).unwrap());
        }
        ev_whole.extend(whole.close());
        ev_halves.extend(halves.close());
        assert_eq!((m_whole, ev_whole), (m_halves, ev_halves));
        assert!(halves.close().is_empty(), "closed once");
    }

    fn bincode_round_trip(t: &JobTracker) -> JobTracker {
        serde_json::from_str(&serde_json::to_string(t).unwrap()).unwrap()
    }

    #[test]
    fn marks_go_into_results_and_tracks_are_gathered_from_them() {
        let mut r = json!([{"label": "person", "class_id": 0, "score": 0.74, "box": [11.6, 12.66, 343.91, 483.37]}, {"label": "dog", "score": 0.5, "box": [0, 0, 5, 5]}]);
        assert_eq!(detections_of(&r)[0].bbox, [11.6, 12.66, 11.6 + 343.91, 12.66 + 483.37]);
        annotate(&mut r, &[Mark { track: 4, zones: vec!["door".into()] }, Mark { track: 5, zones: vec![] }]);
        assert_eq!(r[0]["track_id"], 4);
        assert_eq!(r[0]["zones"], json!(["door"]));
        assert_eq!((r[1]["track_id"].as_u64(), r[1].get("zones")), (Some(5), None));
        let text = annotate_json(r#"[{"label":"cat","score":0.5,"box":[1,2,3,4]}]"#, &[Mark { track: 9, zones: vec![] }]);
        assert!(text.starts_with(r#"[{"label":"cat""#) && text.contains(r#""track_id":9"#), "key order kept: {text}");
        let mut book = TrackBook::default();
        book.add(0, 0.0, &r);
        book.add(1, 0.5, &json!([{"label": "person", "score": 0.9, "box": [12, 13, 340, 480], "track_id": 4}]));
        book.add(2, 2.0, &json!([]));
        let ended = book.take_ended(1.0);
        assert_eq!(ended.iter().map(|t| t.id).collect::<Vec<_>>(), [4, 5]);
        assert_eq!((ended[0].path.len(), ended[0].best_score, ended[0].zones.clone()), (2, 0.9, vec!["door".to_string()]));
        assert_eq!(ended[0].path[1], (1, [12.0, 13.0, 340.0, 480.0]));
        assert!(book.finish().is_empty());
    }

    #[test]
    fn iou_of_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 10.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[20.0, 0.0, 30.0, 10.0]), 0.0);
        assert!((iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-12);
    }
}
