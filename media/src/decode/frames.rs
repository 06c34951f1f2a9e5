//! Frame decoding: feeding packets to the decoder and numbering the frames
//! it returns ([`Decoder::next_frame`]).

use ffmpeg_next as ffmpeg;

use super::stall::stalled;
use super::stream::{frame_discarded, frame_pts, read_packet, ts_seconds};
use super::{DecodedFrame, Decoder};
use crate::error::{from_ffmpeg, MediaError, Stage};

impl Decoder {
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
