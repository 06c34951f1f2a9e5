//! Conversions between the state machine's types and the public API's
//! messages (and the names `cluster status` shows).
use super::*;

pub fn state_pb(s: JobState) -> pb::JobState {
    match s {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Completed => pb::JobState::Completed,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

/// A job's source as `caller` may see it: whole for its owner and admins
/// (and on a cluster without tokens); for other users with credentials,
/// query strings and a live job's stream key replaced by `***`.
pub(super) fn source_for(caller: &Caller, j: &Job, source: &str) -> String {
    if caller.sees_secrets_of(&j.spec.owner) {
        source.to_string()
    } else {
        panoptes_media::policy::redact(source)
    }
}

pub fn status_pb(j: &Job, caller: &Caller) -> pb::JobStatus {
    pb::JobStatus {
        job_id: JobId(j.id).to_string(),
        name: j.spec.name.clone(),
        source: source_for(caller, j, &j.spec.source),
        models: j.spec.models.clone(),
        frame_step: j.spec.frame_step,
        state: state_pb(j.state) as i32,
        frames_total: j.frames_total(),
        frames_done: j.frames_done,
        error: j.error.clone().unwrap_or_default(),
        submitted_at_ms: j.submitted_at_ms,
        finished_at_ms: j.finished_at_ms,
        shards_total: j.shards.len() as u32,
        shards_done: j.shards_done(),
        live: j.is_live(),
        push_url: j.live.as_ref().map(|l| source_for(caller, j, &l.url)).unwrap_or_default(),
        keep_s: j.spec.keep_s,
        retained_from_frame: j.trimmed_before,
        pictures: j.spec.frames_height > 0,
        pictures_every_ms: j.spec.frames_every_ms,
        rules: j.spec.rules.iter().map(|r| r.text.clone()).collect(),
        alerts: j.alerts.recorded() + j.alerts.dropped,
        alerts_evaluated_to_frame: j.alerts.upto,
        alerts_up_to_date: j.analytics_up_to_date(),
        zones: j.zones.iter().map(|z| pb::ZoneInfo { zone: z.zone.text(), from_frame: z.from_frame }).collect(),
        tracks: j.tracking.models.values().map(|t| t.started()).sum(),
        track_events: j.track_events.recorded,
    }
}

/// A job's recorded alerts, oldest first, with their stable ids.
pub fn alerts_pb(j: &Job) -> Vec<pb::Alert> {
    j.alerts.numbered().map(|(seq, f)| crate::events::alert_pb(j.id, seq, f)).collect()
}

/// A worker's ingest lobby URL (`rtmp://HOST:PORT/live/`) from its registered
/// address `HOST:BASE` and capacity; empty without live ingest.
pub fn lobby_url(addr: &str, capacity: u32) -> String {
    let Some((host, base)) = addr.rsplit_once(':') else { return String::new() };
    match base.parse::<u16>().ok().filter(|b| *b > 0).and_then(|b| crate::state::model::lobby_port(b, capacity)) {
        Some(p) => format!("rtmp://{host}:{p}/live/"),
        None => String::new(),
    }
}


/// A page token is the last store key of the previous page, in hex.
pub(super) fn encode_page_token(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn decode_page_token(t: &str) -> Option<Vec<u8>> {
    if t.len() % 2 != 0 || t.len() > 128 {
        return None;
    }
    (0..t.len()).step_by(2).map(|i| u8::from_str_radix(t.get(i..i + 2)?, 16).ok()).collect()
}


/// A worker's state in `cluster status`: "lost" when the leader has not
/// heard from it for longer than the lease timeout (or, not at all, one lease
/// timeout after it became leader), else "draining" or "active". Heartbeats
/// live on the leader: another member says "unknown" (or "draining").
pub(super) fn worker_state(is_leader: bool, draining: bool, heartbeat_age_ms: Option<u64>, grace_over: bool, lease_timeout_ms: u64) -> &'static str {
    let lost = match heartbeat_age_ms {
        Some(ms) => ms > lease_timeout_ms,
        None => grace_over,
    };
    match (is_leader, lost, draining) {
        (false, _, true) => "draining",
        (false, _, false) => "unknown",
        (true, true, _) => "lost",
        (true, false, true) => "draining",
        (true, false, false) => "active",
    }
}

pub(super) fn role_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
    }
}
