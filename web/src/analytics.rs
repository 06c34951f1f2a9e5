//! A job's analytics over HTTP (issue 18): its alerts (`ListAlerts`), its
//! results in windows of stream time and its tracked objects, computed here
//! from its committed results by the same code as `panoptes stats` and
//! `panoptes tracks` (`panoptes_common::windows`, `::tracking`).
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use panoptes_client::views::alert_json;
use panoptes_common::tracking::TrackBook;
use panoptes_common::windows::{WindowSpec, Windower};
use panoptes_proto::api as pb;
use serde_json::{json, Value};

use crate::error::{json_response, ApiError, ApiResult};
use crate::state::{rpc, Caller, Web};

/// `?a=1&b=2` as pairs; only the keys in `known` are accepted.
fn query<'a>(raw: &'a Option<String>, known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, ApiError> {
    let mut out = Vec::new();
    for pair in raw.as_deref().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !known.contains(&k) {
            return Err(ApiError::bad_request(format!("unknown query '{}': use {}", k.chars().take(64).collect::<String>(), known.join(", "))));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// `POST /api/jobs/{id}/zones` `{zone}` → 200 with the job's status (`AddZone`).
pub(crate) async fn add_zone(State(web): State<Web>, caller: Caller, Path(id): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let m = crate::body::parse_object(&body)?;
    let zone = crate::body::opt_string(&m, "zone")?;
    if zone.trim().is_empty() {
        return Err(ApiError::bad_request("give the zone: {\"zone\": \"door=0.6,0.2,0.9,0.2,0.9,1,0.6,1\"}"));
    }
    let s = rpc!(web, caller, add_zone, pb::AddZoneRequest { job_id: id, zone })?;
    Ok(json_response(StatusCode::OK, &panoptes_client::views::status_json(&s)))
}

/// `from_frame=N`: only frames from N on (the recent part of a long stream).
fn from_frame(v: Option<&str>) -> Result<u64, ApiError> {
    v.map(|v| v.parse::<u64>().map_err(|_| ApiError::bad_request(format!("from_frame={v}: give a frame number (0 or more)")))).transpose().map(|f| f.unwrap_or(0))
}

fn alerts_json(r: &pb::AlertsResponse) -> Value {
    json!({ "alerts": r.alerts.iter().map(alert_json).collect::<Vec<_>>(), "dropped": r.dropped })
}

/// `GET /api/jobs/{id}/alerts`: `{alerts:[{id,job_id,seq,rule,frame,time,since,detail}], dropped}`.
pub(crate) async fn job_alerts(State(web): State<Web>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    let r = rpc!(web, caller, alerts, pb::AlertsRequest { job_id: id })?;
    Ok(json_response(StatusCode::OK, &alerts_json(&r)))
}

/// `GET /api/alerts`: every job's alerts, by job, oldest first.
pub(crate) async fn all_alerts(State(web): State<Web>, caller: Caller) -> ApiResult {
    let r = rpc!(web, caller, alerts, pb::AlertsRequest { job_id: String::new() })?;
    Ok(json_response(StatusCode::OK, &alerts_json(&r)))
}

/// `GET /api/jobs/{id}/stats?window=5s&slide=1s&model=M`: `{windows:[...]}`,
/// each as `panoptes stats --json` prints it (window 5s by default).
pub(crate) async fn stats(State(web): State<Web>, caller: Caller, Path(id): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, &["window", "slide", "model", "from_frame"])?;
    let get = |k: &str| q.iter().find(|(x, _)| *x == k).map(|(_, v)| *v);
    let ms = |k: &str, v: &str| panoptes_common::parse_interval_ms(v).map_err(|e| ApiError::bad_request(format!("{k}={v}: {e}")));
    let size = ms("window", get("window").unwrap_or("5s"))?;
    let slide = get("slide").map(|s| ms("slide", s)).transpose()?;
    let spec = WindowSpec::new(size, slide).map_err(ApiError::bad_request)?;
    let from_frame = from_frame(get("from_frame"))?;
    let req = pb::ResultsRequest { job_id: id, model: get("model").unwrap_or("").to_string(), from_frame, ..Default::default() };
    let mut stream = rpc!(web, caller, stream_results, req)?;
    let mut w = Windower::new(spec);
    while let Some(r) = stream.message().await.map_err(ApiError::from)? {
        w.add(r.frame, r.timestamp, &r.model, &serde_json::from_str(&r.results_json).unwrap_or(Value::Null));
    }
    let windows = w.finish();
    Ok(json_response(StatusCode::OK, &json!({ "windows": windows.iter().map(|x| x.to_json()).collect::<Vec<_>>() })))
}

/// `GET /api/jobs/{id}/tracks?model=objects`: `{tracks:[...]}`, each as
/// `panoptes tracks --json` prints it (gathered from the results' `track_id`s).
pub(crate) async fn tracks(State(web): State<Web>, caller: Caller, Path(id): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, &["model", "from_frame"])?;
    let get = |k: &str| q.iter().find(|(x, _)| *x == k).map(|(_, v)| *v);
    let model = get("model").unwrap_or("objects").to_string();
    let req = pb::ResultsRequest { job_id: id, model, from_frame: from_frame(get("from_frame"))?, ..Default::default() };
    let mut stream = rpc!(web, caller, stream_results, req)?;
    let mut t = TrackBook::default();
    while let Some(r) = stream.message().await.map_err(ApiError::from)? {
        let results: Value = serde_json::from_str(&r.results_json).unwrap_or(Value::Null);
        t.add(r.frame, r.timestamp, &results);
    }
    Ok(json_response(StatusCode::OK, &json!({ "tracks": t.finish().iter().map(|x| x.to_json()).collect::<Vec<_>>() })))
}
