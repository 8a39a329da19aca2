//! The engine over an edited registry (docs/design.md#registry-reload).
//!
//! Alerts are stored by ids, the engine's cache by index: adopting a registry writes
//! down what only the old registry can say (which facilities are gone), then reads the
//! cache again from the store against the new one.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use reserve::Registry;
use store::{AlertState, StoreError};

use reserve::registry::TownIdx;

use super::{Audience, Engine, firing_series, resolve};
use crate::alert::{self, Alert};
use crate::rules::Detail;

impl Engine {
    /// Adopts `registry`, the one the ledger is on now. An open alert about a facility
    /// the new registry lacks resolves with the reason (`Detail::Removed`), told to
    /// whoever heard it fired; alerts of a town the new registry lacks close without a
    /// message (its contacts may be gone with it). The caller evaluates every town
    /// next: population, groups and targets may have moved.
    pub fn adopt_registry(
        &mut self,
        registry: Arc<Registry>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let removed = self.removed_facility_alerts(&registry, now);
        if !removed.is_empty() {
            let series = self.series_without(&removed, now);
            let mut batch = self.store.alert_batch()?;
            for (_, alert, pending) in &removed {
                if *pending {
                    // Never told: gone as a pending alert whose condition passed is.
                    batch.delete_alert(alert.id)?;
                } else {
                    batch.update_alert(&alert::encode(alert, &self.registry))?;
                }
            }
            for line in &series {
                batch.enqueue_influx_line(line, now)?;
            }
            batch.commit()?;
            tracing::info!(
                message = "Alerts of facilities removed from the registry resolved.",
                alerts = ?removed.iter().map(|(_, a, _)| a.id).collect::<Vec<_>>()
            );
        }
        self.audience = Audience::new(&registry);
        self.registry = registry;
        // Towns are renumbered: their catch-up starts afresh (docs/design.md#lifecycle).
        self.late.forget();
        // The cache again, by the new indices; resolutions waiting to be told are
        // flushed now.
        self.reload(now)
    }

    /// The `alert` series points (docs/design.md#influxdb-series) of the towns whose
    /// firing alerts `removed` ends, so a wall display stops counting them.
    fn series_without(
        &self,
        removed: &[(TownIdx, Alert, bool)],
        now: DateTime<Utc>,
    ) -> Vec<String> {
        if !self.influx_series {
            return Vec::new();
        }
        let towns: std::collections::BTreeSet<TownIdx> =
            removed.iter().map(|(t, _, _)| *t).collect();
        let mut lines = Vec::new();
        for town in towns {
            let Some(before) = self.open.get(&town) else {
                continue;
            };
            let mut after = before.clone();
            for (_, alert, _) in removed.iter().filter(|(t, _, _)| *t == town) {
                after.remove(&alert.key);
            }
            lines.extend(firing_series(&self.registry, town, before, &after, now));
        }
        lines
    }

    /// The open alerts about facilities `next` lacks, resolved, with their town and
    /// whether each was still pending; alerts of towns `next` lacks are left to
    /// [`Engine::reload`].
    fn removed_facility_alerts(
        &self,
        next: &Registry,
        now: DateTime<Utc>,
    ) -> Vec<(TownIdx, Alert, bool)> {
        let mut removed = Vec::new();
        for (&town, alerts) in &self.open {
            if next
                .town_idx(self.registry.town(town).id.as_str())
                .is_none()
            {
                continue;
            }
            for alert in alerts.values() {
                let Some(facility) = alert.detail.facility() else {
                    continue;
                };
                if next.facility_idx(facility).is_some() {
                    continue;
                }
                let pending = alert.state == AlertState::Pending;
                let mut resolved = alert.clone();
                let facility_name = self.registry.facility_idx(facility).map_or_else(
                    || facility.to_owned(),
                    |f| self.registry.facility(f).name.clone(),
                );
                // A silence still holds: a facility in maintenance may be removed
                // without a message.
                let silenced = self.silenced(town, alert.rule, Some(facility), now);
                resolve(&mut resolved, &[], silenced, now);
                resolved.detail = Detail::Removed {
                    facility: facility.to_owned(),
                    facility_name,
                };
                removed.push((town, resolved, pending));
            }
        }
        removed
    }
}
