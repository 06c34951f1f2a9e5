//! `objects`: COCO object detection with NanoDet-m 416.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::geometry::{nms, round_to, BBox, Overlap};
use super::model::{self, Engine, Plan};
use super::resize::resize_bilinear;
use super::{check_frame, Analysis, ModelError, RgbFrame};

const SIZE: usize = 416;
const STRIDES: [usize; 3] = [8, 16, 32];
#[cfg(test)]
const CLASSES: usize = 80;
const BINS: usize = 11;
const SCORE_THR: f64 = 0.35;
const NMS_THR: f64 = 0.6;
const MAX_DETS: usize = 100;

/// What a detector keeps and how it names classes: labels in class-id
/// order (their count is the model's class count), score threshold
/// (candidates below it are dropped), per-class NMS IoU threshold, and the
/// most boxes per frame.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorParams {
    pub labels: Vec<String>,
    pub score_threshold: f64,
    pub nms_threshold: f64,
    pub max_detections: usize,
}

impl DetectorParams {
    /// The `objects` defaults: COCO, 0.35, 0.6, 100.
    pub fn nanodet_defaults() -> Self {
        Self {
            labels: COCO_LABELS.iter().map(|s| s.to_string()).collect(),
            score_threshold: SCORE_THR,
            nms_threshold: NMS_THR,
            max_detections: MAX_DETS,
        }
    }
}

/// BGR order, as the model reads its channels.
const MEAN: [f32; 3] = [103.53, 116.28, 123.675];
const STD: [f32; 3] = [57.375, 57.12, 58.395];

/// The 80 COCO labels in the standard order.
pub use panoptes_common::config::COCO_LABELS;

/// The `objects` analysis: a NanoDet-m plan and, per stride, which outputs
/// hold its class scores and its box regression.
pub struct Objects {
    plan: Plan,
    /// Square input side (416 for NanoDet-m 416).
    size: usize,
    params: DetectorParams,
    /// `(stride, class output index, regression output index)`.
    heads: [(usize, usize, usize); 3],
    /// `(v - mean) / std` for every byte value, per BGR channel.
    lut: [[f32; 256]; 3],
    path: PathBuf,
}

/// One decoded candidate, in 416-space.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Candidate {
    pub score: f32,
    pub class: usize,
    pub bbox: BBox,
}

impl Objects {
    /// NanoDet-m 416 with the spec's labels and thresholds.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        Self::load_with(&Engine::Tract, path, SIZE, DetectorParams::nanodet_defaults())
    }

    /// A NanoDet model on a `size`×`size` input (a multiple of 32) with
    /// `params.labels.len()` classes.
    pub fn load_with(engine: &Engine, path: &Path, size: usize, params: DetectorParams) -> Result<Self, ModelError> {
        let classes = params.labels.len();
        let plan = model::load(engine, path, &[1, 3, size, size])?;
        let shapes = model::output_shapes(&plan);
        let find = |n: usize, last: usize| {
            let want = [Some(1), Some(n), Some(last)];
            let hits: Vec<usize> = shapes
                .iter()
                .enumerate()
                .filter(|(_, s)| s.as_slice() == want)
                .map(|(i, _)| i)
                .collect();
            (hits.len() == 1).then(|| hits[0])
        };
        let mut heads = [(0, 0, 0); 3];
        for (slot, &s) in heads.iter_mut().zip(&STRIDES) {
            let n = (size / s) * (size / s);
            match (find(n, classes), find(n, 4 * BINS)) {
                (Some(c), Some(r)) => *slot = (s, c, r),
                _ => {
                    let ns: Vec<String> = STRIDES
                        .iter()
                        .map(|s| ((size / s) * (size / s)).to_string())
                        .collect();
                    return Err(ModelError::Layout {
                        path: path.into(),
                        expected: format!(
                            "outputs [1,n,{classes}]/[1,n,44] for strides 8,16,32 (n = {})",
                            ns.join(", ")
                        ),
                        found: model::fmt_shapes(&shapes),
                    });
                }
            }
        }
        let lut = std::array::from_fn(|c| std::array::from_fn(|v| (v as f32 - MEAN[c]) / STD[c]));
        Ok(Self {
            plan,
            size,
            params,
            heads,
            lut,
            path: path.into(),
        })
    }

    /// The NCHW BGR normalised input for one frame.
    fn input(&self, frame: &RgbFrame) -> Vec<f32> {
        let size = self.size;
        let rgb = resize_bilinear(
            &frame.data,
            frame.width,
            frame.height,
            3,
            size as u32,
            size as u32,
        );
        let plane = size * size;
        let mut data = vec![0f32; 3 * plane];
        let (b, rest) = data.split_at_mut(plane);
        let (g, r) = rest.split_at_mut(plane);
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            r[i] = self.lut[2][px[0] as usize];
            g[i] = self.lut[1][px[1] as usize];
            b[i] = self.lut[0][px[2] as usize];
        }
        data
    }

    /// Candidates with score ≥ the threshold (0.35) from every stride, in
    /// stride then row-major order.
    fn decode(&self, outputs: &[tract_onnx::prelude::TValue]) -> anyhow::Result<Vec<Candidate>> {
        let mut cands = Vec::new();
        let classes = self.params.labels.len();
        for &(s, ci, ri) in &self.heads {
            let g = self.size / s;
            let n = g * g;
            let cls = model::as_f32(&outputs[ci], n * classes, "class scores")?;
            let reg = model::as_f32(&outputs[ri], n * 4 * BINS, "box regression")?;
            decode_stride(
                self.size,
                classes,
                self.params.score_threshold,
                s,
                cls,
                reg,
                &mut cands,
            );
        }
        Ok(cands)
    }
}

