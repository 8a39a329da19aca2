//! A town's stock history for the API (`GET towns/{id}/history?category=&from=&to=`):
//! from InfluxDB through InfluxQL when it is configured, else from SQLite's readings —
//! the same answer either way.
//!
//! Both backends read the same raw facts, the readings: SQLite's `readings` table, or
//! InfluxDB's `stock` and `water_point` series, which hold one point per stored reading
//! at the reading's own timestamp. Both turn them into the same events, and one replay
//! computes the answer, so the two cannot drift apart. (The `coverage` series is not
//! used: it samples the ledger on our clock, at times no SQLite row records.)
//!
//! The replay follows the ledger's rules: a town's stock of a category is the sum over
//! its warehouses of their last reported quantity (a reading that leaves a category out
//! keeps the last one), plus the potable level of its water points for the water
//! category. Stock held when the range starts comes from readings within
//! [`HISTORY_LOOKBACK`] before it; a facility silent for longer counts from its first
//! reading in the range. A point is given at each reading time in the range (and one at
//! `from` for the stock carried in), or, with a `step`, the last point of each step.
//!
//! `days` divides stock by the need per day of the registry's residents (population ×
//! daily need, groups as configured) as the registry stands at read time; sheltered
//! influx is live state that history does not record.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reserve::coverage::{days_of_supply, people_in_group};
use reserve::registry::{CategoryIdx, FacilityIdx, FacilityKind, Registry, TownIdx};
use reserve::{CategoryId, TownId};
use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::client::{InfluxClient, InfluxError};
use super::config::InfluxEndpoint;
use crate::sqlite::{Columns, FromRow, Limit, RowError, for_each_row};
use crate::{AsyncStore, Store, StoreError};

/// How far before `from` readings are looked at for the stock carried into the range.
/// Facilities report every minute by default and are silent after three missed
/// reports; six hours covers intervals of up to two hours.
pub const HISTORY_LOOKBACK: Duration = Duration::from_secs(6 * 3600);
/// Most readings one answer is computed from: a bound on the memory and time of one
/// request. A longer range asks for a narrower one.
pub const MAX_HISTORY_READINGS: usize = 1_000_000;

/// What the API asks.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    pub town: TownIdx,
    /// One category, or every category of the registry.
    pub category: Option<CategoryIdx>,
    /// Inclusive.
    pub from: DateTime<Utc>,
    /// Exclusive.
    pub to: DateTime<Utc>,
    /// Thin the points to the last of each `step` (aligned to `from`).
    pub step: Option<Duration>,
}

