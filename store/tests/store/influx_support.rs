//! Shared by the `influx_*` tests: a small registry, readings, a store with the InfluxDB
//! queue on, and a running sink.

#![allow(dead_code)] // each test module uses a different part

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use reserve::Ledger;
use reserve::reading::{
    Observation, PowerObservation, PowerState, PumpState, Reading, WaterObservation,
};
use reserve::registry::{
    Category, CategoryIdx, Cluster, ClusterIdx, District, DistrictIdx, Facility, FacilityIdx,
    FacilityKind, Group, Registry, RegistryParts, Target, Town, TownIdx,
};
use reserve::{CategoryId, ClusterId, DistrictId, FacilityId, TownId};
use store::influx::{ChangeSource, InfluxEndpoint, InfluxSinkConfig, OpsCounts, Sink};
use store::{Store, StoreOptions};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const WATER: CategoryIdx = CategoryIdx(0);
pub const FOOD: CategoryIdx = CategoryIdx(1);
pub const JINGSHAN: TownIdx = TownIdx(0);
pub const DONGHUA: TownIdx = TownIdx(1);
pub const JS_WH1: FacilityIdx = FacilityIdx(0);
pub const JS_WP1: FacilityIdx = FacilityIdx(1);
pub const JS_PU1: FacilityIdx = FacilityIdx(2);
pub const DH_WH1: FacilityIdx = FacilityIdx(3);
pub const JS_WH2: FacilityIdx = FacilityIdx(4);

/// A town name with everything a string field must survive: UTF-8, quotes, a
/// backslash, a comma, an equals sign.
pub const JINGSHAN_NAME: &str = "景山 \"东\" \\ 街道, a=b";

fn category(id: &str, daily_need: f64) -> Category {
    Category {
        id: CategoryId::parse(id).unwrap(),
        name: id.into(),
        names: Default::default(),
        unit: if id == "water" { "L" } else { "ration" }.into(),
        daily_need,
        group: Group::All,
    }
}

fn facility(id: &str, town: TownIdx, kind: FacilityKind) -> Facility {
    Facility {
        id: FacilityId::parse(id).unwrap(),
        town,
        name: id.into(),
        kind,
        lat: None,
        lon: None,
        report_every: Duration::from_secs(60),
        stale_after: Duration::ZERO,
        report: Default::default(),
    }
}

fn town(id: &str, name: &str, population: u64, lat: Option<f64>, lon: Option<f64>) -> Town {
    Town {
        id: TownId::parse(id).unwrap(),
        name: name.into(),
        district: DistrictIdx(0),
        cluster: ClusterIdx(0),
        population,
        groups: BTreeMap::new(),
        lat,
        lon,
        facilities: vec![],
    }
}

/// Jingshan (10,000 people: 30,000 L of water and 30,000 rations a day) with two
/// warehouses, a water point and a power unit; Donghua (5,000) with a warehouse.
pub fn registry() -> Arc<Registry> {
    Arc::new(Registry::build(RegistryParts {
        target: Target::default(),
        target_overrides: vec![],
        categories: vec![category("water", 3.0), category("food", 3.0)],
        water_category: Some(WATER),
        districts: vec![District {
            id: DistrictId::parse("dongcheng").unwrap(),
            name: "东城区".into(),
        }],
        clusters: vec![Cluster {
            id: ClusterId::parse("c01").unwrap(),
            name: "c01".into(),
        }],
        towns: vec![
            town("jingshan", JINGSHAN_NAME, 10_000, Some(39.93), Some(116.4)),
            town("donghua", "东华门街道", 5_000, None, None),
        ],
        facilities: vec![
            facility("js-wh1", JINGSHAN, FacilityKind::Warehouse),
            facility(
                "js-wp1",
                JINGSHAN,
                FacilityKind::WaterPoint {
                    capacity_l: Some(60_000.0),
                },
            ),
            facility(
                "js-pu1",
                JINGSHAN,
                FacilityKind::PowerUnit {
                    fuel_capacity_l: 500.0,
                    burn_l_per_h: 5.0,
                    min_battery_pct: 50.0,
                },
            ),
            facility("dh-wh1", DONGHUA, FacilityKind::Warehouse),
            facility("js-wh2", JINGSHAN, FacilityKind::Warehouse),
        ],
        contacts: vec![],
    }))
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 5, 0, 0).unwrap()
}

pub fn mins(m: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::minutes(m)
}

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn stock(
    facility: FacilityIdx,
    at: DateTime<Utc>,
    quantities: &[(CategoryIdx, f64)],
) -> Reading {
    Reading {
        facility,
        ts: at,
        seq: None,
        observation: Observation::Stock(quantities.to_vec()),
    }
}

pub fn water(at: DateTime<Utc>, level_l: f64, pump: PumpState, potable: bool) -> Reading {
    Reading {
        facility: JS_WP1,
        ts: at,
        seq: None,
        observation: Observation::Water(WaterObservation {
            level_l,
            pump,
            potable,
        }),
    }
}

