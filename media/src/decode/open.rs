//! Opening a [`Decoder`] on a source, optionally at a keyframe.

use ffmpeg_next as ffmpeg;

use super::stream::{first_video_stream, open_video_decoder};
#[cfg(doc)]
use super::ProbeInfo;
use super::{Decoder, StallLimit};
use crate::error::MediaError;
use crate::source::Source;

impl Decoder {
    /// Open `source`; with `seek = Some((frame_index, pts))` — a keyframe
    /// from [`ProbeInfo::keyframes`] — start decoding there, so the first
    /// frame returned has index `frame_index`. `pts0` is [`ProbeInfo::pts0`].
    ///
    /// The seek is `av_seek_frame(AVSEEK_FLAG_BACKWARD)` on the video stream;
    /// frames the decoder emits with pts below the keyframe's (open GOP) are
    /// dropped. If the demuxer lands after the keyframe (MPEG-TS seeks by
    /// decode time), it seeks again further back; if it cannot seek at all,
    /// the decoder reopens and decodes from frame 0, skipping frames before
    /// `frame_index` — slower, still correct ([`Decoder::seek_fell_back`]).
    pub fn open(source: &str, seek: Option<(u64, i64)>, pts0: i64) -> Result<Self, MediaError> {
        Self::open_with_options(source, seek, pts0, &[])
    }

    /// [`Decoder::open`] with extra libavformat options, e.g. for RTMP listen
    /// mode `[("listen", "1"), ("timeout", "30"), ("analyzeduration", "500000")]`.
    /// Opening may block (network); call it on a blocking thread.
    pub fn open_with_options(
        source: &str,
        seek: Option<(u64, i64)>,
        pts0: i64,
        options: &[(&str, &str)],
    ) -> Result<Self, MediaError> {
        let src = Source::new(source)?;
        let options: Vec<(String, String)> = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut dec = Self::open_plain(src, options, pts0, None)?;
        if let Some((index, pts)) = seek {
            if index > 0 {
                dec.seek_to(index, pts, 0)?;
            }
        }
        Ok(dec)
    }

    pub(super) fn open_plain(
        src: Source,
        options: Vec<(String, String)>,
        pts0: i64,
        stall: Option<std::sync::Arc<StallLimit>>,
    ) -> Result<Self, MediaError> {
        let opts: Vec<(&str, &str)> = options
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let input = match &stall {
            Some(s) => {
                let s = s.clone();
                src.open_checked(&opts, move || s.past())?
            }
            None => src.open(&opts)?,
        };
        let mut dec = Self::from_input(src, options, input, pts0)?;
        dec.stall = stall;
        Ok(dec)
    }

    pub(super) fn from_input(
        src: Source,
        options: Vec<(String, String)>,
        input: ffmpeg::format::context::Input,
        pts0: i64,
    ) -> Result<Self, MediaError> {
        let stream_index = first_video_stream(&input, &src.name)?;
        let (time_base, frame_duration) = {
            let st = input.stream(stream_index).unwrap();
            let tb = st.time_base();
            let rate = [st.avg_frame_rate(), st.rate()]
                .into_iter()
                .find(|r| r.numerator() > 0 && r.denominator() > 0);
            let dur = match rate {
                Some(r) if tb.numerator() > 0 => {
                    let d = (tb.denominator() as f64 * r.denominator() as f64)
                        / (tb.numerator() as f64 * r.numerator() as f64);
                    (d.round() as i64).max(1)
                }
                _ => 1,
            };
            (tb, dur)
        };
        let decoder = open_video_decoder(&input, stream_index, &src, true)?;
        Ok(Decoder {
            src,
            options,
            input,
            decoder,
            stream_index,
            time_base,
            pts0,
            min_pts: pts0,
            next_index: 0,
            skip_before: 0,
            verify_seek: None,
            last_pts: None,
            frame_duration,
            packet: ffmpeg::Packet::empty(),
            eof_sent: false,
            finished: false,
            fell_back: false,
            seek_attempt: 0,
            pts0_from_first: false,
            pts0_made_up: false,
            last_packet: std::time::Instant::now(),
            stall: None,
        })
    }
}
