//! Line protocol, the only place it is written (docs/design.md#influxdb-series): a small
//! builder that escapes what the spec says must be escaped and never writes a non-finite
//! float, and the encoders of the eight series whose schema the Grafana dashboards rely
//! on.
//!
//! ```text
//! stock,town=T,facility=F,source=S,category=C quantity=…
//! water_point,town=T,facility=F,source=S level_l=…,pump_ok=1i,potable=1i,ready=1i
//! power_unit,town=T,facility=F,source=S fuel_l=…,runtime_h=…,battery_pct=…,ready=1i
//! shelter,town=T,facility=F,source=S occupancy=…i,mode="open",open=1i,capacity=…i
//! coverage,town=T,cluster=K,district=D,category=C days=…,stock=…,need_per_day=…,target_days=…,verified=1i
//! town_status,town=T,cluster=K,district=D worst_days=…,status=0i,sheltered=…i,lat=…,lon=…,name="…"
//! alert,town=T,rule=R,severity=S firing=1i
//! activation,activation=A,town=T,shelter=F steps_done=…i,steps_overdue=…i,steps_total=…i,capacity=…i,open=1i
//! ops,instance=I received=…i,accepted=…i,rejected=…i,duplicates=…i,sink_queue=…i,sink_lag_s=…,outbox_pending=…i,outbox_failed=…i,store_paused=…i
//! ```
//!
//! Every timestamp is in milliseconds: the sink writes with `precision=ms`. A field that
//! has no value (`days` of a category nobody needs, `battery_pct` of a unit without a
//! gauge, `lat` of a town without coordinates) is left out rather than written as NaN.
//!
//! Tags come from registry ids, which are slugs, so the escaping of tag values is
//! defensive; string fields (a town's name) are operator UTF-8 and are escaped for real.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use chrono::{DateTime, Utc};
use reserve::coverage;
use reserve::ledger::TownFigures;
use reserve::reading::{Observation, PumpState, ShelterMode, ShelterObservation};
use reserve::registry::{FacilityKind, Registry};
use reserve::{Reading, TownId};

use crate::ReadingSource;

/// Floats refused because they were NaN or infinite, since the process started. Inputs
/// are validated upstream, so anything but 0 here is a bug worth a look.
static NON_FINITE_SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Fields left out of lines because their value was NaN or infinite, since start.
pub fn non_finite_skipped() -> u64 {
    NON_FINITE_SKIPPED.load(Relaxed)
}

/// One line of line protocol under construction: the measurement, then tags, then
/// fields, then [`Line::finish`] with the timestamp.
#[derive(Debug, Clone)]
pub struct Line {
    series: String,
    fields: String,
}

impl Line {
    pub fn new(measurement: &str) -> Line {
        let mut series = String::with_capacity(96);
        escape_into(&mut series, measurement, &[',', ' ']);
        Line {
            series,
            fields: String::with_capacity(96),
        }
    }

    /// Adds a tag. InfluxDB drops a tag with an empty value, so an empty one is left out
    /// here too (ids are never empty).
    pub fn tag(mut self, key: &str, value: &str) -> Line {
        if key.is_empty() || value.is_empty() {
            return self;
        }
        self.series.push(',');
        escape_into(&mut self.series, key, &[',', '=', ' ']);
        self.series.push('=');
        escape_into(&mut self.series, value, &[',', '=', ' ']);
        self
    }

    /// Adds a float field; NaN or infinity is left out and counted
    /// ([`non_finite_skipped`]), so a bad number never makes a bad line.
    pub fn float(mut self, key: &str, value: f64) -> Line {
        if !value.is_finite() {
            NON_FINITE_SKIPPED.fetch_add(1, Relaxed);
            return self;
        }
        self.field_key(key);
        // Rust prints the shortest text that reads back as the same f64, never with an
        // exponent, and without a decimal point for whole numbers: all valid floats in
        // line protocol (only a trailing `i` or `u` would make it an integer).
        let _ = write!(self.fields, "{value}");
        self
    }

    /// Adds an optional float field; `None` is left out.
    pub fn float_opt(self, key: &str, value: Option<f64>) -> Line {
        match value {
            Some(v) => self.float(key, v),
            None => self,
        }
    }

