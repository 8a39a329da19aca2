//! Checking `[[community]]` entries and `communities.csv` rows
//! (docs/design.md#communities).
//!
//! Communities are checked against the towns and facilities as written, before the
//! checker consumes them, so their problems are reported together with every other
//! one. A town's and a facility's index is its position among the entries that were
//! read, which is the index the checker gives it; a registry is only built when every
//! entry made it, so the indices hold.
//!
//! A town that lists communities takes its groups from them. It may still give
//! `groups` of its own, as control totals: each must equal its communities' sum, else
//! an error names both places. Neither side silently wins, because two ledgers of the
//! same people drift apart and the one an officer edits next would quietly not count;
//! and a town's figure that agrees is kept, so towns.csv need not change when the
//! villages' ledgers arrive.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use toml::Spanned;

use super::raw::{Field, RawFacility, RawTown};
use super::{Document, Locator, Problems, label};
use crate::id::check_slug;
use crate::registry::{Community, FacilityIdx, TownIdx};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommunity {
    pub id: Field<String>,
    pub town: Field<String>,
    pub name: Field<String>,
    /// `groups = { elderly_alone = 40, infants = 12 }`: counts, never persons.
    pub groups: Field<BTreeMap<String, Spanned<i64>>>,
    pub water_point: Field<String>,
    pub power_unit: Field<String>,
    pub shelter: Field<String>,
}

/// The facility kind each serving key must name.
const SERVED_BY: [&str; 3] = ["water_point", "power_unit", "shelter"];

/// Every group any community names, so a category's `group` may name it.
pub(super) fn group_names(doc: &Document) -> Vec<String> {
    let names: BTreeSet<&String> = doc
        .communities
        .ok
        .iter()
        .filter_map(|c| c.get_ref().groups.as_ref())
        .flat_map(|g| g.get_ref().keys())
        .collect();
    names.into_iter().cloned().collect()
}

/// What a community may refer to, from the entries as written.
struct Known<'d> {
    towns: HashMap<&'d str, (TownIdx, &'d RawTown)>,
    facilities: HashMap<&'d str, (FacilityIdx, &'d str)>,
    broken_towns: &'d [String],
    broken_facilities: &'d [String],
}

impl<'d> Known<'d> {
    fn of(doc: &'d Document) -> Known<'d> {
        let mut towns = HashMap::new();
        for (i, t) in doc.towns.ok.iter().enumerate() {
            if let Some(id) = &t.get_ref().id {
                towns
                    .entry(id.get_ref().as_str())
                    .or_insert((TownIdx::from_index(i), t.get_ref()));
            }
        }
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
        Known {
            towns,
            facilities,
            broken_towns: &doc.towns.broken_ids,
            broken_facilities: &doc.facilities.broken_ids,
        }
    }
}

/// Checks every community; `None` when any had a problem (all reported).
pub(super) fn check(
    doc: &Document,
    locator: &Locator,
    problems: &mut Problems,
) -> Option<Vec<Community>> {
    let known = Known::of(doc);
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut checked = Vec::new();
    let mut ok = true;
    for raw in &doc.communities.ok {
        if let Some(id) = &raw.get_ref().id
            && let Some(at) = first.get(id.get_ref().as_str())
        {
            let message = format!(
                "duplicate community {:?} (first defined at {})",
                id.get_ref(),
                locator.describe(*at)
            );
            problems.add(id.span().start, message);
            ok = false;
        } else if let Some(id) = &raw.get_ref().id {
            first.insert(id.get_ref(), id.span().start);
        }
        match community(raw, &known, problems) {
            Some(c) => checked.push((raw.span().start, c)),
            None => ok = false,
        }
    }
    ok &= check_towns(&checked, &known, locator, problems);
    (ok && doc.communities.broken_ids.is_empty())
        .then(|| checked.into_iter().map(|(_, c)| c).collect())
}

/// One community, every field checked; `None` when any had a problem.
fn community(
    raw: &Spanned<RawCommunity>,
    known: &Known<'_>,
    problems: &mut Problems,
) -> Option<Community> {
    let at = raw.span().start;
    let raw = raw.get_ref();
    let who = label("community", raw.id.as_ref().map(|i| i.get_ref().as_str()));
    let mut report = |at: usize, field: &str, message: String| {
        problems.add(at, format!("{who}: {field}: {message}"));
    };
    let id = required(&raw.id, at, "id", &mut report).and_then(|id| {
        check_slug(id.get_ref())
            .map_err(|e| report(id.span().start, "id", e.to_string()))
            .ok()
            .map(|()| id.get_ref().clone())
    });
    let town = required(&raw.town, at, "town", &mut report).and_then(|t| {
        let found = known.towns.get(t.get_ref().as_str()).map(|(i, _)| *i);
        if found.is_none() && !known.broken_towns.contains(t.get_ref()) {
            report(
                t.span().start,
                "town",
                format!("unknown town {:?}", t.get_ref()),
            );
        }
        found
    });
    let name = required(&raw.name, at, "name", &mut report).and_then(|n| {
        if n.get_ref().trim().is_empty() {
            report(n.span().start, "name", "must not be empty".into());
            return None;
        }
        Some(n.get_ref().clone())
    });
    let groups = groups(raw.groups.as_ref(), &mut report);
    let [water_point, power_unit, shelter] = [&raw.water_point, &raw.power_unit, &raw.shelter]
        .into_iter()
        .zip(SERVED_BY)
        .map(|(field, kind)| served_by(field.as_ref(), kind, known, &mut report))
        .collect::<Vec<_>>()
        .try_into()
        .expect("three serving keys");
    Some(Community {
        id: id?,
        town: town?,
        name: name?,
        groups: groups?,
        water_point: water_point.ok()?,
        power_unit: power_unit.ok()?,
        shelter: shelter.ok()?,
    })
}

fn required<'f>(
    field: &'f Field<String>,
    entry_at: usize,
    name: &str,
    report: &mut impl FnMut(usize, &str, String),
) -> Option<&'f Spanned<String>> {
    if field.is_none() {
        report(entry_at, name, "missing".into());
    }
    field.as_ref()
}

