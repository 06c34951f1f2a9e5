//! The video stream of an opened input: finding it, opening its decoder
//! (and its thread count), reading its packets, and the flags and
//! timestamps of its packets and frames. Shared by probing and decoding.

use std::time::Duration;

use ffmpeg::codec::threading;
use ffmpeg::ffi;
use ffmpeg::Rational;
use ffmpeg_next as ffmpeg;

use crate::error::{from_ffmpeg, MediaError, Stage};
use crate::source::Source;

/// Index of the first video stream (attached pictures such as cover art do
/// not count).
///
/// FFmpeg's text-art "video" demuxers (tty for `.ans`/`.nfo`, bintext for
/// `.bin`/`.adf`/`.idf`/`.xbin`) accept almost any bytes by file extension and
/// render them as text; such a stream is not a video, and the source is
/// refused as [`MediaError::NotAVideo`].
pub(super) fn first_video_stream(
    input: &ffmpeg::format::context::Input,
    name: &str,
) -> Result<usize, MediaError> {
    let mut saw_cover = false;
    for stream in input.streams() {
        if stream.parameters().medium() != ffmpeg::media::Type::Video {
            continue;
        }
        if stream
            .disposition()
            .contains(ffmpeg::format::stream::Disposition::ATTACHED_PIC)
        {
            saw_cover = true;
            continue;
        }
        use ffmpeg::codec::Id;
        let id = stream.parameters().id();
        if matches!(id, Id::ANSI | Id::BINTEXT | Id::XBIN | Id::IDF) {
            return Err(MediaError::not_a_video(
                name,
                format!(
                    "no video stream (FFmpeg reads the data as '{}' text art)",
                    id.name()
                ),
            ));
        }
        return Ok(stream.index());
    }
    let what = if input.streams().count() == 0 {
        "no streams at all".to_string()
    } else if saw_cover {
        "no video stream (only an attached cover picture)".to_string()
    } else {
        let kinds: Vec<String> = input
            .streams()
            .map(|s| format!("{:?}", s.parameters().medium()).to_lowercase())
            .collect();
        format!("no video stream (streams: {})", kinds.join(", "))
    };
    Err(MediaError::not_a_video(name, what))
}

pub(super) fn ts_seconds(pts: i64, pts0: i64, tb: Rational) -> f64 {
    if tb.denominator() == 0 {
        return 0.0;
    }
    // i128: a pts far from pts0 must not overflow.
    (pts as i128 - pts0 as i128) as f64 * tb.numerator() as f64 / tb.denominator() as f64
}

/// The best timestamp of a decoded frame: its pts, else FFmpeg's best-effort
/// guess.
pub(super) fn frame_pts(frame: &ffmpeg::frame::Video) -> Option<i64> {
    frame.pts().or_else(|| frame.timestamp())
}

pub(super) fn frame_discarded(frame: &ffmpeg::frame::Video) -> bool {
    unsafe { (*frame.as_ptr()).flags & ffi::AV_FRAME_FLAG_DISCARD != 0 }
}

pub(super) fn packet_discarded(packet: &ffmpeg::Packet) -> bool {
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
pub(super) fn open_video_decoder(
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
pub(super) fn read_packet(
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
