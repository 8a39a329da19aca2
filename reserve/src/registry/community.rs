//! Communities (村社): the villages and neighbourhoods under a town, each with its
//! ledger of vulnerable people (弱势群体分布台账) and the facilities that serve it
//! (docs/design.md#communities).
//!
//! A town that lists communities takes its group counts from them: its `groups` are the
//! sums of its communities' groups, so a category's need (`group = "infants"`) and the
//! affected counts of [`crate::vulnerable`] come from the same figures.

use std::collections::BTreeMap;

use super::{FacilityIdx, Registry, TownIdx};

/// A village or neighbourhood of a town, as the registry lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Community {
    /// A slug, unique over the registry (`[a-z0-9-]+`).
    pub id: String,
    pub town: TownIdx,
    pub name: String,
    /// Vulnerable people by group (`elderly_alone`, `infants`, `dialysis`, …), with the
    /// vocabulary towns' `groups` use. Counts only: the registry names no persons.
    pub groups: BTreeMap<String, u64>,
    /// The water point its people draw from, if the registry says.
    pub water_point: Option<FacilityIdx>,
    /// The power unit that keeps it supplied, if the registry says.
    pub power_unit: Option<FacilityIdx>,
    /// The shelter its people go to, if the registry says.
    pub shelter: Option<FacilityIdx>,
}

impl Community {
    /// Vulnerable people of every group.
    pub fn people(&self) -> u64 {
        self.groups.values().sum()
    }
}

/// The communities grouped by town (registry order within a town), with where each
/// town's run starts: the alert engine asks for a town's communities at every
/// evaluation, so finding them must not scan the city's.
#[derive(Debug, Clone, Default)]
pub(super) struct Communities {
    all: Vec<Community>,
    /// `start[t]..start[t + 1]` are town `t`'s; empty when no town has any.
    start: Vec<usize>,
}

impl Registry {
    /// The registry with these communities (replacing any it had), each town that has
    /// any taking its `groups` as the sums of theirs. The caller (the loader, a test)
    /// guarantees every index is in range and that a town's own groups, if it gives
    /// any, are its communities' sums (the loader checks they agree).
    pub fn with_communities(mut self, mut communities: Vec<Community>) -> Registry {
        let mut sums: BTreeMap<TownIdx, BTreeMap<String, u64>> = BTreeMap::new();
        for c in &communities {
            let town = sums.entry(c.town).or_default();
            for (group, n) in &c.groups {
                *town.entry(group.clone()).or_default() += n;
            }
        }
        for (town, groups) in sums {
            self.towns[town.index()].groups = groups;
        }
        // Stable: a town's communities keep the order the registry lists them in.
        communities.sort_by_key(|c| c.town);
        let start = if communities.is_empty() {
            Vec::new()
        } else {
            (0..=self.towns.len())
                .map(|t| communities.partition_point(|c| c.town.index() < t))
                .collect()
        };
        self.communities = Communities {
            all: communities,
            start,
        };
        self
    }

    /// Every community, grouped by town in town order, each town's in registry order.
    pub fn communities(&self) -> &[Community] {
        &self.communities.all
    }

    /// The communities of `town`, in registry order.
    pub fn communities_of(&self, town: TownIdx) -> &[Community] {
        let Communities { all, start } = &self.communities;
        match (start.get(town.index()), start.get(town.index() + 1)) {
            (Some(&from), Some(&to)) => &all[from..to],
            _ => &[],
        }
    }

    /// Where `town`'s communities start in [`Registry::communities`].
    pub fn communities_start(&self, town: TownIdx) -> usize {
        self.communities
            .start
            .get(town.index())
            .copied()
            .unwrap_or(0)
    }
}
