//! The checker: turns raw entries into registry parts, reporting every problem as
//! `{kind} "{id}": {field}: {message}` at the offset of the value (or of the entry when
//! the value is missing).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use toml::Spanned;

use super::raw::{
    Field, RawArea, RawCategory, RawContact, RawFacility, RawOverride, RawTarget, RawTown,
};
use super::{Document, Locator, Problems, field_str, label};
use crate::duration::parse_duration;
use crate::id::{CategoryId, ClusterId, DistrictId, FacilityId, IdError, TownId};
use crate::registry::{
    Category, CategoryIdx, CategoryNames, Channel, Cluster, ClusterIdx, Contact, ContactScope,
    DEFAULT_CONVERT_WITHIN, DEFAULT_REPORT_EVERY, District, DistrictIdx, DualUse, Facility,
    FacilityIdx, FacilityKind, Group, Lang, Registry, RegistryParts, Report, ShelterSpec, Target,
    TargetOverride, Town, TownIdx,
};

/// Longest `report_every` or `stale_after`: a facility heard from less than once a year
/// is not being monitored, and the bound keeps every sum and multiple of these far from
/// overflow (silence is `3 × report_every`).
const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// The problem has been reported; whatever depended on the value is left out.
#[derive(Debug, Clone, Copy)]
struct Reported;

type Checked<T> = Result<T, Reported>;

/// Ids of one kind: where each was first defined, and which broken entries claimed one.
#[derive(Debug)]
struct Ids<I> {
    kind: &'static str,
    first: HashMap<String, (I, usize)>,
    /// Ids whose entries were already reported as broken; references to them resolve to
    /// [`Reported`] without a second message.
    broken: HashSet<String>,
}

impl<I: Copy> Ids<I> {
    fn new(kind: &'static str) -> Self {
        Ids {
            kind,
            first: HashMap::new(),
            broken: HashSet::new(),
        }
    }

    fn get(&self, id: &str) -> Option<I> {
        self.first.get(id).map(|&(idx, _)| idx)
    }
}

/// A number's allowed range.
#[derive(Debug, Clone, Copy)]
enum Bounds {
    Positive,
    NonNegative,
    Between(f64, f64),
}

impl Bounds {
    fn check(self, v: f64) -> Result<(), String> {
        let ok = match self {
            Bounds::Positive => v > 0.0,
            Bounds::NonNegative => v >= 0.0,
            Bounds::Between(lo, hi) => (lo..=hi).contains(&v),
        };
        match (v.is_finite(), ok) {
            (false, _) => Err(format!("must be a finite number, got {v}")),
            (true, true) => Ok(()),
            (true, false) => Err(match self {
                Bounds::Positive => format!("must be > 0, got {v}"),
                Bounds::NonNegative => format!("must be >= 0, got {v}"),
                Bounds::Between(lo, hi) => format!("must be between {lo} and {hi}, got {v}"),
            }),
        }
    }
}

/// One entry being checked: reports problems as `{who}: {field}: {message}`.
struct Entry<'p> {
    who: String,
    /// The entry's own position (its `[[town]]` header or CSV row), for missing fields.
    at: usize,
    problems: &'p mut Problems,
}

