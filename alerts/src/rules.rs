//! The rules of docs/design.md#rules as a pure function of the ledger: which problems a
//! town has right now. No I/O and no memory beyond what the ledger keeps; the lifecycle
//! (pending, firing, resolved, who is told) is the engine's.
//!
//! Choices made here:
//! - Reserve rules of one category are one alert whose rule moves with the level:
//!   `reserve_depleting` (forecast) → `reserve_near_target` → `reserve_below_target` is
//!   a severity rise of the same alert, not one alert resolving as another fires. The
//!   days hysteresis is the ledger's [`Level`], so the line is not crossed back and forth.
//! - A facility that has never reported raises nothing of its own: on a fresh deployment
//!   that would be every facility whose gateway is not installed yet. It already counts
//!   as zero stock (so a town relying on it is below target) and marks the figures
//!   unverified, which messages say.
//! - A shortfall that rests on such a facility is held back (its alert stays pending)
//!   until the facility had its chance: `startup_grace_factor` × its `report_every` from
//!   the service's start (a facility new to the registry appears with a start too). Real
//!   gateways come online over minutes; without this every cold start pages every
//!   officer for towns whose other warehouses simply had not reported yet. After the
//!   grace the alert fires and says how many facilities never reported.
//! - Silence is judged here, at `now`, from when each facility was last heard, not from
//!   the ledger's cached figures; and not before `stale_after` has passed since the
//!   service started, so a restart after downtime does not call every gateway silent.
//! - A gateway whose Last Will said `offline` is `gateway_offline`, immediately; it is
//!   not also `facility_silent`, which would say the same thing again.
//! - Readiness problems `silent` and `never_reported` are left to the rules above.
//! - A facility counted by hand (`report = "manual"`) has no gateway: it is never
//!   `gateway_offline` nor `facility_silent`. When its last count is older than its
//!   `stale_after` (a day by default), or it was never counted once its start-up grace
//!   is over, it is `count_due`: the town officer is asked to count, which is what
//!   silence means for it. Its stock still counts as zero until the first count.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reserve::Ledger;
use reserve::coverage::{Level, NotReady};
use reserve::ledger::{CategoryCoverage, Link, Readiness};
use reserve::reading::ShelterMode;

use crate::activation::{OpenActivations, ShelterActivation};
use reserve::registry::{CategoryIdx, Facility, FacilityIdx, FacilityKind, Lang, Report, TownIdx};
use serde::{Deserialize, Serialize};

/// Rule ids of docs/design.md#rules; API-stable.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    ReserveBelowTarget,
    ReserveNearTarget,
    ReserveDepleting,
    PowerNotReady,
    WaterPointNotReady,
    FacilitySilent,
    GatewayOffline,
    CountDue,
    /// An open shelter at or above `shelter_near_capacity_pct` of its capacity.
    ShelterNearCapacity,
    /// A shelter `activating` for longer than its `convert_within`.
    ShelterNotReady,
    /// A city instance no longer hears a cluster's own instance while the link to it is
    /// up, and speaks for the cluster (docs/design.md#cluster-instance).
    ClusterInstanceSilent,
    /// A step of a shelter's activation not done by its due time
    /// (docs/design.md#activation-table).
    ActivationStepOverdue,
}

impl Rule {
    pub const ALL: [Rule; 12] = [
        Rule::ReserveBelowTarget,
        Rule::ReserveNearTarget,
        Rule::ReserveDepleting,
        Rule::PowerNotReady,
        Rule::WaterPointNotReady,
        Rule::FacilitySilent,
        Rule::GatewayOffline,
        Rule::CountDue,
        Rule::ShelterNearCapacity,
        Rule::ShelterNotReady,
        Rule::ClusterInstanceSilent,
        Rule::ActivationStepOverdue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::ReserveBelowTarget => "reserve_below_target",
            Rule::ReserveNearTarget => "reserve_near_target",
            Rule::ReserveDepleting => "reserve_depleting",
            Rule::PowerNotReady => "power_not_ready",
            Rule::WaterPointNotReady => "water_point_not_ready",
            Rule::FacilitySilent => "facility_silent",
            Rule::GatewayOffline => "gateway_offline",
            Rule::CountDue => "count_due",
            Rule::ShelterNearCapacity => "shelter_near_capacity",
            Rule::ShelterNotReady => "shelter_not_ready",
            Rule::ClusterInstanceSilent => "cluster_instance_silent",
            Rule::ActivationStepOverdue => "activation_step_overdue",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Rules of one family and subject are one alert (see the module docs).
    pub fn family(self) -> &'static str {
        match self {
            Rule::ReserveBelowTarget | Rule::ReserveNearTarget | Rule::ReserveDepleting => {
                "reserve"
            }
            other => other.as_str(),
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Rule::ReserveBelowTarget => Severity::Critical,
            _ => Severity::Warning,
        }
    }

