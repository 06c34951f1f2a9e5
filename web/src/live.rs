//! The live API: creating a live job, and relaying a browser's recording
//! into it ([`relay`](crate::relay)).
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use panoptes_client::views::{is_finished, state_name};
use panoptes_proto::api as pb;
use serde_json::json;

use crate::body::{frame_step_of, models_of, opt_bool, opt_string, parse_object, rules_of, zones_of};
use crate::error::{json_response, ApiError, ApiResult};
use crate::relay;
use crate::state::{rpc, Caller, Web};

/// `POST /api/live` `{models, name?, frame_step?, keep?, keep_what?, pictures_every?, no_frames?, rules?, zones?}` → 201 `{job_id, rtmp_url}`.
pub(crate) async fn live(State(web): State<Web>, caller: Caller, body: Bytes) -> ApiResult {
    let m = parse_object(&body)?;
    let req = pb::LiveRequest {
        models: models_of(&m)?,
        name: opt_string(&m, "name")?,
        frame_step: frame_step_of(&m)?,
        keep: opt_string(&m, "keep")?,
        keep_what: opt_string(&m, "keep_what")?,
        pictures_every: opt_string(&m, "pictures_every")?,
        no_frames: opt_bool(&m, "no_frames")?,
        rules: rules_of(&m)?,
        zones: zones_of(&m)?,
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
pub(crate) async fn live_media(State(web): State<Web>, caller: Caller, Path(id): Path<String>, body: Bytes) -> ApiResult {
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
pub(crate) async fn live_media_end(State(web): State<Web>, caller: Caller, Path(id): Path<String>) -> ApiResult {
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