/// The answer, serialized as the API's response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub town: TownId,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub categories: Vec<CategoryHistory>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryHistory {
    pub category: CategoryId,
    pub unit: String,
    /// Units the town's residents need per day: the divisor of `days`.
    pub need_per_day: f64,
    pub target_days: f64,
    /// Oldest first.
    pub points: Vec<HistoryPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    pub ts: DateTime<Utc>,
    pub stock: f64,
    /// `None` when nobody in the town needs the category.
    pub days: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("the range is empty: from {from} is not before to {to}")]
    EmptyRange {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    #[error("the range holds more than {MAX_HISTORY_READINGS} readings; ask for a shorter one")]
    TooManyReadings,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Influx(#[from] InfluxError),
}

/// Where history comes from: chosen once at start from the configuration.
#[derive(Debug)]
pub enum HistorySource {
    /// The readings in the embedded store (a connection of the API's own: reads).
    Sqlite(AsyncStore),
    Influx(InfluxHistory),
}

impl HistorySource {
    pub async fn history(
        &self,
        registry: &Arc<Registry>,
        query: &HistoryQuery,
    ) -> Result<History, HistoryError> {
        match self {
            HistorySource::Sqlite(store) => {
                let (registry, query) = (Arc::clone(registry), query.clone());
                store
                    .call(move |store| sqlite_history(store, &registry, &query))
                    .await
            }
            HistorySource::Influx(influx) => influx.history(registry, query).await,
        }
    }
}

/// History from the readings in SQLite.
pub fn sqlite_history(
    store: &Store,
    registry: &Registry,
    query: &HistoryQuery,
) -> Result<History, HistoryError> {
    let plan = Plan::new(registry, query)?;
    let facilities: Vec<&str> = plan
        .facilities
        .iter()
        .map(|&f| registry.facility(f).id.as_str())
        .collect();
    let facilities = serde_json::to_string(&facilities).map_err(|cause| StoreError::Encode {
        path: store.path().to_owned(),
        what: "facility list",
        cause,
    })?;
    let mut events = Vec::new();
    let mut readings = 0;
    for_each_row(
        store.conn(),
        store.path(),
        "SELECT ts, facility, body FROM readings
         WHERE ts >= ?1 AND ts < ?2 AND facility IN (SELECT value FROM json_each(?3))
         ORDER BY ts LIMIT ?4",
        params![
            plan.read_from_ms,
            plan.to_ms,
            facilities,
            Limit(MAX_HISTORY_READINGS + 1)
        ],
        "load history",
        |HistoryRow {
             ts_ms,
             facility,
             body,
         }| {
            readings += 1;
            if readings > MAX_HISTORY_READINGS {
                return Err(HistoryError::TooManyReadings);
            }
            let Some(f) = registry.facility_idx(&facility) else {
                return Ok(());
            };
            if let Some(stock) = body.get("stock").and_then(|s| s.as_object()) {
                for (category, quantity) in stock {
                    if let (Some(category), Some(quantity)) =
                        (registry.category_idx(category), quantity.as_f64())
                    {
                        events.push(Event::stock(ts_ms, f, category, quantity));
                    }
                }
            } else if let Some(water) = body.get("water") {
                let level_l = water["level_l"].as_f64();
                let potable = water["potable"].as_bool();
                let (Some(level_l), Some(potable)) = (level_l, potable) else {
                    return Err(StoreError::CorruptRow {
                        path: store.path().to_owned(),
                        table: HistoryRow::TABLE,
                        key: format!("({facility}, {ts_ms})"),
                        problem: "water body lacks level_l or potable".into(),
                    }
                    .into());
                };
                events.push(Event::water(ts_ms, f, level_l, potable));
            }
            Ok(())
        },
    )?;
    Ok(plan.replay(registry, events))
}

/// A reading as history replays it.
struct HistoryRow {
    ts_ms: i64,
    facility: String,
    body: serde_json::Value,
}

impl FromRow for HistoryRow {
    const TABLE: &'static str = "readings";
    const KEY: &'static [&'static str] = &["facility", "ts"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(HistoryRow {
            ts_ms: row.get("ts")?,
            facility: row.get("facility")?,
            body: row.json("body")?,
        })
    }
}

/// History from InfluxDB's `stock` and `water_point` series through InfluxQL.
#[derive(Debug)]
pub struct InfluxHistory {
    client: InfluxClient,
}

impl InfluxHistory {
    pub fn new(endpoint: &InfluxEndpoint) -> Result<InfluxHistory, InfluxError> {
        Ok(InfluxHistory {
            client: InfluxClient::new(endpoint)?,
        })
    }