impl Entry<'_> {
    fn report(&mut self, at: usize, field: &str, message: impl std::fmt::Display) -> Reported {
        self.problems
            .add(at, format!("{}: {field}: {message}", self.who));
        Reported
    }

    /// A problem of the entry as a whole, not of one field.
    fn report_entry(&mut self, message: impl std::fmt::Display) -> Reported {
        self.problems
            .add(self.at, format!("{}: {message}", self.who));
        Reported
    }

    fn required<'f, T>(&mut self, field: &'f Field<T>, name: &str) -> Checked<&'f Spanned<T>> {
        field.as_ref().ok_or_else(|| {
            let at = self.at;
            self.report(at, name, "missing")
        })
    }

    /// A present text must say something; names and units are shown to people.
    fn text(&mut self, field: &Field<String>, name: &str) -> Checked<Option<String>> {
        match field {
            None => Ok(None),
            Some(v) if v.get_ref().trim().is_empty() => {
                Err(self.report(v.span().start, name, "must not be empty"))
            }
            Some(v) => Ok(Some(v.get_ref().clone())),
        }
    }

    fn required_text(&mut self, field: &Field<String>, name: &str) -> Checked<String> {
        self.required(field, name)?;
        self.text(field, name).map(Option::unwrap_or_default)
    }

    fn number(&mut self, field: &Field<f64>, name: &str, bounds: Bounds) -> Checked<Option<f64>> {
        let Some(v) = field else {
            return Ok(None);
        };
        bounds
            .check(*v.get_ref())
            .map(|()| Some(*v.get_ref()))
            .map_err(|message| self.report(v.span().start, name, message))
    }

    fn required_number(&mut self, field: &Field<f64>, name: &str, bounds: Bounds) -> Checked<f64> {
        self.required(field, name)?;
        self.number(field, name, bounds)?.ok_or(Reported)
    }

    /// A duration such as `"60s"`; zero is never meant (it would make everything silent).
    fn duration(&mut self, field: &Field<String>, name: &str) -> Checked<Option<Duration>> {
        let Some(v) = field else {
            return Ok(None);
        };
        let at = v.span().start;
        match parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() => {
                Err(self.report(at, name, format!("must be > 0, got {:?}", v.get_ref())))
            }
            Ok(d) if d > MAX_DURATION => Err(self.report(
                at,
                name,
                format!("must be at most 365d, got {:?}", v.get_ref()),
            )),
            Ok(d) => Ok(Some(d)),
            Err(message) => Err(self.report(at, name, message)),
        }
    }

    fn slug<Id>(
        &mut self,
        v: &Spanned<String>,
        name: &str,
        parse: fn(&str) -> Result<Id, IdError>,
    ) -> Checked<Id> {
        parse(v.get_ref()).map_err(|e| self.report(v.span().start, name, e))
    }

    /// The entry's own id: a slug, defined once.
    fn id<Id, I: Copy>(
        &mut self,
        field: &Field<String>,
        parse: fn(&str) -> Result<Id, IdError>,
        ids: &mut Ids<I>,
        idx: I,
        locator: &Locator,
    ) -> Checked<Id> {
        let v = self.required(field, "id")?;
        let at = v.span().start;
        // Declared even when not a valid slug, so references to it are not reported again.
        if let Some(&(_, first_at)) = ids.first.get(v.get_ref().as_str()) {
            let first = locator.describe(first_at);
            self.problems.add(
                at,
                format!(
                    "duplicate {} {:?} (first defined at {first})",
                    ids.kind,
                    v.get_ref()
                ),
            );
        } else {
            ids.first.insert(v.get_ref().clone(), (idx, at));
        }
        self.slug(v, "id", parse)
    }

    /// A reference to another entry by id.
    fn resolve<I: Copy>(
        &mut self,
        ids: &Ids<I>,
        reference: &Spanned<String>,
        field: &str,
    ) -> Checked<I> {
        let id = reference.get_ref().as_str();
        if let Some(idx) = ids.get(id) {
            return Ok(idx);
        }
        if ids.broken.contains(id) {
            return Err(Reported);
        }
        Err(self.report(
            reference.span().start,
            field,
            format!("unknown {} {id:?}", ids.kind),
        ))
    }

    /// A setting that only facilities of another kind have.
    fn forbid<T>(&mut self, field: &Field<T>, name: &str, kind: &str, owner: &str) -> Checked<()> {
        match field {
            Some(v) => Err(self.report(
                v.span().start,
                name,
                format!("not allowed on a {kind} (only on {owner})"),
            )),
            None => Ok(()),
        }
    }
}

fn entry<'p>(problems: &'p mut Problems, kind: &str, id: &Field<String>, at: usize) -> Entry<'p> {
    Entry {
        who: label(kind, field_str(id)),
        at,
        problems,
    }
}

/// Whether districts and clusters come from the towns that name them (no
/// `[[district]]` / `[[cluster]]` at all) rather than from declarations.
#[derive(Debug, Clone, Copy)]
struct Implied {
    districts: bool,
    clusters: bool,
}

/// What the checker hands back when every entry made it.
pub(super) struct CheckedParts {
    pub parts: RegistryParts,
    /// Where each target override was written (for the check that needs the built
    /// registry).
    pub override_at: Vec<usize>,
    /// Warehouses' declared maxima, for [`Registry::with_warehouse_max`].
    pub warehouse_max: Vec<((FacilityIdx, CategoryIdx), f64)>,
}

