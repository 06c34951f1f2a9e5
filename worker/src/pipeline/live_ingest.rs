//! A live shard's ingest thread ([`LiveIngest`]): it listens for a push's
//! publisher (FFmpeg's RTMP listen mode, behind the ingest gate) or opens a
//! pull source (rtsp://, rtmp://, a device) and reopens it when it drops,
//! decodes every frame as it arrives, stamps it on one clock across
//! connections ([`StreamClock`]) and sends it to the shard's source actor
//! (`decoder.rs`), whose gate applies the job's drop policy.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use panoptes_media::Decoder as MediaDecoder;
use ractor::ActorRef;
use tracing::{debug, info, warn};

use super::{DecoderMsg, ReporterMsg};
use crate::metrics::{LIVE_GAP_MS, LIVE_RECONNECTS};

/// A live shard's ingest thread: see the module doc.
pub(super) struct LiveIngest {
    pub(super) url: String,
    pub(super) job_id: String,
    /// A pull source (opened and reopened here), not a push (listened for).
    pub(super) pull: bool,
    /// Number of the first frame (the committed cursor; 0 for a new stream).
    pub(super) resume: u64,
    /// Timestamp of the first frame (s; 0 for a new stream): see [`StreamClock`].
    pub(super) resume_timestamp: f64,
    pub(super) step: u64,
    /// The worker's ingest lobby (a stream resumed here is parked there).
    pub(super) lobby: std::sync::Arc<crate::lobby::Parked>,
    /// Where dropped frames and reconnections are counted for the job's
    /// next report.
    pub(super) reporter: ActorRef<ReporterMsg>,
    /// `[live]`.
    pub(super) config: super::LiveConfig,
    pub(super) stop: Arc<AtomicBool>,
    /// Where every frame, the stream's end and a failure go.
    pub(super) decoder: ActorRef<DecoderMsg>,
    pub(super) span: tracing::Span,
}

