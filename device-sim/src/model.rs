//! What a facility's sensors would measure: stock drawn on a daily curve and restocked,
//! water tanks drained, refilled and leaking, generators self-testing and burning fuel,
//! batteries drifting. Pure and deterministic: time comes in as simulated hours since the
//! start of the run, randomness from the gateway's seeded RNG.
//!
//! Every `advance` integrates over the whole step instead of sampling its end, so a
//! reading every simulated hour and one every simulated minute tell the same story.

use std::f64::consts::TAU;

use fastrand::Rng;
use reserve::reading::{PowerState, PumpState};
use reserve::wire::{WirePower, WireReading, WireTs, WireWater};

use crate::scenario::{PowerMode, Scenario};

/// How far consumption swings around its daily mean: at the peak people draw 1.6× the
/// mean rate, in the small hours 0.4×.
const DAY_CURVE_AMPLITUDE: f64 = 0.6;
/// Local hour of peak consumption (midday meals, daytime activity).
const DAY_CURVE_PEAK_H: f64 = 13.0;
/// A running generator's measured burn wanders this much around its load.
const BURN_NOISE: f64 = 0.02;
/// A healthy charger brings the battery back up at this rate.
const CHARGE_PCT_PER_H: f64 = 1.0;
/// A battery behind a faulty charger loses this much per hour.
const FAULTY_DRIFT_PCT_PER_H: f64 = 0.4;
/// Gauge noise per reading on the battery percentage.
const BATTERY_NOISE_PCT: f64 = 0.1;

/// Consumption between two instants as a multiple of the mean hourly rate: the integral
/// of `1 + A·cos(2π(t − peak)/24)` over local hours, exact for any step length.
pub(crate) fn day_curve_hours(from_local_h: f64, to_local_h: f64) -> f64 {
    let omega = TAU / 24.0;
    let phase = |t: f64| (omega * (t - DAY_CURVE_PEAK_H)).sin();
    (to_local_h - from_local_h)
        + DAY_CURVE_AMPLITUDE / omega * (phase(to_local_h) - phase(from_local_h))
}

/// Hours of `[from, to)` inside windows `[first + k·every, first + k·every + len)`.
fn hours_in_windows(from: f64, to: f64, first: f64, every: f64, len: f64) -> f64 {
    if every <= 0.0 || len <= 0.0 || to <= from {
        return 0.0;
    }
    // The first window that ends after `from`.
    let mut k = ((from - first - len) / every).ceil().max(0.0);
    let mut total = 0.0;
    loop {
        let start = first + k * every;
        if start >= to {
            return total;
        }
        total += (to.min(start + len) - from.max(start)).max(0.0);
        k += 1.0;
    }
}

fn in_windows(t: f64, first: f64, every: f64, len: f64) -> bool {
    if every <= 0.0 || len <= 0.0 || t < first {
        return false;
    }
    (t - first) % every < len
}

/// A facility's simulated physics; the variant matches the facility's kind.
#[derive(Debug, Clone)]
pub(crate) enum FacilityModel {
    Warehouse(Warehouse),
    WaterPoint(WaterPoint),
    PowerUnit(PowerUnit),
    Shelter(crate::shelter::Shelter),
}

impl FacilityModel {
    /// Moves the model to `to_h` (simulated hours since the start). `people_factor` is
    /// the town's effective population over its residents (sheltered influx).
    pub(crate) fn advance(&mut self, to_h: f64, people_factor: f64, rng: &mut Rng) {
        match self {
            FacilityModel::Warehouse(w) => w.advance(to_h, people_factor),
            FacilityModel::WaterPoint(w) => w.advance(to_h, people_factor, rng),
            FacilityModel::PowerUnit(p) => p.advance(to_h, rng),
            FacilityModel::Shelter(s) => s.advance(to_h),
        }
    }

    /// What the gateway would publish now.
    pub(crate) fn reading(&self, ts: WireTs) -> WireReading<'static> {
        match self {
            FacilityModel::Warehouse(w) => WireReading::stock(
                ts,
                w.lines
                    .iter()
                    .map(|line| (line.category.clone(), round_to(line.quantity, 2))),
            ),
            FacilityModel::WaterPoint(w) => WireReading::water(
                ts,
                WireWater {
                    level_l: round_to(w.level_l, 1),
                    pump: w.pump,
                    potable: w.potable,
                },
            ),
            FacilityModel::PowerUnit(p) => WireReading::power(
                ts,
                WirePower {
                    fuel_l: round_to(p.fuel_l, 2),
                    battery_pct: Some(round_to(p.battery_pct, 1)),
                    state: p.state(),
                    burn_l_per_h: p.measured_burn.map(|b| round_to(b, 3)),
                },
            ),
            FacilityModel::Shelter(s) => s.reading(ts),
        }
    }
}

