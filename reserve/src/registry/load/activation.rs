//! Checking `[[activation_plan]]` entries (docs/design.md#activation-table).
//!
//! Plans are checked against the facilities and contacts as written, before the checker
//! consumes them, like communities: a facility's and a contact's index is its position
//! among the entries that were read, which is the index the checker gives it, and a
//! registry is only built when every entry made it.

use std::collections::HashMap;

use serde::Deserialize;
use toml::Spanned;

use super::raw::{Field, RawContact, RawFacility};
use super::{Document, Locator, Problems};
use crate::duration::parse_duration;
use crate::registry::{ActivationPlan, DualUse, FacilityIdx, PlanFor, PlanStep};

/// A step may be due at most this long after the start: a plan is hours, not weeks.
const MAX_WITHIN: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub dual_use: Field<String>,
    pub shelters: Field<Vec<Spanned<String>>>,
    pub step: Field<Vec<Spanned<RawStep>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub name: Field<String>,
    pub contact: Field<String>,
    pub within: Field<String>,
}

/// What a plan may refer to, from the entries as written.
struct Known<'d> {
    /// Facility id → (index, kind as written).
    facilities: HashMap<&'d str, (FacilityIdx, &'d str)>,
    broken_facilities: &'d [String],
    /// A contact's email → its index.
    emails: HashMap<&'d str, usize>,
    /// A contact's name → every index with it.
    names: HashMap<&'d str, Vec<usize>>,
    /// Each contact's key: its email, or its name when it has none.
    keys: Vec<String>,
}

