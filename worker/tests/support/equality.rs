//! Test support, not product code (included by `fixtures_analysis.rs`):
//! the spec's "Equality" rule: runs A (reference) and B agree on a (frame,
//! model) when a one-to-one matching pairs A's and B's results within the
//! allowances, every unpaired result being one that may be missing.
//!
//! The matching maximises the number of results that must be paired (a
//! maximum-weight bipartite matching, Hungarian method), so the verdict does
//! not depend on the order of the results.

use serde_json::Value;

use panoptes_worker::analysis::geometry::BBox;

/// Whether `ours` agrees with `reference` for `model` ("objects", "joy",
/// "colors"). The error names every result that found no partner and why
/// its closest candidate was refused.
pub fn agree(model: &str, reference: &Value, ours: &Value) -> Result<(), String> {
    match model {
        "objects" => agree_with(&ObjectsRule, reference, ours),
        "joy" => agree_with(&JoyRule, reference, ours),
        "colors" => agree_with(&ColorsRule, reference, ours),
        _ => Err(format!("no equality rule for model {model:?}")),
    }
}

fn agree_with<R: Rule>(rule: &R, reference: &Value, ours: &Value) -> Result<(), String> {
    let a = as_items(reference, "reference")?;
    let b = as_items(ours, "ours")?;
    let pa: Vec<R::Item> = a
        .iter()
        .map(|v| rule.parse(v))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reference: {e}"))?;
    let pb: Vec<R::Item> = b
        .iter()
        .map(|v| rule.parse(v))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ours: {e}"))?;

    // A pair weighs (n + 1) per end that must be paired, plus 1: the
    // matching first pairs as many must-pair results as possible, then as
    // many results as possible.
    let req_a: Vec<bool> = pa.iter().map(|x| !rule.may_be_missing(x)).collect();
    let req_b: Vec<bool> = pb.iter().map(|x| !rule.may_be_missing(x)).collect();
    let big = pa.len().max(pb.len()) as i64 + 1;
    let weights: Vec<Vec<Option<i64>>> = pa
        .iter()
        .enumerate()
        .map(|(i, x)| {
            pb.iter()
                .enumerate()
                .map(|(j, y)| {
                    rule.mismatch(x, y)
                        .is_none()
                        .then(|| 1 + big * (req_a[i] as i64 + req_b[j] as i64))
                })
                .collect()
        })
        .collect();
    let pairing = max_weight_matching(&weights, pa.len(), pb.len());

    let mut problems = Vec::new();
    for (i, x) in pa.iter().enumerate() {
        if pairing.a_to_b[i].is_none() && req_a[i] {
            problems.push(format!(
                "reference[{i}] {} has no match in ours{}",
                rule.describe(x),
                closest(rule, x, &pb, |y| rule.mismatch(x, y))
            ));
        }
    }
    for (j, y) in pb.iter().enumerate() {
        if pairing.b_to_a[j].is_none() && req_b[j] {
            problems.push(format!(
                "ours[{j}] {} has no match in reference{}",
                rule.describe(y),
                closest(rule, y, &pa, |x| rule.mismatch(x, y))
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// ": closest X refused: why" for the candidate of best IoU or distance.
fn closest<R: Rule>(
    rule: &R,
    x: &R::Item,
    others: &[R::Item],
    why: impl Fn(&R::Item) -> Option<String>,
) -> String {
    let best = others
        .iter()
        .enumerate()
        .min_by(|(_, p), (_, q)| rule.distance(x, p).total_cmp(&rule.distance(x, q)));
    match best {
        Some((k, y)) => match why(y) {
            Some(reason) => format!(" (closest [{k}] {}: {reason})", rule.describe(y)),
            None => format!(
                " (closest [{k}] {} was paired with another)",
                rule.describe(y)
            ),
        },
        None => " (other side is empty)".into(),
    }
}

fn as_items<'a>(v: &'a Value, side: &str) -> Result<&'a Vec<Value>, String> {
    v.as_array()
        .ok_or_else(|| format!("{side}: results are not a JSON array: {v}"))
}

trait Rule {
    type Item;
    fn parse(&self, v: &Value) -> Result<Self::Item, String>;
    /// `None` when `a` (reference) and `b` (ours) may be paired.
    fn mismatch(&self, a: &Self::Item, b: &Self::Item) -> Option<String>;
    fn may_be_missing(&self, x: &Self::Item) -> bool;
    /// Smaller is closer, to pick the candidate named in errors.
    fn distance(&self, a: &Self::Item, b: &Self::Item) -> f64;
    fn describe(&self, x: &Self::Item) -> String;
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    v.get(key)
        .ok_or_else(|| format!("result without {key:?}: {v}"))
}

fn num(v: &Value, key: &str) -> Result<f64, String> {
    field(v, key)?
        .as_f64()
        .ok_or_else(|| format!("{key:?} is not a number: {v}"))
}

fn text(v: &Value, key: &str) -> Result<String, String> {
    Ok(field(v, key)?
        .as_str()
        .ok_or_else(|| format!("{key:?} is not a string: {v}"))?
        .to_owned())
}

fn xywh(v: &Value) -> Result<BBox, String> {
    let b = field(v, "box")?
        .as_array()
        .filter(|b| b.len() == 4)
        .ok_or_else(|| format!("\"box\" is not [x,y,w,h]: {v}"))?;
    let n: Vec<f64> = b
        .iter()
        .map(|x| x.as_f64().ok_or_else(|| format!("bad box: {v}")))
        .collect::<Result<_, _>>()?;
    Ok(BBox::from_xywh(n[0], n[1], n[2], n[3]))
}

fn fmt_box(b: &BBox) -> String {
    format!(
        "[{:.2}, {:.2}, {:.2}, {:.2}]",
        b.x1,
        b.y1,
        b.width(),
        b.height()
    )
}

struct ObjectsRule;
struct Detection {
    label: String,
    score: f64,
    bbox: BBox,
}

impl Rule for ObjectsRule {
    type Item = Detection;
    fn parse(&self, v: &Value) -> Result<Detection, String> {
        Ok(Detection {
            label: text(v, "label")?,
            score: num(v, "score")?,
            bbox: xywh(v)?,
        })
    }
    fn mismatch(&self, a: &Detection, b: &Detection) -> Option<String> {
        let mut why = Vec::new();
        if a.label != b.label {
            why.push(format!("label {} vs {}", a.label, b.label));
        }
        let iou = a.bbox.iou(&b.bbox);
        if iou < 0.9 {
            why.push(format!("IoU {iou:.3} < 0.9"));
        }
        let ds = (a.score - b.score).abs();
        if ds > 0.02 + 1e-9 {
            why.push(format!("|Δscore| {ds:.4} > 0.02"));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
    fn may_be_missing(&self, x: &Detection) -> bool {
        x.score < 0.37
    }
    fn distance(&self, a: &Detection, b: &Detection) -> f64 {
        (1.0 - a.bbox.iou(&b.bbox)) + if a.label == b.label { 0.0 } else { 1.0 }
    }
    fn describe(&self, x: &Detection) -> String {
        format!("{} {:.4} {}", x.label, x.score, fmt_box(&x.bbox))
    }
}

struct JoyRule;
struct Face {
    score: f64,
    bbox: BBox,
    emotion: String,
    emotion_score: f64,
    gender: String,
    gender_score: f64,
}

impl Rule for JoyRule {
    type Item = Face;
    fn parse(&self, v: &Value) -> Result<Face, String> {
        Ok(Face {
            score: num(v, "score")?,
            bbox: xywh(v)?,
            emotion: text(v, "emotion")?,
            emotion_score: num(v, "emotion_score")?,
            gender: text(v, "gender")?,
            gender_score: num(v, "gender_score")?,
        })
    }
    fn mismatch(&self, a: &Face, b: &Face) -> Option<String> {
        let mut why = Vec::new();
        let iou = a.bbox.iou(&b.bbox);
        if iou < 0.9 {
            why.push(format!("IoU {iou:.3} < 0.9"));
        }
        if a.emotion != b.emotion && a.emotion_score >= 0.6 {
            why.push(format!(
                "emotion {} ({:.4}) vs {}",
                a.emotion, a.emotion_score, b.emotion
            ));
        }
        if a.gender != b.gender && a.gender_score >= 0.6 {
            why.push(format!(
                "gender {} ({:.4}) vs {}",
                a.gender, a.gender_score, b.gender
            ));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
    fn may_be_missing(&self, x: &Face) -> bool {
        x.score < 0.82
    }
    fn distance(&self, a: &Face, b: &Face) -> f64 {
        1.0 - a.bbox.iou(&b.bbox)
    }
    fn describe(&self, x: &Face) -> String {
        format!(
            "face {:.4} {} {} {:.4} {} {:.4}",
            x.score,
            fmt_box(&x.bbox),
            x.emotion,
            x.emotion_score,
            x.gender,
            x.gender_score
        )
    }
}

struct ColorsRule;
struct Swatch {
    rgb: [f64; 3],
    fraction: f64,
    hex: String,
}

impl Rule for ColorsRule {
    type Item = Swatch;
    fn parse(&self, v: &Value) -> Result<Swatch, String> {
        let hex = text(v, "color")?;
        let bad = || format!("\"color\" is not #rrggbb: {v}");
        let digits = hex
            .strip_prefix('#')
            .filter(|d| d.len() == 6)
            .ok_or_else(bad)?;
        let mut rgb = [0f64; 3];
        for (k, c) in rgb.iter_mut().enumerate() {
            *c = u8::from_str_radix(&digits[2 * k..2 * k + 2], 16).map_err(|_| bad())? as f64;
        }
        Ok(Swatch {
            rgb,
            fraction: num(v, "fraction")?,
            hex,
        })
    }
    fn mismatch(&self, a: &Swatch, b: &Swatch) -> Option<String> {
        let mut why = Vec::new();
        let d = self.distance(a, b);
        if d > 8.0 {
            why.push(format!("RGB distance {d:.2} > 8"));
        }
        let df = (a.fraction - b.fraction).abs();
        if df > 0.03 + 1e-9 {
            why.push(format!("|Δfraction| {df:.4} > 0.03"));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
    fn may_be_missing(&self, _: &Swatch) -> bool {
        false
    }
    fn distance(&self, a: &Swatch, b: &Swatch) -> f64 {
        a.rgb
            .iter()
            .zip(&b.rgb)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    }
    fn describe(&self, x: &Swatch) -> String {
        format!("{} {:.4}", x.hex, x.fraction)
    }
}

struct Pairing {
    a_to_b: Vec<Option<usize>>,
    b_to_a: Vec<Option<usize>>,
}

/// Maximum-weight bipartite matching (Hungarian method on the square matrix
/// padded with zero-weight "unpaired" cells). `weights[i][j] = None` means
/// `i` and `j` may not be paired.
fn max_weight_matching(weights: &[Vec<Option<i64>>], na: usize, nb: usize) -> Pairing {
    let n = na.max(nb);
    let mut pairing = Pairing {
        a_to_b: vec![None; na],
        b_to_a: vec![None; nb],
    };
    if n == 0 {
        return pairing;
    }
    let cost = |i: usize, j: usize| -> i64 {
        if i < na && j < nb {
            -weights[i][j].unwrap_or(0)
        } else {
            0
        }
    };
    // Classic O(n³) potentials formulation, 1-based with a virtual row 0.
    const INF: i64 = i64::MAX / 4;
    let mut u = vec![0i64; n + 1];
    let mut v = vec![0i64; n + 1];
    let mut p = vec![0usize; n + 1]; // p[j] = row matched to column j
    let mut way = vec![0usize; n + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![INF; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = INF;
            let mut j1 = 0;
            for j in 1..=n {
                if !used[j] {
                    let cur = cost(i0 - 1, j - 1) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    for (jj, &row) in p.iter().skip(1).enumerate() {
        let i = row - 1;
        if i < na && jj < nb && weights[i][jj].is_some() {
            pairing.a_to_b[i] = Some(jj);
            pairing.b_to_a[jj] = Some(i);
        }
    }
    pairing
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn det(label: &str, score: f64, b: [f64; 4]) -> Value {
        json!({"label": label, "class_id": 0, "score": score, "box": b})
    }

    #[test]
    fn identical_agree() {
        let a = json!([
            det("person", 0.8, [0.0, 0.0, 100.0, 100.0]),
            det("cup", 0.5, [10.0, 10.0, 5.0, 5.0])
        ]);
        assert_eq!(agree("objects", &a, &a), Ok(()));
        assert_eq!(agree("objects", &json!([]), &json!([])), Ok(()));
    }

    #[test]
    fn order_does_not_matter() {
        let a = json!([
            det("person", 0.8, [0.0, 0.0, 100.0, 100.0]),
            det("person", 0.79, [200.0, 0.0, 100.0, 100.0])
        ]);
        let b = json!([
            det("person", 0.79, [200.0, 0.0, 100.0, 100.0]),
            det("person", 0.8, [0.0, 0.0, 100.0, 100.0])
        ]);
        assert_eq!(agree("objects", &a, &b), Ok(()));
    }

    #[test]
    fn objects_allowances() {
        let a = json!([det("person", 0.8, [0.0, 0.0, 100.0, 100.0])]);
        // score within 0.02, IoU 0.95
        assert_eq!(
            agree(
                "objects",
                &a,
                &json!([det("person", 0.82, [0.0, 0.0, 95.0, 100.0])])
            ),
            Ok(())
        );
        let err = agree(
            "objects",
            &a,
            &json!([det("person", 0.83, [0.0, 0.0, 100.0, 100.0])]),
        )
        .unwrap_err();
        assert!(err.contains("|Δscore|"), "{err}");
        let err = agree(
            "objects",
            &a,
            &json!([det("person", 0.8, [0.0, 0.0, 85.0, 100.0])]),
        )
        .unwrap_err();
        assert!(err.contains("IoU 0.850"), "{err}");
        let err = agree(
            "objects",
            &a,
            &json!([det("dog", 0.8, [0.0, 0.0, 100.0, 100.0])]),
        )
        .unwrap_err();
        assert!(err.contains("label person vs dog"), "{err}");
        // A low-score detection may be missing on either side.
        let low = json!([det("car", 0.3699, [5.0, 5.0, 5.0, 5.0])]);
        assert_eq!(agree("objects", &low, &json!([])), Ok(()));
        assert_eq!(agree("objects", &json!([]), &low), Ok(()));
        let err = agree(
            "objects",
            &json!([det("car", 0.37, [5.0, 5.0, 5.0, 5.0])]),
            &json!([]),
        )
        .unwrap_err();
        assert!(
            err.contains("reference[0] car 0.3700") && err.contains("other side is empty"),
            "{err}"
        );
    }

    #[test]
    fn matching_is_one_to_one_and_optimal() {
        // A[0] fits B[0] and B[1]; A[1] fits only B[0]. First-fit in order
        // would give B[0] to A[0] and leave A[1] unpaired.
        let a = json!([
            det("person", 0.8, [0.0, 0.0, 100.0, 100.0]),
            det("person", 0.8, [0.0, 0.0, 100.0, 88.0])
        ]);
        let b = json!([
            det("person", 0.8, [0.0, 0.0, 100.0, 95.0]),
            det("person", 0.8, [0.0, 0.0, 100.0, 100.0])
        ]);
        assert_eq!(agree("objects", &a, &b), Ok(()));
        // Two references cannot share one detection.
        let b1 = json!([det("person", 0.8, [0.0, 0.0, 100.0, 95.0])]);
        let err = agree("objects", &a, &b1).unwrap_err();
        assert!(err.contains("has no match in ours"), "{err}");
    }

    #[test]
    fn required_items_win_over_optional_ones() {
        // B[0] fits both A[0] (optional, 0.36) and A[1] (required); the
        // matching must give it to A[1].
        let a = json!([
            det("person", 0.36, [0.0, 0.0, 100.0, 100.0]),
            det("person", 0.38, [0.0, 0.0, 100.0, 97.0])
        ]);
        let b = json!([det("person", 0.37, [0.0, 0.0, 100.0, 98.0])]);
        assert_eq!(agree("objects", &a, &b), Ok(()));
    }

    fn face(score: f64, emotion: &str, es: f64, gender: &str, gs: f64) -> Value {
        json!({"face_id": 0, "box": [10.0, 10.0, 50.0, 60.0], "score": score, "emotion": emotion,
               "emotion_score": es, "gender": gender, "gender_score": gs, "joy": emotion == "happy"})
    }

    #[test]
    fn joy_allowances() {
        let a = json!([face(0.99, "happy", 0.59, "man", 0.9)]);
        assert_eq!(
            agree("joy", &a, &json!([face(0.99, "sad", 0.7, "man", 0.9)])),
            Ok(())
        );
        let err = agree("joy", &a, &json!([face(0.99, "happy", 0.6, "woman", 0.9)])).unwrap_err();
        assert!(err.contains("gender man (0.9000) vs woman"), "{err}");
        let a = json!([face(0.99, "happy", 0.95, "man", 0.55)]);
        assert_eq!(
            agree(
                "joy",
                &a,
                &json!([face(0.99, "happy", 0.95, "woman", 0.55)])
            ),
            Ok(())
        );
        assert!(agree("joy", &a, &json!([face(0.99, "neutral", 0.5, "man", 0.55)])).is_err());
        // Faces under 0.82 may be missing.
        assert_eq!(
            agree(
                "joy",
                &json!([face(0.81, "happy", 0.9, "man", 0.9)]),
                &json!([])
            ),
            Ok(())
        );
        assert!(agree(
            "joy",
            &json!([]),
            &json!([face(0.82, "happy", 0.9, "man", 0.9)])
        )
        .is_err());
    }

    #[test]
    fn colors_allowances() {
        let a =
            json!([{"color": "#102030", "fraction": 0.5}, {"color": "#ffffff", "fraction": 0.5}]);
        let b =
            json!([{"color": "#ffffff", "fraction": 0.47}, {"color": "#142434", "fraction": 0.53}]);
        assert_eq!(agree("colors", &a, &b), Ok(()));
        let c =
            json!([{"color": "#ffffff", "fraction": 0.5}, {"color": "#152535", "fraction": 0.5}]);
        let err = agree("colors", &a, &c).unwrap_err();
        assert!(err.contains("RGB distance 8.66 > 8"), "{err}");
        let d = json!([{"color": "#ffffff", "fraction": 0.5}]);
        assert!(agree("colors", &a, &d).is_err());
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(agree("objects", &json!({}), &json!([])).is_err());
        assert!(agree(
            "colors",
            &json!([{"color": "red", "fraction": 1.0}]),
            &json!([])
        )
        .is_err());
        assert!(agree("nope", &json!([]), &json!([])).is_err());
    }
}
