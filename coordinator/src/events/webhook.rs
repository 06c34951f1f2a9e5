//! The webhook sink: an HTTP POST of the event's JSON, signed
//! (`X-Panoptes-Signature: sha256=HEX` of HMAC-SHA256 over the body with
//! `events.webhook_secret_file`), with the event's id as `Idempotency-Key`
//! and `X-Panoptes-Event-Id`, so that a receiver drops repeats. Any 2xx
//! answer acknowledges it; redirects are not followed.
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Event;

pub struct WebhookSink {
    url: String,
    secret: Vec<u8>,
    client: reqwest::Client,
}

impl WebhookSink {
    pub fn new(url: &str, secret: &[u8]) -> Result<WebhookSink, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("events.webhooks: cannot make an HTTP client: {e}"))?;
        Ok(WebhookSink { url: url.to_string(), secret: secret.to_vec(), client })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn send(&mut self, e: &Event) -> Result<(), String> {
        let r = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("idempotency-key", &e.id)
            .header("x-panoptes-event-id", &e.id)
            .header("x-panoptes-signature", format!("sha256={}", signature(&self.secret, &e.body)))
            .body(e.body.clone())
            .send()
            .await
            .map_err(|err| format!("POST failed: {err}"))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered HTTP {}", r.status()))
        }
    }
}

/// HMAC-SHA256 of `body` with `secret`, lower-case hex.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    /// RFC 4231, test case 2.
    #[test]
    fn the_signature_is_hmac_sha256() {
        assert_eq!(super::signature(b"Jefe", b"what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
