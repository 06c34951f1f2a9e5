//! A browser's recording, relayed to a live job's RTMP URL by the FFmpeg
//! CLI (`ffmpeg -f webm -i pipe:0 … -f flv rtmp://…`): a browser cannot
//! speak RTMP. The worker only listens once it holds the job's lease, so
//! a publisher that stops early is started again and given the whole
//! recording so far (kept up to [`MAX_REPLAY`] bytes).
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Mutex;
use tracing::{info, warn};

const MAX_REPLAY: usize = 64 << 20;
/// A browser that sent nothing for this long has gone (its recorder sends every 500 ms).
const ABANDONED: Duration = Duration::from_secs(30);

/// One relay's slot: its own lock, held while a piece is written
/// (`None` once it ended).
pub type Slot = Arc<Mutex<Option<Relay>>>;
/// The relays by job id. The map's lock is never held across an await.
pub type Relays = Arc<std::sync::Mutex<HashMap<String, Slot>>>;

/// Remove `id`'s entry if it is still `slot` (not a newer relay).
pub fn forget(relays: &Relays, id: &str, slot: &Slot) {
    let mut map = relays.lock().expect("relays lock");
    if map.get(id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
        map.remove(id);
    }
}

/// End the relays of browsers that went away without saying so. A relay
/// busy writing a piece is not abandoned: it is skipped this round.
pub async fn end_abandoned(relays: Relays) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let slots: Vec<(String, Slot)> = relays.lock().expect("relays lock").iter().map(|(id, s)| (id.clone(), s.clone())).collect();
        for (id, slot) in slots {
            let gone = match slot.try_lock() {
                Ok(mut r) if r.as_ref().is_some_and(|r| r.last_push.elapsed() > ABANDONED) => r.take(),
                _ => None,
            };
            if let Some(r) = gone {
                forget(&relays, &id, &slot);
                warn!(job_id = %r.job, "the browser stopped sending its live stream; ending it");
                r.finish().await;
            }
        }
    }
}
const MAX_STARTS: u32 = 20;

pub struct Relay {
    job: String,
    url: String,
    child: Child,
    stdin: Option<ChildStdin>,
    kept: Vec<Bytes>,
    kept_bytes: usize,
    total: usize,
    starts: u32,
    last_push: Instant,
}

fn spawn(job: &str, url: &str) -> Result<(Child, ChildStdin), String> {
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-f", "webm", "-i", "pipe:0", "-an"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p", "-g", "25", "-f", "flv"])
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start ffmpeg to relay the stream (install FFmpeg's command-line tool): {e}"))?;
    let stdin = child.stdin.take().expect("piped stdin");
    if let Some(err) = child.stderr.take() {
        let job = job.to_string();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                warn!(job_id = %job, "live relay ffmpeg: {l}");
            }
        });
    }
    Ok((child, stdin))
}

impl Relay {
    pub fn start(job: &str, url: &str) -> Result<Relay, String> {
        let (child, stdin) = spawn(job, url)?;
        // Not the URL: it carries the stream key.
        info!(job_id = %job, "relaying a browser stream to its live job");
        Ok(Relay { job: job.into(), url: url.into(), child, stdin: Some(stdin), kept: Vec::new(), kept_bytes: 0, total: 0, starts: 1, last_push: Instant::now() })
    }

    /// Send the next piece; returns the bytes received so far.
    pub async fn push(&mut self, chunk: Bytes) -> Result<usize, String> {
        self.last_push = Instant::now();
        self.total += chunk.len();
        let replayable = self.kept_bytes + chunk.len() <= MAX_REPLAY;
        if replayable {
            self.kept_bytes += chunk.len();
            self.kept.push(chunk.clone());
        }
        let alive = matches!(self.child.try_wait(), Ok(None));
        let written = alive && self.stdin.as_mut().expect("open until finish").write_all(&chunk).await.is_ok();
        if written {
            return Ok(self.total);
        }
        // The publisher stopped: most likely the worker was not listening yet.
        loop {
            if !replayable || self.starts >= MAX_STARTS {
                let st = self.child.try_wait().ok().flatten();
                return Err(format!("the relay to {} stopped ({st:?}) after {} attempts; is the live job's worker running?", self.url, self.starts));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (child, mut stdin) = spawn(&self.job, &self.url)?;
            self.child = child;
            self.starts += 1;
            let mut ok = true;
            for piece in &self.kept {
                if stdin.write_all(piece).await.is_err() {
                    ok = false;
                    break;
                }
            }
            self.stdin = Some(stdin);
            if ok {
                return Ok(self.total);
            }
        }
    }

    /// Close the publisher's input and let it finish (at most 10 s).
    pub async fn finish(mut self) -> usize {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
        info!(job_id = %self.job, bytes = self.total, "browser stream ended");
        self.total
    }
}
