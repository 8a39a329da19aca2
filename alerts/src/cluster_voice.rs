//! Exactly one voice per alert between a city instance and the clusters that run their
//! own (docs/design.md#cluster-instance), as state shared by the alert engine, the API
//! and the server's MQTT clients:
//!
//! - **City side.** For each cluster of `[alerts] clusters_with_own_instance`: the
//!   latest alert state its instance published (`stockpile/v1/cluster/{c}/alerts`),
//!   when it was heard, and the state of its bridge (Mosquitto's notification,
//!   `stockpile/v1/cluster/{c}/bridge`). The engine follows the cluster's
//!   acknowledgements, and takes over the cluster's notifications when the instance
//!   has been silent for `cluster_silent_after` while the bridge is up; what it tells
//!   meanwhile is recorded and published back (`stockpile/v1/cluster/{c}/city`).
//! - **Cluster side.** That record, received over the bridge: the instance does not
//!   tell again what the city told while it was down.
//!
//! The payloads are checked here, so a bad one is a counted reject with a reason, never
//! a crash, whichever client received it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::handle::AlertStatus;
use crate::rules::{Rule, Severity};

/// A payload larger than this is rejected unread: 50 resolved alerts and a cluster's
/// open ones fit in a small fraction of it.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// A published `ts` further ahead of this instance's clock is rejected.
const MAX_CLOCK_AHEAD: chrono::Duration = chrono::Duration::minutes(5);
/// How long after the city's record arrives its tellings stand for this cluster
/// instance's: a returning instance replays its backlog and raises what the city told
/// within minutes. An alert that fires later is a new episode, the instance's own. (An
/// instance cannot tell one episode from two across its own downtime; this bounds the
/// guess.)
pub const RECORD_VALID: chrono::Duration = chrono::Duration::minutes(15);
/// How long a starting cluster instance waits for the city to hand back when the city's
/// record says it speaks for the cluster: this instance's first heartbeat reaches the
/// city at once, and the city hands back at its next evaluation (10 s).
pub const HANDBACK_WAIT: chrono::Duration = chrono::Duration::seconds(30);
/// Who the city says acknowledged an alert the cluster's officers acknowledged: the
/// cluster's instance, never a person (the published state carries no names).
pub fn acknowledged_by(cluster: &str) -> String {
    format!("cluster instance {cluster}")
}

/// The topic a cluster instance publishes its alert state on.
pub fn alerts_topic(cluster: &str) -> String {
    format!("stockpile/v1/cluster/{cluster}/alerts")
}

/// The topic the cluster broker's bridge notifications reach the city broker on
/// (`notification_topic` in deploy/cluster/bridge.conf): retained `1` while the bridge
/// is connected, `0` (its will) once it is not.
pub fn bridge_topic(cluster: &str) -> String {
    format!("stockpile/v1/cluster/{cluster}/bridge")
}

/// The topic the city publishes what it told during a takeover on; the bridge carries
/// it in to the cluster broker.
pub fn city_topic(cluster: &str) -> String {
    format!("stockpile/v1/cluster/{cluster}/city")
}

/// One alert of a cluster instance's published state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedAlert {
    pub town: String,
    pub rule: Rule,
    /// Category id for reserve rules, facility id for the others.
    pub subject: String,
    pub severity: Severity,
    pub state: AlertStatus,
    pub fired_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl PublishedAlert {
    /// Its key, as both instances name the alert (`town/family/subject`).
    pub fn key(&self) -> String {
        crate::rules::alert_key(&self.town, self.rule, &self.subject)
    }

    /// What the city's API says of it.
    pub fn voice_state(&self) -> ClusterAlertState {
        match (self.state, self.acknowledged_at) {
            (AlertStatus::Resolved, _) => ClusterAlertState::Resolved,
            (_, Some(_)) => ClusterAlertState::Acknowledged,
            (AlertStatus::Pending, None) => ClusterAlertState::Pending,
            (AlertStatus::Firing, None) => ClusterAlertState::Fired,
        }
    }
}