/// Turns raw entries into registry parts, reporting everything that does not fit. An
/// entry with a problem still takes its index, so that one fault is reported once and
/// references to the entry resolve; the parts are only returned when every entry made it.
pub(super) struct Checker<'a> {
    locator: &'a Locator,
    problems: &'a mut Problems,
    districts: Ids<DistrictIdx>,
    clusters: Ids<ClusterIdx>,
    categories: Ids<CategoryIdx>,
    towns: Ids<TownIdx>,
    facilities: Ids<FacilityIdx>,
    /// Warehouse maxima found so far, by facility and category.
    warehouse_max: Vec<((FacilityIdx, CategoryIdx), f64)>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(locator: &'a Locator, problems: &'a mut Problems) -> Self {
        Checker {
            locator,
            problems,
            districts: Ids::new("district"),
            clusters: Ids::new("cluster"),
            categories: Ids::new("category"),
            towns: Ids::new("town"),
            facilities: Ids::new("facility"),
            warehouse_max: Vec::new(),
        }
    }

    pub(super) fn check(&mut self, doc: Document) -> Option<CheckedParts> {
        let Document {
            water_category,
            target,
            overrides,
            csv: _,
            districts,
            clusters,
            categories,
            towns,
            facilities,
            contacts,
            communities: _,
            activation_plans: _,
            warning_levels: _,
            community_groups,
        } = doc;
        self.districts.broken.extend(districts.broken_ids);
        self.clusters.broken.extend(clusters.broken_ids);
        self.categories.broken.extend(categories.broken_ids);
        self.towns.broken.extend(towns.broken_ids);
        self.facilities.broken.extend(facilities.broken_ids);
        if !towns.declared {
            self.problems.add(
                0,
                "registry has no towns: add [[town]] entries or a towns.csv".into(),
            );
        }
        if !categories.declared {
            self.problems.add(
                0,
                "registry has no categories: add [[category]] entries".into(),
            );
        }

        let implied = Implied {
            districts: !districts.declared,
            clusters: !clusters.declared,
        };
        let mut district_slots: Vec<Option<District>> = districts
            .ok
            .into_iter()
            .enumerate()
            .map(|(i, raw)| self.district(raw, DistrictIdx::from_index(i)))
            .collect();
        let mut cluster_slots: Vec<Option<Cluster>> = clusters
            .ok
            .into_iter()
            .enumerate()
            .map(|(i, raw)| self.cluster(raw, ClusterIdx::from_index(i)))
            .collect();

        // Every group any town names, so a category's group can be checked against them.
        let town_groups: BTreeSet<&str> = towns
            .ok
            .iter()
            .filter_map(|t| t.get_ref().groups.as_ref())
            .flat_map(|g| g.get_ref().keys().map(String::as_str))
            .chain(community_groups.iter().map(String::as_str))
            .collect();
        let town_groups: Vec<&str> = town_groups.into_iter().collect();
        let category_slots: Vec<Option<Category>> = categories
            .ok
            .into_iter()
            .enumerate()
            .map(|(i, raw)| self.category(raw, CategoryIdx::from_index(i), &town_groups))
            .collect();

        let town_slots: Vec<Option<Town>> = towns
            .ok
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                self.town(
                    raw,
                    TownIdx::from_index(i),
                    implied,
                    &mut district_slots,
                    &mut cluster_slots,
                )
            })
            .collect();
        let facility_slots: Vec<Option<Facility>> = facilities
            .ok
            .into_iter()
            .enumerate()
            .map(|(i, raw)| self.facility(raw, FacilityIdx::from_index(i)))
            .collect();
        let contact_slots: Vec<Option<Contact>> = contacts
            .ok
            .into_iter()
            .map(|raw| self.contact(raw))
            .collect();

        let target = self.target(target);
        let override_slots: Vec<(usize, Option<TargetOverride>)> = overrides
            .ok
            .into_iter()
            .map(|raw| (raw.span().start, self.target_override(raw, &target)))
            .collect();
        let water_category = self.water_category(water_category.as_ref());

        let (override_at, override_slots): (Vec<usize>, Vec<Option<TargetOverride>>) =
            override_slots.into_iter().unzip();
        let parts = RegistryParts {
            target: target.ok()?,
            target_overrides: override_slots.into_iter().collect::<Option<_>>()?,
            categories: category_slots.into_iter().collect::<Option<_>>()?,
            water_category: water_category.ok()?,
            districts: district_slots.into_iter().collect::<Option<_>>()?,
            clusters: cluster_slots.into_iter().collect::<Option<_>>()?,
            towns: town_slots.into_iter().collect::<Option<_>>()?,
            facilities: facility_slots.into_iter().collect::<Option<_>>()?,
            contacts: contact_slots.into_iter().collect::<Option<_>>()?,
        };
        Some(CheckedParts {
            parts,
            override_at,
            warehouse_max: std::mem::take(&mut self.warehouse_max),
        })
    }

    fn district(&mut self, raw: Spanned<RawArea>, idx: DistrictIdx) -> Option<District> {
        let (at, raw) = (raw.span().start, raw.into_inner());
        let mut e = entry(self.problems, "district", &raw.id, at);
        let id = e.id(
            &raw.id,
            DistrictId::parse,
            &mut self.districts,
            idx,
            self.locator,
        );
        let name = e.required_text(&raw.name, "name");
        Some(District {
            id: id.ok()?,
            name: name.ok()?,
        })
    }

    fn cluster(&mut self, raw: Spanned<RawArea>, idx: ClusterIdx) -> Option<Cluster> {
        let (at, raw) = (raw.span().start, raw.into_inner());
        let mut e = entry(self.problems, "cluster", &raw.id, at);
        let id = e.id(
            &raw.id,
            ClusterId::parse,
            &mut self.clusters,
            idx,
            self.locator,
        );
        let name = e.required_text(&raw.name, "name");
        Some(Cluster {
            id: id.ok()?,
            name: name.ok()?,
        })
    }

    fn category(
        &mut self,
        raw: Spanned<RawCategory>,
        idx: CategoryIdx,
        town_groups: &[&str],
    ) -> Option<Category> {
        let (at, raw) = (raw.span().start, raw.into_inner());
        let mut e = entry(self.problems, "category", &raw.id, at);
        let id = e.id(
            &raw.id,
            CategoryId::parse,
            &mut self.categories,
            idx,
            self.locator,
        );
        let name = e.required_text(&raw.name, "name");
        let name_zh = e.text(&raw.name_zh, "name_zh");
        let name_en = e.text(&raw.name_en, "name_en");
        let unit = e.required_text(&raw.unit, "unit");
        let daily_need = e.required_number(&raw.daily_need, "daily_need", Bounds::Positive);
        let group = match &raw.group {
            None => Ok(Group::All),
            Some(g) if g.get_ref() == "all" => Ok(Group::All),
            Some(g) if town_groups.contains(&g.get_ref().as_str()) => {
                Ok(Group::Named(g.get_ref().clone()))
            }
            Some(g) => {
                let known = if town_groups.is_empty() {
                    "no town has groups".to_owned()
                } else {
                    format!("towns have {}", town_groups.join(", "))
                };
                let message = format!(
                    "no town has a group {:?} ({known}); use \"all\" or a town group",
                    g.get_ref()
                );
                Err(e.report(g.span().start, "group", message))
            }
        };
        Some(Category {
            id: id.ok()?,
            name: name.ok()?,
            names: CategoryNames {
                zh: name_zh.ok()?,
                en: name_en.ok()?,
            },
            unit: unit.ok()?,
            daily_need: daily_need.ok()?,
            group: group.ok()?,
        })
    }

    fn town(
        &mut self,
        raw: Spanned<RawTown>,
        idx: TownIdx,
        implied: Implied,
        districts: &mut Vec<Option<District>>,
        clusters: &mut Vec<Option<Cluster>>,
    ) -> Option<Town> {
        let (at, raw) = (raw.span().start, raw.into_inner());
        let mut e = entry(self.problems, "town", &raw.id, at);
        let id = e.id(&raw.id, TownId::parse, &mut self.towns, idx, self.locator);
        let name = e.required_text(&raw.name, "name");
        let district = e.required(&raw.district, "district").and_then(|d| {
            if implied.districts {
                imply(
                    &mut e,
                    &mut self.districts,
                    d,
                    "district",
                    districts,
                    DistrictIdx::from_index,
                    |id| {
                        let id = DistrictId::parse(id)?;
                        Ok(District {
                            name: id.to_string(),
                            id,
                        })
                    },
                )
            } else {
                e.resolve(&self.districts, d, "district")
            }
        });
        let cluster = e.required(&raw.cluster, "cluster").and_then(|c| {
            if implied.clusters {
                imply(
                    &mut e,
                    &mut self.clusters,
                    c,
                    "cluster",
                    clusters,
                    ClusterIdx::from_index,
                    |id| {
                        let id = ClusterId::parse(id)?;
                        Ok(Cluster {
                            name: id.to_string(),
                            id,
                        })
                    },
                )
            } else {
                e.resolve(&self.clusters, c, "cluster")
            }
        });
        let population = e.required(&raw.population, "population").and_then(|p| {
            u64::try_from(*p.get_ref()).map_err(|_| {
                e.report(
                    p.span().start,
                    "population",
                    format!("must be >= 0, got {}", p.get_ref()),
                )
            })
        });
        let lat = e.number(&raw.lat, "lat", Bounds::Between(-90.0, 90.0));
        let lon = e.number(&raw.lon, "lon", Bounds::Between(-180.0, 180.0));
        let mut groups = BTreeMap::new();
        let mut groups_ok = true;
        for (group, count) in raw.groups.iter().flat_map(|g| g.get_ref()) {
            let field = format!("groups.{group}");
            let at = count.span().start;
            match (u64::try_from(*count.get_ref()), population) {
                (Err(_), _) => {
                    e.report(at, &field, format!("must be >= 0, got {}", count.get_ref()));
                    groups_ok = false;
                }
                (Ok(n), Ok(p)) if n > p => {
                    e.report(at, &field, format!("{n} is more than the population {p}"));
                    groups_ok = false;
                }
                (Ok(n), _) => {
                    groups.insert(group.clone(), n);
                }
            }
        }
        Some(Town {
            id: id.ok()?,
            name: name.ok()?,
            district: district.ok()?,
            cluster: cluster.ok()?,
            population: population.ok()?,
            groups: groups_ok.then_some(groups)?,
            lat: lat.ok()?,
            lon: lon.ok()?,
            facilities: Vec::new(),
        })
    }

    fn facility(&mut self, raw: Spanned<RawFacility>, idx: FacilityIdx) -> Option<Facility> {
        let (at, raw) = (raw.span().start, raw.into_inner());
        let mut e = entry(self.problems, "facility", &raw.id, at);
        let id = e.id(
            &raw.id,
            FacilityId::parse,
            &mut self.facilities,
            idx,
            self.locator,
        );
        let town = e
            .required(&raw.town, "town")
            .and_then(|t| e.resolve(&self.towns, t, "town"));
        let name = e.text(&raw.name, "name");
        let lat = e.number(&raw.lat, "lat", Bounds::Between(-90.0, 90.0));
        let lon = e.number(&raw.lon, "lon", Bounds::Between(-180.0, 180.0));
        let report_every = e.duration(&raw.report_every, "report_every");
        let report = report_mode(&mut e, &raw.report);
        let stale_after = e.duration(&raw.stale_after, "stale_after");
        let kind = e
            .required(&raw.kind, "kind")
            .and_then(|k| facility_kind(&mut e, k, &raw));
        let max = match &raw.max {
            Some(max) if matches!(kind, Ok(FacilityKind::Warehouse)) => {
                warehouse_max(&mut e, max.get_ref(), &self.categories)
            }
            // Reported by `facility_kind` for other kinds.
            _ => Ok(Vec::new()),
        };
        let id = id.ok()?;
        self.warehouse_max
            .extend(max.ok()?.into_iter().map(|(c, max)| ((idx, c), max)));
        Some(Facility {
            name: name.ok()?.unwrap_or_else(|| id.to_string()),
            id,
            town: town.ok()?,
            kind: kind.ok()?,
            lat: lat.ok()?,
            lon: lon.ok()?,
            report_every: report_every.ok()?.unwrap_or(DEFAULT_REPORT_EVERY),
            // Zero (never a valid value: refused above) leaves it to
            // `Registry::build`, which resolves it from the town's target.
            stale_after: stale_after.ok()?.unwrap_or(Duration::ZERO),
            report: report.ok()?,
        })
    }

    fn contact(&mut self, raw: Spanned<RawContact>) -> Option<Contact> {
        let (at, raw) = (raw.span().start, raw.into_inner());
        let mut e = entry(self.problems, "contact", &raw.name, at);
        let name = e.required_text(&raw.name, "name");
        let email = check_address(
            &mut e,
            &raw.email,
            "email",
            is_email,
            "is not an email address",
        );
        let phone = check_address(
            &mut e,
            &raw.phone,
            "phone",
            is_e164,
            "is not an E.164 number (+ then 7 to 15 digits, the first not 0)",
        );
        let webhook = check_address(
            &mut e,
            &raw.webhook,
            "webhook",
            is_http_url,
            "is not an http:// or https:// URL",
        );
        if raw.email.is_none() && raw.phone.is_none() && raw.webhook.is_none() {
            e.report_entry("has no address: give email, phone or webhook");
        }
        let lang = match &raw.lang {
            None => Ok(Lang::default()),
            Some(l) => match l.get_ref().as_str() {
                "zh" => Ok(Lang::Zh),
                "en" => Ok(Lang::En),
                other => Err(e.report(
                    l.span().start,
                    "lang",
                    format!("unknown language {other:?} (expected zh or en)"),
                )),
            },
        };
        let scope = contact_scope(&mut e, &raw, (&self.towns, &self.clusters, &self.districts));
        let channels = contact_channels(&mut e, &raw);
        Some(Contact {
            name: name.ok()?,
            email: email.ok()?,
            phone: phone.ok()?,
            webhook: webhook.ok()?,
            lang: lang.ok()?,
            scope: scope.ok()?,
            channels: channels.ok()?,
        })
    }

    fn target(&mut self, raw: Option<Spanned<RawTarget>>) -> Checked<Target> {
        let defaults = Target::default();
        let Some(raw) = raw else {
            return Ok(defaults);
        };
        let (at, raw) = (raw.span().start, raw.into_inner());
        let mut e = Entry {
            who: "target".to_owned(),
            at,
            problems: self.problems,
        };
        let days = e.number(&raw.days, "days", Bounds::Positive);
        let warn_days = e.number(&raw.warn_days, "warn_days", Bounds::Positive);
        let hysteresis = e.number(&raw.hysteresis, "hysteresis", Bounds::NonNegative);
        let stale_after = e.duration(&raw.stale_after, "stale_after");
        let days = days?.unwrap_or(defaults.days);
        // Setting only `days` keeps the default margin to the warning.
        let warn_days = warn_days?.unwrap_or(days + (defaults.warn_days - defaults.days));
        check_warn_days(&mut e, &raw.warn_days, days, warn_days)?;
        Ok(Target {
            days,
            warn_days,
            hysteresis_days: hysteresis?.unwrap_or(defaults.hysteresis_days),
            stale_after: stale_after?,
        })
    }

    fn target_override(
        &mut self,
        raw: Spanned<RawOverride>,
        base: &Checked<Target>,
    ) -> Option<TargetOverride> {
        let (at, raw) = (raw.span().start, raw.into_inner());
        let mut e = Entry {
            who: "target.override".to_owned(),
            at,
            problems: self.problems,
        };
        if raw.town.is_none() && raw.category.is_none() {
            e.report_entry("needs town or category (or both)");
        }
        let town = raw
            .town
            .as_ref()
            .map(|t| e.resolve(&self.towns, t, "town"))
            .transpose();
        let category = raw
            .category
            .as_ref()
            .map(|c| e.resolve(&self.categories, c, "category"))
            .transpose();
        let days = e.number(&raw.days, "days", Bounds::Positive);
        let warn_days = e.number(&raw.warn_days, "warn_days", Bounds::Positive);
        let hysteresis = e.number(&raw.hysteresis, "hysteresis", Bounds::NonNegative);
        let stale_after = e.duration(&raw.stale_after, "stale_after");
        let (days, mut warn_days) = (days.ok()?, warn_days.ok()?);
        let base = base.ok()?;
        if let Some(days) = days {
            // Overriding only `days` keeps the base target's margin to the warning.
            let warn = *warn_days.get_or_insert(days + (base.warn_days - base.days));
            check_warn_days(&mut e, &raw.warn_days, days, warn).ok()?;
        } else if let Some(warn) = warn_days {
            check_warn_days(&mut e, &raw.warn_days, base.days, warn).ok()?;
        }
        Some(TargetOverride {
            town: town.ok()?,
            category: category.ok()?,
            days,
            warn_days,
            hysteresis_days: hysteresis.ok()?,
            stale_after: stale_after.ok()?,
        })
    }

    /// The category water points' stored water counts toward: as named, or `water`.
    fn water_category(&mut self, raw: Option<&Spanned<String>>) -> Checked<Option<CategoryIdx>> {
        let Some(id) = raw else {
            return Ok(self.categories.get("water"));
        };
        if let Some(idx) = self.categories.get(id.get_ref()) {
            return Ok(Some(idx));
        }
        if !self.categories.broken.contains(id.get_ref()) {
            let message = format!("water_category: unknown category {:?}", id.get_ref());
            self.problems.add(id.span().start, message);
        }
        Err(Reported)
    }
}

