//! The handshake gate in front of an RTMP ingest port (a live slot's or the
//! ingest lobby's).
//!
//! FFmpeg's RTMP listen mode accepts one connection and then waits on it for
//! as long as its read timeout (`live.idle_timeout_s`): a connection that
//! sends nothing, or trickles its handshake, holds the port that long, and
//! the publisher who comes next is refused. So the public port is ours: this
//! gate accepts every connection, and passes one to FFmpeg (listening on
//! an internal port of 127.0.0.1) only once it has sent a whole RTMP
//! handshake (C0, C1 and C2: 3,073 bytes, version 3) within
//! `live.handshake_timeout_s`, counted from the accept, however slowly the
//! bytes come. Anything else is closed: at most [`MAX_PENDING`] connections
//! wait for their handshake at once, beyond that new ones are closed at once.
//! A passed connection is relayed both ways until either side closes; FFmpeg's
//! own read timeout then takes a publisher that goes silent.
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

/// RTMP handshake: C0 (the version byte), C1 and C2 (1,536 bytes each).
const C0_C1: usize = 1 + 1536;
const HANDSHAKE: usize = C0_C1 + 1536;
/// The only RTMP version (plain RTMP; 6 would be RTMPE, which FFmpeg's
/// listen mode does not serve).
const RTMP_VERSION: u8 = 3;
/// Connections waiting for their handshake at once, per gate.
pub const MAX_PENDING: usize = 32;
/// How long a connection that sent C0 and C1 waits for FFmpeg to listen on
/// the internal port (it listens again within moments of a refused try).
const INTERNAL_WAIT: Duration = Duration::from_secs(5);

/// One gate: the public port, relayed to FFmpeg's internal one. Dropping it
/// closes the public port and every connection it relays.
pub struct Gate {
    public: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    handshake: Duration,
    internal: SocketAddr,
    what: String,
    pending: AtomicUsize,
    /// Every socket the gate holds, to be shut down when it stops.
    open: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
}

impl Gate {
    /// Listen on `host:port` (the public ingest address), relaying to a free
    /// port of 127.0.0.1 where FFmpeg is to listen ([`Gate::internal_url`]).
    /// `what` names the port in logs ("live slot 7400", "ingest lobby").
    pub fn start(host: &str, port: u16, handshake: Duration, what: &str) -> std::io::Result<Gate> {
        let addr = (host, port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::new(ErrorKind::AddrNotAvailable, format!("{host} resolves to no address")))?;
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let public = listener.local_addr()?;
        // A free port for FFmpeg: it binds it itself (with SO_REUSEADDR) on
        // every listen; nothing else on this machine is handed it meanwhile
        // short of a race with another program binding port 0.
        let internal = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            handshake,
            internal,
            what: what.to_string(),
            pending: AtomicUsize::new(0),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("ingest-gate".into()).spawn(move || accept_loop(&s, listener))?;
        Ok(Gate { public, shared, thread: Some(thread) })
    }

    /// `rtmp://127.0.0.1:INTERNAL/PATH`: where FFmpeg listens behind the gate.
    pub fn internal_url(&self, path: &str) -> String {
        format!("rtmp://{}/{}", self.shared.internal, path.trim_start_matches('/'))
    }

