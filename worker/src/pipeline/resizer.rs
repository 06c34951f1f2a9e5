//! Resize actor: swscale to packed RGB24 at the job's target height, then
//! hand the frame to the supervisor, which fans it out to every model actor
//! (and keeps it until every model's result is in, to re-send it to a model
//! actor that crashes).
use std::sync::Arc;
use std::time::Instant;

use panoptes_common::metrics::Histogram;
use panoptes_media::Converter;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use super::{blocking, Links, Picture, ReporterMsg, ResizerMsg, ShardMsg};
use crate::metrics::RESIZE_SECONDS;

pub struct ResizerActor;

pub struct ResizerArgs {
    pub target_height: u32,
    /// Stored pictures: (max height, JPEG quality); height 0 keeps none.
    pub picture: (u32, u32),
    /// Which analysed frames keep theirs.
    pub rate: PictureRate,
    pub links: Links,
    pub reporter: ActorRef<ReporterMsg>,
}

pub struct ResizerState {
    conv: Converter,
    picture: (u32, u32),
    rate: PictureRate,
    links: Links,
    reporter: ActorRef<ReporterMsg>,
    latency: Histogram,
}

impl Actor for ResizerActor {
    type Msg = ResizerMsg;
    type State = ResizerState;
    type Arguments = ResizerArgs;

    async fn pre_start(&self, _myself: ActorRef<ResizerMsg>, a: ResizerArgs) -> Result<ResizerState, ActorProcessingErr> {
        let latency = panoptes_common::metrics::histogram(RESIZE_SECONDS, &[]);
        Ok(ResizerState { conv: Converter::new(a.target_height), picture: a.picture, rate: a.rate, links: a.links, reporter: a.reporter, latency })
    }

