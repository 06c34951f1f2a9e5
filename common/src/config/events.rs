//! `[alerts]`: alert rules every job gets; `[events]`: where alerts and
//! track events are published as they are recorded (issue 18, parts 4 and
//! 5): an MQTT broker and webhooks. The leader delivers each event at least
//! once, in order per job, with a stable id (`coordinator/src/events/`).
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::sections::unless_empty;

/// `[alerts]`: rules added to every job whose models and zones can tell
/// them (a rule counting `car` goes to the jobs that run a detector with the
/// label `car`; a rule on zone `door` to the jobs with a zone `door`), besides
/// the rules the job was submitted with (a job's own rule of the same name
/// wins). Each is checked at load: `[NAME:] CONDITION [for D] [, cooldown D]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    pub rules: Vec<String>,
}

impl AlertsSection {
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for r in &self.rules {
            let rule = crate::rules::Rule::parse(r).map_err(|e| format!("alerts.rules '{r}': {e}"))?;
            if !names.insert(rule.name.clone()) {
                return Err(format!("alerts.rules: two rules are named '{}': name them apart (NAME: CONDITION)", rule.name));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSection {
    /// An MQTT broker, `mqtt://HOST:PORT` (port 1883 when left out); unset:
    /// no MQTT. Events go to `TOPIC_PREFIX/JOB/alerts` with QoS 1; each
    /// coordinator's retained `TOPIC_PREFIX/status/panoptes-coordinator-ID`
    /// says `online`, or `offline` (its last will) once it is gone.
    #[serde(deserialize_with = "unless_empty", skip_serializing_if = "Option::is_none")]
    pub mqtt_url: Option<String>,
    pub mqtt_topic_prefix: String,
    /// URLs every event is POSTed to as JSON, signed with
    /// `webhook_secret_file` (`X-Panoptes-Signature: sha256=HMAC`), with its
    /// id as `Idempotency-Key`; retried with backoff until a 2xx answer.
    pub webhooks: Vec<String>,
    #[serde(deserialize_with = "unless_empty", skip_serializing_if = "Option::is_none")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Undelivered events a sink may fall behind by; older ones are then
    /// skipped and counted (`panoptes_coordinator_events_dropped_total`),
    /// so a dead sink never holds anything else up.
    pub queue_max: u64,
}

impl Default for EventsSection {
    fn default() -> Self {
        EventsSection { mqtt_url: None, mqtt_topic_prefix: "panoptes".into(), webhooks: Vec::new(), webhook_secret_file: None, queue_max: 10_000 }
    }
}

/// A broker's host and port from `mqtt://HOST[:PORT]`.
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16), String> {
    let rest = url.trim().strip_prefix("mqtt://").ok_or_else(|| {
        if url.trim().starts_with("mqtts://") {
            format!("events.mqtt_url '{url}': TLS to the broker (mqtts://) is not supported yet; use mqtt:// on a trusted network")
        } else {
            format!("events.mqtt_url '{url}' is not an MQTT URL: use mqtt://HOST[:PORT], e.g. mqtt://127.0.0.1:1883")
        }
    })?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(format!("events.mqtt_url '{url}': give only the broker, mqtt://HOST[:PORT] (no path, no user)"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
            (h.trim_matches(['[', ']']).to_string(), p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("events.mqtt_url '{url}': '{p}' is not a port"))?)
        }
        _ => (rest.to_string(), 1883),
    };
    if host.is_empty() {
        return Err(format!("events.mqtt_url '{url}' names no host"));
    }
    Ok((host, port))
}

impl EventsSection {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(u) = &self.mqtt_url {
            parse_mqtt_url(u)?;
        }
        let prefix = self.mqtt_topic_prefix.trim();
        if prefix.is_empty() || prefix.contains(['#', '+']) || prefix.starts_with('/') || prefix.ends_with('/') {
            return Err(format!("events.mqtt_topic_prefix '{prefix}': give a topic without wildcards (# +) or leading/trailing '/', e.g. panoptes"));
        }
        for w in &self.webhooks {
            if !(w.starts_with("http://") || w.starts_with("https://")) || w.len() < 10 {
                return Err(format!("events.webhooks: '{w}' is not an http:// or https:// URL"));
            }
        }
        if !self.webhooks.is_empty() && self.webhook_secret_file.is_none() {
            return Err("events.webhooks need events.webhook_secret_file: every POST is signed with it (X-Panoptes-Signature), so that a receiver can tell the events are the cluster's. \
                        Make one with `head -c 32 /dev/urandom | base64 > webhook.secret`"
                .into());
        }
        if self.queue_max == 0 {
            return Err("events.queue_max must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls_parse_or_say_what_to_write() {
        assert_eq!(parse_mqtt_url("mqtt://127.0.0.1:1884").unwrap(), ("127.0.0.1".into(), 1884));
        assert_eq!(parse_mqtt_url("mqtt://broker.lan").unwrap(), ("broker.lan".into(), 1883));
        assert_eq!(parse_mqtt_url("mqtt://[::1]:1884").unwrap(), ("::1".into(), 1884));
        for (bad, says) in [
            ("http://x", "not an MQTT URL"),
            ("mqtts://x", "not supported yet"),
            ("mqtt://", "(no path"),
            ("mqtt://h:port", "not a port"),
            ("mqtt://u:p@h", "no user"),
        ] {
            let e = parse_mqtt_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn webhooks_need_a_secret() {
        let s = EventsSection { webhooks: vec!["http://127.0.0.1:9/hook".into()], ..Default::default() };
        assert!(s.validate().unwrap_err().contains("webhook_secret_file"));
        let s = EventsSection { webhooks: vec!["ftp://x/y/z".into()], webhook_secret_file: Some("s".into()), ..Default::default() };
        assert!(s.validate().unwrap_err().contains("not an http"));
        assert!(EventsSection { mqtt_topic_prefix: "a/#".into(), ..Default::default() }.validate().is_err());
    }
}
