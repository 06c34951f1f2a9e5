//! `joy`: faces (MTCNN), then emotion and gender per face.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde_json::{json, Value};
use tract_onnx::prelude::{InferenceModel, TValue};

use super::geometry::{nms, round_half_up, round_to, BBox, Overlap};
use super::model::{self, Engine, Plan};
use super::resize::{resize_region, Region};
use super::{check_frame, gray_px, Analysis, ModelError, RgbFrame};

const PNET_FILE: &str = "mtcnn_pnet.onnx";
const RNET_FILE: &str = "mtcnn_rnet.onnx";
const ONET_FILE: &str = "mtcnn_onet.onnx";
const EMOTION_FILE: &str = "emotion_mini_xception_fer2013.onnx";
const GENDER_FILE: &str = "gender_oarriaga_gray64.onnx";

const MIN_FACE: f64 = 20.0;
const PYRAMID_FACTOR: f64 = 0.709;
const PNET_CELL: f64 = 12.0;
const PNET_STRIDE: f64 = 2.0;
const PNET_THR: f64 = 0.6;
const RNET_THR: f64 = 0.7;
const ONET_THR: f64 = 0.8;
const CLASSIFIER_SIZE: usize = 64;
const GENDER_MARGIN: f64 = 10.0;
/// P-Net plans kept per frame size; past this the cache starts over.
const PNET_CACHE_MAX: usize = 64;

pub use panoptes_common::config::{EMOTIONS, GENDERS};

/// A plan with its regression and probability outputs located.
struct Net {
    plan: Plan,
    reg: usize,
    prob: usize,
}

/// The `joy` analysis.
pub struct Joy {
    pnet_path: PathBuf,
    /// tract: the parsed P-Net, planned per pyramid level below; `None` with
    /// onnxruntime, whose one P-Net plan (under (12, 12)) takes every shape.
    pnet_model: Option<InferenceModel>,
    /// P-Net plans fixed to each pyramid level's concrete input shape
    /// (symbolic shapes run several times slower), keyed by (height, width).
    pnet_plans: Mutex<HashMap<(usize, usize), Arc<Net>>>,
    rnet: Net,
    onet: Net,
    emotion: Plan,
    gender: Plan,
    /// `(v − 127.5) / 128` per byte value.
    mtcnn_lut: [f32; 256],
    /// `(v / 255 − 0.5) · 2` per byte value.
    gray_lut: [f32; 256],
}

/// Locates the `[…, 4]` regression and `[…, 2]` probability outputs.
fn locate(path: &Path, plan: Plan, expected: &str) -> Result<Net, ModelError> {
    let shapes = model::output_shapes(&plan);
    let find = |last: usize| {
        let hits: Vec<usize> = shapes
            .iter()
            .enumerate()
            .filter(|(_, s)| s.last().copied().flatten() == Some(last))
            .map(|(i, _)| i)
            .collect();
        (hits.len() == 1).then(|| hits[0])
    };
    match (find(4), find(2)) {
        (Some(reg), Some(prob)) => Ok(Net { plan, reg, prob }),
        _ => Err(ModelError::Layout {
            path: path.into(),
            expected: expected.into(),
            found: model::fmt_shapes(&shapes),
        }),
    }
}

/// Loads a softmax classifier on `[1,64,64,1]` and checks it has `classes` outputs.
fn classifier(engine: &Engine, path: &Path, classes: usize) -> Result<Plan, ModelError> {
    let plan = model::load(engine, path, &[1, CLASSIFIER_SIZE, CLASSIFIER_SIZE, 1])?;
    let shapes = model::output_shapes(&plan);
    if shapes.len() != 1 || shapes[0] != [Some(1), Some(classes)] {
        return Err(ModelError::Layout {
            path: path.into(),
            expected: format!("one output [1,{classes}]"),
            found: model::fmt_shapes(&shapes),
        });
    }
    Ok(plan)
}

/// The default file names, in the order [`Joy::load_files`] takes them.
pub(crate) const FILES: [&str; 5] = [PNET_FILE, RNET_FILE, ONET_FILE, EMOTION_FILE, GENDER_FILE];

