//! The live ledger: the latest reading of every facility and, derived from it, what
//! every town holds against its target (docs/design.md#coverage-and-readiness).
//!
//! State lives in vectors indexed by the registry's dense indices; a town's figures are
//! recomputed by [`Ledger::refresh`] after a reading of one of its facilities (a few
//! facilities, a few categories: microseconds), and cached for readers. Time is always
//! passed in, never read, so the same inputs give the same figures.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::coverage::{
    self, Drawdown, Level, NotReady, TownStatus, classify, days_of_supply, people_in_group,
};
use crate::id::{CategoryId, FacilityId};
use crate::reading::{
    Observation, PowerObservation, PowerState, PumpState, Reading, ShelterMode, ShelterObservation,
    WaterObservation,
};
use crate::registry::{CategoryIdx, FacilityIdx, FacilityKind, Registry, Target, TownIdx};

mod transfers;
pub use transfers::{MIN_TRANSFER_WINDOW, Shortfall, transfer_window_s};

mod reload;
mod shelters;
pub use shelters::{ShelterLatest, ShelterStatus, ShelteredFrom};

pub use reload::RegistryChanges;

mod warning;
pub use warning::{TownWarning, WarningScope, WarningSet};

/// What [`Ledger::apply`] did with a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The reading is the facility's newest: the ledger moved.
    Updated,
    /// Older than the facility's latest (a late backlog): history only, the ledger is
    /// not rolled back.
    Older,
    /// Same timestamp as the latest: a redelivery or a resend; ignored.
    Duplicate,
}

/// A gateway's MQTT connectivity, from its retained `status` and Last Will.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Link {
    Online,
    Offline,
}

/// One category's stock at a warehouse, with its consumption estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct StockLine {
    pub category: CategoryIdx,
    pub quantity: f64,
    pub drawdown: Drawdown,
}

/// The latest observation of a facility, with what is derived from its history.
#[derive(Debug, Clone, PartialEq)]
pub enum Latest {
    Stock(Vec<StockLine>),
    Water {
        obs: WaterObservation,
        drawdown: Drawdown,
    },
    Power(PowerObservation),
    Shelter(ShelterLatest),
}

/// Live state of one facility. Kept small: docs/design.md#performance-targets allows
/// 1 KiB per facility.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FacilityState {
    /// Measurement time of the latest reading.
    pub last_ts: Option<DateTime<Utc>>,
    pub last_seq: Option<u64>,
    /// When we last received a reading, by our clock: silence is judged on this, so a
    /// gateway with a skewed clock is not called silent while it keeps talking.
    pub heard_at: Option<DateTime<Utc>>,
    pub latest: Option<Latest>,
    pub link: Option<(Link, DateTime<Utc>)>,
    /// When the latest reading was counted, if it was entered by hand (a count, or a
    /// transfer at a facility counted by hand): alert texts and the town view say a
    /// figure rests on it, and how old it is.
    pub counted_by_hand: Option<DateTime<Utc>>,
}

impl FacilityState {
    pub fn is_silent(&self, stale_after: std::time::Duration, now: DateTime<Utc>) -> bool {
        match self.heard_at {
            None => false, // never reported is its own condition
            Some(heard) => (now - heard)
                .to_std()
                .is_ok_and(|quiet| quiet > stale_after),
        }
    }
}

/// A facility's live state keyed by registry ids rather than indices, so it survives a
/// restart with an edited registry: what the store persists and the ledger is rebuilt
/// from. Categories that no longer exist are dropped on restore.
///
/// Stored as JSON: every field but the id has a default, so a snapshot written by an
/// older version still loads after a field is added.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct FacilitySnapshot {
    pub facility: FacilityId,
    #[serde(default)]
    pub last_ts: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_seq: Option<u64>,
    #[serde(default)]
    pub heard_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub link: Option<(Link, DateTime<Utc>)>,
    #[serde(default)]
    pub latest: Option<LatestSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_by_hand: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatestSnapshot {
    Stock(Vec<(CategoryId, f64, Drawdown)>),
    Water {
        level_l: f64,
        pump: PumpState,
        potable: bool,
        drawdown: Drawdown,
    },
    Power {
        fuel_l: f64,
        battery_pct: Option<f64>,
        state: PowerState,
        burn_l_per_h: Option<f64>,
    },
    Shelter {
        occupancy: u64,
        mode: ShelterMode,
        mode_since: DateTime<Utc>,
    },
}

