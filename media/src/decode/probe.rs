//! Probing: one demux pass over the whole source that counts the frames of
//! its first video stream and records its keyframes ([`ProbeInfo`]).

use std::time::Duration;

use ffmpeg::Rational;
use ffmpeg_next as ffmpeg;

use super::stream::{first_video_stream, frame_discarded, frame_pts, open_video_decoder, packet_discarded, read_packet, ts_seconds};
#[cfg(doc)]
use super::Decoder;
use crate::error::MediaError;
use crate::source::Source;

/// What [`probe`] learns about the first video stream of a source.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ProbeInfo {
    /// Number of frames of the first video stream, counted by demuxing every
    /// packet (no decoding). Packets the demuxer marks as "discard" (before
    /// the start of an MP4 edit list) are not frames of the video.
    pub frames: u64,
    pub width: u32,
    pub height: u32,
    /// The stream's time base `(num, den)`.
    pub time_base: (i32, i32),
    /// pts of frame 0 (smallest pts in presentation order).
    pub pts0: i64,
    pub fps: f64,
    /// `(frame index in presentation order, pts)` of every keyframe packet,
    /// ascending. The first entry is normally `(0, pts0)` (not when the first
    /// packets are discarded before an MP4 edit list). A stream whose packets
    /// carry no timestamps (raw .h264) lists only `(0, pts0)`: it cannot be
    /// seeked frame-accurately.
    pub keyframes: Vec<(u64, i64)>,
    /// FFmpeg's codec name, e.g. "h264", "ffv1".
    pub codec: String,
}

impl ProbeInfo {
    /// Seconds of frame `pts` relative to frame 0.
    pub fn timestamp_of(&self, pts: i64) -> f64 {
        ts_seconds(
            pts,
            self.pts0,
            Rational::new(self.time_base.0, self.time_base.1),
        )
    }

    /// The last keyframe at or before `frame`, as a seek target for
    /// [`Decoder::open`]; `None` if decoding must start at frame 0.
    pub fn keyframe_before(&self, frame: u64) -> Option<(u64, i64)> {
        let i = self.keyframes.partition_point(|&(n, _)| n <= frame);
        if i == 0 {
            None
        } else {
            Some(self.keyframes[i - 1])
        }
    }
}

/// Demux the whole first video stream without decoding it, counting frames
/// and recording keyframes; decode the first frame too, so that an
/// undecodable stream fails here rather than later.
///
/// Errors: missing file ([`MediaError::NotFound`]), empty / truncated /
/// garbage data ([`MediaError::Corrupt`]), no video stream
/// ([`MediaError::NotAVideo`]), network failures ([`MediaError::Network`]).
///
/// A single still image (PNG, JPEG, …) is opened by FFmpeg's image demuxers
/// as a one-frame video stream; it probes as a video of 1 frame.
///
/// The demux pass reads the whole source: do not probe a live stream (it
/// would not return until the stream ends); open a [`Decoder`] instead.
pub fn probe(source: &str) -> Result<ProbeInfo, MediaError> {
    probe_with_options(source, &[])
}

/// [`probe`] with extra libavformat options (e.g. `("analyzeduration", "500000")`).
pub fn probe_with_options(source: &str, options: &[(&str, &str)]) -> Result<ProbeInfo, MediaError> {
    let src = Source::new(source)?;
    probe_source(&src, options, None)
}

/// [`probe_with_options`] that must finish within `limit`: at the deadline
/// FFmpeg's interrupt callback stops whatever it is waiting for (the open,
/// a read), so a source that sends too little data, such as a server that
/// trickles a byte a second past every read timeout, ends the probe with
/// an error saying so rather than holding the thread. A probe that ends
/// after the deadline, however it ends, is that error: its demux pass may
/// have been cut short.
pub fn probe_within(source: &str, options: &[(&str, &str)], limit: Duration) -> Result<ProbeInfo, MediaError> {
    let src = Source::new(source)?;
    let deadline = std::time::Instant::now() + limit;
    let probed = probe_source(&src, options, Some(deadline));
    if std::time::Instant::now() < deadline {
        return probed;
    }
    let secs = if limit.subsec_millis() == 0 { limit.as_secs().to_string() } else { format!("{:.1}", limit.as_secs_f64()) };
    let reason = format!(
        "the source sent too little data in {secs} s: probing, which reads the whole video before the job is planned, \
         was stopped at its deadline (sources.probe_timeout_s); check that the source serves the video at a normal speed, \
         or raise sources.probe_timeout_s in the cluster config"
    );
    Err(if src.network {
        MediaError::Network { input: src.name.clone(), reason }
    } else {
        MediaError::Io { input: src.name.clone(), reason }
    })
}

