//! What-if stress tests (压力测试): the bureau's disaster scenarios — water, power, roads
//! and communications cut (断水、断电、断路、断通信), people sheltering from elsewhere —
//! played on a copy of the ledger, never on the live one.
//!
//! The copy is rebuilt from the live facility snapshots with the scenario applied, and
//! the ledger's own maths recomputes every town, so a scenario's figures mean exactly
//! what the live figures mean. Rebuilding (rather than cloning) also drops the live
//! hysteresis memory: a scenario's levels depend on its numbers alone.
//!
//! What each part of a scenario does:
//! - `water_cut`: people live on stored water, at `water_need_l_per_person` a day if
//!   given (e.g. 15 L for drinking, cooking and hygiene instead of 3 L survival intake);
//!   with `lose_water_points` the water points' stored water no longer counts.
//! - `power_cut`: power units run on their fuel; a town without a ready power unit
//!   cannot pump, so its water points' water no longer counts; a town whose power days
//!   are below its target falls short in `power`.
//! - `road_cut_days`: nothing is restocked for that long and people live on the
//!   reserve, so every category is consumed at least at its need; the scenario looks
//!   that far ahead for towns that cross their target.
//! - `comms_cut`: no facility can confirm its figures; `last_value` keeps them (every
//!   figure unverified), `zero` counts nothing that cannot be confirmed.
//! - `population_surge`: every town's people times `factor`, plus extra people per town.
//!
//! Consumption assumed: the measured drawdown, scaled to the scenario's need (more
//! people, more water each), and at least the need itself where the supply is cut.
//!
//! Each category of each town also says what it held in the live ledger (`live_days`),
//! what it lacks to reach its target when the scenario starts (`shortfall`) and how much
//! of that the towns of its cluster could send under the same scenario (`aid_covers`,
//! the plan of [`crate::aid`] played on the scenario's ledger). The outcome is stored
//! (`GET /api/v1/scenarios/{id}`) and read back for its CSV table ([`table`]) and for
//! the scheduled stress test's report, so every type here also deserialises.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use reserve::Ledger;
use reserve::Registry;
use reserve::coverage::hours_to_target;
use reserve::ledger::LatestSnapshot;
use reserve::reading::PumpState;
use reserve::registry::{FacilityIdx, FacilityKind, TownIdx};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::aid::mutual_aid;
use crate::error::ApiError;
use crate::export::{Cell, Column, Table};
use crate::model::{MAX_SHELTERED, people};
use crate::routes::vulnerable::TownVulnerableView;

/// More litres per person per day than any household draws: a typo.
const MAX_WATER_NEED_L: f64 = 1000.0;
/// A road cut longer than a year is not a stress test.
const MAX_ROAD_CUT_DAYS: f64 = 365.0;
/// A surge beyond a hundredfold is a typo.
const MAX_SURGE_FACTOR: f64 = 100.0;
/// A scenario's name is a label for lists and reports, not a document.
const MAX_NAME_CHARS: usize = 100;

/// A what-if scenario; every part is optional and they combine. The same shape is a
/// scenario of the scheduled stress test (`[[stress_test.scenarios]]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioRequest {
    /// A label kept with the stored run (`water_cut`, `flood`); the stress test's
    /// report names each scenario by it.
    #[schema(example = "flood")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Mains water is cut (断水).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub water_cut: Option<WaterCut>,
    /// The grid is down (断电).
    #[serde(default)]
    pub power_cut: bool,
    /// Roads are cut (断路) for this many days: no restocking meanwhile.
    #[schema(example = 3.0)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub road_cut_days: Option<f64>,
    /// Gateways cannot report (断通信).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comms_cut: Option<CommsCut>,
    /// People sheltering from elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub population_surge: Option<PopulationSurge>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaterCut {
    /// Litres per person per day while the mains are cut; default: the water
    /// category's daily need.
    #[schema(example = 15.0)]
    pub water_need_l_per_person: Option<f64>,
    /// Water points cannot be drawn from: their stored water no longer counts.
    #[serde(default)]
    pub lose_water_points: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommsCut {
    pub silent_as: SilentAs,
}

