//! Process metrics in the Prometheus text format, and the small HTTP endpoint
//! every node serves them on (`GET /metrics`, plus `GET /healthz`).
//!
//! The registry and the exposition are the `prometheus-client` crate's; this
//! module only finds a series by name and labels (so the code that counts
//! needs no registry handle), keeps the help texts, and adds values read at
//! scrape time ([`set_collector`]). Handles are cheap clones of an atomic:
//! the per-frame path looks one up once and then only touches it.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::{header, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use tracing::info;

/// A monotonically increasing count.
pub type Counter = prometheus_client::metrics::counter::Counter<u64>;
/// A value that goes up and down.
pub type Gauge = prometheus_client::metrics::gauge::Gauge<f64, AtomicU64>;
/// A latency histogram (seconds, [`LATENCY_BUCKETS`]).
pub use prometheus_client::metrics::histogram::Histogram;

type Labels = Vec<(String, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

#[derive(Default)]
struct Families {
    counters: BTreeMap<String, Family<Labels, Counter>>,
    gauges: BTreeMap<String, Family<Labels, Gauge>>,
    histograms: BTreeMap<String, Histograms>,
    help: BTreeMap<String, &'static str>,
}

type CollectFn = Arc<dyn Fn() -> Vec<Sample> + Send + Sync>;

#[derive(Default)]
struct Registry {
    families: Mutex<Families>,
    collector: Mutex<Option<CollectFn>>,
}

fn reg() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

fn labels(labels: &[(&str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Document a metric. `kind` (`counter`, `gauge` or `histogram`) says what
/// the name is for the reader; the series' own type is the function that
/// creates it.
pub fn describe(name: &str, _kind: &'static str, help: &'static str) {
    reg().families.lock().unwrap().help.insert(name.to_string(), help);
}

/// The counter `name` with these labels (created at 0).
pub fn counter(name: &str, l: &[(&str, &str)]) -> Counter {
    let family = reg().families.lock().unwrap().counters.entry(name.to_string()).or_default().clone();
    family.get_or_create_owned(&labels(l))
}

pub fn inc(name: &str, l: &[(&str, &str)], by: u64) {
    counter(name, l).inc_by(by);
}

/// The gauge `name` with these labels (created at 0).
pub fn gauge(name: &str, l: &[(&str, &str)]) -> Gauge {
    let family = reg().families.lock().unwrap().gauges.entry(name.to_string()).or_default().clone();
    family.get_or_create_owned(&labels(l))
}

pub fn set_gauge(name: &str, l: &[(&str, &str)], v: f64) {
    gauge(name, l).set(v);
}

/// One owner's part of a gauge summed over many owners (e.g. a queue length
/// summed over a worker's shards). Setting it moves the gauge by the change;
/// dropping it takes the part back out, so an owner that stops or crashes
/// never leaves its last value behind.
pub struct GaugeShare {
    gauge: Gauge,
    mine: f64,
}

impl GaugeShare {
    pub fn new(gauge: Gauge) -> Self {
        GaugeShare { gauge, mine: 0.0 }
    }

    pub fn set(&mut self, v: f64) {
        if v != self.mine {
            self.gauge.inc_by(v - self.mine);
            self.mine = v;
        }
    }
}

impl Drop for GaugeShare {
    fn drop(&mut self) {
        self.gauge.inc_by(-self.mine);
    }
}

/// Latency buckets in seconds: 1 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

/// The latency histogram `name` with these labels.
pub fn histogram(name: &str, l: &[(&str, &str)]) -> Histogram {
    let family = reg()
        .families
        .lock()
        .unwrap()
        .histograms
        .entry(name.to_string())
        .or_insert_with(|| Family::new_with_constructor(latency_histogram as fn() -> Histogram))
        .clone();
    family.get_or_create_owned(&labels(l))
}

pub fn observe(name: &str, l: &[(&str, &str)], seconds: f64) {
    histogram(name, l).observe(seconds);
}

/// A value computed at scrape time (always a gauge).
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub help: &'static str,
    pub labels: Labels,
    pub value: f64,
}

impl Sample {
    pub fn gauge(name: &str, help: &'static str, l: &[(&str, &str)], value: f64) -> Sample {
        Sample { name: name.to_string(), help, labels: labels(l), value }
    }
}

/// Install the function that reports scrape-time values (one per process).
pub fn set_collector(f: impl Fn() -> Vec<Sample> + Send + Sync + 'static) {
    *reg().collector.lock().unwrap() = Some(Arc::new(f));
}

/// Our families and scrape-time samples, as prometheus-client's registry
/// asks a collector for them on every scrape.
#[derive(Debug)]
struct Exposition;

impl prometheus_client::collector::Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (counters, gauges, histograms, help) = {
            let f = reg().families.lock().unwrap();
            (f.counters.clone(), f.gauges.clone(), f.histograms.clone(), f.help.clone())
        };
        let help_of = |name: &str| help.get(name).copied().unwrap_or("");
        for (name, family) in &counters {
            // The encoder appends the counter's `_total` itself.
            let bare = name.strip_suffix("_total").unwrap_or(name);
            family.encode(enc.encode_descriptor(bare, help_of(name), None, MetricType::Counter)?)?;
        }
        for (name, family) in &gauges {
            family.encode(enc.encode_descriptor(name, help_of(name), None, MetricType::Gauge)?)?;
        }
        for (name, family) in &histograms {
            family.encode(enc.encode_descriptor(name, help_of(name), None, MetricType::Histogram)?)?;
        }
        let collector = reg().collector.lock().unwrap().clone();
        let mut samples = collector.map(|c| c()).unwrap_or_default();
        samples.sort_by(|a, b| a.name.cmp(&b.name));
        for group in samples.chunk_by(|a, b| a.name == b.name) {
            let mut m = enc.encode_descriptor(&group[0].name, group[0].help, None, MetricType::Gauge)?;
            for s in group {
                ConstGauge::new(s.value).encode(m.encode_family(&s.labels)?)?;
            }
        }
        Ok(())
    }
}

/// Everything, in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    static EXPOSITION: OnceLock<prometheus_client::registry::Registry> = OnceLock::new();
    let registry = EXPOSITION.get_or_init(|| {
        let mut r = prometheus_client::registry::Registry::default();
        r.register_collector(Box::new(Exposition));
        r
    });
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in
    // a label, and a scrape with what was written is better than none.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// Where a node serves `/metrics` when not configured: its listen port +
/// 10000 on the same host ([`crate::addresses::derived`]).
pub fn derived_http_addr(listen: &SocketAddr) -> SocketAddr {
    crate::addresses::derived(listen, crate::addresses::Derived::Metrics)
}

/// Serve `GET /metrics` and `GET /healthz` on `addr` (falling back to a free
/// port on the same host when `addr` is taken). Returns the bound address;
/// the server runs until the process ends. `healthy` answers /healthz.
pub async fn serve(addr: SocketAddr, healthy: Arc<dyn Fn() -> bool + Send + Sync>) -> std::io::Result<SocketAddr> {
    let listener = crate::http::bind_or_free(addr, "metrics").await?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, "serving /metrics and /healthz over HTTP");
    let app = axum::Router::new()
        .route("/metrics", get(|| async { ([(header::CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)], render()) }))
        .route(
            "/healthz",
            get(move || async move {
                if healthy() {
                    (StatusCode::OK, "ok\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
                }
            }),
        )
        .fallback(|method: Method| async move {
            if method == Method::GET {
                (StatusCode::NOT_FOUND, "try /metrics or /healthz\n").into_response()
            } else {
                (StatusCode::METHOD_NOT_ALLOWED, "GET only\n").into_response()
            }
        });
    let limits = crate::http::Limits { max_connections: 64, header_read_timeout: std::time::Duration::from_secs(5) };
    tokio::spawn(crate::http::accept_loop(listener, app, None, limits, "metrics"));
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let m = get("/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200 OK") && m.contains("t_http_total 1"), "{m}");
        assert!(get("/healthz").await.ends_with("ok\n"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        assert!(get("/healthz").await.contains("text/plain"));
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