    pub async fn history(
        &self,
        registry: &Registry,
        query: &HistoryQuery,
    ) -> Result<History, HistoryError> {
        let plan = Plan::new(registry, query)?;
        let town = quote(registry.town(query.town).id.as_str());
        let range = format!(
            "time >= {}ms AND time < {}ms",
            plan.read_from_ms, plan.to_ms
        );
        let category = match query.category {
            Some(c) => format!(
                " AND \"category\" = {}",
                quote(registry.category(c).id.as_str())
            ),
            None => String::new(),
        };
        let mut statements = vec![format!(
            "SELECT \"quantity\" FROM \"stock\" WHERE \"town\" = {town}{category} AND {range} \
             GROUP BY \"facility\", \"category\""
        )];
        if plan.wants_water {
            statements.push(format!(
                "SELECT \"level_l\", \"potable\" FROM \"water_point\" WHERE \"town\" = {town} \
                 AND {range} GROUP BY \"facility\""
            ));
        }
        let answer = self.client.query(&statements.join("; ")).await?;
        let bad = |problem: String| InfluxError::BadAnswer {
            url: self.client.url().to_owned(),
            problem,
        };
        let mut events = Vec::new();
        for result in answer["results"].as_array().into_iter().flatten() {
            if result.get("partial").and_then(|p| p.as_bool()) == Some(true) {
                return Err(HistoryError::TooManyReadings);
            }
            for series in result["series"].as_array().into_iter().flatten() {
                let name = series["name"].as_str().unwrap_or_default();
                let tag = |key: &str| series["tags"][key].as_str().unwrap_or_default();
                let Some(facility) = registry.facility_idx(tag("facility")) else {
                    continue;
                };
                let columns: Vec<&str> = series["columns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c.as_str().unwrap_or_default())
                    .collect();
                let column = |name: &str| {
                    columns
                        .iter()
                        .position(|c| *c == name)
                        .ok_or_else(|| bad(format!("no column {name:?} in {columns:?}")))
                };
                let time = column("time")?;
                let values = series["values"].as_array().into_iter().flatten();
                match name {
                    "stock" => {
                        let Some(category) = registry.category_idx(tag("category")) else {
                            continue;
                        };
                        let quantity = column("quantity")?;
                        for row in values {
                            if let (Some(ts_ms), Some(q)) =
                                (row[time].as_i64(), row[quantity].as_f64())
                            {
                                events.push(Event::stock(ts_ms, facility, category, q));
                            }
                        }
                    }
                    "water_point" => {
                        let (level, potable) = (column("level_l")?, column("potable")?);
                        for row in values {
                            if let (Some(ts_ms), Some(l), Some(p)) = (
                                row[time].as_i64(),
                                row[level].as_f64(),
                                row[potable].as_i64(),
                            ) {
                                events.push(Event::water(ts_ms, facility, l, p != 0));
                            }
                        }
                    }
                    other => return Err(bad(format!("unexpected series {other:?}")).into()),
                }
                if events.len() > MAX_HISTORY_READINGS {
                    return Err(HistoryError::TooManyReadings);
                }
            }
        }
        Ok(plan.replay(registry, events))
    }
}

/// An InfluxQL string literal.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// One fact from a reading, as both backends see it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Event {
    ts_ms: i64,
    facility: FacilityIdx,
    /// The stock category, or `None` for a water point's level.
    category: Option<CategoryIdx>,
    /// Quantity, or the water point's potable level (0 when not potable: only potable
    /// stored water is drinking water).
    quantity: f64,
}

impl Event {
    fn stock(ts_ms: i64, facility: FacilityIdx, category: CategoryIdx, quantity: f64) -> Event {
        Event {
            ts_ms,
            facility,
            category: Some(category),
            quantity,
        }
    }

    fn water(ts_ms: i64, facility: FacilityIdx, level_l: f64, potable: bool) -> Event {
        Event {
            ts_ms,
            facility,
            category: None,
            quantity: if potable { level_l } else { 0.0 },
        }
    }
}

/// What a query needs, worked out once for either backend.
struct Plan<'q> {
    query: &'q HistoryQuery,
    categories: Vec<CategoryIdx>,
    /// The town's facilities that report stock or water.
    facilities: BTreeSet<FacilityIdx>,
    wants_water: bool,
    read_from_ms: i64,
    from_ms: i64,
    to_ms: i64,
}