    /// How bad the rule is within its family: a move up is told as `raised`, a move
    /// down as `lowered`. Reserve: forecast to cross the target (0) < below the warning
    /// line (1) < below the target (2); every other family has one rule.
    pub fn gravity(self) -> u8 {
        match self {
            Rule::ReserveDepleting => 0,
            Rule::ReserveNearTarget => 1,
            Rule::ReserveBelowTarget => 2,
            _ => 0,
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// The figures a message quotes about a problem, kept with the alert (as JSON) so that
/// messages and the API show them after a restart too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Detail {
    Reserve(ReserveDetail),
    Readiness {
        facility: String,
        facility_name: String,
        /// Why it is not ready (stored and shown by their ids, e.g. `low_fuel`); never
        /// `silent` or `never_reported`, which the facility rules report.
        problems: Vec<NotReady>,
        /// Power units: hours of fuel at the burn rate.
        runtime_h: Option<f64>,
    },
    Silent {
        facility: String,
        facility_name: String,
        last_heard: DateTime<Utc>,
    },
    Offline {
        facility: String,
        facility_name: String,
        since: DateTime<Utc>,
    },
    /// A facility counted by hand whose count is due.
    CountDue {
        facility: String,
        facility_name: String,
        /// When it was last counted; `None` when it never was.
        last_counted: Option<DateTime<Utc>>,
        /// Never counted and still within its start-up grace: not announced before
        /// this (an alert already firing, say before a restart, stays firing).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        held_until: Option<DateTime<Utc>>,
    },
    /// A shelter filling up (`shelter_near_capacity`).
    ShelterFull {
        facility: String,
        facility_name: String,
        occupancy: u64,
        capacity: u64,
    },
    /// A shelter asked to convert that has not opened in time (`shelter_not_ready`).
    ShelterConverting {
        facility: String,
        facility_name: String,
        /// When it started `activating`.
        activating_since: DateTime<Utc>,
        /// Its registry `convert_within`, in seconds.
        convert_within_s: u64,
    },
    /// A cluster's own instance not heard while its link is up
    /// (`cluster_instance_silent`): the city speaks for the cluster.
    ClusterSilent {
        cluster: String,
        cluster_name: String,
        /// When its alert state was last heard; `None` when never since this
        /// instance started.
        last_heard: Option<DateTime<Utc>>,
    },
    /// A step of a shelter's activation past its due time (`activation_step_overdue`).
    ActivationStep {
        activation: i64,
        facility: String,
        facility_name: String,
        /// The step's number in its plan, from 1.
        step: u32,
        name: String,
        /// Who is to do it: the contact's email, or its name when it has none; the
        /// contact told at the town level.
        contact: String,
        due_at: DateTime<Utc>,
    },
    /// How an alert about a facility resolves when the facility is removed from the
    /// registry while the alert is open (docs/design.md#registry-reload).
    Removed {
        facility: String,
        facility_name: String,
    },
}

impl Detail {
    /// Until when the problem is not to be announced, if it rests on figures not in yet.
    pub fn held_until(&self) -> Option<DateTime<Utc>> {
        match self {
            Detail::Reserve(r) => r.held_until,
            Detail::CountDue { held_until, .. } => *held_until,
            _ => None,
        }
    }

    /// Whether the problem must not be announced yet at `now`.
    pub fn held(&self, now: DateTime<Utc>) -> bool {
        self.held_until().is_some_and(|until| until > now)
    }

    /// The facility the problem is about, if it is about one.
    pub fn facility(&self) -> Option<&str> {
        match self {
            Detail::Reserve(_) | Detail::ClusterSilent { .. } => None,
            Detail::Readiness { facility, .. }
            | Detail::Silent { facility, .. }
            | Detail::Offline { facility, .. }
            | Detail::CountDue { facility, .. }
            | Detail::ShelterFull { facility, .. }
            | Detail::ShelterConverting { facility, .. }
            | Detail::ActivationStep { facility, .. }
            | Detail::Removed { facility, .. } => Some(facility),
        }
    }
}

impl Detail {
    /// The contact a problem is addressed to instead of the town's officers (an
    /// activation step's), by its email or name.
    pub fn addressed_to(&self) -> Option<&str> {
        match self {
            Detail::ActivationStep { contact, .. } => Some(contact),
            _ => None,
        }
    }
}

/// A category's coverage in a town, as messages quote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReserveDetail {
    pub category: String,
    /// The registry's `name`: what a message says when the registry gives no name in
    /// the reader's language.
    pub category_name: String,
    /// The category's names per language, as the registry gave them when the alert was
    /// raised (absent in alerts stored before categories had them).
    #[serde(default, skip_serializing_if = "CategoryNameTexts::is_empty")]
    pub category_names: CategoryNameTexts,
    pub unit: String,
    pub stock: f64,
    pub days: f64,
    pub target_days: f64,
    pub warn_days: f64,
    /// Forecast hours until the stock falls below the target, at the current drawdown
    /// (simulated hours in the demo: see [`RuleSettings::clock_speed`]).
    pub hours_to_target: Option<f64>,
    /// False when a contributing facility is silent or has never reported.
    pub verified: bool,
    /// Of the `facilities` the stock is summed from (the town's warehouses, and its
    /// water points for water), how many have never reported: their stock counts as 0.
    #[serde(default)]
    pub never_reported: u32,
    #[serde(default)]
    pub facilities: u32,
    /// A shortfall resting on facilities that never reported is not announced before
    /// this: they are still within their start-up grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until: Option<DateTime<Utc>>,
    /// When the oldest hand count the stock rests on was made (a contributing
    /// facility's latest figure was entered by hand): messages say so, and how old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_by_hand: Option<DateTime<Utc>>,
}

impl ReserveDetail {
    /// The category's name for a reader of `lang` (a Chinese message must not say
    /// "Blankets").
    pub fn category_name_in(&self, lang: Lang) -> &str {
        let named = match lang {
            Lang::Zh => self.category_names.zh.as_deref(),
            Lang::En => self.category_names.en.as_deref(),
        };
        named.unwrap_or(&self.category_name)
    }
}

/// A category's names per language (`name_zh`, `name_en` in the registry).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoryNameTexts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub en: Option<String>,
}

impl CategoryNameTexts {
    fn is_empty(&self) -> bool {
        self.zh.is_none() && self.en.is_none()
    }
}

/// One problem a town has now.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub town: TownIdx,
    pub rule: Rule,
    /// Category id for reserve rules, facility id for the others.
    pub subject: String,
    pub facility: Option<FacilityIdx>,
    /// When the problem began, when the ledger knows (last heard, went offline).
    pub since: Option<DateTime<Utc>>,
    pub detail: Detail,
}

impl Condition {
    pub fn severity(&self) -> Severity {
        self.rule.severity()
    }
}

/// Identity of an alert: `town/family/subject`, e.g. `jingshan/reserve/water`.
pub fn alert_key(town: &str, rule: Rule, subject: &str) -> String {
    format!("{town}/{}/{subject}", rule.family())
}

