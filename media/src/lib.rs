//! FFmpeg (ffmpeg-next) decoding for Panoptes: probing a source, decoding a
//! frame range, and converting frames to packed RGB24 with swscale.
//!
//! Contract (docs/ANALYSIS_SPEC.md, "Common definitions"): frames are
//! numbered from 0 in presentation order of the first video stream; a frame's
//! timestamp is `(pts − pts0) × time base`; frames are converted by swscale
//! with `SWS_BILINEAR` to RGB24, scaled to `target_height` when taller.

use std::sync::Once;

use ffmpeg_next as ffmpeg;

mod checked_open;
mod convert;
mod decode;
mod error;
mod protocols;
mod source;

pub use convert::{output_size, Converter};
pub use decode::{probe, probe_with_options, probe_within, DecodedFrame, Decoder, ProbeInfo};
pub use error::{ErrorKind, MediaError};
pub use ffmpeg_next;
pub use source::{check_device_path, device_source, normalize_source};
pub mod policy;

/// Initialise FFmpeg once per process (idempotent, thread-safe; every other
/// function here calls it too). FFmpeg's own log output is silenced
/// (`AV_LOG_QUIET`): errors come back as [`MediaError`]s instead. Set
/// `PANOPTES_FFMPEG_LOG` to `error`, `warning`, `info`, `verbose` or `debug`
/// to see FFmpeg's messages on stderr while debugging.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        use ffmpeg::util::log::Level;
        let _ = ffmpeg::init();
        ffmpeg::format::network::init();
        let level = match std::env::var("PANOPTES_FFMPEG_LOG")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Ok("error") => Level::Error,
            Ok("warning") | Ok("warn") => Level::Warning,
            Ok("info") => Level::Info,
            Ok("verbose") => Level::Verbose,
            Ok("debug") => Level::Debug,
            Ok("trace") => Level::Trace,
            _ => Level::Quiet,
        };
        ffmpeg::util::log::set_level(level);
    });
}

/// A decoded frame converted to packed RGB24: `data.len() == width * height * 3`,
/// rows stored top to bottom with no padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbFrame {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbFrame {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width as usize * height as usize * 3, "RGB24 buffer size");
        Self { width, height, data }
    }
}

/// Decode frames `[start, end)` (`end = u64::MAX` for all) of `source` whose
/// index `n` satisfies `n % step == 0`, converted to RGB24 (see
/// [`Converter`]). Returns `(index, timestamp, frame)` in order.
///
/// Probes first (a demux pass) to learn pts0 and the keyframes, then seeks to
/// the last keyframe at or before `start`.
pub fn decode_rgb(
    source: &str,
    step: u64,
    start: u64,
    end: u64,
    target_height: u32,
) -> Result<Vec<(u64, f64, RgbFrame)>, MediaError> {
    if step == 0 {
        return Err(MediaError::InvalidArgument {
            input: source.to_string(),
            reason: "frame step must be at least 1".into(),
        });
    }
    let info = probe(source)?;
    let mut out = Vec::new();
    if start >= end || start >= info.frames {
        return Ok(out);
    }
    let mut decoder = Decoder::open(source, info.keyframe_before(start), info.pts0)?;
    let mut conv = Converter::new(target_height);
    while let Some(f) = decoder.next_frame()? {
        if f.index >= end {
            break;
        }
        if f.index >= start && f.index % step == 0 {
            out.push((f.index, f.timestamp, conv.convert(&f.frame)?));
        }
    }
    Ok(out)
}
