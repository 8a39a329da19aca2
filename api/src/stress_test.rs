//! The scheduled stress test (常态化韧性体检, issue 17): `[stress_test]` names scenarios
//! in the shape `POST /api/v1/scenarios` takes; the server's scheduler plays them all
//! on one copy of the ledger, stores each run, and sends every district contact a
//! report of its towns. This module is what the scheduler needs from the API: the
//! configuration, the runs, the report's lines and workbook, and the summary the wall
//! board reads (`GET /api/v1/stress-test/latest`).

use std::time::Duration;

use alerts::stress_report::StressReportLine;
use chrono::{DateTime, NaiveTime, Utc};
use reserve::Ledger;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::export::{self, Cell, Column, Table};
use crate::scenario::{self, CommsCut, PopulationSurge, Resource, ScenarioOutcome};
use crate::scenario::{ScenarioRequest, SilentAs, WaterCut};

/// Towns the summary lists for the wall board, weakest first.
const WEAKEST_TOWNS: usize = 10;
/// A stress test less often than yearly is not a regular check (and keeps due times
/// far from any overflow).
const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The default interval: weekly, as the seed asks.
const DEFAULT_EVERY: Duration = Duration::from_secs(7 * 24 * 3600);

/// `[stress_test]`: run these scenarios every `every` and mail the reports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StressTestConfig {
    /// Time between two runs (`"7d"`).
    #[serde(
        default = "default_every",
        deserialize_with = "reserve::duration::deserialize"
    )]
    pub every: Duration,
    /// Run at this time of day (`"06:00"`, in `[alerts]`' zone) rather than `every`
    /// after the service first started with this section.
    #[serde(default, deserialize_with = "time_of_day")]
    pub at: Option<NaiveTime>,
    /// The first run this long after the service first starts with the section,
    /// instead of `every` (a week is long to wait for the first report); ignored with
    /// `at`.
    #[serde(default, deserialize_with = "optional_duration")]
    pub first_after: Option<Duration>,
    /// The scenarios, each as `POST /api/v1/scenarios` takes it, with a `name`;
    /// by default the seed's four cuts, a population surge and a flood.
    #[serde(default = "default_scenarios")]
    pub scenarios: Vec<ScenarioRequest>,
}

impl Default for StressTestConfig {
    fn default() -> Self {
        StressTestConfig {
            every: DEFAULT_EVERY,
            at: None,
            first_after: None,
            scenarios: default_scenarios(),
        }
    }
}

fn default_every() -> Duration {
    DEFAULT_EVERY
}

fn time_of_day<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveTime>, D::Error> {
    let text = String::deserialize(d)?;
    NaiveTime::parse_from_str(&text, "%H:%M")
        .map(Some)
        .map_err(|_| {
            serde::de::Error::custom(format!(
                "expected a time of day such as \"06:00\", got {text:?}"
            ))
        })
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    reserve::duration::deserialize(d).map(Some)
}

/// The seed's four cuts (water, power, roads, communications), a population surge and
/// a flood (roads and power cut, water points lost, people sheltering).
pub fn default_scenarios() -> Vec<ScenarioRequest> {
    let named = |name: &str| ScenarioRequest {
        name: Some(name.to_owned()),
        ..ScenarioRequest::default()
    };
    vec![
        ScenarioRequest {
            water_cut: Some(WaterCut {
                water_need_l_per_person: Some(15.0),
                lose_water_points: false,
            }),
            ..named("water_cut")
        },
        ScenarioRequest {
            power_cut: true,
            ..named("power_cut")
        },
        ScenarioRequest {
            road_cut_days: Some(3.0),
            ..named("road_cut")
        },
        ScenarioRequest {
            comms_cut: Some(CommsCut {
                silent_as: SilentAs::LastValue,
            }),
            ..named("comms_cut")
        },
        ScenarioRequest {
            population_surge: Some(PopulationSurge {
                factor: Some(1.3),
                ..PopulationSurge::default()
            }),
            ..named("population_surge")
        },
        ScenarioRequest {
            water_cut: Some(WaterCut {
                water_need_l_per_person: None,
                lose_water_points: true,
            }),
            power_cut: true,
            road_cut_days: Some(3.0),
            population_surge: Some(PopulationSurge {
                factor: Some(1.1),
                ..PopulationSurge::default()
            }),
            ..named("flood")
        },
    ]
}

