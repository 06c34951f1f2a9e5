//! The web page and the HTTP/JSON API of a coordinator.
//!
//! Every coordinator serves them on its own port (its gRPC port + 20000, or
//! a free one), over HTTPS with the coordinator's `security.tls_cert` and
//! `tls_key` when set (unless `security.web_plain_http`). The server is a gRPC client of the coordinators, its own
//! first and then the others (`panoptes_client::Client`), so
//! every route means exactly what the gRPC call it wraps means: same
//! validation, same forwarding to the leader. gRPC errors become JSON
//! `{"error": message}` with a status code ([`ApiError`]).
//!
//! The page (`/`) is one HTML file, one script and one stylesheet, embedded
//! in the binary: no build step. The API is described by `/api/openapi.json`
//! (hand-written, `assets/openapi.json`).
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use panoptes_proto::api as pb;
use panoptes_client::views::{is_finished, metrics_json, result_json, state_name, status_json};
use panoptes_client::{Authorization, Client};
use serde_json::{json, Value};
use tonic::Code;
use tracing::{info, warn};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const OPENAPI_JSON: &str = include_str!("../assets/openapi.json");

/// The web address for a coordinator serving gRPC on `grpc`: same host, port
/// + 20000 ([`panoptes_common::addresses::derived`]).
pub fn derived_http_addr(grpc: &SocketAddr) -> SocketAddr {
    panoptes_common::addresses::derived(grpc, panoptes_common::addresses::Derived::Web)
}

/// Where to dial a coordinator that listens on `listen`: a wildcard host
/// (0.0.0.0, [::]) is reached on loopback.
fn dial_addr(listen: &SocketAddr) -> SocketAddr {
    let mut a = *listen;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    a
}

/// The certificate chain and private key (PEM files) the web port serves
/// HTTPS with: the coordinator's `security.tls_cert` and `security.tls_key`.
#[derive(Clone, Debug)]
pub struct WebTls {
    pub cert: String,
    pub key: String,
}

/// Start the web UI of the coordinator that listens on `listen` (gRPC),
/// with `peers` (the other coordinators' addresses) to fail over to, over
/// HTTPS with `tls` when given. Logs "web UI on http://…/" (or https) and
/// returns the bound address; a failure is logged, not fatal: the
/// coordinator runs on without its web page.
pub async fn start(listen: &str, peers: Vec<String>, tls: Option<WebTls>, hosts: Vec<String>) -> Option<SocketAddr> {
    let grpc: SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(e) => {
            warn!(%listen, error = %e, "web UI not started: the listen address is not IP:PORT");
            return None;
        }
    };
    // With port 0 this coordinator's own port is unknown here: use the others.
    let mut coords: Vec<String> = Vec::new();
    if grpc.port() != 0 {
        coords.push(dial_addr(&grpc).to_string());
    }
    coords.extend(peers);
    if coords.is_empty() {
        warn!(%listen, "web UI not started: the coordinator listens on port 0 and has no peers to reach; give --listen HOST:PORT");
        return None;
    }
    let (served, scheme) = match &tls {
        Some(t) => (serve_tls(derived_http_addr(&grpc), coords, t, hosts).await, "https"),
        None => (serve(derived_http_addr(&grpc), coords, hosts).await, "http"),
    };
    match served {
        Ok(a) => {
            info!(addr = %a, "web UI on {scheme}://{a}/ (API: {scheme}://{a}/api/openapi.json)");
            Some(a)
        }
        Err(e) => {
            warn!(error = %e, "web UI not started");
            None
        }
    }
}

/// Serve the page and the API over plain HTTP on `http` (a free port on the
/// same host when it is taken), calling the coordinators at `coordinators`
/// (`HOST:PORT`, tried in order). Returns the bound address; serves until
/// the process ends. It answers requests for IP addresses, `localhost`,
/// this machine's host name and `hosts` ([`guard`]).
pub async fn serve(http: SocketAddr, coordinators: Vec<String>, hosts: Vec<String>) -> std::io::Result<SocketAddr> {
    serve_limited(http, coordinators, hosts, Limits::default()).await
}

pub use panoptes_common::http::Limits;

/// [`serve`] with other [`Limits`].
pub async fn serve_limited(http: SocketAddr, coordinators: Vec<String>, hosts: Vec<String>, limits: Limits) -> std::io::Result<SocketAddr> {
    let (listener, app) = bind(http, coordinators, hosts).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(panoptes_common::http::accept_loop(listener, app, None, limits, "web UI"));
    Ok(bound)
}

