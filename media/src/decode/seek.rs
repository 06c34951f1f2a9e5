//! Seeking a [`Decoder`] to a keyframe: retries further back when the
//! demuxer lands after it, and the fallback of decoding from frame 0.

use ffmpeg::ffi;
use ffmpeg_next as ffmpeg;

use super::Decoder;
use crate::error::MediaError;

impl Decoder {
    /// Seek for keyframe `(index, pts)`. Attempt 0 asks for the keyframe's
    /// own pts, which lands exactly on it with indexed containers (MP4, MKV).
    /// Demuxers that search by decode timestamp (MPEG-TS) can land just after
    /// it; later attempts aim 4, 16, 64, 256 frames earlier (the extra frames
    /// are decoded and dropped), then we give up and decode from frame 0.
    pub(super) fn seek_to(&mut self, index: u64, pts: i64, attempt: u32) -> Result<(), MediaError> {
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
    pub(super) fn seek_missed(&mut self, index: u64, pts: i64, got: Option<i64>) -> Result<(), MediaError> {
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

    /// True if a requested seek could not be used (the demuxer could not
    /// seek, or landed after the keyframe) and decoding restarted from frame
    /// 0. Known only once the first frame has been returned.
    pub fn seek_fell_back(&self) -> bool {
        self.fell_back
    }
}