/// Decodes one stride's outputs into `out` (input side `size`, `classes`
/// scores per point, keeping scores ≥ `score_thr`).
pub(crate) fn decode_stride(
    size: usize,
    classes: usize,
    score_thr: f64,
    s: usize,
    cls: &[f32],
    reg: &[f32],
    out: &mut Vec<Candidate>,
) {
    let g = size / s;
    for (i, (scores, dist)) in cls
        .chunks_exact(classes)
        .zip(reg.chunks_exact(4 * BINS))
        .enumerate()
    {
        // argmax, first maximum wins
        let (mut class, mut score) = (0, scores[0]);
        for (c, &v) in scores.iter().enumerate().skip(1) {
            if v > score {
                class = c;
                score = v;
            }
        }
        if (score as f64) < score_thr {
            continue;
        }
        let (row, col) = (i / g, i % g);
        let (cx, cy) = ((col as f64 + 0.5) * s as f64, (row as f64 + 0.5) * s as f64);
        let mut side = [0f64; 4];
        for (k, bins) in dist.chunks_exact(BINS).enumerate() {
            side[k] = s as f64 * softmax_expectation(bins);
        }
        out.push(Candidate {
            score,
            class,
            bbox: BBox::new(cx - side[0], cy - side[1], cx + side[2], cy + side[3]),
        });
    }
}

/// `Σ_k softmax(bins)_k · k`.
fn softmax_expectation(bins: &[f32]) -> f64 {
    let max = bins.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let (mut sum, mut weighted) = (0.0, 0.0);
    for (k, &v) in bins.iter().enumerate() {
        let e = (v as f64 - max).exp();
        sum += e;
        weighted += e * k as f64;
    }
    weighted / sum
}

/// Per-class NMS (IoU > `nms_thr` drops; 0.6 for `objects`), then all kept
/// boxes by score descending (ties: lower class, then candidate order), at
/// most `max_dets` (100). Returns candidate indices.
/// The kept detections (per-class NMS, ordering, `max_detections`) as the
/// spec's `[{label, class_id, score, box}]`, each box mapped from model input
/// space to frame pixels by `to_frame`, then clipped to the frame.
pub(crate) fn detections_json(cands: &[Candidate], p: &DetectorParams, frame: &RgbFrame, to_frame: impl Fn(&BBox) -> BBox) -> Value {
    let (w, h) = (frame.width as f64, frame.height as f64);
    let results = select(cands, p.nms_threshold, p.max_detections)
        .into_iter()
        .map(|i| {
            let c = &cands[i];
            json!({
                "label": p.labels[c.class],
                "class_id": c.class,
                "score": round_to(c.score as f64, 4),
                "box": to_frame(&c.bbox).clipped(w, h).to_xywh_json(),
            })
        })
        .collect();
    Value::Array(results)
}