/// [`serve`] over HTTPS with the certificate chain and key in `tls` (no
/// client certificate asked for: browsers have none, tokens do the auth).
/// A bad certificate or key file is an error naming the file and its key.
pub async fn serve_tls(http: SocketAddr, coordinators: Vec<String>, tls: &WebTls, hosts: Vec<String>) -> std::io::Result<SocketAddr> {
    let acceptor = tls_acceptor(tls).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let (listener, app) = bind(http, coordinators, hosts).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(panoptes_common::http::accept_loop(listener, app, Some(acceptor), Limits::default(), "web UI"));
    Ok(bound)
}

/// The listener on `http` (or a free port on the same host) and the routes.
async fn bind(http: SocketAddr, coordinators: Vec<String>, hosts: Vec<String>) -> std::io::Result<(tokio::net::TcpListener, Router)> {
    let client = Client::new(&coordinators).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = panoptes_common::http::bind_or_free(http, "web").await?;
    let mut hosts: Vec<String> = hosts.iter().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        hosts.push(h.trim().to_ascii_lowercase());
    }
    let web = Web { client, seq: Arc::new(AtomicU64::new(0)), relays: Arc::default(), hosts: Arc::new(hosts) };
    tokio::spawn(relay::end_abandoned(web.relays.clone()));
    Ok((listener, router(web)))
}

/// The rustls server (ring provider, TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1
/// by ALPN, no client certificates) for the PEM files in `tls`.
fn tls_acceptor(tls: &WebTls) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate {} (security.tls_cert): {e}", tls.cert))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {} (security.tls_cert): expected PEM `CERTIFICATE` blocks", tls.cert));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| format!("cannot read the private key {} (security.tls_key): {e}", tls.key))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup for the web UI: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("invalid TLS certificate or key for the web UI ({} / {}; security.tls_cert, tls_key): {e}", tls.cert, tls.key))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// The routes. Paths follow `assets/openapi.json`.
pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/api/openapi.json", get(|| async { asset("application/json", OPENAPI_JSON) }))
        .route("/api/jobs", post(submit))
        .route("/api/jobs/{id}", get(status))
        .route("/api/jobs/{id}/results", get(results))
        .route("/api/jobs/{id}/results/stream", get(stream))
        .route("/api/jobs/{id}/frames/{n}", get(frame))
        .route("/api/jobs/{id}/metrics", get(metrics))
        .route("/api/videos", get(videos))
        .route("/api/models", get(models))
        .route("/api/live", post(live))
        .route("/api/live/{id}/media", post(live_media).delete(live_media_end))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route; the API is described at /api/openapi.json") })
        .layer(axum::middleware::from_fn_with_state(web.clone(), guard))
        .with_state(web)
}

/// The host a request names (`Host`, or the URI's authority over HTTP/2),
/// without its port.
fn request_host(req: &axum::extract::Request) -> Option<String> {
    let raw = match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok()?.to_string(),
        None => req.uri().authority()?.as_str().to_string(),
    };
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next()?.to_string()
    } else {
        raw.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or(raw)
    };
    Some(host.to_ascii_lowercase())
}

/// May a request for `host` be answered? IP addresses, `localhost` (and
/// names under it), and the names in `allowed`.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    host.parse::<std::net::IpAddr>().is_ok() || host == "localhost" || host.ends_with(".localhost") || allowed.iter().any(|a| a == host)
}

/// Before any route: a request must name a host this server answers to (a
/// page on another site that made its name resolve to this machine, DNS
/// rebinding, names its own), and a POST with a JSON body must say it is
/// JSON (a form on another site can post `text/plain` without asking; it
/// cannot post `application/json`). Browser recordings (`/media`) are
/// exempt from the second: they are not JSON.
async fn guard(State(web): State<Web>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let host = request_host(&req).unwrap_or_default();
    if !host_allowed(&host, &web.hosts) {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server does not answer for the host '{}': use its IP address or localhost, or add the name to security.web_hosts",
                host.chars().take(64).collect::<String>()
            ),
        )
        .into_response();
    }
    if req.method() == axum::http::Method::POST && !req.uri().path().ends_with("/media") {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"))
            .unwrap_or(false);
        if !json {
            return ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "the body must be JSON sent with Content-Type: application/json").into_response();
        }
    }
    next.run(req).await
}

