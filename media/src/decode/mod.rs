//! Probing (demux-only frame counting) and frame-accurate decoding.
//!
//! This file holds the [`Decoder`] and [`DecodedFrame`] types; the work is
//! split by concern: `probe` (the demux pass and [`ProbeInfo`]), `stream`
//! (finding the video stream, opening its decoder, reading packets), `open`
//! (opening a [`Decoder`]), `seek`, `frames` (returning numbered frames),
//! `live` (live sources) and `stall` (giving up on a source that trickles).

use ffmpeg::Rational;
use ffmpeg_next as ffmpeg;

use crate::source::Source;

mod frames;
mod live;
mod open;
mod probe;
mod seek;
mod stall;
mod stream;
#[cfg(test)]
mod tests;

pub use probe::{probe, probe_with_options, probe_within, ProbeInfo};
use stall::StallLimit;

/// A decoded frame with its number and time.
pub struct DecodedFrame {
    /// Frame number, from 0, in presentation order.
    pub index: u64,
    pub pts: i64,
    /// `(pts − pts0) × time base`, seconds.
    pub timestamp: f64,
    pub frame: ffmpeg::frame::Video,
}

impl std::fmt::Debug for DecodedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedFrame")
            .field("index", &self.index)
            .field("pts", &self.pts)
            .field("timestamp", &self.timestamp)
            .field("width", &self.frame.width())
            .field("height", &self.frame.height())
            .field("format", &self.frame.format())
            .finish()
    }
}

/// Decodes the first video stream of a source, in presentation order, with
/// frame numbers that match a full decode from frame 0 even after a seek.
///
/// `Send`: it owns its demuxer and decoder contexts exclusively (both are
/// `Send` in ffmpeg-next), so it can live inside an actor.
pub struct Decoder {
    src: Source,
    options: Vec<(String, String)>,
    input: ffmpeg::format::context::Input,
    decoder: ffmpeg::decoder::Video,
    stream_index: usize,
    time_base: Rational,
    pts0: i64,
    /// Frames with pts below this are dropped and not counted (pts0, or the
    /// seek keyframe's pts: leading frames of an open GOP).
    min_pts: i64,
    /// Index the next returned (counted) frame gets.
    next_index: u64,
    /// Frames with index below this are counted but not returned (fallback
    /// when a seek could not be used).
    skip_before: u64,
    /// After a seek: the keyframe the first frame must be; checked once.
    verify_seek: Option<(u64, i64)>,
    last_pts: Option<i64>,
    frame_duration: i64,
    packet: ffmpeg::Packet,
    eof_sent: bool,
    finished: bool,
    fell_back: bool,
    seek_attempt: u32,
    /// Live: pts0 is the first frame's pts.
    pts0_from_first: bool,
    /// Live: the first frame had no pts (pts0 made up as 0): the first real
    /// pts sets pts0 so that timestamps go on from the frames before.
    pts0_made_up: bool,
    /// When the last packet (of any stream) was read.
    last_packet: std::time::Instant,
    /// [`Decoder::open_with_stall_limit`]: FFmpeg gives up once no frame
    /// came for this long.
    stall: Option<std::sync::Arc<StallLimit>>,
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Decoder>();
    assert_send::<DecodedFrame>();
};

impl Decoder {
    /// The stream's time base.
    pub fn time_base(&self) -> (i32, i32) {
        (self.time_base.numerator(), self.time_base.denominator())
    }

    /// The (normalised) source name.
    pub fn source(&self) -> &str {
        &self.src.name
    }
}
