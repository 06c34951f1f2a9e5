//! Pillow-exact `Image.resize(size, Image.BILINEAR)` for 8-bit images.
//!
//! The spec's "bilinear" is Pillow's antialiased resampler: a triangle filter
//! whose support grows with the down-scaling ratio, applied as two separable
//! passes with 8-bit intermediate rows (horizontal first, unless the height
//! shrinks by more than twice as many pixels as the width) and
//! fixed-point coefficients of `PRECISION_BITS = 32 - 8 - 2` fractional bits.
//! This module reproduces that arithmetic bit for bit (see
//! `libImaging/Resample.c`, `precompute_coeffs`, `normalize_coeffs_8bpc`,
//! `ImagingResampleHorizontal_8bpc`/`Vertical_8bpc`). `fast_image_resize`
//! rounds its coefficients differently (16-bit, adaptive precision) and is
//! off by one on a share of the pixels, which the tests below show.

const PRECISION_BITS: u32 = 32 - 8 - 2;
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resizes a packed 8-bit image (`channels` = 1 for gray, 3 for RGB) of
/// `w`×`h` to `dw`×`dh` exactly as Pillow's bilinear `Image.resize` does.
///
/// Panics if `src` is shorter than `w * h * channels`, a size is zero, or
/// `channels` is not 1 or 3.
pub fn resize_bilinear(src: &[u8], w: u32, h: u32, channels: u8, dw: u32, dh: u32) -> Vec<u8> {
    let c = channels as usize;
    let region = Region {
        x: 0,
        y: 0,
        w: w as usize,
        h: h as usize,
    };
    resize_region(src, w as usize * c, region, channels, dw, dh)
}

/// A rectangle of pixels inside a larger image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// [`resize_bilinear`] of the pixels `region` of an image whose rows are
/// `stride` bytes apart, without copying the region out first.
pub fn resize_region(
    src: &[u8],
    stride: usize,
    region: Region,
    channels: u8,
    dw: u32,
    dh: u32,
) -> Vec<u8> {
    let (dw, dh) = (dw as usize, dh as usize);
    assert!(
        region.w > 0 && region.h > 0 && dw > 0 && dh > 0,
        "empty resize"
    );
    assert!(
        region.h == 0
            || src.len()
                >= (region.y + region.h - 1) * stride + (region.x + region.w) * channels as usize,
        "source buffer too short for region"
    );
    match channels {
        1 => resize_impl::<1>(src, stride, region, dw, dh),
        3 => resize_impl::<3>(src, stride, region, dw, dh),
        _ => panic!("resize_bilinear: channels must be 1 or 3, got {channels}"),
    }
}

/// Fixed-point filter weights for one axis: output `i` reads `count[i]`
/// inputs from `start[i]` with weights `weights[i * ksize ..]`.
struct Coeffs {
    ksize: usize,
    start: Vec<usize>,
    count: Vec<usize>,
    weights: Vec<i32>,
}

impl Coeffs {
    /// Pillow's `precompute_coeffs` with the bilinear filter (support 1.0)
    /// and the default box `(0, in_size)`, then `normalize_coeffs_8bpc`.
    fn bilinear(in_size: usize, out_size: usize) -> Coeffs {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // bilinear support 1.0 × filterscale
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;
        let mut start = Vec::with_capacity(out_size);
        let mut count = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero; negatives clamp to 0 anyway.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let t = (((x + xmin) as f64 - center + 0.5) * ss).abs();
                let w = if t < 1.0 { 1.0 - t } else { 0.0 };
                *kx = w;
                ww += w;
            }
            let row = &mut weights[xx * ksize..xx * ksize + n];
            for (dst, &kx) in row.iter_mut().zip(&k[..n]) {
                let v = if ww != 0.0 { kx / ww } else { kx };
                // Bilinear weights are never negative.
                *dst = (0.5 + v * (1 << PRECISION_BITS) as f64) as i32;
            }
            start.push(xmin);
            count.push(n);
        }
        Coeffs {
            ksize,
            start,
            count,
            weights,
        }
    }

    #[inline]
    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let off = i * self.ksize;
        (self.start[i], &self.weights[off..off + self.count[i]])
    }
}