/// The server's state: the coordinators to call.
#[derive(Clone)]
pub struct Web {
    client: Client,
    /// Makes each submission's idempotency key unique within this process.
    seq: Arc<AtomicU64>,
    /// Browser streams being relayed to their live job's RTMP URL, by job id.
    relays: relay::Relays,
    /// Host names answered besides IP addresses and localhost ([`guard`]).
    hosts: Arc<Vec<String>>,
}

/// The browser's credentials for one HTTP request: its `Authorization`
/// header, passed through unchanged to every gRPC call made for that request
/// (the coordinator checks it). Never stored beyond the request, never logged.
#[derive(Clone, Default)]
pub struct Caller(Authorization);

impl Caller {
    /// The caller's `authorization`, for the gRPC calls made for it.
    fn auth(&self) -> Authorization {
        self.0.clone()
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        // A header that cannot be gRPC metadata is dropped: the call is then
        // refused as unauthenticated, which is the right answer for it.
        let v = parts.headers.get(header::AUTHORIZATION).and_then(|h| tonic::metadata::MetadataValue::try_from(h.as_bytes()).ok());
        Ok(Caller(Authorization::from_header(v)))
    }
}

/// One call of the cluster's API ([`Client`]), made with the HTTP
/// caller's credentials, its error as an [`ApiError`].
macro_rules! rpc {
    ($web:expr, $caller:expr, $method:ident, $req:expr) => {{
        $web.client.with_auth($caller.auth()).$method($req).await.map_err(ApiError::from)
    }};
}

/// An error answer: `{"error": message}` with its status code.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        let status = match s.code() {
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            // No or an unknown token / a user token on an admin call / over the rate limit.
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unknown if transport_failure(&s) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match s.code() {
            // The coordinators could not be reached at all (a transport error)…
            Code::Unavailable | Code::Unknown if transport_failure(&s) => {
                format!("no coordinator reachable, retry in a moment (is one running?): {}", s.message())
            }
            // …or one answered that it cannot serve this now (no leader, no free worker…): its message says why.
            Code::Unavailable => s.message().to_string(),
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::Unimplemented => s.message().to_string(),
            Code::Unauthenticated => format!("{} (send `Authorization: Bearer TOKEN`; see docs/SECURITY.md)", s.message()),
            Code::PermissionDenied | Code::ResourceExhausted => s.message().to_string(),
            c => format!("{c:?}: {}", s.message()),
        };
        Self::new(status, message)
    }
}

/// A failure to reach a coordinator, not an answer from one.
fn transport_failure(s: &tonic::Status) -> bool {
    let m = s.message().to_ascii_lowercase();
    m.contains("transport") || m.contains("connect") || m.contains("connection")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &json!({ "error": self.message }))
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

type ApiResult = Result<Response, ApiError>;

/// The body of `POST /api/jobs` or `POST /api/live`, as a JSON object.
fn parse_object(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("the body is not valid JSON: {e}"))),
    }
}

fn opt_string(m: &serde_json::Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(ApiError::bad_request(format!("'{key}' must be a string, not {v}"))),
    }
}

/// `models`: a list of names, or one comma-separated string.
fn models_of(m: &serde_json::Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let names: Vec<String> = match m.get("models") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| ApiError::bad_request(format!("'models' must list names (strings), not {v}"))))
            .collect::<Result<_, _>>()?,
        Some(v) => Err(ApiError::bad_request(format!("'models' must be a list of names, not {v}")))?,
    };
    Ok(names)
}

/// `frame_step`: an integer (the coordinator refuses negative ones; 0 or
/// absent means every frame).
fn frame_step_of(m: &serde_json::Map<String, Value>) -> Result<i64, ApiError> {
    match m.get("frame_step") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_i64().ok_or_else(|| ApiError::bad_request(format!("'frame_step' must be an integer (1 = every frame), not {v}"))),
    }
}

/// A boolean member of a request body; false when absent.
fn opt_bool(m: &serde_json::Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(v) => v.as_bool().ok_or_else(|| ApiError::bad_request(format!("'{key}' must be true or false, not {v}"))),
    }
}

