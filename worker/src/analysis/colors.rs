//! `colors`: dominant colour palette by k-means on a thumbnail (no model).

use serde_json::{json, Value};

use super::geometry::{round_half_up, round_to};
use super::resize::resize_bilinear;
use super::{check_frame, gray_px, Analysis, RgbFrame};

const THUMB: u32 = 128;
const K: usize = 3;
const MAX_UPDATES: usize = 50;
const MOVE_EPS: f64 = 1.0;

/// The `colors` analysis.
#[derive(Clone, Copy, Debug, Default)]
pub struct Colors;

impl Analysis for Colors {
    fn name(&self) -> &str {
        "colors"
    }

    fn analyze(&self, frame: &RgbFrame) -> anyhow::Result<Value> {
        check_frame(frame)?;
        let (w, h) = (frame.width, frame.height);
        let thumb_size = thumbnail_size(w, h);
        let thumb;
        let pixels: &[u8] = match thumb_size {
            Some((tw, th)) => {
                thumb = resize_bilinear(&frame.data, w, h, 3, tw, th);
                &thumb
            }
            None => &frame.data,
        };
        let palette = kmeans_palette(pixels);
        let n = (pixels.len() / 3) as f64;
        Ok(Value::Array(
            palette
                .into_iter()
                .map(|(rgb, count)| {
                    json!({
                        "color": format!("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]),
                        "fraction": round_to(count as f64 / n, 4),
                    })
                })
                .collect(),
        ))
    }
}

/// The thumbnail size when the longer side exceeds 128: that side becomes
/// 128, the other `max(1, round(side · 128 / L))`.
fn thumbnail_size(w: u32, h: u32) -> Option<(u32, u32)> {
    let l = w.max(h);
    if l <= THUMB {
        return None;
    }
    let other = |side: u32| (round_half_up(side as f64 * THUMB as f64 / l as f64) as u32).max(1);
    Some(if w >= h {
        (THUMB, other(h))
    } else {
        (other(w), THUMB)
    })
}

/// k-means over packed RGB pixels as the spec defines it. Returns the
/// non-empty clusters as (centre rounded half up, count), by count
/// descending, ties by lower cluster index.
fn kmeans_palette(rgb: &[u8]) -> Vec<([u8; 3], usize)> {
    let n = rgb.len() / 3;
    if n == 0 {
        return Vec::new();
    }
    let k = K.min(distinct_colours_up_to(rgb, K));

    // Initial centres: points at ranks floor((2j+1)·N/(2k)) of a stable sort
    // by gray. A counting sort over the 256 gray levels is stable.
    let grays: Vec<u8> = rgb
        .chunks_exact(3)
        .map(|p| gray_px(p[0], p[1], p[2]))
        .collect();
    let mut starts = [0usize; 257];
    for &g in &grays {
        starts[g as usize + 1] += 1;
    }
    for i in 1..257 {
        starts[i] += starts[i - 1];
    }
    let mut sorted = vec![0u32; n];
    for (i, &g) in grays.iter().enumerate() {
        let slot = &mut starts[g as usize];
        sorted[*slot] = i as u32;
        *slot += 1;
    }
    let point = |i: usize| {
        [
            rgb[3 * i] as f64,
            rgb[3 * i + 1] as f64,
            rgb[3 * i + 2] as f64,
        ]
    };
    let mut centres: Vec<[f64; 3]> = (0..k)
        .map(|j| point(sorted[(2 * j + 1) * n / (2 * k)] as usize))
        .collect();

    let mut assign = vec![0u8; n];
    let mut counts = vec![0usize; k];
    for _ in 0..MAX_UPDATES {
        let mut sums = vec![[0f64; 3]; k];
        counts.iter_mut().for_each(|c| *c = 0);
        for (i, p) in rgb.chunks_exact(3).enumerate() {
            let p = [p[0] as f64, p[1] as f64, p[2] as f64];
            let mut best = 0;
            let mut best_d = f64::INFINITY;
            for (j, c) in centres.iter().enumerate() {
                let d = (p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2);
                if d < best_d {
                    best_d = d;
                    best = j;
                }
            }
            assign[i] = best as u8;
            counts[best] += 1;
            for ch in 0..3 {
                sums[best][ch] += p[ch];
            }
        }
        let mut max_move: f64 = 0.0;
        for j in 0..k {
            if counts[j] == 0 {
                continue;
            }
            let m = sums[j].map(|s| s / counts[j] as f64);
            let mv = ((m[0] - centres[j][0]).powi(2)
                + (m[1] - centres[j][1]).powi(2)
                + (m[2] - centres[j][2]).powi(2))
            .sqrt();
            max_move = max_move.max(mv);
            centres[j] = m;
        }
        if max_move <= MOVE_EPS {
            break;
        }
    }

    let mut order: Vec<usize> = (0..k).filter(|&j| counts[j] > 0).collect();
    order.sort_by(|&a, &b| counts[b].cmp(&counts[a])); // stable: ties by index
    order
        .into_iter()
        .map(|j| {
            (
                centres[j].map(|v| round_half_up(v).clamp(0.0, 255.0) as u8),
                counts[j],
            )
        })
        .collect()
}

/// The number of distinct colours, counting no further than `limit`.
fn distinct_colours_up_to(rgb: &[u8], limit: usize) -> usize {
    let mut seen: Vec<&[u8]> = Vec::with_capacity(limit);
    for p in rgb.chunks_exact(3) {
        if !seen.contains(&p) {
            seen.push(p);
            if seen.len() >= limit {
                break;
            }
        }
    }
    seen.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: u32, h: u32, px: &[[u8; 3]]) -> RgbFrame {
        RgbFrame::new(w, h, px.iter().flatten().copied().collect())
    }