impl Joy {
    /// Loads the default files from `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        Self::load_files(&Engine::Tract, &FILES.map(|f| dir.join(f)))
    }

    /// Loads P-Net, R-Net, O-Net, the emotion and the gender classifier from
    /// these files, in that order.
    pub fn load_files(engine: &Engine, files: &[PathBuf; 5]) -> Result<Self, ModelError> {
        let [pnet_path, rnet_path, onet_path, emotion_path, gender_path] = files.clone();
        let pnet_model = match engine {
            Engine::Tract => Some(model::read(&pnet_path)?),
            Engine::Onnxruntime { .. } => None,
        };
        // Check the layout now on the smallest level (one 12×12 cell).
        let probe = match &pnet_model {
            Some(m) => model::plan(&pnet_path, m.clone(), &[1, 12, 12, 3])?,
            None => model::load(engine, &pnet_path, &[1, 12, 12, 3])?,
        };
        let probe = locate(
            &pnet_path,
            probe,
            "outputs bbox_reg [1,h,w,4] and prob [1,h,w,2]",
        )?;
        let mut plans = HashMap::new();
        plans.insert((12, 12), Arc::new(probe));

        // R-/O-Net run one crop at a time: a concrete batch of 1 is faster
        // per crop in tract than any larger or symbolic batch.
        let rnet = model::load(engine, &rnet_path, &[1, 24, 24, 3])?;
        let rnet = locate(
            &rnet_path,
            rnet,
            "outputs bbox_reg [1,4] and prob [1,2] for input [1,24,24,3]",
        )?;
        let onet = model::load(engine, &onet_path, &[1, 48, 48, 3])?;
        let onet = locate(
            &onet_path,
            onet,
            "outputs bbox_reg [1,4] and prob [1,2] for input [1,48,48,3]",
        )?;

        Ok(Self {
            pnet_path,
            pnet_model,
            pnet_plans: Mutex::new(plans),
            rnet,
            onet,
            emotion: classifier(engine, &emotion_path, EMOTIONS.len())?,
            gender: classifier(engine, &gender_path, GENDERS.len())?,
            mtcnn_lut: std::array::from_fn(|v| (v as f32 - 127.5) / 128.0),
            gray_lut: std::array::from_fn(|v| (v as f32 / 255.0 - 0.5) * 2.0),
        })
    }

    fn pnet(&self, h: usize, w: usize) -> anyhow::Result<Arc<Net>> {
        let Some(pnet_model) = &self.pnet_model else {
            // onnxruntime: one plan for every shape.
            return Ok(self.pnet_plans.lock().unwrap()[&(12, 12)].clone());
        };
        if let Some(net) = self.pnet_plans.lock().unwrap().get(&(h, w)) {
            return Ok(net.clone());
        }
        // Plan outside the lock; two threads may both plan the same shape.
        let plan = model::plan(&self.pnet_path, pnet_model.clone(), &[1, h, w, 3])?;
        let net = Arc::new(locate(
            &self.pnet_path,
            plan,
            "P-Net outputs [1,h,w,4]/[1,h,w,2]",
        )?);
        let mut plans = self.pnet_plans.lock().unwrap();
        if plans.len() >= PNET_CACHE_MAX {
            plans.clear();
        }
        plans.insert((h, w), net.clone());
        Ok(net)
    }

    fn normalise(&self, pixels: &[u8], out: &mut Vec<f32>) {
        out.extend(pixels.iter().map(|&v| self.mtcnn_lut[v as usize]));
    }

    /// MTCNN as the spec defines it: the faces and their O-Net scores.
    pub(crate) fn detect(&self, frame: &RgbFrame) -> anyhow::Result<Vec<(BBox, f64)>> {
        let (w, h) = (frame.width as usize, frame.height as usize);
        let stride = w * 3;
        let full = Region { x: 0, y: 0, w, h };

        // 1–2. Pyramid and P-Net.
        let m = PNET_CELL / MIN_FACE;
        let min_side = w.min(h) as f64;
        let mut boxes: Vec<BBox> = Vec::new();
        let mut scores: Vec<f64> = Vec::new();
        let mut input = Vec::new();
        for k in 0.. {
            let scale = m * PYRAMID_FACTOR.powf(k as f64);
            if min_side * scale < PNET_CELL {
                break;
            }
            let hs = (h as f64 * scale).ceil() as usize;
            let ws = (w as f64 * scale).ceil() as usize;
            let level = resize_region(&frame.data, stride, full, 3, ws as u32, hs as u32);
            input.clear();
            self.normalise(&level, &mut input);
            let net = self.pnet(hs, ws)?;
            let out = model::run(&net.plan, &[1, hs, ws, 3], std::mem::take(&mut input))
                .with_context(|| format!("running {} at {ws}x{hs}", self.pnet_path.display()))?;
            let (level_boxes, level_scores) =
                pnet_candidates(&out[net.reg], &out[net.prob], scale)?;
            for i in nms(&level_boxes, &level_scores, 0.5, Overlap::Union) {
                boxes.push(level_boxes[i]);
                scores.push(level_scores[i]);
            }
        }
        let mut boxes: Vec<BBox> = nms(&boxes, &scores, 0.7, Overlap::Union)
            .into_iter()
            .map(|i| boxes[i].squared())
            .collect();

        // 3. R-Net.
        let (b, s) = self.refine(frame, &boxes, &self.rnet, 24, RNET_THR)?;
        boxes = nms(&b, &s, 0.7, Overlap::Union)
            .into_iter()
            .map(|i| b[i].squared())
            .collect();

        // 4. O-Net.
        let (b, s) = self.refine(frame, &boxes, &self.onet, 48, ONET_THR)?;
        Ok(nms(&b, &s, 0.7, Overlap::Min)
            .into_iter()
            .map(|i| (b[i], s[i]))
            .collect())
    }

    /// One R-/O-Net stage: crop each box at `size`, keep `prob ≥ thr`,
    /// regress. Returns the regressed boxes and their scores.
    fn refine(
        &self,
        frame: &RgbFrame,
        boxes: &[BBox],
        net: &Net,
        size: usize,
        thr: f64,
    ) -> anyhow::Result<(Vec<BBox>, Vec<f64>)> {
        let mut res_boxes = Vec::new();
        let mut res_scores = Vec::new();
        for b in boxes {
            let Some(crop) = crop_rgb(frame, b, size) else {
                continue;
            };
            let mut input = Vec::with_capacity(crop.len());
            self.normalise(&crop, &mut input);
            let out = model::run(&net.plan, &[1, size, size, 3], input)?;
            let p = model::as_f32(&out[net.prob], 2, "prob")?[1] as f64;
            if p < thr {
                continue;
            }
            let d = model::as_f32(&out[net.reg], 4, "bbox_reg")?;
            let (bw, bh) = (b.width(), b.height());
            res_boxes.push(BBox::new(
                b.x1 + d[0] as f64 * bw,
                b.y1 + d[1] as f64 * bh,
                b.x2 + d[2] as f64 * bw,
                b.y2 + d[3] as f64 * bh,
            ));
            res_scores.push(p);
        }
        Ok((res_boxes, res_scores))
    }

    /// Softmax classifier on a gray crop resized to 64×64: (class, probability).
    fn classify(
        &self,
        plan: &Plan,
        gray: &[u8],
        stride: usize,
        r: Region,
        classes: usize,
    ) -> anyhow::Result<(usize, f64)> {
        let px = resize_region(
            gray,
            stride,
            r,
            1,
            CLASSIFIER_SIZE as u32,
            CLASSIFIER_SIZE as u32,
        );
        let input: Vec<f32> = px.iter().map(|&v| self.gray_lut[v as usize]).collect();
        let out = model::run(plan, &[1, CLASSIFIER_SIZE, CLASSIFIER_SIZE, 1], input)?;
        let p = model::as_f32(&out[0], classes, "class probabilities")?;
        let mut best = 0;
        for (i, &v) in p.iter().enumerate() {
            if v > p[best] {
                best = i;
            }
        }
        Ok((best, p[best] as f64))
    }
}