/// `POST /api/jobs` `{source, name?, models, frame_step?, no_frames?, pictures_every?, keep?, keep_what?, request_id?}` → 201 `{job_id}`.
async fn submit(State(web): State<Web>, caller: Caller, body: Bytes) -> ApiResult {
    let m = parse_object(&body)?;
    let no_frames = opt_bool(&m, "no_frames")?;
    let mut request_id = opt_string(&m, "request_id")?;
    if request_id.is_empty() {
        // Unique per submission: failover retries of this one call reuse it.
        let n = web.seq.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        request_id = format!("web-{}-{now}-{n}", std::process::id());
    }
    let req = pb::SubmitRequest {
        source: opt_string(&m, "source")?.trim().to_string(),
        models: models_of(&m)?,
        frame_step: frame_step_of(&m)?,
        name: opt_string(&m, "name")?.trim().to_string(),
        request_id,
        target_height: 0,
        no_frames,
        keep: opt_string(&m, "keep")?,
        keep_what: opt_string(&m, "keep_what")?,
        pictures_every: opt_string(&m, "pictures_every")?,
    };
    let r = rpc!(web, caller, submit, req)?;
    Ok(json_response(StatusCode::CREATED, &json!({ "job_id": r.job_id })))
}

/// `GET /api/jobs/{id}`: the job's status.
async fn status(State(web): State<Web>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    let s = rpc!(web, caller, status, pb::JobRef { job_id: id })?;
    Ok(json_response(StatusCode::OK, &status_json(&s)))
}