/// Rounds to `decimals` places as a gauge would display it; keeps payloads short.
/// Dividing by the power of ten (rather than multiplying by a step like 0.01) gives
/// the double nearest the decimal, which prints as `289.78`, not `289.78000000000003`.
fn round_to(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    ((v * scale).round() / scale).max(0.0)
}

/// One category on a warehouse's shelves.
#[derive(Debug, Clone)]
pub(crate) struct StockLine {
    pub(crate) category: String,
    pub(crate) quantity: f64,
    /// This warehouse's share of its town's daily need (residents only).
    pub(crate) need_per_day: f64,
    /// The scenario's multiplier for this category.
    pub(crate) consumption: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct Warehouse {
    pub(crate) lines: Vec<StockLine>,
    /// `(every_h, next_h)` of deliveries; `None` when the scenario has no restocks.
    restock: Option<(f64, f64)>,
    restock_to_days: f64,
    now_h: f64,
    /// Local hour of day at the start of the run, for the daily curve.
    day_offset_h: f64,
}

impl Warehouse {
    /// A warehouse holding `start_days` of its share of need; deliveries (if the
    /// scenario has them) start at `first_restock_h`.
    pub(crate) fn new(
        lines: Vec<StockLine>,
        scenario: &Scenario,
        first_restock_h: f64,
        day_offset_h: f64,
    ) -> Warehouse {
        let w = &scenario.warehouse;
        Warehouse {
            lines,
            restock: w.restock.then_some((w.restock_every_h, first_restock_h)),
            restock_to_days: w.restock_to_days,
            now_h: 0.0,
            day_offset_h,
        }
    }

    fn advance(&mut self, to_h: f64, people_factor: f64) {
        while let Some((every, next)) = self.restock {
            if next > to_h {
                break;
            }
            self.consume(next, people_factor);
            for line in &mut self.lines {
                let full = self.restock_to_days * line.need_per_day * people_factor;
                line.quantity = line.quantity.max(full);
            }
            self.restock = Some((every, next + every));
        }
        self.consume(to_h, people_factor);
    }

    fn consume(&mut self, to_h: f64, people_factor: f64) {
        if to_h <= self.now_h {
            return;
        }
        let days = day_curve_hours(self.now_h + self.day_offset_h, to_h + self.day_offset_h) / 24.0;
        for line in &mut self.lines {
            let drawn = line.need_per_day * line.consumption * people_factor * days;
            line.quantity = (line.quantity - drawn).max(0.0);
        }
        self.now_h = to_h;
    }
}

#[derive(Debug, Clone)]
pub(crate) struct WaterPoint {
    pub(crate) capacity_l: f64,
    pub(crate) level_l: f64,
    pub(crate) pump: PumpState,
    pub(crate) potable: bool,
    usage_l_per_h: f64,
    /// 0 when the mains do not refill.
    refill_l_per_h: f64,
    refill_to_l: f64,
    leak_l_per_h: f64,
    fault_per_h: f64,
    repair_h: f64,
    repair_at_h: Option<f64>,
    /// A pump that failed for the scenario's whole run (flooded).
    failed_for_good: bool,
    off_until_h: f64,
    now_h: f64,
    day_offset_h: f64,
}

/// The per-water-point draws the planner makes with the run's RNG.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaterPointFate {
    pub(crate) start_fraction: f64,
    pub(crate) failed: bool,
    pub(crate) unpotable: bool,
    pub(crate) leaking: bool,
}