/// A category's coverage in a town.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryCoverage {
    #[serde(skip)]
    pub category: CategoryIdx,
    pub stock: f64,
    pub need_per_day: f64,
    /// `None` when nobody in the town needs the category.
    pub days: Option<f64>,
    pub target_days: f64,
    pub warn_days: f64,
    pub level: Level,
    /// False when a contributing facility is silent or has never reported.
    pub verified: bool,
    pub consumption_per_h: Option<f64>,
    /// Forecast hours until the stock falls below the target, at the current drawdown.
    pub hours_to_target: Option<f64>,
    /// When the oldest hand count the stock rests on was made: a contributing
    /// facility's latest figure was entered by hand. `None`: gateways' figures only.
    pub counted_by_hand: Option<DateTime<Utc>>,
}

/// Readiness of one water point or power unit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    #[serde(skip)]
    pub facility: FacilityIdx,
    pub ready: bool,
    pub problems: Vec<NotReady>,
    /// Power units: hours of fuel at the burn rate.
    pub runtime_h: Option<f64>,
}

/// Everything derived about a town at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TownFigures {
    #[serde(skip)]
    pub town: TownIdx,
    pub status: TownStatus,
    /// Smallest days of supply over the categories that apply.
    pub worst_days: Option<f64>,
    #[serde(skip)]
    pub worst_category: Option<CategoryIdx>,
    /// False when any facility is silent or has never reported: figures are a floor.
    pub verified: bool,
    pub population: u64,
    /// People sheltered now, on top of residents: see [`Ledger::sheltered_now`].
    pub sheltered: u64,
    pub sheltered_from: ShelteredFrom,
    /// The town's shelters, in registry order.
    pub shelters: Vec<ShelterStatus>,
    pub categories: Vec<CategoryCoverage>,
    /// Min over the town's power units of runtime in days, a unit not ready counting as
    /// 0; `None` for a town without power units.
    pub power_days: Option<f64>,
    pub power_units: Vec<Readiness>,
    pub water_points: Vec<Readiness>,
    #[serde(skip)]
    pub silent: Vec<FacilityIdx>,
    #[serde(skip)]
    pub never_reported: Vec<FacilityIdx>,
    pub computed_at: Option<DateTime<Utc>>,
    /// The warning level in force (docs/design.md#warning-levels), whose days target
    /// the categories' `target_days` already include.
    #[serde(skip)]
    pub warning: Option<TownWarning>,
}

impl TownFigures {
    fn unknown(town: TownIdx, population: u64) -> TownFigures {
        TownFigures {
            town,
            status: TownStatus::Unknown,
            worst_days: None,
            worst_category: None,
            verified: false,
            population,
            sheltered: 0,
            sheltered_from: ShelteredFrom::Typed,
            shelters: Vec::new(),
            categories: Vec::new(),
            power_days: None,
            power_units: Vec::new(),
            water_points: Vec::new(),
            silent: Vec::new(),
            never_reported: Vec::new(),
            computed_at: None,
            warning: None,
        }
    }
}

#[derive(Debug, Clone)]
struct TownState {
    sheltered: u64,
    /// Last level per category, the memory hysteresis needs.
    levels: Vec<Level>,
    figures: TownFigures,
}

