//! The ledger over an edited registry (docs/design.md#registry-reload): what a running
//! service keeps when the registry file changes under it, and what changed.
//!
//! State moves by id, never by index: an edit that inserts a town shifts every index
//! after it. Facilities that remain keep their latest reading, link and consumption
//! estimate (through [`FacilitySnapshot`], the form that already outlives registry
//! edits across a restart); towns that remain keep their sheltered count and the
//! hysteresis level of each category that remains. New facilities start never
//! reported; a facility whose kind changed starts afresh, as after a restart.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Ledger, TownState};
use crate::registry::{FacilityIdx, Registry, TownIdx};

impl Ledger {
    /// A new ledger over `registry`, holding what this one knows of the towns and
    /// facilities both registries have, every town recomputed at `now`.
    pub fn carried_over(&self, registry: Arc<Registry>, now: DateTime<Utc>) -> Ledger {
        let mut next = Ledger::with_forecast(Arc::clone(&registry), self.forecast_min_span_h);
        for (i, state) in self.facilities.iter().enumerate() {
            let heard_of = state.latest.is_some() || state.link.is_some();
            if heard_of {
                // False for a facility removed or of another kind now: it starts afresh.
                next.restore(&self.snapshot(FacilityIdx::from_index(i)));
            }
        }
        for t in registry.town_indices() {
            let Some(old) = self.registry.town_idx(registry.town(t).id.as_str()) else {
                continue;
            };
            let before = &self.towns[old.index()];
            let after = &mut next.towns[t.index()];
            after.sheltered = before.sheltered;
            carry_levels(&self.registry, &registry, before, after);
        }
        // Warning levels name their scope by id: they apply to the edited registry as
        // they were written (docs/design.md#warning-levels).
        next.warnings = Arc::clone(&self.warnings);
        next.refresh_all(now);
        next
    }

    /// Takes the sheltered counts of `from`'s towns again (by id), for counts reported
    /// while [`Ledger::carried_over`] was building this ledger, and recomputes the
    /// towns whose count moved: the rest are as [`Ledger::carried_over`] left them, so
    /// the caller's write lock is held for those few towns, not for the city.
    pub fn take_sheltered_from(&mut self, from: &Ledger, now: DateTime<Utc>) {
        let registry = Arc::clone(&self.registry);
        for t in registry.town_indices() {
            let Some(old) = from.registry.town_idx(registry.town(t).id.as_str()) else {
                continue;
            };
            let sheltered = from.towns[old.index()].sheltered;
            if self.towns[t.index()].sheltered != sheltered {
                self.towns[t.index()].sheltered = sheltered;
                self.refresh(t, now);
            }
        }
        // A warning level set meanwhile: rare enough to recompute the city for.
        if self.warnings[..] != from.warnings[..] {
            self.set_warnings(from.warnings.to_vec(), now);
        }
    }
}

/// The hysteresis memory of each category both registries have: a town that was
/// critical stays critical until it climbs past the clear threshold, reload or not.
fn carry_levels(old: &Registry, new: &Registry, before: &TownState, after: &mut TownState) {
    for c in new.category_indices() {
        if let Some(was) = old.category_idx(new.category(c).id.as_str()) {
            after.levels[c.index()] = before.levels[was.index()];
        }
    }
}

/// What an edit of the registry changed, by id: what the operator is told after a
/// reload, and what the audit log keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegistryChanges {
    pub towns_added: Vec<String>,
    pub towns_removed: Vec<String>,
    /// Towns in both whose name, place, population, groups, cluster, district or
    /// targets differ.
    pub towns_changed: Vec<String>,
    pub facilities_added: Vec<String>,
    pub facilities_removed: Vec<String>,
    /// Facilities in both whose town, kind, settings, name or place differ.
    pub facilities_changed: Vec<String>,
    pub categories_changed: bool,
    pub contacts_changed: bool,
}

impl RegistryChanges {
    pub fn between(old: &Registry, new: &Registry) -> RegistryChanges {
        let mut changes = RegistryChanges {
            categories_changed: old.categories != new.categories,
            contacts_changed: contacts_differ(old, new),
            ..RegistryChanges::default()
        };
        for t in new.town_indices() {
            let id = new.town(t).id.as_str();
            match old.town_idx(id) {
                None => changes.towns_added.push(id.to_owned()),
                Some(was) if town_differs(old, was, new, t) => {
                    changes.towns_changed.push(id.to_owned());
                }
                Some(_) => {}
            }
        }
        changes.towns_removed = old
            .towns
            .iter()
            .filter(|t| new.town_idx(t.id.as_str()).is_none())
            .map(|t| t.id.to_string())
            .collect();
        for (i, facility) in new.facilities.iter().enumerate() {
            let id = facility.id.as_str();
            match old.facility_idx(id) {
                None => changes.facilities_added.push(id.to_owned()),
                Some(was) if facility_differs(old, was, new, FacilityIdx::from_index(i)) => {
                    changes.facilities_changed.push(id.to_owned());
                }
                Some(_) => {}
            }
        }
        changes.facilities_removed = old
            .facilities
            .iter()
            .filter(|f| new.facility_idx(f.id.as_str()).is_none())
            .map(|f| f.id.to_string())
            .collect();
        changes
    }