impl LiveIngest {
    /// Listen until a publisher pushes to this stream's key: a publisher
    /// naming another key is disconnected (its push fails) and listening goes
    /// on, within the one live.connect_timeout_s. `None` when the shard
    /// failed (reported to the decoder actor) or was stopped.
    fn accept(&self) -> Option<(MediaDecoder, Option<crate::ingest_gate::Gate>)> {
        if self.lobby.is_lobby_url(&self.url) {
            // Resumed on this worker's ingest lobby: its publisher's
            // connection is parked there (see crate::lobby).
            info!(url = %panoptes_media::policy::redact(&self.url), resume_frame = self.resume, "live: taking the publisher's connection from the ingest lobby");
            let limit = std::time::Duration::from_secs(self.config.connect_timeout_s.max(1));
            let got = self.lobby.take(crate::lobby::url_key(&self.url), limit, &self.stop).map(|d| (d, None));
            if got.is_none() {
                self.fail(format!(
                    "no publisher pushed this stream's key to the ingest lobby {} within {} s (live.connect_timeout_s)",
                    self.url, self.config.connect_timeout_s
                ));
            }
            return got;
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(self.config.connect_timeout_s.max(1));
        let idle_us = (self.config.idle_timeout_s.max(1) * 1_000_000).to_string();
        // The public port is the gate's; FFmpeg listens behind it (see
        // crate::ingest_gate): a connection that does not complete its RTMP
        // handshake within live.handshake_timeout_s never reaches FFmpeg.
        let Some((host, port)) = crate::ingest_gate::url_host_port(&self.url) else {
            self.fail(format!("the live stream's ingest URL {} names no host and port", panoptes_media::policy::redact(&self.url)));
            return None;
        };
        let handshake = std::time::Duration::from_secs(self.config.handshake_timeout_s.max(1));
        let gate = match crate::ingest_gate::Gate::start(&host, port, handshake, &format!("live slot {port}")) {
            Ok(g) => g,
            Err(e) => {
                self.fail(format!("cannot listen for the publisher on {host}:{port}: {e} (another program holds the port? live slot ports follow the worker's --listen port)"));
                return None;
            }
        };
        let listen_url = gate.internal_url(crate::ingest_gate::url_path(&self.url));
        info!(url = %panoptes_media::policy::redact(&self.url), connect_timeout_s = self.config.connect_timeout_s, handshake_timeout_s = self.config.handshake_timeout_s, "live: waiting for the publisher");
        let mut last_error: Option<String> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).as_secs().max(1).to_string();
            // `listen`: FFmpeg's RTMP server mode (one publisher, on this
            // port); `timeout`: how long to wait for it (s); `rw_timeout`: a
            // silent publisher ends the stream (µs).
            // `analyzeduration`/`probesize`: start decoding after half a
            // second of stream, not FFmpeg's default 5 s (those first frames
            // are kept, but would all arrive late at once).
            let options = [
                ("listen", "1"),
                ("timeout", left.as_str()),
                ("rw_timeout", idle_us.as_str()),
                ("analyzeduration", "500000"),
                ("probesize", "500000"),
            ];
            let opened = MediaDecoder::open_live(&listen_url, &options, self.stop.clone());
            // FFmpeg accepts any key in listen mode and only logs it.
            let wrong_key = MediaDecoder::take_wrong_stream_key();
            match (opened, wrong_key) {
                (Ok(dec), None) => return Some((dec, Some(gate))),
                (opened, Some(why)) if Instant::now() < deadline && !self.stop.load(Ordering::Relaxed) => {
                    drop(opened); // closes the publisher's connection
                    warn!(url = %panoptes_media::policy::redact(&self.url), ffmpeg = %why, "live: refused a publisher that pushed to another stream key; still waiting for this stream's publisher");
                }
                (Ok(_), Some(why)) | (Err(_), Some(why)) => {
                    self.fail(format!("only publishers with another stream key pushed to {} (ffmpeg: {why}); push to the URL `panoptes live` printed", self.url));
                    return None;
                }
                // A connection that was not a stream FFmpeg could open (a
                // port scan, a bare TCP connection, garbage, a handshake cut
                // short): it costs the job nothing; wait on for the publisher.
                (Err(e), None) if Instant::now() < deadline && !self.stop.load(Ordering::Relaxed) => {
                    warn!(url = %panoptes_media::policy::redact(&self.url), error = %e, "live: closed a connection that sent no stream this worker could read; still waiting for this stream's publisher");
                    last_error = Some(e.to_string());
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                (Err(e), None) => {
                    let e = e.to_string();
                    let also = last_error.filter(|l| *l != e).map(|l| format!(" (earlier connections: {l})")).unwrap_or_default();
                    self.fail(format!(
                        "no publisher pushed a stream to {} within {} s (live.connect_timeout_s), or it could not be read: {e}{also}",
                        self.url, self.config.connect_timeout_s
                    ));
                    return None;
                }
            }
        }
    }

    /// Fail the shard with `msg`, unless it is being stopped anyway.
    fn fail(&self, msg: String) {
        if !self.stop.load(Ordering::Relaxed) {
            let _ = self.decoder.send_message(DecoderMsg::Failed(msg));
        }
    }
}

/// A live job's frame timestamps across connections: each connection's
/// decoder counts from 0 at its first frame; the clock shifts them so they go
/// on from the previous connection's last frame plus the wall time between
/// the two (the gap shows as a jump). A shard resumed on this worker starts
/// at the coordinator's `resume_timestamp` (its committed results' last
/// timestamp plus the time since).
pub(super) struct StreamClock {
    offset: f64,
    /// The last frame's shifted timestamp, and when it was decoded.
    last: Option<(f64, Instant)>,
}

impl StreamClock {
    fn new(start: f64) -> Self {
        StreamClock { offset: start, last: None }
    }

    /// The shifted timestamp of a frame; `first` marks a connection's first frame.
    fn stamp(&mut self, ts: f64, first: bool) -> f64 {
        if first {
            if let Some((last, at)) = self.last {
                self.offset = last + at.elapsed().as_secs_f64() - ts;
            }
        }
        let t = ts + self.offset;
        self.last = Some((t, Instant::now()));
        t
    }
}

/// Consecutive read/decode errors after which a live stream is taken as ended.
pub(super) const LIVE_MAX_ERRORS: u32 = 10;