    /// The public address (the port publishers push to).
    pub fn public(&self) -> SocketAddr {
        self.public
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.open.lock().unwrap_or_else(|e| e.into_inner()).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The host and port of an ingest URL (`rtmp://HOST:PORT/PATH`; an IPv6
/// host in brackets).
pub fn url_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((host.trim_start_matches('[').trim_end_matches(']').to_string(), port.parse().ok()?))
}

/// The `internal_url` path of a public ingest URL (`rtmp://HOST:PORT/PATH`).
pub fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("", |i| &rest[i + 1..])
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, peer)) => {
                if shared.pending.load(Ordering::SeqCst) >= MAX_PENDING {
                    debug!(port = %shared.what, %peer, "ingest gate: too many connections waiting for their handshake; closed this one");
                    continue;
                }
                shared.pending.fetch_add(1, Ordering::SeqCst);
                let s = shared.clone();
                let spawned = std::thread::Builder::new().name("ingest-conn".into()).spawn(move || {
                    serve(&s, conn, peer);
                });
                if spawned.is_err() {
                    shared.pending.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                warn!(port = %shared.what, error = %e, "ingest gate: accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A socket registered for shutdown at stop; unregistered when dropped.
struct Held<'a> {
    shared: &'a Shared,
    id: u64,
}

impl<'a> Held<'a> {
    fn new(shared: &'a Shared, s: &TcpStream) -> Option<Held<'a>> {
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        shared.open.lock().unwrap_or_else(|e| e.into_inner()).insert(id, s.try_clone().ok()?);
        // A stop that came before the insert did not see it.
        if shared.stop.load(Ordering::SeqCst) {
            let _ = s.shutdown(Shutdown::Both);
        }
        Some(Held { shared, id })
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.shared.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Read exactly `buf.len()` bytes before `deadline`.
fn read_until(conn: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        conn.set_read_timeout(Some(left))?;
        match conn.read(&mut buf[got..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Err(ErrorKind::TimedOut.into()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn serve(shared: &Shared, mut conn: TcpStream, peer: SocketAddr) {
    let pending = PendingGuard(&shared.pending);
    let Some(_held) = Held::new(shared, &conn) else { return };
    let deadline = Instant::now() + shared.handshake;
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_nodelay(true);
    let refuse = |why: &str| {
        warn!(port = %shared.what, %peer, "ingest gate: closed a connection that {why}; publishers push with an RTMP client (ffmpeg, OBS) to the URL `panoptes live` printed");
    };
    let mut start = [0u8; C0_C1];
    match read_until(&mut conn, &mut start, deadline) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::TimedOut => {
            return refuse(&format!("did not send an RTMP handshake within {} s (live.handshake_timeout_s)", shared.handshake.as_secs_f64()))
        }
        Err(_) => return refuse("closed before its RTMP handshake was complete"),
    }
    if start[0] != RTMP_VERSION {
        return refuse(&format!("is not plain RTMP (its first byte is 0x{:02x}, not 0x03)", start[0]));
    }
    // FFmpeg listens again moments after a connection it refused.
    let wait_until = Instant::now() + INTERNAL_WAIT;
    let mut ffmpeg = loop {
        match TcpStream::connect_timeout(&shared.internal, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < wait_until && !shared.stop.load(Ordering::SeqCst) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => return refuse("came while the stream already had its publisher (or the ingest was not listening)"),
        }
    };
    let Some(_held_ffmpeg) = Held::new(shared, &ffmpeg) else { return };
    let _ = ffmpeg.set_nodelay(true);
    if ffmpeg.write_all(&start).is_err() {
        return;
    }
    // FFmpeg to the publisher: S0, S1, S2, then the session's replies.
    let (Ok(mut from_ffmpeg), Ok(mut to_publisher)) = (ffmpeg.try_clone(), conn.try_clone()) else { return };
    let back = std::thread::Builder::new().name("ingest-back".into()).spawn(move || {
        let _ = std::io::copy(&mut from_ffmpeg, &mut to_publisher);
        let _ = to_publisher.shutdown(Shutdown::Both);
    });
    if back.is_err() {
        return;
    }
    // The rest of the handshake (C2) within the same deadline.
    let mut c2 = [0u8; HANDSHAKE - C0_C1];
    match read_until(&mut conn, &mut c2, deadline) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::TimedOut => {
            return refuse(&format!("did not complete its RTMP handshake within {} s (live.handshake_timeout_s)", shared.handshake.as_secs_f64()))
        }
        Err(_) => return,
    }
    if ffmpeg.write_all(&c2).is_err() {
        return;
    }
    drop(pending);
    debug!(port = %shared.what, %peer, "ingest gate: an RTMP handshake completed; relaying to FFmpeg");
    let _ = conn.set_read_timeout(None);
    let _ = std::io::copy(&mut conn, &mut ffmpeg);
    let _ = ffmpeg.shutdown(Shutdown::Both);
}

struct PendingGuard<'a>(&'a AtomicUsize);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_of_an_ingest_url() {
        assert_eq!(url_path("rtmp://0.0.0.0:7400/live/abc"), "live/abc");
        assert_eq!(url_path("rtmp://h:1/live/"), "live/");
        assert_eq!(url_path("rtmp://h:1"), "");
        assert_eq!(url_host_port("rtmp://0.0.0.0:7400/live/abc"), Some(("0.0.0.0".into(), 7400)));
        assert_eq!(url_host_port("rtmp://[::1]:7400/live/abc"), Some(("::1".into(), 7400)));
        assert_eq!(url_host_port("rtmp://h/live/abc"), None);
    }

    /// A stand-in for FFmpeg on the internal port: what reaches it.
    fn behind(gate: &Gate) -> std::sync::mpsc::Receiver<Vec<u8>> {
        let l = TcpListener::bind(gate.shared.internal).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            l.set_nonblocking(false).unwrap();
            if let Ok((mut s, _)) = l.accept() {
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut got = vec![0u8; HANDSHAKE + 4];
                let _ = s.write_all(b"S0S1S2");
                let mut n = 0;
                while n < got.len() {
                    match s.read(&mut got[n..]) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                }
                got.truncate(n);
                let _ = tx.send(got);
            }
        });
        rx
    }

    #[test]
    fn a_whole_handshake_is_relayed_both_ways() {
        let gate = Gate::start("127.0.0.1", 0, Duration::from_secs(5), "test").unwrap();
        let rx = behind(&gate);
        let mut c = TcpStream::connect(gate.public()).unwrap();
        let mut hs = vec![7u8; HANDSHAKE + 4];
        hs[0] = RTMP_VERSION;
        c.write_all(&hs).unwrap();
        let mut back = [0u8; 6];
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"S0S1S2");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), hs);
    }

    #[test]
    fn silence_trickles_and_other_protocols_are_closed_without_reaching_ffmpeg() {
        let gate = Gate::start("127.0.0.1", 0, Duration::from_millis(600), "test").unwrap();
        let rx = behind(&gate);
        let closed = |mut c: TcpStream| {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 1];
            matches!(c.read(&mut b), Ok(0) | Err(_))
        };
        // Silent.
        let silent = TcpStream::connect(gate.public()).unwrap();
        // A byte every 100 ms: never a whole handshake within 0.6 s.
        let mut trickle = TcpStream::connect(gate.public()).unwrap();
        let t = std::thread::spawn(move || {
            for _ in 0..20 {
                if trickle.write_all(&[RTMP_VERSION]).is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        });
        // HTTP on the ingest port.
        let mut http = TcpStream::connect(gate.public()).unwrap();
        http.write_all(&[b'G'; C0_C1]).unwrap();
        assert!(closed(silent));
        assert!(closed(http));
        assert!(t.join().unwrap(), "the trickling connection was not closed");
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "a connection reached FFmpeg's port");
        // And a real publisher after them still gets through.
        let mut c = TcpStream::connect(gate.public()).unwrap();
        let mut hs = vec![1u8; HANDSHAKE];
        hs[0] = RTMP_VERSION;
        c.write_all(&hs).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), hs);
    }
}
