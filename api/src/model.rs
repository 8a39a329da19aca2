//! Views shared by several endpoints, and the API's own copies of the domain's enums.
//!
//! The copies make the wire contract explicit (the OpenAPI document lists their values)
//! and keep it from changing by accident when `reserve` grows: a new domain variant
//! fails to compile here until someone decides how the API shows it.
//!
//! Except `reserve::coverage::NotReady`, served as it is (schema `Problem`): its ids are
//! already the stable ones that alert details store and messages translate, so a copy
//! here would be a third list to keep in step.

use chrono::{DateTime, Utc};
use reserve::Ledger;
use reserve::coverage::{Level, TownStatus};
use reserve::ledger::Readiness;
use reserve::ledger::{Link, ShelteredFrom};
use reserve::reading::{PowerState, PumpState};
use reserve::registry::{Category, ClusterIdx, Lang, TownIdx};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// More people than any town could shelter: a typo, not a report.
pub(crate) const MAX_SHELTERED: u64 = 100_000_000;

/// A town's overall status, as the board colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every category at or above `warn_days`, every facility reporting and ready.
    Ok,
    /// A category below `warn_days`, a unit or water point not ready, or unverified
    /// figures.
    Warning,
    /// A category below its target (three days by default).
    Critical,
    /// None of the town's facilities has ever reported.
    Unknown,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Ok,
        Status::Warning,
        Status::Critical,
        Status::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Unknown => "unknown",
        }
    }
}

impl From<TownStatus> for Status {
    fn from(s: TownStatus) -> Status {
        match s {
            TownStatus::Ok => Status::Ok,
            TownStatus::Warning => Status::Warning,
            TownStatus::Critical => Status::Critical,
            TownStatus::Unknown => Status::Unknown,
        }
    }
}

/// How one category stands against its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LevelView {
    Ok,
    Warning,
    Critical,
}

impl From<Level> for LevelView {
    fn from(l: Level) -> LevelView {
        match l {
            Level::Ok => LevelView::Ok,
            Level::Warning => LevelView::Warning,
            Level::Critical => LevelView::Critical,
        }
    }
}

/// A gateway's MQTT connectivity (retained `status`, Last Will).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Online,
    Offline,
}