impl<'q> Plan<'q> {
    fn new(registry: &Registry, query: &'q HistoryQuery) -> Result<Plan<'q>, HistoryError> {
        if query.from >= query.to {
            return Err(HistoryError::EmptyRange {
                from: query.from,
                to: query.to,
            });
        }
        let categories: Vec<CategoryIdx> = match query.category {
            Some(c) => vec![c],
            None => registry.category_indices().collect(),
        };
        let water = registry.water_category.filter(|w| categories.contains(w));
        let facilities: BTreeSet<FacilityIdx> = registry
            .town(query.town)
            .facilities
            .iter()
            .copied()
            .filter(|&f| match registry.facility(f).kind {
                FacilityKind::Warehouse => true,
                FacilityKind::WaterPoint { .. } => water.is_some(),
                FacilityKind::PowerUnit { .. } | FacilityKind::Shelter(_) => false,
            })
            .collect();
        let lookback = i64::try_from(HISTORY_LOOKBACK.as_millis()).unwrap_or(i64::MAX);
        let from_ms = query.from.timestamp_millis();
        Ok(Plan {
            query,
            categories,
            wants_water: water.is_some()
                && facilities
                    .iter()
                    .any(|&f| matches!(registry.facility(f).kind, FacilityKind::WaterPoint { .. })),
            facilities,
            read_from_ms: from_ms.saturating_sub(lookback),
            from_ms,
            to_ms: query.to.timestamp_millis(),
        })
    }

    /// Replays `events` (in any order) into the answer.
    fn replay(&self, registry: &Registry, mut events: Vec<Event>) -> History {
        let water = registry.water_category;
        // Each event's category: a water point's level counts toward the water one.
        events.retain(|e| {
            self.facilities.contains(&e.facility)
                && (e.category.or(water)).is_some_and(|c| self.categories.contains(&c))
                && e.ts_ms >= self.read_from_ms
                && e.ts_ms < self.to_ms
        });
        events.sort_by(|a, b| {
            (a.ts_ms, a.facility, a.category)
                .cmp(&(b.ts_ms, b.facility, b.category))
                .then(a.quantity.total_cmp(&b.quantity))
        });

        // Each facility's current contribution per category, ordered so that sums
        // add in the same order whatever the backend.
        let mut held: BTreeMap<(CategoryIdx, FacilityIdx), f64> = BTreeMap::new();
        let mut points: BTreeMap<CategoryIdx, Vec<(i64, f64)>> =
            self.categories.iter().map(|&c| (c, Vec::new())).collect();
        let total = |held: &BTreeMap<(CategoryIdx, FacilityIdx), f64>, c: CategoryIdx| {
            held.range((c, FacilityIdx(0))..=(c, FacilityIdx(u32::MAX)))
                .map(|(_, q)| q)
                .sum::<f64>()
        };
        let mut carried_in = false;
        let mut i = 0;
        while i < events.len() {
            let ts = events[i].ts_ms;
            if ts >= self.from_ms && !carried_in {
                carried_in = true;
                self.carry_in(&held, &mut points, total);
            }
            let mut touched = BTreeSet::new();
            while i < events.len() && events[i].ts_ms == ts {
                let e = events[i];
                if let Some(c) = e.category.or(water) {
                    held.insert((c, e.facility), e.quantity);
                    touched.insert(c);
                }
                i += 1;
            }
            if ts >= self.from_ms {
                for c in touched {
                    let stock = total(&held, c);
                    if let Some(p) = points.get_mut(&c) {
                        p.push((ts, stock));
                    }
                }
            }
        }
        if !carried_in {
            self.carry_in(&held, &mut points, total);
        }

        let town = registry.town(self.query.town);
        let categories = points
            .into_iter()
            .map(|(c, points)| {
                let category = registry.category(c);
                let need_per_day =
                    people_in_group(&category.group, town.population, &town.groups, 0)
                        * category.daily_need;
                CategoryHistory {
                    category: category.id.clone(),
                    unit: category.unit.clone(),
                    need_per_day,
                    target_days: registry.target_for(self.query.town, c).days,
                    points: self
                        .thin(points)
                        .into_iter()
                        .filter_map(|(ts_ms, stock)| {
                            Some(HistoryPoint {
                                ts: DateTime::from_timestamp_millis(ts_ms)?,
                                stock,
                                days: days_of_supply(stock, need_per_day),
                            })
                        })
                        .collect(),
                }
            })
            .collect();
        History {
            town: town.id.clone(),
            from: self.query.from,
            to: self.query.to,
            categories,
        }
    }

    /// A point at `from` for each category some facility held stock of before it.
    fn carry_in(
        &self,
        held: &BTreeMap<(CategoryIdx, FacilityIdx), f64>,
        points: &mut BTreeMap<CategoryIdx, Vec<(i64, f64)>>,
        total: impl Fn(&BTreeMap<(CategoryIdx, FacilityIdx), f64>, CategoryIdx) -> f64,
    ) {
        let carried: BTreeSet<CategoryIdx> = held.keys().map(|&(c, _)| c).collect();
        for c in carried {
            if let Some(p) = points.get_mut(&c) {
                p.push((self.from_ms, total(held, c)));
            }
        }
    }

    /// One point per time (a reading at `from` replaces the carried-in point), and with
    /// a step, the last point of each step.
    fn thin(&self, points: Vec<(i64, f64)>) -> Vec<(i64, f64)> {
        let step_ms = self
            .query
            .step
            .filter(|s| !s.is_zero())
            // At least 1 ms: a step under a millisecond must not divide by zero.
            .map(|s| i64::try_from(s.as_millis()).unwrap_or(i64::MAX).max(1));
        let bucket = |ts: i64| match step_ms {
            Some(step) => (ts - self.from_ms) / step,
            None => ts,
        };
        let mut thinned: Vec<(i64, f64)> = Vec::with_capacity(points.len());
        for (ts, stock) in points {
            match thinned.last_mut() {
                Some(last) if bucket(last.0) == bucket(ts) => *last = (ts, stock),
                _ => thinned.push((ts, stock)),
            }
        }
        thinned
    }
}
