//! Warning levels in the ledger (docs/design.md#warning-levels): the levels an admin set
//! over parts of the city, and for each town the one in force, which raises its days
//! target to the level's (`[warning_levels.<level>] days_target`) while it lasts.
//!
//! The ledger holds every level that is or will be in force (the store keeps the
//! history); which one applies to a town is decided at each refresh from the time
//! passed in, so a level whose end passes stops applying at the next tick with nobody
//! asking. Scopes are kept by id, not index, so they survive a registry reload as they
//! were written.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Ledger;
use crate::registry::{Registry, Target, TownIdx, WarningLevel};

/// The part of the city a level was set for, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningScope {
    City,
    District(String),
    Cluster(String),
    /// In the order named.
    Towns(Vec<String>),
}

impl WarningScope {
    /// `city`, `district`, `cluster` or `towns`: the store's `scope_kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            WarningScope::City => "city",
            WarningScope::District(_) => "district",
            WarningScope::Cluster(_) => "cluster",
            WarningScope::Towns(_) => "towns",
        }
    }

    /// The ids, comma-separated (empty for the city): the store's `scope_ids`.
    pub fn ids(&self) -> String {
        match self {
            WarningScope::City => String::new(),
            WarningScope::District(id) | WarningScope::Cluster(id) => id.clone(),
            WarningScope::Towns(ids) => ids.join(","),
        }
    }

    /// The scope from the store's `scope_kind` and `scope_ids`; `None` for a kind this
    /// build does not know.
    pub fn from_parts(kind: &str, ids: &str) -> Option<WarningScope> {
        Some(match kind {
            "city" => WarningScope::City,
            "district" => WarningScope::District(ids.to_owned()),
            "cluster" => WarningScope::Cluster(ids.to_owned()),
            "towns" => WarningScope::Towns(
                ids.split(',')
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            _ => return None,
        })
    }

    /// Whether `town` lies in the scope (a district, cluster or town the registry no
    /// longer has covers nothing).
    pub fn covers(&self, registry: &Registry, town: TownIdx) -> bool {
        let t = registry.town(town);
        match self {
            WarningScope::City => true,
            WarningScope::District(id) => registry.districts[t.district.index()].id.as_str() == id,
            WarningScope::Cluster(id) => registry.clusters[t.cluster.index()].id.as_str() == id,
            WarningScope::Towns(ids) => ids.iter().any(|id| id == t.id.as_str()),
        }
    }

    /// Whether every town of this scope lies in `outer`: `none` for a district ends
    /// the levels of its clusters and towns too.
    pub fn within(&self, outer: &WarningScope, registry: &Registry) -> bool {
        self == outer
            || registry
                .town_indices()
                .filter(|&t| self.covers(registry, t))
                .all(|t| outer.covers(registry, t))
    }
}

/// A level set over a scope, from `since` until `until` (or until ended).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WarningSet {
    /// The store's row id.
    pub id: i64,
    pub level: WarningLevel,
    pub scope: WarningScope,
    pub reason: String,
    pub since: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
}

impl WarningSet {
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.since <= now && self.until.is_none_or(|until| now < until)
    }
}

/// The level in force for a town, where it comes from, and the days target it sets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TownWarning {
    #[serde(flatten)]
    pub set: WarningSet,
    /// The level's days target (`[warning_levels.<level>] days_target`), when the
    /// registry gives one; the town's own target still applies when it is higher.
    pub days_target: Option<f64>,
}

impl TownWarning {
    /// `target` under this level: its days raised to the level's, the warning margin
    /// kept above them, so a town held to five days is warned before it falls below.
    pub fn raise(&self, mut target: Target) -> Target {
        if let Some(days) = self.days_target.filter(|&d| d > target.days) {
            target.warn_days += days - target.days;
            target.days = days;
        }
        target
    }
}

impl Ledger {
    /// Replaces the levels set (in force now or later) and recomputes every town at
    /// `now`; returns the towns whose level in force changed.
    pub fn set_warnings(&mut self, sets: Vec<WarningSet>, now: DateTime<Utc>) -> Vec<TownIdx> {
        self.warnings = sets.into();
        let registry = Arc::clone(&self.registry);
        let mut moved = Vec::new();
        for t in registry.town_indices() {
            let before = self.figures(t).warning.clone();
            if self.refresh(t, now).warning != before {
                moved.push(t);
            }
        }
        moved
    }

    /// Every level set that is or will be in force, as last given to
    /// [`Ledger::set_warnings`].
    pub fn warnings(&self) -> &[WarningSet] {
        &self.warnings
    }

    /// The level in force for `town` at `now`: the highest of those covering it (of
    /// two at the same level, the later set).
    pub fn warning_at(&self, town: TownIdx, now: DateTime<Utc>) -> Option<TownWarning> {
        let set = self
            .warnings
            .iter()
            .filter(|s| s.in_force(now) && s.scope.covers(&self.registry, town))
            .max_by_key(|s| (s.level, s.id))?;
        Some(TownWarning {
            days_target: self
                .registry
                .warning_plan(set.level)
                .and_then(|p| p.days_target),
            set: set.clone(),
        })
    }
}
