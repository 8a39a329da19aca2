//! Which vulnerable people a town's shortfalls reach (docs/design.md#communities).
//!
//! A community is affected when the water point or power unit that serves it is not
//! ready (all its vulnerable people: nobody there has water or power), or when its town
//! is below target in a category a group depends on (a category's `group`: only that
//! group's people). Counts only: the registry names no persons.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Ledger;
use crate::coverage::Level;
use crate::registry::{CategoryIdx, Community, FacilityIdx, Group, TownIdx};

/// Why a community's people are counted as affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The water point that serves the community is not ready.
    WaterPointNotReady(FacilityIdx),
    /// The power unit that serves the community is not ready.
    PowerUnitNotReady(FacilityIdx),
    /// The town is below target in a category this group depends on.
    BelowTarget {
        category: CategoryIdx,
        group: String,
    },
}

/// One affected community and whom in it.
#[derive(Debug, Clone, PartialEq)]
pub struct AffectedCommunity {
    /// Position in [`crate::registry::Registry::communities`].
    pub community: usize,
    /// Affected people by group; only groups with people.
    pub groups: BTreeMap<String, u64>,
    /// Sum of `groups`: each person counted once, whatever the number of causes.
    pub people: u64,
    pub causes: Vec<Cause>,
}

/// The affected communities of one town, in registry order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TownVulnerable {
    pub communities: Vec<AffectedCommunity>,
    /// Affected people over the communities.
    pub people: u64,
}

impl TownVulnerable {
    pub fn is_empty(&self) -> bool {
        self.communities.is_empty()
    }
}

/// Who in `town` is affected now, from the ledger's latest figures. A facility's
/// readiness comes from its own town's figures, so a community served from a
/// neighbouring town's water point is counted when that point fails.
pub fn affected(ledger: &Ledger, town: TownIdx) -> TownVulnerable {
    let registry = ledger.registry();
    let mut out = TownVulnerable::default();
    // Early: most towns of a city list no communities.
    if registry.communities_of(town).is_empty() {
        return TownVulnerable::default();
    }
    let below = below_target_groups(ledger, town);
    let first = registry.communities_start(town);
    for (i, community) in registry.communities_of(town).iter().enumerate() {
        let i = first + i;
        let causes = causes(ledger, community, &below);
        let groups = affected_groups(community, &causes);
        let people: u64 = groups.values().sum();
        if people == 0 {
            continue;
        }
        out.people += people;
        out.communities.push(AffectedCommunity {
            community: i,
            groups,
            people,
            causes,
        });
    }
    out
}

/// The categories the town is below target in whose need falls on a named group.
fn below_target_groups(ledger: &Ledger, town: TownIdx) -> Vec<(CategoryIdx, String)> {
    let registry = ledger.registry();
    ledger
        .figures(town)
        .categories
        .iter()
        .filter(|c| c.level == Level::Critical)
        .filter_map(|c| match &registry.category(c.category).group {
            Group::Named(group) => Some((c.category, group.clone())),
            Group::All => None,
        })
        .collect()
}

fn causes(ledger: &Ledger, c: &Community, below: &[(CategoryIdx, String)]) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(f) = c.water_point.filter(|&f| !is_ready(ledger, f)) {
        causes.push(Cause::WaterPointNotReady(f));
    }
    if let Some(f) = c.power_unit.filter(|&f| !is_ready(ledger, f)) {
        causes.push(Cause::PowerUnitNotReady(f));
    }
    for (category, group) in below {
        if c.groups.get(group).is_some_and(|&n| n > 0) {
            causes.push(Cause::BelowTarget {
                category: *category,
                group: group.clone(),
            });
        }
    }
    causes
}

/// Whether a water point or power unit is ready by its town's latest figures. A town
/// never computed yet says nothing, so nobody is counted on its account.
fn is_ready(ledger: &Ledger, f: FacilityIdx) -> bool {
    let figures = ledger.figures(ledger.registry().facility(f).town);
    figures
        .water_points
        .iter()
        .chain(&figures.power_units)
        .find(|r| r.facility == f)
        .is_none_or(|r| r.ready)
}

/// A failed facility reaches every group; a category only its own group.
fn affected_groups(c: &Community, causes: &[Cause]) -> BTreeMap<String, u64> {
    let everyone = causes
        .iter()
        .any(|cause| !matches!(cause, Cause::BelowTarget { .. }));
    c.groups
        .iter()
        .filter(|&(group, &n)| {
            n > 0
                && (everyone
                    || causes.iter().any(
                        |cause| matches!(cause, Cause::BelowTarget { group: g, .. } if g == group),
                    ))
        })
        .map(|(group, &n)| (group.clone(), n))
        .collect()
}

/// Why it is affected, as an API or a message says it: `water_point_not_ready`, …
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    WaterPointNotReady,
    PowerUnitNotReady,
    BelowTarget,
}

impl Cause {
    pub fn kind(&self) -> CauseKind {
        match self {
            Cause::WaterPointNotReady(_) => CauseKind::WaterPointNotReady,
            Cause::PowerUnitNotReady(_) => CauseKind::PowerUnitNotReady,
            Cause::BelowTarget { .. } => CauseKind::BelowTarget,
        }
    }
}
