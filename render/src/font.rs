//! Label text, drawn with a real font through `ab_glyph`.
//!
//! Labels used to be a hand-drawn 5×7 bitmap font at a fixed scale: tiny on
//! a full-HD frame and missing most characters. The issue asked for "a real
//! font through ab_glyph, legible at any frame size", so text is now
//! rasterised from an outline font at a pixel height the caller picks per
//! picture (`label_px` in lib.rs), anti-aliased: the ink is blended over the
//! picture by each pixel's coverage, and fully covered pixels are exactly the
//! ink colour. Text is one line; characters the font lacks (emoji, control
//! characters) draw as its `.notdef` glyph.
//!
//! The typeface is Hack Regular (<https://github.com/source-foundry/Hack>),
//! the copy embedded by the `epaint_default_fonts` crate (`HACK_REGULAR`).
//! Hack is © 2018 Source Foundry Authors under the MIT License and derives
//! from Bitstream Vera Sans Mono (© 2003 Bitstream, Inc., Bitstream Vera
//! License) through DejaVu (public domain changes); the full notices, which
//! must ship with binaries that embed the font, are in `render/FONT-LICENSE.txt`
//! (a copy of `fonts/Hack-Regular.txt` of that crate).
use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, GlyphId, OutlinedGlyph, PxScale, PxScaleFont, ScaleFont};

use super::Image;

/// `px` is ab_glyph's pixel height: of the font's line, ascent to descent
/// (Hack's em is `px / 1.16`, its capitals `0.63 * px` high). Heights
/// outside this range are clamped to it (a NaN is the smallest).
const MIN_PX: f32 = 1.0;
const MAX_PX: f32 = 512.0;

/// The font, parsed once.
fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(epaint_default_fonts::HACK_REGULAR).expect("epaint_default_fonts::HACK_REGULAR is a valid font"))
}

fn scaled(px: f32) -> PxScaleFont<&'static FontRef<'static>> {
    let px = if px.is_nan() { MIN_PX } else { px.clamp(MIN_PX, MAX_PX) };
    font().as_scaled(PxScale::from(px))
}

/// One line of text laid out: its glyphs with their pen positions (kerned,
/// from the left of the line), and the box that holds the line's ascent to
/// descent and all of its ink, `w` × `h` with the line's origin `(dx, dy)`
/// inside it (both 0 unless some glyph reaches left of the pen or above the
/// ascent, as a few accented capitals and box-drawing glyphs do by a pixel).
struct Line {
    glyphs: Vec<(GlyphId, f32)>,
    w: i64,
    h: i64,
    dx: i64,
    dy: i64,
}

/// Glyph `id` at pen position `pen` of a line whose origin is `(dx, dy)`,
/// snapped to whole pixels: ab_glyph does not hint, and a whole-pixel
/// baseline and glyph origin keep strokes crisper at small sizes.
fn outline(sf: &PxScaleFont<&'static FontRef<'static>>, id: GlyphId, pen: f32, (dx, dy): (i64, i64)) -> Option<OutlinedGlyph> {
    let at = point(pen.round() + dx as f32, sf.ascent().floor() + dy as f32);
    sf.outline_glyph(id.with_scale_and_position(sf.scale(), at))
}

fn line(sf: &PxScaleFont<&'static FontRef<'static>>, text: &str) -> Line {
    let mut pen = 0.0f32;
    let mut prev: Option<GlyphId> = None;
    let mut glyphs = Vec::with_capacity(text.len().min(4096));
    for c in text.chars() {
        let id = sf.glyph_id(c);
        if let Some(p) = prev {
            pen += sf.kern(p, id);
        }
        glyphs.push((id, pen));
        pen += sf.h_advance(id);
        prev = Some(id);
    }
    let (mut x0, mut y0, mut x1, mut y1) = (0.0f32, 0.0f32, pen, sf.height());
    for &(id, pen) in &glyphs {
        if let Some(g) = outline(sf, id, pen, (0, 0)) {
            let b = g.px_bounds();
            (x0, y0, x1, y1) = (x0.min(b.min.x), y0.min(b.min.y), x1.max(b.max.x), y1.max(b.max.y));
        }
    }
    let (x0, y0) = (x0.floor() as i64, y0.floor() as i64);
    Line { glyphs, w: x1.max(0.0).ceil() as i64 - x0, h: y1.max(0.0).ceil() as i64 - y0, dx: -x0, dy: -y0 }
}

/// Width and height of `text` drawn `px` pixels high: the box, with its
/// top-left at the `(x, y)` given to [`draw`], that holds the line's ascent
/// to descent and all of its ink. Its height is `px` (a few glyphs add a
/// pixel or two); `size("", px)` is the height of any label.
pub fn size(text: &str, px: f32) -> (i64, i64) {
    let l = line(&scaled(px), text);
    (l.w, l.h)
}

