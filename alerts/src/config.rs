//! What the alert engine and its channels are told: the `[alerts]`, `[smtp]`, `[sms]`
//! and `[webhook]` sections of the configuration (docs/design.md#cli-and-configuration),
//! deserialised straight into these types by the `server` crate. Fields the file does
//! not name (`#[serde(skip)]`) keep their defaults or are set by the server.
//!
//! Passwords are [`SecretString`]s: they never print, and are exposed only where a
//! channel hands them to a server. A `*_file` field is read by the server, which alone
//! reads files, into its secret at load.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::FixedOffset;
use secrecy::SecretString;
use serde::Deserialize;

/// Beijing time: the zone the deployment this was built for reads its clocks in.
const DEFAULT_UTC_OFFSET_S: i32 = 8 * 3600;

/// `[alerts]`: the lifecycle timings of docs/design.md#lifecycle and how messages read.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// One message per town per this window lists all of its problems: the first
    /// problem waits this long for others to join it.
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub group_wait: Duration,
    /// Reminder while firing and unacknowledged.
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub repeat_every: Duration,
    /// Unacknowledged this long after the last notice: escalate one level (town →
    /// cluster → district → city contacts).
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub escalate_after: Duration,
    /// A condition must hold this long before its alert fires (`for` in the design).
    #[serde(rename = "for", deserialize_with = "reserve::duration::deserialize")]
    pub pending_for: Duration,
    /// A town whose newest reading is older than this while readings keep coming is
    /// catching up on a backlog (after a cut): what it shows is recorded at the
    /// readings' times and told only if it still holds once the backlog is in
    /// (docs/design.md#lifecycle). Two of the longer usual report intervals (5 min), far
    /// above any ordinary delivery delay; `0s` turns it off.
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub late_after: Duration,
    /// `reserve_depleting` fires when the target is forecast to be crossed this soon.
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub depleting_horizon: Duration,
    /// A stock's consumption is forecast only from at least this much history (and
    /// three readings): less is too easily fooled by a glitch (docs/design.md#forecast).
    /// Read by the ledger, which the server builds with it.
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub forecast_min_span: Duration,
    /// A shortfall resting on a facility that has never reported is held back for this
    /// many of that facility's `report_every` from the service's start: gateways come
    /// online over minutes, and until they do their stock counts as 0
    /// (docs/design.md#lifecycle). 0 announces at once.
    #[serde(deserialize_with = "grace_factor")]
    pub startup_grace_factor: f64,
    /// An open shelter holding at least this percentage of its capacity raises
    /// `shelter_near_capacity` (docs/design.md#shelters).
    #[serde(deserialize_with = "percentage")]
    pub shelter_near_capacity_pct: f64,
    /// Clusters (registry ids) that run their own instance (docs/design.md#cluster-instance):
    /// their towns' officers and cluster contacts hear from that instance, not this
    /// one, which keeps the district and city escalations. Empty on a cluster instance.
    pub clusters_with_own_instance: Vec<String>,
    /// A cluster of `clusters_with_own_instance` whose alert state has not been heard
    /// this long while its bridge to the city is up is taken over: this instance tells
    /// its officers and contacts and raises `cluster_instance_silent`
    /// (docs/design.md#cluster-instance). At least three of the cluster's
    /// `cluster_state_every`, so one lost heartbeat is not a takeover.
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub cluster_silent_after: Duration,
    /// A cluster instance publishes its alert state at least this often (its heartbeat
    /// for the city).
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub cluster_state_every: Duration,
    /// Simulated time per wall-clock time of the readings (the demo's `--speed`; 1 in
    /// service). Readings are stamped on the wall clock while each carries `speed` times
    /// the consumption of its interval, so a forecast in wall-clock hours is this much
    /// shorter than the simulated world's: rules multiply by it before comparing with
    /// `depleting_horizon` and quoting hours, so a calm day looks calm at any speed.
    #[serde(skip)]
    pub clock_speed: f64,
    /// How often every town is re-evaluated without a change: silence and the expiry
    /// of silences depend on time alone. Bounds how late a silent facility is noticed
    /// (beyond its `stale_after`); a pass over 40,000 towns costs some CPU, so not
    /// every second.
    #[serde(skip)]
    pub tick: Duration,
    /// Base URL of the HTTP API and board (`https://stockpile.example.org`), quoted in
    /// messages so an officer can acknowledge; without it messages give the path alone.
    /// Set by the server from `[api] listen`.
    #[serde(skip)]
    pub public_url: Option<String>,
    /// Signed acknowledgement links in every email and SMS (docs/design.md#acknowledging-from-a-phone):
    /// set by the server when `[api] public_url` and `link_key_file` are.
    #[serde(skip)]
    pub ack_links: Option<crate::link::AckLinks>,
    /// Times in messages are shown in this zone.
    #[serde(skip)]
    pub utc_offset: FixedOffset,
    /// Starts every email subject.
    #[serde(skip)]
    pub subject_prefix: String,
    #[serde(skip)]
    pub retry: RetryPolicy,
    /// Queue the `alert` series for the InfluxDB sink with every transition (set by the
    /// server when an `[influx]` section is configured; otherwise nobody would drain the
    /// queue).
    #[serde(skip)]
    pub influx_series: bool,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            group_wait: Duration::from_secs(10),
            repeat_every: Duration::from_secs(4 * 3600),
            escalate_after: Duration::from_secs(30 * 60),
            pending_for: Duration::ZERO,
            late_after: Duration::from_secs(10 * 60),
            depleting_horizon: Duration::from_secs(12 * 3600),
            forecast_min_span: Duration::from_secs(3600),
            startup_grace_factor: 2.0,
            shelter_near_capacity_pct: 90.0,
            clusters_with_own_instance: Vec::new(),
            cluster_silent_after: Duration::from_secs(5 * 60),
            cluster_state_every: Duration::from_secs(60),
            clock_speed: 1.0,
            tick: Duration::from_secs(10),
            public_url: None,
            ack_links: None,
            utc_offset: FixedOffset::east_opt(DEFAULT_UTC_OFFSET_S)
                .unwrap_or_else(|| FixedOffset::east_opt(0).expect("UTC is a valid offset")),
            subject_prefix: "[Stockpile]".into(),
            retry: RetryPolicy::default(),
            influx_series: false,
        }
    }
}