/// The probe of an opened [`Source`]; FFmpeg is interrupted at `deadline`.
fn probe_source(src: &Source, options: &[(&str, &str)], deadline: Option<std::time::Instant>) -> Result<ProbeInfo, MediaError> {
    let mut input = src.open_until(options, deadline)?;
    let index = first_video_stream(&input, &src.name)?;
    let (time_base, codec, fps_stream, par_w, par_h, declared_frames) = {
        let st = input.stream(index).unwrap();
        let par = st.parameters();
        let (w, h) = unsafe { ((*par.as_ptr()).width, (*par.as_ptr()).height) };
        let fps = [st.avg_frame_rate(), st.rate()]
            .into_iter()
            .find(|r| r.numerator() > 0 && r.denominator() > 0)
            .map(|r| r.numerator() as f64 / r.denominator() as f64);
        (
            st.time_base(),
            par.id().name().to_string(),
            fps,
            w.max(0) as u32,
            h.max(0) as u32,
            st.frames(),
        )
    };
    let mut decoder = open_video_decoder(&input, index, &src, false)?;

    // Timestamps of all frames (pts, else dts, else synthesised) and keyframe flags.
    let mut stamps: Vec<i64> = Vec::new();
    let mut key_stamps: Vec<i64> = Vec::new();
    let mut last_ts: Option<i64> = None;
    let mut packets: i64 = 0;
    let mut missing_ts = false;
    let mut first: Option<ffmpeg::frame::Video> = None;
    let mut first_err: Option<ffmpeg::Error> = None;
    let mut packet = ffmpeg::Packet::empty();

    let try_receive = |decoder: &mut ffmpeg::decoder::Video,
                       first: &mut Option<ffmpeg::frame::Video>,
                       first_err: &mut Option<ffmpeg::Error>| {
        let mut frame = ffmpeg::frame::Video::empty();
        loop {
            match decoder.receive_frame(&mut frame) {
                Ok(()) => {
                    if frame_discarded(&frame) {
                        continue;
                    }
                    *first = Some(frame);
                    return;
                }
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => return,
                Err(ffmpeg::Error::Eof) => return,
                Err(e) => {
                    first_err.get_or_insert(e);
                    return;
                }
            }
        }
    };

    while read_packet(&mut packet, &mut input, &src)? {
        if packet.stream() != index {
            continue;
        }
        packets += 1;
        if first.is_none() && first_err.is_none() {
            if let Err(e) = decoder.send_packet(&packet) {
                first_err = Some(e);
            } else {
                try_receive(&mut decoder, &mut first, &mut first_err);
            }
        }
        if packet_discarded(&packet) {
            continue;
        }
        let ts = match packet.pts().or(packet.dts()) {
            Some(t) => t,
            None => {
                missing_ts = true;
                last_ts.map_or(0, |t| t + 1)
            }
        };
        last_ts = Some(ts);
        stamps.push(ts);
        if packet.is_key() {
            key_stamps.push(ts);
        }
    }
    if first.is_none() && first_err.is_none() {
        let _ = decoder.send_eof();
        try_receive(&mut decoder, &mut first, &mut first_err);
    }
    // Only MP4/MOV frame counts are trusted (other containers' headers may
    // count dropped or duplicate frames).
    let mov_family = input
        .format()
        .name()
        .split(',')
        .any(|n| n == "mov" || n == "mp4");
    if mov_family && declared_frames > 0 && packets < declared_frames {
        // e.g. an MP4 cut short: its index lists frames whose data is missing,
        // and the demuxer just ends early.
        return Err(MediaError::corrupt(
            &src.name,
            format!("truncated: the container lists {declared_frames} video frames but only {packets} could be read"),
        ));
    }
    if stamps.is_empty() {
        return Err(MediaError::not_a_video(
            &src.name,
            "its video stream contains no frames",
        ));
    }
    if let Some(e) = first_err {
        return Err(MediaError::corrupt(
            &src.name,
            format!("cannot decode the first video frame: {e}"),
        ));
    }
    let Some(first) = first else {
        return Err(MediaError::corrupt(
            &src.name,
            "no video frame could be decoded",
        ));
    };

    stamps.sort_unstable();
    let mut keyframes: Vec<(u64, i64)> = key_stamps
        .into_iter()
        .map(|ts| (stamps.partition_point(|&t| t < ts) as u64, ts))
        .collect();
    keyframes.sort_unstable();
    keyframes.dedup();
    let mut pts0 = stamps[0];
    if missing_ts {
        // Packets without timestamps (raw elementary streams): the decoder
        // makes up the frames' timestamps, so packet ranks say nothing about
        // seek targets. Frame 0's pts is what the decoder reports, and the
        // only safe "keyframe" is the start.
        pts0 = frame_pts(&first).unwrap_or(0);
        keyframes = vec![(0, pts0)];
    }

    let frames = stamps.len() as u64;
    let tb = (time_base.numerator(), time_base.denominator());
    let fps = fps_stream.unwrap_or_else(|| {
        let span = ts_seconds(*stamps.last().unwrap(), stamps[0], time_base);
        if frames > 1 && span > 0.0 {
            (frames - 1) as f64 / span
        } else {
            0.0
        }
    });
    let (width, height) = if first.width() > 0 {
        (first.width(), first.height())
    } else {
        (par_w, par_h)
    };
    Ok(ProbeInfo {
        frames,
        width,
        height,
        time_base: tb,
        pts0,
        fps,
        keyframes,
        codec,
    })
}