/// P-Net cells with `prob ≥ 0.6`, in row-major order, as frame boxes.
fn pnet_candidates(
    reg: &TValue,
    prob: &TValue,
    scale: f64,
) -> anyhow::Result<(Vec<BBox>, Vec<f64>)> {
    let shape = prob.shape();
    anyhow::ensure!(
        shape.len() == 4 && shape[3] == 2,
        "P-Net prob has shape {shape:?}"
    );
    let (rows, cols) = (shape[1], shape[2]);
    let prob = model::as_f32(prob, rows * cols * 2, "P-Net prob")?;
    let reg = model::as_f32(reg, rows * cols * 4, "P-Net bbox_reg")?;
    let mut boxes = Vec::new();
    let mut scores = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            let i = r * cols + c;
            let p = prob[2 * i + 1] as f64;
            if p < PNET_THR {
                continue;
            }
            let d = &reg[4 * i..4 * i + 4];
            let (x, y) = (PNET_STRIDE * c as f64, PNET_STRIDE * r as f64);
            boxes.push(BBox::new(
                (x + PNET_CELL * d[0] as f64) / scale,
                (y + PNET_CELL * d[1] as f64) / scale,
                (x + PNET_CELL + PNET_CELL * d[2] as f64) / scale,
                (y + PNET_CELL + PNET_CELL * d[3] as f64) / scale,
            ));
            scores.push(p);
        }
    }
    Ok((boxes, scores))
}