impl StressTestConfig {
    /// Problems with the scenarios against `registry`, as `(field, message)` with the
    /// field a dotted path from the section (`scenarios[2].road_cut_days`).
    pub fn problems(&self, registry: &reserve::Registry) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.every.is_zero() {
            out.push(("every".to_owned(), "must be > 0".to_owned()));
        }
        for (field, value) in [
            ("every", Some(self.every)),
            ("first_after", self.first_after),
        ] {
            if value.is_some_and(|d| d > MAX_INTERVAL) {
                out.push((field.to_owned(), "must be at most 365d".to_owned()));
            }
        }
        if self.scenarios.is_empty() {
            out.push((
                "scenarios".to_owned(),
                "name at least one scenario".to_owned(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, request) in self.scenarios.iter().enumerate() {
            let at = format!("scenarios[{i}]");
            match &request.name {
                None => out.push((format!("{at}.name"), "every scenario needs a name".into())),
                Some(name) if !names.insert(name.clone()) => {
                    out.push((
                        format!("{at}.name"),
                        format!("{name:?} is used by another scenario"),
                    ));
                }
                Some(_) => {}
            }
            if let Err(ApiError::InvalidBody { message, field }) =
                scenario::validate(registry, request)
            {
                let field = field.map_or(at.clone(), |f| format!("{at}.{f}"));
                let message = message
                    .split_once(": ")
                    .map_or(message.clone(), |(_, m)| m.to_owned());
                out.push((field, message));
            }
        }
        out
    }
}

/// One scenario played: its name, request and outcome.
#[derive(Debug)]
pub struct StressRun {
    pub name: String,
    pub request: ScenarioRequest,
    pub outcome: ScenarioOutcome,
}

/// Plays every scenario of `config` on `live` (a copy the caller took), at `now`.
pub fn run(
    live: &Ledger,
    config: &StressTestConfig,
    now: DateTime<Utc>,
) -> Result<Vec<StressRun>, ApiError> {
    config
        .scenarios
        .iter()
        .map(|request| {
            Ok(StressRun {
                name: request.name.clone().unwrap_or_default(),
                request: request.clone(),
                outcome: scenario::run(live, request, now)?,
            })
        })
        .collect()
}

/// Every town below target under every run, in run order, soonest first within one.
pub fn report_lines(runs: &[StressRun]) -> Vec<StressReportLine> {
    let mut lines = Vec::new();
    for run in runs {
        for short in &run.outcome.below_target {
            let town = run.outcome.towns.iter().find(|t| t.id == short.town);
            let (category, unit) = match (short.resource, &short.category) {
                (Resource::Supply, Some(id)) => (id.clone(), None),
                _ => ("power".to_owned(), Some("d".to_owned())),
            };
            let figures = town.and_then(|t| t.categories.iter().find(|c| c.id == category));
            lines.push(StressReportLine {
                scenario: run.name.clone(),
                town: short.town.clone(),
                town_name: short.town_name.clone(),
                cluster: short.cluster.clone(),
                unit: unit
                    .or_else(|| figures.map(|c| c.unit.clone()))
                    .unwrap_or_default(),
                category,
                days_before: figures.and_then(|c| c.live_days),
                days_after: short.days,
                target_days: short.target_days,
                hours: short.hours,
                shortfall: figures.and_then(|c| c.shortfall),
                aid_covers: figures.and_then(|c| c.aid_covers),
            });
        }
    }
    lines
}

/// The report's lines as one table (the workbook's sheet).
pub fn report_table(lines: &[StressReportLine]) -> Table {
    let column = |zh: &str, en: &str| Column {
        zh: zh.to_owned(),
        en: en.to_owned(),
    };
    let text = |s: &str| Cell::Text(s.to_owned());
    let number = |x: Option<f64>| {
        x.filter(|x| x.is_finite())
            .map_or(Cell::Empty, Cell::Number)
    };
    Table {
        name: "体检 Stress test",
        columns: vec![
            column("情景", "Scenario"),
            column("街镇", "Town"),
            column("街镇名称", "Town name"),
            column("组团", "Cluster"),
            column("类别", "Category"),
            column("单位", "Unit"),
            column("现有天数", "Days before"),
            column("情景天数", "Days after"),
            column("目标天数", "Target days"),
            column("低于目标时间 (小时)", "Below target in (h)"),
            column("缺口", "Shortfall"),
            column("组团互助可补", "Mutual aid covers"),
        ],
        rows: lines
            .iter()
            .map(|l| {
                vec![
                    text(&l.scenario),
                    text(&l.town),
                    text(&l.town_name),
                    text(&l.cluster),
                    text(&l.category),
                    text(&l.unit),
                    number(l.days_before),
                    Cell::Number(l.days_after),
                    Cell::Number(l.target_days),
                    Cell::Number(l.hours),
                    number(l.shortfall),
                    number(l.aid_covers),
                ]
            })
            .collect(),
    }
}

/// The report's workbook.
pub fn report_xlsx(lines: &[StressReportLine]) -> Result<Vec<u8>, String> {
    export::to_xlsx(&[report_table(lines)]).map_err(|e| e.to_string())
}

/// The runs as the store keeps them (`requested_by` the stress test).
pub fn stored_runs(
    runs: &[StressRun],
    at: DateTime<Utc>,
) -> Result<Vec<store::NewScenarioRun>, serde_json::Error> {
    runs.iter()
        .map(|run| {
            Ok(store::NewScenarioRun {
                at,
                name: Some(run.name.clone()),
                requested_by: store::STRESS_TEST_REQUESTER.to_owned(),
                towns_below_target: run.outcome.towns_below_target,
                request: serde_json::to_string(&run.request)?,
                outcome: serde_json::to_string(&run.outcome)?,
            })
        })
        .collect()
}

/// The last report as the wall board reads it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StressTestSummary {
    pub id: i64,
    pub ran: DateTime<Utc>,
    pub next_due: DateTime<Utc>,
    pub scenarios: Vec<SummaryScenario>,
    /// Towns below target in some scenario, fewest days first, at most 10; a town
    /// appears once, with its worst line.
    pub weakest: Vec<WeakTown>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SummaryScenario {
    pub name: String,
    /// The stored run: `GET /api/v1/scenarios/{run}`.
    pub run: i64,
    pub towns_below_target: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WeakTown {
    pub town: String,
    pub town_name: String,
    pub cluster: String,
    pub scenario: String,
    /// A category id, or `power`.
    pub category: String,
    pub days: f64,
    pub target_days: f64,
    pub shortfall: Option<f64>,
    pub aid_covers: Option<f64>,
    pub unit: String,
}

impl StressTestSummary {
    /// As the store keeps it; `null` (read back as no summary) if it ever failed.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "null".to_owned())
    }
}

/// The summary of stress test `id`, whose runs were stored as `run_ids`.
pub fn summary(
    id: i64,
    ran: DateTime<Utc>,
    next_due: DateTime<Utc>,
    runs: &[StressRun],
    run_ids: &[i64],
) -> StressTestSummary {
    let mut lines = report_lines(runs);
    lines.sort_by(|a, b| {
        a.days_after
            .total_cmp(&b.days_after)
            .then(a.hours.total_cmp(&b.hours))
    });
    let mut seen = std::collections::HashSet::new();
    let weakest = lines
        .into_iter()
        .filter(|l| seen.insert(l.town.clone()))
        .take(WEAKEST_TOWNS)
        .map(|l| WeakTown {
            town: l.town,
            town_name: l.town_name,
            cluster: l.cluster,
            scenario: l.scenario,
            category: l.category,
            days: l.days_after,
            target_days: l.target_days,
            shortfall: l.shortfall,
            aid_covers: l.aid_covers,
            unit: l.unit,
        })
        .collect();
    StressTestSummary {
        id,
        ran,
        next_due,
        scenarios: runs
            .iter()
            .zip(run_ids)
            .map(|(run, &id)| SummaryScenario {
                name: run.name.clone(),
                run: id,
                towns_below_target: run.outcome.towns_below_target,
            })
            .collect(),
        weakest,
    }
}
