//! Every random choice of a run, made up front from the seed: starting stock and levels,
//! which water points fail, which gateways fall silent, which towns take in displaced
//! people, whom the comms cut and the faults hit. Drawing them here, in registry order,
//! makes a run reproducible given `--seed` and lets the report say who was hit.

use fastrand::Rng;
use reserve::registry::{
    ClusterIdx, FacilityIdx, FacilityKind, FacilityKindName, Group, Registry, TownIdx,
};

use crate::SimError;
use crate::config::{Fault, SimConfig};
use crate::gateway::Gateway;
use crate::model::{
    FacilityModel, PowerUnit, PowerUnitFate, StockLine, Warehouse, WaterPoint, WaterPointFate,
};
use crate::shelter::Shelter;

/// Capacity assumed for a water point whose registry entry gives none.
pub(crate) const DEFAULT_WATER_CAPACITY_L: f64 = 50_000.0;

#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) gateways: Vec<Gateway>,
    /// Per town: from which simulated hour its population is multiplied by how much.
    pub(crate) people: Vec<(f64, f64)>,
    /// Towns taking in displaced people, and how many.
    pub(crate) sheltered: Vec<(TownIdx, u64)>,
    pub(crate) silent: Vec<FacilityIdx>,
    pub(crate) comms_cut: Option<CutPlan>,
    pub(crate) faults: Vec<(Fault, Vec<FacilityIdx>)>,
}

#[derive(Debug)]
pub(crate) struct CutPlan {
    pub(crate) clusters: Vec<ClusterIdx>,
    pub(crate) facilities: Vec<FacilityIdx>,
    pub(crate) at_h: f64,
    pub(crate) for_h: Option<f64>,
}

/// Resolved `--cluster` / `--towns`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResolvedTargets {
    pub(crate) clusters: Vec<ClusterIdx>,
    pub(crate) towns: Vec<TownIdx>,
}