/// Draw `text` `px` pixels high with its top-left corner at (x, y): the
/// baseline is the font's ascent (rounded down) below `y`. Ink is blended over
/// the picture by its coverage, and stays in the picture and in the box of
/// [`size`].
pub fn draw(img: &mut Image, x: i64, y: i64, text: &str, px: f32, c: [u8; 3]) {
    let sf = scaled(px);
    let l = line(&sf, text);
    let (x0, y0) = (x.max(0), y.max(0));
    let x1 = x.saturating_add(l.w).min(img.width as i64);
    let y1 = y.saturating_add(l.h).min(img.height as i64);
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    // Glyphs this far left or right of the visible part cannot reach it.
    let margin = sf.height().ceil() as i64 + 2;
    for &(id, pen) in &l.glyphs {
        let left = x.saturating_add(l.dx).saturating_add(pen.floor() as i64);
        if left.saturating_sub(margin) >= x1 {
            break; // Pens only move right (but for a kerning), the rest is clipped too.
        }
        if left.saturating_add(margin) < x0 {
            continue;
        }
        let Some(g) = outline(&sf, id, pen, (l.dx, l.dy)) else { continue };
        let b = g.px_bounds();
        let (bx, by) = (x.saturating_add(b.min.x as i64), y.saturating_add(b.min.y as i64));
        g.draw(|gx, gy, cov| {
            let (px, py) = (bx.saturating_add(gx as i64), by.saturating_add(gy as i64));
            if px >= x0 && px < x1 && py >= y0 && py < y1 {
                blend(img, px, py, c, cov);
            }
        });
    }
}