/// A cluster instance's alert state message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterMessage {
    pub cluster: String,
    /// When it was published: the instance's heartbeat.
    pub ts: DateTime<Utc>,
    pub alerts: Vec<PublishedAlert>,
}

/// What the city told a cluster's officers and contacts during its latest takeover.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CityRecord {
    pub cluster: String,
    /// When the takeover began; `None` before the first one.
    pub since: Option<DateTime<Utc>>,
    /// Whether the city speaks for the cluster now.
    pub speaking: bool,
    /// Alert key → the last thing the city told of it, and when.
    pub told: BTreeMap<String, Told>,
}

/// One telling of the city during a takeover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Told {
    /// `true` when it told the alert resolved, else fired (or raised, reminded).
    pub resolved: bool,
    pub at: DateTime<Utc>,
}

/// The cluster's view of one of its alerts, in the city's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterAlertState {
    Pending,
    Fired,
    Acknowledged,
    Resolved,
}

/// `cluster_state` of an alert in the city's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ClusterStateView {
    pub cluster: String,
    pub state: ClusterAlertState,
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// When the city last heard the cluster's alert state.
    pub heard_at: DateTime<Utc>,
}

/// The bridge's state as the city broker last said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Up,
    Down,
    /// No bridge notification heard (bridge without `notifications`, or none yet).
    Unknown,
}

/// A cluster instance as the city sees it (`GET /api/v1/clusters`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InstanceView {
    /// When its alert state was last heard (the time it said it published).
    pub last_heard: Option<DateTime<Utc>>,
    /// Heard within `cluster_silent_after` (counted while the link is up).
    pub alive: bool,
    pub link: LinkState,
    /// The city speaks for the cluster now (`cluster_instance_silent`).
    pub taken_over: bool,
    pub taken_over_since: Option<DateTime<Utc>>,
    /// Payloads of the cluster's topics this instance rejected, by reason.
    pub rejects: BTreeMap<String, u64>,
}

/// Why a payload was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

fn reject(reason: &'static str, detail: impl Into<String>) -> Reject {
    Reject {
        reason,
        detail: detail.into(),
    }
}

/// Checks a cluster's alert state payload received on `cluster`'s topic.
pub fn parse_state(
    cluster: &str,
    payload: &[u8],
    towns_of_cluster: &dyn Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Result<ClusterMessage, Reject> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(reject("too_large", format!("{} bytes", payload.len())));
    }
    let message: ClusterMessage = serde_json::from_slice(payload).map_err(|e| {
        let reason = if e.is_syntax() || e.is_eof() {
            "not_json"
        } else {
            "bad_payload"
        };
        reject(reason, e.to_string())
    })?;
    if message.cluster != cluster {
        return Err(reject(
            "wrong_cluster",
            format!("{:?} published on {cluster}'s topic", message.cluster),
        ));
    }
    if message.ts > now + MAX_CLOCK_AHEAD {
        return Err(reject("ts_in_future", format!("ts {}", message.ts)));
    }
    if let Some(a) = message.alerts.iter().find(|a| !towns_of_cluster(&a.town)) {
        return Err(reject(
            "unknown_town",
            format!("{:?} is not a town of cluster {cluster}", a.town),
        ));
    }
    Ok(message)
}

/// Checks a bridge notification: `1` connected, `0` not.
pub fn parse_bridge(payload: &[u8]) -> Result<bool, Reject> {
    match std::str::from_utf8(payload).map(str::trim) {
        Ok("1") => Ok(true),
        Ok("0") => Ok(false),
        _ => Err(reject(
            "bad_bridge_state",
            format!(
                "expected 1 or 0, got {:?}",
                String::from_utf8_lossy(payload)
            ),
        )),
    }
}

/// Checks the city's record of a takeover, received on a cluster instance.
pub fn parse_record(cluster: &str, payload: &[u8]) -> Result<CityRecord, Reject> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(reject("too_large", format!("{} bytes", payload.len())));
    }
    let record: CityRecord =
        serde_json::from_slice(payload).map_err(|e| reject("bad_payload", e.to_string()))?;
    if record.cluster != cluster {
        return Err(reject(
            "wrong_cluster",
            format!("{:?} on {cluster}'s topic", record.cluster),
        ));
    }
    Ok(record)
}