/// `GET /api/jobs/{id}/results`: every committed result so far, as JSON
/// lines (`application/x-ndjson`, one `{frame,timestamp,model,results}` per
/// line, ordered by frame then model), streamed as they are read.
async fn results(State(web): State<Web>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    let req = pb::ResultsRequest { job_id: id, has_frame: false, frame: 0, model: String::new(), follow: false, ..Default::default() };
    let stream = rpc!(web, caller, stream_results, req)?;
    let lines = stream.map(|r| match r {
        Ok(fr) => Ok(Bytes::from(format!("{}\n", result_json(&fr)))),
        // Cuts the body short: the client sees an incomplete response.
        Err(s) => Err(std::io::Error::other(format!("results stream broke: {}", s.message()))),
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

/// `GET /api/jobs/{id}/results/stream`: server-sent events until the job ends.
/// `status` (the job's status, first and whenever it changes), `result`
/// (one model's results on one frame, as they commit), `end` (the final
/// status; the server then closes) and `failure` (`{error}`, the stream broke).
async fn stream(State(web): State<Web>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    // Unknown ids answer 404 here, before any event.
    let first = rpc!(web, caller, status, pb::JobRef { job_id: id.clone() })?;
    let req = pb::ResultsRequest { job_id: id.clone(), has_frame: false, frame: 0, model: String::new(), follow: true, ..Default::default() };
    let mut results = rpc!(web, caller, stream_results, req)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let ev = |name: &str, v: &Value| Event::default().event(name).data(v.to_string());
        let mut last = status_json(&first);
        if tx.send(ev("status", &last)).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                // The browser went away: stop, and end the results stream
                // (dropped with this task) on the coordinator.
                _ = tx.closed() => return,
                m = results.message() => match m {
                    Ok(Some(fr)) => {
                        if tx.send(ev("result", &result_json(&fr))).await.is_err() {
                            return; // the browser went away
                        }
                    }
                    // The stream ends when the job does.
                    Ok(None) => break,
                    Err(s) => {
                        let _ = tx.send(ev("failure", &json!({ "error": ApiError::from(s).message }))).await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    if let Ok(s) = rpc!(web, caller, status, pb::JobRef { job_id: id.clone() }) {
                        let v = status_json(&s);
                        if v != last {
                            last = v;
                            if tx.send(ev("status", &last)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
        // The final status (the results stream ended with the job).
        let end = match rpc!(web, caller, status, pb::JobRef { job_id: id.clone() }) {
            Ok(s) if is_finished(&s) => status_json(&s),
            _ => last,
        };
        let _ = tx.send(ev("end", &end)).await;
    });
    let events = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// `GET /api/jobs/{id}/frames/{n}`: one frame's results (a JSON array, one
/// entry per model); `GET /api/jobs/{id}/frames/{n}.png`: the stored frame
/// drawn with its results; `?nearest=1`: the nearest frame with a stored
/// picture when frame n has none (header `x-frame` says which was drawn).
async fn frame(State(web): State<Web>, caller: Caller, Path((id, n)): Path<(String, String)>, RawQuery(query): RawQuery) -> ApiResult {
    let (num, png) = match n.strip_suffix(".png") {
        Some(x) => (x, true),
        None => (n.as_str(), false),
    };
    let frame: u64 = num.parse().map_err(|_| ApiError::bad_request(format!("frame '{num}' is not a frame number (0, 1, 2, ...)")))?;
    let nearest = match query.as_deref().unwrap_or("") {
        "" => false,
        "nearest=1" | "nearest=true" => true,
        "nearest=0" | "nearest=false" => false,
        q => return Err(ApiError::bad_request(format!("unknown query '{}': the only one is nearest=1", q.chars().take(64).collect::<String>()))),
    };
    let req = pb::FrameRef { job_id: id, frame, nearest };
    if png {
        let f = rpc!(web, caller, annotated_frame, req)?;
        let mut resp = ([(header::CONTENT_TYPE, "image/png")], f.png).into_response();
        let h = resp.headers_mut();
        // Committed frames never change (until pruned).
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
        h.insert("x-frame", HeaderValue::from(f.frame));
        for (k, v) in [("x-frame-width", f.width), ("x-frame-height", f.height), ("x-analysed-width", f.analysed_width), ("x-analysed-height", f.analysed_height)] {
            h.insert(k, HeaderValue::from(v));
        }
        return Ok(resp);
    }
    let r = rpc!(web, caller, frame_results, req)?;
    Ok(json_response(StatusCode::OK, &Value::Array(r.results.iter().map(result_json).collect())))
}

/// `GET /api/jobs/{id}/metrics`: timings and counters (`panoptes metrics --json`).
async fn metrics(State(web): State<Web>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    let m = rpc!(web, caller, metrics, pb::JobRef { job_id: id })?;
    Ok(json_response(StatusCode::OK, &metrics_json(&m)))
}

/// `GET /api/videos`: finished jobs, newest first.
async fn videos(State(web): State<Web>, caller: Caller) -> ApiResult {
    let r = rpc!(web, caller, videos, pb::ListVideosRequest { limit: 0 })?;
    let v: Vec<Value> = r
        .videos
        .iter()
        .map(|v| json!({"job_id": v.job_id, "name": v.name, "source": v.source, "state": state_name(v.state), "frames": v.frames, "finished_at_ms": v.finished_at_ms}))
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(v)))
}

/// `GET /api/models`: the cluster's model registry.
async fn models(State(web): State<Web>, caller: Caller) -> ApiResult {
    let r = rpc!(web, caller, models, pb::ListModelsRequest {})?;
    let v: Vec<Value> = r.models.iter().map(|m| json!({"name": m.name, "family": m.family, "files": m.files})).collect();
    Ok(json_response(StatusCode::OK, &Value::Array(v)))
}

/// `POST /api/live` `{models, name?, frame_step?, keep?, keep_what?, pictures_every?, no_frames?}` → 201 `{job_id, rtmp_url}`.
async fn live(State(web): State<Web>, caller: Caller, body: Bytes) -> ApiResult {
    let m = parse_object(&body)?;
    let req = pb::LiveRequest {
        models: models_of(&m)?,
        name: opt_string(&m, "name")?,
        frame_step: frame_step_of(&m)?,
        keep: opt_string(&m, "keep")?,
        keep_what: opt_string(&m, "keep_what")?,
        pictures_every: opt_string(&m, "pictures_every")?,
        no_frames: opt_bool(&m, "no_frames")?,
    };
    let r = rpc!(web, caller, create_live, req)?;
    Ok(json_response(StatusCode::CREATED, &json!({ "job_id": r.job_id, "rtmp_url": r.rtmp_url })))
}

/// `POST /api/live/{id}/media`: the next piece of a browser recording
/// (MediaRecorder's WebM, pieces in order) for live job `id`, relayed to the
/// job's RTMP URL by an FFmpeg publisher → 202 `{bytes}` (relayed so far).
/// Only the job's owner (or an admin) may publish: every piece is checked
/// with the caller's token, since the coordinators show the push URL whole
/// to them only. Each relay has a lock of its own, held while a piece is
/// written; the map of relays is locked only to find or add one.
async fn live_media(State(web): State<Web>, caller: Caller, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let s = rpc!(web, caller, status, pb::JobRef { job_id: id.clone() })?;
    if !s.live {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("job {id} is not a live job; create one with POST /api/live")));
    }
    may_publish(&id, &s)?;
    let slot = web.relays.lock().expect("relays lock").entry(id.clone()).or_default().clone();
    let mut relay = slot.lock().await;
    if relay.is_none() {
        if is_finished(&s) {
            return Err(ApiError::new(StatusCode::CONFLICT, format!("live job {id} is {}; create a new one with POST /api/live", state_name(s.state))));
        }
        *relay = Some(relay::Relay::start(&id, &s.source).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?);
    }
    match relay.as_mut().expect("started above").push(body).await {
        Ok(total) => Ok(json_response(StatusCode::ACCEPTED, &json!({ "bytes": total }))),
        Err(e) => {
            relay.take();
            drop(relay);
            relay::forget(&web.relays, &id, &slot);
            Err(ApiError::new(StatusCode::BAD_GATEWAY, e))
        }
    }
}

/// Refuse a caller who may not publish into live job `id`: the coordinators
/// showed it the job's push URL with the stream key hidden.
fn may_publish(id: &str, s: &pb::JobStatus) -> Result<(), ApiError> {
    if s.source.contains("***") || s.push_url.contains("***") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("only the owner of live job {id} (the token that created it) or an admin may publish into it"),
        ));
    }
    Ok(())
}