impl WaterPoint {
    pub(crate) fn new(
        capacity_l: f64,
        fate: WaterPointFate,
        scenario: &Scenario,
        day_offset_h: f64,
    ) -> WaterPoint {
        let w = &scenario.water_point;
        let pct = |p: f64| capacity_l * p / 100.0;
        let mut point = WaterPoint {
            capacity_l,
            level_l: capacity_l * fate.start_fraction,
            pump: PumpState::Ok,
            potable: !fate.unpotable,
            usage_l_per_h: pct(w.usage_pct_per_h),
            refill_l_per_h: if w.refill {
                pct(w.refill_pct_per_h)
            } else {
                0.0
            },
            refill_to_l: capacity_l * w.refill_to,
            leak_l_per_h: if fate.leaking {
                pct(w.leak_pct_per_h)
            } else {
                0.0
            },
            fault_per_h: w.pump_fault_per_h,
            repair_h: w.repair_h,
            repair_at_h: None,
            failed_for_good: fate.failed,
            off_until_h: w.off_for_h,
            now_h: 0.0,
            day_offset_h,
        };
        point.pump = point.pump_at(0.0);
        point
    }

    fn pump_at(&self, t: f64) -> PumpState {
        if self.failed_for_good || self.repair_at_h.is_some_and(|at| t < at) {
            PumpState::Fault
        } else if t < self.off_until_h {
            PumpState::Off
        } else {
            PumpState::Ok
        }
    }

    fn advance(&mut self, to_h: f64, people_factor: f64, rng: &mut Rng) {
        let dt = to_h - self.now_h;
        if dt <= 0.0 {
            return;
        }
        // The pump's state at the start holds for the step; changes show at its end.
        let mut level = self.level_l - self.leak_l_per_h * dt;
        if self.pump == PumpState::Ok {
            let hours = day_curve_hours(self.now_h + self.day_offset_h, to_h + self.day_offset_h);
            level -= self.usage_l_per_h * people_factor * hours;
            if self.refill_l_per_h > 0.0 && level < self.refill_to_l {
                level = (level + self.refill_l_per_h * dt).min(self.refill_to_l);
            }
        }
        self.level_l = level.clamp(0.0, self.capacity_l);

        if self.repair_at_h.is_some_and(|at| at <= to_h) {
            self.repair_at_h = None;
        }
        let mut pump = self.pump_at(to_h);
        if pump == PumpState::Ok && self.fault_per_h > 0.0 {
            let p = 1.0 - (1.0 - self.fault_per_h).powf(dt);
            if rng.f64() < p {
                self.repair_at_h = Some(to_h + self.repair_h);
                pump = PumpState::Fault;
            }
        }
        self.pump = pump;
        self.now_h = to_h;
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PowerUnit {
    pub(crate) fuel_capacity_l: f64,
    pub(crate) fuel_l: f64,
    pub(crate) burn_l_per_h: f64,
    pub(crate) battery_pct: f64,
    load_factor: f64,
    mode: PowerMode,
    charger_faulty: bool,
    /// `(first_h, every_h, len_h)` of self-test runs.
    self_test: (f64, f64, f64),
    drill_until_h: f64,
    refuel_below_l: Option<f64>,
    ran_dry: bool,
    running: bool,
    /// The burn measured over the last step while running.
    measured_burn: Option<f64>,
    now_h: f64,
}

/// The per-power-unit draws the planner makes with the run's RNG.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PowerUnitFate {
    pub(crate) fuel_fraction: f64,
    pub(crate) battery_pct: f64,
    pub(crate) charger_faulty: bool,
    pub(crate) first_self_test_h: f64,
}

impl PowerUnit {
    pub(crate) fn new(
        fuel_capacity_l: f64,
        burn_l_per_h: f64,
        fate: PowerUnitFate,
        scenario: &Scenario,
    ) -> PowerUnit {
        let p = &scenario.power_unit;
        let mut unit = PowerUnit {
            fuel_capacity_l,
            fuel_l: fuel_capacity_l * fate.fuel_fraction,
            burn_l_per_h,
            battery_pct: fate.battery_pct,
            load_factor: p.load_factor,
            mode: p.mode,
            charger_faulty: fate.charger_faulty,
            self_test: (fate.first_self_test_h, p.self_test_every_h, p.self_test_h),
            drill_until_h: p.drill_run_h,
            refuel_below_l: p.refuel.then_some(fuel_capacity_l * p.refuel_below),
            ran_dry: false,
            running: false,
            measured_burn: None,
            now_h: 0.0,
        };
        unit.running = unit.runs_at(0.0);
        unit
    }

