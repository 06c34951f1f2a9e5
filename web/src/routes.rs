//! The routes: the embedded page and its assets, the API's paths, and the
//! guard every request passes first (host names, JSON content type).
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::{frame, metrics, models, results, status, stream, submit, videos};
use crate::error::ApiError;
use crate::live::{live, live_media, live_media_end};
use crate::state::Web;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const OPENAPI_JSON: &str = include_str!("../assets/openapi.json");

/// The routes. Paths follow `assets/openapi.json`.
pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/dashboard.js", get(|| async { asset("text/javascript; charset=utf-8", DASHBOARD_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/api/openapi.json", get(|| async { asset("application/json", OPENAPI_JSON) }))
        .route("/api/jobs", post(submit))
        .route("/api/jobs/{id}", get(status))
        .route("/api/jobs/{id}/results", get(results))
        .route("/api/jobs/{id}/results/stream", get(stream))
        .route("/api/jobs/{id}/frames/{n}", get(frame))
        .route("/api/jobs/{id}/metrics", get(metrics))
        .route("/api/jobs/{id}/alerts", get(crate::analytics::job_alerts))
        .route("/api/jobs/{id}/stats", get(crate::analytics::stats))
        .route("/api/jobs/{id}/tracks", get(crate::analytics::tracks))
        .route("/api/jobs/{id}/zones", post(crate::analytics::add_zone))
        .route("/api/alerts", get(crate::analytics::all_alerts))
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
pub(crate) async fn guard(State(web): State<Web>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
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

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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
            "/api/jobs/{id}/alerts",
            "/api/jobs/{id}/stats",
            "/api/jobs/{id}/tracks",
            "/api/alerts",
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