/// The rounded box's pixels `[x1, x2) × [y1, y2)` of the frame, black
/// outside it, resized to `size`×`size`; `None` when the box has no area.
fn crop_rgb(frame: &RgbFrame, b: &BBox, size: usize) -> Option<Vec<u8>> {
    let (w, h) = (frame.width as i64, frame.height as i64);
    let [x1, y1, x2, y2] = [b.x1, b.y1, b.x2, b.y2].map(|v| round_half_up(v) as i64);
    if x2 <= x1 || y2 <= y1 {
        return None;
    }
    let (cw, ch) = ((x2 - x1) as usize, (y2 - y1) as usize);
    let s = size as u32;
    if x1 >= 0 && y1 >= 0 && x2 <= w && y2 <= h {
        let r = Region {
            x: x1 as usize,
            y: y1 as usize,
            w: cw,
            h: ch,
        };
        return Some(resize_region(&frame.data, w as usize * 3, r, 3, s, s));
    }
    let mut padded = vec![0u8; cw * ch * 3];
    let (sx1, sy1, sx2, sy2) = (x1.max(0), y1.max(0), x2.min(w), y2.min(h));
    if sx2 > sx1 && sy2 > sy1 {
        let n = (sx2 - sx1) as usize * 3;
        for y in sy1..sy2 {
            let src = (y * w + sx1) as usize * 3;
            let dst = ((y - y1) as usize * cw + (sx1 - x1) as usize) * 3;
            padded[dst..dst + n].copy_from_slice(&frame.data[src..src + n]);
        }
    }
    let full = Region {
        x: 0,
        y: 0,
        w: cw,
        h: ch,
    };
    Some(resize_region(&padded, cw * 3, full, 3, s, s))
}

/// The pixels `[round(x1), round(x2)) × [round(y1), round(y2))` of an
/// already clipped box, or `None` when empty.
fn pixel_region(b: &BBox) -> Option<Region> {
    let [x1, y1, x2, y2] = [b.x1, b.y1, b.x2, b.y2].map(|v| round_half_up(v).max(0.0) as usize);
    (x2 > x1 && y2 > y1).then(|| Region {
        x: x1,
        y: y1,
        w: x2 - x1,
        h: y2 - y1,
    })
}

impl Analysis for Joy {
    fn name(&self) -> &str {
        "joy"
    }

    fn analyze(&self, frame: &RgbFrame) -> anyhow::Result<Value> {
        check_frame(frame)?;
        let faces = self.detect(frame)?;
        let (w, h) = (frame.width as f64, frame.height as f64);
        let mut results = Vec::new();
        for (face, score) in faces {
            let b = face.clipped(w, h);
            let grown = BBox::new(
                b.x1 - GENDER_MARGIN,
                b.y1 - GENDER_MARGIN,
                b.x2 + GENDER_MARGIN,
                b.y2 + GENDER_MARGIN,
            )
            .clipped(w, h);
            let (Some(er), Some(gr)) = (pixel_region(&b), pixel_region(&grown)) else {
                continue;
            };
            // Gray of the grown region only; it contains the emotion region.
            let mut gray = Vec::with_capacity(gr.w * gr.h);
            for y in gr.y..gr.y + gr.h {
                let row = &frame.data[(y * frame.width as usize + gr.x) * 3..][..gr.w * 3];
                gray.extend(row.chunks_exact(3).map(|p| gray_px(p[0], p[1], p[2])));
            }
            let local = Region {
                x: er.x - gr.x,
                y: er.y - gr.y,
                w: er.w,
                h: er.h,
            };
            let whole = Region {
                x: 0,
                y: 0,
                w: gr.w,
                h: gr.h,
            };
            let (e, e_p) = self.classify(&self.emotion, &gray, gr.w, local, EMOTIONS.len())?;
            let (g, g_p) = self.classify(&self.gender, &gray, gr.w, whole, GENDERS.len())?;
            results.push(json!({
                "face_id": results.len(),
                "box": b.to_xywh_json(),
                "score": round_to(score, 4),
                "emotion": EMOTIONS[e],
                "emotion_score": round_to(e_p, 4),
                "gender": GENDERS[g],
                "gender_score": round_to(g_p, 4),
                "joy": EMOTIONS[e] == "happy",
            }));
        }
        Ok(Value::Array(results))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_pads_with_black_outside_the_frame() {
        // 2×2 white frame; a box reaching one pixel outside on the left.
        let f = RgbFrame::new(2, 2, vec![255; 12]);
        let out = crop_rgb(&f, &BBox::new(-1.0, 0.0, 2.0, 2.0), 3).unwrap();
        // Same size, so no resampling: first column black, the rest white.
        let col0: Vec<u8> = out.chunks_exact(9).map(|row| row[0]).collect();
        assert_eq!(col0, vec![0, 0, 0]);
        assert!(out
            .chunks_exact(9)
            .all(|row| row[3..].iter().all(|&v| v == 255)));
        // Rounding half up: [0.5, 1.4) rounds to [1, 1): no area.
        assert!(crop_rgb(&f, &BBox::new(0.5, 0.0, 1.4, 2.0), 3).is_none());
    }

    #[test]
    fn pixel_regions_round_half_up() {
        assert_eq!(
            pixel_region(&BBox::new(0.5, 1.49, 3.5, 4.0)),
            Some(Region {
                x: 1,
                y: 1,
                w: 3,
                h: 3
            })
        );
        assert_eq!(pixel_region(&BBox::new(2.0, 0.0, 2.4, 5.0)), None);
    }
}