pub(crate) fn select(cands: &[Candidate], nms_thr: f64, max_dets: usize) -> Vec<usize> {
    let mut kept = Vec::new();
    let mut classes: Vec<usize> = cands.iter().map(|c| c.class).collect();
    classes.sort_unstable();
    classes.dedup();
    for class in classes {
        let idx: Vec<usize> = (0..cands.len())
            .filter(|&i| cands[i].class == class)
            .collect();
        let boxes: Vec<BBox> = idx.iter().map(|&i| cands[i].bbox).collect();
        let scores: Vec<f64> = idx.iter().map(|&i| cands[i].score as f64).collect();
        kept.extend(
            nms(&boxes, &scores, nms_thr, Overlap::Union)
                .into_iter()
                .map(|k| idx[k]),
        );
    }
    kept.sort_by(|&a, &b| {
        cands[b]
            .score
            .total_cmp(&cands[a].score)
            .then(cands[a].class.cmp(&cands[b].class))
            .then(a.cmp(&b))
    });
    kept.truncate(max_dets);
    kept
}

impl Analysis for Objects {
    fn name(&self) -> &str {
        "objects"
    }

    fn analyze(&self, frame: &RgbFrame) -> anyhow::Result<Value> {
        check_frame(frame)?;
        let size = self.size;
        let outputs = model::run(&self.plan, &[1, 3, size, size], self.input(frame))
            .map_err(|e| e.context(format!("running {}", self.path.display())))?;
        let cands = self.decode(&outputs)?;
        let (w, h) = (frame.width as f64, frame.height as f64);
        let k = size as f64;
        Ok(detections_json(&cands, &self.params, frame, |b| BBox::new(b.x1 * w / k, b.y1 * h / k, b.x2 * w / k, b.y2 * h / k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(score: f32, class: usize, x: f64) -> Candidate {
        Candidate {
            score,
            class,
            bbox: BBox::new(x, 0.0, x + 10.0, 10.0),
        }
    }

    #[test]
    fn labels_are_coco_order() {
        assert_eq!(COCO_LABELS[0], "person");
        assert_eq!(COCO_LABELS[15], "cat");
        assert_eq!(COCO_LABELS[41], "cup");
        assert_eq!(COCO_LABELS[60], "dining table");
        assert_eq!(COCO_LABELS[79], "toothbrush");
    }

    #[test]
    fn nms_is_per_class_and_order_breaks_ties() {
        let cands = [
            cand(0.5, 3, 0.0),
            cand(0.9, 3, 1.0),  // suppresses 0 (IoU 0.82)
            cand(0.5, 1, 0.0),  // other class: kept
            cand(0.5, 1, 50.0), // same score, same class, later
            cand(0.7, 2, 0.5),
        ];
        assert_eq!(select(&cands, NMS_THR, MAX_DETS), vec![1, 4, 2, 3]);
    }

    #[test]
    fn at_most_100() {
        let cands: Vec<Candidate> = (0..150).map(|i| cand(0.5, 0, i as f64 * 20.0)).collect();
        let kept = select(&cands, NMS_THR, MAX_DETS);
        assert_eq!(kept.len(), 100);
        assert_eq!(kept[..3], [0, 1, 2]);
    }

    #[test]
    fn decode_threshold_argmax_and_distances() {
        // One stride-32 grid (13×13): only point 14 (row 1, col 1) scores.
        let n = 13 * 13;
        let mut cls = vec![0.1f32; n * CLASSES];
        cls[14 * CLASSES + 7] = 0.6;
        cls[14 * CLASSES + 9] = 0.6; // tie: first maximum (7) wins
        cls[20 * CLASSES] = 0.3499; // below threshold
        let mut reg = vec![0f32; n * 4 * BINS];
        // left: all mass on bin 2; top: uniform (expectation 5);
        // right: bin 0; bottom: bin 10.
        let r = &mut reg[14 * 44..15 * 44];
        r[2] = 100.0;
        r[22] = 100.0;
        r[33 + 10] = 100.0;
        let mut out = Vec::new();
        decode_stride(SIZE, CLASSES, SCORE_THR, 32, &cls, &reg, &mut out);
        assert_eq!(out.len(), 1);
        let c = out[0];
        assert_eq!((c.class, c.score), (7, 0.6));
        let (cx, cy) = (48.0, 48.0);
        assert!((c.bbox.x1 - (cx - 64.0)).abs() < 1e-9);
        assert!((c.bbox.y1 - (cy - 160.0)).abs() < 1e-9);
        assert!((c.bbox.x2 - cx).abs() < 1e-9);
        assert!((c.bbox.y2 - (cy + 320.0)).abs() < 1e-9);
    }
}
