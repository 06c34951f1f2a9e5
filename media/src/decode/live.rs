//! Live sources: opening one (e.g. an RTMP push, interruptible), the
//! wrong-stream-key check, and ending its input.

use super::Decoder;
use crate::error::MediaError;
use crate::source::Source;

impl Decoder {
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
}