/// The live ledger of every town.
#[derive(Debug, Clone)]
pub struct Ledger {
    registry: Arc<Registry>,
    facilities: Vec<FacilityState>,
    towns: Vec<TownState>,
    /// History a consumption forecast needs (`[alerts] forecast_min_span`).
    forecast_min_span_h: f64,
    /// Warning levels set, in force now or later ([`Ledger::set_warnings`]); a few.
    warnings: Arc<[WarningSet]>,
}

impl Ledger {
    /// A ledger forecasting from the default min span
    /// ([`coverage::DEFAULT_FORECAST_MIN_SPAN_H`]).
    pub fn new(registry: Arc<Registry>) -> Ledger {
        Ledger::with_forecast(registry, coverage::DEFAULT_FORECAST_MIN_SPAN_H)
    }

    /// A ledger whose consumption forecasts rest on at least `min_span_h` hours of
    /// history (docs/design.md#forecast).
    pub fn with_forecast(registry: Arc<Registry>, min_span_h: f64) -> Ledger {
        let towns = registry
            .town_indices()
            .map(|t| TownState {
                sheltered: 0,
                levels: vec![Level::Ok; registry.categories.len()],
                figures: TownFigures::unknown(t, registry.town(t).population),
            })
            .collect();
        Ledger {
            facilities: vec![FacilityState::default(); registry.facilities.len()],
            towns,
            registry,
            forecast_min_span_h: min_span_h,
            warnings: Arc::from(Vec::new()),
        }
    }