/// What the city knows of one cluster with its own instance.
#[derive(Debug, Default)]
struct Followed {
    state: Option<ClusterMessage>,
    /// When the instance last said it was alive: its `ts`, never later than arrival.
    heard_at: Option<DateTime<Utc>>,
    link: Option<bool>,
    /// When the link was last seen coming up: silence is counted from no earlier.
    link_up_at: Option<DateTime<Utc>>,
    record: CityRecord,
    /// Bumped with every change of `record`, so its publisher knows to send it.
    record_version: u64,
    rejects: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct Voices {
    started_at: DateTime<Utc>,
    silent_after: chrono::Duration,
    /// City side: the clusters with their own instance.
    followed: BTreeMap<String, Followed>,
    /// Cluster side: alert key → what the city told of it while this instance was
    /// silent, not yet matched with a notice of this instance, and until when it may be.
    told_by_city: BTreeMap<String, (Told, DateTime<Utc>)>,
    /// Cluster side: tellings already matched, so a redelivered record does not bring
    /// them back.
    used: BTreeMap<String, DateTime<Utc>>,
    /// Cluster side: notifications wait until the city's record is in, or this passes.
    hold_until: Option<DateTime<Utc>>,
}

/// Whether a followed instance counts as silent at `now`: not heard for
/// `silent_after` while its link is up (counted from the later of the last heartbeat,
/// the link coming up and this instance's start). A cut link, or one never reported,
/// is a cluster alone by design, not a dead one.
fn silent(
    started_at: DateTime<Utc>,
    silent_after: chrono::Duration,
    followed: &Followed,
    now: DateTime<Utc>,
) -> bool {
    if followed.link != Some(true) {
        return false;
    }
    let from = [followed.heard_at, followed.link_up_at, Some(started_at)]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(started_at);
    now - from >= silent_after
}

/// The shared state; cheap to clone.
#[derive(Debug, Clone)]
pub struct ClusterVoices(Arc<Mutex<Voices>>);

impl ClusterVoices {
    /// For an instance following `clusters` (empty on a cluster instance).
    pub fn new(clusters: &[String], silent_after: std::time::Duration) -> ClusterVoices {
        let followed = clusters
            .iter()
            .map(|c| {
                let record = CityRecord {
                    cluster: c.clone(),
                    ..CityRecord::default()
                };
                (
                    c.clone(),
                    Followed {
                        record,
                        ..Followed::default()
                    },
                )
            })
            .collect();
        ClusterVoices(Arc::new(Mutex::new(Voices {
            started_at: Utc::now(),
            silent_after: crate::chrono_duration(silent_after),
            followed,
            told_by_city: BTreeMap::new(),
            used: BTreeMap::new(),
            hold_until: None,
        })))
    }

