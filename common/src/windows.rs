//! Event-time windows over a job's committed results (issue 18, part 3):
//! what `panoptes stats JOB --window 5s [--slide 1s]` prints.
//!
//! A window is a span of stream time `[start, start + size)`; windows start
//! at every multiple of `slide` (`slide == size`: tumbling windows, each
//! frame in exactly one; `slide < size`: sliding windows, each frame in
//! `ceil(size / slide)` of them). A frame belongs to the windows that hold
//! its timestamp, whatever its frame number, so the same results give the
//! same windows however the job ran (one shard, split, a live stream
//! resumed elsewhere).
//!
//! Each window counts, over its analysed frames:
//! - `frames`: the analysed frames in it;
//! - per label of every detector (`objects`, a user's detector): the
//!   detections, the most in one frame, and the distinct tracks (the
//!   `track_id`s the leader's tracker gave, [`crate::tracking`]);
//! - faces (`joy`): the faces, the most in one frame, and how many showed
//!   each emotion and each gender;
//! - colours (`colors`): the dominant colour (the first of a frame's
//!   palette) seen in the most frames (ties: the lower `#rrggbb`).
//!
//! Closing: results are read in commit order. A window closes once a frame
//! at or past its end has been read (the watermark, the latest timestamp
//! read, passed it): it is complete when frames arrive in order, as a live
//! stream's do. A frame that arrives for a window already closed (a split
//! job's shards commit side by side; `--follow` reads them as they come)
//! goes into a late copy of that window, marked `late`, given out at the
//! end: nothing is counted twice or lost, and no closed window changes.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::tracking::{detection_of, detections_of};

/// Window length and step, in milliseconds of stream time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub size_ms: u64,
    pub slide_ms: u64,
}

impl WindowSpec {
    /// Tumbling windows when `slide_ms` is `None`.
    pub fn new(size_ms: u64, slide_ms: Option<u64>) -> Result<WindowSpec, String> {
        if size_ms == 0 {
            return Err("a window of 0 holds nothing: give a length such as 5s or 1m".into());
        }
        let slide_ms = slide_ms.unwrap_or(size_ms);
        if slide_ms == 0 {
            return Err("a slide of 0 would start windows endlessly: give a step such as 1s (at most the window)".into());
        }
        if slide_ms > size_ms {
            return Err(format!("a slide of {slide_ms} ms is longer than the window ({size_ms} ms): frames between windows would be left out"));
        }
        if size_ms / slide_ms > 1000 {
            return Err(format!("a window of {size_ms} ms sliding by {slide_ms} ms puts each frame in over 1000 windows: slide by at least {} ms", size_ms.div_ceil(1000)));
        }
        Ok(WindowSpec { size_ms, slide_ms })
    }

    /// The starts of the windows that hold time `t_ms`, earliest first.
    pub fn starts_of(&self, t_ms: u64) -> impl Iterator<Item = u64> {
        let last = t_ms / self.slide_ms;
        // The first window still holding t: start + size > t.
        let first = (t_ms + 1).saturating_sub(self.size_ms).div_ceil(self.slide_ms);
        let slide = self.slide_ms;
        (first..=last).map(move |k| k * slide)
    }
}

/// One label's detections in a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelStats {
    pub detections: u64,
    pub max_in_frame: u64,
    /// The distinct track ids seen; `None` when the detector's frames came
    /// out of order and could not be tracked.
    pub tracks: Option<BTreeSet<u64>>,
}

/// The faces in a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaceStats {
    pub faces: u64,
    pub max_in_frame: u64,
    pub emotions: BTreeMap<String, u64>,
    pub genders: BTreeMap<String, u64>,
}

/// One window's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub start_ms: u64,
    pub end_ms: u64,
    /// Frames that arrived after the window had closed (see the module doc).
    pub late: bool,
    /// Analysed frames (the rows of one frame, one per model, come together).
    pub frames: u64,
    last_frame: Option<u64>,
    pub objects: BTreeMap<String, LabelStats>,
    pub faces: FaceStats,
    /// Dominant colour → frames it was dominant in.
    pub colors: BTreeMap<String, u64>,
}

impl Window {
    fn new(start_ms: u64, spec: &WindowSpec, late: bool) -> Window {
        Window { start_ms, end_ms: start_ms + spec.size_ms, late, ..Default::default() }
    }

