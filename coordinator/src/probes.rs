//! Probes run on threads of their own: a small fixed set of threads, never
//! tokio's blocking pool, which the Raft log's flushes (sled) and the Raft
//! service use. A probe can wait on its source for as long as
//! `sources.probe_timeout_s`; on the blocking pool, many such probes would
//! hold threads that the log's flushes need. Each probe is stopped at its
//! deadline inside FFmpeg (`panoptes_media::probe_within`), so a pool thread
//! is held at most that long, even by a source that trickles bytes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use panoptes_media::policy::redact;
use panoptes_media::ProbeInfo;

/// Probes that run at once on a coordinator (while it leads); more wait
/// their turn.
pub const PROBE_THREADS: usize = 4;

/// How long past its deadline a probe's answer is awaited, for what FFmpeg's
/// interrupt callback cannot stop (a host name lookup, a stalled disk).
const GRACE: Duration = Duration::from_secs(30);

type Task = Box<dyn FnOnce() + Send>;

/// A fixed set of threads (`probe-0`, `probe-1`, …) that run probes.
pub struct ProbePool {
    tasks: mpsc::Sender<Task>,
}

impl ProbePool {
    /// A pool of `threads` threads (at least one); they end when the pool
    /// is dropped and their current probe is over.
    pub fn new(threads: usize) -> std::io::Result<ProbePool> {
        let (tasks, queue) = mpsc::channel::<Task>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("probe-{i}")).spawn(move || loop {
                let task = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                match task {
                    Ok(task) => task(),
                    Err(_) => return, // the pool is gone
                }
            })?;
        }
        Ok(ProbePool { tasks })
    }

    /// Probe `source` on a thread of the pool; it must finish within
    /// `limit` once started (waiting for a free thread does not count).
    /// `Err` is the job's error, naming the source (redacted).
    pub async fn probe(&self, source: &str, limit: Duration) -> Result<ProbeInfo, String> {
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let src = source.to_string();
        let task: Task = Box::new(move || {
            let _ = started_tx.send(());
            let probed = catch_unwind(AssertUnwindSafe(|| panoptes_media::probe_within(&src, &[], limit)));
            let _ = done_tx.send(probed);
        });
        let name = redact(source);
        let gone = || format!("probing '{name}' failed: the coordinator's probe threads are gone");
        self.tasks.send(task).map_err(|_| gone())?;
        started.await.map_err(|_| gone())?;
        match tokio::time::timeout(limit + GRACE, done).await {
            Ok(Ok(Ok(probed))) => probed.map_err(|e| e.to_string()),
            Ok(Ok(Err(panic))) => {
                let why = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
                Err(format!("probing '{name}' crashed: {why}"))
            }
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(format!("probing '{name}' took longer than {} s", (limit + GRACE).as_secs())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    /// An HTTP server on 127.0.0.1 that answers with headers and then a
    /// byte a second (each byte comes well within any read timeout), for up
    /// to a minute or until the client goes away.
    fn trickling_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/slow.mp4", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut [0u8; 4096]);
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: 100000000\r\n\r\n");
            for _ in 0..60 {
                if s.write_all(b"\0").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        url
    }

    /// A probe of a source that trickles a byte a second neither holds a
    /// thread of tokio's blocking pool (before, it ran there: with one
    /// blocking thread, nothing else blocking ran until it was over) nor
    /// outlives its deadline (before, nothing stopped FFmpeg: each byte
    /// came within its read timeout).
    #[test]
    fn a_trickling_source_holds_no_blocking_thread_and_stops_at_the_deadline() {
        let url = trickling_server();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).max_blocking_threads(1).enable_all().build().unwrap();
        rt.block_on(async {
            let pool = ProbePool::new(1).unwrap();
            let t0 = Instant::now();
            let probe = tokio::spawn(async move { pool.probe(&url, Duration::from_secs(3)).await });
            tokio::time::sleep(Duration::from_millis(500)).await;
            // What the Raft log's flushes use is free while the probe runs.
            tokio::time::timeout(Duration::from_secs(2), tokio::task::spawn_blocking(|| ()))
                .await
                .expect("the blocking pool's only thread is held by the probe")
                .unwrap();
            // Bounded by the server's minute of trickling.
            let e = tokio::time::timeout(Duration::from_secs(50), probe)
                .await
                .expect("the probe did not stop at its deadline")
                .unwrap()
                .expect_err("a trickling source probed fine");
            assert!(e.starts_with("'http://127.0.0.1:") && e.contains("': the source sent too little data in 3 s: "), "{e}");
            assert!(e.contains("sources.probe_timeout_s"), "{e}");
            assert!(t0.elapsed() >= Duration::from_secs(3), "the probe gave up before its deadline");
        });
    }

    /// Probes wait for the pool's thread in turn, and each gets its answer.
    #[test]
    fn probes_queue_for_the_pools_threads() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let pool = ProbePool::new(1).unwrap();
            for _ in 0..3 {
                let e = pool.probe("/no/such/video.mp4", Duration::from_secs(5)).await.unwrap_err();
                assert!(e.contains("No such file or directory"), "{e}");
            }
        });
    }
}