    pub fn int(mut self, key: &str, value: i64) -> Line {
        self.field_key(key);
        let _ = write!(self.fields, "{value}i");
        self
    }

    /// A counter; beyond i64 (never in practice) it saturates.
    pub fn count(self, key: &str, value: u64) -> Line {
        self.int(key, i64::try_from(value).unwrap_or(i64::MAX))
    }

    /// A yes/no as `1i`/`0i`, the schema's choice: integers sum and average in
    /// dashboards where booleans do not.
    pub fn flag(self, key: &str, value: bool) -> Line {
        self.int(key, i64::from(value))
    }

    /// A string field: `"` and `\` escaped, line breaks replaced by spaces (a line
    /// break would end the line for some parsers).
    pub fn string(mut self, key: &str, value: &str) -> Line {
        self.field_key(key);
        self.fields.push('"');
        for c in value.chars() {
            match c {
                '"' | '\\' => {
                    self.fields.push('\\');
                    self.fields.push(c);
                }
                '\n' | '\r' => self.fields.push(' '),
                c => self.fields.push(c),
            }
        }
        self.fields.push('"');
        self
    }

    /// The finished line (no trailing newline), or `None` when no field is left: a line
    /// without fields is invalid.
    pub fn finish(self, ts_ms: i64) -> Option<String> {
        if self.fields.is_empty() {
            return None;
        }
        let mut line = self.series;
        line.reserve(self.fields.len() + 22);
        line.push(' ');
        line.push_str(&self.fields);
        let _ = write!(line, " {ts_ms}");
        Some(line)
    }

    fn field_key(&mut self, key: &str) {
        if !self.fields.is_empty() {
            self.fields.push(',');
        }
        escape_into(&mut self.fields, key, &[',', '=', ' ']);
        self.fields.push('=');
    }
}

/// Appends `s` with each of `special` backslash-escaped. A backslash (which InfluxDB
/// 1.x and 3.x unescape differently in names and tags) or a control character
/// (which would break the line) becomes `_`: these are ids, never free text.
fn escape_into(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
            out.push(c);
        } else if c == '\\' || c.is_control() {
            out.push('_');
        } else {
            out.push(c);
        }
    }
}

/// The lines of one stored reading: `stock` (one per category reported), `water_point`,
/// `power_unit` or `shelter`, timestamped with the reading's `ts`, tagged with its `source`
/// (`gateway` or `manual`). A tag, not a field: a dashboard can filter or group by it,
/// and queries grouped by town and facility go on merging both sources. Who entered a
/// manual reading is not written: a person's name has no place in a series key.
///
/// Readiness here is the reading's own: a water point is ready when its pump is `ok`
/// and its water potable; a power unit when its state, fuel (at the reported or rated
/// burn, against the town's target days) and battery allow. Silence cannot be judged
/// from a reading; the `coverage`/`town_status` series carry it.
pub fn reading_lines(
    registry: &Registry,
    reading: &Reading,
    source: &ReadingSource,
) -> Vec<String> {
    let facility = registry.facility(reading.facility);
    let town = registry.town(facility.town);
    let ts = reading.ts.timestamp_millis();
    let base = |measurement: &str| {
        Line::new(measurement)
            .tag("town", town.id.as_str())
            .tag("facility", facility.id.as_str())
            .tag("source", source.as_str())
    };
    match (&reading.observation, &facility.kind) {
        (Observation::Stock(quantities), _) => quantities
            .iter()
            .filter_map(|&(category, quantity)| {
                base("stock")
                    .tag("category", registry.category(category).id.as_str())
                    .float("quantity", quantity)
                    .finish(ts)
            })
            .collect(),
        (Observation::Water(obs), _) => base("water_point")
            .float("level_l", obs.level_l)
            .flag("pump_ok", obs.pump == PumpState::Ok)
            .flag("potable", obs.potable)
            .flag(
                "ready",
                coverage::water_point_problems(obs, false).is_empty(),
            )
            .finish(ts)
            .into_iter()
            .collect(),
        (Observation::Power(obs), kind) => {
            // A validated reading of a power unit always comes with the unit's kind;
            // were it not, no rated burn is known and the reported one (or none) counts.
            let (rated_burn, min_battery) = match kind {
                FacilityKind::PowerUnit {
                    burn_l_per_h,
                    min_battery_pct,
                    ..
                } => (*burn_l_per_h, *min_battery_pct),
                _ => (0.0, 0.0),
            };
            let target_days = registry.town_target(facility.town).days;
            let ready =
                coverage::power_unit_problems(obs, rated_burn, min_battery, target_days, false)
                    .is_empty();
            base("power_unit")
                .float("fuel_l", obs.fuel_l)
                .float(
                    "runtime_h",
                    coverage::runtime_h(obs.fuel_l, obs.burn_l_per_h.unwrap_or(rated_burn)),
                )
                .float_opt("battery_pct", obs.battery_pct)
                .flag("ready", ready)
                .finish(ts)
                .into_iter()
                .collect()
        }
        (Observation::Shelter(obs), kind) => shelter_line(base("shelter"), obs, kind)
            .finish(ts)
            .into_iter()
            .collect(),
    }
}

