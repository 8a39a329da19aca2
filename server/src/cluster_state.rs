//! A cluster instance's alert state, published for the city
//! (docs/design.md#cluster-instance): one retained QoS 1 message on
//! `stockpile/v1/cluster/{cluster}/alerts` on the site's broker, whose bridge carries it
//! to the city broker like the readings (queued while the link is down). It lists the
//! open alerts and the latest resolved ones, each fired, acknowledged or resolved, with
//! no names of people or notes. Published when it changes and at least every
//! `[alerts] cluster_state_every` (a minute), so its `ts` also tells the city the
//! instance is alive. An instance of `[scope] towns` publishes too, one message per
//! cluster its towns belong to, on that cluster's topic.
//!
//! The same client reads back `stockpile/v1/cluster/{cluster}/city`, what the city told
//! while this instance was silent (bridged in), so this instance does not tell it again
//! ([`alerts::cluster_voice`]). A city instance's side is [`crate::cluster_follow`].

use std::time::Duration;

use alerts::cluster_voice::{self, ClusterVoices};
use alerts::{AlertFilter, AlertStatus, AlertView, AlertsHandle, Rule, Severity};
use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the alert state is read again: a change reaches the city this late at most
/// (plus the link).
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// At start, notifications wait this long at most for the city's record of what it
/// told while this instance was down (retained: when there is one, it comes at once;
/// when it says the city still speaks, they wait for the city to hand back, up to
/// [`alerts::cluster_voice::HANDBACK_WAIT`]).
const CITY_RECORD_WAIT_S: i64 = 5;
/// Resolved alerts listed beside the open ones, newest first: enough for a day of a
/// cluster's history, small enough for one message.
const RESOLVED_LISTED: usize = 50;

/// The topic a cluster instance publishes its alert state on.
pub fn topic(cluster: &str) -> String {
    cluster_voice::alerts_topic(cluster)
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

/// Publishes the alert state of this instance's clusters through a connection made
/// with `options` (its own client id), and reads back the city's record of what it
/// told for them, until shutdown.
pub async fn run(
    options: MqttOptions,
    heartbeat: Duration,
    alerts: AlertsHandle,
    shutdown: CancellationToken,
) {
    let (client, connection) = AsyncClient::new(options, 16);
    let clusters = clusters_of(&alerts);
    let driver = tokio::spawn(read_city_records(
        connection,
        client.clone(),
        clusters.clone(),
        alerts.cluster_voices().clone(),
        shutdown.clone(),
    ));
    let mut published: std::collections::BTreeMap<String, (Vec<PublishedAlert>, Instant)> =
        Default::default();
    // Twice a heartbeat at least, so one is never skipped by a tick landing early.
    let mut checks = tokio::time::interval(
        CHECK_EVERY
            .min(heartbeat / 2)
            .max(Duration::from_millis(100)),
    );
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
        let registry = alerts.current_registry();
        for cluster in &clusters {
            let state: Vec<PublishedAlert> = state
                .iter()
                .filter(|a| cluster_of_town(&registry, &a.town).as_deref() == Some(cluster))
                .cloned()
                .collect();
            let fresh = published
                .get(cluster)
                .is_some_and(|(last, at)| *last == state && at.elapsed() < heartbeat);
            if fresh {
                continue;
            }
            if publish(&client, cluster, &state).await {
                published.insert(cluster.clone(), (state, Instant::now()));
            }
        }
    }
    let _ = client.disconnect().await;
    driver.abort();
}

/// One cluster's state, retained. Returns whether the client took it.
async fn publish(client: &AsyncClient, cluster: &str, state: &[PublishedAlert]) -> bool {
    let message = Message {
        cluster,
        ts: Utc::now(),
        alerts: state,
    };
    let payload = serde_json::to_vec(&message).expect("alert state serialises");
    // Queued in the client while the broker is away; retained, so a city instance
    // that subscribes later still gets the latest.
    match client
        .publish(topic(cluster), QoS::AtLeastOnce, true, payload)
        .await
    {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(message = "Cannot publish the alert state.", %error);
            false
        }
    }
}