/// `DELETE /api/live/{id}/media`: the recording ended; the publisher
/// finishes sending and stops (the worker then ends the live job).
async fn live_media_end(State(web): State<Web>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    // Only a caller the coordinators accept, and who may publish, may end a relay.
    let s = rpc!(web, caller, status, pb::JobRef { job_id: id.clone() })?;
    may_publish(&id, &s)?;
    let slot = web.relays.lock().expect("relays lock").remove(&id);
    let r = match slot {
        Some(slot) => slot.lock().await.take(),
        None => None,
    };
    let Some(r) = r else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no browser stream is being relayed for job {id}")));
    };
    let total = r.finish().await;
    Ok(json_response(StatusCode::OK, &json!({ "bytes": total })))
}

mod relay {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_port_is_grpc_port_plus_20000_or_free() {
        assert_eq!(derived_http_addr(&"127.0.0.1:7400".parse().unwrap()), "127.0.0.1:27400".parse().unwrap());
        assert_eq!(derived_http_addr(&"127.0.0.1:50000".parse().unwrap()).port(), 0);
        assert_eq!(derived_http_addr(&"127.0.0.1:0".parse().unwrap()).port(), 0);
        assert_eq!(dial_addr(&"0.0.0.0:7400".parse().unwrap()), "127.0.0.1:7400".parse().unwrap());
    }

    #[test]
    fn grpc_codes_map_to_http_statuses() {
        let cases = [
            (Code::InvalidArgument, 400),
            (Code::NotFound, 404),
            (Code::FailedPrecondition, 409),
            (Code::Unimplemented, 501),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::Internal, 500),
        ];
        for (code, http) in cases {
            assert_eq!(ApiError::from(tonic::Status::new(code, "x")).status.as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn submit_bodies_are_checked() {
        let m = |s: &str| serde_json::from_str::<serde_json::Map<String, Value>>(s).unwrap();
        assert_eq!(models_of(&m(r#"{"models":"objects, colors"}"#)).unwrap(), ["objects", "colors"]);
        assert_eq!(models_of(&m(r#"{"models":["joy"]}"#)).unwrap(), ["joy"]);
        assert!(models_of(&m(r#"{"models":[1]}"#)).is_err());
        assert_eq!(frame_step_of(&m(r#"{}"#)).unwrap(), 0);
        assert!(frame_step_of(&m(r#"{"frame_step":"two"}"#)).is_err());
        assert!(parse_object(&Bytes::from_static(b"[1]")).is_err());
    }

    #[test]
    fn the_openapi_description_is_json_and_names_every_route() {
        let v: Value = serde_json::from_str(OPENAPI_JSON).expect("assets/openapi.json is JSON");
        assert!(v["openapi"].as_str().unwrap().starts_with("3."));
        for p in [
            "/api/jobs",
            "/api/jobs/{id}",
            "/api/jobs/{id}/results",
            "/api/jobs/{id}/results/stream",
            "/api/jobs/{id}/frames/{n}",
            "/api/jobs/{id}/frames/{n}.png",
            "/api/jobs/{id}/metrics",
            "/api/videos",
            "/api/models",
            "/api/live",
            "/api/live/{id}/media",
            "/api/openapi.json",
        ] {
            assert!(v["paths"].get(p).is_some(), "{p} missing from openapi.json");
        }
    }
}
