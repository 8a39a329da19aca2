//! Exactly one voice per alert (docs/design.md#cluster-instance): a city instance
//! leaves the notifications of a cluster that runs its own instance to the officers'
//! and cluster contacts' own instance, which reaches them over local channels when the
//! city cannot, and keeps the district and city escalations, which only the city makes.
//! The city still evaluates those towns' alerts: its board, API and escalation clock
//! follow them, and its alerts follow the cluster's acknowledgements.
//!
//! When the cluster's instance falls silent while its link is up, the city takes over
//! ([`ClusterVoices::update_takeovers`]): it tells the cluster's officers and contacts
//! itself, raises `cluster_instance_silent`, and records what it told, which the
//! cluster instance reads back so that it does not tell it again once it returns.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use reserve::registry::TownIdx;
use store::AlertState;

use super::{Alert, Engine};
use crate::alert::{Event, LEVEL_TOWN};
use crate::cluster_voice::{ClusterVoices, Told, acknowledged_by};
use crate::handle::AlertStatus;
use crate::rules::{Condition, Detail, Rule};

/// The escalation level of cluster contacts: town officers are [`LEVEL_TOWN`], below.
pub(super) const LEVEL_CLUSTER: u8 = LEVEL_TOWN + 1;
/// The level `cluster_instance_silent` starts at: cluster and district contacts hear of
/// it at once (the town officers' instance is what fell silent; not theirs to mend).
pub(super) const LEVEL_DISTRICT: u8 = LEVEL_CLUSTER + 1;

impl Engine {
    /// Leaves the town- and cluster-level notifications of these clusters (registry ids,
    /// checked at load) to their own instances.
    pub fn with_clusters_with_own_instance(mut self, clusters: Vec<String>) -> Engine {
        self.clusters_with_own_instance = clusters;
        self
    }

    /// What this instance hears of the clusters' instances (and, on a cluster instance,
    /// of what the city told for it).
    pub fn with_cluster_voices(mut self, voices: ClusterVoices) -> Engine {
        self.voices = voices;
        self
    }

    pub(crate) fn voices(&self) -> &ClusterVoices {
        &self.voices
    }

    /// `(level, contact index)` of everyone this instance may tell about `town`; which
    /// alert each hears of is [`Engine::hears`]'s.
    pub(super) fn audience_of(&self, town: TownIdx) -> Vec<(u8, usize)> {
        self.audience.of(&self.registry, town)
    }

    /// Whether the contact at `level` hears of `alert` from this instance.
    pub(super) fn hears(&self, alert: &Alert, level: u8) -> bool {
        if alert.rule == Rule::ClusterInstanceSilent {
            // This instance's own news, whoever speaks for the cluster.
            return level > LEVEL_TOWN;
        }
        level > LEVEL_CLUSTER || !self.left_to_cluster_instance(alert.town)
    }

    /// By name, not index: a registry reload renumbers clusters.
    fn left_to_cluster_instance(&self, town: TownIdx) -> bool {
        let Some(cluster) = self.cluster_with_own_instance(town) else {
            return false;
        };
        !self.voices.speaks_for(cluster)
    }

    /// The id of `town`'s cluster, when it runs its own instance.
    fn cluster_with_own_instance(&self, town: TownIdx) -> Option<&str> {
        if self.clusters_with_own_instance.is_empty() {
            return None;
        }
        let cluster = &self.registry.clusters[self.registry.town(town).cluster.index()];
        self.clusters_with_own_instance
            .iter()
            .find(|c| c.as_str() == cluster.id.as_str())
            .map(String::as_str)
    }

    /// After a flush: what this city instance told a taken-over cluster's officers and
    /// contacts, recorded for the cluster instance's return.
    pub(super) fn record_told(&self, told: &[&Alert], now: DateTime<Utc>) {
        for alert in told {
            if alert.rule == Rule::ClusterInstanceSilent {
                continue;
            }
            let Some(cluster) = self.cluster_with_own_instance(alert.town) else {
                continue;
            };
            let resolved = alert.notify_event == Some(Event::Resolved);
            self.voices
                .record_told(cluster, &alert.key, Told { resolved, at: now });
        }
    }

    /// On a cluster instance: whether the city already told `alert`'s notice while this
    /// instance was silent. It is then marked told here without a message.
    pub(super) fn told_by_city(&self, alert: &Alert, now: DateTime<Utc>) -> bool {
        let resolved = match alert.notify_event {
            Some(Event::Resolved) => true,
            Some(Event::Fired | Event::Raised) => false,
            _ => return false,
        };
        self.voices.told_by_city(&alert.key, resolved, now)
    }

    /// Follows the acknowledgements of the clusters' instances: an open alert of this
    /// instance that the cluster's officers acknowledged there is acknowledged here, by
    /// the cluster instance at its time, so reminders and escalation stop here too.
    pub fn follow_cluster_acks(&mut self) -> Result<(), store::StoreError> {
        let mut due = Vec::new();
        for (cluster, alerts) in self.voices.states() {
            for published in alerts {
                let (Some(at), AlertStatus::Firing) = (published.acknowledged_at, published.state)
                else {
                    continue;
                };
                let Some(town) = self.registry.town_idx(&published.town) else {
                    continue;
                };
                let Some(alert) = self.open.get(&town).and_then(|a| a.get(&published.key())) else {
                    continue;
                };
                // The cluster's acknowledgement covers the severity it was given at.
                if alert.state == AlertState::Firing
                    && alert.ack.is_none()
                    && alert.severity <= published.severity
                {
                    due.push((alert.id, acknowledged_by(&cluster), at));
                }
            }
        }
        for (id, by, at) in due {
            self.ack(id, &by, "", at)?;
        }
        Ok(())
    }

    /// `cluster_instance_silent` of each cluster this instance has taken over, by the
    /// town it is raised on: the cluster's first in registry order (an alert needs a
    /// town; that one is as good as any, and stays the same).
    pub fn cluster_silent_conditions(
        &self,
        taken_over: &[(String, Option<DateTime<Utc>>)],
        now: DateTime<Utc>,
    ) -> HashMap<TownIdx, Condition> {
        let mut conditions = HashMap::new();
        if taken_over.is_empty() {
            return conditions;
        }
        for town in self.registry.town_indices() {
            let cluster = &self.registry.clusters[self.registry.town(town).cluster.index()];
            let Some((_, last_heard)) = taken_over
                .iter()
                .find(|(c, _)| c.as_str() == cluster.id.as_str())
            else {
                continue;
            };
            if conditions
                .values()
                .any(|c: &Condition| c.subject == cluster.id.as_str())
            {
                continue;
            }
            conditions.insert(
                town,
                Condition {
                    town,
                    rule: Rule::ClusterInstanceSilent,
                    subject: cluster.id.to_string(),
                    facility: None,
                    since: Some(last_heard.unwrap_or(now)),
                    detail: Detail::ClusterSilent {
                        cluster: cluster.id.to_string(),
                        cluster_name: cluster.name.clone(),
                        last_heard: *last_heard,
                    },
                },
            );
        }
        conditions
    }
}