/// A town's problems now, plus every category's coverage (what a resolved reserve
/// alert quotes: "back to 3.6 days").
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TownEvaluation {
    pub conditions: Vec<Condition>,
    pub reserves: Vec<ReserveDetail>,
}

/// Settings the rules take.
#[derive(Debug, Clone, Copy)]
pub struct RuleSettings {
    /// `reserve_depleting` when the target is forecast to be crossed within this.
    pub depleting_horizon_h: f64,
    /// When the service started: no facility is silent before `stale_after` from here.
    pub started_at: DateTime<Utc>,
    /// A facility that has never reported gets this many of its `report_every` from
    /// `started_at` before a shortfall resting on it is announced.
    pub startup_grace_factor: f64,
    /// Simulated hours per wall-clock hour of the readings' stamps (the demo's speed; 1
    /// in service): forecast hours are multiplied by it.
    pub clock_speed: f64,
    /// An open shelter at or above this percentage of its capacity is
    /// `shelter_near_capacity` (`[alerts] shelter_near_capacity_pct`, 90 by default).
    pub shelter_near_capacity_pct: f64,
}

/// The problems of `town` at `now`, from the ledger's last figures and live facility
/// states.
pub fn evaluate(
    ledger: &Ledger,
    town: TownIdx,
    settings: &RuleSettings,
    now: DateTime<Utc>,
) -> TownEvaluation {
    evaluate_with_activations(ledger, &OpenActivations::default(), town, settings, now)
}

/// [`evaluate`], with the open activations of the activation table: their overdue
/// steps, and shelters asked to convert by an activation.
pub fn evaluate_with_activations(
    ledger: &Ledger,
    activations: &OpenActivations,
    town: TownIdx,
    settings: &RuleSettings,
    now: DateTime<Utc>,
) -> TownEvaluation {
    let registry = ledger.registry();
    let figures = ledger.figures(town);
    let mut out = TownEvaluation::default();
    for coverage in &figures.categories {
        reserve_condition(ledger, town, coverage, settings, now, &mut out);
    }
    let readiness = figures
        .power_units
        .iter()
        .map(|r| (Rule::PowerNotReady, r))
        .chain(
            figures
                .water_points
                .iter()
                .map(|r| (Rule::WaterPointNotReady, r)),
        );
    for (rule, r) in readiness {
        if let Some(condition) = not_ready(ledger, town, rule, r) {
            out.conditions.push(condition);
        }
    }

    for &f in &registry.town(town).facilities {
        if let Some(condition) = link_condition(ledger, town, f, settings, now) {
            out.conditions.push(condition);
        }
        let activation = activations.of(registry.facility(f).id.as_str());
        out.conditions.extend(shelter_condition(
            ledger, activation, town, f, settings, now,
        ));
        if let Some(activation) = activation {
            out.conditions
                .extend(overdue_steps(ledger, activation, town, f, now));
        }
    }
    out
}

/// The steps of `f`'s open activation not done by their due time, one alert each.
fn overdue_steps<'a>(
    ledger: &'a Ledger,
    activation: &'a ShelterActivation,
    town: TownIdx,
    f: FacilityIdx,
    now: DateTime<Utc>,
) -> impl Iterator<Item = Condition> + 'a {
    let facility = ledger.registry().facility(f);
    activation
        .steps
        .iter()
        .filter(move |s| !s.done && s.due_at <= now)
        .map(move |s| Condition {
            town,
            rule: Rule::ActivationStepOverdue,
            subject: format!("{}/{}/{}", facility.id, activation.activation, s.n),
            facility: Some(f),
            since: Some(s.due_at),
            detail: Detail::ActivationStep {
                activation: activation.activation,
                facility: facility.id.to_string(),
                facility_name: facility.name.clone(),
                step: s.n,
                name: s.name.clone(),
                contact: s.contact.clone(),
                due_at: s.due_at,
            },
        })
}

/// A shelter's problem now, from its latest reading (docs/design.md#shelters): open
/// and at or above `shelter_near_capacity_pct` of its capacity, or asked to convert
/// (its gateway said `activating`, or an open activation covers it) and not `open`
/// within its `convert_within` of the earlier of the two. A shelter never heard from
/// and not activated raises neither: it is the silence rules' concern.
fn shelter_condition(
    ledger: &Ledger,
    activation: Option<&ShelterActivation>,
    town: TownIdx,
    f: FacilityIdx,
    settings: &RuleSettings,
    now: DateTime<Utc>,
) -> Option<Condition> {
    let facility = ledger.registry().facility(f);
    let FacilityKind::Shelter(spec) = &facility.kind else {
        return None;
    };
    let latest = ledger.shelter(f).map(|(_, latest)| latest);
    let id = facility.id.to_string();
    let mode = latest.map(|l| l.obs.mode);
    let asked = |since: DateTime<Utc>| {
        let due = since + crate::chrono_duration(spec.convert_within);
        let detail = Detail::ShelterConverting {
            facility: id.clone(),
            facility_name: facility.name.clone(),
            activating_since: since,
            convert_within_s: spec.convert_within.as_secs(),
        };
        (now > due).then_some((Rule::ShelterNotReady, Some(due), detail))
    };
    let (rule, since, detail) = match (mode, latest) {
        (Some(ShelterMode::Open), Some(latest)) => {
            let full = latest.obs.occupancy as f64 * 100.0
                >= spec.capacity as f64 * settings.shelter_near_capacity_pct;
            if !full {
                return None;
            }
            let detail = Detail::ShelterFull {
                facility: id.clone(),
                facility_name: facility.name.clone(),
                occupancy: latest.obs.occupancy,
                capacity: spec.capacity,
            };
            (Rule::ShelterNearCapacity, None, detail)
        }
        _ => {
            let gateway = latest
                .filter(|l| l.obs.mode == ShelterMode::Activating)
                .map(|l| l.mode_since);
            let activated = activation.map(|a| a.started_at);
            let since = match (gateway, activated) {
                (Some(g), Some(a)) => g.min(a),
                (since, None) | (None, since) => since?,
            };
            asked(since)?
        }
    };
    Some(Condition {
        town,
        rule,
        subject: id,
        facility: Some(f),
        since,
        detail,
    })
}