impl From<Link> for LinkState {
    fn from(l: Link) -> LinkState {
        match l {
            Link::Online => LinkState::Online,
            Link::Offline => LinkState::Offline,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pump {
    Ok,
    Fault,
    Off,
}

impl From<PumpState> for Pump {
    fn from(p: PumpState) -> Pump {
        match p {
            PumpState::Ok => Pump::Ok,
            PumpState::Fault => Pump::Fault,
            PumpState::Off => Pump::Off,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PowerMode {
    Standby,
    Running,
    Fault,
    Maintenance,
}

impl From<PowerState> for PowerMode {
    fn from(p: PowerState) -> PowerMode {
        match p {
            PowerState::Standby => PowerMode::Standby,
            PowerState::Running => PowerMode::Running,
            PowerState::Fault => PowerMode::Fault,
            PowerState::Maintenance => PowerMode::Maintenance,
        }
    }
}

/// Towns per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct StatusCounts {
    pub total: u64,
    pub ok: u64,
    pub warning: u64,
    pub critical: u64,
    pub unknown: u64,
}

impl StatusCounts {
    pub fn add(&mut self, status: Status) {
        self.total += 1;
        match status {
            Status::Ok => self.ok += 1,
            Status::Warning => self.warning += 1,
            Status::Critical => self.critical += 1,
            Status::Unknown => self.unknown += 1,
        }
    }

    pub fn get(&self, status: Status) -> u64 {
        match status {
            Status::Ok => self.ok,
            Status::Warning => self.warning,
            Status::Critical => self.critical,
            Status::Unknown => self.unknown,
        }
    }
}

/// How many communities, and vulnerable people in them, a town's shortfalls reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct AffectedCount {
    pub communities: usize,
    /// Each person counted once, whatever the number of causes.
    pub people: u64,
}

impl AffectedCount {
    fn of(found: &reserve::vulnerable::TownVulnerable) -> Option<AffectedCount> {
        (!found.is_empty()).then_some(AffectedCount {
            communities: found.communities.len(),
            people: found.people,
        })
    }
}

/// A town in a list: enough to colour a tile and sort by urgency.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TownSummary {
    pub id: String,
    /// Display name, any script (e.g. `景山街道`).
    pub name: String,
    pub district: String,
    pub cluster: String,
    pub status: Status,
    /// Smallest days of supply over the categories that apply; `null` when unknown.
    pub worst_days: Option<f64>,
    /// The category with the smallest days of supply.
    pub worst_category: Option<String>,
    /// That category's display names, for a board in either language.
    pub worst_category_names: Option<CategoryNames>,
    /// Why the town is not `ok`, most urgent first: what a tile says in a few words
    /// (below target, forecast, near target, a water point or power unit not ready,
    /// unverified figures). Empty when `ok` or `unknown`.
    pub reasons: Vec<StatusReason>,
    /// False when a facility is silent or has never reported: figures are a floor.
    pub verified: bool,
    /// Residents.
    pub population: u64,
    /// People sheltered there now, on top of residents: the occupancy of its open
    /// shelters when any reports open, else the figure its officer typed in
    /// (docs/design.md#shelters).
    pub sheltered: u64,
    /// Where `sheltered` comes from: `shelters` (their occupancy) or `typed` (the
    /// officer's figure, `PUT /api/v1/towns/{id}/sheltered`).
    #[schema(value_type = String, example = "shelters")]
    pub sheltered_from: ShelteredFrom,
    /// The officer's typed-in figure, which applies while no shelter reports open.
    pub sheltered_typed: u64,
    /// Vulnerable people of its communities that a water point or power unit not
    /// ready, or a category below target, affects now (docs/design.md#communities):
    /// what a board tile says briefly; `null` when nobody is (`GET
    /// /api/v1/towns/{id}/vulnerable` says who and why).
    pub vulnerable_affected: Option<AffectedCount>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// When the figures were last computed.
    pub computed_at: Option<DateTime<Utc>>,
    /// The warning level in force (docs/design.md#warning-levels); `null` when none.
    pub warning_level: Option<crate::routes::warning_level::TownWarningView>,
}

impl TownSummary {
    pub(crate) fn of(ledger: &Ledger, t: TownIdx) -> TownSummary {
        let registry = ledger.registry();
        let town = registry.town(t);
        let figures = ledger.figures(t);
        TownSummary {
            id: town.id.to_string(),
            name: town.name.clone(),
            district: registry.districts[town.district.index()].id.to_string(),
            cluster: registry.clusters[town.cluster.index()].id.to_string(),
            status: figures.status.into(),
            worst_days: figures.worst_days,
            worst_category: figures
                .worst_category
                .map(|c| registry.category(c).id.to_string()),
            worst_category_names: figures
                .worst_category
                .map(|c| CategoryNames::of(registry.category(c))),
            reasons: status_reasons(ledger, t),
            verified: figures.verified,
            population: town.population,
            sheltered: figures.sheltered,
            sheltered_from: figures.sheltered_from,
            sheltered_typed: ledger.sheltered(t),
            vulnerable_affected: AffectedCount::of(&reserve::vulnerable::affected(ledger, t)),
            lat: town.lat,
            lon: town.lon,
            computed_at: figures.computed_at,
            warning_level: figures
                .warning
                .as_ref()
                .map(crate::routes::warning_level::TownWarningView::of),
        }
    }
}

/// The towns of each cluster, in registry order, indexed by cluster.
pub(crate) fn towns_by_cluster(ledger: &Ledger) -> Vec<Vec<TownIdx>> {
    let registry = ledger.registry();
    let mut by_cluster = vec![Vec::new(); registry.clusters.len()];
    for t in registry.town_indices() {
        by_cluster[registry.town(t).cluster.index()].push(t);
    }
    by_cluster
}

/// The towns of one cluster, in registry order.
pub(crate) fn towns_of_cluster(ledger: &Ledger, cluster: ClusterIdx) -> Vec<TownIdx> {
    let registry = ledger.registry();
    registry
        .town_indices()
        .filter(|&t| registry.town(t).cluster == cluster)
        .collect()
}

/// Residents plus sheltered (its open shelters' occupancy, else the typed figure).
/// Saturating: the registry's population is an operator's number, the sheltered count
/// a client's.
pub(crate) fn people(ledger: &Ledger, t: TownIdx) -> u64 {
    ledger
        .registry()
        .town(t)
        .population
        .saturating_add(ledger.sheltered_now(t).0)
}

/// A category's display names: the registry's `name_zh` and `name_en`, each falling
/// back to its `name`, so a board names it in its language and never by its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CategoryNames {
    #[schema(example = "棉被")]
    pub zh: String,
    #[schema(example = "Blankets")]
    pub en: String,
}

impl CategoryNames {
    pub(crate) fn of(category: &Category) -> CategoryNames {
        CategoryNames {
            zh: category.name_in(Lang::Zh).to_owned(),
            en: category.name_in(Lang::En).to_owned(),
        }
    }
}

/// What makes a town amber or red.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    /// A category below its target (`days` < `target_days`): the town is critical.
    BelowTarget,
    /// A category below its warning line and forecast to cross the target in
    /// `hours_to_target` at the current consumption.
    Forecast,
    /// A category below its warning line, with no consumption to forecast from.
    NearTarget,
    /// Water points not ready (`facilities`): pump fault or off, not potable, silent.
    WaterPointNotReady,
    /// Power units not ready (`facilities`): fault, maintenance, low fuel or battery.
    PowerUnitNotReady,
    /// Figures rest on facilities that are silent or never reported (`facilities`).
    Unverified,
}

/// One reason a town is not `ok`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StatusReason {
    pub kind: ReasonKind,
    /// Category id, for the category kinds.
    pub category: Option<String>,
    /// The category's display names, for the category kinds.
    pub category_names: Option<CategoryNames>,
    /// Days of supply of the category.
    pub days: Option<f64>,
    /// The line crossed: the target for `below_target` and `forecast`, the warning line
    /// for `near_target`.
    pub line_days: Option<f64>,
    /// `forecast`: hours until the category falls below its target.
    pub hours_to_target: Option<f64>,
    /// The facilities (ids) at fault, for the facility kinds.
    pub facilities: Vec<String>,
}