/// A district or cluster that exists because a town names it (none are declared); it
/// is appended to `slots` the first time, named by its id.
fn imply<I: Copy, T>(
    e: &mut Entry<'_>,
    ids: &mut Ids<I>,
    reference: &Spanned<String>,
    field: &str,
    slots: &mut Vec<Option<T>>,
    make_idx: fn(usize) -> I,
    make: impl FnOnce(&str) -> Result<T, IdError>,
) -> Checked<I> {
    let id = reference.get_ref().as_str();
    if let Some(idx) = ids.get(id) {
        return Ok(idx);
    }
    if ids.broken.contains(id) {
        return Err(Reported);
    }
    match make(id) {
        Ok(area) => {
            let idx = make_idx(slots.len());
            slots.push(Some(area));
            ids.first
                .insert(id.to_owned(), (idx, reference.span().start));
            Ok(idx)
        }
        Err(err) => {
            // Reported once, not once per town naming it.
            ids.broken.insert(id.to_owned());
            Err(e.report(reference.span().start, field, err))
        }
    }
}

/// `report = "gateway" | "manual"`, default gateway.
fn report_mode(e: &mut Entry<'_>, raw: &Field<String>) -> Checked<Report> {
    let Some(v) = raw else {
        return Ok(Report::default());
    };
    Report::parse(v.get_ref()).ok_or_else(|| {
        e.report(
            v.span().start,
            "report",
            format!("unknown {:?} (expected gateway or manual)", v.get_ref()),
        )
    })
}