/// A shelter's fields (docs/design.md#influxdb-schema): people inside, the capacity they
/// are measured against (so a panel draws the fill without the registry), the mode as a
/// string and `open` as a flag a panel can sum.
fn shelter_line(line: Line, obs: &ShelterObservation, kind: &FacilityKind) -> Line {
    let line = line
        .count("occupancy", obs.occupancy)
        .string("mode", obs.mode.as_str())
        .flag("open", obs.mode == ShelterMode::Open);
    match kind {
        FacilityKind::Shelter(spec) => line.count("capacity", spec.capacity),
        _ => line,
    }
}

/// The `coverage` lines of a town's figures, one per category, at `ts_ms`. A town whose
/// facilities never reported has no figures per category, hence no lines.
pub fn coverage_lines(registry: &Registry, figures: &TownFigures, ts_ms: i64) -> Vec<String> {
    let town = registry.town(figures.town);
    let cluster = registry.clusters[town.cluster.index()].id.as_str();
    let district = registry.districts[town.district.index()].id.as_str();
    figures
        .categories
        .iter()
        .filter_map(|c| {
            Line::new("coverage")
                .tag("town", town.id.as_str())
                .tag("cluster", cluster)
                .tag("district", district)
                .tag("category", registry.category(c.category).id.as_str())
                .float_opt("days", c.days)
                .float("stock", c.stock)
                .float("need_per_day", c.need_per_day)
                .float("target_days", c.target_days)
                .flag("verified", c.verified)
                .finish(ts_ms)
        })
        .collect()
}

/// The `town_status` line of a town's figures at `ts_ms`; `status` is
/// [`reserve::coverage::TownStatus::code`], `name` the registry's name, and
/// `worst_category` the name of the category with the fewest days (what a wall display
/// says the town is short of; absent with `worst_days`). `sheltered` is the people the
/// town shelters on top of its residents, from its open shelters or the typed figure
/// (docs/design.md#shelters): a wall sums it by district without the registry.
pub fn town_status_line(registry: &Registry, figures: &TownFigures, ts_ms: i64) -> String {
    let town = registry.town(figures.town);
    let mut line = Line::new("town_status")
        .tag("town", town.id.as_str())
        .tag(
            "cluster",
            registry.clusters[town.cluster.index()].id.as_str(),
        )
        .tag(
            "district",
            registry.districts[town.district.index()].id.as_str(),
        )
        .float_opt("worst_days", figures.worst_days)
        .int("status", figures.status.code())
        .count("sheltered", figures.sheltered)
        .float_opt("lat", town.lat)
        .float_opt("lon", town.lon)
        .string("name", &town.name);
    if let Some(c) = figures
        .worst_category
        .filter(|_| figures.worst_days.is_some())
    {
        line = line.string("worst_category", &registry.category(c).name);
    }
    // `status` is always there, so the line always has a field.
    line.finish(ts_ms).unwrap_or_default()
}

