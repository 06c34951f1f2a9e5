//! Process metrics in the Prometheus text format, and the small HTTP endpoint
//! every node serves them on (`GET /metrics`, plus `GET /healthz`).
//!
//! The registry is process-global and lock-light: counters and gauges are
//! atomics found by name and labels once, histograms have fixed buckets.
//! Values that live elsewhere (Raft term, queue lengths) are read at scrape
//! time through [`set_collector`].
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

type Key = (String, Vec<(String, String)>);

#[derive(Default)]
struct Registry {
    counters: Mutex<BTreeMap<Key, Arc<AtomicU64>>>,
    gauges: Mutex<BTreeMap<Key, Arc<Gauge>>>,
    histograms: Mutex<BTreeMap<Key, Arc<Histogram>>>,
    help: Mutex<BTreeMap<String, (&'static str, &'static str)>>,
    collector: Mutex<Option<Arc<dyn Fn() -> Vec<Sample> + Send + Sync>>>,
}

fn reg() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    (name.to_string(), labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// Document a metric (`kind` is `counter`, `gauge` or `histogram`).
pub fn describe(name: &str, kind: &'static str, help: &'static str) {
    reg().help.lock().unwrap().insert(name.to_string(), (kind, help));
}

/// A monotonically increasing count.
pub fn counter(name: &str, labels: &[(&str, &str)]) -> Arc<AtomicU64> {
    reg().counters.lock().unwrap().entry(key(name, labels)).or_default().clone()
}

pub fn inc(name: &str, labels: &[(&str, &str)], by: u64) {
    counter(name, labels).fetch_add(by, Ordering::Relaxed);
}

/// A value that goes up and down (an f64 stored as bits in an atomic).
#[derive(Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// Add `d` (negative to subtract), atomically with other adders.
    pub fn add(&self, d: f64) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some((f64::from_bits(b) + d).to_bits()));
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// The gauge `name` with these labels (created at 0).
pub fn gauge(name: &str, labels: &[(&str, &str)]) -> Arc<Gauge> {
    reg().gauges.lock().unwrap().entry(key(name, labels)).or_default().clone()
}

pub fn set_gauge(name: &str, labels: &[(&str, &str)], v: f64) {
    gauge(name, labels).set(v);
}

/// One owner's part of a gauge summed over many owners (e.g. a queue length
/// summed over a worker's shards). Setting it moves the gauge by the change;
/// dropping it takes the part back out, so an owner that stops or crashes
/// never leaves its last value behind.
pub struct GaugeShare {
    gauge: Arc<Gauge>,
    mine: f64,
}

impl GaugeShare {
    pub fn new(gauge: Arc<Gauge>) -> Self {
        GaugeShare { gauge, mine: 0.0 }
    }

    pub fn set(&mut self, v: f64) {
        if v != self.mine {
            self.gauge.add(v - self.mine);
            self.mine = v;
        }
    }
}

impl Drop for GaugeShare {
    fn drop(&mut self) {
        self.gauge.add(-self.mine);
    }
}

/// Latency buckets in seconds: 1 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in microseconds (integer, so it can be atomic).
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if seconds <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add((seconds.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// A latency histogram (seconds, [`LATENCY_BUCKETS`]).
pub fn histogram(name: &str, labels: &[(&str, &str)]) -> Arc<Histogram> {
    reg()
        .histograms
        .lock()
        .unwrap()
        .entry(key(name, labels))
        .or_insert_with(|| {
            Arc::new(Histogram {
                bounds: LATENCY_BUCKETS,
                buckets: LATENCY_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
                count: AtomicU64::new(0),
                sum_us: AtomicU64::new(0),
            })
        })
        .clone()
}

pub fn observe(name: &str, labels: &[(&str, &str)], seconds: f64) {
    histogram(name, labels).observe(seconds);
}

/// A value computed at scrape time.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub kind: &'static str,
    pub help: &'static str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn gauge(name: &str, help: &'static str, labels: &[(&str, &str)], value: f64) -> Sample {
        let (name, labels) = key(name, labels);
        Sample { name, kind: "gauge", help, labels, value }
    }
}