/// Blend ink `c` over pixel (x, y), which is inside the image, by `coverage`.
fn blend(img: &mut Image, x: i64, y: i64, c: [u8; 3], coverage: f32) {
    if coverage.is_nan() || coverage <= 0.0 {
        return;
    }
    let i = (y as usize * img.width as usize + x as usize) * 3;
    let a = coverage.min(1.0);
    for (o, &ink) in img.rgb[i..i + 3].iter_mut().zip(&c) {
        *o = (*o as f32 + (ink as f32 - *o as f32) * a).round().clamp(0.0, 255.0) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn black(w: u32, h: u32) -> Image {
        Image::new(w, h, vec![0; (w * h * 3) as usize]).unwrap()
    }

    /// Pixels that differ from black, as (x, y, colour).
    fn inked(img: &Image) -> Vec<(u32, u32, [u8; 3])> {
        let mut v = Vec::new();
        for y in 0..img.height {
            for x in 0..img.width {
                let p = img.pixel(x, y);
                if p != [0, 0, 0] {
                    v.push((x, y, p));
                }
            }
        }
        v
    }

    #[test]
    fn size_grows_with_the_text_and_the_pixel_height() {
        let (w0, h0) = size("", 12.0);
        assert_eq!(w0, 0, "empty text has no width");
        assert_eq!(h0, 12, "a line is px high");
        let (w1, h1) = size("dog", 12.0);
        let (w2, h2) = size("dog 91%", 12.0);
        assert!(w1 > 0 && w2 > w1 && h1 == h0 && h2 == h0, "{w1}x{h1} {w2}x{h2}");
        // Monospace: 7 glyphs are about 7/3 as wide as 3.
        assert!((w2 as f64 / w1 as f64 - 7.0 / 3.0).abs() < 0.2, "{w1} {w2}");
        let (w3, h3) = size("dog 91%", 24.0);
        assert!(w3 > w2 * 3 / 2 && h3 > h2 * 3 / 2, "{w2}x{h2} at 12 px, {w3}x{h3} at 24 px");
    }

    #[test]
    fn ink_stays_inside_the_size_box() {
        let ink = [255, 80, 80];
        // Solid text has a pixel at least 3/4 ink; the font's .notdef (for
        // the emoji) and the box-drawing glyphs are hairlines. `Ł`, `─` and
        // `╱` reach left of their pen, `²` and `Ģ` above the ascent.
        let cases = [
            ("1", 24.0, true),
            ("1", 11.0, true),
            ("dog 91%", 13.0, true),
            ("Wjg_|ÅQ(", 30.5, true),
            ("#ff00aa", 11.0, true),
            ("🙂", 12.0, false),
            ("Ł─╱²Ģ", 48.0, false),
            ("─╱", 11.0, false),
        ];
        for (text, px, solid) in cases {
            let mut img = black(200, 60);
            let (x, y) = (5, 7);
            draw(&mut img, x, y, text, px, ink);
            let (w, h) = size(text, px);
            let dots = inked(&img);
            assert!(dots.len() >= 8, "{text:?} at {px}: {} inked pixels", dots.len());
            for &(dx, dy, p) in &dots {
                let (dx, dy) = (dx as i64, dy as i64);
                assert!(dx >= x && dx < x + w && dy >= y && dy < y + h, "{text:?} at {px}: ink {p:?} at ({dx}, {dy}) outside {w}x{h} at ({x}, {y})");
                // Over black, a blend keeps the ink's hue: a scaled-down copy of it.
                assert!(p[0] >= p[1] && p[1] == p[2] && p[1] <= 80, "{text:?}: {p:?} is not a blend of {ink:?} over black");
            }
            let strongest = dots.iter().map(|d| d.2[0]).max().unwrap();
            assert!(strongest >= 191 || !solid, "{text:?} at {px}: strongest pixel {strongest}");
        }
    }

    #[test]
    fn coverage_blends_and_full_coverage_is_exactly_the_ink() {
        let mut img = Image::new(4, 1, vec![100; 12]).unwrap();
        let ink = [255, 80, 0];
        blend(&mut img, 0, 0, ink, 1.0);
        blend(&mut img, 1, 0, ink, 1.7); // The rasteriser may report more than 1.
        blend(&mut img, 2, 0, ink, 0.5);
        blend(&mut img, 3, 0, ink, 0.0);
        blend(&mut img, 3, 0, ink, f32::NAN);
        assert_eq!(img.pixel(0, 0), ink);
        assert_eq!(img.pixel(1, 0), ink);
        assert_eq!(img.pixel(2, 0), [178, 90, 50]);
        assert_eq!(img.pixel(3, 0), [100, 100, 100]);
        // A rendered glyph big enough to cover whole pixels has them exactly in the ink colour.
        let mut img = black(40, 40);
        draw(&mut img, 0, 0, "1", 24.0, ink);
        assert!(img.rgb.chunks(3).filter(|p| *p == ink).count() >= 12);
    }

    #[test]
    fn a_one_is_a_vertical_stem() {
        let mut img = black(40, 40);
        draw(&mut img, 0, 0, "1", 24.0, [255, 255, 255]);
        let (w, h) = size("1", 24.0);
        // Some column in the middle third has at least half the pixel height
        // in the exact ink colour; the outer columns and the rows above the
        // digit (Hack's ascent is above its figures) are empty.
        let full = |x: u32| (0..40).filter(|&y| img.pixel(x, y) == [255, 255, 255]).count();
        let best = (w as u32 / 3..2 * w as u32 / 3).map(full).max().unwrap();
        assert!(best >= 12, "longest stem {best} pixels");
        for y in 0..40 {
            assert_eq!(img.pixel(0, y), [0, 0, 0]);
            assert_eq!(img.pixel(w as u32 - 1, y), [0, 0, 0]);
        }
        assert!((0..40).all(|x| img.pixel(x, 0) == [0, 0, 0] && img.pixel(x, h as u32 - 1) == [0, 0, 0]));
    }

    #[test]
    fn hostile_text_and_positions_do_not_panic_and_stay_in_the_image_and_box() {
        let long: String = "dog 91% 🙂\u{0}\t".chars().cycle().take(10_000).collect();
        let texts = ["", "🙂\u{0}\n\t", "\u{feff}\u{200b}\u{301}e\u{301}\u{202e}abc", "\u{10ffff}\u{fffd}", long.as_str()];
        let pxs = [0.0, -5.0, f32::NAN, f32::INFINITY, f32::MIN_POSITIVE, 11.0, 48.0, 1000.0];
        for text in texts {
            for px in pxs {
                let (w, h) = size(text, px);
                assert!(w >= 0 && h > 0, "{w}x{h}");
                for (iw, ih) in [(1, 1), (40, 30), (7, 200)] {
                    for (x, y) in [(0, 0), (-3, -4), (i64::MAX - 1, i64::MIN + 1), (i64::MIN, i64::MAX), (iw as i64 / 2, ih as i64 / 2)] {
                        let mut img = black(iw, ih);
                        draw(&mut img, x, y, text, px, [255, 255, 255]);
                        assert_eq!(img.rgb.len(), (iw * ih * 3) as usize);
                        // Nothing left of or above the origin, nor below its box
                        // (a write past the right edge would wrap to the next row).
                        for (dx, dy, _) in inked(&img) {
                            let (dx, dy) = (dx as i64, dy as i64);
                            assert!(
                                dx >= x && dy >= y && dy < y.saturating_add(h),
                                "{text:?} at {px} px drawn at ({x}, {y}) on {iw}x{ih}: ink at ({dx}, {dy})"
                            );
                        }
                    }
                }
            }
        }
        // A long line running off the right edge does not wrap onto later rows.
        let mut img = black(40, 30);
        draw(&mut img, 30, 0, &long, 11.0, [255, 255, 255]);
        let (_, h) = size(&long, 11.0);
        let dots = inked(&img);
        assert!(!dots.is_empty());
        assert!(dots.iter().all(|&(dx, dy, _)| dx >= 30 && (dy as i64) < h), "{dots:?}");
    }
}