    /// As if this instance had started at `at` (tests drive the clock).
    #[cfg(test)]
    pub(crate) fn started_at(self, at: DateTime<Utc>) -> ClusterVoices {
        self.lock().started_at = at;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Voices> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The clusters this instance follows.
    pub fn followed(&self) -> Vec<String> {
        self.lock().followed.keys().cloned().collect()
    }

    /// A checked alert state of `cluster`. An older `ts` than the one held (a queue
    /// replayed after a cut) changes nothing.
    pub fn heard(&self, cluster: &str, message: ClusterMessage, now: DateTime<Utc>) {
        let mut voices = self.lock();
        let Some(followed) = voices.followed.get_mut(cluster) else {
            return;
        };
        if followed
            .state
            .as_ref()
            .is_some_and(|held| held.ts > message.ts)
        {
            return;
        }
        followed.heard_at = Some(message.ts.min(now));
        followed.state = Some(message);
    }

    /// A bridge notification of `cluster`.
    pub fn link(&self, cluster: &str, up: bool, now: DateTime<Utc>) {
        let mut voices = self.lock();
        if let Some(followed) = voices.followed.get_mut(cluster) {
            if up && followed.link != Some(true) {
                followed.link_up_at = Some(now);
            }
            followed.link = Some(up);
        }
    }

    /// Counts a rejected payload of `cluster`'s topics.
    pub fn rejected(&self, cluster: &str, why: &Reject) {
        let mut voices = self.lock();
        if let Some(followed) = voices.followed.get_mut(cluster) {
            *followed.rejects.entry(why.reason.to_owned()).or_default() += 1;
        }
    }

    /// Starts and ends takeovers as the clusters' instances fall silent and are heard
    /// again. Returns the clusters taken over now, with when each was last heard.
    pub fn update_takeovers(&self, now: DateTime<Utc>) -> Vec<(String, Option<DateTime<Utc>>)> {
        let mut guard = self.lock();
        let voices = &mut *guard;
        let mut speaking = Vec::new();
        for (cluster, followed) in voices.followed.iter_mut() {
            let silent = silent(voices.started_at, voices.silent_after, followed, now);
            match (silent, followed.record.speaking) {
                (true, false) => {
                    tracing::warn!(
                        message = "A cluster instance is silent while its link is up; the city takes over its notifications.",
                        %cluster,
                        last_heard = ?followed.heard_at
                    );
                    followed.record = CityRecord {
                        cluster: cluster.clone(),
                        since: Some(now),
                        speaking: true,
                        told: BTreeMap::new(),
                    };
                    followed.record_version += 1;
                }
                (false, true) => {
                    tracing::info!(
                        message = "A cluster instance is heard again; the city hands its notifications back.",
                        %cluster
                    );
                    followed.record.speaking = false;
                    followed.record_version += 1;
                }
                _ => {}
            }
            if followed.record.speaking {
                speaking.push((cluster.clone(), followed.heard_at));
            }
        }
        speaking
    }

    /// Whether this instance has taken over the notifications of `cluster`, which has
    /// its own instance.
    pub fn speaks_for(&self, cluster: &str) -> bool {
        self.lock()
            .followed
            .get(cluster)
            .is_some_and(|f| f.record.speaking)
    }

    /// Notes that the city told `key` of `cluster` during a takeover.
    pub fn record_told(&self, cluster: &str, key: &str, told: Told) {
        let mut voices = self.lock();
        if let Some(followed) = voices.followed.get_mut(cluster)
            && followed.record.speaking
        {
            followed.record.told.insert(key.to_owned(), told);
            followed.record_version += 1;
        }
    }

    /// `cluster`'s takeover record and its version, for the publisher: published even
    /// before any takeover, so a starting cluster instance finds one at once.
    pub fn record(&self, cluster: &str) -> Option<(CityRecord, u64)> {
        let voices = self.lock();
        let followed = voices.followed.get(cluster)?;
        Some((followed.record.clone(), followed.record_version))
    }

    /// Cluster side, at start: notifications wait for the city's record (retained, so it
    /// comes within a moment of subscribing when there is one) until `until` at most,
    /// so that what the city told while this instance was down is not told again.
    pub fn hold_for_city_record(&self, until: DateTime<Utc>) {
        self.lock().hold_until = Some(until);
    }

    /// Until when notifications wait, if they do at `now`.
    pub fn held(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.lock().hold_until.filter(|&until| until > now)
    }

    /// The cluster's latest published alerts, for following its acknowledgements.
    pub fn states(&self) -> Vec<(String, Vec<PublishedAlert>)> {
        self.lock()
            .followed
            .iter()
            .filter_map(|(c, f)| Some((c.clone(), f.state.as_ref()?.alerts.clone())))
            .collect()
    }

    /// What the cluster says of alert `key` of its town, for the city's API.
    pub fn state_of(&self, cluster: &str, key: &str) -> Option<ClusterStateView> {
        let voices = self.lock();
        let followed = voices.followed.get(cluster)?;
        let heard_at = followed.heard_at?;
        let alert = followed
            .state
            .as_ref()?
            .alerts
            .iter()
            .find(|a| a.key() == key)?;
        Some(ClusterStateView {
            cluster: cluster.to_owned(),
            state: alert.voice_state(),
            acknowledged_at: alert.acknowledged_at,
            heard_at,
        })
    }

    /// `cluster`'s instance as the city sees it at `now`; `None` when not followed.
    pub fn instance(&self, cluster: &str, now: DateTime<Utc>) -> Option<InstanceView> {
        let voices = self.lock();
        let followed = voices.followed.get(cluster)?;
        // Heard within the window, whatever the link: a cut cluster may be alive, but
        // this instance cannot know it.
        let alive = followed
            .heard_at
            .is_some_and(|h| now - h < voices.silent_after);
        Some(InstanceView {
            last_heard: followed.heard_at,
            alive,
            link: match followed.link {
                Some(true) => LinkState::Up,
                Some(false) => LinkState::Down,
                None => LinkState::Unknown,
            },
            taken_over: followed.record.speaking,
            taken_over_since: followed.record.since.filter(|_| followed.record.speaking),
            rejects: followed.rejects.clone(),
        })
    }

    /// Cluster side: the city's takeover record, received at `now`. Tellings already
    /// matched stay used; the others may be matched for [`RECORD_VALID`].
    pub fn city_record(&self, record: CityRecord, now: DateTime<Utc>) {
        let mut voices = self.lock();
        let fresh: BTreeMap<String, (Told, DateTime<Utc>)> = record
            .told
            .into_iter()
            .filter(|(key, told)| voices.used.get(key) != Some(&told.at))
            .map(|(key, told)| (key, (told, now + RECORD_VALID)))
            .collect();
        voices.told_by_city = fresh;
        if !record.speaking {
            voices.hold_until = None;
        } else if voices.hold_until.is_some_and(|until| until > now) {
            // The city still speaks for this instance, which has just started: it hands
            // back once it hears this instance, and its next record is then complete.
            voices.hold_until = Some(now + HANDBACK_WAIT);
        }
    }

    /// Cluster side: whether the city already told what this instance is about to tell
    /// of `key` at `now` (`resolved` or not). A match is used up: the next episode of
    /// the alert is this instance's to tell; so is one after [`RECORD_VALID`].
    pub fn told_by_city(&self, key: &str, resolved: bool, now: DateTime<Utc>) -> bool {
        let mut voices = self.lock();
        let Some((told, until)) = voices.told_by_city.get(key).copied() else {
            return false;
        };
        if told.resolved != resolved || now > until {
            return false;
        }
        voices.told_by_city.remove(key);
        voices.used.insert(key.to_owned(), told.at);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn state(ts: &str) -> ClusterMessage {
        ClusterMessage {
            cluster: "c07".into(),
            ts: t(ts),
            alerts: Vec::new(),
        }
    }

    #[test]
    fn silence_while_the_link_is_up_is_a_takeover_and_a_heartbeat_hands_back() {
        let voices = ClusterVoices::new(&["c07".into()], std::time::Duration::from_secs(300));
        voices.lock().started_at = t("2026-12-01T00:00:00Z");
        voices.heard(
            "c07",
            state("2026-12-01T00:01:00Z"),
            t("2026-12-01T00:01:00Z"),
        );
        // No bridge state: alone by design, never taken over.
        assert!(
            voices
                .update_takeovers(t("2026-12-01T01:00:00Z"))
                .is_empty()
        );
        voices.link("c07", true, t("2026-12-01T01:00:00Z"));
        // Silence counts from the link coming up.
        assert!(
            voices
                .update_takeovers(t("2026-12-01T01:04:00Z"))
                .is_empty()
        );
        let taken = voices.update_takeovers(t("2026-12-01T01:05:00Z"));
        assert_eq!(taken.len(), 1);
        assert!(voices.speaks_for("c07"));
        voices.record_told(
            "c07",
            "qianmen/reserve/water",
            Told {
                resolved: false,
                at: t("2026-12-01T01:06:00Z"),
            },
        );
        voices.heard(
            "c07",
            state("2026-12-01T01:07:00Z"),
            t("2026-12-01T01:07:00Z"),
        );
        assert!(
            voices
                .update_takeovers(t("2026-12-01T01:07:01Z"))
                .is_empty()
        );
        assert!(!voices.speaks_for("c07"));
        let (record, _) = voices.record("c07").expect("a record");
        assert!(!record.speaking);
        assert_eq!(record.told.len(), 1);
        // A cut link stops any takeover at once.
        voices.link("c07", false, t("2026-12-01T02:00:00Z"));
        assert!(
            voices
                .update_takeovers(t("2026-12-01T03:00:00Z"))
                .is_empty()
        );
    }

    #[test]
    fn an_old_state_replayed_after_a_cut_is_not_a_heartbeat() {
        let voices = ClusterVoices::new(&["c07".into()], std::time::Duration::from_secs(300));
        voices.heard(
            "c07",
            state("2026-12-01T00:10:00Z"),
            t("2026-12-01T00:10:00Z"),
        );
        voices.heard(
            "c07",
            state("2026-12-01T00:05:00Z"),
            t("2026-12-01T00:11:00Z"),
        );
        let view = voices
            .instance("c07", t("2026-12-01T00:11:00Z"))
            .expect("followed");
        assert_eq!(view.last_heard, Some(t("2026-12-01T00:10:00Z")));
    }

    #[test]
    fn bad_payloads_are_rejects_with_reasons() {
        let now = t("2026-12-01T00:00:00Z");
        let towns = |town: &str| town == "qianmen";
        let reason = |payload: &str| {
            parse_state("c07", payload.as_bytes(), &towns, now)
                .err()
                .map(|r| r.reason)
        };
        assert_eq!(reason("{"), Some("not_json"));
        assert_eq!(reason(r#"{"cluster": "c07"}"#), Some("bad_payload"));
        assert_eq!(
            reason(r#"{"cluster": "c08", "ts": "2026-12-01T00:00:00Z", "alerts": []}"#),
            Some("wrong_cluster")
        );
        assert_eq!(
            reason(r#"{"cluster": "c07", "ts": "2026-12-01T01:00:00Z", "alerts": []}"#),
            Some("ts_in_future")
        );
        let other_town = r#"{"cluster": "c07", "ts": "2026-12-01T00:00:00Z", "alerts": [
            {"town": "tiantan", "rule": "reserve_below_target", "subject": "water",
             "severity": "critical", "state": "firing", "fired_at": null,
             "acknowledged_at": null, "resolved_at": null}]}"#;
        assert_eq!(reason(other_town), Some("unknown_town"));
        assert_eq!(
            reason(&other_town.replace("tiantan", "qianmen")),
            None,
            "a good one is taken"
        );
        assert_eq!(parse_bridge(b"1"), Ok(true));
        assert_eq!(parse_bridge(b" 0\n"), Ok(false));
        assert_eq!(
            parse_bridge(b"up").map_err(|r| r.reason),
            Err("bad_bridge_state")
        );
    }

    #[test]
    fn what_the_city_told_is_not_told_again_once() {
        let voices = ClusterVoices::new(&[], std::time::Duration::from_secs(300));
        let told = Told {
            resolved: false,
            at: t("2026-12-01T01:06:00Z"),
        };
        let record = CityRecord {
            cluster: "c07".into(),
            since: Some(t("2026-12-01T01:05:00Z")),
            speaking: false,
            told: BTreeMap::from([("qianmen/reserve/water".to_owned(), told)]),
        };
        let back = t("2026-12-01T01:10:00Z");
        voices.city_record(record.clone(), back);
        let key = "qianmen/reserve/water";
        assert!(
            !voices.told_by_city(key, true, back),
            "told fired, not resolved"
        );
        let later = back + RECORD_VALID + chrono::Duration::seconds(1);
        assert!(!voices.told_by_city(key, false, later), "a later episode");
        assert!(voices.told_by_city(key, false, back));
        assert!(!voices.told_by_city(key, false, back), "used up");
        voices.city_record(record, back);
        assert!(!voices.told_by_city(key, false, back), "redelivered");
    }
}
