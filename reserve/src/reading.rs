//! A validated reading: what [`crate::wire`] produces from an MQTT payload and what the
//! [`crate::Ledger`] and the store consume. Every number here is finite and ≥ 0, every
//! index resolves in the registry it was validated against.

use chrono::{DateTime, Utc};

use crate::registry::{CategoryIdx, FacilityIdx};

#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub facility: FacilityIdx,
    /// When the gateway measured it (not when we received it).
    pub ts: DateTime<Utc>,
    /// The gateway's sequence number, for gap and duplicate detection.
    pub seq: Option<u64>,
    pub observation: Observation,
}

/// What a facility reported; the variant always matches the facility's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Warehouse stock by category, sorted by category, each category at most once.
    /// Categories a reading leaves out keep the facility's last reported quantity: a
    /// gateway may weigh some shelves more often than others.
    Stock(Vec<(CategoryIdx, f64)>),
    Water(WaterObservation),
    Power(PowerObservation),
    Shelter(ShelterObservation),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PumpState {
    Ok,
    Fault,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    Standby,
    Running,
    Fault,
    Maintenance,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaterObservation {
    pub level_l: f64,
    pub pump: PumpState,
    pub potable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerObservation {
    pub fuel_l: f64,
    /// `None` for a unit without a battery gauge; readiness then ignores the battery.
    pub battery_pct: Option<f64>,
    pub state: PowerState,
    /// The gateway's measured burn, overriding the registry's rated burn.
    pub burn_l_per_h: Option<f64>,
}

/// Where a shelter stands in its conversion (docs/design.md#shelters): its everyday use,
/// converting, taking people in, or shut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShelterMode {
    Normal,
    Activating,
    Open,
    Closed,
}

impl ShelterMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ShelterMode::Normal => "normal",
            ShelterMode::Activating => "activating",
            ShelterMode::Open => "open",
            ShelterMode::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShelterObservation {
    /// People inside now (door counters, check-in desks); never above the capacity.
    pub occupancy: u64,
    pub mode: ShelterMode,
}
