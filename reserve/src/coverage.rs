//! Coverage and readiness maths (docs/design.md#coverage-and-readiness) as pure functions
//! of numbers, so each rule is tested by a table. The [`crate::Ledger`] feeds them its
//! live state.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::reading::{PowerObservation, PowerState, PumpState, WaterObservation};
use crate::registry::{Group, Target};

/// How a single figure stands against its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

/// A town's overall status, as the board colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TownStatus {
    Ok,
    Warning,
    Critical,
    /// None of the town's facilities has ever reported: we know nothing.
    Unknown,
}

impl TownStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TownStatus::Ok => "ok",
            TownStatus::Warning => "warning",
            TownStatus::Critical => "critical",
            TownStatus::Unknown => "unknown",
        }
    }

    /// The integer written as `town_status.status` (docs/design.md#influxdb-series);
    /// Grafana maps it to colours, so these numbers are part of the contract.
    pub fn code(self) -> i64 {
        match self {
            TownStatus::Ok => 0,
            TownStatus::Warning => 1,
            TownStatus::Critical => 2,
            TownStatus::Unknown => 3,
        }
    }
}

/// People a category's need applies to in a town.
///
/// Sheltered influx adds to `all` one for one; a named group grows in proportion (a
/// shelter takes in infants and elderly at the town's own mix), because arrivals are
/// reported as one head count.
pub fn people_in_group(
    group: &Group,
    population: u64,
    groups: &BTreeMap<String, u64>,
    sheltered: u64,
) -> f64 {
    match group {
        // Saturating: both come from outside (the registry, an officer's report).
        Group::All => population.saturating_add(sheltered) as f64,
        Group::Named(name) => {
            let members = groups.get(name).copied().unwrap_or(0) as f64;
            if population == 0 {
                return members;
            }
            members * (1.0 + sheltered as f64 / population as f64)
        }
    }
}

/// Days a stock lasts at a daily need; `None` when nobody needs it (an infant-formula
/// stock in a town without infants is not "infinite days", it simply does not apply).
pub fn days_of_supply(stock: f64, need_per_day: f64) -> Option<f64> {
    if need_per_day > 0.0 {
        Some((stock / need_per_day).max(0.0))
    } else {
        None
    }
}

/// Classifies days against a target, with hysteresis: a level, once entered, is left
/// only when the figure climbs `hysteresis_days` above the threshold that caused it.
pub fn classify(days: f64, target: &Target, previous: Level) -> Level {
    let hold = |threshold: f64, level: Level| {
        if previous >= level {
            days < threshold + target.hysteresis_days
        } else {
            days < threshold
        }
    };
    if hold(target.days, Level::Critical) {
        Level::Critical
    } else if hold(target.warn_days, Level::Warning) {
        Level::Warning
    } else {
        Level::Ok
    }
}

// One type from the ledger to the officer and the API: the ids (serde's names) are
// stable, since the API serves them, alert details keep them in SQLite and messages
// translate them (`alerts::render`). The API documents this type itself, under the
// schema name `Problem` it has always had; a derive behind the optional `openapi`
// feature costs `reserve` nothing otherwise, where a mirror enum in `api` had to be
// kept in step by hand. The doc line below is the schema's description.
/// Why a water point or power unit is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Problem))]
#[serde(rename_all = "snake_case")]
pub enum NotReady {
    NeverReported,
    Silent,
    PumpFault,
    PumpOff,
    NotPotable,
    PowerFault,
    Maintenance,
    LowFuel,
    LowBattery,
}

/// Water point readiness: pump `ok`, water potable, not silent.
pub fn water_point_problems(obs: &WaterObservation, silent: bool) -> Vec<NotReady> {
    let mut problems = Vec::new();
    match obs.pump {
        PumpState::Ok => {}
        PumpState::Fault => problems.push(NotReady::PumpFault),
        PumpState::Off => problems.push(NotReady::PumpOff),
    }
    if !obs.potable {
        problems.push(NotReady::NotPotable);
    }
    if silent {
        problems.push(NotReady::Silent);
    }
    problems
}

