//! Frame conversion to packed RGB24 with swscale (see ANALYSIS_SPEC.md,
//! "Frame conversion").

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;

use crate::error::MediaError;
use crate::RgbFrame;

/// Output size for a `width`×`height` frame: unchanged if `height <=
/// target_height` (or `target_height == 0`), else height `target_height` and
/// width `floor(width × target_height / height + 0.5)` (at least 1).
pub fn output_size(width: u32, height: u32, target_height: u32) -> (u32, u32) {
    if target_height == 0 || height <= target_height {
        return (width, height);
    }
    let (w, h, t) = (width as u64, height as u64, target_height as u64);
    // floor(w*t/h + 0.5) == floor((2*w*t + h) / (2*h)), exactly, in integers.
    let dw = (2 * w * t + h) / (2 * h);
    (dw.max(1) as u32, target_height)
}

struct Scaler {
    ctx: scaling::Context,
    input: (Pixel, u32, u32),
    output: (u32, u32),
    out: ffmpeg::frame::Video,
}

// SAFETY: a SwsContext has no thread affinity; this one (and the output
// frame) is owned exclusively by one Converter and never shared, so moving it
// to another thread is sound. Converter is not Sync.
unsafe impl Send for Scaler {}

/// Converts decoded frames to [`RgbFrame`]s: swscale, `SWS_BILINEAR`, default
/// colour details (BT.601, limited range unless the pixel format says full
/// range, e.g. yuvj420p), scaled in the same call when taller than the target.
pub struct Converter {
    target_height: u32,
    scaler: Option<Scaler>,
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Converter>();
};

impl Converter {
    /// `target_height` 0 means never scale.
    pub fn new(target_height: u32) -> Self {
        Converter {
            target_height,
            scaler: None,
        }
    }

    pub fn target_height(&self) -> u32 {
        self.target_height
    }

    pub fn convert(&mut self, frame: &ffmpeg::frame::Video) -> Result<RgbFrame, MediaError> {
        let (fmt, w, h) = (frame.format(), frame.width(), frame.height());
        let describe = || format!("frame {w}x{h} {fmt:?}");
        if fmt == Pixel::None || w == 0 || h == 0 {
            return Err(MediaError::invalid(
                &describe(),
                "not a decoded video frame (no format or size)",
            ));
        }
        let (dw, dh) = output_size(w, h, self.target_height);
        let rebuild = match &self.scaler {
            Some(s) => s.input != (fmt, w, h) || s.output != (dw, dh),
            None => true,
        };
        if rebuild {
            self.scaler = None;
            let ctx =
                scaling::Context::get(fmt, w, h, Pixel::RGB24, dw, dh, scaling::Flags::BILINEAR)
                    .map_err(|_| {
                        MediaError::invalid(
                            &describe(),
                            format!("swscale cannot convert {fmt:?} {w}x{h} to RGB24 {dw}x{dh}"),
                        )
                    })?;
            self.scaler = Some(Scaler {
                ctx,
                input: (fmt, w, h),
                output: (dw, dh),
                out: ffmpeg::frame::Video::new(Pixel::RGB24, dw, dh),
            });
        }
        let s = self.scaler.as_mut().unwrap();
        s.ctx
            .run(frame, &mut s.out)
            .map_err(|e| MediaError::invalid(&describe(), format!("swscale failed: {e}")))?;
        let row = dw as usize * 3;
        let stride = s.out.stride(0);
        let plane = s.out.data(0);
        let mut data = Vec::with_capacity(row * dh as usize);
        for y in 0..dh as usize {
            data.extend_from_slice(&plane[y * stride..y * stride + row]);
        }
        Ok(RgbFrame::new(dw, dh, data))
    }
}

#[cfg(test)]
mod tests {
    use super::output_size;

    #[test]
    fn sizes() {
        assert_eq!(output_size(1280, 720, 360), (640, 360));
        assert_eq!(output_size(320, 240, 720), (320, 240));
        assert_eq!(output_size(1920, 1080, 720), (1280, 720));
        assert_eq!(output_size(1000, 1001, 1000), (999, 1000)); // 999.000999 -> 999
        assert_eq!(output_size(3, 2, 1), (2, 1)); // 1.5 rounds half up
        assert_eq!(output_size(5, 4, 2), (3, 2)); // 2.5 -> 3
        assert_eq!(output_size(640, 480, 0), (640, 480));
    }
}
