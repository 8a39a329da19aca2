//! The registry: the ledger's skeleton of districts, clusters, towns, categories of
//! supply, facilities, contacts and targets (docs/design.md#registry).
//!
//! Everything here is already validated: the loader ([`load`]) turns TOML/CSV text into a
//! [`Registry`] or into errors that name file, line and field; a `Registry` value is
//! always internally consistent (every reference resolves, every number is in range).
//! Entities refer to each other by dense indices (`TownIdx`, …) so the ledger can keep its
//! live state in plain vectors.

mod activation;
mod community;
pub mod load;
mod scope;
mod warning_levels;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::id::{CategoryId, ClusterId, DistrictId, FacilityId, TownId};

pub use activation::{ActivationPlan, PlanFor, PlanStep};
pub use community::Community;
pub use load::{LoadError, LoadErrors, Source, load_registry};
pub use scope::{Scope, ScopeError};
pub use warning_levels::{PreActivate, WarningLevel, WarningPlan, WarningPlans};

macro_rules! index_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);

        impl $name {
            pub fn index(self) -> usize {
                self.0 as usize
            }
            pub fn from_index(i: usize) -> Self {
                Self(u32::try_from(i).expect("registry index fits in u32"))
            }
        }
    };
}

index_type!(
    /// Position of a town in [`Registry::towns`].
    TownIdx
);
index_type!(
    /// Position of a facility in [`Registry::facilities`].
    FacilityIdx
);
index_type!(
    /// Position of a category in [`Registry::categories`].
    CategoryIdx
);
index_type!(
    /// Position of a cluster in [`Registry::clusters`].
    ClusterIdx
);
index_type!(
    /// Position of a district in [`Registry::districts`].
    DistrictIdx
);

/// Default expected interval between two readings of a facility.
pub const DEFAULT_REPORT_EVERY: Duration = Duration::from_secs(60);
/// A facility is silent after this many missed reports, unless `stale_after` is set.
pub const STALE_AFTER_REPORTS: u32 = 3;
/// A facility counted by hand is silent after a day without a count, unless it or its
/// town's target sets `stale_after`: nobody counts a warehouse every three minutes.
pub const MANUAL_STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The coverage target: how many days of supply a town must hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// Below this many days a category is critical (the bureau's three days).
    pub days: f64,
    /// Below this many days a category is a warning.
    pub warn_days: f64,
    /// Days above a threshold a category must climb back before the level clears, so a
    /// town hovering on the line does not flap between states.
    pub hysteresis_days: f64,
    /// Silence threshold; `None` means `STALE_AFTER_REPORTS × report_every` per facility.
    pub stale_after: Option<Duration>,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            days: 3.0,
            warn_days: 3.5,
            hysteresis_days: 0.1,
            stale_after: None,
        }
    }
}

/// A partial target for a town, a category, or one category in one town.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetOverride {
    pub town: Option<TownIdx>,
    pub category: Option<CategoryIdx>,
    pub days: Option<f64>,
    pub warn_days: Option<f64>,
    pub hysteresis_days: Option<f64>,
    pub stale_after: Option<Duration>,
}

