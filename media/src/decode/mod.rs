//! Probing (demux-only frame counting) and frame-accurate decoding.

use std::time::Duration;

use ffmpeg::codec::threading;
use ffmpeg::ffi;
use ffmpeg::Rational;
use ffmpeg_next as ffmpeg;

use crate::error::{from_ffmpeg, MediaError, Stage};
use crate::source::{first_video_stream, Source};

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

fn ts_seconds(pts: i64, pts0: i64, tb: Rational) -> f64 {
    if tb.denominator() == 0 {
        return 0.0;
    }
    // i128: a pts far from pts0 must not overflow.
    (pts as i128 - pts0 as i128) as f64 * tb.numerator() as f64 / tb.denominator() as f64
}

/// The best timestamp of a decoded frame: its pts, else FFmpeg's best-effort
/// guess.
fn frame_pts(frame: &ffmpeg::frame::Video) -> Option<i64> {
    frame.pts().or_else(|| frame.timestamp())
}

fn frame_discarded(frame: &ffmpeg::frame::Video) -> bool {
    unsafe { (*frame.as_ptr()).flags & ffi::AV_FRAME_FLAG_DISCARD != 0 }
}

fn packet_discarded(packet: &ffmpeg::Packet) -> bool {
    use ffmpeg::packet::Ref;
    unsafe { (*packet.as_ptr()).flags & ffi::AV_PKT_FLAG_DISCARD != 0 }
}