fn facility_kind(
    e: &mut Entry<'_>,
    kind: &Spanned<String>,
    raw: &RawFacility,
) -> Checked<FacilityKind> {
    const POWER: &str = "power_unit";
    const WATER: &str = "water_point";
    const WAREHOUSE: &str = "warehouse";
    let name = kind.get_ref().as_str();
    // Only a shelter takes people; every other known kind refuses its settings.
    let shelter_fields = if matches!(name, WAREHOUSE | WATER | POWER) {
        forbid_shelter_fields(e, raw, name)
    } else {
        Ok(())
    };
    match name {
        "warehouse" => {
            let checks = [
                e.forbid(&raw.capacity_l, "capacity_l", name, WATER),
                e.forbid(&raw.fuel_capacity_l, "fuel_capacity_l", name, POWER),
                e.forbid(&raw.burn_l_per_h, "burn_l_per_h", name, POWER),
                e.forbid(&raw.min_battery_pct, "min_battery_pct", name, POWER),
                shelter_fields,
            ];
            checks.into_iter().collect::<Checked<Vec<()>>>()?;
            Ok(FacilityKind::Warehouse)
        }
        "water_point" => {
            let checks = [
                e.forbid(&raw.fuel_capacity_l, "fuel_capacity_l", name, POWER),
                e.forbid(&raw.burn_l_per_h, "burn_l_per_h", name, POWER),
                e.forbid(&raw.min_battery_pct, "min_battery_pct", name, POWER),
                e.forbid(&raw.max, "max", name, WAREHOUSE),
                shelter_fields,
            ];
            let capacity_l = e.number(&raw.capacity_l, "capacity_l", Bounds::Positive);
            checks.into_iter().collect::<Checked<Vec<()>>>()?;
            Ok(FacilityKind::WaterPoint {
                capacity_l: capacity_l?,
            })
        }
        "power_unit" => {
            let forbidden = [
                e.forbid(&raw.capacity_l, "capacity_l", name, WATER),
                e.forbid(&raw.max, "max", name, WAREHOUSE),
                shelter_fields,
            ];
            let fuel_capacity_l =
                e.required_number(&raw.fuel_capacity_l, "fuel_capacity_l", Bounds::Positive);
            let burn_l_per_h =
                e.required_number(&raw.burn_l_per_h, "burn_l_per_h", Bounds::Positive);
            let min_battery_pct = e.number(
                &raw.min_battery_pct,
                "min_battery_pct",
                Bounds::Between(0.0, 100.0),
            );
            forbidden.into_iter().collect::<Checked<Vec<()>>>()?;
            Ok(FacilityKind::PowerUnit {
                fuel_capacity_l: fuel_capacity_l?,
                burn_l_per_h: burn_l_per_h?,
                min_battery_pct: min_battery_pct?.unwrap_or(DEFAULT_MIN_BATTERY_PCT),
            })
        }
        SHELTER => shelter_spec(e, raw).map(FacilityKind::Shelter),
        other => Err(e.report(
            kind.span().start,
            "kind",
            format!(
                "unknown kind {other:?} (expected warehouse, water_point, power_unit or shelter)"
            ),
        )),
    }
}