/// A factor of `report_every`: a finite number, 0 or more.
fn grace_factor<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let factor = f64::deserialize(d)?;
    if factor.is_finite() && (0.0..=1000.0).contains(&factor) {
        Ok(factor)
    } else {
        Err(serde::de::Error::custom(format!(
            "expected a factor of report_every from 0 to 1000, such as 2, got {factor}"
        )))
    }
}

/// A share of a shelter's capacity: a number above 0, at most 100.
fn percentage<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let pct = f64::deserialize(d)?;
    if pct.is_finite() && pct > 0.0 && pct <= 100.0 {
        Ok(pct)
    } else {
        Err(serde::de::Error::custom(format!(
            "expected a percentage above 0 and at most 100, such as 90, got {pct}"
        )))
    }
}

/// How the outbox retries a notification that failed for a reason that may pass (a
/// server down, a timeout, a 5xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failure; doubled after each further one.
    pub first: Duration,
    /// The longest wait between two attempts.
    pub max: Duration,
    /// A notification still failing this long after it was enqueued is given up and
    /// marked failed, which the API and metrics show.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first: Duration::from_secs(5),
            max: Duration::from_secs(10 * 60),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// Wait before the next attempt after `attempts` failed ones (≥ 1).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.first
            .checked_mul(1 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// `[smtp]`: email through an SMTP server, or into a directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// `smtp://host:port` (plain, for a local relay), `smtp://host:port?tls=required`
    /// (STARTTLS), `smtps://host:port` (TLS from the first byte), or `file:///dir` (each
    /// message written there as an `.eml` file: a relay's drop directory, or the demo's
    /// mailbox).
    pub url: String,
    /// `Name <address>` or a bare address.
    pub from: String,
    /// SMTP authentication, with `password`.
    pub username: Option<String>,
    /// Exposed only to the SMTP credentials.
    pub password: Option<SecretString>,
    /// A file holding the password; the server reads it into `password` at load.
    pub password_file: Option<PathBuf>,
    /// One delivery attempt, connection to QUIT.
    #[serde(skip)]
    pub timeout: Duration,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig::new("", "")
    }
}

