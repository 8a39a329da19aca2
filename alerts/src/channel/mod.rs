//! Notification channels behind one trait: email (SMTP through lettre), SMS (an HTTP
//! gateway) and webhooks (JSON). A channel sends one message and says whether a
//! failure may pass (retry later) or will not (give up, visibly).

mod email;
mod http;
mod sms;
mod smtp_relay;
mod webhook;

use std::future::Future;
use std::sync::Arc;

pub use email::{Attachment, EmailChannel};
pub use reserve::registry::Channel as ChannelKind;
pub use sms::SmsChannel;
pub use webhook::WebhookChannel;

use crate::config::{SmsConfig, SmtpConfig, WebhookConfig};

/// The id a channel is stored and shown under.
pub fn channel_id(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Email => "email",
        ChannelKind::Sms => "sms",
        ChannelKind::Webhook => "webhook",
    }
}

/// One message to one recipient, as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Outbox id.
    pub id: i64,
    /// The contact's name.
    pub contact: String,
    /// Email address, phone number (E.164) or webhook URL.
    pub recipient: String,
    pub subject: String,
    /// Text body, SMS text, or the webhook's JSON.
    pub body: String,
    /// Email only.
    pub html: Option<String>,
}

/// Why a message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// May pass: server down, timeout, 4xx SMTP reply, HTTP 5xx/429. Retried with backoff.
    #[error("{0}")]
    Transient(String),
    /// Will not pass by retrying: address refused, 5xx SMTP reply, HTTP 4xx.
    #[error("{0}")]
    Permanent(String),
}

/// A way to reach people.
pub trait Channel: Send + Sync + 'static {
    fn kind(&self) -> ChannelKind;

    fn send(
        &self,
        message: &Notification,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// A channel that cannot be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("smtp.url: {0}")]
    SmtpUrl(String),
    #[error("smtp.from: {0}")]
    SmtpFrom(String),
    #[error("sms: {0}")]
    Sms(String),
    #[error("http client: {0}")]
    HttpClient(String),
}

/// The channels available to the alert engine. A contact's channel that is not here
/// (no `[smtp]`, no `[sms]`) is skipped, and said so once at start.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    pub email: Option<Arc<EmailChannel>>,
    pub sms: Option<Arc<SmsChannel>>,
    pub webhook: Option<Arc<WebhookChannel>>,
}

impl Channels {
    /// Builds the channels the configuration has: email with `[smtp]`, SMS with
    /// `[sms]`, and always webhooks (their URLs are the contacts').
    pub fn from_config(
        smtp: Option<&SmtpConfig>,
        sms: Option<&SmsConfig>,
        webhook: &WebhookConfig,
    ) -> Result<Channels, ChannelError> {
        let client = http::client()?;
        Ok(Channels {
            email: smtp.map(EmailChannel::new).transpose()?.map(Arc::new),
            sms: sms
                .map(|config| SmsChannel::new(config, client.clone()))
                .transpose()?
                .map(Arc::new),
            webhook: Some(Arc::new(WebhookChannel::new(webhook, client))),
        })
    }

    pub fn has(&self, kind: ChannelKind) -> bool {
        match kind {
            ChannelKind::Email => self.email.is_some(),
            ChannelKind::Sms => self.sms.is_some(),
            ChannelKind::Webhook => self.webhook.is_some(),
        }
    }
}
