//! Stored frames and annotated frames.
//!
//! Workers keep a small JPEG of every analysed frame ([`downscale`] then
//! [`encode_jpeg`]); the coordinators store it beside the frame's results.
//! [`annotate`] draws a frame's results on the decoded JPEG: object boxes with
//! label and score, face boxes with emotion and gender, and the colour palette
//! as swatches along the bottom edge; [`encode_png`] writes the picture.
//!
//! Colours are fixed and documented so that a picture can be checked: an
//! object box has [`object_color`] of its class id, a face box
//! [`face_color`] of its `joy` flag. Boxes are [`LINE`] pixels thick, drawn
//! inside the box from its edges.
use serde_json::Value;

mod font;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot encode JPEG: {0}")]
    JpegEncode(String),
    #[error("stored frame is not a readable JPEG: {0}")]
    JpegDecode(String),
    #[error("cannot encode PNG: {0}")]
    Png(String),
    #[error("image size {0}x{1} does not match its {2} bytes of RGB")]
    Size(u32, u32, usize),
}

/// Packed RGB24, rows top to bottom.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Image {
    pub fn new(width: u32, height: u32, rgb: Vec<u8>) -> Result<Image, RenderError> {
        if rgb.len() != width as usize * height as usize * 3 {
            return Err(RenderError::Size(width, height, rgb.len()));
        }
        Ok(Image { width, height, rgb })
    }

    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        self.rgb[i..i + 3].copy_from_slice(&c);
    }

    /// Fill `[x0, x1) × [y0, y1)`, clipped to the image.
    pub fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        for y in y0.max(0)..y1.min(self.height as i64) {
            for x in x0.max(0)..x1.min(self.width as i64) {
                self.put(x, y, c);
            }
        }
    }
}

/// Line thickness of drawn boxes, in pixels of the output picture.
pub const LINE: i64 = 2;

/// Box colour of COCO class `class_id` (a fixed cycle of 10 saturated colours).
pub fn object_color(class_id: u64) -> [u8; 3] {
    const C: [[u8; 3]; 10] = [
        [255, 56, 56],
        [255, 157, 151],
        [255, 112, 31],
        [255, 178, 29],
        [207, 210, 49],
        [72, 249, 10],
        [26, 147, 52],
        [0, 212, 187],
        [44, 153, 168],
        [0, 194, 255],
    ];
    C[(class_id % 10) as usize]
}

/// Box colour of a face: green when `joy`, magenta otherwise.
pub fn face_color(joy: bool) -> [u8; 3] {
    if joy {
        [0, 230, 64]
    } else {
        [230, 0, 200]
    }
}

/// Reduce an image so that its height is at most `max_height` (area average;
/// for stored pictures, not for analysis). Returns a copy when already small.
pub fn downscale(img: &Image, max_height: u32) -> Image {
    if max_height == 0 || img.height <= max_height {
        return img.clone();
    }
    let h = max_height;
    let w = ((img.width as u64 * h as u64 + img.height as u64 / 2) / img.height as u64).max(1) as u32;
    let mut out = vec![0u8; w as usize * h as usize * 3];
    for oy in 0..h {
        let y0 = (oy as u64 * img.height as u64 / h as u64) as u32;
        let y1 = (((oy + 1) as u64 * img.height as u64 / h as u64) as u32).max(y0 + 1);
        for ox in 0..w {
            let x0 = (ox as u64 * img.width as u64 / w as u64) as u32;
            let x1 = (((ox + 1) as u64 * img.width as u64 / w as u64) as u32).max(x0 + 1);
            let mut sum = [0u32; 3];
            for y in y0..y1 {
                let row = (y as usize * img.width as usize) * 3;
                for x in x0..x1 {
                    let i = row + x as usize * 3;
                    sum[0] += img.rgb[i] as u32;
                    sum[1] += img.rgb[i + 1] as u32;
                    sum[2] += img.rgb[i + 2] as u32;
                }
            }
            let n = (y1 - y0) * (x1 - x0);
            let o = (oy as usize * w as usize + ox as usize) * 3;
            for c in 0..3 {
                out[o + c] = ((sum[c] + n / 2) / n) as u8;
            }
        }
    }
    Image { width: w, height: h, rgb: out }
}