/// What a facility that cannot report is assumed to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SilentAs {
    /// What it last reported (figures unverified).
    LastValue,
    /// Nothing.
    Zero,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PopulationSurge {
    /// Every town's people (residents and sheltered) times this; at least 1.
    #[schema(example = 1.2)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// Extra people per town id, on top of the factor.
    #[serde(default)]
    pub towns: BTreeMap<String, u64>,
}

/// A stored run: what `POST /api/v1/scenarios` answers and `GET …/{id}` reads back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoredScenario {
    pub id: i64,
    /// When it ran.
    pub at: DateTime<Utc>,
    /// The scheduled stress test it ran in; `null` when asked through the API.
    pub stress_test: Option<i64>,
    /// The scenario as asked.
    pub request: ScenarioRequest,
    #[serde(flatten)]
    pub outcome: ScenarioOutcome,
}

/// What a scenario does to the city.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScenarioOutcome {
    /// How far the scenario looks ahead for stock running down: the road cut (nothing
    /// is restocked meanwhile), else 0 (only what falls short at once).
    pub horizon_h: f64,
    /// Towns with at least one shortfall within the horizon.
    pub towns_below_target: u64,
    /// Towns below target in some category in the live ledger now, for comparison.
    pub live_towns_below_target: u64,
    /// Every category (or power) that falls below target within the horizon, soonest
    /// first.
    pub below_target: Vec<Shortfall>,
    /// Every town under the scenario, in registry order.
    pub towns: Vec<ScenarioTown>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// A category of supply; `category` names it.
    Supply,
    /// Power units' fuel (under a power cut).
    Power,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Shortfall {
    pub town: String,
    pub town_name: String,
    pub cluster: String,
    pub resource: Resource,
    /// The category, for `supply`.
    pub category: Option<String>,
    /// Days of supply (or of power) when the scenario starts.
    pub days: f64,
    pub target_days: f64,
    /// Hours from the start until it is below target: 0 means at once.
    pub hours: f64,
    /// Hours until nothing is left at the assumed consumption; `null` when not consumed.
    pub hours_to_empty: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScenarioTown {
    pub id: String,
    pub name: String,
    pub cluster: String,
    pub district: String,
    /// Residents plus sheltered under the scenario.
    pub people: u64,
    /// False when any figure rests on an assumption (comms cut) or a facility that is
    /// silent or never reported.
    pub verified: bool,
    pub worst_days: Option<f64>,
    /// Days of power (smallest runtime of the town's power units, a unit not ready
    /// counting as 0); `null` without power units.
    pub power_days: Option<f64>,
    pub categories: Vec<ScenarioCategory>,
    /// The vulnerable people of its communities (村社) the scenario reaches, as
    /// `GET /api/v1/towns/{id}/vulnerable` says it live; `null` for a town without
    /// communities (and in scenarios stored before they were counted).
    #[serde(default)]
    pub vulnerable: Option<TownVulnerableView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScenarioCategory {
    pub id: String,
    pub unit: String,
    pub stock: f64,
    pub need_per_day: f64,
    /// `null` when nobody in the town needs the category.
    pub days: Option<f64>,
    /// Days of supply in the live ledger when the scenario ran, for comparison.
    #[serde(default)]
    pub live_days: Option<f64>,
    pub target_days: f64,
    /// Below target as soon as the scenario starts.
    pub below_target: bool,
    /// Consumption assumed, in `unit` per hour.
    pub consumption_per_h: Option<f64>,
    pub hours_to_target: Option<f64>,
    pub hours_to_empty: Option<f64>,
    /// What the town lacks to reach its target when the scenario starts, in `unit`;
    /// `null` when it is not below target then.
    #[serde(default)]
    pub shortfall: Option<f64>,
    /// How much of `shortfall` towns of the same cluster can send under the scenario
    /// (mutual aid, each donor keeping its warning level); `null` when not short.
    #[serde(default)]
    pub aid_covers: Option<f64>,
}

/// Checks a request against the registry; messages name the field at fault. The
/// stress test's scenarios are checked with it when the configuration is loaded.
pub fn validate(registry: &Registry, request: &ScenarioRequest) -> Result<(), ApiError> {
    if let Some(name) = &request.name
        && (name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS)
    {
        return Err(ApiError::invalid_field(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if let Some(cut) = &request.water_cut {
        if registry.water_category.is_none() {
            return Err(ApiError::invalid_field(
                "water_cut",
                "the registry has no water category",
            ));
        }
        if let Some(need) = cut.water_need_l_per_person
            && !(need.is_finite() && need > 0.0 && need <= MAX_WATER_NEED_L)
        {
            return Err(ApiError::invalid_field(
                "water_cut.water_need_l_per_person",
                format!("must be more than 0 and at most {MAX_WATER_NEED_L}, got {need}"),
            ));
        }
    }
    if let Some(days) = request.road_cut_days
        && !(days.is_finite() && (0.0..=MAX_ROAD_CUT_DAYS).contains(&days))
    {
        return Err(ApiError::invalid_field(
            "road_cut_days",
            format!("must be between 0 and {MAX_ROAD_CUT_DAYS}, got {days}"),
        ));
    }
    if let Some(surge) = &request.population_surge {
        if let Some(factor) = surge.factor
            && !(factor.is_finite() && (1.0..=MAX_SURGE_FACTOR).contains(&factor))
        {
            return Err(ApiError::invalid_field(
                "population_surge.factor",
                format!("must be between 1 and {MAX_SURGE_FACTOR}, got {factor}"),
            ));
        }
        for (town, extra) in &surge.towns {
            let field = format!("population_surge.towns.{town}");
            if registry.town_idx(town).is_none() {
                return Err(ApiError::invalid_field(&field, "unknown town"));
            }
            if *extra > MAX_SHELTERED {
                return Err(ApiError::invalid_field(
                    &field,
                    format!("{extra} is more than {MAX_SHELTERED}"),
                ));
            }
        }
    }
    Ok(())
}

fn zero(latest: &mut LatestSnapshot) {
    match latest {
        LatestSnapshot::Stock(lines) => lines.iter_mut().for_each(|line| line.1 = 0.0),
        LatestSnapshot::Water { level_l, .. } => *level_l = 0.0,
        LatestSnapshot::Power { fuel_l, .. } => *fuel_l = 0.0,
        // A silent shelter's people are still there: zeroing them would lower the need.
        LatestSnapshot::Shelter { .. } => {}
    }
}

/// A water point that cannot be drawn from: empty, pump off.
fn disable_water_point(latest: &mut LatestSnapshot) {
    if let LatestSnapshot::Water { level_l, pump, .. } = latest {
        *level_l = 0.0;
        *pump = PumpState::Off;
    }
}

/// The scenario's ledger: the live state with the scenario applied, recomputed.
fn scenario_ledger(live: &Ledger, request: &ScenarioRequest, now: DateTime<Utc>) -> Ledger {
    let live_registry = live.registry();
    let water_need = request
        .water_cut
        .as_ref()
        .and_then(|cut| cut.water_need_l_per_person);
    let registry = match (water_need, live_registry.water_category) {
        (Some(need), Some(water)) => {
            let mut registry = (**live_registry).clone();
            registry.categories[water.index()].daily_need = need;
            Arc::new(registry)
        }
        _ => Arc::clone(live_registry),
    };
    let comms_zero = request
        .comms_cut
        .as_ref()
        .is_some_and(|c| c.silent_as == SilentAs::Zero);
    let lose_water_points = request
        .water_cut
        .as_ref()
        .is_some_and(|cut| cut.lose_water_points);

    let mut ledger = Ledger::new(Arc::clone(&registry));
    for (i, facility) in registry.facilities.iter().enumerate() {
        let mut snapshot = live.snapshot(FacilityIdx::from_index(i));
        if let Some(latest) = &mut snapshot.latest {
            if comms_zero {
                zero(latest);
            }
            if lose_water_points && matches!(facility.kind, FacilityKind::WaterPoint { .. }) {
                disable_water_point(latest);
            }
        }
        // Same registry ids and kinds: restoring cannot fail.
        ledger.restore(&snapshot);
    }

    let surge = request.population_surge.as_ref();
    let factor = surge.and_then(|s| s.factor).unwrap_or(1.0);
    for t in registry.town_indices() {
        let town = registry.town(t);
        let live_people = people(live, t) as f64;
        let extra = surge
            .and_then(|s| s.towns.get(town.id.as_str()))
            .copied()
            .unwrap_or(0);
        // Factor ≥ 1, so the result is never below the residents. The float-to-int
        // cast saturates and the sum too: a surge past u64 is a very large town, not a
        // panic.
        let surged = ((live_people * factor).round() as u64).saturating_add(extra);
        ledger.set_sheltered(t, surged.saturating_sub(town.population));
    }
    ledger.refresh_all(now);

    if request.power_cut {
        // Pumps need power: without a ready unit, a town's water points are dry.
        for t in registry.town_indices() {
            let has_power = ledger.figures(t).power_days.is_some_and(|d| d > 0.0);
            if has_power {
                continue;
            }
            let points: Vec<FacilityIdx> = registry
                .town(t)
                .facilities
                .iter()
                .copied()
                .filter(|&f| matches!(registry.facility(f).kind, FacilityKind::WaterPoint { .. }))
                .collect();
            if points.is_empty() {
                continue;
            }
            for f in points {
                let mut snapshot = ledger.snapshot(f);
                if let Some(latest) = &mut snapshot.latest {
                    disable_water_point(latest);
                    ledger.restore(&snapshot);
                }
            }
            ledger.refresh(t, now);
        }
    }
    ledger
}

/// Runs `request` against a copy of `live`. `live` is only read.
pub fn run(
    live: &Ledger,
    request: &ScenarioRequest,
    now: DateTime<Utc>,
) -> Result<ScenarioOutcome, ApiError> {
    validate(live.registry(), request)?;
    let ledger = scenario_ledger(live, request, now);
    let registry = ledger.registry();
    let horizon_h = request.road_cut_days.unwrap_or(0.0) * 24.0;
    let road_cut = request.road_cut_days.is_some_and(|d| d > 0.0);
    let water = registry
        .water_category
        .filter(|_| request.water_cut.is_some());
    let assumed = request.comms_cut.is_some();

    let mut below_target = Vec::new();
    let mut towns = Vec::with_capacity(registry.towns.len());
    let mut towns_below_target = 0;
    for t in registry.town_indices() {
        let town = registry.town(t);
        let figures = ledger.figures(t);
        let live_figures = live.figures(t);
        let cluster = registry.clusters[town.cluster.index()].id.to_string();
        let shortfall =
            |resource, category: Option<String>, days, target_days, hours, empty| Shortfall {
                town: town.id.to_string(),
                town_name: town.name.clone(),
                cluster: cluster.clone(),
                resource,
                category,
                days,
                target_days,
                hours,
                hours_to_empty: empty,
            };
        let mut short_here = Vec::new();
        let mut categories = Vec::with_capacity(figures.categories.len());
        for c in &figures.categories {
            let category = registry.category(c.category);
            let measured = live_figures
                .categories
                .iter()
                .find(|l| l.category == c.category)
                .and_then(|l| {
                    let rate = l.consumption_per_h?;
                    let scale = if l.need_per_day > 0.0 {
                        c.need_per_day / l.need_per_day
                    } else {
                        1.0
                    };
                    Some(rate * scale)
                });
            let cut = road_cut || water == Some(c.category);
            let rate = if cut {
                Some(measured.unwrap_or(0.0).max(c.need_per_day / 24.0))
            } else {
                measured
            }
            .filter(|r| *r > 0.0);
            let to_target = c
                .days
                .and(rate)
                .and_then(|r| hours_to_target(c.stock, c.target_days * c.need_per_day, r))
                .or_else(|| c.days.filter(|d| *d < c.target_days).map(|_| 0.0));
            let to_empty = rate.map(|r| c.stock / r);
            if let (Some(days), Some(h)) = (c.days, to_target)
                && h <= horizon_h
            {
                short_here.push(shortfall(
                    Resource::Supply,
                    Some(category.id.to_string()),
                    days,
                    c.target_days,
                    h,
                    to_empty,
                ));
            }
            categories.push(ScenarioCategory {
                id: category.id.to_string(),
                unit: category.unit.clone(),
                stock: c.stock,
                need_per_day: c.need_per_day,
                days: c.days,
                target_days: c.target_days,
                live_days: live_figures
                    .categories
                    .iter()
                    .find(|l| l.category == c.category)
                    .and_then(|l| l.days),
                below_target: c.days.is_some_and(|d| d < c.target_days),
                consumption_per_h: rate,
                hours_to_target: to_target,
                hours_to_empty: to_empty,
                shortfall: c
                    .days
                    .filter(|d| *d < c.target_days)
                    .map(|_| (c.target_days * c.need_per_day - c.stock).max(0.0)),
                aid_covers: None,
            });
        }
        if request.power_cut
            && let Some(power_days) = figures.power_days
        {
            // Units run without pause: a day of power is spent every day.
            let target = registry.town_target(t).days;
            let hours = ((power_days - target) * 24.0).max(0.0);
            if hours <= horizon_h {
                short_here.push(shortfall(
                    Resource::Power,
                    None,
                    power_days,
                    target,
                    hours,
                    Some(power_days * 24.0),
                ));
            }
        }
        if !short_here.is_empty() {
            towns_below_target += 1;
        }
        below_target.append(&mut short_here);
        towns.push(ScenarioTown {
            id: town.id.to_string(),
            name: town.name.clone(),
            cluster,
            district: registry.districts[town.district.index()].id.to_string(),
            people: people(&ledger, t),
            verified: figures.verified && !assumed,
            worst_days: figures.worst_days,
            power_days: figures.power_days,
            categories,
            vulnerable: (!registry.communities_of(t).is_empty())
                .then(|| TownVulnerableView::of(&ledger, t)),
        });
    }
    below_target.sort_by(|a, b| a.hours.total_cmp(&b.hours).then(a.days.total_cmp(&b.days)));
    add_mutual_aid(&ledger, &mut towns);
    Ok(ScenarioOutcome {
        horizon_h,
        towns_below_target,
        live_towns_below_target: live_below_target(live),
        below_target,
        towns,
    })
}

fn live_below_target(live: &Ledger) -> u64 {
    live.registry()
        .town_indices()
        .filter(|&t: &TownIdx| {
            live.figures(t)
                .categories
                .iter()
                .any(|c| c.days.is_some_and(|d| d < c.target_days))
        })
        .count() as u64
}

/// Fills `aid_covers` of every category short at the start: what the cluster's plan
/// (on the scenario's ledger, so donors are as hit as everyone) sends the town.
fn add_mutual_aid(ledger: &Ledger, towns: &mut [ScenarioTown]) {
    let registry = ledger.registry();
    let mut covered: BTreeMap<(String, String), f64> = BTreeMap::new();
    for c in 0..registry.clusters.len() {
        let members: Vec<TownIdx> = registry
            .town_indices()
            .filter(|&t| registry.town(t).cluster.index() == c)
            .collect();
        for need in mutual_aid(ledger, &members) {
            let sent = need.transfers.iter().map(|t| t.amount).sum::<f64>();
            *covered.entry((need.town, need.category)).or_default() += sent;
        }
    }
    for town in towns {
        for category in &mut town.categories {
            if category.shortfall.is_some() {
                let key = (town.id.clone(), category.id.clone());
                category.aid_covers = Some(covered.get(&key).copied().unwrap_or(0.0));
            }
        }
    }
}

/// The outcome as one table, a row per town and category: what a planner opens in a
/// spreadsheet (`GET /api/v1/scenarios/{id}?format=csv`).
pub fn table(outcome: &ScenarioOutcome) -> Table {
    let column = |zh: &str, en: &str| Column {
        zh: zh.to_owned(),
        en: en.to_owned(),
    };
    let columns = vec![
        column("街镇", "Town"),
        column("街镇名称", "Town name"),
        column("组团", "Cluster"),
        column("区", "District"),
        column("类别", "Category"),
        column("单位", "Unit"),
        column("现有天数", "Days before"),
        column("情景天数", "Days after"),
        column("目标天数", "Target days"),
        column("低于目标", "Below target"),
        column("缺口", "Shortfall"),
        column("组团互助可补", "Mutual aid covers"),
    ];
    let number = |x: Option<f64>| {
        x.filter(|x| x.is_finite())
            .map_or(Cell::Empty, Cell::Number)
    };
    let text = |s: &str| Cell::Text(s.to_owned());
    let mut rows = Vec::new();
    for town in &outcome.towns {
        for c in &town.categories {
            rows.push(vec![
                text(&town.id),
                text(&town.name),
                text(&town.cluster),
                text(&town.district),
                text(&c.id),
                text(&c.unit),
                number(c.live_days),
                number(c.days),
                Cell::Number(c.target_days),
                text(if c.below_target { "是 yes" } else { "否 no" }),
                number(c.shortfall),
                number(c.aid_covers),
            ]);
        }
    }
    Table {
        name: "情景 Scenario",
        columns,
        rows,
    }
}
