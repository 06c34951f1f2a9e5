//! YOLO ONNX exports (families `yolov8` and `yolov5`): letterbox, run,
//! decode, per-class NMS; results shaped like `objects`'.
//!
//! - Input: the frame scaled by `r = min(S/W, S/H)` to
//!   `round(W·r) × round(H·r)` (bilinear, as the spec's common definitions),
//!   placed at `left = (S − w) / 2`, `top = (S − h) / 2` (integer division)
//!   on an `S×S` canvas of 114, then RGB / 255, NCHW `[1,3,S,S]` f32.
//! - YOLOv8 output `[1, 4+nc, N]`: per anchor `cx, cy, w, h` in input pixels
//!   then `nc` class scores; score = max, class = argmax (first maximum).
//! - YOLOv5 output `[1, N, 5+nc]`: `cx, cy, w, h, objectness, nc scores`;
//!   score = `objectness · class score`, class = argmax of those products.
//! - Keep `score ≥ score_threshold`; per-class greedy NMS (IoU) in input
//!   space; order by score descending (ties: lower class, then anchor
//!   order); at most `max_detections`; map back with
//!   `x = (x' − left) / r`, `y = (y' − top) / r`; clip to the frame.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::geometry::{round_half_up, BBox};
use super::model::{self, Engine, Plan};
use super::objects::{detections_json, Candidate, DetectorParams};
use super::resize::resize_bilinear;
use super::{check_frame, Analysis, ModelError, RgbFrame};

/// The grey YOLO pads the letterbox with.
pub const PAD: u8 = 114;

/// Which YOLO output layout a model has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YoloVersion {
    /// `[1, 4+nc, N]`, no objectness.
    V8,
    /// `[1, N, 5+nc]`, with objectness.
    V5,
}

/// A YOLO detector.
pub struct Yolo {
    name: String,
    version: YoloVersion,
    plan: Plan,
    size: usize,
    /// Anchors (candidate boxes) per frame.
    anchors: usize,
    params: DetectorParams,
    path: PathBuf,
}

/// Where a frame lands in the letterbox: scale and padding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    pub scale: f64,
    pub width: u32,
    pub height: u32,
    pub left: u32,
    pub top: u32,
}

impl Letterbox {
    pub fn new(w: u32, h: u32, size: u32) -> Self {
        let scale = (size as f64 / w as f64).min(size as f64 / h as f64);
        let fit = |v: u32| (round_half_up(v as f64 * scale) as u32).clamp(1, size);
        let (width, height) = (fit(w), fit(h));
        Self {
            scale,
            width,
            height,
            left: (size - width) / 2,
            top: (size - height) / 2,
        }
    }

    /// A box in letterbox pixels back in frame pixels (not clipped).
    pub fn unmap(&self, b: &BBox) -> BBox {
        let (l, t, r) = (self.left as f64, self.top as f64, self.scale);
        BBox::new(
            (b.x1 - l) / r,
            (b.y1 - t) / r,
            (b.x2 - l) / r,
            (b.y2 - t) / r,
        )
    }
}

/// The NCHW RGB/255 letterboxed input of one frame.
pub fn letterbox_input(frame: &RgbFrame, size: usize) -> (Vec<f32>, Letterbox) {
    let lb = Letterbox::new(frame.width, frame.height, size as u32);
    let scaled = if (lb.width, lb.height) == (frame.width, frame.height) {
        frame.data.clone()
    } else {
        resize_bilinear(
            &frame.data,
            frame.width,
            frame.height,
            3,
            lb.width,
            lb.height,
        )
    };
    let plane = size * size;
    let mut data = vec![PAD as f32 / 255.0; 3 * plane];
    let (w, left, top) = (lb.width as usize, lb.left as usize, lb.top as usize);
    for (y, row) in scaled.chunks_exact(w * 3).enumerate() {
        for (x, px) in row.chunks_exact(3).enumerate() {
            let i = (top + y) * size + left + x;
            for c in 0..3 {
                data[c * plane + i] = px[c] as f32 / 255.0;
            }
        }
    }
    (data, lb)
}

impl Yolo {
    /// Loads `path` on a `size`×`size` input and checks its output is the
    /// `version`'s layout for `params.labels.len()` classes.
    pub fn load(
        engine: &Engine,
        name: &str,
        version: YoloVersion,
        path: &Path,
        size: usize,
        params: DetectorParams,
    ) -> Result<Self, ModelError> {
        let nc = params.labels.len();
        let plan = model::load(engine, path, &[1, 3, size, size])?;
        let shapes = model::output_shapes(&plan);
        let anchors = match (version, shapes.first().map(Vec::as_slice)) {
            (YoloVersion::V8, Some(&[Some(1), Some(c), Some(n)])) if c == 4 + nc && n > 0 => n,
            (YoloVersion::V5, Some(&[Some(1), Some(n), Some(c)])) if c == 5 + nc && n > 0 => n,
            _ => {
                let expected = match version {
                    YoloVersion::V8 => format!(
                        "a YOLOv8 output [1,{},N] (cx,cy,w,h + {nc} class scores, {nc} = number of labels)",
                        4 + nc
                    ),
                    YoloVersion::V5 => format!(
                        "a YOLOv5 output [1,N,{}] (cx,cy,w,h, objectness + {nc} class scores, {nc} = number of labels)",
                        5 + nc
                    ),
                };
                return Err(ModelError::Layout {
                    path: path.into(),
                    expected,
                    found: model::fmt_shapes(&shapes),
                });
            }
        };
        Ok(Self {
            name: name.to_owned(),
            version,
            plan,
            size,
            anchors,
            params,
            path: path.into(),
        })
    }