const SHELTER: &str = "shelter";

/// A shelter's settings on a facility of another kind.
fn forbid_shelter_fields(e: &mut Entry<'_>, raw: &RawFacility, kind: &str) -> Checked<()> {
    let checks = [
        e.forbid(&raw.capacity, "capacity", kind, SHELTER),
        e.forbid(&raw.dual_use, "dual_use", kind, SHELTER),
        e.forbid(&raw.convert_within, "convert_within", kind, SHELTER),
    ];
    checks.into_iter().collect::<Checked<Vec<()>>>().map(drop)
}

/// A shelter (docs/design.md#shelters): `capacity` people, required and > 0;
/// `dual_use` one of [`DualUse::ALL`] (default `other`); `convert_within` a duration
/// (default [`DEFAULT_CONVERT_WITHIN`]). The other kinds' settings are refused.
fn shelter_spec(e: &mut Entry<'_>, raw: &RawFacility) -> Checked<ShelterSpec> {
    let forbidden = [
        e.forbid(&raw.capacity_l, "capacity_l", SHELTER, "water_point"),
        e.forbid(
            &raw.fuel_capacity_l,
            "fuel_capacity_l",
            SHELTER,
            "power_unit",
        ),
        e.forbid(&raw.burn_l_per_h, "burn_l_per_h", SHELTER, "power_unit"),
        e.forbid(
            &raw.min_battery_pct,
            "min_battery_pct",
            SHELTER,
            "power_unit",
        ),
        e.forbid(&raw.max, "max", SHELTER, "warehouse"),
    ];
    let capacity =
        e.required(&raw.capacity, "capacity")
            .and_then(|v| match u64::try_from(*v.get_ref()) {
                Ok(people) if (1..=MAX_SHELTER_CAPACITY).contains(&people) => Ok(people),
                _ => Err(e.report(
                    v.span().start,
                    "capacity",
                    format!(
                        "must be between 1 and {MAX_SHELTER_CAPACITY} people, got {}",
                        v.get_ref()
                    ),
                )),
            });
    let dual_use = match &raw.dual_use {
        None => Ok(DualUse::default()),
        Some(v) => DualUse::parse(v.get_ref()).ok_or_else(|| {
            let known: Vec<&str> = DualUse::ALL.iter().map(|d| d.as_str()).collect();
            e.report(
                v.span().start,
                "dual_use",
                format!("unknown {:?} (expected {})", v.get_ref(), known.join(", ")),
            )
        }),
    };
    let convert_within = e.duration(&raw.convert_within, "convert_within");
    forbidden.into_iter().collect::<Checked<Vec<()>>>()?;
    Ok(ShelterSpec {
        capacity: capacity?,
        dual_use: dual_use?,
        convert_within: convert_within?.unwrap_or(DEFAULT_CONVERT_WITHIN),
    })
}