impl ResolvedTargets {
    pub(crate) fn resolve(
        registry: &Registry,
        clusters: &[String],
        towns: &[String],
    ) -> Result<ResolvedTargets, SimError> {
        let known = |ids: Vec<&str>| {
            let mut list = ids.into_iter().take(10).collect::<Vec<_>>().join(", ");
            list.push_str(", …");
            list
        };
        let clusters = clusters
            .iter()
            .map(|id| {
                registry.cluster_idx(id).ok_or_else(|| {
                    SimError::Config(format!(
                        "unknown cluster {id:?} (known: {})",
                        known(registry.clusters.iter().map(|c| c.id.as_str()).collect())
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let towns = towns
            .iter()
            .map(|id| {
                registry.town_idx(id).ok_or_else(|| {
                    SimError::Config(format!(
                        "unknown town {id:?} (known: {})",
                        known(registry.towns.iter().map(|t| t.id.as_str()).collect())
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ResolvedTargets { clusters, towns })
    }

    fn is_empty(&self) -> bool {
        self.clusters.is_empty() && self.towns.is_empty()
    }

    fn facilities(&self, registry: &Registry) -> Vec<FacilityIdx> {
        registry
            .town_indices()
            .filter(|&t| {
                self.towns.contains(&t) || self.clusters.contains(&registry.town(t).cluster)
            })
            .flat_map(|t| registry.town(t).facilities.iter().copied())
            .collect()
    }
}

/// A share of `items`, chosen by the RNG: `fraction` of them rounded, but at least one
/// when the fraction is above zero, so "some gateways go silent" holds in a small
/// registry too.
fn pick<T: Copy>(rng: &mut Rng, items: &[T], fraction: f64) -> Vec<T> {
    if fraction <= 0.0 || items.is_empty() {
        return Vec::new();
    }
    let mut shuffled = items.to_vec();
    rng.shuffle(&mut shuffled);
    let n = ((fraction * items.len() as f64).round() as usize).clamp(1, items.len());
    shuffled.truncate(n);
    shuffled
}

fn uniform(rng: &mut Rng, low: f64, high: f64) -> f64 {
    low + (high - low) * rng.f64()
}

/// People of `group` in a town: everyone, or a named group (none if the town lacks it).
fn people_in(registry: &Registry, town: TownIdx, group: &Group) -> f64 {
    let town = registry.town(town);
    match group {
        Group::All => town.population as f64,
        Group::Named(name) => town.groups.get(name).copied().unwrap_or(0) as f64,
    }
}

/// Draws the plan. `day_offset_h` is the local hour of day at the start.
pub(crate) fn plan(
    registry: &Registry,
    config: &SimConfig,
    targets: &ResolvedTargets,
    day_offset_h: f64,
) -> Result<Plan, SimError> {
    let scenario = &config.scenario;
    let mut rng = Rng::with_seed(config.seed);

    let start_days: Vec<f64> = registry
        .towns
        .iter()
        .map(|_| {
            let spread = scenario.start_days_spread;
            uniform(
                &mut rng,
                scenario.start_days - spread,
                scenario.start_days + spread,
            )
            .max(0.0)
        })
        .collect();

    let towns: Vec<TownIdx> = registry.town_indices().collect();
    let sheltered: Vec<(TownIdx, u64)> = {
        let s = &scenario.sheltered;
        let mut chosen = if s.influx_pct > 0.0 {
            pick(&mut rng, &towns, s.town_fraction)
        } else {
            Vec::new()
        };
        chosen.sort();
        chosen
            .into_iter()
            .map(|t| {
                let people = registry.town(t).population as f64 * s.influx_pct / 100.0;
                (t, people.round() as u64)
            })
            .collect()
    };
    let mut people = vec![(0.0, 1.0); registry.towns.len()];
    for &(t, _) in &sheltered {
        people[t.index()] = (
            scenario.sheltered.at_h,
            1.0 + scenario.sheltered.influx_pct / 100.0,
        );
    }

    let of_kind = |kind: FacilityKindName| -> Vec<FacilityIdx> {
        (0..registry.facilities.len())
            .map(FacilityIdx::from_index)
            .filter(|&f| registry.facility(f).kind.name() == kind)
            .collect()
    };
    let water_points = of_kind(FacilityKindName::WaterPoint);
    let power_units = of_kind(FacilityKindName::PowerUnit);
    let wp = &scenario.water_point;
    let failed = pick(&mut rng, &water_points, wp.fail_fraction);
    let unpotable = pick(&mut rng, &water_points, wp.unpotable_fraction);
    let leaking = pick(&mut rng, &water_points, wp.leak_fraction);
    let faulty_chargers = pick(
        &mut rng,
        &power_units,
        scenario.power_unit.charger_fault_fraction,
    );

    let all: Vec<FacilityIdx> = (0..registry.facilities.len())
        .map(FacilityIdx::from_index)
        .collect();
    let mut silent = pick(&mut rng, &all, scenario.gateways.silent_fraction);
    silent.sort();

    let comms_cut = match &scenario.comms_cut {
        None => None,
        Some(cut) => {
            let hit = if !targets.is_empty() {
                targets.clone()
            } else if !cut.clusters.is_empty() {
                ResolvedTargets::resolve(registry, &cut.clusters, &[])?
            } else {
                let clusters = if registry.clusters.is_empty() {
                    Vec::new()
                } else {
                    vec![ClusterIdx::from_index(rng.usize(..registry.clusters.len()))]
                };
                ResolvedTargets {
                    clusters,
                    towns: Vec::new(),
                }
            };
            Some(CutPlan {
                facilities: hit.facilities(registry),
                clusters: hit.clusters,
                at_h: cut.at_h,
                for_h: cut.for_h,
            })
        }
    };

    let faults: Vec<(Fault, Vec<FacilityIdx>)> = config
        .faults
        .iter()
        .map(|&fault| {
            let hit = match fault {
                Fault::Malformed => Vec::new(),
                _ if !targets.is_empty() => targets.facilities(registry),
                _ if all.is_empty() => Vec::new(),
                _ => vec![all[rng.usize(..all.len())]],
            };
            (fault, hit)
        })
        .collect();

    let mut gateways = Vec::with_capacity(registry.facilities.len());
    for &f in &all {
        let facility = registry.facility(f);
        let town = registry.town(facility.town);
        let mut gateway_rng = Rng::with_seed(rng.u64(..));
        let model = match &facility.kind {
            FacilityKind::Warehouse => {
                let warehouses = town
                    .facilities
                    .iter()
                    .filter(|&&other| {
                        registry.facility(other).kind.name() == FacilityKindName::Warehouse
                    })
                    .count()
                    .max(1) as f64;
                let lines = registry
                    .categories
                    .iter()
                    .map(|c| {
                        let need = people_in(registry, facility.town, &c.group) * c.daily_need
                            / warehouses;
                        StockLine {
                            category: c.id.as_str().to_owned(),
                            quantity: need * start_days[facility.town.index()],
                            need_per_day: need,
                            consumption: scenario.consumption_of(c.id.as_str()),
                        }
                    })
                    .collect();
                let first_restock_h = scenario.warehouse.restock_every_h * gateway_rng.f64();
                FacilityModel::Warehouse(Warehouse::new(
                    lines,
                    scenario,
                    first_restock_h,
                    day_offset_h,
                ))
            }
            FacilityKind::WaterPoint { capacity_l } => {
                let fate = WaterPointFate {
                    start_fraction: uniform(
                        &mut gateway_rng,
                        wp.start_level_min,
                        wp.start_level_max,
                    ),
                    failed: failed.contains(&f),
                    unpotable: unpotable.contains(&f),
                    leaking: leaking.contains(&f),
                };
                FacilityModel::WaterPoint(WaterPoint::new(
                    capacity_l.unwrap_or(DEFAULT_WATER_CAPACITY_L),
                    fate,
                    scenario,
                    day_offset_h,
                ))
            }
            FacilityKind::PowerUnit {
                fuel_capacity_l,
                burn_l_per_h,
                ..
            } => {
                let fate = PowerUnitFate {
                    fuel_fraction: uniform(&mut gateway_rng, 0.85, 1.0),
                    battery_pct: uniform(&mut gateway_rng, 90.0, 100.0),
                    charger_faulty: faulty_chargers.contains(&f),
                    first_self_test_h: scenario.power_unit.self_test_every_h * gateway_rng.f64(),
                };
                FacilityModel::PowerUnit(PowerUnit::new(
                    *fuel_capacity_l,
                    *burn_l_per_h,
                    fate,
                    scenario,
                ))
            }
            FacilityKind::Shelter(spec) => {
                let opens = shelter_share(registry, &sheltered, f, scenario.sheltered.at_h);
                FacilityModel::Shelter(Shelter::new(spec.capacity, opens))
            }
        };
        let silent_at_h = silent
            .binary_search(&f)
            .is_ok()
            .then(|| scenario.gateways.silent_by_h * gateway_rng.f64());
        let mut gateway = Gateway::new(
            facility.town,
            town.id.as_str(),
            facility.id.as_str(),
            config.report_every.unwrap_or(facility.report_every),
            model,
            gateway_rng,
        );
        gateway.fate.silent_at_h = silent_at_h;
        if let Some(cut) = &comms_cut
            && cut.facilities.contains(&f)
        {
            gateway.fate.cut = Some((cut.at_h, cut.for_h.map(|d| cut.at_h + d)));
        }
        for (fault, hit) in &faults {
            if !hit.contains(&f) {
                continue;
            }
            match *fault {
                Fault::Stuck => gateway.fate.stuck = true,
                Fault::DieWithoutWill => gateway.fate.die_without_will = true,
                Fault::ClockSkew { ahead, by } => {
                    let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
                    gateway.fate.skew_ms = if ahead { ms } else { -ms };
                }
                Fault::Malformed => {}
            }
        }
        gateways.push(gateway);
    }

    Ok(Plan {
        gateways,
        people,
        sheltered,
        silent,
        comms_cut,
        faults,
    })
}

/// When shelter `f` opens and how many people it is to take: its town's influx shared
/// among the town's shelters by capacity. `None` for a town taking in nobody.
fn shelter_share(
    registry: &Registry,
    sheltered: &[(TownIdx, u64)],
    f: FacilityIdx,
    at_h: f64,
) -> Option<(f64, u64)> {
    let town = registry.facility(f).town;
    let &(_, people) = sheltered.iter().find(|(t, _)| *t == town)?;
    let capacity_of = |f: FacilityIdx| match &registry.facility(f).kind {
        FacilityKind::Shelter(spec) => spec.capacity as f64,
        _ => 0.0,
    };
    let total: f64 = registry
        .town(town)
        .facilities
        .iter()
        .map(|&s| capacity_of(s))
        .sum();
    let share = people as f64 * capacity_of(f) / total.max(1.0);
    Some((at_h, share.round() as u64))
}