pub fn encode_jpeg(img: &Image, quality: u8) -> Result<Vec<u8>, RenderError> {
    encode_rgb_jpeg(&img.rgb, img.width, img.height, quality)
}

/// Packed RGB24 pixels (`width * height * 3` bytes) as JPEG, without copying them first.
pub fn encode_rgb_jpeg(rgb: &[u8], width: u32, height: u32, quality: u8) -> Result<Vec<u8>, RenderError> {
    let mut out = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    let (w, h) = (u16::try_from(width), u16::try_from(height));
    let (Ok(w), Ok(h)) = (w, h) else { return Err(RenderError::JpegEncode(format!("{width}x{height} is too large"))) };
    if rgb.len() != width as usize * height as usize * 3 {
        return Err(RenderError::Size(width, height, rgb.len()));
    }
    enc.encode(rgb, w, h, jpeg_encoder::ColorType::Rgb).map_err(|e| RenderError::JpegEncode(e.to_string()))?;
    Ok(out)
}

pub fn decode_jpeg(bytes: &[u8]) -> Result<Image, RenderError> {
    let mut d = jpeg_decoder::Decoder::new(bytes);
    let px = d.decode().map_err(|e| RenderError::JpegDecode(e.to_string()))?;
    let info = d.info().ok_or_else(|| RenderError::JpegDecode("no image header".into()))?;
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => px,
        jpeg_decoder::PixelFormat::L8 => px.iter().flat_map(|&v| [v, v, v]).collect(),
        other => return Err(RenderError::JpegDecode(format!("unsupported pixel format {other:?}"))),
    };
    Image::new(info.width as u32, info.height as u32, rgb)
}

pub fn encode_png(img: &Image) -> Result<Vec<u8>, RenderError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width, img.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| RenderError::Png(e.to_string()))?;
        w.write_image_data(&img.rgb).map_err(|e| RenderError::Png(e.to_string()))?;
    }
    Ok(out)
}

/// Read a PNG written by [`encode_png`] (for tests and tools).
pub fn decode_png(bytes: &[u8]) -> Result<Image, RenderError> {
    let dec = png::Decoder::new(bytes);
    let mut r = dec.read_info().map_err(|e| RenderError::Png(e.to_string()))?;
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).map_err(|e| RenderError::Png(e.to_string()))?;
    if info.color_type != png::ColorType::Rgb || info.bit_depth != png::BitDepth::Eight {
        return Err(RenderError::Png(format!("expected 8-bit RGB, got {:?} {:?}", info.color_type, info.bit_depth)));
    }
    buf.truncate(info.buffer_size());
    Image::new(info.width, info.height, buf)
}

/// A box in output-picture pixels, `[x0, x1) × [y0, y1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PxBox {
    pub x0: i64,
    pub y0: i64,
    pub x1: i64,
    pub y1: i64,
}

/// Map a result's `box` (`[x, y, w, h]` in the analysed frame's pixels) to
/// the picture, which is `sx`, `sy` times the analysed frame's size.
pub fn to_px(b: &Value, sx: f64, sy: f64) -> Option<PxBox> {
    let a = b.as_array()?;
    if a.len() != 4 {
        return None;
    }
    let v: Vec<f64> = a.iter().map(|x| x.as_f64()).collect::<Option<_>>()?;
    // A detector of a user's may answer anything: far outside the picture
    // is clipped when drawn, but must not overflow on the way.
    let px = |x: f64| x.clamp(-1e12, 1e12).round() as i64;
    let x0 = px(v[0] * sx);
    let y0 = px(v[1] * sy);
    let x1 = px((v[0] + v[2]) * sx);
    let y1 = px((v[1] + v[3]) * sy);
    Some(PxBox { x0, y0, x1: x1.max(x0 + 1), y1: y1.max(y0 + 1) })
}

fn outline(img: &mut Image, b: PxBox, c: [u8; 3]) {
    img.fill(b.x0, b.y0, b.x1, b.y0 + LINE, c);
    img.fill(b.x0, b.y1 - LINE, b.x1, b.y1, c);
    img.fill(b.x0, b.y0, b.x0 + LINE, b.y1, c);
    img.fill(b.x1 - LINE, b.y0, b.x1, b.y1, c);
}