    /// Nothing an operator would call a change.
    pub fn is_empty(&self) -> bool {
        *self == RegistryChanges::default()
    }

    /// Every town the edit touched, in either registry: for the audit log's town rows.
    pub fn towns(&self, old: &Registry, new: &Registry) -> BTreeSet<String> {
        let town_of = |id: &String| {
            let in_new = new
                .facility_idx(id)
                .map(|f| new.town(new.facility(f).town).id.as_str());
            let in_old = old
                .facility_idx(id)
                .map(|f| old.town(old.facility(f).town).id.as_str());
            in_new.into_iter().chain(in_old).map(str::to_owned)
        };
        let facilities = self
            .facilities_added
            .iter()
            .chain(&self.facilities_removed)
            .chain(&self.facilities_changed)
            .flat_map(town_of);
        self.towns_added
            .iter()
            .chain(&self.towns_removed)
            .chain(&self.towns_changed)
            .cloned()
            .chain(facilities)
            .collect()
    }
}

fn town_differs(old: &Registry, was: TownIdx, new: &Registry, t: TownIdx) -> bool {
    let (a, b) = (old.town(was), new.town(t));
    let targets_differ = new.category_indices().any(|c| {
        old.category_idx(new.category(c).id.as_str())
            .is_none_or(|oc| old.target_for(was, oc) != new.target_for(t, c))
    });
    a.name != b.name
        || a.population != b.population
        || a.groups != b.groups
        || a.lat != b.lat
        || a.lon != b.lon
        || old.districts[a.district.index()].id != new.districts[b.district.index()].id
        || old.clusters[a.cluster.index()].id != new.clusters[b.cluster.index()].id
        || targets_differ
}

fn facility_differs(old: &Registry, was: FacilityIdx, new: &Registry, f: FacilityIdx) -> bool {
    let (a, b) = (old.facility(was), new.facility(f));
    a.name != b.name
        || a.kind != b.kind
        || a.lat != b.lat
        || a.lon != b.lon
        || a.report_every != b.report_every
        || a.stale_after != b.stale_after
        || a.report != b.report
        || old.town(a.town).id != new.town(b.town).id
}

