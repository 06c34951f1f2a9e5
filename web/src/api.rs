//! The handlers of the JSON API for jobs, videos and models: submit, status,
//! results (whole, or as server-sent events), frames, metrics and the lists.
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures::StreamExt;
use panoptes_client::views::{is_finished, metrics_json, result_json, state_name, status_json};
use panoptes_proto::api as pb;
use serde_json::{json, Value};

use crate::body::{frame_step_of, models_of, opt_bool, opt_string, parse_object, rules_of, zones_of};
use crate::error::{json_response, ApiError, ApiResult};
use crate::state::{rpc, Caller, Web};

/// `POST /api/jobs` `{source, name?, models, frame_step?, no_frames?, pictures_every?, keep?, keep_what?, rules?, zones?, request_id?}` → 201 `{job_id}`.
pub(crate) async fn submit(State(web): State<Web>, caller: Caller, body: Bytes) -> ApiResult {
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
        rules: rules_of(&m)?,
        zones: zones_of(&m)?,
    };
    let r = rpc!(web, caller, submit, req)?;
    Ok(json_response(StatusCode::CREATED, &json!({ "job_id": r.job_id })))
}

/// `GET /api/jobs/{id}`: the job's status.
pub(crate) async fn status(State(web): State<Web>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    let s = rpc!(web, caller, status, pb::JobRef { job_id: id })?;
    Ok(json_response(StatusCode::OK, &status_json(&s)))
}

/// `GET /api/jobs/{id}/results`: every committed result so far, as JSON
/// lines (`application/x-ndjson`, one `{frame,timestamp,model,results}` per
/// line, ordered by frame then model), streamed as they are read.
pub(crate) async fn results(State(web): State<Web>, caller: Caller, Path(id): Path<String>) -> ApiResult {
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
pub(crate) async fn stream(State(web): State<Web>, caller: Caller, Path(id): Path<String>) -> ApiResult {
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
pub(crate) async fn frame(State(web): State<Web>, caller: Caller, Path((id, n)): Path<(String, String)>, RawQuery(query): RawQuery) -> ApiResult {
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
pub(crate) async fn metrics(State(web): State<Web>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    let m = rpc!(web, caller, metrics, pb::JobRef { job_id: id })?;
    Ok(json_response(StatusCode::OK, &metrics_json(&m)))
}

/// `GET /api/videos`: finished jobs, newest first.
pub(crate) async fn videos(State(web): State<Web>, caller: Caller) -> ApiResult {
    let r = rpc!(web, caller, videos, pb::ListVideosRequest { limit: 0 })?;
    let v: Vec<Value> = r
        .videos
        .iter()
        .map(|v| json!({"job_id": v.job_id, "name": v.name, "source": v.source, "state": state_name(v.state), "frames": v.frames, "finished_at_ms": v.finished_at_ms}))
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(v)))
}

/// `GET /api/models`: the cluster's model registry.
pub(crate) async fn models(State(web): State<Web>, caller: Caller) -> ApiResult {
    let r = rpc!(web, caller, models, pb::ListModelsRequest {})?;
    let v: Vec<Value> = r.models.iter().map(|m| json!({"name": m.name, "family": m.family, "files": m.files})).collect();
    Ok(json_response(StatusCode::OK, &Value::Array(v)))
}