/// Hours a power unit runs on its fuel at its burn rate.
pub fn runtime_h(fuel_l: f64, burn_l_per_h: f64) -> f64 {
    if burn_l_per_h > 0.0 {
        fuel_l / burn_l_per_h
    } else {
        0.0
    }
}

/// Power unit readiness: `standby` or `running`, runtime ≥ target days × 24 h, battery
/// ≥ its minimum, not silent.
pub fn power_unit_problems(
    obs: &PowerObservation,
    rated_burn_l_per_h: f64,
    min_battery_pct: f64,
    target_days: f64,
    silent: bool,
) -> Vec<NotReady> {
    let mut problems = Vec::new();
    match obs.state {
        PowerState::Standby | PowerState::Running => {}
        PowerState::Fault => problems.push(NotReady::PowerFault),
        PowerState::Maintenance => problems.push(NotReady::Maintenance),
    }
    let burn = obs.burn_l_per_h.unwrap_or(rated_burn_l_per_h);
    if runtime_h(obs.fuel_l, burn) < target_days * 24.0 {
        problems.push(NotReady::LowFuel);
    }
    if obs.battery_pct.is_some_and(|b| b < min_battery_pct) {
        problems.push(NotReady::LowBattery);
    }
    if silent {
        problems.push(NotReady::Silent);
    }
    problems
}

/// Time constant of the consumption estimate: readings of the last few hours dominate,
/// so a town that starts drawing on its stores after a disaster is seen within hours.
pub const DRAWDOWN_TAU_H: f64 = 6.0;

/// Consumption-rate estimate of one stock (one category at one facility).
///
/// Decreases are consumption; a jump up is a restock and says nothing about
/// consumption, so it only moves the baseline. The estimate is an exponentially
/// time-weighted average of the observed rates, so irregular reporting intervals weigh
/// by the time they cover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Drawdown {
    last: Option<(DateTime<Utc>, f64)>,
    rate_per_h: Option<f64>,
}

impl Drawdown {
    /// Units consumed per hour, once at least one interval has been seen.
    pub fn rate_per_h(&self) -> Option<f64> {
        self.rate_per_h
    }

    /// Feeds the quantity measured at `ts`. Readings not newer than the last are ignored.
    pub fn observe(&mut self, ts: DateTime<Utc>, quantity: f64) {
        let Some((last_ts, last_qty)) = self.last else {
            self.last = Some((ts, quantity));
            return;
        };
        let dt_h = (ts - last_ts).num_milliseconds() as f64 / 3_600_000.0;
        if dt_h <= 0.0 {
            return;
        }
        self.last = Some((ts, quantity));
        let drop = last_qty - quantity;
        if drop < 0.0 {
            return; // restock
        }
        let sample = drop / dt_h;
        self.rate_per_h = Some(match self.rate_per_h {
            None => sample,
            Some(rate) => {
                let alpha = 1.0 - (-dt_h / DRAWDOWN_TAU_H).exp();
                rate + alpha * (sample - rate)
            }
        });
    }
}

