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
    pub links: Links,
    pub reporter: ActorRef<ReporterMsg>,
}

pub struct ResizerState {
    conv: Converter,
    picture: (u32, u32),
    links: Links,
    reporter: ActorRef<ReporterMsg>,
    latency: Arc<Histogram>,
}

impl Actor for ResizerActor {
    type Msg = ResizerMsg;
    type State = ResizerState;
    type Arguments = ResizerArgs;

    async fn pre_start(&self, _myself: ActorRef<ResizerMsg>, a: ResizerArgs) -> Result<ResizerState, ActorProcessingErr> {
        let latency = panoptes_common::metrics::histogram(RESIZE_SECONDS, &[]);
        Ok(ResizerState { conv: Converter::new(a.target_height), picture: a.picture, links: a.links, reporter: a.reporter, latency })
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
                    let with_picture = max_height > 0;
                    // The reporter learns of the frame before any model result for it
                    // can reach it (those go through the supervisor after this).
                    st.reporter.send_message(ReporterMsg::Decoded { frame: frame.index, timestamp: frame.timestamp, decode_s, resize_s, picture: with_picture, arrived })?;
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