    /// Candidates in letterbox pixels, in anchor order.
    pub(crate) fn decode(&self, out: &[f32]) -> Vec<Candidate> {
        decode(
            self.version,
            out,
            self.anchors,
            self.params.labels.len(),
            self.params.score_threshold,
        )
    }
}

/// Decodes a raw output of `anchors` anchors and `nc` classes.
pub(crate) fn decode(
    version: YoloVersion,
    out: &[f32],
    anchors: usize,
    nc: usize,
    score_thr: f64,
) -> Vec<Candidate> {
    let mut cands = Vec::new();
    for i in 0..anchors {
        // value k of anchor i
        let at = |k: usize| match version {
            YoloVersion::V8 => out[k * anchors + i],
            YoloVersion::V5 => out[i * (5 + nc) + k],
        };
        let (first, obj) = match version {
            YoloVersion::V8 => (4, 1.0f32),
            YoloVersion::V5 => (5, at(4)),
        };
        let (mut class, mut score) = (0, at(first) * obj);
        for c in 1..nc {
            let v = at(first + c) * obj;
            if v > score {
                class = c;
                score = v;
            }
        }
        if score.is_nan() || (score as f64) < score_thr {
            continue;
        }
        let (cx, cy, w, h) = (at(0) as f64, at(1) as f64, at(2) as f64, at(3) as f64);
        cands.push(Candidate {
            score,
            class,
            bbox: BBox::new(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0),
        });
    }
    cands
}

impl Analysis for Yolo {
    fn name(&self) -> &str {
        &self.name
    }

    fn analyze(&self, frame: &RgbFrame) -> anyhow::Result<Value> {
        check_frame(frame)?;
        let s = self.size;
        let (input, lb) = letterbox_input(frame, s);
        let outputs = model::run(&self.plan, &[1, 3, s, s], input)
            .map_err(|e| e.context(format!("running {}", self.path.display())))?;
        let nc = self.params.labels.len();
        let per = match self.version {
            YoloVersion::V8 => 4 + nc,
            YoloVersion::V5 => 5 + nc,
        };
        let out = model::as_f32(&outputs[0], self.anchors * per, "YOLO output")?;
        let cands = self.decode(out);
        Ok(detections_json(&cands, &self.params, frame, |b| lb.unmap(b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_keeps_aspect_and_centres() {
        let lb = Letterbox::new(128, 64, 64);
        assert_eq!(
            (lb.scale, lb.width, lb.height, lb.left, lb.top),
            (0.5, 64, 32, 0, 16)
        );
        let lb = Letterbox::new(100, 300, 64);
        // 100·64/300 = 21.33 -> 21; (64 − 21) / 2 = 21
        assert_eq!((lb.width, lb.height, lb.left, lb.top), (21, 64, 21, 0));
        let b = lb.unmap(&BBox::new(21.0, 0.0, 42.0, 64.0));
        assert!((b.x1 - 0.0).abs() < 1e-9 && (b.x2 - 21.0 * 300.0 / 64.0).abs() < 1e-9);
        assert!((b.y2 - 300.0).abs() < 1e-9);
    }

    #[test]
    fn letterbox_input_pads_with_114() {
        let f = RgbFrame::new(4, 2, vec![255; 4 * 2 * 3]);
        let (data, lb) = letterbox_input(&f, 8);
        assert_eq!((lb.width, lb.height, lb.left, lb.top), (8, 4, 0, 2));
        let plane = 64;
        for c in 0..3 {
            for y in 0..8 {
                let want = if (2..6).contains(&y) {
                    1.0
                } else {
                    114.0 / 255.0
                };
                for x in 0..8 {
                    assert_eq!(data[c * plane + y * 8 + x], want, "c{c} y{y} x{x}");
                }
            }
        }
    }

    #[test]
    fn v5_multiplies_objectness() {
        // two anchors, two classes: [cx,cy,w,h,obj,c0,c1]
        let out = [
            10.0, 10.0, 4.0, 2.0, 0.5, 0.6, 0.8, //
            20.0, 20.0, 2.0, 2.0, 0.9, 0.1, 0.2,
        ];
        let c = decode(YoloVersion::V5, &out, 2, 2, 0.3);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].class, c[0].score), (1, 0.4));
        assert_eq!(c[0].bbox, BBox::new(8.0, 9.0, 12.0, 11.0));
    }

    #[test]
    fn v8_is_channel_major() {
        // [1, 4+2, 2]: rows cx, cy, w, h, c0, c1; columns anchors
        let out = [
            10.0, 30.0, // cx
            10.0, 30.0, // cy
            4.0, 6.0, // w
            2.0, 6.0, // h
            0.1, 0.7, // c0
            0.5, 0.7, // c1 (anchor 1: tie, class 0 wins)
        ];
        let c = decode(YoloVersion::V8, &out, 2, 2, 0.5);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].class, c[0].score), (1, 0.5));
        assert_eq!(c[0].bbox, BBox::new(8.0, 9.0, 12.0, 11.0));
        assert_eq!((c[1].class, c[1].score), (0, 0.7));
        assert_eq!(c[1].bbox, BBox::new(27.0, 27.0, 33.0, 33.0));
    }
}