impl LiveIngest {
    pub(super) fn run(self) {
        let _g = self.span.enter();
        let mut next = self.resume;
        let mut clock = StreamClock::new(self.resume_timestamp);
        if self.pull {
            if !self.run_pull(&mut next, &mut clock) {
                return;
            }
        } else {
            // The gate lives as long as the stream is read.
            let Some((mut dec, _gate)) = self.accept() else { return };
            info!(url = %panoptes_media::policy::redact(&self.url), "live: publisher connected");
            // A publisher that stops, however, ends its stream: the job completes.
            if !matches!(self.read(&mut dec, &mut next, &mut clock), StreamEnd::Clean | StreamEnd::Dropped | StreamEnd::Silent) {
                return;
            }
        }
        if !self.stop.load(Ordering::Relaxed) {
            // The source actor ends the shard after the frames its gate holds.
            let _ = self.decoder.send_message(DecoderMsg::StreamEnded { next_frame: next });
        }
    }

    /// A pull source: open it, read it, and reopen it when it drops (with
    /// backoff, `live.reconnect_*`), numbering frames on from `next` so a
    /// reopened stream (or another worker resuming the shard) continues
    /// where committed results end. The rule for its end:
    /// - the source never opens within the attempts: the job fails;
    /// - it was read, then stopped (end of stream or a closed connection:
    ///   RTMP and RTSP players cannot tell them apart) and does not reopen
    ///   within the attempts: the stream is over, the job completes.
    ///
    /// True when the stream ended (the caller ends the shard); false when the
    /// shard failed (reported) or was stopped.
    fn run_pull(&self, next: &mut u64, clock: &mut StreamClock) -> bool {
        let r = self.config.reconnect;
        let idle_us = (self.config.idle_timeout_s.max(1) * 1_000_000).to_string();
        let gaps = panoptes_common::metrics::counter(LIVE_GAP_MS, &[("job_id", self.job_id.as_str())]);
        let reconnects = panoptes_common::metrics::counter(LIVE_RECONNECTS, &[("job_id", self.job_id.as_str())]);
        // `rw_timeout`: a silent source counts as dropped (µs; the media
        // crate passes it to RTSP as RTSP's own `timeout`).
        let options = [("rw_timeout", idle_us.as_str()), ("analyzeduration", "500000"), ("probesize", "500000")];
        let (mut failures, mut last_end, mut gone_since) = (0u32, None::<StreamEnd>, None::<Instant>);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            info!(url = %panoptes_media::policy::redact(&self.url), next_frame = *next, attempt = failures + 1, "live: opening the pull source");
            match MediaDecoder::open_live(&self.url, &options, self.stop.clone()) {
                Ok(mut dec) => {
                    failures = 0;
                    if let Some(t) = gone_since.take() {
                        let ms = t.elapsed().as_millis() as u64;
                        reconnects.inc();
                        gaps.inc_by(ms);
                        // And the job's own metrics (`panoptes metrics`), with the next report.
                        let _ = self.reporter.send_message(ReporterMsg::Reconnected { gap_ms: ms });
                        info!(url = %panoptes_media::policy::redact(&self.url), gap_ms = ms, next_frame = *next, "live: pull source reopened; frames continue");
                    }
                    let end = self.read(&mut dec, next, clock);
                    match end {
                        StreamEnd::Clean | StreamEnd::Dropped | StreamEnd::Silent => {
                            info!(url = %panoptes_media::policy::redact(&self.url), ?end, next_frame = *next, "live: the pull source ended; reopening it");
                            gone_since = Some(Instant::now());
                            last_end = Some(end);
                        }
                        StreamEnd::Stopped | StreamEnd::Gone => return false,
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures > r.attempts {
                        return match last_end {
                            // It went silent (no data for idle_timeout_s: a
                            // camera or network that died) and stayed away.
                            Some(StreamEnd::Silent) => {
                                self.fail(format!(
                                    "the pull source {} went silent after frame {} (no data for {} s, live.idle_timeout_s) and could not be reopened ({} attempts, live.reconnect_attempts): {e}; the frames before are kept; check the source",
                                    self.url,
                                    next.saturating_sub(1),
                                    self.config.idle_timeout_s,
                                    r.attempts + 1
                                ));
                                false
                            }
                            // Over RTMP (and RTSP) a server that finished its
                            // stream and one that died look the same to the
                            // player (the connection closes), so a source that
                            // was read, closed and does not come back is over.
                            Some(end) => {
                                info!(url = %panoptes_media::policy::redact(&self.url), ?end, attempts = r.attempts, error = %e, "live: the pull source stopped and did not come back; the stream is over");
                                true
                            }
                            None => {
                                let hint = if panoptes_media::device_source(&self.url).is_some() {
                                    "check the camera on that worker"
                                } else {
                                    "check that the stream is being served at that URL"
                                };
                                self.fail(format!(
                                    "cannot open the pull source {} ({} attempts, live.reconnect_attempts): {e}; {hint}",
                                    self.url,
                                    r.attempts + 1
                                ));
                                false
                            }
                        };
                    }
                    let wait = r.delay(failures);
                    debug!(url = %panoptes_media::policy::redact(&self.url), error = %e, wait_ms = wait.as_millis() as u64, "live: pull source not available; retrying");
                    // Sleep in short steps: a stopped shard does not wait out the backoff.
                    let until = Instant::now() + wait;
                    while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
                        std::thread::sleep(std::time::Duration::from_millis(20).min(until - Instant::now()));
                    }
                }
            }
        }
    }

    /// Read an opened stream until it ends, numbering its frames from `next`
    /// on (and leaving `next` after its last frame), timestamps by `clock`.
    fn read(&self, dec: &mut MediaDecoder, next: &mut u64, clock: &mut StreamClock) -> StreamEnd {
        let mut first = true;
        let base = *next;
        let mut errors = 0u32;
        let mut t = Instant::now();
        let mut input_ended = false;
        // Silent: the errors began after no packet for (about)
        // idle_timeout_s (rw_timeout), not right after data (a closed
        // connection). Both come from FFmpeg as the same I/O error.
        let idle = std::time::Duration::from_secs(self.config.idle_timeout_s.max(1)).mul_f64(0.9);
        let mut silent = false;
        let dropped = |silent: bool| if silent { StreamEnd::Silent } else { StreamEnd::Dropped };
        while !self.stop.load(Ordering::Relaxed) {
            match dec.next_frame() {
                Ok(Some(mut f)) => {
                    errors = 0;
                    let n = base + f.index;
                    *next = n + 1;
                    f.timestamp = clock.stamp(f.timestamp, std::mem::take(&mut first));
                    if n % self.step != 0 {
                        continue;
                    }
                    f.index = n;
                    let decode_s = t.elapsed().as_secs_f64();
                    t = Instant::now();
                    if self.decoder.send_message(DecoderMsg::Arrived { frame: f, decode_s, arrived: Instant::now() }).is_err() {
                        return StreamEnd::Gone;
                    }
                }
                Ok(None) if input_ended => return dropped(silent),
                Ok(None) => return StreamEnd::Clean,
                Err(e) => {
                    errors += 1;
                    if errors == 1 && !input_ended {
                        silent = dec.since_last_packet() >= idle;
                    }
                    if errors >= LIVE_MAX_ERRORS && input_ended {
                        return dropped(silent);
                    }
                    if errors >= LIVE_MAX_ERRORS {
                        input_ended = true;
                        // What a publisher closing its connection looks like in
                        // listen mode. The frames the decoder still holds
                        // (frame threading) come out after this.
                        info!(error = %e, "live: the stream cannot be read any more (closed, or silent for live.idle_timeout_s); ending it");
                        dec.end_input();
                        errors = 0;
                    }
                    debug!(error = %e, "live: read or decode error");
                }
            }
        }
        StreamEnd::Stopped
    }
}

/// How reading a live stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamEnd {
    /// End of stream, as the source sent it.
    Clean,
    /// Read errors right after data: a closed connection.
    Dropped,
    /// Read errors after no data for live.idle_timeout_s: a silent source.
    Silent,
    /// The shard is being stopped.
    Stopped,
    /// The pipeline is gone.
    Gone,
}

#[cfg(test)]
mod tests {
    use super::StreamClock;

    #[test]
    fn timestamps_go_on_across_connections() {
        let mut c = StreamClock::new(5.0);
        assert_eq!(c.stamp(0.0, true), 5.0, "a resumed shard starts at resume_timestamp");
        assert_eq!(c.stamp(0.04, false), 5.04);
        // A new connection counts from 0 again: shifted past the last frame.
        let t = c.stamp(0.0, true);
        assert!(t >= 5.04, "{t}");
        assert!((c.stamp(0.04, false) - t - 0.04).abs() < 1e-9);
        assert_eq!(StreamClock::new(0.0).stamp(1.5, true), 1.5, "a new stream keeps its own timestamps");
    }
}
