//! Webhooks: the message's JSON (rendered when it was enqueued, in the shape the URL
//! wants) posted to the contact's URL.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;

use super::http::{classify, no_answer};
use super::{Channel, ChannelKind, DeliveryError, Notification};
use crate::config::{WebhookConfig, WebhookFormat};

/// WeCom and DingTalk error codes that mean "too fast, try later"; any other non-zero
/// `errcode` in a 200 answer is a refusal.
const ROBOT_RATE_LIMITED: [i64; 2] = [45009, 130101];

#[derive(Debug)]
pub struct WebhookChannel {
    client: reqwest::Client,
    timeout: Duration,
    format: WebhookFormat,
}

impl WebhookChannel {
    pub fn new(config: &WebhookConfig, client: reqwest::Client) -> WebhookChannel {
        WebhookChannel {
            client,
            timeout: config.timeout,
            format: config.format,
        }
    }

    /// The JSON shape messages are rendered in for this channel.
    pub fn format(&self) -> WebhookFormat {
        self.format
    }
}

impl Channel for WebhookChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    async fn send(&self, n: &Notification) -> Result<(), DeliveryError> {
        let response = self
            .client
            .post(&n.recipient)
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .body(n.body.clone())
            .send()
            .await
            .map_err(no_answer)?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        classify(status, &body)?;
        // Robots answer 200 with {"errcode": …} saying what really happened.
        let errcode = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("errcode").and_then(serde_json::Value::as_i64));
        match errcode {
            None | Some(0) => Ok(()),
            Some(code) if ROBOT_RATE_LIMITED.contains(&code) => {
                Err(DeliveryError::Transient(format!("rate limited: {body}")))
            }
            Some(_) => Err(DeliveryError::Permanent(format!("refused: {body}"))),
        }
    }
}