/// Counts of people: whole numbers, never negative.
fn groups(
    raw: Option<&Spanned<BTreeMap<String, Spanned<i64>>>>,
    report: &mut impl FnMut(usize, &str, String),
) -> Option<BTreeMap<String, u64>> {
    let mut groups = BTreeMap::new();
    let mut ok = true;
    for (group, count) in raw.iter().flat_map(|g| g.get_ref()) {
        let field = format!("groups.{group}");
        if group.trim().is_empty() {
            report(count.span().start, "groups", "a group needs a name".into());
            ok = false;
            continue;
        }
        match u64::try_from(*count.get_ref()) {
            Ok(n) => {
                groups.insert(group.clone(), n);
            }
            Err(_) => {
                let message = format!("must be >= 0, got {}", count.get_ref());
                report(count.span().start, &field, message);
                ok = false;
            }
        }
    }
    ok.then_some(groups)
}

/// A serving facility: it must exist and be of `kind`. `Err` when reported.
fn served_by(
    field: Option<&Spanned<String>>,
    kind: &str,
    known: &Known<'_>,
    report: &mut impl FnMut(usize, &str, String),
) -> Result<Option<FacilityIdx>, ()> {
    let Some(field) = field else {
        return Ok(None);
    };
    let (at, id) = (field.span().start, field.get_ref());
    match known.facilities.get(id.as_str()) {
        Some(&(idx, found)) if found == kind => Ok(Some(idx)),
        // Its own entry already says what is wrong with its kind.
        Some((_, "")) => Err(()),
        Some((_, found)) => {
            report(
                at,
                kind,
                format!("facility {id:?} is a {found}, not a {kind}"),
            );
            Err(())
        }
        None if known.broken_facilities.contains(id) => Err(()),
        None => {
            report(at, kind, format!("unknown facility {id:?}"));
            Err(())
        }
    }
}

/// Per town: its own `groups`, if it gives any, agree with its communities' sums, and
/// no group sums to more people than live there. False when anything was reported.
fn check_towns(
    checked: &[(usize, Community)],
    known: &Known<'_>,
    locator: &Locator,
    problems: &mut Problems,
) -> bool {
    let mut by_town: BTreeMap<TownIdx, Vec<&(usize, Community)>> = BTreeMap::new();
    for c in checked {
        by_town.entry(c.1.town).or_default().push(c);
    }
    let mut ok = true;
    for (id, &(idx, town)) in &known.towns {
        let Some(communities) = by_town.get(&idx) else {
            continue;
        };
        let (first_at, first) = communities[0];
        let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, c) in communities {
            for (group, n) in &c.groups {
                *sums.entry(group).or_default() += n;
            }
        }
        let first_at = (first.id.as_str(), locator.describe(*first_at), *first_at);
        ok &= town_totals_agree(id, town, &sums, &first_at, problems);
        let Some(population) = town.population.as_ref().map(|p| *p.get_ref()) else {
            continue;
        };
        for (group, sum) in sums
            .into_iter()
            .filter(|(_, s)| *s as i128 > population as i128)
        {
            let message = format!(
                "community {:?}: groups.{group}: the communities of town {id:?} count {sum}, \
                 more than its population {population}",
                first_at.0
            );
            problems.add(first_at.2, message);
            ok = false;
        }
    }
    ok
}

/// A town that gives `groups` and has communities: each group it gives is a control
/// total the communities must sum to (the town's ledger and the villages' ledgers are
/// kept by different offices, and a mismatch is a typo in one of them). The message
/// names both places; groups only the communities give are theirs to add.
fn town_totals_agree(
    id: &str,
    town: &RawTown,
    sums: &BTreeMap<&str, u64>,
    (first, first_at, _): &(&str, String, usize),
    problems: &mut Problems,
) -> bool {
    let mut ok = true;
    for (group, given) in town.groups.iter().flat_map(|g| g.get_ref()) {
        let sum = sums.get(group.as_str()).copied().unwrap_or(0);
        if *given.get_ref() as i128 == sum as i128 {
            continue;
        }
        let message = format!(
            "town {id:?}: groups.{group}: {} here, but its communities ({first:?} at \
             {first_at}, …) count {sum}: a town's groups are the sums of its communities'",
            given.get_ref()
        );
        problems.add(given.span().start, message);
        ok = false;
    }
    ok
}
