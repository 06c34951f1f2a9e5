//! The worker's RTMP ingest lobby: one port (right after its live slot
//! ports, [`panoptes_common::lobby_port`]) where a publisher resumes a live
//! stream whose worker was lost, by pushing with the same stream key.
//!
//! A thread listens there with FFmpeg's RTMP listen mode under a fixed
//! stream name; FFmpeg accepts any publisher and logs the key it named
//! ("Unexpected stream KEY, expecting ..."), which is how the key is read.
//! The open connection is parked here, under its key, and the lobby's actor
//! ([`LobbyActor`]) asks the coordinator to move the stream to this worker
//! (`ResumeLive`): it agrees once the lost worker's lease has expired
//! (asked again every 500 ms until then, within live.connect_timeout_s),
//! refuses unknown and ended keys. The listening thread only accepts and
//! parks; the actor does the asking, without blocking a thread. The stream's
//! shard is then leased to this worker with the lobby URL as its source, and
//! its ingest thread takes the parked connection ([`take`]) instead of
//! listening: frames are numbered on from the committed cursor.
//!
//! While one publisher is being set up (FFmpeg reads the start of its
//! stream), the lobby does not accept another: that one's connection is
//! refused and it retries.
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use panoptes_media::Decoder as MediaDecoder;
use tracing::{info, warn};

/// The stream name the lobby listens for; publishers name their stream's key instead.
const LOBBY_NAME: &str = "panoptes-lobby";

/// How long a parked connection waits for its shard's ingest thread once
/// the coordinator moved the stream here.
const PARK_LIMIT: Duration = Duration::from_secs(30);

/// A parked connection's link to the stop flag of the shard that takes it:
/// its decoder's FFmpeg reads give up when the lobby or that shard stops.
type Link = Arc<OnceLock<Arc<AtomicBool>>>;

/// What the lobby shares with the worker's live shards: its port (0: not
/// listening) and the connections parked for streams moved here. One per
/// worker (not per process: several workers may run in one process).
#[derive(Default)]
pub struct Parked {
    port: AtomicU16,
    conns: Mutex<HashMap<String, (MediaDecoder, Link)>>,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked").field("port", &self.port.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// The stream key of a live URL (`rtmp://HOST:PORT/live/KEY`): its last path segment.
pub fn url_key(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or("")
}

impl Parked {
    /// Is `url` this worker's lobby (a stream resumed here, whose connection is parked)?
    pub fn is_lobby_url(&self, url: &str) -> bool {
        let port = self.port.load(Ordering::Relaxed);
        port != 0 && url_port(url) == Some(port)
    }