impl TargetOverride {
    fn apply_to(&self, t: &mut Target) {
        if let Some(v) = self.days {
            t.days = v;
        }
        if let Some(v) = self.warn_days {
            t.warn_days = v;
        }
        if let Some(v) = self.hysteresis_days {
            t.hysteresis_days = v;
        }
        if let Some(v) = self.stale_after {
            t.stale_after = Some(v);
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct District {
    pub id: DistrictId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub id: ClusterId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Town {
    pub id: TownId,
    pub name: String,
    pub district: DistrictIdx,
    pub cluster: ClusterIdx,
    /// Residents. Sheltered influx is live state in the ledger, not registry.
    pub population: u64,
    /// People in named groups (`infants`, `elderly`, `dialysis`, …), part of `population`.
    pub groups: BTreeMap<String, u64>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Filled by [`Registry::build`]: the town's facilities in registry order.
    pub facilities: Vec<FacilityIdx>,
}

/// Whom a category's daily need applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    /// Every person in the town (residents plus sheltered).
    All,
    /// A named group of [`Town::groups`]; a town without it needs none of the category.
    Named(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Category {
    pub id: CategoryId,
    /// The name when none is given in a reader's language (`names`).
    pub name: String,
    /// Names per language (`name_zh`, `name_en`): a Chinese message or board must not
    /// say "Blankets".
    pub names: CategoryNames,
    pub unit: String,
    /// Units per person of `group` per day. Always finite and > 0.
    pub daily_need: f64,
    pub group: Group,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FacilityKindName {
    Warehouse,
    WaterPoint,
    PowerUnit,
    Shelter,
}

impl FacilityKindName {
    pub fn as_str(self) -> &'static str {
        match self {
            FacilityKindName::Warehouse => "warehouse",
            FacilityKindName::WaterPoint => "water_point",
            FacilityKindName::PowerUnit => "power_unit",
            FacilityKindName::Shelter => "shelter",
        }
    }
}

impl std::fmt::Display for FacilityKindName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A facility's kind with the settings that only that kind has.
#[derive(Debug, Clone, PartialEq)]
pub enum FacilityKind {
    Warehouse,
    WaterPoint {
        /// Tank capacity, for display and plausibility; `None` when unknown.
        capacity_l: Option<f64>,
    },
    PowerUnit {
        fuel_capacity_l: f64,
        /// Rated burn at the unit's planned load; a reading may override it.
        burn_l_per_h: f64,
        min_battery_pct: f64,
    },
    /// A dual-use building (平急两用) that converts to an emergency shelter
    /// (docs/design.md#shelters).
    Shelter(ShelterSpec),
}

/// What the registry says of a shelter: how many people it takes, what it is on an
/// ordinary day, and how long it needs to convert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShelterSpec {
    /// People it can take; always > 0. Occupancy above it is `over_capacity`.
    pub capacity: u64,
    pub dual_use: DualUse,
    /// How long it may stay `activating` before `shelter_not_ready` fires.
    pub convert_within: Duration,
}

/// A shelter converts to this time when nothing is declared: half a day is what the
/// bureau's plans allow a school or gym to clear its hall.
pub const DEFAULT_CONVERT_WITHIN: Duration = Duration::from_secs(6 * 3600);

/// What a shelter is on an ordinary day.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum DualUse {
    School,
    Gym,
    Hotel,
    CommunityCentre,
    Warehouse,
    #[default]
    Other,
}

impl DualUse {
    pub const ALL: [DualUse; 6] = [
        DualUse::School,
        DualUse::Gym,
        DualUse::Hotel,
        DualUse::CommunityCentre,
        DualUse::Warehouse,
        DualUse::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DualUse::School => "school",
            DualUse::Gym => "gym",
            DualUse::Hotel => "hotel",
            DualUse::CommunityCentre => "community_centre",
            DualUse::Warehouse => "warehouse",
            DualUse::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<DualUse> {
        DualUse::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl FacilityKind {
    pub fn name(&self) -> FacilityKindName {
        match self {
            FacilityKind::Warehouse => FacilityKindName::Warehouse,
            FacilityKind::WaterPoint { .. } => FacilityKindName::WaterPoint,
            FacilityKind::PowerUnit { .. } => FacilityKindName::PowerUnit,
            FacilityKind::Shelter(_) => FacilityKindName::Shelter,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Facility {
    pub id: FacilityId,
    pub town: TownIdx,
    pub name: String,
    pub kind: FacilityKind,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub report_every: Duration,
    /// The facility's own `stale_after` when the registry gives one; else resolved by
    /// [`Registry::build`] from the town's target, else `report_every` × 3 (gateway) or
    /// [`MANUAL_STALE_AFTER`] (manual).
    pub stale_after: Duration,
    /// Whether a gateway reports it or officers count it by hand.
    pub report: Report,
}

/// How a facility's figures arrive (docs/design.md#entities): from a gateway over MQTT,
/// or counted by hand and posted to the API, with no gateway expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Report {
    #[default]
    Gateway,
    Manual,
}

impl Report {
    pub fn as_str(self) -> &'static str {
        match self {
            Report::Gateway => "gateway",
            Report::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Report> {
        [Report::Gateway, Report::Manual]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

impl Category {
    /// The category's name for a reader of `lang`: its name in that language when the
    /// registry gives one, else its `name`.
    pub fn name_in(&self, lang: Lang) -> &str {
        let named = match lang {
            Lang::Zh => self.names.zh.as_deref(),
            Lang::En => self.names.en.as_deref(),
        };
        named.unwrap_or(&self.name)
    }
}

/// A category's optional names per language; absent ones fall back to `name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategoryNames {
    pub zh: Option<String>,
    pub en: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    Zh,
    En,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
    Webhook,
}

/// What a contact is responsible for, which decides which alerts reach them: town
/// officers first, cluster and district contacts on escalation, city duty officers last.
#[derive(Debug, Clone, PartialEq)]
pub enum ContactScope {
    Towns(Vec<TownIdx>),
    Clusters(Vec<ClusterIdx>),
    Districts(Vec<DistrictIdx>),
    City,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub name: String,
    pub email: Option<String>,
    /// E.164, e.g. `+8613800000000`.
    pub phone: Option<String>,
    pub webhook: Option<String>,
    pub lang: Lang,
    pub scope: ContactScope,
    /// Channels to use; the loader defaults it to every channel the contact has an
    /// address for.
    pub channels: Vec<Channel>,
}

/// The validated registry. Build it with [`Registry::build`] (or load it with
/// [`load_registry`]); the fields are public for reading, the indices are private so
/// they cannot drift from the vectors.
#[derive(Debug, Clone)]
pub struct Registry {
    pub target: Target,
    pub target_overrides: Vec<TargetOverride>,
    pub categories: Vec<Category>,
    /// The category that water points' potable stored water counts toward (by default
    /// the category with id `water`, if any).
    pub water_category: Option<CategoryIdx>,
    pub districts: Vec<District>,
    pub clusters: Vec<Cluster>,
    pub towns: Vec<Town>,
    pub facilities: Vec<Facility>,
    pub contacts: Vec<Contact>,
    town_index: HashMap<TownId, TownIdx>,
    facility_index: HashMap<FacilityId, FacilityIdx>,
    category_index: HashMap<CategoryId, CategoryIdx>,
    cluster_index: HashMap<ClusterId, ClusterIdx>,
    district_index: HashMap<DistrictId, DistrictIdx>,
    /// Resolved target per (town, category): `towns.len() × categories.len()` entries.
    resolved_targets: Vec<Target>,
    /// Warehouses' declared maxima (`max = { water = 50000 }`): the most a warehouse can
    /// hold of a category, in the category's unit. Sparse (most warehouses declare none),
    /// and kept beside the facilities rather than in [`FacilityKind::Warehouse`] so that
    /// code matching on the kind does not change. Set with [`Registry::with_warehouse_max`].
    warehouse_max: BTreeMap<(FacilityIdx, CategoryIdx), f64>,
    /// Communities (村社) with their vulnerable people; set with
    /// [`Registry::with_communities`].
    communities: community::Communities,
    /// The activation table's plans (docs/design.md#activation-table); set with
    /// [`Registry::with_activation_plans`].
    activation_plans: activation::ActivationPlans,
    /// What each warning level changes (docs/design.md#warning-levels); set with
    /// [`Registry::with_warning_plans`].
    warning_plans: WarningPlans,
}

/// The parts a registry is built from; references must already resolve.
#[derive(Debug, Clone, Default)]
pub struct RegistryParts {
    pub target: Target,
    pub target_overrides: Vec<TargetOverride>,
    pub categories: Vec<Category>,
    pub water_category: Option<CategoryIdx>,
    pub districts: Vec<District>,
    pub clusters: Vec<Cluster>,
    pub towns: Vec<Town>,
    pub facilities: Vec<Facility>,
    pub contacts: Vec<Contact>,
}

impl Registry {
    /// Builds the indices and resolves targets. The caller (the loader, or a test)
    /// guarantees that every index in `parts` is in range.
    pub fn build(parts: RegistryParts) -> Registry {
        let RegistryParts {
            target,
            target_overrides,
            categories,
            water_category,
            districts,
            clusters,
            mut towns,
            mut facilities,
            contacts,
        } = parts;
        for town in &mut towns {
            town.facilities.clear();
        }
        for (i, f) in facilities.iter().enumerate() {
            towns[f.town.index()]
                .facilities
                .push(FacilityIdx::from_index(i));
        }
        // Precedence, weakest first: city default, category, town, town+category.
        let mut resolved_targets = Vec::with_capacity(towns.len() * categories.len());
        for t in 0..towns.len() {
            for c in 0..categories.len() {
                let mut target = target;
                let rank = |o: &TargetOverride| match (o.town, o.category) {
                    (None, Some(_)) => 1,
                    (Some(_), None) => 2,
                    (Some(_), Some(_)) => 3,
                    (None, None) => 0,
                };
                let mut matching: Vec<&TargetOverride> = target_overrides
                    .iter()
                    .filter(|o| {
                        o.town.is_none_or(|x| x.index() == t)
                            && o.category.is_none_or(|x| x.index() == c)
                    })
                    .collect();
                matching.sort_by_key(|o| rank(o));
                for o in matching {
                    o.apply_to(&mut target);
                }
                resolved_targets.push(target);
            }
        }
        // A facility's silence threshold is its own, else its town's target's (no
        // category), else the default of its kind of reporting.
        for f in facilities.iter_mut().filter(|f| f.stale_after.is_zero()) {
            let mut town_target = target;
            for o in target_overrides
                .iter()
                .filter(|o| o.category.is_none() && o.town.is_none_or(|x| x == f.town))
            {
                o.apply_to(&mut town_target);
            }
            let default = match f.report {
                Report::Gateway => f.report_every.saturating_mul(STALE_AFTER_REPORTS),
                Report::Manual => MANUAL_STALE_AFTER,
            };
            f.stale_after = town_target.stale_after.unwrap_or(default);
        }
        Registry {
            town_index: towns
                .iter()
                .enumerate()
                .map(|(i, t)| (t.id.clone(), TownIdx::from_index(i)))
                .collect(),
            facility_index: facilities
                .iter()
                .enumerate()
                .map(|(i, f)| (f.id.clone(), FacilityIdx::from_index(i)))
                .collect(),
            category_index: categories
                .iter()
                .enumerate()
                .map(|(i, c)| (c.id.clone(), CategoryIdx::from_index(i)))
                .collect(),
            cluster_index: clusters
                .iter()
                .enumerate()
                .map(|(i, c)| (c.id.clone(), ClusterIdx::from_index(i)))
                .collect(),
            district_index: districts
                .iter()
                .enumerate()
                .map(|(i, d)| (d.id.clone(), DistrictIdx::from_index(i)))
                .collect(),
            target,
            target_overrides,
            categories,
            water_category,
            districts,
            clusters,
            towns,
            facilities,
            contacts,
            resolved_targets,
            warehouse_max: BTreeMap::new(),
            communities: community::Communities::default(),
            activation_plans: activation::ActivationPlans::default(),
            warning_plans: WarningPlans::new(),
        }
    }

    /// The registry with these warehouse maxima (replacing any it had). The caller (the
    /// loader, a test) guarantees each facility is a warehouse and each maximum is finite
    /// and > 0.
    pub fn with_warehouse_max(
        mut self,
        maxima: impl IntoIterator<Item = ((FacilityIdx, CategoryIdx), f64)>,
    ) -> Registry {
        self.warehouse_max = maxima.into_iter().collect();
        self
    }

    /// The most warehouse `facility` can hold of `category`, if its entry says.
    pub fn warehouse_max(&self, facility: FacilityIdx, category: CategoryIdx) -> Option<f64> {
        if self.warehouse_max.is_empty() {
            return None;
        }
        self.warehouse_max.get(&(facility, category)).copied()
    }

    /// The maxima warehouse `facility` declares, by category.
    pub fn warehouse_max_of(
        &self,
        facility: FacilityIdx,
    ) -> impl Iterator<Item = (CategoryIdx, f64)> + '_ {
        let categories = (facility, CategoryIdx(0))..=(facility, CategoryIdx(u32::MAX));
        self.warehouse_max
            .range(categories)
            .map(|(&(_, category), &max)| (category, max))
    }

    /// Every declared warehouse maximum, by facility then category.
    pub fn warehouse_maxima(&self) -> impl Iterator<Item = ((FacilityIdx, CategoryIdx), f64)> + '_ {
        self.warehouse_max.iter().map(|(&key, &max)| (key, max))
    }

    pub fn town_idx(&self, id: &str) -> Option<TownIdx> {
        self.town_index.get(id).copied()
    }
    pub fn facility_idx(&self, id: &str) -> Option<FacilityIdx> {
        self.facility_index.get(id).copied()
    }
    pub fn category_idx(&self, id: &str) -> Option<CategoryIdx> {
        self.category_index.get(id).copied()
    }
    pub fn cluster_idx(&self, id: &str) -> Option<ClusterIdx> {
        self.cluster_index.get(id).copied()
    }
    pub fn district_idx(&self, id: &str) -> Option<DistrictIdx> {
        self.district_index.get(id).copied()
    }

    pub fn town(&self, t: TownIdx) -> &Town {
        &self.towns[t.index()]
    }
    pub fn facility(&self, f: FacilityIdx) -> &Facility {
        &self.facilities[f.index()]
    }
    pub fn category(&self, c: CategoryIdx) -> &Category {
        &self.categories[c.index()]
    }

    /// The target that applies to `category` in `town`, overrides resolved.
    pub fn target_for(&self, town: TownIdx, category: CategoryIdx) -> Target {
        self.resolved_targets[town.index() * self.categories.len() + category.index()]
    }

    /// The target of a town when no category is involved (power days, silence).
    pub fn town_target(&self, town: TownIdx) -> Target {
        let mut t = self.target;
        for o in self
            .target_overrides
            .iter()
            .filter(|o| o.category.is_none() && o.town == Some(town))
        {
            o.apply_to(&mut t);
        }
        t
    }

    pub fn category_indices(&self) -> impl Iterator<Item = CategoryIdx> + '_ {
        (0..self.categories.len()).map(CategoryIdx::from_index)
    }
    pub fn town_indices(&self) -> impl Iterator<Item = TownIdx> + '_ {
        (0..self.towns.len()).map(TownIdx::from_index)
    }

    /// Facilities of each kind, for summaries.
    pub fn count_facilities(&self, kind: FacilityKindName) -> usize {
        self.facilities
            .iter()
            .filter(|f| f.kind.name() == kind)
            .count()
    }
}
