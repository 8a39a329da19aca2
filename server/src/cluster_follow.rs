//! A city instance follows the clusters that run their own instance
//! (docs/design.md#cluster-instance): one MQTT client of its own on the city broker
//! subscribes, for each cluster of `[alerts] clusters_with_own_instance`, to
//!
//! - `stockpile/v1/cluster/{c}/alerts`: the cluster instance's alert state, retained,
//!   published at least every `cluster_state_every` (its heartbeat);
//! - `stockpile/v1/cluster/{c}/bridge`: Mosquitto's bridge notification, retained `1`
//!   while the cluster broker's bridge is connected and `0` (its will) once it is not,
//!
//! checks each payload (a bad one is counted by reason and logged, never fatal) and
//! hands it to [`ClusterVoices`], where the alert engine reads it: acknowledgements to
//! follow, and whether to take over a silent cluster. While it speaks for a cluster it
//! publishes what it told on `stockpile/v1/cluster/{c}/city`, retained, which the
//! cluster's bridge carries in to the cluster instance for its return.

use std::collections::BTreeMap;
use std::time::Duration;

use alerts::AlertsHandle;
use alerts::cluster_voice::{self, ClusterVoices, Reject};
use chrono::Utc;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS};
use tokio_util::sync::CancellationToken;

/// How often the takeover records are looked at for a change to publish: soon after
/// the city tells, so a cluster instance returning at that moment hears of it.
const RECORD_CHECK: Duration = Duration::from_millis(250);
/// A cluster's rejects are logged at most this often; all are counted.
const REJECT_LOG_EVERY: Duration = Duration::from_secs(60);

/// The city side's client, made before anything runs.
#[derive(Debug)]
pub struct Follower {
    options: MqttOptions,
}

impl Follower {
    /// `None` unless `[alerts] clusters_with_own_instance` names a cluster. The same
    /// broker, credentials and TLS as ingest's, a client id of its own.
    pub fn from_config(
        config: &crate::config::Config,
        ingest: &ingest::IngestConfig,
    ) -> anyhow::Result<Option<Follower>> {
        if config.alerts.clusters_with_own_instance.is_empty() {
            return Ok(None);
        }
        let mut own = ingest.clone();
        own.mqtt.client_id = format!("{}-cluster-follow", ingest.mqtt.client_id);
        let mut options =
            ingest::mqtt_options(&own).map_err(|e| anyhow::anyhow!("cluster follower: {e}"))?;
        // Only the latest of each topic matters, and every one is retained.
        options.set_clean_session(true);
        // Ingest acknowledges by hand once a reading is stored; nothing here is stored,
        // and a broker stops sending to a client whose acknowledgements never come.
        options.set_manual_acks(false);
        Ok(Some(Follower { options }))
    }

    pub fn spawn(
        self,
        tracker: &tokio_util::task::TaskTracker,
        alerts: AlertsHandle,
        shutdown: CancellationToken,
    ) {
        let (client, connection) = AsyncClient::new(self.options, 64);
        let voices = alerts.cluster_voices().clone();
        tracker.spawn(publish_records(
            client.clone(),
            voices.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(follow(connection, client, alerts, shutdown));
    }
}

/// What a topic of a followed cluster carries.
enum Carries {
    AlertState,
    Bridge,
}

/// Which followed cluster's topic `topic` is.
fn topic_of<'a>(clusters: &'a [String], topic: &str) -> Option<(&'a str, Carries)> {
    clusters.iter().find_map(|c| {
        if topic == cluster_voice::alerts_topic(c) {
            Some((c.as_str(), Carries::AlertState))
        } else if topic == cluster_voice::bridge_topic(c) {
            Some((c.as_str(), Carries::Bridge))
        } else {
            None
        }
    })
}

/// Drives the connection: subscribes on every connection (a clean session) and takes
/// in every message of the followed clusters' topics.
async fn follow(
    mut connection: EventLoop,
    client: AsyncClient,
    alerts: AlertsHandle,
    shutdown: CancellationToken,
) {
    let voices = alerts.cluster_voices().clone();
    let clusters = voices.followed();
    let mut logged: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            event = connection.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                tracing::info!(message = "Following the clusters' own instances.", clusters = ?clusters);
                for c in &clusters {
                    for topic in [
                        cluster_voice::alerts_topic(c),
                        cluster_voice::bridge_topic(c),
                    ] {
                        if let Err(error) = client.try_subscribe(topic, QoS::AtLeastOnce) {
                            tracing::warn!(message = "Cannot subscribe to a cluster's topic.", %error);
                        }
                    }
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let Some((cluster, carries)) = topic_of(&clusters, &p.topic) else {
                    continue;
                };
                if let Err(why) = take_in(&alerts, &voices, cluster, carries, &p.payload) {
                    voices.rejected(cluster, &why);
                    log_reject(&mut logged, cluster, &p.topic, &why);
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    let _ = client.disconnect().await;
}

/// One message of `cluster`'s topics, checked and handed to `voices`.
fn take_in(
    alerts: &AlertsHandle,
    voices: &ClusterVoices,
    cluster: &str,
    carries: Carries,
    payload: &[u8],
) -> Result<(), Reject> {
    let now = Utc::now();
    match carries {
        Carries::Bridge => {
            let up = cluster_voice::parse_bridge(payload)?;
            voices.link(cluster, up, now);
            tracing::info!(message = "A cluster's bridge to the city changed state.", %cluster, up);
        }
        Carries::AlertState => {
            let registry = alerts.current_registry();
            let of_cluster = |town: &str| {
                registry.town_idx(town).is_some_and(|t| {
                    registry.clusters[registry.town(t).cluster.index()]
                        .id
                        .as_str()
                        == cluster
                })
            };
            let message = cluster_voice::parse_state(cluster, payload, &of_cluster, now)?;
            voices.heard(cluster, message, now);
        }
    }
    Ok(())
}

/// A cluster's reject, logged at most once a minute per cluster.
fn log_reject(
    logged: &mut BTreeMap<String, tokio::time::Instant>,
    cluster: &str,
    topic: &str,
    why: &Reject,
) {
    let due = logged
        .get(cluster)
        .is_none_or(|at| at.elapsed() >= REJECT_LOG_EVERY);
    if due {
        logged.insert(cluster.to_owned(), tokio::time::Instant::now());
        tracing::warn!(
            message = "A cluster's message was rejected.",
            %cluster,
            %topic,
            reason = why.reason,
            detail = %why.detail
        );
    }
}

/// Publishes each followed cluster's takeover record, retained, whenever it changes.
async fn publish_records(client: AsyncClient, voices: ClusterVoices, shutdown: CancellationToken) {
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    let mut checks = tokio::time::interval(RECORD_CHECK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = checks.tick() => {}
        }
        for cluster in voices.followed() {
            let Some((record, version)) = voices.record(&cluster) else {
                continue;
            };
            if sent.get(&cluster) == Some(&version) {
                continue;
            }
            let payload = serde_json::to_vec(&record).expect("record serialises");
            let topic = cluster_voice::city_topic(&cluster);
            match client.publish(topic, QoS::AtLeastOnce, true, payload).await {
                Ok(()) => {
                    sent.insert(cluster, version);
                }
                Err(error) => tracing::warn!(message = "Cannot publish a takeover record.", %error),
            }
        }
    }
}