/// Most people one shelter entry may take: the city's largest stadium holds about
/// 60,000; a bigger figure is a typo (an extra zero), not a building.
const MAX_SHELTER_CAPACITY: u64 = 200_000;

/// A warehouse's `max = { water = 50000 }`: each key a category, each value finite and > 0
/// (in the category's unit). Every bad pair is reported.
fn warehouse_max(
    e: &mut Entry<'_>,
    max: &BTreeMap<String, Spanned<f64>>,
    categories: &Ids<CategoryIdx>,
) -> Checked<Vec<(CategoryIdx, f64)>> {
    let mut out = Vec::with_capacity(max.len());
    let mut result = Ok(());
    for (category, value) in max {
        let field = format!("max.{category}");
        let at = value.span().start;
        let checked = e
            .resolve(
                categories,
                &Spanned::new(value.span(), category.clone()),
                &field,
            )
            .and_then(|c| {
                Bounds::Positive
                    .check(*value.get_ref())
                    .map(|()| (c, *value.get_ref()))
                    .map_err(|message| e.report(at, &field, message))
            });
        match checked {
            Ok(pair) => out.push(pair),
            Err(reported) => result = Err(reported),
        }
    }
    result.map(|()| out)
}

/// A power unit is not ready below this battery charge unless its entry says otherwise.
const DEFAULT_MIN_BATTERY_PCT: f64 = 50.0;

fn check_warn_days(
    e: &mut Entry<'_>,
    field: &Field<f64>,
    days: f64,
    warn_days: f64,
) -> Checked<()> {
    if warn_days >= days {
        return Ok(());
    }
    let at = field.as_ref().map_or(e.at, |f| f.span().start);
    Err(e.report(
        at,
        "warn_days",
        format!("must be >= days ({days}), got {warn_days}"),
    ))
}

fn check_address(
    e: &mut Entry<'_>,
    field: &Field<String>,
    name: &str,
    valid: fn(&str) -> bool,
    complaint: &str,
) -> Checked<Option<String>> {
    match field {
        None => Ok(None),
        Some(v) if valid(v.get_ref()) => Ok(Some(v.get_ref().clone())),
        Some(v) => Err(e.report(
            v.span().start,
            name,
            format!("{:?} {complaint}", v.get_ref()),
        )),
    }
}