impl<'d> Known<'d> {
    fn of(doc: &'d Document) -> Known<'d> {
        let mut facilities = HashMap::new();
        for (i, f) in doc.facilities.ok.iter().enumerate() {
            let RawFacility { id, kind, .. } = f.get_ref();
            if let Some(id) = id {
                let kind = kind.as_ref().map_or("", |k| k.get_ref().as_str());
                facilities
                    .entry(id.get_ref().as_str())
                    .or_insert((FacilityIdx::from_index(i), kind));
            }
        }
        let mut emails = HashMap::new();
        let mut names: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut keys = Vec::new();
        for (i, c) in doc.contacts.ok.iter().enumerate() {
            let RawContact { name, email, .. } = c.get_ref();
            let key = email.as_ref().or(name.as_ref());
            keys.push(key.map_or(String::new(), |k| k.get_ref().clone()));
            if let Some(email) = email {
                emails.entry(email.get_ref().as_str()).or_insert(i);
            }
            if let Some(name) = name {
                names.entry(name.get_ref().as_str()).or_default().push(i);
            }
        }
        Known {
            facilities,
            broken_facilities: &doc.facilities.broken_ids,
            emails,
            names,
            keys,
        }
    }

    /// A contact by its email, or by its name when no other contact has it; the key
    /// a plan keeps: its email, or its name when it has none.
    fn contact(&self, said: &str) -> Result<String, String> {
        if self.emails.contains_key(said) {
            return Ok(said.to_owned());
        }
        match self.names.get(said).map(Vec::as_slice) {
            Some(&[i]) => Ok(self.keys[i].clone()),
            Some(several) => Err(format!(
                "{said:?} names {} contacts: give the one meant by its email",
                several.len()
            )),
            None => Err(format!(
                "unknown contact {said:?} (a contact's email, or its name when no other contact has it)"
            )),
        }
    }
}

/// Checks every plan; `None` when any had a problem (all reported).
pub(super) fn check(
    doc: &Document,
    locator: &Locator,
    problems: &mut Problems,
) -> Option<Vec<ActivationPlan>> {
    let known = Known::of(doc);
    let mut first_for: HashMap<String, usize> = HashMap::new();
    let mut plans = Vec::new();
    let mut ok = true;
    for raw in &doc.activation_plans.ok {
        let Some(plan) = plan(raw, &known, problems) else {
            ok = false;
            continue;
        };
        ok &= first_plan_for(raw, &plan, doc, locator, &mut first_for, problems);
        plans.push(plan);
    }
    ok.then_some(plans)
}

/// Reports a shelter or a type that an earlier plan already covers. False when any.
fn first_plan_for(
    raw: &Spanned<RawPlan>,
    plan: &ActivationPlan,
    doc: &Document,
    locator: &Locator,
    first_for: &mut HashMap<String, usize>,
    problems: &mut Problems,
) -> bool {
    let at = raw
        .get_ref()
        .dual_use
        .as_ref()
        .map_or(raw.span().start, |d| d.span().start);
    let keys: Vec<(String, usize)> = match &plan.applies_to {
        PlanFor::DualUse(use_) => vec![(format!("dual_use {}", use_.as_str()), at)],
        PlanFor::Shelters(shelters) => shelters
            .iter()
            .zip(raw.get_ref().shelters.iter().flat_map(|s| s.get_ref()))
            .map(|(f, said)| {
                let id = doc.facilities.ok[f.index()]
                    .get_ref()
                    .id
                    .as_ref()
                    .map_or(String::new(), |i| i.get_ref().clone());
                (format!("shelter {id:?}"), said.span().start)
            })
            .collect(),
    };
    let mut ok = true;
    for (key, at) in keys {
        if let Some(first) = first_for.get(&key) {
            let message = format!(
                "activation_plan: {key} already has a plan (at {})",
                locator.describe(*first)
            );
            problems.add(at, message);
            ok = false;
        } else {
            first_for.insert(key, at);
        }
    }
    ok
}

/// One plan, every field checked; `None` when any had a problem.
fn plan(
    raw: &Spanned<RawPlan>,
    known: &Known<'_>,
    problems: &mut Problems,
) -> Option<ActivationPlan> {
    let at = raw.span().start;
    let raw = raw.get_ref();
    let applies_to = match (&raw.dual_use, &raw.shelters) {
        (Some(use_), None) => match DualUse::parse(use_.get_ref()) {
            Some(u) => Some(PlanFor::DualUse(u)),
            None => {
                let expected: Vec<&str> = DualUse::ALL.iter().map(|d| d.as_str()).collect();
                let message = format!(
                    "activation_plan: dual_use: unknown {:?} (expected {})",
                    use_.get_ref(),
                    expected.join(", ")
                );
                problems.add(use_.span().start, message);
                None
            }
        },
        (None, Some(shelters)) => plan_shelters(shelters, known, problems).map(PlanFor::Shelters),
        (Some(_), Some(_)) | (None, None) => {
            let message = "activation_plan: give either dual_use or shelters (exactly one)";
            problems.add(at, message.into());
            None
        }
    };
    let steps = plan_steps(raw.step.as_ref(), at, known, problems);
    Some(ActivationPlan {
        applies_to: applies_to?,
        steps: steps?,
    })
}

fn plan_shelters(
    shelters: &Spanned<Vec<Spanned<String>>>,
    known: &Known<'_>,
    problems: &mut Problems,
) -> Option<Vec<FacilityIdx>> {
    if shelters.get_ref().is_empty() {
        let message = "activation_plan: shelters: must name at least one shelter";
        problems.add(shelters.span().start, message.into());
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for said in shelters.get_ref() {
        let (at, id) = (said.span().start, said.get_ref().as_str());
        match known.facilities.get(id) {
            Some(&(f, "shelter")) => out.push(f),
            // Its own entry already says what is wrong with its kind.
            Some((_, "")) => ok = false,
            Some((_, kind)) => {
                let message =
                    format!("activation_plan: shelters: {id:?} is a {kind}, not a shelter");
                problems.add(at, message);
                ok = false;
            }
            None if known.broken_facilities.iter().any(|b| b == id) => ok = false,
            None => {
                problems.add(
                    at,
                    format!("activation_plan: shelters: unknown shelter {id:?}"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn plan_steps(
    raw: Option<&Spanned<Vec<Spanned<RawStep>>>>,
    plan_at: usize,
    known: &Known<'_>,
    problems: &mut Problems,
) -> Option<Vec<PlanStep>> {
    let steps = raw.map(|s| s.get_ref().as_slice()).unwrap_or_default();
    if steps.is_empty() {
        let message = "activation_plan: needs at least one step ([[activation_plan.step]])";
        problems.add(plan_at, message.into());
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (n, raw) in steps.iter().enumerate() {
        match step(raw, n + 1, known, problems) {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Step `n` (from 1), every field checked.
fn step(
    raw: &Spanned<RawStep>,
    n: usize,
    known: &Known<'_>,
    problems: &mut Problems,
) -> Option<PlanStep> {
    let at = raw.span().start;
    let raw = raw.get_ref();
    let mut report = |at: usize, field: &str, message: String| {
        problems.add(at, format!("activation_plan.step[{n}]: {field}: {message}"));
    };
    let name = match &raw.name {
        None => {
            report(at, "name", "missing".into());
            None
        }
        Some(name) if name.get_ref().trim().is_empty() => {
            report(name.span().start, "name", "must not be empty".into());
            None
        }
        Some(name) => Some(name.get_ref().trim().to_owned()),
    };
    let contact = match &raw.contact {
        None => {
            report(at, "contact", "missing".into());
            None
        }
        Some(c) => known
            .contact(c.get_ref().trim())
            .map_err(|message| report(c.span().start, "contact", message))
            .ok(),
    };
    let within = match &raw.within {
        None => {
            report(at, "within", "missing".into());
            None
        }
        Some(w) => match parse_duration(w.get_ref()) {
            Ok(d) if d.is_zero() => {
                report(w.span().start, "within", "must be more than 0".into());
                None
            }
            Ok(d) if d > MAX_WITHIN => {
                report(w.span().start, "within", "must be at most 30 days".into());
                None
            }
            Ok(d) => Some(d),
            Err(message) => {
                report(w.span().start, "within", message);
                None
            }
        },
    };
    Some(PlanStep {
        name: name?,
        contact: contact?,
        within: within?,
    })
}