    /// Units per hour `drawdown` has seen consumed, when its history makes a forecast.
    pub fn consumption_per_h(&self, drawdown: &Drawdown) -> Option<f64> {
        drawdown.rate_per_h(self.forecast_min_span_h)
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn facility(&self, f: FacilityIdx) -> &FacilityState {
        &self.facilities[f.index()]
    }

    /// The figures of the last [`Ledger::refresh`] of `town`.
    pub fn figures(&self, town: TownIdx) -> &TownFigures {
        &self.towns[town.index()].figures
    }

    /// The sheltered figure typed in by the town's officer; what the town's figures use
    /// is [`Ledger::sheltered_now`], which prefers its open shelters' occupancy.
    pub fn sheltered(&self, town: TownIdx) -> u64 {
        self.towns[town.index()].sheltered
    }

    /// Applies a validated reading received at `heard_at`. The caller refreshes the
    /// town afterwards (once per batch, not once per reading).
    pub fn apply(&mut self, reading: &Reading, heard_at: DateTime<Utc>) -> Applied {
        let state = &mut self.facilities[reading.facility.index()];
        match state.last_ts {
            Some(last) if reading.ts == last => return Applied::Duplicate,
            Some(last) if reading.ts < last => {
                // A late backlog still proves the gateway is alive.
                state.heard_at = state.heard_at.max(Some(heard_at));
                return Applied::Older;
            }
            _ => {}
        }
        state.last_ts = Some(reading.ts);
        state.last_seq = reading.seq;
        state.heard_at = state.heard_at.max(Some(heard_at));
        let ts = reading.ts;
        let min_span_h = self.forecast_min_span_h;
        state.latest = Some(match (&reading.observation, state.latest.take()) {
            (Observation::Stock(quantities), previous) => {
                let mut lines = match previous {
                    Some(Latest::Stock(lines)) => lines,
                    _ => Vec::with_capacity(quantities.len()),
                };
                for &(category, quantity) in quantities {
                    match lines.iter_mut().find(|l| l.category == category) {
                        Some(line) => {
                            line.quantity = quantity;
                            line.drawdown.observe(ts, quantity, min_span_h);
                        }
                        None => {
                            let mut drawdown = Drawdown::default();
                            drawdown.observe(ts, quantity, min_span_h);
                            lines.push(StockLine {
                                category,
                                quantity,
                                drawdown,
                            });
                        }
                    }
                }
                Latest::Stock(lines)
            }
            (Observation::Water(obs), previous) => {
                let mut drawdown = match previous {
                    Some(Latest::Water { drawdown, .. }) => drawdown,
                    _ => Drawdown::default(),
                };
                drawdown.observe(ts, obs.level_l, min_span_h);
                Latest::Water {
                    obs: *obs,
                    drawdown,
                }
            }
            (Observation::Power(obs), _) => Latest::Power(*obs),
            (Observation::Shelter(obs), previous) => {
                Latest::Shelter(ShelterLatest::next(previous.as_ref(), *obs, ts))
            }
        });
        Applied::Updated
    }

    /// The facility's state in a form that outlives registry edits (see
    /// [`FacilitySnapshot`]).
    pub fn snapshot(&self, f: FacilityIdx) -> FacilitySnapshot {
        let registry = &self.registry;
        let state = &self.facilities[f.index()];
        FacilitySnapshot {
            facility: registry.facility(f).id.clone(),
            last_ts: state.last_ts,
            last_seq: state.last_seq,
            heard_at: state.heard_at,
            link: state.link,
            counted_by_hand: state.counted_by_hand,
            latest: state.latest.as_ref().map(|latest| match latest {
                Latest::Stock(lines) => LatestSnapshot::Stock(
                    lines
                        .iter()
                        .map(|l| {
                            (
                                registry.category(l.category).id.clone(),
                                l.quantity,
                                l.drawdown.clone(),
                            )
                        })
                        .collect(),
                ),
                Latest::Water { obs, drawdown } => LatestSnapshot::Water {
                    level_l: obs.level_l,
                    pump: obs.pump,
                    potable: obs.potable,
                    drawdown: drawdown.clone(),
                },
                Latest::Power(obs) => LatestSnapshot::Power {
                    fuel_l: obs.fuel_l,
                    battery_pct: obs.battery_pct,
                    state: obs.state,
                    burn_l_per_h: obs.burn_l_per_h,
                },
                Latest::Shelter(s) => LatestSnapshot::Shelter {
                    occupancy: s.obs.occupancy,
                    mode: s.obs.mode,
                    mode_since: s.mode_since,
                },
            }),
        }
    }

    /// Restores a facility's state at start-up. Returns false, changing nothing, when
    /// the facility is no longer in the registry or its kind changed (a warehouse
    /// rebuilt as a water point starts afresh).
    pub fn restore(&mut self, snapshot: &FacilitySnapshot) -> bool {
        let registry = Arc::clone(&self.registry);
        let Some(f) = registry.facility_idx(snapshot.facility.as_str()) else {
            return false;
        };
        let kind = &registry.facility(f).kind;
        let latest = match (&snapshot.latest, kind) {
            (None, _) => None,
            (Some(LatestSnapshot::Stock(lines)), FacilityKind::Warehouse) => Some(Latest::Stock(
                lines
                    .iter()
                    .filter_map(|(id, quantity, drawdown)| {
                        Some(StockLine {
                            category: registry.category_idx(id.as_str())?,
                            quantity: *quantity,
                            drawdown: drawdown.clone(),
                        })
                    })
                    .collect(),
            )),
            (
                Some(LatestSnapshot::Water {
                    level_l,
                    pump,
                    potable,
                    drawdown,
                }),
                FacilityKind::WaterPoint { .. },
            ) => Some(Latest::Water {
                obs: WaterObservation {
                    level_l: *level_l,
                    pump: *pump,
                    potable: *potable,
                },
                drawdown: drawdown.clone(),
            }),
            (
                Some(LatestSnapshot::Power {
                    fuel_l,
                    battery_pct,
                    state,
                    burn_l_per_h,
                }),
                FacilityKind::PowerUnit { .. },
            ) => Some(Latest::Power(PowerObservation {
                fuel_l: *fuel_l,
                battery_pct: *battery_pct,
                state: *state,
                burn_l_per_h: *burn_l_per_h,
            })),
            (
                Some(LatestSnapshot::Shelter {
                    occupancy,
                    mode,
                    mode_since,
                }),
                FacilityKind::Shelter(_),
            ) => Some(Latest::Shelter(ShelterLatest {
                obs: ShelterObservation {
                    occupancy: *occupancy,
                    mode: *mode,
                },
                mode_since: *mode_since,
            })),
            _ => return false,
        };
        self.facilities[f.index()] = FacilityState {
            last_ts: snapshot.last_ts,
            last_seq: snapshot.last_seq,
            heard_at: snapshot.heard_at,
            latest,
            link: snapshot.link,
            counted_by_hand: snapshot.counted_by_hand,
        };
        true
    }

    /// Records a gateway's `online`/`offline` status.
    pub fn set_link(&mut self, facility: FacilityIdx, link: Link, at: DateTime<Utc>) {
        self.facilities[facility.index()].link = Some((link, at));
    }

    /// Sets the people sheltered in a town now (reported by its officer).
    pub fn set_sheltered(&mut self, town: TownIdx, sheltered: u64) {
        self.towns[town.index()].sheltered = sheltered;
    }

    /// Recomputes every town (the periodic tick: silence depends on time alone).
    pub fn refresh_all(&mut self, now: DateTime<Utc>) {
        for t in 0..self.towns.len() {
            self.refresh(TownIdx::from_index(t), now);
        }
    }

    /// Recomputes a town's figures at `now` and returns them.
    pub fn refresh(&mut self, town: TownIdx, now: DateTime<Utc>) -> &TownFigures {
        let figures = self.compute(town, now);
        let state = &mut self.towns[town.index()];
        for c in &figures.categories {
            state.levels[c.category.index()] = c.level;
        }
        state.figures = figures;
        &state.figures
    }

    fn compute(&self, town_idx: TownIdx, now: DateTime<Utc>) -> TownFigures {
        let town = self.registry.town(town_idx);
        let (silent, never_reported) = self.unheard(town_idx, now);
        let (sheltered, sheltered_from) = self.sheltered_now(town_idx);
        let warning = self.warning_at(town_idx, now);
        if never_reported.len() == town.facilities.len() {
            let mut figures = TownFigures::unknown(town_idx, town.population);
            figures.warning = warning;
            figures.sheltered = sheltered;
            figures.sheltered_from = sheltered_from;
            figures.shelters = self.shelter_statuses(town_idx);
            figures.never_reported = never_reported;
            figures.computed_at = Some(now);
            return figures;
        }
        let raise = |target: Target| warning.as_ref().map_or(target, |w| w.raise(target));
        let holdings = self.holdings(town_idx, &silent, &never_reported, raise);
        let categories: Vec<CategoryCoverage> = self
            .registry
            .category_indices()
            .map(|c| {
                let target = raise(self.registry.target_for(town_idx, c));
                self.category_coverage(town_idx, c, target, &holdings, sheltered)
            })
            .collect();
        let worst = categories
            .iter()
            .filter_map(|c| Some((c.days?, c.category)))
            .fold(None, |worst: Option<(f64, CategoryIdx)>, (d, c)| {
                if worst.is_none_or(|(w, _)| d < w) {
                    Some((d, c))
                } else {
                    worst
                }
            });
        let all_verified = silent.is_empty() && never_reported.is_empty();
        let status = town_status(&categories, &holdings, all_verified);
        TownFigures {
            town: town_idx,
            status,
            worst_days: worst.map(|(d, _)| d),
            worst_category: worst.map(|(_, c)| c),
            verified: all_verified,
            population: town.population,
            sheltered,
            sheltered_from,
            shelters: self.shelter_statuses(town_idx),
            categories,
            power_days: power_days(&holdings.power_units),
            power_units: holdings.power_units,
            water_points: holdings.water_points,
            silent,
            never_reported,
            computed_at: Some(now),
            warning,
        }
    }

    /// The town's facilities that are silent now, and those that never reported.
    fn unheard(&self, town: TownIdx, now: DateTime<Utc>) -> (Vec<FacilityIdx>, Vec<FacilityIdx>) {
        let mut silent = Vec::new();
        let mut never_reported = Vec::new();
        for &f in &self.registry.town(town).facilities {
            let fs = &self.facilities[f.index()];
            if fs.latest.is_none() {
                never_reported.push(f);
            } else if fs.is_silent(self.registry.facility(f).stale_after, now) {
                silent.push(f);
            }
        }
        (silent, never_reported)
    }

    /// What the town's facilities hold and how ready its units are: stock, consumption
    /// and verification summed per category, readiness per water point and power unit.
    fn holdings(
        &self,
        town_idx: TownIdx,
        silent: &[FacilityIdx],
        never_reported: &[FacilityIdx],
        raise: impl Fn(Target) -> Target,
    ) -> Holdings {
        let registry = &*self.registry;
        let n = registry.categories.len();
        let mut h = Holdings {
            stock: vec![0.0; n],
            consumption: vec![None; n],
            verified: vec![true; n],
            water_points: Vec::new(),
            power_units: Vec::new(),
        };
        let target_days = raise(registry.town_target(town_idx)).days;
        for &f in &registry.town(town_idx).facilities {
            let unverified = silent.contains(&f) || never_reported.contains(&f);
            let is_silent = silent.contains(&f);
            let latest = self.facilities[f.index()].latest.as_ref();
            match &registry.facility(f).kind {
                FacilityKind::Warehouse => self.add_warehouse(&mut h, latest, unverified),
                FacilityKind::WaterPoint { .. } => {
                    let readiness = self.add_water_point(&mut h, f, latest, is_silent);
                    if let (Some(c), true) = (registry.water_category, unverified) {
                        h.verified[c.index()] = false;
                    }
                    h.water_points.push(readiness);
                }
                FacilityKind::PowerUnit {
                    burn_l_per_h,
                    min_battery_pct,
                    ..
                } => h.power_units.push(match latest {
                    Some(Latest::Power(obs)) => {
                        let problems = coverage::power_unit_problems(
                            obs,
                            *burn_l_per_h,
                            *min_battery_pct,
                            target_days,
                            is_silent,
                        );
                        let burn = obs.burn_l_per_h.unwrap_or(*burn_l_per_h);
                        Readiness {
                            facility: f,
                            ready: problems.is_empty(),
                            problems,
                            runtime_h: Some(coverage::runtime_h(obs.fuel_l, burn)),
                        }
                    }
                    _ => Readiness::never_reported(f),
                }),
                // Shelters hold people, not supplies: they move the need, not the stock
                // (see `Ledger::sheltered_now`).
                FacilityKind::Shelter(_) => {}
            }
        }
        h
    }

    /// A warehouse's stock lines into the town's holdings; an unheard warehouse leaves
    /// every category unverified (it might hold any of them).
    fn add_warehouse(&self, h: &mut Holdings, latest: Option<&Latest>, unverified: bool) {
        if let Some(Latest::Stock(lines)) = latest {
            for line in lines {
                let rate = line.drawdown.rate_per_h(self.forecast_min_span_h);
                h.add(line.category.index(), line.quantity, rate);
            }
        }
        if unverified {
            h.verified.iter_mut().for_each(|v| *v = false);
        }
    }

    /// A water point's potable stored water into the holdings, and its readiness.
    fn add_water_point(
        &self,
        h: &mut Holdings,
        f: FacilityIdx,
        latest: Option<&Latest>,
        is_silent: bool,
    ) -> Readiness {
        let Some(Latest::Water { obs, drawdown }) = latest else {
            return Readiness::never_reported(f);
        };
        // Only potable stored water is drinking water.
        if let (Some(c), true) = (self.registry.water_category, obs.potable) {
            let rate = drawdown.rate_per_h(self.forecast_min_span_h);
            h.add(c.index(), obs.level_l, rate);
        }
        let problems = coverage::water_point_problems(obs, is_silent);
        Readiness {
            facility: f,
            ready: problems.is_empty(),
            problems,
            runtime_h: None,
        }
    }

    /// One category's coverage in a town against `target` (the registry's, raised by a
    /// warning level in force) from what its facilities hold.
    fn category_coverage(
        &self,
        town_idx: TownIdx,
        c: CategoryIdx,
        target: Target,
        holdings: &Holdings,
        sheltered: u64,
    ) -> CategoryCoverage {
        let registry = &*self.registry;
        let town = registry.town(town_idx);
        let state = &self.towns[town_idx.index()];
        let category = registry.category(c);
        let people = people_in_group(&category.group, town.population, &town.groups, sheltered);
        let need_per_day = people * category.daily_need;
        let stock = holdings.stock[c.index()];
        let days = days_of_supply(stock, need_per_day);
        let level = match days {
            Some(d) => classify(d, &target, state.levels[c.index()]),
            None => Level::Ok,
        };
        let consumption_per_h = holdings.consumption[c.index()];
        let hours_to_target = match (days, consumption_per_h) {
            (Some(_), Some(rate)) => {
                coverage::hours_to_target(stock, target.days * need_per_day, rate)
            }
            _ => None,
        };
        CategoryCoverage {
            category: c,
            stock,
            need_per_day,
            days,
            target_days: target.days,
            warn_days: target.warn_days,
            level,
            verified: holdings.verified[c.index()],
            consumption_per_h,
            hours_to_target,
            counted_by_hand: self.oldest_hand_count(town_idx, c),
        }
    }
}

/// What a town's facilities hold, per category (indexed by category), and the
/// readiness of its water points and power units: the inputs of its figures.
struct Holdings {
    stock: Vec<f64>,
    /// Summed drawdown rates; `None` while no facility of the category has one.
    consumption: Vec<Option<f64>>,
    /// False when a facility contributing to the category is silent or never reported.
    verified: Vec<bool>,
    water_points: Vec<Readiness>,
    power_units: Vec<Readiness>,
}

impl Holdings {
    fn add(&mut self, category: usize, quantity: f64, rate_per_h: Option<f64>) {
        self.stock[category] += quantity;
        if let Some(r) = rate_per_h {
            self.consumption[category] = Some(self.consumption[category].unwrap_or(0.0) + r);
        }
    }
}

impl Readiness {
    fn never_reported(facility: FacilityIdx) -> Readiness {
        Readiness {
            facility,
            ready: false,
            problems: vec![NotReady::NeverReported],
            runtime_h: None,
        }
    }
}

/// Min over the town's power units of runtime in days, a unit not ready counting as 0;
/// `None` for a town without power units.
fn power_days(power_units: &[Readiness]) -> Option<f64> {
    power_units
        .iter()
        .map(|u| match (u.ready, u.runtime_h) {
            (true, Some(h)) => h / 24.0,
            _ => 0.0,
        })
        .reduce(f64::min)
}

/// Below target in any category is critical; near it, a unit or water point not ready,
/// or figures we cannot vouch for are a warning.
fn town_status(categories: &[CategoryCoverage], holdings: &Holdings, verified: bool) -> TownStatus {
    let worst_level = categories
        .iter()
        .map(|c| c.level)
        .max()
        .unwrap_or(Level::Ok);
    let readiness_problem = holdings.power_units.iter().any(|u| !u.ready)
        || holdings.water_points.iter().any(|w| !w.ready);
    match worst_level {
        Level::Critical => TownStatus::Critical,
        Level::Warning => TownStatus::Warning,
        Level::Ok if readiness_problem || !verified => TownStatus::Warning,
        Level::Ok => TownStatus::Ok,
    }
}