/// Decoder thread count: `PANOPTES_DECODE_THREADS` (e.g. 1 when many
/// decoders share few cores), default 0 = FFmpeg's automatic choice.
fn decode_threads() -> usize {
    std::env::var("PANOPTES_DECODE_THREADS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Open a video decoder for stream `index` of `input`. `threads`: use frame
/// threading (auto thread count) or decode on the calling thread only.
fn open_video_decoder(
    input: &ffmpeg::format::context::Input,
    index: usize,
    src: &Source,
    threads: bool,
) -> Result<ffmpeg::decoder::Video, MediaError> {
    let stream = input
        .stream(index)
        .expect("stream index from first_video_stream");
    let params = stream.parameters();
    let codec_name = params.id().name();
    let mut ctx = ffmpeg::codec::context::Context::from_parameters(params)
        .map_err(|e| MediaError::corrupt(&src.name, format!("bad codec parameters: {e}")))?;
    if threads {
        ctx.set_threading(threading::Config {
            kind: threading::Type::Frame,
            count: decode_threads(),
            ..Default::default()
        });
    }
    let mut dec = ctx.decoder();
    dec.set_packet_time_base(stream.time_base());
    dec.video().map_err(|e| match e {
        ffmpeg::Error::DecoderNotFound => MediaError::corrupt(
            &src.name,
            format!("no decoder for codec '{codec_name}' in this FFmpeg build"),
        ),
        e => MediaError::corrupt(
            &src.name,
            format!("cannot open the '{codec_name}' decoder: {e}"),
        ),
    })
}

/// Read the next packet, retrying EAGAIN (non-blocking network demuxers).
/// `Ok(false)` at end of input.
fn read_packet(
    packet: &mut ffmpeg::Packet,
    input: &mut ffmpeg::format::context::Input,
    src: &Source,
) -> Result<bool, MediaError> {
    loop {
        // av_read_frame overwrites the packet without releasing what it held:
        // reading into the same packet again leaked every packet's data (a
        // probe of a 271 MB file kept 285 MB; decoding a 98 MB file, 106 MiB).
        *packet = ffmpeg::Packet::empty();
        match packet.read(input) {
            Ok(()) => return Ok(true),
            Err(ffmpeg::Error::Eof) => return Ok(false),
            Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(from_ffmpeg(&src.name, src.network, Stage::Read, e)),
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

/// The error of a decode stopped by its [`StallLimit`].
fn stalled(stall: &StallLimit, input: &str, network: bool) -> MediaError {
    let secs = stall.limit.as_secs_f64();
    let reason = format!(
        "no frame came from the source in {secs:.0} s: it sends too little data, and decoding was stopped \
         (sources.probe_timeout_s); check that the source serves the video at a normal speed"
    );
    if network {
        MediaError::Network { input: input.to_string(), reason }
    } else {
        MediaError::Io { input: input.to_string(), reason }
    }
}

/// A deadline that moves with progress: a frame must come at least every
/// `limit`; FFmpeg's interrupt callback reads it.
#[derive(Debug)]
struct StallLimit {
    limit: std::time::Duration,
    start: std::time::Instant,
    /// Milliseconds after `start`.
    deadline_ms: std::sync::atomic::AtomicU64,
    /// The deadline passed once: FFmpeg was interrupted, and frames it still
    /// held (drained after the failed read) do not undo that.
    fired: std::sync::atomic::AtomicBool,
}

impl StallLimit {
    fn new(limit: std::time::Duration) -> Self {
        let s = StallLimit { limit, start: std::time::Instant::now(), deadline_ms: Default::default(), fired: Default::default() };
        s.renew();
        s
    }

    fn renew(&self) {
        let ms = (self.start.elapsed() + self.limit).as_millis() as u64;
        self.deadline_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn past(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if self.fired.load(Relaxed) {
            return true;
        }
        let past = self.start.elapsed().as_millis() as u64 >= self.deadline_ms.load(Relaxed);
        if past {
            self.fired.store(true, Relaxed);
        }
        past
    }
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Decoder>();
    assert_send::<DecodedFrame>();
};

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

    /// [`Decoder::open`] that must make progress: once no frame has come for
    /// `limit` (opening included), FFmpeg's blocking reads give up and
    /// [`Decoder::next_frame`] fails saying so. HTTP's read timeout ends a
    /// server that goes silent; this ends one that trickles a byte now and
    /// then, which would otherwise hold the shard for as long as it goes on.
    pub fn open_with_stall_limit(source: &str, seek: Option<(u64, i64)>, pts0: i64, limit: std::time::Duration) -> Result<Self, MediaError> {
        let src = Source::new(source)?;
        let (name, network) = (src.name.clone(), src.network);
        let stall = std::sync::Arc::new(StallLimit::new(limit));
        let explain = |e: MediaError| if stall.past() { stalled(&stall, &name, network) } else { e };
        let mut dec = Self::open_plain(src, Vec::new(), pts0, Some(stall.clone())).map_err(explain)?;
        if let Some((index, pts)) = seek {
            if index > 0 {
                dec.seek_to(index, pts, 0).map_err(explain)?;
            }
        }
        Ok(dec)
    }

    /// Open a live source (e.g. `rtmp://HOST:PORT/live/KEY` with
    /// `[("listen", "1"), ("timeout", "60")]`: wait for a publisher). Frames
    /// are numbered from 0 in arrival order and timestamped relative to the
    /// first one. `stop` interrupts a blocking open or read when set.
    /// Opening blocks (network); call it on a blocking thread.
    pub fn open_live(
        source: &str,
        options: &[(&str, &str)],
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Self, MediaError> {
        Self::open_live_interruptible(source, options, move || {
            stop.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// [`Decoder::open_live`] with any interrupt test: FFmpeg's blocking
    /// open and reads (for the decoder's whole life) give up once it is true.
    pub fn open_live_interruptible(
        source: &str,
        options: &[(&str, &str)],
        interrupted: impl FnMut() -> bool + Send + 'static,
    ) -> Result<Self, MediaError> {
        let src = Source::new(source)?;
        crate::source::rtmp_key::watch();
        let _ = crate::source::rtmp_key::take_wrong_stream_key();
        let input = src.open_interruptible(options, interrupted)?;
        let mut dec = Self::from_input(src, Vec::new(), input, i64::MIN)?;
        dec.pts0_from_first = true;
        Ok(dec)
    }

    /// A live push (RTMP listen mode) whose publisher named another stream
    /// key than the one listened for, since the last call on this thread:
    /// FFmpeg's message saying which. The caller refuses that publisher.
    pub fn take_wrong_stream_key() -> Option<String> {
        crate::source::rtmp_key::take_wrong_stream_key()
    }

    fn open_plain(
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

    fn from_input(
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

    /// Seek for keyframe `(index, pts)`. Attempt 0 asks for the keyframe's
    /// own pts, which lands exactly on it with indexed containers (MP4, MKV).
    /// Demuxers that search by decode timestamp (MPEG-TS) can land just after
    /// it; later attempts aim 4, 16, 64, 256 frames earlier (the extra frames
    /// are decoded and dropped), then we give up and decode from frame 0.
    fn seek_to(&mut self, index: u64, pts: i64, attempt: u32) -> Result<(), MediaError> {
        const MAX_ATTEMPTS: u32 = 4;
        if attempt > MAX_ATTEMPTS {
            return self.fallback(index);
        }
        let margin = if attempt == 0 {
            0
        } else {
            self.frame_duration.saturating_mul(4i64.pow(attempt))
        };
        let target = pts.saturating_sub(margin);
        if attempt > 0 {
            self.decoder.flush();
            self.eof_sent = false;
            self.finished = false;
            self.last_pts = None;
        }
        let ret = unsafe {
            ffi::av_seek_frame(
                self.input.as_mut_ptr(),
                self.stream_index as i32,
                target,
                ffi::AVSEEK_FLAG_BACKWARD,
            )
        };
        if ret < 0 {
            tracing::debug!(source = %self.src.name, index, pts, target,
                "seek failed ({}), decoding from the start", ffmpeg::Error::from(ret));
            return self.fallback(index);
        }
        self.next_index = index;
        self.min_pts = pts.max(self.pts0);
        self.verify_seek = Some((index, pts));
        self.seek_attempt = attempt;
        Ok(())
    }

    /// The seek for keyframe `(index, pts)` did not land on or before it.
    fn seek_missed(&mut self, index: u64, pts: i64, got: Option<i64>) -> Result<(), MediaError> {
        tracing::debug!(source = %self.src.name, index, pts, ?got, attempt = self.seek_attempt,
            "seek landed after the keyframe, seeking earlier");
        self.seek_to(index, pts, self.seek_attempt + 1)
    }

    /// Reopen and decode from frame 0, skipping frames before `index`.
    fn fallback(&mut self, index: u64) -> Result<(), MediaError> {
        let mut fresh = Self::open_plain(
            self.src.clone(),
            std::mem::take(&mut self.options),
            self.pts0,
            self.stall.clone(),
        )?;
        fresh.skip_before = index;
        fresh.fell_back = true;
        *self = fresh;
        Ok(())
    }

    /// The stream's time base.
    pub fn time_base(&self) -> (i32, i32) {
        (self.time_base.numerator(), self.time_base.denominator())
    }

    /// True if a requested seek could not be used (the demuxer could not
    /// seek, or landed after the keyframe) and decoding restarted from frame
    /// 0. Known only once the first frame has been returned.
    pub fn seek_fell_back(&self) -> bool {
        self.fell_back
    }

    /// The (normalised) source name.
    pub fn source(&self) -> &str {
        &self.src.name
    }

    /// The next frame in presentation order, numbered; `None` at end of
    /// stream. Read and decode errors are returned (calling again continues
    /// with the following packets).
    pub fn next_frame(&mut self) -> Result<Option<DecodedFrame>, MediaError> {
        let next = self.next_frame_unchecked();
        let Some(stall) = &self.stall else { return next };
        match next {
            Ok(Some(f)) => {
                stall.renew();
                Ok(Some(f))
            }
            Err(_) if stall.past() => {
                self.finished = true;
                Err(stalled(stall, &self.src.name, self.src.network))
            }
            other => other,
        }
    }

    fn next_frame_unchecked(&mut self) -> Result<Option<DecodedFrame>, MediaError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let mut frame = ffmpeg::frame::Video::empty();
            match self.decoder.receive_frame(&mut frame) {
                Ok(()) => {
                    if let Some(out) = self.accept(frame)? {
                        return Ok(Some(out));
                    }
                }
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => {
                    if self.eof_sent {
                        // Should not happen after EOF was sent; treat as the end.
                        if let Some((index, kf_pts)) = self.verify_seek.take() {
                            self.seek_missed(index, kf_pts, None)?;
                            continue;
                        }
                        self.finished = true;
                        continue;
                    }
                    self.feed()?;
                }
                Err(ffmpeg::Error::Eof) => {
                    if let Some((index, kf_pts)) = self.verify_seek.take() {
                        // Landed past the keyframe, at the end of the stream.
                        self.seek_missed(index, kf_pts, None)?;
                        continue;
                    }
                    self.finished = true;
                }
                Err(e) => {
                    return Err(from_ffmpeg(
                        &self.src.name,
                        false,
                        Stage::Decode(self.next_index),
                        e,
                    ))
                }
            }
        }
    }

    /// Time since the last packet (of any stream) was read from the source,
    /// or since it was opened: how long a live source has been silent.
    pub fn since_last_packet(&self) -> std::time::Duration {
        self.last_packet.elapsed()
    }

    /// Stop reading input (e.g. a live source whose connection ended): the
    /// frames the decoder still holds are returned by the next calls to
    /// [`Decoder::next_frame`], then `None`.
    pub fn end_input(&mut self) {
        if !self.eof_sent {
            self.eof_sent = true;
            let _ = self.decoder.send_eof();
        }
    }

    /// Send the next packet of the video stream (or EOF) to the decoder.
    fn feed(&mut self) -> Result<(), MediaError> {
        loop {
            if !read_packet(&mut self.packet, &mut self.input, &self.src)? {
                self.eof_sent = true;
                let _ = self.decoder.send_eof();
                return Ok(());
            }
            self.last_packet = std::time::Instant::now();
            if self.packet.stream() != self.stream_index {
                continue;
            }
            return self.decoder.send_packet(&self.packet).map_err(|e| {
                from_ffmpeg(&self.src.name, false, Stage::Decode(self.next_index), e)
            });
        }
    }

    /// Number a decoded frame; `None` if it is dropped.
    fn accept(&mut self, frame: ffmpeg::frame::Video) -> Result<Option<DecodedFrame>, MediaError> {
        if frame_discarded(&frame) {
            return Ok(None);
        }
        let known = frame_pts(&frame);
        let pts = match (known, self.last_pts) {
            (Some(p), _) => p,
            (None, Some(p)) => p.saturating_add(self.frame_duration),
            // A live stream's first frame can come without a timestamp
            // (FFmpeg's RTSP client gives none to the first H.264 frame):
            // it is time 0 of the stream.
            (None, None) if self.pts0_from_first => 0,
            (None, None) => self.pts0,
        };
        if self.pts0_from_first && self.last_pts.is_none() {
            self.pts0 = pts;
            // Frames are not dropped for a pts below a made-up first one.
            self.min_pts = if known.is_some() { pts } else { i64::MIN };
            self.pts0_made_up = known.is_none();
        } else if let (true, Some(p)) = (self.pts0_made_up, known) {
            // The first real pts: the frames before it were one frame apart.
            self.pts0 = p.saturating_sub((self.next_index as i64).saturating_mul(self.frame_duration));
            self.pts0_made_up = false;
        }
        if pts < self.min_pts {
            return Ok(None);
        }
        if let Some((index, kf_pts)) = self.verify_seek.take() {
            if pts != kf_pts {
                self.seek_missed(index, kf_pts, Some(pts))?;
                return Ok(None);
            }
        }
        self.last_pts = Some(pts);
        let index = self.next_index;
        self.next_index += 1;
        if index < self.skip_before {
            return Ok(None);
        }
        Ok(Some(DecodedFrame {
            index,
            pts,
            timestamp: ts_seconds(pts, self.pts0, self.time_base),
            frame,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(dir: &std::path::Path) -> String {
        let path = dir.join("c.mp4");
        let st = std::process::Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=160x120:rate=25",
            ])
            .args([
                "-frames:v",
                "50",
                "-c:v",
                "libx264",
                "-g",
                "10",
                "-bf",
                "2",
                "-pix_fmt",
                "yuv420p",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        path.to_str().unwrap().to_string()
    }

    fn frames(dec: &mut Decoder) -> Vec<(u64, i64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(f) = dec.next_frame().unwrap() {
            out.push((f.index, f.pts, f.frame.data(0).to_vec()));
        }
        out
    }

    /// The slow paths give the same frames as a direct seek: seeking again
    /// further back (as for MPEG-TS), and decoding from the start.
    #[test]
    fn seek_retry_and_fallback_paths() {
        let dir = tempfile::tempdir().unwrap();
        let s = clip(dir.path());
        let info = probe(&s).unwrap();
        let kf = info.keyframes[3];
        assert_eq!(kf.0, 30);
        let mut direct = Decoder::open(&s, Some(kf), info.pts0).unwrap();
        let want = frames(&mut direct);
        assert!(!direct.seek_fell_back());
        assert_eq!(want.len(), 20);
        assert_eq!(want[0].0, 30);

        for attempt in 1..=4 {
            let mut dec = Decoder::open(&s, None, info.pts0).unwrap();
            dec.seek_to(kf.0, kf.1, attempt).unwrap();
            assert_eq!(frames(&mut dec), want, "seek attempt {attempt}");
            assert!(!dec.seek_fell_back());
        }
        let mut dec = Decoder::open(&s, None, info.pts0).unwrap();
        dec.seek_to(kf.0, kf.1, 5).unwrap(); // beyond the last attempt: decode from the start
        assert!(dec.seek_fell_back());
        assert_eq!(frames(&mut dec), want);
    }
}