impl StatusReason {
    fn category(kind: ReasonKind, category: &Category, days: f64, line_days: f64) -> Self {
        StatusReason {
            kind,
            category: Some(category.id.to_string()),
            category_names: Some(CategoryNames::of(category)),
            days: Some(days),
            line_days: Some(line_days),
            hours_to_target: None,
            facilities: Vec::new(),
        }
    }

    fn facilities(kind: ReasonKind, facilities: Vec<String>) -> Self {
        StatusReason {
            kind,
            category: None,
            category_names: None,
            days: None,
            line_days: None,
            hours_to_target: None,
            facilities,
        }
    }
}

/// Why a town is amber or red, most urgent first: categories below target (fewest days
/// first), then below the warning line (soonest forecast first, then fewest days),
/// then readiness, then unverified figures. The same conditions the town's status is
/// computed from (docs/design.md#coverage-and-readiness), so a tile never shows a
/// colour without its reason.
fn status_reasons(ledger: &Ledger, t: TownIdx) -> Vec<StatusReason> {
    let registry = ledger.registry();
    let figures = ledger.figures(t);
    if figures.status == TownStatus::Unknown {
        return Vec::new();
    }
    let id = |f| registry.facility(f).id.to_string();
    let not_ready = |units: &[Readiness]| -> Vec<String> {
        units
            .iter()
            .filter(|u| !u.ready)
            .map(|u| id(u.facility))
            .collect()
    };
    let mut reasons = category_reasons(ledger, t);
    for (kind, units) in [
        (ReasonKind::WaterPointNotReady, &figures.water_points),
        (ReasonKind::PowerUnitNotReady, &figures.power_units),
    ] {
        let ids = not_ready(units);
        if !ids.is_empty() {
            reasons.push(StatusReason::facilities(kind, ids));
        }
    }
    if !figures.verified {
        let doubtful = figures.silent.iter().chain(&figures.never_reported);
        let ids = doubtful.map(|&f| id(f)).collect();
        reasons.push(StatusReason::facilities(ReasonKind::Unverified, ids));
    }
    reasons
}

/// The categories below a line: below target (fewest days first), then below the
/// warning line, those with a forecast first (soonest first).
fn category_reasons(ledger: &Ledger, t: TownIdx) -> Vec<StatusReason> {
    let registry = ledger.registry();
    let mut below = Vec::new();
    let mut near = Vec::new();
    for c in &ledger.figures(t).categories {
        let (Some(days), category) = (c.days, registry.category(c.category)) else {
            continue;
        };
        match c.level {
            Level::Critical => below.push(StatusReason::category(
                ReasonKind::BelowTarget,
                category,
                days,
                c.target_days,
            )),
            Level::Warning => near.push(match c.hours_to_target {
                Some(h) => StatusReason {
                    hours_to_target: Some(h),
                    ..StatusReason::category(ReasonKind::Forecast, category, days, c.target_days)
                },
                None => StatusReason::category(ReasonKind::NearTarget, category, days, c.warn_days),
            }),
            Level::Ok => {}
        }
    }
    let days = |r: &StatusReason| r.days.unwrap_or(f64::INFINITY);
    let by_days = |a: &StatusReason, b: &StatusReason| days(a).total_cmp(&days(b));
    below.sort_by(by_days);
    // A forecast says when: those come before the categories merely below the line.
    near.sort_by(|a, b| {
        let soon = |r: &StatusReason| r.hours_to_target.unwrap_or(f64::INFINITY);
        soon(a).total_cmp(&soon(b)).then(by_days(a, b))
    });
    below.extend(near);
    below
}
