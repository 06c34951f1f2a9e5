//! Boxes, overlap, greedy NMS and the spec's rounding.

/// A continuous box `x1, y1, x2, y2` (no +1 in widths).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BBox {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
}

/// How NMS measures overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// Intersection over union.
    Union,
    /// Intersection over the smaller area.
    Min,
}

impl BBox {
    pub const fn new(x1: f64, y1: f64, x2: f64, y2: f64) -> Self {
        Self { x1, y1, x2, y2 }
    }

    /// From a result's `[x, y, w, h]`.
    pub fn from_xywh(x: f64, y: f64, w: f64, h: f64) -> Self {
        Self::new(x, y, x + w, y + h)
    }

    pub fn width(&self) -> f64 {
        self.x2 - self.x1
    }

    pub fn height(&self) -> f64 {
        self.y2 - self.y1
    }

    pub fn area(&self) -> f64 {
        self.width() * self.height()
    }

    pub fn intersection(&self, o: &BBox) -> f64 {
        let w = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let h = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        w * h
    }

    pub fn overlap(&self, o: &BBox, mode: Overlap) -> f64 {
        let inter = self.intersection(o);
        let denom = match mode {
            Overlap::Union => self.area() + o.area() - inter,
            Overlap::Min => self.area().min(o.area()),
        };
        if denom > 0.0 {
            inter / denom
        } else {
            0.0
        }
    }

    pub fn iou(&self, o: &BBox) -> f64 {
        self.overlap(o, Overlap::Union)
    }

    /// The square of side `max(w, h)` on the same centre.
    pub fn squared(&self) -> BBox {
        let (w, h) = (self.width(), self.height());
        let l = w.max(h);
        let (cx, cy) = (self.x1 + w / 2.0, self.y1 + h / 2.0);
        BBox::new(cx - l / 2.0, cy - l / 2.0, cx + l / 2.0, cy + l / 2.0)
    }

    /// Clips `x` to `[0, w]` and `y` to `[0, h]`.
    pub fn clipped(&self, w: f64, h: f64) -> BBox {
        BBox::new(
            self.x1.clamp(0.0, w),
            self.y1.clamp(0.0, h),
            self.x2.clamp(0.0, w),
            self.y2.clamp(0.0, h),
        )
    }

    /// The result form `[x, y, w, h]`, each rounded to 2 decimals.
    pub fn to_xywh_json(&self) -> serde_json::Value {
        serde_json::json!([
            round_to(self.x1, 2),
            round_to(self.y1, 2),
            round_to(self.x2 - self.x1, 2),
            round_to(self.y2 - self.y1, 2)
        ])
    }
}

/// Greedy NMS: candidates in descending score (ties keep their input order);
/// one is dropped when its overlap with an already kept box is `> thr`.
/// Returns the indices kept, in keeping order.
pub fn nms(boxes: &[BBox], scores: &[f64], thr: f64, mode: Overlap) -> Vec<usize> {
    debug_assert_eq!(boxes.len(), scores.len());
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    // Stable: equal scores keep input order.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut keep: Vec<usize> = Vec::new();
    for i in order {
        if keep
            .iter()
            .all(|&j| boxes[i].overlap(&boxes[j], mode) <= thr)
        {
            keep.push(i);
        }
    }
    keep
}

/// The spec's `round`: half up, `floor(v + 0.5)`.
pub fn round_half_up(v: f64) -> f64 {
    (v + 0.5).floor()
}

/// Rounds half up to `decimals` decimal places.
pub fn round_to(v: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    round_half_up(v * p) / p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_modes() {
        let a = BBox::new(0.0, 0.0, 10.0, 10.0);
        let b = BBox::new(5.0, 0.0, 15.0, 10.0);
        assert_eq!(a.iou(&b), 50.0 / 150.0);
        let inner = BBox::new(2.0, 2.0, 4.0, 4.0);
        assert_eq!(a.overlap(&inner, Overlap::Min), 1.0);
        assert_eq!(a.overlap(&inner, Overlap::Union), 0.04);
        assert_eq!(a.iou(&BBox::new(20.0, 20.0, 30.0, 30.0)), 0.0);
    }

    #[test]
    fn nms_is_greedy_and_stable() {
        let boxes = [
            BBox::new(0.0, 0.0, 10.0, 10.0),
            BBox::new(1.0, 0.0, 11.0, 10.0), // IoU with 0: 90/110 = 0.818
            BBox::new(50.0, 50.0, 60.0, 60.0),
            BBox::new(0.0, 0.0, 10.0, 10.0),
        ];
        // Highest first; box 1 suppresses 0 and 3.
        assert_eq!(
            nms(&boxes, &[0.8, 0.9, 0.5, 0.7], 0.6, Overlap::Union),
            vec![1, 2]
        );
        // Ties keep input order: 0 is kept before 3, which it suppresses.
        assert_eq!(
            nms(&boxes, &[0.5, 0.1, 0.2, 0.5], 0.6, Overlap::Union),
            vec![0, 2]
        );
        // Overlap exactly at the threshold is kept (drop only when `> thr`).
        let half = [BBox::new(0.0, 0.0, 2.0, 1.0), BBox::new(1.0, 0.0, 3.0, 1.0)];
        assert_eq!(
            nms(&half, &[1.0, 0.9], 1.0 / 3.0, Overlap::Union),
            vec![0, 1]
        );
        assert_eq!(nms(&half, &[1.0, 0.9], 0.3, Overlap::Union), vec![0]);
        // Min mode: a box inside another is suppressed.
        let nested = [
            BBox::new(0.0, 0.0, 10.0, 10.0),
            BBox::new(2.0, 2.0, 4.0, 4.0),
        ];
        assert_eq!(nms(&nested, &[0.9, 0.8], 0.7, Overlap::Min), vec![0]);
        assert_eq!(nms(&nested, &[0.9, 0.8], 0.7, Overlap::Union), vec![0, 1]);
    }

    #[test]
    fn rounding_is_half_up() {
        assert_eq!(round_half_up(2.5), 3.0);
        assert_eq!(round_half_up(-2.5), -2.0);
        assert_eq!(round_half_up(2.4999), 2.0);
        assert_eq!(round_to(0.28125, 4), 0.2813); // Python's round() gives 0.2812
        assert_eq!(round_to(99.0749, 2), 99.07);
        assert_eq!(round_to(0.99796, 4), 0.998);
        assert_eq!(round_to(12.0, 2), 12.0);
    }

    #[test]
    fn squared_and_clipped() {
        let b = BBox::new(10.0, 20.0, 14.0, 30.0).squared();
        assert_eq!(b, BBox::new(7.0, 20.0, 17.0, 30.0));
        let c = BBox::new(-5.0, 3.0, 700.0, 500.0).clipped(640.0, 480.0);
        assert_eq!(c, BBox::new(0.0, 3.0, 640.0, 480.0));
        assert_eq!(
            c.to_xywh_json(),
            serde_json::json!([0.0, 3.0, 640.0, 477.0])
        );
    }
}