/// Contacts are compared by what they say, their scopes by ids (indices move).
fn contacts_differ(old: &Registry, new: &Registry) -> bool {
    use crate::registry::ContactScope;
    let scope = |r: &Registry, s: &ContactScope| -> Vec<String> {
        match s {
            ContactScope::Towns(t) => t.iter().map(|&t| r.town(t).id.to_string()).collect(),
            ContactScope::Clusters(c) => c
                .iter()
                .map(|c| r.clusters[c.index()].id.to_string())
                .collect(),
            ContactScope::Districts(d) => d
                .iter()
                .map(|d| r.districts[d.index()].id.to_string())
                .collect(),
            ContactScope::City => vec!["city".to_owned()],
        }
    };
    old.contacts.len() != new.contacts.len()
        || old.contacts.iter().zip(&new.contacts).any(|(a, b)| {
            (&a.name, &a.email, &a.phone, &a.webhook, a.lang, &a.channels)
                != (&b.name, &b.email, &b.phone, &b.webhook, b.lang, &b.channels)
                || scope(old, &a.scope) != scope(new, &b.scope)
        })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::coverage::Level;
    use crate::reading::{Observation, Reading};
    use crate::registry::{Source, load_registry};

    fn registry(population: u64, facilities: &[&str]) -> Arc<Registry> {
        let mut text = format!(
            "[[category]]\nid = \"water\"\nname = \"Water\"\nunit = \"L\"\ndaily_need = 3.0\n\
             [[town]]\nid = \"jingshan\"\nname = \"Jingshan\"\ndistrict = \"d\"\ncluster = \"c\"\n\
             population = {population}\n\
             [[town]]\nid = \"beixinqiao\"\nname = \"Beixinqiao\"\ndistrict = \"d\"\ncluster = \"c\"\n\
             population = 1000\n"
        );
        for id in facilities {
            text.push_str(&format!(
                "[[facility]]\nid = \"{id}\"\ntown = \"jingshan\"\nkind = \"warehouse\"\n"
            ));
        }
        let source = Source {
            name: "registry.toml".into(),
            text,
        };
        let loaded = load_registry(&source, &[], &mut |_| Err("no tables".into()));
        Arc::new(loaded.expect("valid test registry"))
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn stock(registry: &Registry, facility: &str, litres: f64, ts: DateTime<Utc>) -> Reading {
        Reading {
            facility: registry.facility_idx(facility).unwrap(),
            ts,
            seq: None,
            observation: Observation::Stock(vec![(
                registry.category_idx("water").unwrap(),
                litres,
            )]),
        }
    }

    #[test]
    fn remaining_facilities_keep_their_stock_and_new_ones_start_never_reported() {
        let old = registry(1000, &["wh-a", "wh-b"]);
        let mut ledger = Ledger::new(Arc::clone(&old));
        ledger.apply(&stock(&old, "wh-a", 6000.0, at(0)), at(0));
        ledger.apply(&stock(&old, "wh-b", 3000.0, at(0)), at(0));
        let jingshan = old.town_idx("jingshan").unwrap();
        ledger.set_sheltered(jingshan, 500);
        ledger.refresh_all(at(1));

        // wh-b removed, wh-c added before wh-a (indices move), population doubled.
        let new = registry(2000, &["wh-c", "wh-a"]);
        let next = ledger.carried_over(Arc::clone(&new), at(2));
        let t = new.town_idx("jingshan").unwrap();
        let figures = next.figures(t);
        let water = &figures.categories[0];
        assert_eq!(water.stock, 6000.0);
        assert_eq!(figures.sheltered, 500);
        assert_eq!(water.need_per_day, 2500.0 * 3.0);
        assert_eq!(
            figures.never_reported,
            vec![new.facility_idx("wh-c").unwrap()]
        );
        assert!(
            next.facility(new.facility_idx("wh-a").unwrap())
                .latest
                .is_some()
        );
    }

    #[test]
    fn a_sheltered_count_reported_during_the_carry_over_is_taken_again() {
        let old = registry(1000, &["wh-a"]);
        let mut ledger = Ledger::new(Arc::clone(&old));
        ledger.apply(&stock(&old, "wh-a", 6000.0, at(0)), at(0));
        ledger.refresh_all(at(1));
        let new = registry(1000, &["wh-a"]);
        let mut next = ledger.carried_over(Arc::clone(&new), at(2));
        // Meanwhile the officer reports 1,000 people sheltered.
        let t = old.town_idx("jingshan").unwrap();
        ledger.set_sheltered(t, 1000);
        ledger.refresh(t, at(2));
        next.take_sheltered_from(&ledger, at(3));
        let figures = next.figures(new.town_idx("jingshan").unwrap());
        assert_eq!(figures.sheltered, 1000);
        assert_eq!(figures.worst_days, Some(1.0));
    }

    #[test]
    fn a_critical_town_keeps_its_hysteresis_level() {
        let old = registry(1001, &["wh-a"]);
        let mut ledger = Ledger::new(Arc::clone(&old));
        // 2.997 days: critical.
        ledger.apply(&stock(&old, "wh-a", 9000.0, at(0)), at(0));
        ledger.refresh_all(at(1));
        let t = old.town_idx("jingshan").unwrap();
        assert_eq!(ledger.figures(t).categories[0].level, Level::Critical);
        // Population down a little: 3.006 days, above the target but inside the
        // hysteresis band, so still critical, as it would be without the reload (a
        // fresh ledger would call it a warning).
        let new = registry(998, &["wh-a"]);
        let next = ledger.carried_over(Arc::clone(&new), at(2));
        assert_eq!(next.figures(t).categories[0].level, Level::Critical);
    }

    #[test]
    fn changes_name_what_was_added_removed_and_changed() {
        let old = registry(1000, &["wh-a", "wh-b"]);
        let new = registry(2000, &["wh-c", "wh-a"]);
        let changes = RegistryChanges::between(&old, &new);
        assert_eq!(changes.facilities_added, ["wh-c"]);
        assert_eq!(changes.facilities_removed, ["wh-b"]);
        assert!(changes.facilities_changed.is_empty());
        assert_eq!(changes.towns_changed, ["jingshan"]);
        assert!(changes.towns_added.is_empty() && changes.towns_removed.is_empty());
        assert_eq!(
            changes.towns(&old, &new).into_iter().collect::<Vec<_>>(),
            ["jingshan"]
        );
        assert!(RegistryChanges::between(&old, &old).is_empty());
    }
}