/// The pixel height of label text on a picture: a 40th of its shorter side,
/// within 13..=48 (see `font`: capitals are 0.63 of that): legible on a
/// small stored frame, not huge on a 4K one.
fn label_px(width: u32, height: u32) -> f32 {
    (width.min(height) as f32 / 40.0).round().clamp(13.0, 48.0)
}

/// A label on a filled tag: above the box when there is room, else inside it.
fn tag(img: &mut Image, b: PxBox, text: &str, px: f32, c: [u8; 3]) {
    let (tw, th) = font::size(text, px);
    let y = if b.y0 - th - 2 >= 0 { b.y0 - th - 2 } else { b.y0 + LINE };
    img.fill(b.x0, y, b.x0 + tw + 4, y + th + 2, c);
    let ink = if c.iter().map(|&v| v as u32).sum::<u32>() > 380 { [0, 0, 0] } else { [255, 255, 255] };
    font::draw(img, b.x0 + 2, y + 1, text, px, ink);
}

/// Draw one frame's results on `img`. `analysed` is the size of the frame
/// the models read (result coordinates are in its pixels); `img` may be
/// smaller (stored frames are reduced). `results` pairs a model name with
/// its result array; unknown shapes are skipped, `{"error": …}` is written
/// in the top-left corner.
pub fn annotate(img: &mut Image, analysed: (u32, u32), results: &[(String, Value)]) {
    let sx = img.width as f64 / analysed.0.max(1) as f64;
    let sy = img.height as f64 / analysed.1.max(1) as f64;
    let px = label_px(img.width, img.height);
    let mut errors = Vec::new();
    for (model, v) in results {
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            errors.push(format!("{model}: {e}"));
            continue;
        }
        let Some(items) = v.as_array() else { continue };
        // Palettes first (along the bottom), boxes over the picture.
        if items.iter().all(|i| i.get("color").is_some() && i.get("fraction").is_some()) && !items.is_empty() {
            swatches(img, items, px);
            continue;
        }
        for it in items {
            let Some(b) = it.get("box").and_then(|b| to_px(b, sx, sy)) else { continue };
            if let Some(label) = it.get("label").and_then(|l| l.as_str()) {
                let c = object_color(it.get("class_id").and_then(|c| c.as_u64()).unwrap_or(0));
                outline(img, b, c);
                let score = it.get("score").and_then(|s| s.as_f64()).unwrap_or(0.0);
                // A tracked object: its track id first ("#4 person 91%").
                let id = it.get("track_id").and_then(|t| t.as_u64()).map(|t| format!("#{t} ")).unwrap_or_default();
                tag(img, b, &format!("{id}{label} {:.0}%", score * 100.0), px, c);
            } else if let Some(emotion) = it.get("emotion").and_then(|e| e.as_str()) {
                let joy = it.get("joy").and_then(|j| j.as_bool()).unwrap_or(false);
                let c = face_color(joy);
                outline(img, b, c);
                let gender = it.get("gender").and_then(|g| g.as_str()).unwrap_or("");
                tag(img, b, &format!("{emotion} {gender}"), px, c);
            } else {
                outline(img, b, [255, 255, 255]);
            }
        }
    }
    let mut y = 2;
    for e in errors {
        let (tw, th) = font::size(&e, px);
        img.fill(0, y - 1, tw + 4, y + th + 1, [0, 0, 0]);
        font::draw(img, 2, y, &e, px, [255, 80, 80]);
        y += th + 3;
    }
}

/// The colour zones are drawn in (a yellow seen on most scenes).
pub const ZONE_COLOR: [u8; 3] = [255, 214, 0];

/// Draw a job's zones on `img`: each polygon's outline ([`ZONE_COLOR`], 2
/// pixels) and its name at its first corner. Corners are in the pixels of
/// the analysed frame (`analysed`), as boxes are.
pub fn draw_zones(img: &mut Image, analysed: (u32, u32), zones: &[(String, Vec<[f64; 2]>)]) {
    let sx = img.width as f64 / analysed.0.max(1) as f64;
    let sy = img.height as f64 / analysed.1.max(1) as f64;
    let px = label_px(img.width, img.height);
    let at = |p: [f64; 2]| ((p[0] * sx).clamp(-1e6, 1e6).round() as i64, (p[1] * sy).clamp(-1e6, 1e6).round() as i64);
    for (name, points) in zones {
        for (i, p) in points.iter().enumerate() {
            let q = points[(i + 1) % points.len()];
            line(img, at(*p), at(q), ZONE_COLOR);
        }
        if let Some(first) = points.first() {
            let (x, y) = at(*first);
            let (x, y) = (x.clamp(0, img.width as i64 - 1), y.clamp(0, img.height as i64 - 1));
            tag(img, PxBox { x0: x, y0: y, x1: x + 1, y1: y + 1 }, name, px, ZONE_COLOR);
        }
    }
}