pub fn power(
    at: DateTime<Utc>,
    fuel_l: f64,
    battery_pct: Option<f64>,
    state: PowerState,
    burn: Option<f64>,
) -> Reading {
    Reading {
        facility: JS_PU1,
        ts: at,
        seq: None,
        observation: Observation::Power(PowerObservation {
            fuel_l,
            battery_pct,
            state,
            burn_l_per_h: burn,
        }),
    }
}

/// A SQLite file in a temp dir, the registry, and the ledger fed the same readings.
pub struct Fixture {
    _dir: TempDir,
    pub path: PathBuf,
    pub registry: Arc<Registry>,
    pub ledger: Arc<RwLock<Ledger>>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stockpile.db");
        let registry = registry();
        Fixture {
            _dir: dir,
            path,
            ledger: Arc::new(RwLock::new(Ledger::new(Arc::clone(&registry)))),
            registry,
        }
    }

    /// The ingest writer's store: readings enqueue their lines.
    pub fn store(&self) -> Store {
        Store::open(
            &self.path,
            StoreOptions {
                influx_queue: true,
                ..StoreOptions::default()
            },
        )
        .unwrap()
    }

    /// Stores `readings` in one batch (received a second after their `ts`) and applies
    /// them to the ledger, as the ingest writer does; returns which were new.
    pub fn ingest(&self, store: &mut Store, readings: &[Reading]) -> Vec<bool> {
        let mut batch = store.batch().unwrap();
        let inserted = readings
            .iter()
            .map(|r| {
                batch
                    .insert_reading(&self.registry, r, r.ts + chrono::Duration::seconds(1))
                    .unwrap()
            })
            .collect();
        batch.commit().unwrap();
        let mut ledger = self.ledger.write().unwrap();
        for r in readings {
            ledger.apply(r, r.ts + chrono::Duration::seconds(1));
        }
        ledger.refresh_all(Utc::now());
        inserted
    }

    /// Every line waiting in the queue, oldest first.
    pub fn queued_lines(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open(&self.path).unwrap();
        let mut stmt = conn
            .prepare("SELECT line FROM influx_queue ORDER BY id")
            .unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}

/// A sink config for tests: flushes after 100 ms, derived series and ops once at start
/// (then hourly, i.e. not again within a test).
pub fn sink_config(endpoint: InfluxEndpoint) -> InfluxSinkConfig {
    let mut config = InfluxSinkConfig::new(endpoint, "test-host");
    config.flush_every = Duration::from_millis(100);
    config.derived_every = Duration::from_secs(3600);
    config.ops_every = Duration::from_secs(3600);
    config
}

pub fn ops_counts() -> OpsCounts {
    OpsCounts {
        received: 7,
        accepted: 6,
        rejected: 1,
        duplicates: 2,
        outbox_pending: 3,
        outbox_failed: 0,
        store_paused: 0,
    }
}

/// A sink running on the current runtime until dropped.
pub struct RunningSink {
    pub sink: Sink,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl RunningSink {
    pub fn start(
        fx: &Fixture,
        config: InfluxSinkConfig,
        changes: impl ChangeSource,
    ) -> RunningSink {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let sink = Sink::start(
            config,
            &fx.path,
            Arc::clone(&fx.ledger),
            changes,
            ops_counts,
            &tracker,
            shutdown.clone(),
        )
        .unwrap();
        tracker.close();
        RunningSink {
            sink,
            shutdown,
            tracker,
        }
    }

    /// Stops the sink and waits for its tasks.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.tracker.wait())
            .await
            .expect("the sink stops within its write timeout");
    }

    /// Waits until the queue is empty (as the writer last saw it), or panics after
    /// `timeout` with the sink's stats.
    pub async fn drained(&self, store: &Store, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let depth = store.influx_queue_depth().unwrap();
            if depth == 0 && self.sink.stats().queue_depth == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "queue not drained after {timeout:?}: {depth} lines left, {:?}",
                self.sink.stats()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RunningSink {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `check` (blocking calls allowed) until it returns `Some`, or panics with
/// `what` after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The rows of every series of an InfluxQL answer as column → value maps, with the
/// series' tags (from GROUP BY) merged in.
pub fn rows(answer: &serde_json::Value) -> Vec<BTreeMap<String, serde_json::Value>> {
    let mut out = Vec::new();
    for result in answer["results"].as_array().into_iter().flatten() {
        for series in result["series"].as_array().into_iter().flatten() {
            let columns: Vec<String> = series["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
            for values in series["values"].as_array().into_iter().flatten() {
                let mut row: BTreeMap<String, serde_json::Value> = columns
                    .iter()
                    .cloned()
                    .zip(values.as_array().unwrap().iter().cloned())
                    .collect();
                if let Some(tags) = series["tags"].as_object() {
                    for (k, v) in tags {
                        row.insert(k.clone(), v.clone());
                    }
                }
                out.push(row);
            }
        }
    }
    out
}