/// The clusters of this instance's towns (its registry is narrowed to its scope), in
/// registry order.
fn clusters_of(alerts: &AlertsHandle) -> Vec<String> {
    let registry = alerts.current_registry();
    let mut clusters: Vec<String> = Vec::new();
    for town in &registry.towns {
        let id = registry.clusters[town.cluster.index()].id.to_string();
        if !clusters.contains(&id) {
            clusters.push(id);
        }
    }
    clusters
}

fn cluster_of_town(registry: &reserve::Registry, town: &str) -> Option<String> {
    let t = registry.town_idx(town)?;
    Some(
        registry.clusters[registry.town(t).cluster.index()]
            .id
            .to_string(),
    )
}

/// Drives the connection (rumqttc moves only while its event loop is polled; it
/// reconnects by itself), subscribing on every connection to the city's records of
/// `clusters` and handing each to `voices`.
async fn read_city_records(
    mut connection: EventLoop,
    client: AsyncClient,
    clusters: Vec<String>,
    voices: ClusterVoices,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = connection.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                // A clean session: subscriptions do not outlive the connection.
                for cluster in &clusters {
                    let topic = cluster_voice::city_topic(cluster);
                    if let Err(error) = client.try_subscribe(topic, QoS::AtLeastOnce) {
                        tracing::warn!(message = "Cannot subscribe to the city's record.", %error);
                    }
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let Some(cluster) = clusters
                    .iter()
                    .find(|c| cluster_voice::city_topic(c) == p.topic)
                else {
                    continue;
                };
                match cluster_voice::parse_record(cluster, &p.payload) {
                    Ok(record) => voices.city_record(record, Utc::now()),
                    Err(why) => tracing::warn!(
                        message = "The city's record of a takeover was rejected.",
                        %cluster,
                        reason = why.reason,
                        detail = %why.detail
                    ),
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
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

/// What this instance's cluster voice needs, made before anything runs: a cluster
/// instance (`[scope] cluster` or `towns`) publishes its alert state; a city instance
/// with `[alerts] clusters_with_own_instance` follows those clusters'
/// ([`crate::cluster_follow`]); an instance of the whole city without it, or a shard,
/// does neither.
#[derive(Debug)]
pub struct Publisher {
    publish: Option<(MqttOptions, Duration)>,
    follow: Option<crate::cluster_follow::Follower>,
}

impl Publisher {
    /// From the config and ingest's connection settings (the same broker, credentials
    /// and TLS, a client id of its own).
    pub fn from_config(
        config: &crate::config::Config,
        ingest: &ingest::IngestConfig,
    ) -> anyhow::Result<Option<Publisher>> {
        let follow = crate::cluster_follow::Follower::from_config(config, ingest)?;
        let scoped = config
            .scope
            .as_ref()
            .is_some_and(|s| s.cluster.is_some() || !s.towns.is_empty());
        let publish = if scoped {
            let mut own = ingest.clone();
            own.mqtt.client_id = format!("{}-alert-state", ingest.mqtt.client_id);
            let mut options = ingest::mqtt_options(&own)
                .map_err(|e| anyhow::anyhow!("alert state publisher: {e}"))?;
            // The city's record is retained: a fresh session gets the latest at once.
            options.set_clean_session(true);
            // Ingest's are manual (after the store commits); the broker stops sending to
            // a client whose acknowledgements never come.
            options.set_manual_acks(false);
            Some((options, config.alerts.cluster_state_every))
        } else {
            None
        };
        Ok((publish.is_some() || follow.is_some()).then_some(Publisher { publish, follow }))
    }

    pub fn spawn(
        self,
        tracker: &tokio_util::task::TaskTracker,
        alerts: AlertsHandle,
        shutdown: CancellationToken,
    ) {
        if let Some(follow) = self.follow {
            follow.spawn(tracker, alerts.clone(), shutdown.clone());
        }
        if let Some((options, heartbeat)) = self.publish {
            alerts
                .cluster_voices()
                .hold_for_city_record(Utc::now() + chrono::Duration::seconds(CITY_RECORD_WAIT_S));
            tracker.spawn(run(options, heartbeat, alerts, shutdown));
        }
    }
}