/// `acc + p * kw` without overflow checks: our crates build with them on
/// (dev profile), and they made this multiply-add, the innermost loop of every
/// resize, several times slower. It cannot overflow: the weights of one output
/// sum to 2^22 and `p` ≤ 255, so every partial sum stays below 2^30.
#[inline(always)]
fn mac(acc: i32, p: u8, kw: i32) -> i32 {
    acc.wrapping_add((p as i32).wrapping_mul(kw))
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

fn resize_impl<const C: usize>(
    src: &[u8],
    stride: usize,
    r: Region,
    dw: usize,
    dh: usize,
) -> Vec<u8> {
    let need_h = dw != r.w;
    let need_v = dh != r.h;
    match (need_h, need_v) {
        (false, false) => {
            let mut out = Vec::with_capacity(r.w * r.h * C);
            for y in 0..r.h {
                let o = (r.y + y) * stride + r.x * C;
                out.extend_from_slice(&src[o..o + r.w * C]);
            }
            out
        }
        (true, false) => h_pass::<C>(src, stride, r.x, r.y, r.w, r.h, &Coeffs::bilinear(r.w, dw)),
        (false, true) => v_pass::<C>(src, stride, r.x, r.y, r.w, 0, &Coeffs::bilinear(r.h, dh)),
        (true, true) => {
            let hc = Coeffs::bilinear(r.w, dw);
            let vc = Coeffs::bilinear(r.h, dh);
            // Pillow runs the vertical pass first when the height shrinks by
            // more than twice as many pixels as the width does (this decides
            // the 8-bit intermediate, so it changes the output).
            let vertical_first = r.h > dh && (r.h - dh) as i64 > 2 * (r.w as i64 - dw as i64);
            if vertical_first {
                let tmp = v_pass::<C>(src, stride, r.x, r.y, r.w, 0, &vc);
                h_pass::<C>(&tmp, r.w * C, 0, 0, r.w, dh, &hc)
            } else {
                // Only the source rows the vertical pass reads.
                let first = vc.start[0];
                let last = vc.start[dh - 1] + vc.count[dh - 1];
                let tmp = h_pass::<C>(src, stride, r.x, r.y + first, r.w, last - first, &hc);
                v_pass::<C>(&tmp, dw * C, 0, 0, dw, first, &vc)
            }
        }
    }
}

/// Horizontal pass: `rows` rows starting at `(x0, y0)`, each `w` pixels
/// wide, resampled to `hc`'s output width.
fn h_pass<const C: usize>(
    src: &[u8],
    stride: usize,
    x0: usize,
    y0: usize,
    w: usize,
    rows: usize,
    hc: &Coeffs,
) -> Vec<u8> {
    let row_len = hc.count.len() * C;
    let mut out = vec![0u8; rows * row_len];
    for (yy, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        let in_off = (y0 + yy) * stride + x0 * C;
        let in_row = &src[in_off..in_off + w * C];
        for (xx, px) in out_row.chunks_exact_mut(C).enumerate() {
            let (xmin, k) = hc.taps(xx);
            let taps = &in_row[xmin * C..(xmin + k.len()) * C];
            let mut acc = [HALF; C];
            for (p, &kw) in taps.chunks_exact(C).zip(k) {
                for c in 0..C {
                    acc[c] = mac(acc[c], p[c], kw);
                }
            }
            for c in 0..C {
                px[c] = clip8(acc[c]);
            }
        }
    }
    out
}

/// Vertical pass over columns `x0 .. x0 + w`; output row `yy` reads source
/// rows `y0 + start - shift ..` (`shift` is the first row a preceding
/// horizontal pass kept, as Pillow shifts its bounds).
fn v_pass<const C: usize>(
    src: &[u8],
    stride: usize,
    x0: usize,
    y0: usize,
    w: usize,
    shift: usize,
    vc: &Coeffs,
) -> Vec<u8> {
    let row_len = w * C;
    let mut out = vec![0u8; vc.count.len() * row_len];
    let mut acc = vec![0i32; row_len];
    for (yy, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        let (ymin, k) = vc.taps(yy);
        acc.fill(HALF);
        for (y, &kw) in k.iter().enumerate() {
            let off = (y0 + ymin - shift + y) * stride + x0 * C;
            let in_row = &src[off..off + row_len];
            for (a, &p) in acc.iter_mut().zip(in_row) {
                *a = mac(*a, p, kw);
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes (xorshift), no extra dependency.
    pub(crate) fn noise(n: usize, mut seed: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    }

    // Expected values computed with Pillow 13.0.0:
    // Image.frombytes("L", (w, h), bytes(src)).resize((dw, dh), Image.BILINEAR)
    #[test]
    fn matches_pillow_gray_downscale() {
        let src: Vec<u8> = (0..20u8).map(|v| v * 13).collect(); // 5x4
        assert_eq!(resize_bilinear(&src, 5, 4, 1, 2, 2), vec![59, 85, 162, 188]);
        assert_eq!(resize_bilinear(&src, 5, 4, 1, 3, 1), vec![104, 124, 144]);
    }

    #[test]
    fn matches_pillow_gray_upscale() {
        let src = [0u8, 100, 200, 255]; // 2x2
        assert_eq!(
            resize_bilinear(&src, 2, 2, 1, 3, 3),
            vec![0, 50, 100, 100, 139, 178, 200, 228, 255]
        );
    }

    #[test]
    fn matches_pillow_rgb() {
        let src: Vec<u8> = (0..36u32).map(|v| ((v * 37) % 256) as u8).collect(); // 4x3 RGB
        assert_eq!(
            resize_bilinear(&src, 4, 3, 3, 3, 2),
            vec![75, 112, 82, 142, 99, 136, 95, 84, 121, 150, 140, 109, 137, 94, 131, 122, 159, 84]
        );
    }

    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        })
    }

    /// Whole-image checks against Pillow 13.0.0: FNV-1a of
    /// `Image.frombytes(mode, (w, h), noise(w*h*c, seed)).resize((dw, dh), BILINEAR).tobytes()`
    /// with the same xorshift noise generated in Python. Covers both pass
    /// orders, up- and down-scaling, gray and RGB, and 1-pixel sizes.
    #[test]
    fn matches_pillow_on_noise_images() {
        let cases: &[(u32, u32, u8, u32, u32, u64, u64)] = &[
            (640, 480, 3, 416, 416, 3, 0x2313f8dff2f808ee),
            (512, 512, 3, 128, 128, 5, 0xac3e506b48a5aa66),
            (640, 480, 3, 307, 231, 7, 0xf2a6f3eeaa9bdba9),
            (100, 80, 1, 64, 64, 9, 0xa357402734f9b601),
            (30, 20, 1, 64, 64, 11, 0xa1bfffa885a76e72),
            (13, 17, 3, 24, 24, 13, 0x0e1c5005ea9b1f8b),
            (200, 150, 3, 48, 48, 15, 0x5a9e8827924d841a),
            (640, 480, 3, 12, 9, 17, 0xb7d190dd495f72c5),
            (55, 76, 1, 64, 64, 100, 0x11c60d23c030f38d),
            (75, 96, 1, 64, 64, 101, 0x5b7cec8d1cb2cd12),
            (30, 100, 3, 29, 20, 102, 0x554e3f2cfed57604),
            (100, 100, 1, 99, 50, 103, 0xacec089690d269c3),
            (640, 480, 3, 385, 289, 104, 0x4195a622f33d4b02),
            (480, 640, 3, 96, 128, 105, 0xe1d8e32e44cff22b),
            (97, 311, 3, 24, 24, 106, 0xc03d6d5d84468ed6),
            (311, 97, 3, 48, 48, 107, 0xd74a8309153b8855),
            (4, 36, 1, 32, 29, 108, 0xbc60abe790e4b99d),
            (14, 87, 1, 70, 12, 109, 0xfa9179882ddb9275),
            (5, 4, 3, 12, 28, 110, 0x413d82a35419c633),
            (65, 78, 1, 4, 72, 111, 0x078ca57301a5ad1a),
            (84, 90, 1, 70, 54, 112, 0x351c8109422a5380),
            (58, 76, 1, 36, 1, 113, 0xceb0bdf80b8737a9),
            (90, 55, 1, 44, 36, 114, 0x4530f8404eeb4b8e),
            (28, 44, 1, 14, 12, 115, 0x203dc981dc05b8b8),
            (13, 46, 3, 45, 78, 116, 0x9ff5aa65742c5633),
            (6, 59, 3, 69, 16, 117, 0x982a191047bd8060),
            (11, 71, 3, 38, 81, 118, 0x4462da87539f5e48),
            (74, 25, 3, 9, 6, 119, 0x512a39a40e2389ef),
            (38, 11, 1, 30, 13, 120, 0xc2771272ada700a4),
            (36, 59, 3, 82, 47, 121, 0x66b50e54b977dc82),
            (48, 46, 1, 27, 86, 122, 0xe7ac84f0d9619a71),
            (90, 88, 3, 83, 10, 123, 0x4fb19510cc2e7d81),
            (69, 32, 1, 21, 60, 124, 0x9a4c502b502a55ba),
            (35, 82, 3, 89, 72, 125, 0x4fe1c0ecd646f4de),
            (88, 42, 1, 8, 30, 126, 0xffcd44b3302d9ba7),
            (41, 52, 1, 35, 9, 127, 0x431bc5912c1cca59),
            (73, 41, 1, 28, 84, 128, 0x837ae4f0f00ed6af),
            (51, 83, 3, 59, 19, 129, 0x8f0a82f3757286fa),
            (18, 32, 3, 72, 69, 130, 0x9f3e084877212d91),
            (75, 55, 3, 75, 52, 131, 0x867f6dde36f6a3a1),
        ];
        for &(w, h, c, dw, dh, seed, want) in cases {
            let src = noise((w * h * c as u32) as usize, seed);
            let got = fnv1a(&resize_bilinear(&src, w, h, c, dw, dh));
            assert_eq!(got, want, "{w}x{h}x{c} -> {dw}x{dh}");
        }
    }

    #[test]
    fn identity_and_single_axis() {
        let src = noise(7 * 5 * 3, 1);
        assert_eq!(resize_bilinear(&src, 7, 5, 3, 7, 5), src);
        // Only one pass runs when one side keeps its size.
        let h_only = resize_bilinear(&src, 7, 5, 3, 3, 5);
        let v_only = resize_bilinear(&src, 7, 5, 3, 7, 2);
        assert_eq!(h_only.len(), 3 * 5 * 3);
        assert_eq!(v_only.len(), 7 * 2 * 3);
    }

    #[test]
    fn region_equals_copied_crop() {
        let (w, h) = (40usize, 30usize);
        let src = noise(w * h * 3, 7);
        let r = Region {
            x: 5,
            y: 3,
            w: 17,
            h: 21,
        };
        let mut crop = Vec::new();
        for y in r.y..r.y + r.h {
            crop.extend_from_slice(&src[(y * w + r.x) * 3..(y * w + r.x + r.w) * 3]);
        }
        for (dw, dh) in [(24, 24), (17, 9), (8, 21), (48, 48), (17, 21)] {
            assert_eq!(
                resize_region(&src, w * 3, r, 3, dw, dh),
                resize_bilinear(&crop, r.w as u32, r.h as u32, 3, dw, dh)
            );
        }
    }

    /// `fast_image_resize`'s bilinear convolution is close to Pillow but not
    /// bit-exact: count its differing bytes on a typical downscale.
    #[test]
    fn fast_image_resize_differs_by_rounding() {
        use fast_image_resize as fr;
        let (w, h, dw, dh) = (640u32, 480u32, 416u32, 416u32);
        let src = noise((w * h * 3) as usize, 3);
        let ours = resize_bilinear(&src, w, h, 3, dw, dh);
        let src_img = fr::images::ImageRef::new(w, h, &src, fr::PixelType::U8x3).unwrap();
        let mut dst = fr::images::Image::new(dw, dh, fr::PixelType::U8x3);
        let opts = fr::ResizeOptions::new()
            .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
        fr::Resizer::new()
            .resize(&src_img, &mut dst, &opts)
            .unwrap();
        let theirs = dst.buffer();
        let diff = ours.iter().zip(theirs).filter(|(a, b)| a != b).count();
        let max = ours
            .iter()
            .zip(theirs)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        eprintln!(
            "fast_image_resize vs Pillow-exact: {diff} of {} bytes differ, max {max}",
            ours.len()
        );
        assert!(max <= 1, "fast_image_resize should only differ by rounding");
    }
}