    #[test]
    fn thumbnail_sizes() {
        assert_eq!(thumbnail_size(128, 50), None);
        assert_eq!(thumbnail_size(640, 480), Some((128, 96)));
        assert_eq!(thumbnail_size(512, 512), Some((128, 128)));
        assert_eq!(thumbnail_size(480, 640), Some((96, 128)));
        assert_eq!(thumbnail_size(1000, 1), Some((128, 1)));
        // 300 · 128 / 1000 = 38.4 -> 38; 203 · 128 / 1000 = 25.984 -> 26
        assert_eq!(thumbnail_size(1000, 300), Some((128, 38)));
        assert_eq!(thumbnail_size(203, 1000), Some((26, 128)));
    }

    #[test]
    fn single_colour_gives_one_cluster() {
        let f = frame(2, 2, &[[10, 20, 30]; 4]);
        assert_eq!(
            Colors.analyze(&f).unwrap(),
            json!([{"color": "#0a141e", "fraction": 1.0}])
        );
    }

    #[test]
    fn two_colours_give_two_clusters_by_count() {
        let f = frame(3, 1, &[[255, 255, 255], [0, 0, 0], [255, 255, 255]]);
        assert_eq!(
            Colors.analyze(&f).unwrap(),
            json!([{"color": "#ffffff", "fraction": 0.6667}, {"color": "#000000", "fraction": 0.3333}])
        );
    }

    #[test]
    fn initial_centres_follow_stable_gray_ranks() {
        // Gray values: red 76, green 150, blue 29, and a second blue.
        // Stable sort by gray: blue(2), blue(3), red(0), green(1); N=4, k=3:
        // ranks 0, 2, 3 -> blue, red, green. Every point sits on a centre,
        // so one update moves nothing and the counts are 2, 1, 1; the tie
        // between red and green keeps the lower index (red, centre 1).
        let f = frame(4, 1, &[[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 255]]);
        assert_eq!(
            Colors.analyze(&f).unwrap(),
            json!([
                {"color": "#0000ff", "fraction": 0.5},
                {"color": "#ff0000", "fraction": 0.25},
                {"color": "#00ff00", "fraction": 0.25}
            ])
        );
    }

    #[test]
    fn equal_distance_goes_to_lower_index() {
        // Points 0, 10, 20 (gray ranks give centres 0, 10, 20), then 5 is
        // equally far from centres 0 and 10 and joins centre 0.
        let px = [[0, 0, 0], [10, 10, 10], [20, 20, 20], [5, 5, 5]];
        let out = kmeans_palette(&px.iter().flatten().copied().collect::<Vec<_>>());
        // Sorted by gray: 0, 5, 10, 20 -> ranks 0, 2, 3 -> centres 0, 10, 20.
        // Centre 0 gets {0, 5}, mean 2.5 -> rounds half up to 3.
        assert_eq!(
            out,
            vec![([3, 3, 3], 2), ([10, 10, 10], 1), ([20, 20, 20], 1)]
        );
    }
}