    /// The colour dominant in the most frames (ties: the lower hex), and in how many.
    pub fn dominant_color(&self) -> Option<(&str, u64)> {
        self.colors.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(c, n)| (c.as_str(), *n))
    }

    /// `{"start","end","late","frames","objects":{LABEL:{"detections","max_in_frame","tracks"}},
    /// "faces":{"faces","max_in_frame","emotions":{..},"genders":{..}},"dominant_color":{"color","frames"}|null}`
    /// (times in seconds of stream time).
    pub fn to_json(&self) -> Value {
        let objects: serde_json::Map<String, Value> = self
            .objects
            .iter()
            .map(|(l, s)| (l.clone(), json!({"detections": s.detections, "max_in_frame": s.max_in_frame, "tracks": s.tracks.as_ref().map(|t| t.len())})))
            .collect();
        json!({
            "start": self.start_ms as f64 / 1000.0,
            "end": self.end_ms as f64 / 1000.0,
            "late": self.late,
            "frames": self.frames,
            "objects": objects,
            "faces": {
                "faces": self.faces.faces,
                "max_in_frame": self.faces.max_in_frame,
                "emotions": self.faces.emotions,
                "genders": self.faces.genders,
            },
            "dominant_color": self.dominant_color().map(|(c, n)| json!({"color": c, "frames": n})),
        })
    }

    fn add(&mut self, frame: u64, row: &Row) {
        if self.last_frame != Some(frame) {
            self.frames += 1;
            self.last_frame = Some(frame);
        }
        match row {
            Row::Detections(per_label, tracks) => {
                for (label, n) in per_label {
                    let s = self.objects.entry(label.clone()).or_insert_with(|| LabelStats { tracks: Some(BTreeSet::new()), ..Default::default() });
                    s.detections += n;
                    s.max_in_frame = s.max_in_frame.max(*n);
                }
                match tracks {
                    Some(ids) => {
                        for (label, id) in ids {
                            if let Some(set) = self.objects.get_mut(label).and_then(|s| s.tracks.as_mut()) {
                                set.insert(*id);
                            }
                        }
                    }
                    None => {
                        for label in per_label.keys() {
                            if let Some(s) = self.objects.get_mut(label) {
                                s.tracks = None;
                            }
                        }
                    }
                }
            }
            Row::Faces { emotions, genders, faces } => {
                self.faces.faces += faces;
                self.faces.max_in_frame = self.faces.max_in_frame.max(*faces);
                for e in emotions {
                    *self.faces.emotions.entry(e.clone()).or_default() += 1;
                }
                for g in genders {
                    *self.faces.genders.entry(g.clone()).or_default() += 1;
                }
            }
            Row::Colors(Some(c)) => *self.colors.entry(c.clone()).or_default() += 1,
            Row::Colors(None) | Row::Other => {}
        }
    }
}

/// What one result row adds to a window, by its shape.
enum Row {
    /// Detections per label, and each detection's (label, track id) when tracked.
    Detections(BTreeMap<String, u64>, Option<Vec<(String, u64)>>),
    Faces { faces: u64, emotions: Vec<String>, genders: Vec<String> },
    Colors(Option<String>),
    Other,
}

/// Results, in, windows, out (see the module doc).
pub struct Windower {
    spec: WindowSpec,
    /// Detector models some of whose detections carried no `track_id`.
    untracked: BTreeSet<String>,
    open: BTreeMap<u64, Window>,
    late: BTreeMap<u64, Window>,
    /// The latest timestamp read, ms.
    watermark: Option<u64>,
}

impl Windower {
    pub fn new(spec: WindowSpec) -> Windower {
        Windower { spec, untracked: BTreeSet::new(), open: BTreeMap::new(), late: BTreeMap::new(), watermark: None }
    }

    /// Window starts at or below this have closed (their end is at or below the watermark).
    fn closed(&self, start_ms: u64) -> bool {
        self.watermark.is_some_and(|w| start_ms + self.spec.size_ms <= w)
    }

