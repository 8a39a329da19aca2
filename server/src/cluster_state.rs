//! A cluster instance's alert state, published for the city
//! (docs/design.md#cluster-instance): one retained QoS 1 message on
//! `stockpile/v1/cluster/{cluster}/alerts` on the site's broker, whose bridge carries it
//! to the city broker like the readings (queued while the link is down). It lists the
//! open alerts and the latest resolved ones, each fired, acknowledged or resolved, with
//! no names of people or notes. Published when it changes and at least every
//! [`HEARTBEAT`], so its `ts` also tells the city the instance is alive.

use std::time::Duration;

use alerts::{AlertFilter, AlertStatus, AlertView, AlertsHandle, Rule, Severity};
use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the alert state is read again: a change reaches the city this late at most
/// (plus the link).
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Published at least this often, changed or not.
pub const HEARTBEAT: Duration = Duration::from_secs(60);
/// Resolved alerts listed beside the open ones, newest first: enough for a day of a
/// cluster's history, small enough for one message.
const RESOLVED_LISTED: usize = 50;

/// The topic a cluster instance publishes its alert state on.
pub fn topic(cluster: &str) -> String {
    format!("stockpile/v1/cluster/{cluster}/alerts")
}

/// One alert as the city is told of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct PublishedAlert {
    town: String,
    rule: Rule,
    /// Category id for reserve rules, facility id for the others.
    subject: String,
    severity: Severity,
    state: AlertStatus,
    fired_at: Option<DateTime<Utc>>,
    acknowledged_at: Option<DateTime<Utc>>,
    resolved_at: Option<DateTime<Utc>>,
}

impl From<AlertView> for PublishedAlert {
    fn from(alert: AlertView) -> Self {
        PublishedAlert {
            town: alert.town,
            rule: alert.rule,
            subject: alert.subject,
            severity: alert.severity,
            state: alert.state,
            fired_at: alert.fired_at,
            acknowledged_at: alert.acknowledged.map(|ack| ack.at),
            resolved_at: alert.resolved_at,
        }
    }
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    cluster: &'a str,
    /// When this was published: the instance's heartbeat.
    ts: DateTime<Utc>,
    alerts: &'a [PublishedAlert],
}

/// Publishes `cluster`'s alert state through a connection made with `options` (its own
/// client id) until shutdown.
pub async fn run(
    options: MqttOptions,
    cluster: String,
    alerts: AlertsHandle,
    shutdown: CancellationToken,
) {
    let (client, mut connection) = AsyncClient::new(options, 16);
    // rumqttc moves only while its event loop is polled; it reconnects by itself.
    let polling = shutdown.clone();
    let driver = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = polling.cancelled() => return,
                event = connection.poll() => if event.is_err() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                },
            }
        }
    });
    let topic = topic(&cluster);
    let mut published: Option<(Vec<PublishedAlert>, Instant)> = None;
    let mut checks = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = checks.tick() => {}
        }
        let state = match snapshot(&alerts).await {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(message = "Cannot read the alert state to publish.", %error);
                continue;
            }
        };
        let fresh = published
            .as_ref()
            .is_some_and(|(last, at)| *last == state && at.elapsed() < HEARTBEAT);
        if fresh {
            continue;
        }
        let message = Message {
            cluster: &cluster,
            ts: Utc::now(),
            alerts: &state,
        };
        let payload = serde_json::to_vec(&message).expect("alert state serialises");
        // Queued in the client while the broker is away; retained, so a city instance
        // that subscribes later still gets the latest.
        match client
            .publish(&topic, QoS::AtLeastOnce, true, payload)
            .await
        {
            Ok(()) => published = Some((state, Instant::now())),
            Err(error) => tracing::warn!(message = "Cannot publish the alert state.", %error),
        }
    }
    let _ = client.disconnect().await;
    driver.abort();
}

/// The open alerts, then the latest resolved ones.
async fn snapshot(alerts: &AlertsHandle) -> Result<Vec<PublishedAlert>, alerts::AlertsError> {
    let open = AlertFilter {
        open: true,
        limit: alerts::MAX_LIMIT,
        ..AlertFilter::default()
    };
    let resolved = AlertFilter {
        state: Some(AlertStatus::Resolved),
        limit: RESOLVED_LISTED,
        ..AlertFilter::default()
    };
    let mut state: Vec<PublishedAlert> = alerts
        .list_alerts(&open)
        .await?
        .into_iter()
        .map(PublishedAlert::from)
        .collect();
    state.extend(
        alerts
            .list_alerts(&resolved)
            .await?
            .into_iter()
            .map(PublishedAlert::from),
    );
    Ok(state)
}

/// What publishing needs, made before anything runs: a cluster instance (`[scope]
/// cluster`) publishes; an instance of the whole city, a shard or a list of towns does
/// not.
#[derive(Debug)]
pub struct Publisher {
    options: MqttOptions,
    cluster: String,
}

impl Publisher {
    /// From the config and ingest's connection settings (the same broker, credentials
    /// and TLS, a client id of its own).
    pub fn from_config(
        config: &crate::config::Config,
        ingest: &ingest::IngestConfig,
    ) -> anyhow::Result<Option<Publisher>> {
        let Some(cluster) = config.scope.as_ref().and_then(|s| s.cluster.clone()) else {
            return Ok(None);
        };
        let mut own = ingest.clone();
        own.mqtt.client_id = format!("{}-alert-state", ingest.mqtt.client_id);
        let mut options = ingest::mqtt_options(&own)
            .map_err(|e| anyhow::anyhow!("alert state publisher: {e}"))?;
        // Nothing to receive, so no session to keep.
        options.set_clean_session(true);
        Ok(Some(Publisher { options, cluster }))
    }

    pub fn spawn(
        self,
        tracker: &tokio_util::task::TaskTracker,
        alerts: AlertsHandle,
        shutdown: CancellationToken,
    ) {
        tracker.spawn(run(self.options, self.cluster, alerts, shutdown));
    }
}
