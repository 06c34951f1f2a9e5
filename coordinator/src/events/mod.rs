//! Events out (issue 18, part 5): each recorded alert and track event
//! (a track starting, entering or leaving a zone, ending) published to the
//! sinks of `[events]` (an MQTT broker, webhooks), at least once, in order
//! per job and stream, with a stable id (`job-3/7`: the job and the alert's
//! number; `job-3/t/12`: its twelfth track event).
//!
//! The leader delivers (`leader/events.rs`, one task per sink): the
//! next alert (then track event) a sink has not acknowledged, read from the
//! replicated state;
//! once the sink acknowledges it (MQTT PUBACK, a webhook's 2xx), the leader
//! commits `Request::Delivered`. A new leader starts from the last committed
//! acknowledgement, so an event sent but not yet recorded as delivered is
//! sent again, with the same id (at least once). A sink that fails is
//! retried with backoff in its own task: it holds up neither analysis nor
//! the other sinks. A sink more than `events.queue_max` alerts behind skips
//! the oldest, counted (`panoptes_coordinator_events_dropped_total`) and
//! recorded with the acknowledgement.
use panoptes_common::config::{parse_mqtt_url, EventsSection};
use panoptes_common::ids::JobId;
use panoptes_common::rules::Fired;
use panoptes_common::tracking::{TrackChange, TrackEvent};

use crate::state::command::Stream;
use panoptes_proto::api as pb;

mod mqtt;
mod webhook;

/// One event: a recorded alert.
pub struct Event {
    pub id: String,
    pub job: u64,
    pub stream: Stream,
    pub seq: u64,
    /// The JSON body (`{"event_id","type","job_id","seq","rule","frame","time","since","detail"}`).
    pub body: Vec<u8>,
}

impl Event {
    pub fn alert(job: u64, seq: u64, f: &Fired) -> Event {
        let a = alert_pb(job, seq, f);
        let body = serde_json::json!({
            "event_id": a.id,
            "type": "alert",
            "job_id": a.job_id,
            "seq": a.seq,
            "rule": a.rule,
            "frame": a.frame,
            "time": a.time,
            "since": a.since,
            "detail": a.detail,
        });
        Event { id: a.id, job, stream: Stream::Alerts, seq, body: body.to_string().into_bytes() }
    }

    /// Track event number `seq` (from 1) of `job`: `{"event_id","type":
    /// "track","change":"start|update|end","update":"enter|leave"|null,
    /// "job_id","seq","model","track_id","label","zone","frame","time"}`
    /// (an update says what changed: the track entered or left `zone`).
    pub fn track(job: u64, seq: u64, e: &TrackEvent) -> Event {
        let id = format!("{}/t/{seq}", JobId(job));
        let (change, update) = match e.change {
            TrackChange::Start => ("start", None),
            TrackChange::Enter | TrackChange::Leave => ("update", Some(e.change.as_str())),
            TrackChange::End => ("end", None),
        };
        let body = serde_json::json!({
            "event_id": id,
            "type": "track",
            "change": change,
            "update": update,
            "job_id": JobId(job).to_string(),
            "seq": seq,
            "model": e.model,
            "track_id": e.track,
            "label": e.label,
            "zone": e.zone,
            "frame": e.frame,
            "time": e.time,
        });
        Event { id, job, stream: Stream::Tracks, seq, body: body.to_string().into_bytes() }
    }
}

/// Alert number `seq` (from 1) of `job`, as `ListAlerts` gives it and the
/// events carry it; its id, `job-3/7`, is stable.
pub fn alert_pb(job: u64, seq: u64, f: &Fired) -> pb::Alert {
    pb::Alert {
        id: format!("{}/{seq}", JobId(job)),
        job_id: JobId(job).to_string(),
        seq,
        rule: f.rule.clone(),
        frame: f.frame,
        time: f.time_ms as f64 / 1000.0,
        since: f.since_ms as f64 / 1000.0,
        detail: f.detail.clone(),
    }
}

/// Where events go.
pub enum Sink {
    Mqtt(mqtt::MqttSink),
    Webhook(webhook::WebhookSink),
}

impl Sink {
    /// The sink's name in the replicated state and in metrics: "mqtt", or the webhook's URL.
    pub fn name(&self) -> &str {
        match self {
            Sink::Mqtt(_) => "mqtt",
            Sink::Webhook(w) => w.url(),
        }
    }

    /// What the sink is, for logs (a webhook URL without its query).
    pub fn shown(&self) -> String {
        match self {
            Sink::Mqtt(m) => m.shown(),
            Sink::Webhook(w) => panoptes_common::source_url::redact(w.url()),
        }
    }

    /// Deliver one event; `Ok` once the sink acknowledged it.
    pub async fn send(&mut self, e: &Event) -> Result<(), String> {
        match self {
            Sink::Mqtt(m) => m.send(e).await,
            Sink::Webhook(w) => w.send(e).await,
        }
    }
}

/// The sinks `[events]` names (none: nothing is published). `member` names
/// this coordinator to the broker.
pub fn sinks(cfg: &EventsSection, member: u64) -> Result<Vec<Sink>, String> {
    let mut out = Vec::new();
    if let Some(url) = &cfg.mqtt_url {
        let (host, port) = parse_mqtt_url(url)?;
        out.push(Sink::Mqtt(mqtt::MqttSink::new(host, port, cfg.mqtt_topic_prefix.trim().to_string(), format!("panoptes-coordinator-{member}"))));
    }
    if !cfg.webhooks.is_empty() {
        let file = cfg.webhook_secret_file.as_ref().ok_or("events.webhooks need events.webhook_secret_file")?;
        let secret = std::fs::read_to_string(file).map_err(|e| format!("cannot read events.webhook_secret_file {}: {e}", file.display()))?;
        let secret = secret.trim();
        if secret.is_empty() {
            return Err(format!("events.webhook_secret_file {} is empty: write a long random string into it", file.display()));
        }
        for url in &cfg.webhooks {
            out.push(Sink::Webhook(webhook::WebhookSink::new(url, secret.as_bytes())?));
        }
    }
    Ok(out)
}