/// One `@` with text on both sides and no spaces: enough to catch a phone number or a
/// name typed into the wrong column; the mail server has the last word.
fn is_email(s: &str) -> bool {
    let mut parts = s.split('@');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(local), Some(domain), None) => {
            !local.is_empty() && !domain.is_empty() && !s.chars().any(char::is_whitespace)
        }
        _ => false,
    }
}

/// E.164: `+`, then 7 to 15 digits, the first not 0 (country codes never start with 0).
fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn is_http_url(s: &str) -> bool {
    ["http://", "https://"]
        .iter()
        .any(|scheme| s.strip_prefix(scheme).is_some_and(|rest| !rest.is_empty()))
}

/// Exactly one of `towns`, `clusters`, `districts`, `city = true`.
fn contact_scope(
    e: &mut Entry<'_>,
    raw: &RawContact,
    (towns, clusters, districts): (&Ids<TownIdx>, &Ids<ClusterIdx>, &Ids<DistrictIdx>),
) -> Checked<ContactScope> {
    let given: Vec<&str> = [
        ("towns", raw.towns.is_some()),
        ("clusters", raw.clusters.is_some()),
        ("districts", raw.districts.is_some()),
        ("city", raw.city.as_ref().is_some_and(|c| *c.get_ref())),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    match given.as_slice() {
        [] => Err(e.report_entry("has no scope: give towns, clusters, districts or city = true")),
        ["towns"] => resolve_list(e, towns, &raw.towns, "towns").map(ContactScope::Towns),
        ["clusters"] => {
            resolve_list(e, clusters, &raw.clusters, "clusters").map(ContactScope::Clusters)
        }
        ["districts"] => {
            resolve_list(e, districts, &raw.districts, "districts").map(ContactScope::Districts)
        }
        ["city"] => Ok(ContactScope::City),
        several => Err(e.report_entry(format!(
            "has more than one scope ({}); give exactly one",
            several.join(", ")
        ))),
    }
}

fn resolve_list<I: Copy>(
    e: &mut Entry<'_>,
    ids: &Ids<I>,
    list: &Field<Vec<Spanned<String>>>,
    field: &str,
) -> Checked<Vec<I>> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    if list.get_ref().is_empty() {
        return Err(e.report(list.span().start, field, "empty list"));
    }
    let resolved: Vec<Checked<I>> = list
        .get_ref()
        .iter()
        .map(|id| e.resolve(ids, id, field))
        .collect();
    resolved.into_iter().collect()
}

/// The channels a contact is reached on: as listed, each needing its address, or by
/// default every channel the contact has an address for.
fn contact_channels(e: &mut Entry<'_>, raw: &RawContact) -> Checked<Vec<Channel>> {
    let Some(list) = &raw.channels else {
        let available = [
            (Channel::Email, raw.email.is_some()),
            (Channel::Sms, raw.phone.is_some()),
            (Channel::Webhook, raw.webhook.is_some()),
        ];
        return Ok(available
            .into_iter()
            .filter_map(|(c, has)| has.then_some(c))
            .collect());
    };
    let mut channels = Vec::new();
    let mut result = Ok(());
    for name in list.get_ref() {
        let at = name.span().start;
        let (channel, address, present) = match name.get_ref().as_str() {
            "email" => (Channel::Email, "an email address", raw.email.is_some()),
            "sms" => (Channel::Sms, "a phone number", raw.phone.is_some()),
            "webhook" => (Channel::Webhook, "a webhook URL", raw.webhook.is_some()),
            other => {
                result = Err(e.report(
                    at,
                    "channels",
                    format!("unknown channel {other:?} (expected email, sms or webhook)"),
                ));
                continue;
            }
        };
        if !present {
            result = Err(e.report(
                at,
                "channels",
                format!("{} needs {address}", name.get_ref()),
            ));
        } else if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    result.map(|()| channels)
}

/// Overrides are checked one by one against the city target; a category override
/// and a town override can still combine into a warning level below the target.
pub(super) fn check_combined_targets(
    registry: &Registry,
    override_at: &[usize],
    problems: &mut Problems,
) {
    let mut reported = HashSet::new();
    for town in registry.town_indices() {
        for category in registry.category_indices() {
            let target = registry.target_for(town, category);
            if target.warn_days >= target.days {
                continue;
            }
            // Blame the most specific override that applies (the last one applied).
            let culprit = registry
                .target_overrides
                .iter()
                .enumerate()
                .filter(|(_, o)| {
                    o.town.is_none_or(|t| t == town) && o.category.is_none_or(|c| c == category)
                })
                .max_by_key(|(i, o)| (o.town.is_some() as u8 * 2 + o.category.is_some() as u8, *i))
                .map(|(i, _)| i);
            let Some(i) = culprit else { continue };
            if reported.insert(i) {
                let message = format!(
                    "target.override: for town {:?}, category {:?} the overrides combine to warn_days {} below days {}",
                    registry.town(town).id.as_str(),
                    registry.category(category).id.as_str(),
                    target.warn_days,
                    target.days,
                );
                problems.add(override_at[i], message);
            }
        }
    }
}
