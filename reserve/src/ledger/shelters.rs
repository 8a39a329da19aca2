//! Shelters in the ledger (docs/design.md#shelters): each shelter's latest occupancy and
//! mode, since when it has been in that mode, and the town's sheltered population that
//! follows from them.
//!
//! A town's sheltered population is the occupancy of its open shelters when any of
//! them reports open, else the figure its officer typed in
//! (`PUT /api/v1/towns/{id}/sheltered`): a door counter beats a phoned-in estimate, but
//! a town whose shelters are all still in everyday use keeps the officer's figure.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Latest, Ledger};
use crate::reading::{ShelterMode, ShelterObservation};
use crate::registry::{FacilityIdx, FacilityKind, ShelterSpec, TownIdx};

/// A shelter's latest reading and when it entered its current mode: `shelter_not_ready`
/// measures how long it has been `activating` from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShelterLatest {
    pub obs: ShelterObservation,
    /// Measurement time of the first reading in the current mode.
    pub mode_since: DateTime<Utc>,
}

impl ShelterLatest {
    /// The state after `obs` measured at `ts`, given the state before.
    pub(super) fn next(
        previous: Option<&Latest>,
        obs: ShelterObservation,
        ts: DateTime<Utc>,
    ) -> Self {
        let mode_since = match previous {
            Some(Latest::Shelter(before)) if before.obs.mode == obs.mode => before.mode_since,
            _ => ts,
        };
        ShelterLatest { obs, mode_since }
    }
}

/// Where a town's sheltered figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShelteredFrom {
    /// The officer's typed-in figure (no shelter of the town reports open).
    #[default]
    Typed,
    /// The occupancy of the town's open shelters.
    Shelters,
}

/// One shelter as the town's figures show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShelterStatus {
    #[serde(skip)]
    pub facility: FacilityIdx,
    pub capacity: u64,
    /// `None` until the shelter first reports.
    pub occupancy: Option<u64>,
    pub mode: Option<ShelterMode>,
    pub mode_since: Option<DateTime<Utc>>,
}

impl Ledger {
    /// The shelter's spec and latest state, if `f` is a shelter that has reported.
    pub fn shelter(&self, f: FacilityIdx) -> Option<(&ShelterSpec, &ShelterLatest)> {
        let FacilityKind::Shelter(spec) = &self.registry.facility(f).kind else {
            return None;
        };
        match &self.facilities[f.index()].latest {
            Some(Latest::Shelter(latest)) => Some((spec, latest)),
            _ => None,
        }
    }

    /// People sheltered in `town` now and where the figure comes from (see the module
    /// docs).
    pub fn sheltered_now(&self, town: TownIdx) -> (u64, ShelteredFrom) {
        let open = self
            .registry
            .town(town)
            .facilities
            .iter()
            .filter_map(|&f| self.shelter(f))
            .filter(|(_, latest)| latest.obs.mode == ShelterMode::Open)
            .map(|(_, latest)| latest.obs.occupancy)
            .reduce(u64::saturating_add);
        match open {
            Some(people) => (people, ShelteredFrom::Shelters),
            None => (self.sheltered(town), ShelteredFrom::Typed),
        }
    }

    /// Every shelter of `town`, in registry order.
    pub(super) fn shelter_statuses(&self, town: TownIdx) -> Vec<ShelterStatus> {
        let registry = &self.registry;
        let shelters = registry.town(town).facilities.iter().filter_map(|&f| {
            let FacilityKind::Shelter(spec) = &registry.facility(f).kind else {
                return None;
            };
            let latest = self.shelter(f).map(|(_, latest)| latest);
            Some(ShelterStatus {
                facility: f,
                capacity: spec.capacity,
                occupancy: latest.map(|l| l.obs.occupancy),
                mode: latest.map(|l| l.obs.mode),
                mode_since: latest.map(|l| l.mode_since),
            })
        });
        shelters.collect()
    }
}