/// A category's figures (always kept, for resolve messages) and its reserve condition
/// if it has one: below target, near it, or forecast to cross it within the horizon.
fn reserve_condition(
    ledger: &Ledger,
    town: TownIdx,
    coverage: &CategoryCoverage,
    settings: &RuleSettings,
    now: DateTime<Utc>,
    out: &mut TownEvaluation,
) {
    let registry = ledger.registry();
    let Some(days) = coverage.days else {
        return; // nobody in the town needs this category
    };
    let category = registry.category(coverage.category);
    let unreported = unreported(ledger, town, coverage.category, settings, now);
    let detail = ReserveDetail {
        category: category.id.to_string(),
        category_name: category.name.clone(),
        category_names: CategoryNameTexts {
            zh: category.names.zh.clone(),
            en: category.names.en.clone(),
        },
        unit: category.unit.clone(),
        stock: coverage.stock,
        days,
        target_days: coverage.target_days,
        warn_days: coverage.warn_days,
        hours_to_target: coverage.hours_to_target.map(|h| h * settings.clock_speed),
        verified: coverage.verified,
        never_reported: unreported.never,
        facilities: unreported.of,
        held_until: None,
        counted_by_hand: coverage.counted_by_hand,
    };
    let depleting = detail
        .hours_to_target
        .is_some_and(|h| h <= settings.depleting_horizon_h);
    let rule = match coverage.level {
        Level::Critical => Some(Rule::ReserveBelowTarget),
        Level::Warning => Some(Rule::ReserveNearTarget),
        Level::Ok if depleting => Some(Rule::ReserveDepleting),
        Level::Ok => None,
    };
    if let Some(rule) = rule {
        out.conditions.push(Condition {
            town,
            rule,
            subject: detail.category.clone(),
            facility: None,
            since: None,
            detail: Detail::Reserve(ReserveDetail {
                held_until: unreported.grace_until,
                ..detail.clone()
            }),
        });
    }
    out.reserves.push(detail);
}

/// A facility's gateway offline (its Last Will) or, failing that, silent longer than
/// its `stale_after`.
fn link_condition(
    ledger: &Ledger,
    town: TownIdx,
    f: FacilityIdx,
    settings: &RuleSettings,
    now: DateTime<Utc>,
) -> Option<Condition> {
    let registry = ledger.registry();
    let facility = registry.facility(f);
    if facility.report == Report::Manual {
        return count_due(ledger, town, f, settings, now);
    }
    let state = ledger.facility(f);
    let id = facility.id.to_string();
    if let Some((Link::Offline, at)) = state.link {
        return Some(Condition {
            town,
            rule: Rule::GatewayOffline,
            subject: id.clone(),
            facility: Some(f),
            since: Some(at),
            detail: Detail::Offline {
                facility: id,
                facility_name: facility.name.clone(),
                since: at,
            },
        });
    }
    // Never reported: see the module docs.
    let heard = state.heard_at?;
    let quiet_since = heard.max(settings.started_at);
    let silent = (now - quiet_since)
        .to_std()
        .is_ok_and(|quiet| quiet > facility.stale_after);
    silent.then(|| Condition {
        town,
        rule: Rule::FacilitySilent,
        subject: id.clone(),
        facility: Some(f),
        since: Some(heard),
        detail: Detail::Silent {
            facility: id,
            facility_name: facility.name.clone(),
            last_heard: heard,
        },
    })
}

/// A manual facility whose last count is older than its `stale_after`, or that was
/// never counted: held until its start-up grace is over, rather than absent, so that a
/// restart does not resolve a firing reminder as if the count had come. The count's
/// age is its own (a restart does not make a count fresher), unlike a gateway's
/// silence: from when it was taken, not when it was posted (an evening's entry of the
/// morning's count), and never later than when it was received.
fn count_due(
    ledger: &Ledger,
    town: TownIdx,
    f: FacilityIdx,
    settings: &RuleSettings,
    now: DateTime<Utc>,
) -> Option<Condition> {
    let facility = ledger.registry().facility(f);
    let state = ledger.facility(f);
    let last_counted = match (state.last_ts, state.heard_at) {
        (Some(taken), Some(heard)) => Some(taken.min(heard)),
        (taken, heard) => taken.or(heard),
    };
    let (due_at, held_until) = match last_counted {
        Some(counted) => {
            let due_at = counted + crate::chrono_duration(facility.stale_after);
            if now <= due_at {
                return None;
            }
            (due_at, None)
        }
        None => {
            let grace_end = startup_grace_end(facility, settings);
            (grace_end, (grace_end > now).then_some(grace_end))
        }
    };
    Some(Condition {
        town,
        rule: Rule::CountDue,
        subject: facility.id.to_string(),
        facility: Some(f),
        since: Some(due_at),
        detail: Detail::CountDue {
            facility: facility.id.to_string(),
            facility_name: facility.name.clone(),
            last_counted,
            held_until,
        },
    })
}

/// When a facility that never reported has had its chance:
/// `startup_grace_factor` × its `report_every` after the service started.
fn startup_grace_end(facility: &Facility, settings: &RuleSettings) -> DateTime<Utc> {
    let grace = facility.report_every.as_secs_f64() * settings.startup_grace_factor;
    // A factor beyond reason (checked at load) waits as long as chrono can count.
    let grace = Duration::try_from_secs_f64(grace).unwrap_or(Duration::MAX);
    settings.started_at + crate::chrono_duration(grace)
}

/// The facilities a category's stock in a town is summed from, and those of them that
/// never reported.
struct Unreported {
    of: u32,
    never: u32,
    /// The latest end of a start-up grace still running among those that never reported.
    grace_until: Option<DateTime<Utc>>,
}