/// Hours until a stock consumed at `rate_per_h` falls to `target_stock`: 0 when already
/// below, `None` when it is not being consumed.
pub fn hours_to_target(stock: f64, target_stock: f64, rate_per_h: f64) -> Option<f64> {
    if stock <= target_stock {
        return Some(0.0);
    }
    // Below a thousandth of a unit an hour the forecast is noise, not consumption.
    if rate_per_h <= 1e-3 {
        return None;
    }
    Some((stock - target_stock) / rate_per_h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn target() -> Target {
        Target {
            days: 3.0,
            warn_days: 3.5,
            hysteresis_days: 0.1,
            stale_after: None,
        }
    }

    #[test]
    fn people_in_group_counts_sheltered_influx() {
        let groups: BTreeMap<String, u64> = [("infants".to_string(), 300)].into();
        let infants = Group::Named("infants".into());
        let cases: &[(&Group, u64, u64, f64)] = &[
            (&Group::All, 30_000, 0, 30_000.0),
            (&Group::All, 30_000, 5_000, 35_000.0),
            (&infants, 30_000, 0, 300.0),
            // 15,000 sheltered on 30,000 residents: half as many again of each group.
            (&infants, 30_000, 15_000, 450.0),
            (&Group::Named("dialysis".into()), 30_000, 5_000, 0.0),
            (&Group::All, 0, 200, 200.0),
        ];
        for (group, population, sheltered, want) in cases {
            let got = people_in_group(group, *population, &groups, *sheltered);
            assert_eq!(
                got, *want,
                "{group:?} pop {population} sheltered {sheltered}"
            );
        }
    }

    #[test]
    fn days_of_supply_divides_stock_by_need() {
        let cases: &[(f64, f64, Option<f64>)] = &[
            (270_000.0, 90_000.0, Some(3.0)),
            (0.0, 90_000.0, Some(0.0)),
            (100.0, 0.0, None),
        ];
        for (stock, need, want) in cases {
            assert_eq!(days_of_supply(*stock, *need), *want, "{stock}/{need}");
        }
    }

    #[test]
    fn classify_uses_hysteresis_at_both_thresholds() {
        use Level::*;
        // (days, previous, expected)
        let cases: &[(f64, Level, Level)] = &[
            (2.99, Ok, Critical),
            (3.0, Ok, Warning),         // exactly the target is not below it
            (3.05, Critical, Critical), // inside the hysteresis band: stays critical
            (3.0999, Critical, Critical),
            (3.1, Critical, Warning), // climbed out of the band
            (3.49, Ok, Warning),
            (3.5, Ok, Ok),
            (3.55, Warning, Warning),
            (3.6, Warning, Ok),
            (3.55, Critical, Warning),
            (3.6, Critical, Ok),
            (10.0, Critical, Ok),
            (0.0, Ok, Critical),
        ];
        for (days, previous, want) in cases {
            assert_eq!(
                classify(*days, &target(), *previous),
                *want,
                "{days} days after {previous:?}"
            );
        }
    }

    #[test]
    fn power_unit_readiness_table() {
        use NotReady::*;
        let obs = |fuel_l: f64, state: PowerState, battery: Option<f64>, burn: Option<f64>| {
            PowerObservation {
                fuel_l,
                battery_pct: battery,
                state,
                burn_l_per_h: burn,
            }
        };
        // Rated burn 5 L/h, target 3 days → 360 L needed.
        let cases: &[(PowerObservation, bool, &[NotReady])] = &[
            (
                obs(380.0, PowerState::Standby, Some(96.0), None),
                false,
                &[],
            ),
            (
                obs(360.0, PowerState::Running, Some(96.0), None),
                false,
                &[],
            ),
            (
                obs(359.0, PowerState::Standby, Some(96.0), None),
                false,
                &[LowFuel],
            ),
            // Measured burn of 6 L/h overrides the rated 5: 380 L last 63 h.
            (
                obs(380.0, PowerState::Running, None, Some(6.0)),
                false,
                &[LowFuel],
            ),
            (
                obs(380.0, PowerState::Standby, Some(40.0), None),
                false,
                &[LowBattery],
            ),
            (
                obs(380.0, PowerState::Fault, Some(96.0), None),
                false,
                &[PowerFault],
            ),
            (
                obs(380.0, PowerState::Maintenance, Some(96.0), None),
                true,
                &[Maintenance, Silent],
            ),
            (obs(380.0, PowerState::Standby, None, None), false, &[]),
        ];
        for (o, silent, want) in cases {
            assert_eq!(
                power_unit_problems(o, 5.0, 50.0, 3.0, *silent),
                *want,
                "{o:?} silent={silent}"
            );
        }
    }

    #[test]
    fn water_point_readiness_table() {
        use NotReady::*;
        let obs = |pump, potable| WaterObservation {
            level_l: 1000.0,
            pump,
            potable,
        };
        let cases: &[(WaterObservation, bool, &[NotReady])] = &[
            (obs(PumpState::Ok, true), false, &[]),
            (obs(PumpState::Fault, true), false, &[PumpFault]),
            (obs(PumpState::Off, true), false, &[PumpOff]),
            (obs(PumpState::Ok, false), false, &[NotPotable]),
            (obs(PumpState::Ok, true), true, &[Silent]),
        ];
        for (o, silent, want) in cases {
            assert_eq!(
                water_point_problems(o, *silent),
                *want,
                "{o:?} silent={silent}"
            );
        }
    }

    fn at(h: f64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap()
            + chrono::Duration::milliseconds((h * 3_600_000.0) as i64)
    }

    #[test]
    fn drawdown_ignores_restocks() {
        let mut d = Drawdown::default();
        d.observe(at(0.0), 1000.0);
        assert_eq!(
            d.rate_per_h(),
            None,
            "one reading says nothing about consumption"
        );
        d.observe(at(1.0), 900.0);
        assert_eq!(d.rate_per_h(), Some(100.0));
        // A truck delivers 5,000: not negative consumption.
        d.observe(at(2.0), 5900.0);
        assert_eq!(d.rate_per_h(), Some(100.0));
        // Consumption resumes from the new baseline at the same pace.
        d.observe(at(3.0), 5800.0);
        assert!((d.rate_per_h().unwrap() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn drawdown_follows_a_change_of_pace_within_hours() {
        let mut d = Drawdown::default();
        let mut qty = 100_000.0;
        for minute in 0..=60 {
            d.observe(at(minute as f64 / 60.0), qty);
            qty -= 10.0; // 600 per hour
        }
        assert!((d.rate_per_h().unwrap() - 600.0).abs() < 1e-6);
        // After a disaster consumption triples. Two time constants (12 h) later the
        // estimate has moved 1 - e^-2 ≈ 86 % of the way from 600 to 1,800.
        for minute in 1..=(12 * 60) {
            qty -= 30.0;
            d.observe(at(1.0 + minute as f64 / 60.0), qty);
        }
        let rate = d.rate_per_h().unwrap();
        let expected = 1800.0 - 1200.0 * (-12.0 / DRAWDOWN_TAU_H).exp();
        assert!(
            (rate - expected).abs() < 2.0,
            "rate {rate}, expected {expected}"
        );
    }

    #[test]
    fn drawdown_ignores_out_of_order_readings() {
        let mut d = Drawdown::default();
        d.observe(at(1.0), 900.0);
        d.observe(at(0.5), 2000.0);
        d.observe(at(2.0), 800.0);
        assert_eq!(d.rate_per_h(), Some(100.0));
    }

    #[test]
    fn hours_to_target_table() {
        let cases: &[(f64, f64, f64, Option<f64>)] = &[
            (1000.0, 400.0, 100.0, Some(6.0)),
            (400.0, 400.0, 100.0, Some(0.0)),
            (300.0, 400.0, 0.0, Some(0.0)),
            (1000.0, 400.0, 0.0, None),
        ];
        for (stock, target, rate, want) in cases {
            assert_eq!(hours_to_target(*stock, *target, *rate), *want);
        }
    }

    #[test]
    fn not_ready_ids_are_the_ones_the_api_and_stored_alerts_use() {
        // The API serves these ids and alert details keep them in SQLite: a rename
        // would break clients and the alerts stored before it.
        let cases = [
            (NotReady::NeverReported, "never_reported"),
            (NotReady::Silent, "silent"),
            (NotReady::PumpFault, "pump_fault"),
            (NotReady::PumpOff, "pump_off"),
            (NotReady::NotPotable, "not_potable"),
            (NotReady::PowerFault, "power_fault"),
            (NotReady::Maintenance, "maintenance"),
            (NotReady::LowFuel, "low_fuel"),
            (NotReady::LowBattery, "low_battery"),
        ];
        for (problem, id) in cases {
            assert_eq!(serde_json::to_value(problem).unwrap(), id, "{problem:?}");
            let back: NotReady = serde_json::from_value(id.into()).unwrap();
            assert_eq!(back, problem, "{id}");
        }
    }
}
