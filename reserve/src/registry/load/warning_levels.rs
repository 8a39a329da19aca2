//! Reading `[warning_levels.<level>]` (docs/design.md#warning-levels): what each
//! warning level changes. Checked against the facilities as written, so a
//! `pre_activate` naming a warehouse is reported with every other problem.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use super::raw::{Field, RawFacility};
use super::{Document, Problems, read_one};
use crate::duration::parse_duration;
use crate::id::FacilityId;
use crate::registry::{DualUse, PreActivate, WarningLevel, WarningPlan, WarningPlans};

/// The most a level's days target may ask: a year, as for every duration.
const MAX_DAYS_TARGET: f64 = 365.0;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWarningPlan {
    pub days_target: Field<f64>,
    pub group_wait: Field<String>,
    pub escalate_after: Field<String>,
    /// Dual-use types (`school`, `gym`) or shelter ids.
    pub pre_activate: Field<Vec<Spanned<String>>>,
}

/// Reads the `warning_levels` table: one sub-table per level name.
pub(super) fn read(
    value: Spanned<DeValue<'_>>,
    problems: &mut Problems,
) -> Vec<(WarningLevel, Spanned<RawWarningPlan>)> {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        problems.add(
            span.start,
            "warning_levels: expected a table of levels ([warning_levels.red])".to_owned(),
        );
        return Vec::new();
    };
    let mut plans = Vec::new();
    for (key, value) in table {
        let Some(level) = WarningLevel::parse(key.get_ref()) else {
            problems.add(
                key.span().start,
                format!(
                    "warning_levels: unknown level {:?} (expected blue, yellow, orange, red)",
                    key.get_ref()
                ),
            );
            continue;
        };
        let who = format!("warning_levels.{level}");
        if let Some(plan) = read_one::<RawWarningPlan>(value, &who, problems) {
            plans.push((level, plan));
        }
    }
    plans
}

/// Each level's plan, checked; problems are added, located at the offending value.
pub(super) fn check(doc: &Document, problems: &mut Problems) -> WarningPlans {
    let mut plans = WarningPlans::new();
    for (level, raw) in &doc.warning_levels {
        let who = format!("warning_levels.{level}");
        let raw = raw.get_ref();
        let plan = WarningPlan {
            days_target: raw.days_target.as_ref().and_then(|d| {
                let days = *d.get_ref();
                if days.is_finite() && days > 0.0 && days <= MAX_DAYS_TARGET {
                    Some(days)
                } else {
                    let message = format!(
                        "{who}: days_target: must be above 0 and at most {MAX_DAYS_TARGET} days, got {days}"
                    );
                    problems.add(d.span().start, message);
                    None
                }
            }),
            group_wait: duration(&raw.group_wait, &who, "group_wait", problems),
            escalate_after: duration(&raw.escalate_after, &who, "escalate_after", problems),
            pre_activate: raw
                .pre_activate
                .iter()
                .flat_map(|list| list.get_ref())
                .filter_map(|entry| pre_activate(doc, entry, &who, problems))
                .collect(),
        };
        plans.insert(*level, plan);
    }
    plans
}

fn duration(
    field: &Field<String>,
    who: &str,
    name: &str,
    problems: &mut Problems,
) -> Option<Duration> {
    let field = field.as_ref()?;
    match parse_duration(field.get_ref()) {
        Ok(d) if !d.is_zero() && d <= Duration::from_secs(365 * 86_400) => Some(d),
        Ok(_) => {
            let message = format!(
                "{who}: {name}: must be above 0 and at most 365 days, got {:?}",
                field.get_ref()
            );
            problems.add(field.span().start, message);
            None
        }
        Err(e) => {
            problems.add(field.span().start, format!("{who}: {name}: {e}"));
            None
        }
    }
}

/// A dual-use type, else a shelter's id.
fn pre_activate(
    doc: &Document,
    entry: &Spanned<String>,
    who: &str,
    problems: &mut Problems,
) -> Option<PreActivate> {
    let text = entry.get_ref().as_str();
    if let Some(use_) = DualUse::parse(text) {
        return Some(PreActivate::DualUse(use_));
    }
    let kind = doc.facilities.ok.iter().find_map(|f| {
        let RawFacility { id, kind, .. } = f.get_ref();
        (id.as_ref()?.get_ref() == text).then(|| kind.as_ref().map(|k| k.get_ref().clone()))
    });
    let problem = match kind {
        Some(Some(kind)) if kind == "shelter" => {
            return FacilityId::parse(text).ok().map(PreActivate::Shelter);
        }
        Some(Some(kind)) => format!("facility {text:?} is a {kind}, not a shelter"),
        Some(None) => format!("facility {text:?} is not a shelter"),
        None => {
            let uses: Vec<&str> = DualUse::ALL.iter().map(|u| u.as_str()).collect();
            format!(
                "unknown {text:?} (expected a shelter's id or a dual-use type: {})",
                uses.join(", ")
            )
        }
    };
    problems.add(
        entry.span().start,
        format!("{who}: pre_activate: {problem}"),
    );
    None
}