fn unreported(
    ledger: &Ledger,
    town: TownIdx,
    category: CategoryIdx,
    settings: &RuleSettings,
    now: DateTime<Utc>,
) -> Unreported {
    let registry = ledger.registry();
    let never_reported = &ledger.figures(town).never_reported;
    let mut out = Unreported {
        of: 0,
        never: 0,
        grace_until: None,
    };
    for &f in &registry.town(town).facilities {
        let facility = registry.facility(f);
        let holds = match facility.kind {
            FacilityKind::Warehouse => true,
            FacilityKind::WaterPoint { .. } => registry.water_category == Some(category),
            FacilityKind::PowerUnit { .. } | FacilityKind::Shelter(_) => false,
        };
        if !holds {
            continue;
        }
        out.of += 1;
        if !never_reported.contains(&f) {
            continue;
        }
        out.never += 1;
        let until = startup_grace_end(facility, settings);
        if until > now {
            out.grace_until = out.grace_until.max(Some(until));
        }
    }
    out
}

fn not_ready(ledger: &Ledger, town: TownIdx, rule: Rule, r: &Readiness) -> Option<Condition> {
    let problems: Vec<NotReady> = r
        .problems
        .iter()
        .copied()
        .filter(|p| !matches!(p, NotReady::Silent | NotReady::NeverReported))
        .collect();
    if problems.is_empty() {
        return None;
    }
    let facility = ledger.registry().facility(r.facility);
    let id = facility.id.to_string();
    Some(Condition {
        town,
        rule,
        subject: id.clone(),
        facility: Some(r.facility),
        since: None,
        detail: Detail::Readiness {
            facility: id,
            facility_name: facility.name.clone(),
            problems,
            runtime_h: r.runtime_h,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;
    use reserve::reading::{
        Observation, PowerObservation, PowerState, PumpState, ShelterObservation, WaterObservation,
    };
    use reserve::registry::{Source, load_registry};
    use reserve::{Reading, Registry};

    use super::*;

    const REGISTRY: &str = r#"
[target]
days = 3.0
warn_days = 3.5

[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0

[[town]]
id = "jingshan"
name = "景山街道"
district = "dongcheng"
cluster = "c01"
population = 1000

[[facility]]
id = "js-wh1"
town = "jingshan"
kind = "warehouse"
report_every = "60s"

[[facility]]
id = "js-wp1"
town = "jingshan"
kind = "water_point"

[[facility]]
id = "js-pu1"
town = "jingshan"
kind = "power_unit"
fuel_capacity_l = 500
burn_l_per_h = 5.0
min_battery_pct = 50

[[facility]]
id = "js-sh1"
town = "jingshan"
kind = "shelter"
capacity = 500
dual_use = "school"
convert_within = "2h"
report_every = "1h"
"#;

    fn registry() -> Arc<Registry> {
        let source = Source {
            name: "registry.toml".into(),
            text: REGISTRY.into(),
        };
        Arc::new(load_registry(&source, &[], &mut |n| Err(format!("no {n}"))).unwrap())
    }

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 6, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn settings() -> RuleSettings {
        RuleSettings {
            depleting_horizon_h: 12.0,
            started_at: t(-3600),
            startup_grace_factor: 2.0,
            clock_speed: 1.0,
            shelter_near_capacity_pct: 90.0,
        }
    }

    /// Water in liters for a town of 1000 needing 3 L each: days × 3000.
    fn water_days(days: f64) -> f64 {
        days * 3000.0
    }

    struct Town {
        ledger: Ledger,
        town: TownIdx,
        settings: RuleSettings,
    }

    impl Town {
        fn new() -> Town {
            let registry = registry();
            let town = registry.town_idx("jingshan").unwrap();
            Town {
                ledger: Ledger::new(registry),
                town,
                settings: settings(),
            }
        }

        fn read(&mut self, facility: &str, at: i64, observation: Observation) {
            let f = self.ledger.registry().facility_idx(facility).unwrap();
            let reading = Reading {
                facility: f,
                ts: t(at),
                seq: None,
                observation,
            };
            self.ledger.apply(&reading, t(at));
            self.ledger.refresh(self.town, t(at));
        }

        fn stock(&mut self, at: i64, liters: f64) {
            let water = self.ledger.registry().category_idx("water").unwrap();
            self.read("js-wh1", at, Observation::Stock(vec![(water, liters)]));
        }

        fn healthy(&mut self, at: i64) {
            self.stock(at, water_days(5.0));
            self.read("js-wp1", at, water(PumpState::Ok, true, 0.0));
            self.read("js-pu1", at, power(PowerState::Standby, 400.0));
        }

        fn rules(&self, now: i64) -> Vec<(Rule, String)> {
            evaluate(&self.ledger, self.town, &self.settings, t(now))
                .conditions
                .into_iter()
                .map(|c| (c.rule, c.subject))
                .collect()
        }
    }

    fn water(pump: PumpState, potable: bool, level_l: f64) -> Observation {
        Observation::Water(WaterObservation {
            level_l,
            pump,
            potable,
        })
    }

    fn power(state: PowerState, fuel_l: f64) -> Observation {
        Observation::Power(PowerObservation {
            fuel_l,
            battery_pct: Some(90.0),
            state,
            burn_l_per_h: None,
        })
    }

    fn rule(r: Rule, subject: &str) -> (Rule, String) {
        (r, subject.to_owned())
    }

    fn shelter(mode: ShelterMode, occupancy: u64) -> Observation {
        Observation::Shelter(ShelterObservation { occupancy, mode })
    }

    #[test]
    fn an_open_shelter_at_ninety_percent_is_near_capacity() {
        let mut town = Town::new();
        town.healthy(0);
        // Enough water for the sheltered too: only the shelter rule is in question.
        town.stock(30, water_days(10.0));
        town.read("js-sh1", 0, shelter(ShelterMode::Open, 449));
        assert_eq!(town.rules(31), vec![], "449 of 500 is under 90 %");
        town.read("js-sh1", 60, shelter(ShelterMode::Open, 450));
        let near = rule(Rule::ShelterNearCapacity, "js-sh1");
        assert_eq!(town.rules(61), vec![near.clone()]);
        let evaluation = evaluate(&town.ledger, town.town, &town.settings, t(61));
        assert_eq!(
            evaluation.conditions[0].detail,
            Detail::ShelterFull {
                facility: "js-sh1".into(),
                facility_name: "js-sh1".into(),
                occupancy: 450,
                capacity: 500,
            }
        );
        // A shelter closing with people still counted is not filling up.
        town.read("js-sh1", 120, shelter(ShelterMode::Closed, 450));
        assert_eq!(town.rules(121), vec![]);
    }

    #[test]
    fn the_near_capacity_line_follows_the_setting() {
        let mut town = Town::new();
        town.settings.shelter_near_capacity_pct = 80.0;
        town.healthy(0);
        town.stock(30, water_days(10.0));
        town.read("js-sh1", 0, shelter(ShelterMode::Open, 399));
        assert_eq!(town.rules(31), vec![]);
        town.read("js-sh1", 60, shelter(ShelterMode::Open, 400));
        assert_eq!(
            town.rules(61),
            vec![rule(Rule::ShelterNearCapacity, "js-sh1")]
        );
    }

    #[test]
    fn a_shelter_activating_past_its_convert_within_is_not_ready() {
        let mut town = Town::new();
        town.healthy(0);
        town.read("js-sh1", 0, shelter(ShelterMode::Activating, 0));
        // Still activating an hour later: the clock runs from the first such reading.
        town.read("js-sh1", 3600, shelter(ShelterMode::Activating, 0));
        // The other facilities keep reporting, so nothing else is silent.
        town.healthy(7100);
        assert_eq!(
            town.rules(7200),
            vec![],
            "exactly 2 h is within convert_within"
        );
        let not_ready = rule(Rule::ShelterNotReady, "js-sh1");
        assert_eq!(town.rules(7201), vec![not_ready]);
        let evaluation = evaluate(&town.ledger, town.town, &town.settings, t(7201));
        assert_eq!(evaluation.conditions[0].since, Some(t(7200)));
        town.healthy(7300);
        town.read("js-sh1", 7300, shelter(ShelterMode::Open, 10));
        assert_eq!(town.rules(7301), vec![], "open: converted");
    }

    #[test]
    fn a_shelter_in_everyday_use_raises_nothing() {
        let mut town = Town::new();
        town.healthy(0);
        town.read("js-sh1", 0, shelter(ShelterMode::Normal, 0));
        town.read("js-sh1", 60, shelter(ShelterMode::Normal, 0));
        assert_eq!(town.rules(61), vec![]);
    }

    #[test]
    fn a_healthy_town_has_no_problems() {
        let mut town = Town::new();
        town.healthy(0);
        assert_eq!(town.rules(1), vec![]);
    }

    #[test]
    fn reserve_rule_follows_the_level_with_hysteresis() {
        // (liters as days, expected rule) in sequence: levels remember the last one.
        let steps: &[(f64, Option<Rule>)] = &[
            (5.0, None),
            (3.4, Some(Rule::ReserveNearTarget)),
            (2.9, Some(Rule::ReserveBelowTarget)),
            (3.05, Some(Rule::ReserveBelowTarget)), // inside the 0.1-day band
            (3.2, Some(Rule::ReserveNearTarget)),
            (3.55, Some(Rule::ReserveNearTarget)),
            (3.7, None),
        ];
        let mut town = Town::new();
        // Steps this fast are a huge consumption rate: keep the forecast out of it.
        town.settings.depleting_horizon_h = 0.0;
        town.healthy(0);
        for (i, (days, want)) in steps.iter().enumerate() {
            let at = 10 * (i as i64 + 1);
            town.stock(at, water_days(*days));
            let got: Vec<_> = town
                .rules(at)
                .into_iter()
                .filter(|(r, _)| r.family() == "reserve")
                .collect();
            let want: Vec<_> = want.iter().map(|r| rule(*r, "water")).collect();
            assert_eq!(got, want, "at {days} days");
        }
    }

    #[test]
    fn reserve_depleting_fires_on_the_forecast_before_the_warning_line() {
        let mut town = Town::new();
        // 4.5 days, consumed at 1000 L/h: 1.5 days × 3000 L above target = 4.5 h away.
        // The forecast rests on an hour or more of judged readings: four, an hour apart.
        for hour in 1..=4 {
            town.stock(3600 * hour, water_days(4.5) + 1000.0 * (4 - hour) as f64);
        }
        let evaluation = evaluate(&town.ledger, town.town, &settings(), t(4 * 3600));
        assert_eq!(
            evaluation
                .conditions
                .iter()
                .filter(|c| c.rule.family() == "reserve")
                .map(|c| (c.rule, c.severity()))
                .collect::<Vec<_>>(),
            vec![(Rule::ReserveDepleting, Severity::Warning)]
        );
        let Detail::Reserve(detail) = &evaluation.conditions[0].detail else {
            panic!("reserve detail expected");
        };
        assert!((detail.hours_to_target.unwrap() - 4.5).abs() < 1e-6);
    }

    #[test]
    fn readiness_problems_raise_not_ready_rules() {
        // (water point, power unit, expected)
        type Case = (Observation, Observation, Vec<(Rule, String)>);
        let cases: &[Case] = &[
            (
                water(PumpState::Fault, true, 100.0),
                power(PowerState::Standby, 400.0),
                vec![rule(Rule::WaterPointNotReady, "js-wp1")],
            ),
            (
                water(PumpState::Ok, false, 100.0),
                power(PowerState::Fault, 400.0),
                vec![
                    rule(Rule::PowerNotReady, "js-pu1"),
                    rule(Rule::WaterPointNotReady, "js-wp1"),
                ],
            ),
            (
                water(PumpState::Ok, true, 100.0),
                // 300 L at 5 L/h is 60 h, short of 72.
                power(PowerState::Standby, 300.0),
                vec![rule(Rule::PowerNotReady, "js-pu1")],
            ),
        ];
        for (w, p, want) in cases {
            let mut town = Town::new();
            town.healthy(0);
            town.read("js-wp1", 10, w.clone());
            town.read("js-pu1", 10, p.clone());
            assert_eq!(&town.rules(11), want, "{w:?} {p:?}");
        }
    }

    #[test]
    fn a_silent_facility_is_one_problem_not_two() {
        let mut town = Town::new();
        town.healthy(0);
        // Every facility reports every 60 s; silent after 180 s without a reading.
        town.stock(200, water_days(5.0));
        town.read("js-wp1", 200, water(PumpState::Ok, true, 0.0));
        town.ledger.refresh(town.town, t(379));
        assert_eq!(town.rules(180), vec![], "not yet silent");
        // The power unit's readiness now lists `silent`; that is not power_not_ready.
        assert_eq!(town.rules(379), vec![rule(Rule::FacilitySilent, "js-pu1")]);
    }

    #[test]
    fn silence_is_not_judged_before_stale_after_from_start() {
        let mut town = Town::new();
        town.healthy(0);
        let just_started = RuleSettings {
            started_at: t(10_000),
            ..settings()
        };
        let at = |s| {
            evaluate(&town.ledger, town.town, &just_started, t(s))
                .conditions
                .len()
        };
        assert_eq!(at(10_100), 0, "within stale_after of the start");
        assert_eq!(
            at(10_181),
            3,
            "every facility silent once stale_after has passed"
        );
    }

    #[test]
    fn an_offline_gateway_is_reported_at_once_and_not_as_silent() {
        let mut town = Town::new();
        town.healthy(0);
        let f = town.ledger.registry().facility_idx("js-wh1").unwrap();
        town.ledger.set_link(f, Link::Offline, t(5));
        let conditions = evaluate(&town.ledger, town.town, &settings(), t(1000)).conditions;
        let offline: Vec<_> = conditions
            .iter()
            .filter(|c| c.subject == "js-wh1")
            .map(|c| (c.rule, c.since))
            .collect();
        assert_eq!(offline, vec![(Rule::GatewayOffline, Some(t(5)))]);
    }

    #[test]
    fn never_reported_facilities_raise_nothing_of_their_own() {
        let mut town = Town::new();
        town.stock(0, water_days(5.0));
        // The water point and power unit never reported: the town is unverified, but
        // no readiness or silence alert is raised for them.
        assert_eq!(
            town.rules(10_000_000),
            vec![rule(Rule::FacilitySilent, "js-wh1")]
        );
        assert_eq!(town.rules(10), vec![]);
    }

    /// The demo: readings 10 s apart on the wall clock, each carrying 720 × 10 s (two
    /// simulated hours) of a normal day's use, 125 L/h. Four and a half days is 36
    /// simulated hours from the target: calm, at any speed.
    #[test]
    fn forecasts_are_in_simulated_hours_at_the_demos_speed() {
        const SPEED: f64 = 720.0;
        let mut town = Town::new();
        town.ledger =
            Ledger::with_forecast(Arc::clone(town.ledger.registry()), 3600.0 / SPEED / 3600.0);
        town.healthy(0);
        for i in 0..6 {
            town.stock(10 * (i + 1), water_days(4.5) - 250.0 * i as f64);
        }
        let forecast = |town: &Town, speed: f64| {
            let settings = RuleSettings {
                clock_speed: speed,
                ..town.settings
            };
            let evaluation = evaluate(&town.ledger, town.town, &settings, t(60));
            let rules: Vec<Rule> = evaluation.conditions.iter().map(|c| c.rule).collect();
            (rules, evaluation.reserves[0].hours_to_target.unwrap())
        };
        let (rules, hours) = forecast(&town, SPEED);
        assert_eq!(rules, vec![], "a calm day raises nothing");
        assert!((hours - (4500.0 - 1250.0) / 125.0).abs() < 0.5, "{hours} h");
        // Read on the wall clock, the same figures are a storm.
        let (rules, hours) = forecast(&town, 1.0);
        assert_eq!(rules, vec![Rule::ReserveDepleting]);
        assert!(hours < 0.1, "{hours} h");
    }

    /// The issue's cold start: a town whose warehouse reported a low stock while its
    /// water point, which holds water too, has not reported yet.
    #[test]
    fn a_shortfall_resting_on_facilities_not_in_yet_is_held_through_their_grace() {
        let mut town = Town::new();
        town.settings.started_at = t(0);
        town.stock(5, water_days(1.0));
        let registry = Arc::clone(town.ledger.registry());
        let wp = registry.facility(registry.facility_idx("js-wp1").unwrap());
        let grace_end = t(0) + chrono::Duration::from_std(wp.report_every * 2).unwrap();
        let reserve_of = |town: &Town, at| {
            let evaluation = evaluate(&town.ledger, town.town, &town.settings, at);
            let reserve: Vec<_> = evaluation
                .conditions
                .into_iter()
                .filter(|c| c.rule.family() == "reserve")
                .collect();
            assert_eq!(reserve.len(), 1, "{reserve:?}");
            let Detail::Reserve(detail) = reserve[0].detail.clone() else {
                panic!("reserve detail expected");
            };
            (reserve[0].rule, detail)
        };
        let (rule, held) = reserve_of(&town, t(10));
        assert_eq!(rule, Rule::ReserveBelowTarget);
        assert_eq!(held.held_until, Some(grace_end));
        assert_eq!((held.never_reported, held.facilities), (1, 2));
        let (_, after) = reserve_of(&town, grace_end);
        assert_eq!(after.held_until, None, "the grace is over");
        assert_eq!((after.never_reported, after.facilities), (1, 2));
        // A factor of 0 announces at once.
        town.settings.startup_grace_factor = 0.0;
        assert_eq!(reserve_of(&town, t(10)).1.held_until, None);
        // Once the water point reports, nothing rests on the unreported.
        town.settings.startup_grace_factor = 2.0;
        town.read("js-wp1", 20, water(PumpState::Ok, true, 0.0));
        let (_, reported) = reserve_of(&town, t(20));
        assert_eq!((reported.never_reported, reported.held_until), (0, None));
    }

    /// No facility of the town has reported: it is `unknown`, not below target, and
    /// raises nothing, during the grace or after it.
    #[test]
    fn a_town_without_any_reading_stays_unknown_and_raises_nothing() {
        let mut town = Town::new();
        town.settings.started_at = t(0);
        town.ledger.refresh(town.town, t(10));
        assert_eq!(
            town.ledger.figures(town.town).status,
            reserve::coverage::TownStatus::Unknown
        );
        assert_eq!(town.rules(10), vec![]);
        town.ledger.refresh(town.town, t(100_000));
        assert_eq!(town.rules(100_000), vec![]);
    }

    #[test]
    fn alert_keys_group_reserve_rules() {
        assert_eq!(
            alert_key("jingshan", Rule::ReserveBelowTarget, "water"),
            alert_key("jingshan", Rule::ReserveDepleting, "water"),
        );
        assert_eq!(
            alert_key("jingshan", Rule::PowerNotReady, "js-pu1"),
            "jingshan/power_not_ready/js-pu1"
        );
        for r in Rule::ALL {
            assert_eq!(Rule::parse(r.as_str()), Some(r));
        }
    }

    /// The test town with a second warehouse counted by hand.
    fn town_with_manual_warehouse() -> Town {
        let source = Source {
            name: "registry.toml".into(),
            text: format!(
                "{REGISTRY}\n[[facility]]\nid = \"js-wh2\"\nname = \"社区库\"\ntown = \"jingshan\"\n\
                 kind = \"warehouse\"\nreport = \"manual\"\n"
            ),
        };
        let registry =
            Arc::new(load_registry(&source, &[], &mut |n| Err(format!("no {n}"))).unwrap());
        Town {
            town: registry.town_idx("jingshan").unwrap(),
            ledger: Ledger::new(registry),
            settings: RuleSettings {
                started_at: t(0),
                ..settings()
            },
        }
    }

    const DAY: i64 = 24 * 3600;

    #[test]
    fn a_manual_facility_never_counted_is_due_once_its_grace_is_over() {
        let mut town = town_with_manual_warehouse();
        town.healthy(0);
        // Its report_every is the default 60 s: the grace is 2 × 60 s from the start.
        // Within it the reminder is held, not absent: a restart must not resolve it.
        let held = evaluate(&town.ledger, town.town, &town.settings, t(60)).conditions;
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(held[0].detail.held_until(), Some(t(120)));
        assert!(held[0].detail.held(t(60)));
        let due = evaluate(&town.ledger, town.town, &town.settings, t(121)).conditions;
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(
            (due[0].rule, due[0].severity()),
            (Rule::CountDue, Severity::Warning)
        );
        assert_eq!(due[0].since, Some(t(120)));
        assert_eq!(
            due[0].detail,
            Detail::CountDue {
                facility: "js-wh2".into(),
                facility_name: "社区库".into(),
                last_counted: None,
                held_until: None,
            }
        );
        // It still counts as zero stock: the figures are unverified.
        town.ledger.refresh(town.town, t(121));
        assert!(!town.ledger.figures(town.town).categories[0].verified);
    }

    #[test]
    fn a_manual_facility_is_due_a_day_after_its_count_and_never_silent_or_offline() {
        let mut town = town_with_manual_warehouse();
        let water = town.ledger.registry().category_idx("water").unwrap();
        let count = |town: &mut Town, at| {
            town.read("js-wh2", at, Observation::Stock(vec![(water, 500.0)]));
        };
        count(&mut town, 100);
        // Gateways keep reporting; the count waits a day, not 3 × 60 s.
        for at in [1000, DAY / 2, DAY + 100] {
            town.healthy(at);
            assert_eq!(town.rules(at), vec![], "at {at}");
        }
        town.healthy(DAY + 101);
        let due = evaluate(&town.ledger, town.town, &town.settings, t(DAY + 101)).conditions;
        assert_eq!(
            due.iter().map(|c| (c.rule, c.since)).collect::<Vec<_>>(),
            vec![(Rule::CountDue, Some(t(DAY + 100)))]
        );
        assert!(matches!(
            due[0].detail,
            Detail::CountDue { last_counted: Some(at), .. } if at == t(100)
        ));
        // No Last Will makes it offline: there is no gateway to lose.
        let f = town.ledger.registry().facility_idx("js-wh2").unwrap();
        town.ledger.set_link(f, Link::Offline, t(DAY + 150));
        assert_eq!(town.rules(DAY + 160), vec![rule(Rule::CountDue, "js-wh2")]);
        // A new count settles it.
        count(&mut town, DAY + 200);
        town.healthy(DAY + 200);
        assert_eq!(town.rules(DAY + 201), vec![]);
    }

    #[test]
    fn a_count_is_as_old_as_when_it_was_taken() {
        let mut town = town_with_manual_warehouse();
        let water = town.ledger.registry().category_idx("water").unwrap();
        let f = town.ledger.registry().facility_idx("js-wh2").unwrap();
        // The morning's count, entered ten hours later.
        let reading = Reading {
            facility: f,
            ts: t(0),
            seq: None,
            observation: Observation::Stock(vec![(water, 500.0)]),
        };
        town.ledger.apply(&reading, t(10 * 3600));
        town.healthy(DAY + 1);
        assert_eq!(town.rules(DAY + 1), vec![rule(Rule::CountDue, "js-wh2")]);
    }
}