impl SmtpConfig {
    pub fn new(url: impl Into<String>, from: impl Into<String>) -> SmtpConfig {
        SmtpConfig {
            url: url.into(),
            from: from.into(),
            username: None,
            password: None,
            password_file: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Ready-made request shapes of well-known SMS gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsPreset {
    /// Twilio's Messages API: form body `To`, `From`, `Body`, basic auth with the
    /// account SID and auth token as `username` and `password`.
    Twilio,
}

/// `[sms]`: an HTTP SMS gateway, a generic templated request or a preset.
///
/// The generic request fills `{to}`, `{text}` and `{from}` into `url` (URL-encoded)
/// and `body` (JSON-escaped when the `Content-Type` header says JSON, form-encoded when
/// it says `application/x-www-form-urlencoded`, as is otherwise). Without a `body`
/// template a POST sends `{"to": …, "text": …}` as JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// `http://` or `https://`; `{to}`, `{text}`, `{from}` are filled in per message.
    pub url: String,
    /// `POST` unless told otherwise (`GET` sends no body: put the placeholders in the URL).
    pub method: Option<String>,
    /// Sent with every request. Values are secrets (an `Authorization` or API-key header
    /// is the gateway's password), exposed only to the request.
    pub headers: BTreeMap<String, SecretString>,
    /// Request body template; `{to}`, `{text}`, `{from}` are filled in per message.
    pub body: Option<String>,
    pub preset: Option<SmsPreset>,
    /// Sender number or name, for gateways that need one.
    pub from: Option<String>,
    /// HTTP basic auth, when both are set.
    pub username: Option<String>,
    /// Exposed only to the request's basic auth.
    pub password: Option<SecretString>,
    /// A file holding the password; the server reads it into `password` at load.
    pub password_file: Option<PathBuf>,
    /// Twilio's auth token: replies the provider posts to `POST /api/v1/sms/inbound`
    /// must carry its `X-Twilio-Signature`. Without it every reply is refused (403; the
    /// server warns at start): nothing could tell a forged POST from the provider's.
    /// Exposed only to that check.
    pub inbound_auth_token: Option<SecretString>,
    /// A file holding it; the server reads it into `inbound_auth_token` at load.
    pub inbound_auth_token_file: Option<PathBuf>,
    /// One request, connection to response.
    #[serde(skip)]
    pub timeout: Duration,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig::new("")
    }
}

impl SmsConfig {
    pub fn new(url: impl Into<String>) -> SmsConfig {
        SmsConfig {
            url: url.into(),
            method: None,
            headers: BTreeMap::new(),
            body: None,
            preset: None,
            from: None,
            username: None,
            password: None,
            password_file: None,
            inbound_auth_token: None,
            inbound_auth_token_file: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The JSON a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebhookFormat {
    /// Robot format for WeCom (`qyapi.weixin.qq.com`) and DingTalk
    /// (`oapi.dingtalk.com`) URLs, generic for every other.
    #[default]
    Auto,
    /// `{"event", "town", "subject", "text", "alerts": [...]}`.
    Generic,
    /// `{"msgtype": "text", "text": {"content": "..."}}`, what WeCom and DingTalk group
    /// robots take.
    Robot,
}

/// `[webhook]`: settings shared by every contact's webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// One request, connection to response.
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub timeout: Duration,
    #[serde(skip)]
    pub format: WebhookFormat,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            timeout: Duration::from_secs(10),
            format: WebhookFormat::Auto,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy = RetryPolicy {
            first: Duration::from_secs(5),
            max: Duration::from_secs(60),
            give_up_after: Duration::from_secs(3600),
        };
        let cases = [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (40, 60), (0, 5)];
        for (attempts, want_s) in cases {
            assert_eq!(
                policy.backoff(attempts),
                Duration::from_secs(want_s),
                "after {attempts} attempts"
            );
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let mut smtp = SmtpConfig::new("smtp://relay:25", "a@example.org");
        smtp.password = Some("hunter2".into());
        let mut sms = SmsConfig::new("https://sms.example.org/send");
        sms.password = Some("hunter2".into());
        sms.headers
            .insert("Authorization".into(), "Bearer hunter2".into());
        for printed in [format!("{smtp:?}"), format!("{sms:?}")] {
            assert!(!printed.contains("hunter2"), "{printed}");
        }
    }
}
