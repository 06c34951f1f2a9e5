//! The MQTT sink: QoS 1 publishes to `PREFIX/JOB/alerts` (track events to
//! `PREFIX/JOB/tracks`), one at a time,
//! each acknowledged (PUBACK) before the next. Availability:
//! `PREFIX/status/CLIENT` (the client is `panoptes-coordinator-ID`),
//! retained, `online` on connecting and `offline` as the last will. One
//! topic per coordinator, so that a dead leader's will does not mark the
//! next leader, connected meanwhile, offline.
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Packet, QoS};

use super::Event;

/// How long a publish may wait for its PUBACK (or the connection for CONNACK).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

pub struct MqttSink {
    host: String,
    port: u16,
    prefix: String,
    client_id: String,
    conn: Option<(AsyncClient, EventLoop)>,
    /// Publishes sent on this connection and not acknowledged yet.
    unacked: usize,
}

impl MqttSink {
    pub fn new(host: String, port: u16, prefix: String, client_id: String) -> MqttSink {
        MqttSink { host, port, prefix, client_id, conn: None, unacked: 0 }
    }

    pub fn shown(&self) -> String {
        format!("mqtt://{}:{} ({}/…)", self.host, self.port, self.prefix)
    }

    fn status_topic(&self) -> String {
        format!("{}/status/{}", self.prefix, self.client_id)
    }

    async fn connect(&mut self) -> Result<(), String> {
        let mut opts = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        opts.set_keep_alive(Duration::from_secs(10));
        opts.set_clean_session(true);
        opts.set_last_will(LastWill::new(self.status_topic(), "offline", QoS::AtLeastOnce, true));
        let (client, eventloop) = AsyncClient::new(opts, 16);
        client.publish(self.status_topic(), QoS::AtLeastOnce, true, "online").await.map_err(|e| format!("cannot queue a publish: {e}"))?;
        self.conn = Some((client, eventloop));
        self.unacked = 1;
        Ok(())
    }

    pub async fn send(&mut self, e: &Event) -> Result<(), String> {
        if self.conn.is_none() {
            self.connect().await?;
        }
        let kind = match e.stream {
            crate::state::command::Stream::Alerts => "alerts",
            crate::state::command::Stream::Tracks => "tracks",
        };
        let topic = format!("{}/{}/{kind}", self.prefix, panoptes_common::ids::JobId(e.job));
        let (client, _) = self.conn.as_ref().expect("connected above");
        if let Err(err) = client.publish(topic, QoS::AtLeastOnce, false, e.body.clone()).await {
            self.conn = None;
            return Err(format!("cannot queue a publish: {err}"));
        }
        self.unacked += 1;
        let (_, eventloop) = self.conn.as_mut().expect("connected above");
        while self.unacked > 0 {
            match tokio::time::timeout(ACK_TIMEOUT, eventloop.poll()).await {
                Ok(Ok(MqttEvent::Incoming(Packet::PubAck(_)))) => self.unacked -= 1,
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    self.conn = None;
                    return Err(format!("broker at {}:{}: {err}", self.host, self.port));
                }
                Err(_) => {
                    self.conn = None;
                    return Err(format!("broker at {}:{} did not acknowledge within {} s", self.host, self.port, ACK_TIMEOUT.as_secs()));
                }
            }
        }
        Ok(())
    }
}