/// The `alert` line written when the number of a town's firing alerts of one rule and
/// severity changes: `firing` is that number (`1i` when one fires, `0i` when the last
/// resolves; two categories below target make `2i`). `rule` and `severity` are the
/// API-stable ids of docs/design.md#rules (`reserve_below_target`, `critical`).
pub fn alert_line(
    town: &TownId,
    rule: &str,
    severity: &str,
    firing: u64,
    ts: DateTime<Utc>,
) -> String {
    Line::new("alert")
        .tag("town", town.as_str())
        .tag("rule", rule)
        .tag("severity", severity)
        .count("firing", firing)
        .finish(ts.timestamp_millis())
        .unwrap_or_default()
}

/// One shelter's progress in an activation, for the `activation` series
/// (docs/design.md#activation-table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActivationProgress {
    pub steps_done: u64,
    /// Not done and past due.
    pub steps_overdue: u64,
    pub steps_total: u64,
    /// People the shelter takes.
    pub capacity: u64,
    /// Whether the activation is open; the point written when it closes says 0.
    pub open: bool,
}

/// `activation,activation=A,town=T,shelter=F steps_done=…i,steps_overdue=…i,steps_total=…i,capacity=…i,open=1i`:
/// one shelter of an activation, so a panel sums an activation's shelters by its tag.
pub fn activation_line(
    activation: i64,
    town: &str,
    shelter: &str,
    progress: &ActivationProgress,
    ts: DateTime<Utc>,
) -> String {
    Line::new("activation")
        .tag("activation", &activation.to_string())
        .tag("town", town)
        .tag("shelter", shelter)
        .count("steps_done", progress.steps_done)
        .count("steps_overdue", progress.steps_overdue)
        .count("steps_total", progress.steps_total)
        .count("capacity", progress.capacity)
        .flag("open", progress.open)
        .finish(ts.timestamp_millis())
        .unwrap_or_default()
}

/// The service's counters for the `ops` series, from whoever keeps them (ingest, the
/// notification outbox). Counters count since the process started; gauges are now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpsCounts {
    /// MQTT messages received.
    pub received: u64,
    /// Readings stored.
    pub accepted: u64,
    /// Messages rejected, all reasons together.
    pub rejected: u64,
    /// Readings already stored (redeliveries, resends).
    pub duplicates: u64,
    /// Notifications waiting in the outbox (gauge).
    pub outbox_pending: u64,
    /// Notifications given up on (counter).
    pub outbox_failed: u64,
    /// 1 while ingest is paused on a store fault (gauge).
    pub store_paused: u64,
}