    /// One committed result row: frame, its timestamp (seconds of stream
    /// time), the model and its results.
    pub fn add(&mut self, frame: u64, time_s: f64, model: &str, results: &Value) {
        let t_ms = (time_s.max(0.0) * 1000.0).round() as u64;
        let row = self.row(model, results);
        for start in self.spec.starts_of(t_ms).collect::<Vec<_>>() {
            let w = if self.closed(start) {
                self.late.entry(start).or_insert_with(|| Window::new(start, &self.spec, true))
            } else {
                self.open.entry(start).or_insert_with(|| Window::new(start, &self.spec, false))
            };
            w.add(frame, &row);
        }
        self.watermark = Some(self.watermark.map_or(t_ms, |w| w.max(t_ms)));
    }

    fn row(&mut self, model: &str, results: &Value) -> Row {
        let Some(items) = results.as_array() else { return Row::Other };
        let Some(first) = items.first() else { return Row::Other };
        if first.get("emotion").is_some() {
            let text = |k: &str| items.iter().filter_map(|f| f.get(k)?.as_str().map(str::to_string)).collect::<Vec<_>>();
            return Row::Faces { faces: items.len() as u64, emotions: text("emotion"), genders: text("gender") };
        }
        if first.get("color").is_some() {
            return Row::Colors(first.get("color").and_then(Value::as_str).map(str::to_string));
        }
        let dets = detections_of(results);
        if dets.is_empty() {
            return Row::Other;
        }
        let mut per_label: BTreeMap<String, u64> = BTreeMap::new();
        for d in &dets {
            *per_label.entry(d.label.clone()).or_default() += 1;
        }
        let tracked: Option<Vec<(String, u64)>> = items
            .iter()
            .filter(|d| detection_of(d).is_some())
            .map(|d| Some((d.get("label")?.as_str()?.to_string(), d.get("track_id")?.as_u64()?)))
            .collect();
        if tracked.is_none() {
            self.untracked.insert(model.to_string());
        }
        Row::Detections(per_label, tracked)
    }

    /// The windows that closed since the last call, earliest first.
    pub fn take_closed(&mut self) -> Vec<Window> {
        let Some(w) = self.watermark else { return Vec::new() };
        let size = self.spec.size_ms;
        let still_open = self.open.split_off(&(w + 1).saturating_sub(size));
        std::mem::replace(&mut self.open, still_open).into_values().collect()
    }

    /// Every window not given out yet: the open ones (those closed but not
    /// taken too), then the late copies, each in start order.
    pub fn finish(mut self) -> Vec<Window> {
        let mut out: Vec<Window> = std::mem::take(&mut self.open).into_values().collect();
        out.extend(std::mem::take(&mut self.late).into_values());
        out
    }

    /// The detectors some of whose detections carried no track id (not
    /// tracked yet, or results from before tracking): their windows give no
    /// track counts.
    pub fn untracked(&self) -> Vec<&str> {
        self.untracked.iter().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: u64, slide: Option<u64>) -> WindowSpec {
        WindowSpec::new(size, slide).unwrap()
    }

    fn person(x: f64) -> Value {
        json!([{"label": "person", "score": 0.9, "box": [x, 0.0, 100.0, 100.0], "track_id": 1}])
    }

    #[test]
    fn a_frame_belongs_to_the_windows_that_hold_its_time() {
        assert_eq!(spec(5000, None).starts_of(0).collect::<Vec<_>>(), vec![0]);
        assert_eq!(spec(5000, None).starts_of(4999).collect::<Vec<_>>(), vec![0]);
        assert_eq!(spec(5000, None).starts_of(5000).collect::<Vec<_>>(), vec![5000]);
        assert_eq!(spec(5000, Some(1000)).starts_of(4500).collect::<Vec<_>>(), vec![0, 1000, 2000, 3000, 4000]);
        assert_eq!(spec(5000, Some(1000)).starts_of(5000).collect::<Vec<_>>(), vec![1000, 2000, 3000, 4000, 5000]);
        assert_eq!(spec(3000, Some(2000)).starts_of(2500).collect::<Vec<_>>(), vec![0, 2000]);
        assert_eq!(spec(3000, Some(2000)).starts_of(3500).collect::<Vec<_>>(), vec![2000]);
    }