    fn runs_at(&self, t: f64) -> bool {
        let (first, every, len) = self.self_test;
        !self.ran_dry
            && (self.mode == PowerMode::Running
                || t < self.drill_until_h
                || in_windows(t, first, every, len))
    }

    fn running_hours(&self, from: f64, to: f64) -> f64 {
        if self.mode == PowerMode::Running {
            return to - from;
        }
        let (first, every, len) = self.self_test;
        let drill = (to.min(self.drill_until_h) - from).max(0.0);
        // A self-test during a drill run does not burn twice.
        let tests = hours_in_windows(from.max(self.drill_until_h), to, first, every, len);
        drill + tests
    }

    pub(crate) fn state(&self) -> PowerState {
        if self.ran_dry {
            // Out of fuel, it stopped: not ready, whatever else it reports.
            PowerState::Fault
        } else if self.running {
            PowerState::Running
        } else {
            PowerState::Standby
        }
    }

    fn advance(&mut self, to_h: f64, rng: &mut Rng) {
        let dt = to_h - self.now_h;
        if dt <= 0.0 {
            return;
        }
        let running_h = if self.ran_dry {
            0.0
        } else {
            self.running_hours(self.now_h, to_h)
        };
        let burn =
            self.burn_l_per_h * self.load_factor * (1.0 + BURN_NOISE * (2.0 * rng.f64() - 1.0));
        self.fuel_l -= burn * running_h;
        if self.fuel_l <= 0.0 {
            self.fuel_l = 0.0;
            self.ran_dry = true;
        }
        if let Some(below) = self.refuel_below_l
            && self.fuel_l < below
        {
            self.fuel_l = self.fuel_capacity_l;
            self.ran_dry = false;
        }

        // Running, the alternator charges; on mains, the charger does unless it is faulty.
        let drift = if self.charger_faulty {
            CHARGE_PCT_PER_H * running_h - FAULTY_DRIFT_PCT_PER_H * (dt - running_h)
        } else {
            CHARGE_PCT_PER_H * dt
        };
        let noise = BATTERY_NOISE_PCT * (2.0 * rng.f64() - 1.0);
        self.battery_pct = (self.battery_pct + drift + noise).clamp(0.0, 100.0);

        self.now_h = to_h;
        self.running = self.runs_at(to_h);
        self.measured_burn = (self.running && running_h > 0.0).then_some(burn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn a_day_on_the_curve_is_exactly_a_days_need() {
        for start in [0.0, 5.5, 13.0, 23.9] {
            assert!(close(day_curve_hours(start, start + 24.0), 24.0, 1e-9));
        }
        // Midday draws more than the small hours.
        assert!(day_curve_hours(12.0, 14.0) > 3.0 * day_curve_hours(0.0, 2.0) / 1.5);
    }

    #[test]
    fn self_test_windows_are_counted_once_whatever_the_step() {
        let cases: &[(f64, f64, f64)] = &[
            (0.0, 1.0, 0.5),   // the first window, whole
            (0.25, 1.0, 0.25), // its second half
            (0.0, 10.0, 0.5),  // one window in ten hours
            (0.0, 340.0, 1.5), // 0..0.5, 168..168.5, 336..336.5
            (167.0, 169.0, 0.5),
            (0.6, 167.9, 0.0),
        ];
        for &(from, to, want) in cases {
            let got = hours_in_windows(from, to, 0.0, 168.0, 0.5);
            assert!(close(got, want, 1e-9), "[{from}, {to}): {got} != {want}");
        }
    }

    fn warehouse(scenario: &Scenario, need: f64, start_days: f64) -> Warehouse {
        let line = StockLine {
            category: "water".into(),
            quantity: need * start_days,
            need_per_day: need,
            consumption: scenario.consumption_of("water"),
        };
        Warehouse::new(vec![line], scenario, 12.0, 0.0)
    }

    #[test]
    fn a_warehouse_draws_its_need_and_is_restocked() {
        let mut scenario = Scenario::normal();
        scenario.warehouse.restock = false;
        let mut w = warehouse(&scenario, 1000.0, 4.0);
        // Hour by hour or in one step: the same day's draw.
        for h in 1..=24 {
            w.advance(f64::from(h), 1.0);
        }
        assert!(close(w.lines[0].quantity, 3000.0, 1e-6));

        let mut big_step = warehouse(&scenario, 1000.0, 4.0);
        big_step.advance(24.0, 1.0);
        assert!(close(big_step.lines[0].quantity, 3000.0, 1e-6));

        // Sheltered people draw too.
        let mut crowded = warehouse(&scenario, 1000.0, 4.0);
        crowded.advance(24.0, 1.5);
        assert!(close(crowded.lines[0].quantity, 2500.0, 1e-6));

        let mut restocked = warehouse(&Scenario::normal(), 1000.0, 4.0);
        restocked.advance(13.0, 1.0);
        // Delivered at hour 12 up to 5 days, then one more hour drawn.
        let q = restocked.lines[0].quantity;
        assert!(q > 4900.0 && q < 5000.0, "{q}");
    }

    fn fixed_rng() -> Rng {
        Rng::with_seed(7)
    }

    #[test]
    fn a_running_unit_burns_its_rated_fuel_and_stops_when_dry() {
        let scenario = Scenario::builtin("earthquake").unwrap();
        let fate = PowerUnitFate {
            fuel_fraction: 1.0,
            battery_pct: 95.0,
            charger_faulty: false,
            first_self_test_h: 0.0,
        };
        let mut unit = PowerUnit::new(500.0, 5.0, fate, &scenario);
        let mut rng = fixed_rng();
        unit.advance(10.0, &mut rng);
        assert!(
            close(unit.fuel_l, 450.0, 50.0 * BURN_NOISE),
            "{}",
            unit.fuel_l
        );
        assert_eq!(unit.state(), PowerState::Running);
        assert!(unit.measured_burn.is_some_and(|b| close(b, 5.0, 0.1)));
        unit.advance(200.0, &mut rng);
        assert_eq!((unit.fuel_l, unit.state()), (0.0, PowerState::Fault));
    }

    #[test]
    fn a_standby_unit_burns_only_in_its_self_test() {
        let scenario = Scenario::normal();
        let fate = PowerUnitFate {
            fuel_fraction: 1.0,
            battery_pct: 95.0,
            charger_faulty: true,
            first_self_test_h: 2.0,
        };
        let mut unit = PowerUnit::new(500.0, 10.0, fate, &scenario);
        let mut rng = fixed_rng();
        unit.advance(1.0, &mut rng);
        assert_eq!((unit.fuel_l, unit.state()), (500.0, PowerState::Standby));
        unit.advance(2.25, &mut rng);
        assert_eq!(unit.state(), PowerState::Running);
        unit.advance(24.0, &mut rng);
        assert!(close(unit.fuel_l, 495.0, 0.2), "{}", unit.fuel_l);
        assert_eq!(unit.state(), PowerState::Standby);
        // The faulty charger let the battery drift down between the self-tests.
        assert!(unit.battery_pct < 95.0 - 5.0, "{}", unit.battery_pct);
    }

    #[test]
    fn flooded_water_points_never_rise_and_failed_pumps_serve_nobody() {
        let scenario = Scenario::builtin("flood").unwrap();
        let fate = |failed| WaterPointFate {
            start_fraction: 0.8,
            failed,
            unpotable: false,
            leaking: false,
        };
        let mut rng = fixed_rng();
        let mut failed = WaterPoint::new(50_000.0, fate(true), &scenario, 0.0);
        let mut working = WaterPoint::new(50_000.0, fate(false), &scenario, 0.0);
        let mut last = working.level_l;
        for h in 1..=48 {
            failed.advance(f64::from(h), 1.0, &mut rng);
            working.advance(f64::from(h), 1.0, &mut rng);
            assert!(working.level_l <= last);
            last = working.level_l;
        }
        assert_eq!((failed.level_l, failed.pump), (40_000.0, PumpState::Fault));
        assert!(working.level_l < 40_000.0 * 0.5);
    }

    #[test]
    fn mains_refill_a_drawn_tank_to_its_mark() {
        let mut scenario = Scenario::normal();
        scenario.water_point.pump_fault_per_h = 0.0;
        let fate = WaterPointFate {
            start_fraction: 0.3,
            failed: false,
            unpotable: false,
            leaking: false,
        };
        let mut point = WaterPoint::new(50_000.0, fate, &scenario, 0.0);
        let mut rng = fixed_rng();
        point.advance(100.0, 1.0, &mut rng);
        assert!(
            close(point.level_l, 50_000.0 * 0.95, 1.0),
            "{}",
            point.level_l
        );
    }
}