/// A 2-pixel line from `a` to `b` (Bresenham), clipped to the picture.
fn line(img: &mut Image, a: (i64, i64), b: (i64, i64), c: [u8; 3]) {
    let (mut x, mut y) = a;
    let (dx, dy) = ((b.0 - a.0).abs(), -(b.1 - a.1).abs());
    let (sx, sy) = (if a.0 < b.0 { 1 } else { -1 }, if a.1 < b.1 { 1 } else { -1 });
    let mut err = dx + dy;
    // At most the picture's span of steps: a corner far outside is not walked to.
    for _ in 0..=(dx.max(-dy)).min(4 * (img.width + img.height) as i64) {
        img.fill(x, y, x + 2, y + 2, c);
        if (x, y) == b {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// The palette along the bottom edge: one swatch per colour, as wide as its
/// fraction of the picture, with its hex code (`px` high; the band is at
/// least as high as the text).
fn swatches(img: &mut Image, items: &[Value], px: f32) {
    let h = (img.height as i64 / 10).clamp(12, 40).max(font::size("", px).1 + 2);
    let top = img.height as i64 - h;
    let mut x = 0i64;
    let n = items.len();
    for (i, it) in items.iter().enumerate() {
        let Some(c) = it.get("color").and_then(|c| c.as_str()).and_then(parse_hex) else { continue };
        let f = it.get("fraction").and_then(|f| f.as_f64()).unwrap_or(0.0);
        let w = if i + 1 == n { img.width as i64 - x } else { (f * img.width as f64).round() as i64 };
        img.fill(x, top, x + w, img.height as i64, c);
        let ink = if c.iter().map(|&v| v as u32).sum::<u32>() > 380 { [0, 0, 0] } else { [255, 255, 255] };
        let text = it["color"].as_str().unwrap_or("");
        let (tw, th) = font::size(text, px);
        if tw + 4 <= w {
            font::draw(img, x + 2, top + (h - th) / 2, text, px, ink);
        }
        x += w;
    }
}

/// `#rrggbb` to RGB.
pub fn parse_hex(s: &str) -> Option<[u8; 3]> {
    let s = s.strip_prefix('#')?;
    if s.len() != 6 {
        return None;
    }
    let v = u32::from_str_radix(s, 16).ok()?;
    Some([(v >> 16) as u8, (v >> 8) as u8, v as u8])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn gray(w: u32, h: u32) -> Image {
        Image::new(w, h, vec![90; (w * h * 3) as usize]).unwrap()
    }

    #[test]
    fn jpeg_round_trip_keeps_size_and_roughly_the_pixels() {
        let mut img = gray(64, 48);
        img.fill(0, 0, 32, 48, [200, 40, 40]);
        let j = encode_jpeg(&img, 90).unwrap();
        assert_eq!(&j[..2], &[0xff, 0xd8]);
        let back = decode_jpeg(&j).unwrap();
        assert_eq!((back.width, back.height), (64, 48));
        let p = back.pixel(10, 20);
        assert!((p[0] as i32 - 200).abs() < 12 && (p[1] as i32 - 40).abs() < 12, "{p:?}");
        assert!(matches!(decode_jpeg(b"not a jpeg"), Err(RenderError::JpegDecode(_))));
    }

    #[test]
    fn downscale_keeps_the_aspect_and_averages() {
        let mut img = gray(1280, 720);
        img.fill(0, 0, 640, 720, [255, 0, 0]);
        let s = downscale(&img, 360);
        assert_eq!((s.width, s.height), (640, 360));
        assert_eq!(s.pixel(10, 10), [255, 0, 0]);
        assert_eq!(s.pixel(600, 10), [90, 90, 90]);
        assert_eq!(downscale(&img, 720), img);
    }

    #[test]
    fn boxes_are_drawn_at_their_scaled_edges_in_their_colour() {
        // Analysed at 640x480, stored at 320x240: scale 0.5.
        let mut img = gray(320, 240);
        let results = vec![
            ("objects".to_string(), json!([{"label": "dog", "class_id": 16, "score": 0.91, "box": [100.0, 120.0, 200.0, 160.0]}])),
            ("joy".to_string(), json!([{"face_id": 0, "box": [400.0, 40.0, 100.0, 120.0], "score": 0.99, "emotion": "happy", "gender": "woman", "joy": true}])),
            ("colors".to_string(), json!([{"color": "#ff0000", "fraction": 0.5}, {"color": "#0000ff", "fraction": 0.5}])),
        ];
        annotate(&mut img, (640, 480), &results);
        let dog = object_color(16);
        // Left edge of the dog box: x = 50..52, y from 60 to 140 (midpoint 100).
        assert_eq!(img.pixel(50, 100), dog);
        assert_eq!(img.pixel(51, 100), dog);
        assert_eq!(img.pixel(149, 100), dog, "right edge");
        assert_eq!(img.pixel(100, 139), dog, "bottom edge");
        assert_eq!(img.pixel(53, 100), [90, 90, 90], "inside is untouched");
        let face = face_color(true);
        assert_eq!(img.pixel(200, 50), face);
        assert_eq!(img.pixel(249, 50), face);
        // Palette swatches along the bottom.
        assert_eq!(img.pixel(5, 239), [255, 0, 0]);
        assert_eq!(img.pixel(315, 239), [0, 0, 255]);
        // The label was written: a tag of the box's colour above the box
        // (13 px high on a 320x240 picture) with white ink on it.
        let tag_row: Vec<[u8; 3]> = (52..100).map(|x| img.pixel(x, 52)).collect();
        assert!(tag_row.iter().any(|&p| p != dog) && tag_row.contains(&dog), "no label tag");
        assert_eq!((img.pixel(50, 45), img.pixel(50, 44)), (dog, [90, 90, 90]), "the tag is the text's 13 px + 2 high");
        let white = (45..60).flat_map(|y| (50..150).map(move |x| (x, y))).filter(|&(x, y)| img.pixel(x, y).iter().all(|&v| v >= 200)).count();
        assert!(white >= 10, "{white} white label pixels");
        // The hex code on the red swatch: white ink (green >= 200) in the band.
        let hex = (216..240).flat_map(|y| (0..160).map(move |x| (x, y))).filter(|&(x, y)| img.pixel(x, y)[1] >= 200).count();
        assert!(hex >= 10, "{hex} pixels of the hex code");
        // PNG round trip is lossless.
        let png = encode_png(&img).unwrap();
        assert_eq!(decode_png(&png).unwrap(), img);
    }

    #[test]
    fn errors_and_odd_results_do_not_panic() {
        let mut img = gray(40, 30);
        let results = vec![
            ("objects".to_string(), json!({"error": "objects failed on frame 3: boom"})),
            ("joy".to_string(), json!([{"box": "nonsense"}, {"box": [1e9, -1e9, 5.0, 5.0]}, {"box": [1e300, 0.0, 1.0, 1.0]}, {"box": [-1e300, -1e300, 1e300, 1e300]}])),
            ("colors".to_string(), json!([])),
        ];
        annotate(&mut img, (0, 0), &results);
        // The error text is drawn on black in [255, 80, 80], anti-aliased:
        // at 13 px few if any pixels are wholly covered, so count those at
        // least 3/4 ink (a blend over black keeps the ink's hue).
        let near = img.rgb.chunks(3).filter(|p| p[0] >= 191 && p[1] == p[2] && (60..=80).contains(&p[1])).count();
        assert!(near >= 5, "the error text is drawn: {near} pixels near its colour");
    }

    /// The number of pixels of `img` that differ from `bg`.
    fn changed(img: &Image, bg: [u8; 3]) -> usize {
        img.rgb.chunks(3).filter(|p| *p != bg).count()
    }

    #[test]
    fn zones_are_outlined_in_their_colour_at_the_pictures_scale() {
        let mut img = Image::new(200, 100, vec![0; 200 * 100 * 3]).unwrap();
        // A square in analysed pixels of a 400x200 frame: drawn at half size.
        draw_zones(&mut img, (400, 200), &[("door".into(), vec![[200.0, 40.0], [360.0, 40.0], [360.0, 180.0], [200.0, 180.0]])]);
        assert_eq!(img.pixel(140, 90), ZONE_COLOR, "the bottom edge's middle");
        assert_eq!(img.pixel(180, 60), ZONE_COLOR, "the right edge's middle");
        assert_eq!(img.pixel(140, 60), [0, 0, 0], "inside is left alone");
        // Corners far outside the picture draw what falls inside, quickly.
        draw_zones(&mut img, (400, 200), &[("far".into(), vec![[-1e9, -1e9], [1e9, 0.0], [0.0, 1e9]])]);
    }

    #[test]
    fn labels_scale_with_the_picture() {
        let (small, large) = (label_px(320, 240), label_px(1920, 1080));
        assert!((11.0..=13.0).contains(&small) && (24.0..=32.0).contains(&large), "{small} px, {large} px");
        assert_eq!(label_px(1080, 1920), large, "portrait frames get the same size");
        assert_eq!((label_px(1, 1), label_px(7680, 4320)), (13.0, 48.0), "clamped");
        // Text at the larger size covers more pixels: about (27/13)² as many.
        let ink = |px: f32| {
            let mut img = Image::new(400, 60, vec![0; 400 * 60 * 3]).unwrap();
            font::draw(&mut img, 2, 2, "person 87%", px, [255, 255, 255]);
            changed(&img, [0, 0, 0])
        };
        let (a, b) = (ink(small), ink(large));
        assert!(a > 20 && b > 3 * a, "{a} pixels at {small} px, {b} at {large} px");
        // And so does the same error drawn on each picture, whose band is taller.
        let results = vec![("objects".to_string(), json!({"error": "boom"}))];
        let band = |w: u32, h: u32| {
            let mut img = gray(w, h);
            annotate(&mut img, (w, h), &results);
            let rows = (0..h).filter(|&y| (0..w).any(|x| img.pixel(x, y) != [90, 90, 90])).count();
            (rows, changed(&img, [90, 90, 90]))
        };
        let ((rs, ps), (rl, pl)) = (band(320, 240), band(1920, 1080));
        assert_eq!(rs, 13 + 2, "the band is the text's height + 2 at 320x240");
        assert!(rl > 2 * rs - 4 && pl > 3 * ps, "{rs} rows, {ps} pixels at 320x240; {rl} rows, {pl} pixels at 1920x1080");
    }

    #[test]
    fn hostile_label_and_error_text_does_not_panic_or_leave_the_tag() {
        let long: String = "dog 🙂\u{0}\n\t%".chars().cycle().take(10_000).collect();
        for text in ["", "🙂\u{0}\n\t", "\u{202e}\u{301}\u{feff}", long.as_str()] {
            for (w, h) in [(1, 1), (40, 30), (320, 240)] {
                let mut img = gray(w, h);
                let results = vec![
                    ("objects".to_string(), json!([{"label": text, "class_id": 1, "score": 0.5, "box": [280.0, 100.0, 30.0, 30.0]}])),
                    ("joy".to_string(), json!([{"box": [0.0, 0.0, 10.0, 10.0], "emotion": text, "gender": text, "joy": false}])),
                    ("broken".to_string(), json!({"error": text})),
                    ("colors".to_string(), json!([{"color": "#123456", "fraction": 1.0}])),
                ];
                annotate(&mut img, (320, 240), &results);
                assert_eq!(img.rgb.len(), (w * h * 3) as usize);
                if (w, h) == (320, 240) {
                    // The object's label runs off the right edge: nothing
                    // wraps round to the left of its box on the rows below
                    // its tag (y 85..100), above the face box (rows 0..10)
                    // and the error band.
                    for y in 85..100 {
                        for x in 0..280 {
                            assert_eq!(img.pixel(x, y), [90, 90, 90], "{text:?}: ({x}, {y}) drawn");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn hex_colours_parse() {
        assert_eq!(parse_hex("#0a10ff"), Some([10, 16, 255]));
        assert_eq!(parse_hex("0a10ff"), None);
        assert_eq!(parse_hex("#12345"), None);
    }
}