    /// Take the parked connection of the stream with `key`, waiting for it up to
    /// `limit` (a publisher may connect after the shard was leased here); `None`
    /// when none came or `stop` (the shard's stop flag) was set. From then on
    /// `stop` also interrupts the connection's blocking reads.
    pub fn take(&self, key: &str, limit: Duration, stop: &Arc<AtomicBool>) -> Option<MediaDecoder> {
        let until = Instant::now() + limit;
        loop {
            if let Some((d, link)) = self.conns.lock().unwrap().remove(key) {
                let _ = link.set(stop.clone());
                return Some(d);
            }
            if Instant::now() >= until || stop.load(Ordering::Relaxed) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The port of an `rtmp://HOST:PORT/...` URL.
pub fn url_port(url: &str) -> Option<u16> {
    crate::ingest_gate::url_host_port(url).map(|(_, port)| port)
}

/// The key a publisher named, from FFmpeg's "Unexpected stream KEY, expecting NAME".
pub fn key_from_ffmpeg(message: &str) -> Option<String> {
    let rest = &message[message.find("Unexpected stream ")? + "Unexpected stream ".len()..];
    let key = rest.split(", expecting").next()?.trim();
    let ok = !key.is_empty() && key.len() <= 128 && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    ok.then(|| key.to_string())
}

/// What the coordinator said to one request to resume a stream here.
pub enum Claim {
    /// The stream is this worker's now: its job.
    Moved(String),
    /// Refused for good (unknown or ended key): why.
    Refused(String),
    /// Not yet (another worker still holds it, or no coordinator answered): why.
    NotYet(String),
}

/// Asks the coordinator, once, to move the stream with key `.0` here, pushed at URL `.1`.
pub type Claimer = Arc<dyn Fn(String, String) -> Pin<Box<dyn Future<Output = Claim> + Send>> + Send + Sync>;

pub struct Lobby {
    pub host: String,
    pub port: u16,
    /// `[live]`: its timeouts apply to the lobby's connections.
    pub live: panoptes_common::config::LiveConfig,
    pub claim: Claimer,
    /// Asks the worker to lease now (the moved stream's shard).
    pub lease_now: Arc<dyn Fn() + Send + Sync>,
    pub stop: Arc<AtomicBool>,
    /// Shared with the worker's live shards.
    pub parked: Arc<Parked>,
}

/// The lobby's actor: resumes the streams whose publishers the listening
/// thread parked (see the module doc).
pub struct LobbyActor;

pub enum LobbyMsg {
    /// From the listening thread: a publisher pushed stream `key` at `url`;
    /// its connection is parked.
    Published { key: String, url: String },
    /// Ask the coordinator (again) to resume `key` here; give up at `deadline`.
    Claim { key: String, url: String, deadline: Instant },
    /// The stream `key` moved here `PARK_LIMIT` ago: its shard should have
    /// taken the parked connection by now.
    Taken { key: String, url: String, job: String },
}

impl ractor::Actor for LobbyActor {
    type Msg = LobbyMsg;
    type State = Arc<Lobby>;
    type Arguments = Arc<Lobby>;

    async fn pre_start(&self, _myself: ractor::ActorRef<LobbyMsg>, lobby: Arc<Lobby>) -> Result<Arc<Lobby>, ractor::ActorProcessingErr> {
        Ok(lobby)
    }

    async fn handle(&self, myself: ractor::ActorRef<LobbyMsg>, msg: LobbyMsg, me: &mut Arc<Lobby>) -> Result<(), ractor::ActorProcessingErr> {
        match msg {
            LobbyMsg::Published { key, url } => {
                let deadline = Instant::now() + Duration::from_secs(me.live.connect_timeout_s.max(1));
                let _ = myself.send_message(LobbyMsg::Claim { key, url, deadline });
            }
            LobbyMsg::Claim { key, url, deadline } => match (me.claim)(key.clone(), url.clone()).await {
                Claim::Moved(job) => {
                    info!(job_id = %job, url = %panoptes_media::policy::redact(&url), "live lobby: the stream resumes on this worker");
                    (me.lease_now)();
                    myself.send_after(PARK_LIMIT, move || LobbyMsg::Taken { key, url, job });
                }
                Claim::NotYet(why) if Instant::now() < deadline && !me.stop.load(Ordering::Relaxed) => {
                    info!(url = %panoptes_media::policy::redact(&url), reason = %why, "live lobby: cannot resume the stream yet; retrying");
                    myself.send_after(Duration::from_millis(500), move || LobbyMsg::Claim { key, url, deadline });
                }
                Claim::NotYet(why) => me.refuse(&key, &url, &format!("{why} (gave up after live.connect_timeout_s)")),
                Claim::Refused(why) => me.refuse(&key, &url, &why),
            },
            LobbyMsg::Taken { key, url, job } => {
                if me.parked.conns.lock().unwrap().remove(&key).is_some() {
                    warn!(job_id = %job, url = %panoptes_media::policy::redact(&url), "live lobby: the resumed stream's shard did not start here; closing its publisher");
                }
            }
        }
        Ok(())
    }
}

impl Lobby {
    /// `rtmp://HOST:PORT/live/`: push there with a stream key appended.
    pub fn url(&self) -> String {
        format!("rtmp://{}:{}/live/", self.host, self.port)
    }

    /// Start the lobby's actor, and its listening thread (until `stop` is
    /// set). The caller stops the actor.
    pub async fn spawn(self) -> anyhow::Result<ractor::ActorRef<LobbyMsg>> {
        self.parked.port.store(self.port, Ordering::Relaxed);
        let me = Arc::new(self);
        let (actor, _) = ractor::Actor::spawn(None, LobbyActor, me.clone()).await?;
        let to = actor.clone();
        std::thread::Builder::new().name("live-lobby".into()).spawn(move || Lobby::listen(me, to))?;
        Ok(actor)
    }

    /// A stream that cannot resume here: its publisher is closed.
    fn refuse(&self, key: &str, url: &str, why: &str) {
        self.parked.conns.lock().unwrap().remove(key);
        warn!(url = %panoptes_media::policy::redact(url), reason = %why, "live lobby: refused a publisher");
    }

    /// The listening thread: accept publishers, read the key each names,
    /// park its connection and tell the actor.
    fn listen(me: Arc<Lobby>, actor: ractor::ActorRef<LobbyMsg>) {
        let idle_us = (me.live.idle_timeout_s.max(1) * 1_000_000).to_string();
        // The public port is the gate's (see crate::ingest_gate): FFmpeg
        // listens behind it and sees only whole RTMP handshakes.
        let handshake = Duration::from_secs(me.live.handshake_timeout_s.max(1));
        let gate = loop {
            match crate::ingest_gate::Gate::start(&me.host, me.port, handshake, "ingest lobby") {
                Ok(g) => break g,
                Err(e) => {
                    warn!(url = %me.url(), error = %e, "live lobby: cannot listen; retrying in 1 s");
                    for _ in 0..10 {
                        if me.stop.load(Ordering::Relaxed) {
                            me.parked.port.store(0, Ordering::Relaxed);
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        };
        let listen = gate.internal_url(&format!("live/{LOBBY_NAME}"));
        let mut failures = 0u32;
        while !me.stop.load(Ordering::Relaxed) {
            // As a live slot's listen (see pipeline/decoder.rs), without a
            // connect timeout: the stop flag interrupts the wait.
            let options = [("listen", "1"), ("rw_timeout", idle_us.as_str()), ("analyzeduration", "500000"), ("probesize", "500000")];
            let link: Link = Arc::default();
            let (stop, shard_stop) = (me.stop.clone(), link.clone());
            let interrupted = move || stop.load(Ordering::Relaxed) || shard_stop.get().is_some_and(|s| s.load(Ordering::Relaxed));
            let opened = MediaDecoder::open_live_interruptible(&listen, &options, interrupted);
            let named = MediaDecoder::take_wrong_stream_key();
            let dec = match opened {
                Ok(d) => d,
                Err(e) => {
                    if me.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // A publisher that sent no stream, or the port is taken.
                    failures += 1;
                    warn!(url = %me.url(), error = %e, "live lobby: no stream from a publisher");
                    std::thread::sleep(Duration::from_millis(if failures > 3 { 1000 } else { 50 }));
                    continue;
                }
            };
            failures = 0;
            let Some(key) = named.as_deref().and_then(key_from_ffmpeg) else {
                warn!(url = %me.url(), "live lobby: refused a publisher that named no stream key; push to {}KEY", me.url());
                continue; // drops (closes) it
            };
            let url = format!("{}{key}", me.url());
            {
                let mut p = me.parked.conns.lock().unwrap();
                if p.contains_key(&key) {
                    warn!(url = %panoptes_media::policy::redact(&url), "live lobby: refused a second publisher of the same stream key");
                    continue;
                }
                p.insert(key.clone(), (dec, link));
            }
            info!(url = %panoptes_media::policy::redact(&url), "live lobby: a publisher pushed a stream key; asking the coordinator to resume its stream here");
            if actor.send_message(LobbyMsg::Published { key, url }).is_err() {
                break; // the worker is stopping
            }
        }
        me.parked.port.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_read_from_ffmpegs_message() {
        assert_eq!(key_from_ffmpeg("Unexpected stream 3f9a0c, expecting panoptes-lobby").as_deref(), Some("3f9a0c"));
        assert_eq!(key_from_ffmpeg("[rtmp @ 0x55] Unexpected stream ab_c-1.x, expecting panoptes-lobby").as_deref(), Some("ab_c-1.x"));
        assert_eq!(key_from_ffmpeg("Unexpected stream , expecting x"), None);
        assert_eq!(key_from_ffmpeg("Unexpected stream a/b, expecting x"), None);
        assert_eq!(key_from_ffmpeg("something else"), None);
    }

    #[test]
    fn urls_give_their_key_and_port() {
        assert_eq!(url_key("rtmp://127.0.0.1:7403/live/abc"), "abc");
        assert_eq!(url_port("rtmp://127.0.0.1:7403/live/abc"), Some(7403));
        assert_eq!(url_port("rtmp://host/live/abc"), None);
        // A worker's own lobby, not another's in the same process.
        let (mine, other) = (Parked::default(), Parked::default());
        assert!(!mine.is_lobby_url("rtmp://127.0.0.1:0/live/abc"), "not listening: nothing is the lobby");
        mine.port.store(7403, Ordering::Relaxed);
        assert!(mine.is_lobby_url("rtmp://127.0.0.1:7403/live/abc"));
        assert!(!mine.is_lobby_url("rtmp://127.0.0.1:7404/live/abc"));
        assert!(!other.is_lobby_url("rtmp://127.0.0.1:7403/live/abc"));
        let stop = Arc::new(AtomicBool::new(false));
        assert!(mine.take("abc", Duration::from_millis(60), &stop).is_none(), "nothing parked");
    }
}