/// The `ops` line: `counts` plus the sink's own queue depth and lag.
pub fn ops_line(
    instance: &str,
    counts: &OpsCounts,
    sink_queue: u64,
    sink_lag_s: f64,
    ts: DateTime<Utc>,
) -> String {
    Line::new("ops")
        .tag("instance", instance)
        .count("received", counts.received)
        .count("accepted", counts.accepted)
        .count("rejected", counts.rejected)
        .count("duplicates", counts.duplicates)
        .count("sink_queue", sink_queue)
        .float("sink_lag_s", sink_lag_s)
        .count("outbox_pending", counts.outbox_pending)
        .count("outbox_failed", counts.outbox_failed)
        .count("store_paused", counts.store_paused)
        .finish(ts.timestamp_millis())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shelter_reading_is_one_shelter_line_with_its_capacity() {
        let text = "[[category]]\nid = \"water\"\nname = \"W\"\nunit = \"L\"\ndaily_need = 3.0\n\
                    [[town]]\nid = \"tiantan\"\nname = \"T\"\ndistrict = \"d\"\ncluster = \"c\"\n\
                    population = 1000\n[[facility]]\nid = \"tt-sh1\"\ntown = \"tiantan\"\n\
                    kind = \"shelter\"\ncapacity = 1000\n";
        let source = reserve::registry::Source {
            name: "registry.toml".into(),
            text: text.into(),
        };
        let registry =
            reserve::registry::load_registry(&source, &[], &mut |_| Err("no csv".into())).unwrap();
        let reading = Reading {
            facility: registry.facility_idx("tt-sh1").unwrap(),
            ts: DateTime::from_timestamp_millis(1_763_960_400_000).unwrap(),
            seq: None,
            observation: Observation::Shelter(ShelterObservation {
                occupancy: 412,
                mode: ShelterMode::Open,
            }),
        };
        assert_eq!(
            reading_lines(&registry, &reading, &ReadingSource::Gateway),
            ["shelter,town=tiantan,facility=tt-sh1,source=gateway \
                 occupancy=412i,mode=\"open\",open=1i,capacity=1000i 1763960400000"]
        );
    }

    #[test]
    fn a_towns_status_line_carries_the_people_its_open_shelters_hold() {
        let text = "[[category]]\nid = \"water\"\nname = \"W\"\nunit = \"L\"\ndaily_need = 3.0\n\
                    [[town]]\nid = \"tiantan\"\nname = \"天坛\"\ndistrict = \"d\"\ncluster = \"c\"\n\
                    population = 1000\n[[facility]]\nid = \"tt-sh1\"\ntown = \"tiantan\"\n\
                    kind = \"shelter\"\ncapacity = 1000\n";
        let source = reserve::registry::Source {
            name: "registry.toml".into(),
            text: text.into(),
        };
        let registry =
            reserve::registry::load_registry(&source, &[], &mut |_| Err("no csv".into())).unwrap();
        let registry = std::sync::Arc::new(registry);
        let mut ledger = reserve::Ledger::new(std::sync::Arc::clone(&registry));
        let ts = DateTime::from_timestamp_millis(1_763_960_400_000).unwrap();
        let reading = Reading {
            facility: registry.facility_idx("tt-sh1").unwrap(),
            ts,
            seq: None,
            observation: Observation::Shelter(ShelterObservation {
                occupancy: 412,
                mode: ShelterMode::Open,
            }),
        };
        ledger.apply(&reading, ts);
        let town = registry.facility(reading.facility).town;
        let figures = ledger.refresh(town, ts);
        assert_eq!(
            town_status_line(&registry, figures, 5),
            // No warehouse: no water for anyone, 1,412 people included.
            "town_status,town=tiantan,cluster=c,district=d worst_days=0,status=2i,sheltered=412i,\
             name=\"天坛\",worst_category=\"W\" 5"
        );
    }

    #[test]
    fn builder_escapes_per_the_spec() {
        let cases: &[(Line, &str)] = &[
            (
                Line::new("stock")
                    .tag("town", "jingshan")
                    .float("quantity", 12000.0),
                "stock,town=jingshan quantity=12000 5",
            ),
            (
                Line::new("my measure,x")
                    .tag("a b", "c,d=e")
                    .float("f=g", 0.5),
                r"my\ measure\,x,a\ b=c\,d\=e f\=g=0.5 5",
            ),
            (
                Line::new("t").tag("k", "back\\slash\nnew").int("n", -3),
                "t,k=back_slash_new n=-3i 5",
            ),
            (
                Line::new("t")
                    .tag("empty", "")
                    .flag("ok", true)
                    .flag("no", false),
                "t ok=1i,no=0i 5",
            ),
            (
                Line::new("t").string("name", "景山 \"东\" \\ line\r\nbreak"),
                r#"t name="景山 \"东\" \\ line  break" 5"#,
            ),
            (
                Line::new("t").float("tiny", 1e-7).float("huge", 1e20),
                "t tiny=0.0000001,huge=100000000000000000000 5",
            ),
            (
                Line::new("t").count("c", u64::MAX),
                "t c=9223372036854775807i 5",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(line.clone().finish(5).as_deref(), Some(*want));
        }
    }

    #[test]
    fn non_finite_floats_are_left_out_and_a_line_without_fields_is_none() {
        let before = non_finite_skipped();
        let line = Line::new("t")
            .float("nan", f64::NAN)
            .float("ok", 1.5)
            .float("inf", f64::INFINITY)
            .finish(1);
        assert_eq!(line.as_deref(), Some("t ok=1.5 1"));
        assert_eq!(Line::new("t").float("x", f64::NEG_INFINITY).finish(1), None);
        assert!(non_finite_skipped() >= before + 3);
    }
}
