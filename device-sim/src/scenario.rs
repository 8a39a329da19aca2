//! Scenarios: what the city is going through, as data. A scenario is a TOML file; the
//! five built-ins live in `device-sim/scenarios/` and are compiled in, and an operator
//! writes their own by copying one. Every field has a default (the stock levels the
//! disaster scenarios start from: 4 ± 0.75 days, restocked to 4.5), so a scenario
//! states only what differs; `normal` starts fuller, as a well-kept city does.
//!
//! Times (`*_h`) are in simulated hours from the start of the run; with `--speed 60` one
//! simulated hour passes per wall-clock minute.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// The built-in scenarios, by name, with their text.
const BUILTIN: &[(&str, &str)] = &[
    ("normal", include_str!("../scenarios/normal.toml")),
    ("flood", include_str!("../scenarios/flood.toml")),
    ("earthquake", include_str!("../scenarios/earthquake.toml")),
    ("comms-cut", include_str!("../scenarios/comms-cut.toml")),
    ("drill", include_str!("../scenarios/drill.toml")),
];

/// A scenario: how reserves are drawn and refilled, how water points and power units
/// behave, which gateways fall silent, who is sheltered where.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The built-in's name or the file's stem; set by the constructors, not the file.
    #[serde(skip)]
    pub name: String,
    /// One sentence for logs and the report.
    #[serde(default)]
    pub description: String,
    /// Each warehouse category starts with this many days of its town's need.
    #[serde(default = "defaults::start_days")]
    pub start_days: f64,
    /// Towns start uniformly within `start_days ± start_days_spread`, so that some start
    /// near the three-day line and cross it first.
    #[serde(default = "defaults::start_days_spread")]
    pub start_days_spread: f64,
    #[serde(default)]
    pub warehouse: WarehouseBehaviour,
    #[serde(default)]
    pub water_point: WaterPointBehaviour,
    #[serde(default)]
    pub power_unit: PowerUnitBehaviour,
    #[serde(default)]
    pub gateways: GatewayBehaviour,
    #[serde(default)]
    pub sheltered: ShelteredInflux,
    /// A cluster's gateways losing their connection (断通信).
    #[serde(default)]
    pub comms_cut: Option<CommsCut>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WarehouseBehaviour {
    /// Multiplier of every category's daily need (1.0: people draw exactly their need).
    pub consumption: f64,
    /// Per-category multipliers by category id, replacing `consumption` for that one.
    pub consumption_by_category: BTreeMap<String, f64>,
    /// Whether deliveries arrive; a flood cuts the roads.
    pub restock: bool,
    /// Hours between deliveries to one warehouse (each warehouse has its own phase).
    pub restock_every_h: f64,
    /// A delivery tops each category up to this many days of need.
    pub restock_to_days: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WaterPointBehaviour {
    /// Tanks start uniformly between these fractions of capacity.
    pub start_level_min: f64,
    pub start_level_max: f64,
    /// People draw this share of capacity per hour (on the daily curve) while the pump runs.
    pub usage_pct_per_h: f64,
    /// Whether the mains refill tanks (a working pump tops up to `refill_to`).
    pub refill: bool,
    pub refill_pct_per_h: f64,
    pub refill_to: f64,
    /// Chance per hour that a working pump faults; it is repaired after `repair_h`.
    pub pump_fault_per_h: f64,
    pub repair_h: f64,
    /// Share of water points whose pump fails at the start and stays failed (flood).
    pub fail_fraction: f64,
    /// Share of water points whose water is no longer potable from the start.
    pub unpotable_fraction: f64,
    /// Share of tanks with a slow leak, and how fast they lose water.
    pub leak_fraction: f64,
    pub leak_pct_per_h: f64,
    /// Every pump is switched off for this long at the start (a drill).
    pub off_for_h: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerMode {
    /// Mains power is on: units wait, running only for self-tests and drills.
    Standby,
    /// Mains power is cut: every unit runs and burns fuel.
    Running,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowerUnitBehaviour {
    pub mode: PowerMode,
    /// Share of the rated burn while running (the unit's actual load).
    pub load_factor: f64,
    /// Routine self-tests: every unit runs for `self_test_h` once per `self_test_every_h`
    /// (each on its own schedule). 0 disables them.
    pub self_test_every_h: f64,
    pub self_test_h: f64,
    /// Every unit runs for this long at the start (a drill).
    pub drill_run_h: f64,
    /// Whether fuel is delivered; a unit below `refuel_below` of its tank is filled.
    pub refuel: bool,
    pub refuel_below: f64,
    /// Share of units with a faulty charger: their battery drifts down.
    pub charger_fault_fraction: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayBehaviour {
    /// Share of all gateways that go silent for good (destroyed, lost power).
    pub silent_fraction: f64,
    /// When they go silent; each at a random time up to this.
    pub silent_by_h: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShelteredInflux {
    /// Share of towns that take in displaced people.
    pub town_fraction: f64,
    /// How many, as a percentage of the town's residents.
    pub influx_pct: f64,
    /// When they arrive.
    pub at_h: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommsCut {
    /// Cluster ids whose gateways lose their connection. Empty: the clusters given on the
    /// command line (`--cluster`), or else one picked by the seed.
    pub clusters: Vec<String>,
    pub at_h: f64,
    /// When the connection comes back (gateways then send their backlog); `None`: never.
    pub for_h: Option<f64>,
}

mod defaults {
    pub fn start_days() -> f64 {
        4.0
    }
    pub fn start_days_spread() -> f64 {
        0.75
    }
}

impl Default for WarehouseBehaviour {
    fn default() -> Self {
        WarehouseBehaviour {
            consumption: 1.0,
            consumption_by_category: BTreeMap::new(),
            restock: true,
            restock_every_h: 24.0,
            restock_to_days: 4.5,
        }
    }
}

impl Default for WaterPointBehaviour {
    fn default() -> Self {
        WaterPointBehaviour {
            start_level_min: 0.6,
            start_level_max: 0.95,
            usage_pct_per_h: 1.5,
            refill: true,
            refill_pct_per_h: 4.0,
            refill_to: 0.95,
            pump_fault_per_h: 0.002,
            repair_h: 6.0,
            fail_fraction: 0.0,
            unpotable_fraction: 0.0,
            leak_fraction: 0.05,
            leak_pct_per_h: 0.3,
            off_for_h: 0.0,
        }
    }
}

impl Default for PowerUnitBehaviour {
    fn default() -> Self {
        PowerUnitBehaviour {
            mode: PowerMode::Standby,
            load_factor: 1.0,
            self_test_every_h: 168.0,
            self_test_h: 0.5,
            drill_run_h: 0.0,
            refuel: true,
            refuel_below: 0.6,
            charger_fault_fraction: 0.02,
        }
    }
}

impl Default for GatewayBehaviour {
    fn default() -> Self {
        GatewayBehaviour {
            silent_fraction: 0.0,
            silent_by_h: 1.0,
        }
    }
}

impl Default for ShelteredInflux {
    fn default() -> Self {
        ShelteredInflux {
            town_fraction: 0.0,
            influx_pct: 0.0,
            at_h: 0.0,
        }
    }
}

impl Default for CommsCut {
    fn default() -> Self {
        CommsCut {
            clusters: Vec::new(),
            at_h: 1.0,
            for_h: None,
        }
    }
}

/// A scenario that could not be found or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    #[error("unknown scenario {name:?}; built-in: {}, or a path to a .toml file", builtin_names().join(", "))]
    Unknown { name: String },
    #[error("scenario {name:?}: {message}")]
    Invalid { name: String, message: String },
}

/// The names of the built-in scenarios.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(name, _)| *name).collect()
}

impl Scenario {
    /// A built-in scenario by name: `normal`, `flood`, `earthquake`, `comms-cut`, `drill`.
    pub fn builtin(name: &str) -> Result<Scenario, ScenarioError> {
        let (name, text) = BUILTIN
            .iter()
            .find(|(builtin, _)| *builtin == name)
            .ok_or_else(|| ScenarioError::Unknown { name: name.into() })?;
        Scenario::parse(name, text)
    }

    /// The `normal` scenario.
    pub fn normal() -> Scenario {
        // Every built-in is parsed and validated by this crate's tests.
        Scenario::builtin("normal").expect("the built-in normal scenario is valid")
    }

    /// Parses and validates a scenario file's text; `name` is how it is reported.
    pub fn parse(name: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid {
            name: name.into(),
            message,
        };
        let mut scenario: Scenario =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_owned()))?;
        scenario.name = name.to_owned();
        scenario.validate().map_err(invalid)?;
        Ok(scenario)
    }

    /// The consumption multiplier of a category.
    pub fn consumption_of(&self, category: &str) -> f64 {
        self.warehouse
            .consumption_by_category
            .get(category)
            .copied()
            .unwrap_or(self.warehouse.consumption)
    }

    fn validate(&self) -> Result<(), String> {
        let mut checks = Checks::default();
        checks.non_negative("start_days", self.start_days);
        checks.non_negative("start_days_spread", self.start_days_spread);

        let w = &self.warehouse;
        checks.non_negative("warehouse.consumption", w.consumption);
        for (category, &m) in &w.consumption_by_category {
            checks.non_negative(&format!("warehouse.consumption_by_category.{category}"), m);
        }
        checks.positive("warehouse.restock_every_h", w.restock_every_h);
        checks.non_negative("warehouse.restock_to_days", w.restock_to_days);

        let wp = &self.water_point;
        checks.fraction("water_point.start_level_min", wp.start_level_min);
        checks.fraction("water_point.start_level_max", wp.start_level_max);
        if wp.start_level_min > wp.start_level_max {
            checks.fail("water_point.start_level_min is above start_level_max".into());
        }
        checks.non_negative("water_point.usage_pct_per_h", wp.usage_pct_per_h);
        checks.non_negative("water_point.refill_pct_per_h", wp.refill_pct_per_h);
        checks.fraction("water_point.refill_to", wp.refill_to);
        checks.fraction("water_point.pump_fault_per_h", wp.pump_fault_per_h);
        checks.non_negative("water_point.repair_h", wp.repair_h);
        checks.fraction("water_point.fail_fraction", wp.fail_fraction);
        checks.fraction("water_point.unpotable_fraction", wp.unpotable_fraction);
        checks.fraction("water_point.leak_fraction", wp.leak_fraction);
        checks.non_negative("water_point.leak_pct_per_h", wp.leak_pct_per_h);
        checks.non_negative("water_point.off_for_h", wp.off_for_h);

        let p = &self.power_unit;
        checks.non_negative("power_unit.load_factor", p.load_factor);
        checks.non_negative("power_unit.self_test_every_h", p.self_test_every_h);
        checks.non_negative("power_unit.self_test_h", p.self_test_h);
        if p.self_test_every_h > 0.0 && p.self_test_h > p.self_test_every_h {
            checks.fail("power_unit.self_test_h is longer than self_test_every_h".into());
        }
        checks.non_negative("power_unit.drill_run_h", p.drill_run_h);
        checks.fraction("power_unit.refuel_below", p.refuel_below);
        checks.fraction(
            "power_unit.charger_fault_fraction",
            p.charger_fault_fraction,
        );

        checks.fraction("gateways.silent_fraction", self.gateways.silent_fraction);
        checks.non_negative("gateways.silent_by_h", self.gateways.silent_by_h);
        checks.fraction("sheltered.town_fraction", self.sheltered.town_fraction);
        checks.non_negative("sheltered.influx_pct", self.sheltered.influx_pct);
        checks.non_negative("sheltered.at_h", self.sheltered.at_h);
        if let Some(cut) = &self.comms_cut {
            checks.non_negative("comms_cut.at_h", cut.at_h);
            if let Some(for_h) = cut.for_h {
                checks.positive("comms_cut.for_h", for_h);
            }
        }
        checks.finish()
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Collects every range problem, so a scenario author fixes them in one go.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn fail(&mut self, problem: String) {
        self.0.push(problem);
    }
    fn non_negative(&mut self, field: &str, v: f64) {
        if !(v.is_finite() && v >= 0.0) {
            self.fail(format!("{field} is {v}; it must be a number ≥ 0"));
        }
    }
    fn positive(&mut self, field: &str, v: f64) {
        if !(v.is_finite() && v > 0.0) {
            self.fail(format!("{field} is {v}; it must be a number > 0"));
        }
    }
    fn fraction(&mut self, field: &str, v: f64) {
        if !(0.0..=1.0).contains(&v) {
            self.fail(format!("{field} is {v}; it must be between 0 and 1"));
        }
    }
    fn finish(self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_says_what_it_is() {
        for name in builtin_names() {
            let scenario = Scenario::builtin(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(scenario.name, name);
            assert!(
                !scenario.description.is_empty(),
                "{name} has no description"
            );
        }
    }

    #[test]
    fn builtins_have_the_shape_their_name_promises() {
        let flood = Scenario::builtin("flood").unwrap();
        assert!(!flood.warehouse.restock && !flood.water_point.refill);
        assert!(flood.water_point.fail_fraction > 0.0 && flood.sheltered.town_fraction > 0.0);
        let quake = Scenario::builtin("earthquake").unwrap();
        assert_eq!(quake.power_unit.mode, PowerMode::Running);
        assert!(!quake.power_unit.refuel && quake.gateways.silent_fraction > 0.0);
        assert!(Scenario::builtin("comms-cut").unwrap().comms_cut.is_some());
        assert!(Scenario::builtin("drill").unwrap().power_unit.drill_run_h > 0.0);
        let normal = Scenario::normal();
        assert!(normal.warehouse.restock && normal.comms_cut.is_none());
    }

    #[test]
    fn an_empty_file_is_an_ordinary_day() {
        let empty = Scenario::parse("mine", "").unwrap();
        assert_eq!(empty.start_days, 4.0);
        assert_eq!(empty.warehouse, WarehouseBehaviour::default());
        assert_eq!(empty.consumption_of("water"), 1.0);
    }

    #[test]
    fn bad_scenarios_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("start_dayz = 3.0", "unknown field `start_dayz`"),
            (
                "[warehouse]\nrestock_evry_h = 3.0",
                "unknown field `restock_evry_h`",
            ),
            (
                "start_days = -1.0",
                "start_days is -1; it must be a number ≥ 0",
            ),
            (
                "[water_point]\nfail_fraction = 1.5",
                "water_point.fail_fraction is 1.5; it must be between 0 and 1",
            ),
            ("[power_unit]\nmode = \"idle\"", "unknown variant `idle`"),
            (
                "[warehouse]\nrestock_every_h = 0.0",
                "warehouse.restock_every_h is 0; it must be a number > 0",
            ),
        ];
        for (text, want) in cases {
            let err = Scenario::parse("mine", text).unwrap_err().to_string();
            assert!(err.starts_with("scenario \"mine\": "), "{err}");
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn an_unknown_name_lists_the_builtins() {
        let err = Scenario::builtin("tsunami").unwrap_err().to_string();
        assert!(
            err.contains("normal, flood, earthquake, comms-cut, drill"),
            "{err}"
        );
    }

    #[test]
    fn per_category_consumption_overrides_the_default() {
        let s = Scenario::parse(
            "mine",
            "[warehouse]\nconsumption = 1.2\nconsumption_by_category = { water = 2.0 }",
        )
        .unwrap();
        assert_eq!(
            (s.consumption_of("water"), s.consumption_of("food")),
            (2.0, 1.2)
        );
    }
}
