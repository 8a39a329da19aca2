//! The registry as written: every field optional and spanned, so the checker can say
//! which line lacks what. TOML entries deserialise into these; CSV rows are converted
//! into them (see [`super::csv`]) with every span pointing at the row.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(super) type Field<T> = Option<Spanned<T>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub days: Field<f64>,
    pub warn_days: Field<f64>,
    pub hysteresis: Field<f64>,
    pub stale_after: Field<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverride {
    pub town: Field<String>,
    pub category: Field<String>,
    pub days: Field<f64>,
    pub warn_days: Field<f64>,
    pub hysteresis: Field<f64>,
    pub stale_after: Field<String>,
}

/// `[csv]`: the big tables kept in spreadsheets, paths relative to the registry file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCsv {
    pub towns: Field<String>,
    pub facilities: Field<String>,
    pub contacts: Field<String>,
    pub communities: Field<String>,
}

/// A district or a cluster: both are an id and a display name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawArea {
    pub id: Field<String>,
    pub name: Field<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCategory {
    pub id: Field<String>,
    pub name: Field<String>,
    pub name_zh: Field<String>,
    pub name_en: Field<String>,
    pub unit: Field<String>,
    pub daily_need: Field<f64>,
    pub group: Field<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTown {
    pub id: Field<String>,
    pub name: Field<String>,
    pub district: Field<String>,
    pub cluster: Field<String>,
    pub population: Field<i64>,
    pub lat: Field<f64>,
    pub lon: Field<f64>,
    pub groups: Field<BTreeMap<String, Spanned<i64>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFacility {
    pub id: Field<String>,
    pub town: Field<String>,
    pub kind: Field<String>,
    pub name: Field<String>,
    pub lat: Field<f64>,
    pub lon: Field<f64>,
    pub report_every: Field<String>,
    /// `gateway` (default) or `manual`.
    pub report: Field<String>,
    /// This facility's silence threshold, over its town's target and the default.
    pub stale_after: Field<String>,
    pub capacity_l: Field<f64>,
    pub fuel_capacity_l: Field<f64>,
    pub burn_l_per_h: Field<f64>,
    pub min_battery_pct: Field<f64>,
    /// A warehouse's most per category: `max = { water = 50000, food = 20000 }`.
    pub max: Field<BTreeMap<String, Spanned<f64>>>,
    /// A shelter's people (docs/design.md#shelters).
    pub capacity: Field<i64>,
    /// A shelter's everyday use: school, gym, hotel, community_centre, warehouse, other.
    pub dual_use: Field<String>,
    /// How long a shelter needs to convert, e.g. `"6h"`.
    pub convert_within: Field<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContact {
    pub name: Field<String>,
    pub email: Field<String>,
    pub phone: Field<String>,
    pub webhook: Field<String>,
    pub lang: Field<String>,
    pub towns: Field<Vec<Spanned<String>>>,
    pub clusters: Field<Vec<Spanned<String>>>,
    pub districts: Field<Vec<Spanned<String>>>,
    pub city: Field<bool>,
    pub channels: Field<Vec<Spanned<String>>>,
}
