//! The stall limit: a decode that gives up once no frame has come for a
//! while ([`Decoder::open_with_stall_limit`]).

use super::Decoder;
use crate::error::MediaError;
use crate::source::Source;

/// The error of a decode stopped by its [`StallLimit`].
pub(super) fn stalled(stall: &StallLimit, input: &str, network: bool) -> MediaError {
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
pub(super) struct StallLimit {
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

    pub(super) fn renew(&self) {
        let ms = (self.start.elapsed() + self.limit).as_millis() as u64;
        self.deadline_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn past(&self) -> bool {
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

impl Decoder {
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
}