    #[test]
    fn bad_windows_say_what_to_give() {
        assert!(WindowSpec::new(0, None).unwrap_err().contains("0"));
        assert!(WindowSpec::new(1000, Some(0)).unwrap_err().contains("slide"));
        assert!(WindowSpec::new(1000, Some(2000)).unwrap_err().contains("longer than the window"));
        assert!(WindowSpec::new(3_600_000, Some(1)).unwrap_err().contains("over 1000"));
    }

    #[test]
    fn tumbling_windows_count_frames_detections_tracks_faces_and_colours() {
        let mut w = Windower::new(spec(1000, None));
        for f in 0..20u64 {
            let t = f as f64 * 0.1;
            w.add(f, t, "objects", &person(f as f64));
            if f % 2 == 0 {
                w.add(f, t, "joy", &json!([{"emotion": "happy", "gender": "woman"}, {"emotion": "sad", "gender": "man"}]));
            }
            let c = if f < 15 { "#102030" } else { "#ffffff" };
            w.add(f, t, "colors", &json!([{"color": c, "fraction": 0.6}, {"color": "#000000", "fraction": 0.4}]));
            if f == 9 {
                assert!(w.take_closed().is_empty(), "the first window is open until a frame at 1 s is read");
            }
        }
        let closed = w.take_closed();
        assert_eq!(closed.len(), 1);
        let a = &closed[0];
        assert_eq!((a.start_ms, a.end_ms, a.frames, a.late), (0, 1000, 10, false));
        let p = &a.objects["person"];
        assert_eq!((p.detections, p.max_in_frame, p.tracks.as_ref().map(|t| t.len())), (10, 1, Some(1)));
        assert_eq!((a.faces.faces, a.faces.max_in_frame), (10, 2));
        assert_eq!(a.faces.emotions, BTreeMap::from([("happy".into(), 5), ("sad".into(), 5)]));
        assert_eq!(a.faces.genders, BTreeMap::from([("man".into(), 5), ("woman".into(), 5)]));
        assert_eq!(a.dominant_color(), Some(("#102030", 10)));
        let rest = w.finish();
        assert_eq!(rest.len(), 1);
        // 5 dark frames, 5 white: the lower hex wins the tie.
        assert_eq!(rest[0].dominant_color(), Some(("#102030", 5)));
    }

    #[test]
    fn sliding_windows_share_frames_and_late_frames_land_in_their_own_copy() {
        let mut w = Windower::new(spec(2000, Some(1000)));
        // Frames 0..30 at 10 fps, but frames 10..20 (1-2 s) arrive last, as
        // a second shard committing behind the third would.
        let order: Vec<u64> = (0..10).chain(20..30).chain(10..20).collect();
        let mut closed = Vec::new();
        for f in order {
            w.add(f, f as f64 * 0.1, "colors", &json!([{"color": "#aabbcc", "fraction": 1.0}]));
            closed.extend(w.take_closed());
        }
        assert!(w.untracked().is_empty(), "colours are not tracked");
        closed.extend(w.finish());
        let got: Vec<(u64, bool, u64)> = closed.iter().map(|x| (x.start_ms, x.late, x.frames)).collect();
        // [0,2) s: frames 0-9, closed when frame 20 (2 s) is read; frames
        // 10-19 come after that and go into its late copy. [1,3) s and
        // [2,4) s never close (no frame reaches 3 s): given out at the end,
        // [1,3) with 20-29 and 10-19.
        assert_eq!(got, vec![(0, false, 10), (1000, false, 20), (2000, false, 10), (0, true, 10)], "{got:?}");
        // Every frame is counted once in each window that holds it: frames
        // 0-9 in one, 10-29 in two.
        let total: u64 = closed.iter().map(|x| x.frames).sum();
        assert_eq!(total, 10 + 20 * 2);
    }

    #[test]
    fn detections_without_track_ids_are_counted_but_not_tracked() {
        let mut w = Windower::new(spec(10_000, None));
        w.add(5, 0.5, "objects", &person(0.0));
        w.add(3, 0.3, "objects", &json!([{"label": "person", "score": 0.9, "box": [0, 0, 10, 10]}]));
        assert_eq!(w.untracked(), vec!["objects"]);
        let all = w.finish();
        assert_eq!(all[0].objects["person"].detections, 2);
        assert_eq!(all[0].objects["person"].tracks, None);
        assert_eq!(all[0].to_json()["objects"]["person"]["tracks"], Value::Null);
    }
}