/// Install the function that reports scrape-time values (one per process).
pub fn set_collector(f: impl Fn() -> Vec<Sample> + Send + Sync + 'static) {
    *reg().collector.lock().unwrap() = Some(Arc::new(f));
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels_text(labels: &[(String, String)], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

/// Everything, in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    let r = reg();
    let help = r.help.lock().unwrap().clone();
    let mut out = String::new();
    let mut headed = std::collections::BTreeSet::new();
    let mut head = |out: &mut String, name: &str, kind: &str, fallback: &str| {
        if headed.insert(name.to_string()) {
            let (k, h) = help.get(name).copied().unwrap_or((kind_static(kind), ""));
            let h = if h.is_empty() { fallback } else { h };
            let _ = writeln!(out, "# HELP {name} {h}");
            let _ = writeln!(out, "# TYPE {name} {k}");
        }
    };
    for ((name, labels), v) in r.counters.lock().unwrap().iter() {
        head(&mut out, name, "counter", name);
        let _ = writeln!(out, "{name}{} {}", labels_text(labels, None), v.load(Ordering::Relaxed));
    }
    for ((name, labels), v) in r.gauges.lock().unwrap().iter() {
        head(&mut out, name, "gauge", name);
        let _ = writeln!(out, "{name}{} {}", labels_text(labels, None), num(v.get()));
    }
    for ((name, labels), h) in r.histograms.lock().unwrap().iter() {
        head(&mut out, name, "histogram", name);
        for (i, b) in h.bounds.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{} {}", labels_text(labels, Some(("le", num(*b)))), h.buckets[i].load(Ordering::Relaxed));
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{} {count}", labels_text(labels, Some(("le", "+Inf".into()))));
        let _ = writeln!(out, "{name}_sum{} {}", labels_text(labels, None), h.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{} {count}", labels_text(labels, None));
    }
    let collector = r.collector.lock().unwrap().clone();
    if let Some(c) = collector {
        for s in c() {
            head(&mut out, &s.name, s.kind, s.help);
            let _ = writeln!(out, "{}{} {}", s.name, labels_text(&s.labels, None), num(s.value));
        }
    }
    out
}

fn kind_static(kind: &str) -> &'static str {
    match kind {
        "counter" => "counter",
        "histogram" => "histogram",
        _ => "gauge",
    }
}

/// Where a node's HTTP endpoint listens when not configured: the node's own
/// port + 10000 on the same host (7001 → 17001), so that nodes differing only
/// in `--listen` never collide; a free port (0) when that one is taken, out
/// of range, or when the node itself listens on "any free port" (port 0).
pub fn derived_http_addr(listen: &SocketAddr) -> SocketAddr {
    let mut a = *listen;
    let port = if listen.port() == 0 { 0 } else { listen.port().checked_add(10000).unwrap_or(0) };
    a.set_port(port);
    a
}

/// Serve `GET /metrics` and `GET /healthz` on `addr` (falling back to a free
/// port on the same host when `addr` is taken). Returns the bound address;
/// the server runs until the process ends. `healthy` answers /healthz.
pub async fn serve(addr: SocketAddr, healthy: Arc<dyn Fn() -> bool + Send + Sync>) -> std::io::Result<SocketAddr> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            let mut any = addr;
            any.set_port(0);
            warn!(%addr, error = %e, "metrics port taken; using a free one");
            tokio::net::TcpListener::bind(any).await?
        }
    };
    let bound = listener.local_addr()?;
    info!(addr = %bound, "serving /metrics and /healthz over HTTP");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, peer)) = listener.accept().await else { continue };
            let healthy = healthy.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                // Read the request head (bounded: 4 KiB, 5 s).
                let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                    while n < buf.len() {
                        match sock.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => n += k,
                        }
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                })
                .await;
                if read.is_err() {
                    return;
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let method = head.split_whitespace().next().unwrap_or("");
                let (status, ctype, body) = match (method, path) {
                    ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", render()),
                    ("GET", "/healthz") if healthy() => ("200 OK", "text/plain", "ok\n".to_string()),
                    ("GET", "/healthz") => ("503 Service Unavailable", "text/plain", "not serving\n".to_string()),
                    ("GET", _) => ("404 Not Found", "text/plain", "try /metrics or /healthz\n".to_string()),
                    _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_string()),
                };
                debug!(%peer, path, status, "http");
                let resp = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_histograms_and_collected_values() {
        describe("t_frames_total", "counter", "Frames analysed.");
        inc("t_frames_total", &[("model", "objects")], 3);
        inc("t_frames_total", &[("model", "objects")], 2);
        set_gauge("t_depth", &[], 4.0);
        observe("t_latency_seconds", &[("model", "colors")], 0.003);
        observe("t_latency_seconds", &[("model", "colors")], 0.2);
        set_collector(|| vec![Sample::gauge("t_raft_term", "Current term.", &[], 7.0)]);
        let text = render();
        assert!(text.contains("# TYPE t_frames_total counter"), "{text}");
        assert!(text.contains("# HELP t_frames_total Frames analysed."), "{text}");
        assert!(text.contains("t_frames_total{model=\"objects\"} 5"), "{text}");
        assert!(text.contains("t_depth 4"), "{text}");
        assert!(text.contains("t_latency_seconds_bucket{model=\"colors\",le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("t_latency_seconds_bucket{model=\"colors\",le=\"0.25\"} 2"), "{text}");
        assert!(text.contains("t_latency_seconds_bucket{model=\"colors\",le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("t_latency_seconds_count{model=\"colors\"} 2"), "{text}");
        assert!(text.contains("t_raft_term 7"), "{text}");
    }

    #[tokio::test]
    async fn serves_metrics_and_health_over_http() {
        inc("t_http_total", &[], 1);
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::new(|| true)).await.unwrap();
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let m = get("/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200 OK") && m.contains("t_http_total 1"), "{m}");
        assert!(get("/healthz").await.ends_with("ok\n"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn the_http_port_is_derived_from_the_listen_port() {
        assert_eq!(derived_http_addr(&"127.0.0.1:7001".parse().unwrap()), "127.0.0.1:17001".parse().unwrap());
        assert_eq!(derived_http_addr(&"127.0.0.1:60000".parse().unwrap()).port(), 0);
        assert_eq!(derived_http_addr(&"127.0.0.1:0".parse().unwrap()).port(), 0);
    }

    #[test]
    fn gauge_shares_add_up_and_are_withdrawn_when_dropped() {
        let g = gauge("t_queue_frames", &[("model", "m")]);
        let mut a = GaugeShare::new(g.clone());
        let mut b = GaugeShare::new(g.clone());
        a.set(3.0);
        b.set(2.0);
        assert_eq!(g.get(), 5.0);
        a.set(1.0);
        assert_eq!(g.get(), 3.0);
        drop(b);
        assert_eq!(g.get(), 1.0);
        drop(a);
        assert_eq!(g.get(), 0.0);
        assert!(render().contains("t_queue_frames{model=\"m\"} 0"));
    }
}