    async fn handle(&self, _myself: ActorRef<ResizerMsg>, msg: ResizerMsg, st: &mut ResizerState) -> Result<(), ActorProcessingErr> {
        let span = st.links.span.clone();
        async move {
            let gen = st.links.gen;
            match msg {
                ResizerMsg::Frame { frame, decode_s, arrived } => {
                    let t = Instant::now();
                    let rgb = Arc::new(blocking(|| st.conv.convert(&frame.frame))?);
                    let resize_s = t.elapsed().as_secs_f64();
                    st.latency.observe(resize_s);
                    let (max_height, quality) = st.picture;
                    let with_picture = max_height > 0 && st.rate.keep(frame.timestamp);
                    // The reporter learns of the frame before any model result for it
                    // can reach it (those go through the supervisor after this).
                    st.reporter.send_message(ReporterMsg::Decoded { frame: frame.index, timestamp: frame.timestamp, size: (rgb.width, rgb.height), decode_s, resize_s, picture: with_picture, arrived })?;
                    st.links.supervisor.send_message(ShardMsg::Frame { gen, frame: frame.index, rgb: rgb.clone() })?;
                    // The stored picture is encoded on the blocking pool while
                    // the models analyse the frame (encoded here first, it held
                    // them back: 0.41x the frame rate without pictures on
                    // `colors`). At most pipeline_depth frames are in flight,
                    // so as many encodes.
                    if with_picture {
                        let (reporter, index) = (st.reporter.clone(), frame.index);
                        tokio::task::spawn_blocking(move || {
                            let p = picture(&rgb, max_height, quality)
                                .inspect_err(|e| tracing::warn!(frame = index, error = %e, "the frame's picture could not be encoded; it goes without"))
                                .ok();
                            let _ = reporter.send_message(ReporterMsg::Picture { frame: index, picture: p });
                        });
                    }
                }
                ResizerMsg::End { next_frame } => st.links.supervisor.send_message(ShardMsg::FramesEnd { gen, next_frame })?,
            }
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// Which analysed frames keep a stored picture: every one, or at most one
/// per `every_ms` of stream time: the first analysed frame at or after each
/// multiple of it. Whether the analysed frame before a pipeline's first one
/// fell in the same interval is told from the frame rate (a file shard that
/// starts or resumes mid-interval keeps no extra picture); with the rate
/// unknown (live streams), the first frame keeps one.
#[derive(Debug, Clone)]
pub struct PictureRate {
    every_ms: u64,
    /// Stream time between two analysed frames, when the rate is known.
    interval_s: Option<f64>,
    last: Option<i64>,
}

impl PictureRate {
    pub fn new(every_ms: u64, frame_step: u64, fps: f64) -> Self {
        let interval_s = (fps.is_finite() && fps > 0.0).then(|| frame_step.max(1) as f64 / fps);
        PictureRate { every_ms, interval_s, last: None }
    }

    fn interval_of(&self, timestamp: f64) -> i64 {
        // A hair over: a frame stamped exactly on a multiple belongs to it.
        (timestamp * 1000.0 / self.every_ms as f64 + 1e-6).floor() as i64
    }

    /// Does the analysed frame at `timestamp` (s) keep its picture?
    pub fn keep(&mut self, timestamp: f64) -> bool {
        if self.every_ms == 0 {
            return true;
        }
        let now = self.interval_of(timestamp);
        let before = self.last.or_else(|| self.interval_s.map(|dt| self.interval_of(timestamp - dt)));
        self.last = Some(now);
        before != Some(now)
    }
}

/// The frame's stored picture: reduced to at most `max_height` rows, as JPEG.
fn picture(rgb: &panoptes_media::RgbFrame, max_height: u32, quality: u32) -> anyhow::Result<Picture> {
    let quality = quality.clamp(1, 100) as u8;
    let jpeg = if rgb.height <= max_height {
        panoptes_render::encode_rgb_jpeg(&rgb.data, rgb.width, rgb.height, quality)?
    } else {
        let img = panoptes_render::Image::new(rgb.width, rgb.height, rgb.data.clone())?;
        panoptes_render::encode_jpeg(&panoptes_render::downscale(&img, max_height), quality)?
    };
    Ok(Picture { jpeg, width: rgb.width, height: rgb.height })
}

#[cfg(test)]
mod tests {
    use super::PictureRate;

    fn kept(rate: &mut PictureRate, frames: std::ops::Range<u64>, step: u64, fps: f64) -> Vec<u64> {
        frames.filter(|n| n % step == 0).filter(|&n| rate.keep(n as f64 / fps)).collect()
    }

    #[test]
    fn every_frame_when_the_interval_is_zero() {
        assert_eq!(kept(&mut PictureRate::new(0, 1, 25.0), 0..5, 1, 25.0), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn one_a_second_the_first_frame_of_each() {
        assert_eq!(kept(&mut PictureRate::new(1000, 1, 25.0), 0..101, 1, 25.0), vec![0, 25, 50, 75, 100]);
        assert_eq!(kept(&mut PictureRate::new(1000, 4, 25.0), 0..101, 4, 25.0), vec![0, 28, 52, 76, 100]);
        // NTSC: frame 30 is at 1.001 s.
        assert_eq!(kept(&mut PictureRate::new(1000, 1, 30000.0 / 1001.0), 0..61, 1, 30000.0 / 1001.0), vec![0, 30, 60]);
        assert_eq!(kept(&mut PictureRate::new(200, 1, 25.0), 0..11, 1, 25.0), vec![0, 5, 10]);
    }

    #[test]
    fn shards_that_start_mid_interval_agree_with_one_run() {
        let whole = kept(&mut PictureRate::new(1000, 3, 25.0), 0..300, 3, 25.0);
        let mut parts = Vec::new();
        for (a, b) in [(0, 37), (37, 120), (120, 121), (121, 300)] {
            parts.extend(kept(&mut PictureRate::new(1000, 3, 25.0), a..b, 3, 25.0));
        }
        assert_eq!(parts, whole);
        assert_eq!(whole.len(), 12);
    }

    #[test]
    fn without_the_rate_the_first_frame_keeps_one() {
        let mut r = PictureRate::new(1000, 1, 0.0);
        assert!(r.keep(12.5));
        assert!(!r.keep(12.54));
        assert!(r.keep(13.0));
        // A stream that restarts its clock keeps one at once.
        assert!(r.keep(0.2));
    }
}
