//! The embedded store against real SQLite files in temporary directories, used the way
//! the ingest writer uses it: batches of readings, snapshots and rejects, then restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use reserve::ledger::Ledger;
use reserve::reading::{
    Observation, PowerObservation, PowerState, PumpState, Reading, WaterObservation,
};
use reserve::registry::{
    Category, CategoryIdx, Cluster, ClusterIdx, District, DistrictIdx, Facility, FacilityIdx,
    FacilityKind, Group, Registry, RegistryParts, Target, Town, TownIdx,
};
use reserve::{CategoryId, ClusterId, DistrictId, FacilityId, TownId};
use serde_json::json;
use store::{MAX_REJECT_PAYLOAD, RejectRecord, Store, StoreError, StoreOptions};
use tempfile::TempDir;

const WATER: CategoryIdx = CategoryIdx(0);
const FOOD: CategoryIdx = CategoryIdx(1);
const WH1: FacilityIdx = FacilityIdx(0);
const WP1: FacilityIdx = FacilityIdx(1);
const PU1: FacilityIdx = FacilityIdx(2);
const DH_WH1: FacilityIdx = FacilityIdx(3);

fn category(id: &str, daily_need: f64) -> Category {
    Category {
        id: CategoryId::parse(id).unwrap(),
        name: id.into(),
        names: Default::default(),
        unit: "u".into(),
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
        stale_after: Duration::ZERO, // resolved by Registry::build
        report: Default::default(),
    }
}

/// Jingshan with a warehouse, a water point and a power unit; Donghua with a warehouse.
fn registry() -> Arc<Registry> {
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
        towns: ["jingshan", "donghua"]
            .iter()
            .map(|id| Town {
                id: TownId::parse(id).unwrap(),
                name: id.to_string(),
                district: DistrictIdx(0),
                cluster: ClusterIdx(0),
                population: 10_000,
                groups: BTreeMap::new(),
                lat: None,
                lon: None,
                facilities: vec![],
            })
            .collect(),
        facilities: vec![
            facility("js-wh1", TownIdx(0), FacilityKind::Warehouse),
            facility(
                "js-wp1",
                TownIdx(0),
                FacilityKind::WaterPoint { capacity_l: None },
            ),
            facility(
                "js-pu1",
                TownIdx(0),
                FacilityKind::PowerUnit {
                    fuel_capacity_l: 500.0,
                    burn_l_per_h: 5.0,
                    min_battery_pct: 50.0,
                },
            ),
            facility("dh-wh1", TownIdx(1), FacilityKind::Warehouse),
        ],
        contacts: vec![],
    }))
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 5, 0, 0).unwrap()
}

fn mins(m: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::minutes(m)
}

fn stock(facility: FacilityIdx, at: DateTime<Utc>, quantities: &[(CategoryIdx, f64)]) -> Reading {
    Reading {
        facility,
        ts: at,
        seq: None,
        observation: Observation::Stock(quantities.to_vec()),
    }
}

fn water(at: DateTime<Utc>, level_l: f64) -> Reading {
    Reading {
        facility: WP1,
        ts: at,
        seq: Some(7),
        observation: Observation::Water(WaterObservation {
            level_l,
            pump: PumpState::Ok,
            potable: true,
        }),
    }
}

fn power(at: DateTime<Utc>, battery_pct: Option<f64>, burn: Option<f64>) -> Reading {
    Reading {
        facility: PU1,
        ts: at,
        seq: Some(u64::MAX),
        observation: Observation::Power(PowerObservation {
            fuel_l: 380.0,
            battery_pct,
            state: PowerState::Standby,
            burn_l_per_h: burn,
        }),
    }
}

fn id(s: &str) -> FacilityId {
    FacilityId::parse(s).unwrap()
}

struct Fixture {
    // Held so the directory outlives the test's stores.
    _dir: TempDir,
    path: PathBuf,
    registry: Arc<Registry>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stockpile.db");
        Fixture {
            _dir: dir,
            path,
            registry: registry(),
        }
    }

    fn open(&self) -> Store {
        self.open_with(StoreOptions::default())
    }

    fn open_with(&self, options: StoreOptions) -> Store {
        Store::open(&self.path, options).unwrap()
    }

    /// Inserts `readings` received a second after their `ts`, in one committed batch;
    /// returns which were new.
    fn insert(&self, store: &mut Store, readings: &[Reading]) -> Vec<bool> {
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
        inserted
    }
}

fn all_readings(store: &Store, facility: &str) -> Vec<store::StoredReading> {
    let from = DateTime::from_timestamp_millis(0).unwrap();
    let to = Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap();
    store.readings(&id(facility), from, to, usize::MAX).unwrap()
}

fn reject(at: DateTime<Utc>, topic: &str, reason: &str) -> RejectRecord {
    RejectRecord::new(at, topic, reason, "no such town", b"{\"ts\":1}")
}

#[test]
fn readings_read_back_with_their_body() {
    let cases: Vec<(Reading, &str, serde_json::Value)> = vec![
        (
            stock(WH1, mins(0), &[(WATER, 12_000.0), (FOOD, 5_400.5)]),
            "js-wh1",
            json!({"stock": {"water": 12000.0, "food": 5400.5}}),
        ),
        (
            water(mins(1), 52_000.0),
            "js-wp1",
            json!({"water": {"level_l": 52000.0, "pump": "ok", "potable": true}}),
        ),
        (
            power(mins(2), Some(96.0), None),
            "js-pu1",
            json!({"power": {"fuel_l": 380.0, "battery_pct": 96.0, "state": "standby"}}),
        ),
        (
            power(mins(3), None, Some(4.5)),
            "js-pu1",
            json!({"power": {"fuel_l": 380.0, "state": "standby", "burn_l_per_h": 4.5}}),
        ),
    ];
    let fx = Fixture::new();
    let mut store = fx.open();
    for (reading, facility, body) in &cases {
        assert_eq!(fx.insert(&mut store, std::slice::from_ref(reading)), [true]);
        let stored = all_readings(&store, facility)
            .into_iter()
            .find(|s| s.ts == reading.ts)
            .unwrap_or_else(|| panic!("{facility} at {} not stored", reading.ts));
        assert_eq!(stored.facility.as_str(), *facility);
        assert_eq!(&stored.body, body, "{facility}");
        assert_eq!(stored.seq, reading.seq, "{facility}");
        assert_eq!(
            stored.received_at,
            reading.ts + chrono::Duration::seconds(1)
        );
    }
    assert_eq!(store.count_readings().unwrap(), 4);
}

#[test]
fn readings_come_back_by_time_range_oldest_first_and_limited() {
    let fx = Fixture::new();
    let mut store = fx.open();
    let readings: Vec<Reading> = (0..10)
        .rev()
        .map(|m| stock(WH1, mins(m), &[(FOOD, 100.0 - m as f64)]))
        .collect();
    fx.insert(&mut store, &readings);
    fx.insert(&mut store, &[stock(DH_WH1, mins(5), &[(FOOD, 1.0)])]);
    let times = |from, to, limit| -> Vec<DateTime<Utc>> {
        store
            .readings(&id("js-wh1"), from, to, limit)
            .unwrap()
            .into_iter()
            .map(|r| r.ts)
            .collect()
    };
    // `from` is included, `to` is not.
    assert_eq!(times(mins(3), mins(6), 100), [mins(3), mins(4), mins(5)]);
    assert_eq!(times(mins(3), mins(6), 2), [mins(3), mins(4)]);
    assert!(times(mins(20), mins(30), 100).is_empty());
}

#[test]
fn same_facility_and_ts_is_a_duplicate_stored_once() {
    let fx = Fixture::new();
    let mut store = fx.open();
    let first = stock(WH1, mins(0), &[(WATER, 12_000.0)]);
    // A gateway resending the same instant with another figure: the first one stands.
    let resent = stock(WH1, mins(0), &[(WATER, 1.0)]);
    let other_facility = stock(DH_WH1, mins(0), &[(WATER, 500.0)]);
    let later = stock(WH1, mins(1), &[(WATER, 11_900.0)]);

    assert_eq!(
        fx.insert(&mut store, &[first.clone(), first.clone(), other_facility]),
        [true, false, true],
        "a duplicate within one batch"
    );
    assert_eq!(
        fx.insert(&mut store, &[resent, later, first]),
        [false, true, false],
        "duplicates of an earlier batch"
    );
    assert_eq!(store.count_readings().unwrap(), 3);
    let bodies: Vec<_> = all_readings(&store, "js-wh1")
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert_eq!(
        bodies,
        [
            json!({"stock": {"water": 12000.0}}),
            json!({"stock": {"water": 11900.0}})
        ]
    );
}

#[test]
fn snapshots_round_trip_upsert_and_rebuild_the_ledger() {
    let fx = Fixture::new();
    let mut ledger = Ledger::new(Arc::clone(&fx.registry));
    let mut store = fx.open();
    // Two batches as ingest writes them: readings, then the changed facilities' state.
    let batches = [
        vec![
            stock(WH1, mins(0), &[(WATER, 12_000.0), (FOOD, 9_000.0)]),
            water(mins(0), 50_000.0),
        ],
        vec![
            stock(WH1, mins(60), &[(WATER, 11_000.0)]),
            power(mins(60), Some(90.0), None),
        ],
    ];
    for readings in &batches {
        let mut batch = store.batch().unwrap();
        for r in readings {
            batch.insert_reading(&fx.registry, r, r.ts).unwrap();
            ledger.apply(r, r.ts);
        }
        for r in readings {
            batch.save_snapshot(&ledger.snapshot(r.facility)).unwrap();
        }
        batch.commit().unwrap();
    }
    ledger.refresh_all(mins(61));
    drop(store);

    let store = fx.open();
    let snapshots = store.load_snapshots().unwrap();
    let facilities: Vec<&str> = snapshots.iter().map(|s| s.facility.as_str()).collect();
    assert_eq!(
        facilities,
        ["js-pu1", "js-wh1", "js-wp1"],
        "one row per facility"
    );
    for snapshot in &snapshots {
        let f = fx
            .registry
            .facility_idx(snapshot.facility.as_str())
            .unwrap();
        assert_eq!(snapshot, &ledger.snapshot(f), "{}", snapshot.facility);
    }

    let mut rebuilt = Ledger::new(Arc::clone(&fx.registry));
    for snapshot in &snapshots {
        assert!(rebuilt.restore(snapshot), "{}", snapshot.facility);
    }
    rebuilt.refresh_all(mins(61));
    for t in fx.registry.town_indices() {
        assert_eq!(rebuilt.figures(t), ledger.figures(t));
    }
}

#[test]
fn sheltered_counts_round_trip_and_upsert() {
    let fx = Fixture::new();
    let mut store = fx.open();
    let jingshan = TownId::parse("jingshan").unwrap();
    let donghua = TownId::parse("donghua").unwrap();
    store.set_sheltered(&jingshan, 5_000, mins(0)).unwrap();
    store.set_sheltered(&donghua, 40, mins(0)).unwrap();
    store.set_sheltered(&jingshan, 7_500, mins(5)).unwrap();
    drop(store);
    let mut store = fx.open();
    assert_eq!(
        store.load_sheltered().unwrap(),
        [(donghua, 40), (jingshan.clone(), 7_500)]
    );
    let err = store
        .set_sheltered(&jingshan, u64::MAX, mins(6))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::OutOfRange { .. }),
        "{err}: a count SQLite cannot hold is refused, not wrapped"
    );
}

#[test]
fn a_batch_dropped_without_commit_leaves_nothing() {
    let fx = Fixture::new();
    let mut store = fx.open();
    let mut ledger = Ledger::new(Arc::clone(&fx.registry));
    let reading = stock(WH1, mins(0), &[(WATER, 12_000.0)]);
    ledger.apply(&reading, mins(0));
    {
        let mut batch = store.batch().unwrap();
        assert!(
            batch
                .insert_reading(&fx.registry, &reading, mins(0))
                .unwrap()
        );
        batch.save_snapshot(&ledger.snapshot(WH1)).unwrap();
        batch
            .insert_reject(&reject(mins(0), "stockpile/v1/x/y/reading", "unknown_town"))
            .unwrap();
        // Dropped: the writer failed before committing, so nothing was acknowledged.
    }
    assert_eq!(store.count_readings().unwrap(), 0);
    assert_eq!(store.load_snapshots().unwrap(), []);
    assert_eq!(store.recent_rejects(10).unwrap(), []);
    assert_eq!(store.reject_counts().unwrap(), []);
    // The reading is new to the next batch: the broker's redelivery will be stored.
    assert_eq!(fx.insert(&mut store, &[reading]), [true]);
}

#[test]
fn committed_batches_survive_a_store_that_is_never_closed() {
    let fx = Fixture::new();
    let mut store = fx.open();
    let mut ledger = Ledger::new(Arc::clone(&fx.registry));
    for m in 0..50 {
        let reading = stock(WH1, mins(m), &[(WATER, 12_000.0 - m as f64)]);
        let mut batch = store.batch().unwrap();
        batch
            .insert_reading(&fx.registry, &reading, mins(m))
            .unwrap();
        ledger.apply(&reading, mins(m));
        batch.save_snapshot(&ledger.snapshot(WH1)).unwrap();
        batch
            .insert_reject(&reject(mins(m), "stockpile/v1/x/y/reading", "unknown_town"))
            .unwrap();
        batch.commit().unwrap();
    }
    // As after SIGKILL: no close, no checkpoint; what was committed sits in the WAL.
    std::mem::forget(store);

    let store = fx.open();
    assert_eq!(store.count_readings().unwrap(), 50);
    assert_eq!(store.load_snapshots().unwrap(), [ledger.snapshot(WH1)]);
    assert_eq!(store.recent_rejects(100).unwrap().len(), 50);
    assert_eq!(
        store.reject_counts().unwrap(),
        [("unknown_town".into(), 50)]
    );
}

#[test]
fn a_reader_opens_and_reads_while_the_writer_holds_a_batch() {
    let fx = Fixture::new();
    let mut writer = fx.open();
    fx.insert(&mut writer, &[stock(WH1, mins(0), &[(WATER, 1.0)])]);
    let mut batch = writer.batch().unwrap();
    batch
        .insert_reading(&fx.registry, &stock(WH1, mins(1), &[(WATER, 2.0)]), mins(1))
        .unwrap();
    let reader = fx.open_with(StoreOptions {
        busy_timeout: Duration::from_millis(100),
        ..StoreOptions::default()
    });
    assert_eq!(
        reader.count_readings().unwrap(),
        1,
        "half a batch is not visible"
    );
    batch.commit().unwrap();
    assert_eq!(reader.count_readings().unwrap(), 2);
}

#[test]
fn reject_log_is_bounded_while_counts_stay_total() {
    let fx = Fixture::new();
    let mut store = fx.open_with(StoreOptions {
        max_rejects: 5,
        ..StoreOptions::default()
    });
    let reasons = ["unknown_town", "not_json", "unknown_town"];
    let mut n = 0;
    for batch_no in 0..4 {
        let mut batch = store.batch().unwrap();
        for reason in reasons {
            let topic = format!("stockpile/v1/t/f{n}/reading");
            batch
                .insert_reject(&reject(mins(n), &topic, reason))
                .unwrap();
            n += 1;
        }
        batch.commit().unwrap();
        assert!(
            store.recent_rejects(100).unwrap().len() <= 5,
            "after batch {batch_no}"
        );
    }
    let topics: Vec<String> = store
        .recent_rejects(100)
        .unwrap()
        .into_iter()
        .map(|r| r.topic)
        .collect();
    assert_eq!(
        topics,
        (7..12)
            .rev()
            .map(|i| format!("stockpile/v1/t/f{i}/reading"))
            .collect::<Vec<_>>(),
        "the newest five, newest first"
    );
    assert_eq!(store.recent_rejects(2).unwrap().len(), 2);
    assert_eq!(
        store.reject_counts().unwrap(),
        [("not_json".into(), 4), ("unknown_town".into(), 8)]
    );

    // A smaller limit after a restart applies at the next maintenance pass.
    drop(store);
    let store = fx.open();
    let mut maintenance = store::Maintenance::open(
        &fx.path,
        StoreOptions::default(),
        store::MaintenanceConfig {
            max_rejects: 2,
            ..store::MaintenanceConfig::default()
        },
    )
    .unwrap();
    let pass = maintenance
        .run_pass(mins(12), &tokio_util::sync::CancellationToken::new())
        .unwrap();
    assert_eq!(pass.rejects_deleted, 3);
    assert_eq!(store.recent_rejects(100).unwrap().len(), 2);
    assert_eq!(
        store.reject_counts().unwrap()[1],
        ("unknown_town".into(), 8)
    );
}

#[test]
fn a_long_chinese_payload_is_cut_on_a_character_boundary() {
    let fx = Fixture::new();
    let mut store = fx.open();
    // 3 bytes per character: byte 1024 falls inside the 342nd, so 341 are kept.
    let text = "水位过低，请尽快补给。".repeat(100);
    assert_eq!(
        RejectRecord::new(mins(0), "", "", "", text.as_bytes()).payload,
        text.chars().take(341).collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("utf8", text.as_bytes().to_vec()),
        (
            "invalid utf8",
            [b"\xff\xfe".as_slice(), text.as_bytes()].concat(),
        ),
        ("short", b"not json".to_vec()),
    ];
    for (name, payload) in &cases {
        let record = RejectRecord::new(
            mins(0),
            "stockpile/v1/a/b/reading",
            "not_json",
            "x",
            payload,
        );
        assert_eq!(record.payload_len, payload.len(), "{name}");
        assert!(record.payload.len() <= MAX_REJECT_PAYLOAD, "{name}");
        // Nothing more fits: the next character would pass the limit.
        let lossy = String::from_utf8_lossy(payload);
        assert!(
            lossy.starts_with(&record.payload),
            "{name}: a prefix of what was sent"
        );
        if let Some(next) = lossy[record.payload.len()..].chars().next() {
            assert!(
                record.payload.len() + next.len_utf8() > MAX_REJECT_PAYLOAD,
                "{name}"
            );
        }
        let mut batch = store.batch().unwrap();
        batch.insert_reject(&record).unwrap();
        batch.commit().unwrap();
        assert_eq!(store.recent_rejects(1).unwrap(), [record], "{name}");
    }

    // A record built by hand is cut the same way when stored.
    let by_hand = RejectRecord {
        at: mins(1),
        topic: "stockpile/v1/景山/b/reading".into(),
        reason: "unknown_town".into(),
        detail: "没有".repeat(1000),
        payload: text.clone(),
        payload_len: text.len(),
    };
    let mut batch = store.batch().unwrap();
    batch.insert_reject(&by_hand).unwrap();
    batch.commit().unwrap();
    let stored = &store.recent_rejects(1).unwrap()[0];
    assert_eq!(
        stored.payload,
        RejectRecord::new(mins(1), "", "", "", text.as_bytes()).payload
    );
    assert!(stored.detail.len() <= store::MAX_REJECT_DETAIL && stored.detail.starts_with("没有"));
    assert_eq!(stored.payload_len, text.len());
}

#[test]
fn ten_thousand_readings_in_batches_of_varied_size() {
    let fx = Fixture::new();
    let mut store = fx.open();
    let facilities = [WH1, DH_WH1];
    let mut inserted = 0;
    let mut i = 0_i64;
    for size in [20, 1000, 137, 500, 1].iter().cycle() {
        if i >= 10_000 {
            break;
        }
        let n = (*size).min(10_000 - i);
        let readings: Vec<Reading> = (i..i + n)
            .map(|k| {
                let facility = facilities[(k % 2) as usize];
                let at = t0() + chrono::Duration::seconds(k / 2);
                stock(facility, at, &[(WATER, k as f64), (FOOD, 1.0)])
            })
            .collect();
        inserted += fx
            .insert(&mut store, &readings)
            .iter()
            .filter(|&&new| new)
            .count();
        i += n;
    }
    assert_eq!(inserted, 10_000);
    assert_eq!(store.count_readings().unwrap(), 10_000);
    assert_eq!(all_readings(&store, "dh-wh1").len(), 5_000);
}

#[test]
fn opening_in_a_missing_directory_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("stockpile.db");
    let err = Store::open(&path, StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, StoreError::MissingDirectory { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("does not exist"), "{message}");
}

#[test]
fn opening_a_file_that_is_not_a_database_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stockpile.toml");
    std::fs::write(&path, "registry = \"registry.toml\"\n".repeat(100)).unwrap();
    let err = Store::open(&path, StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot open store {}: the file is not a SQLite database",
            path.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "registry = \"registry.toml\"\n".repeat(100),
        "the file is left as it was"
    );
}

/// Writes through a second, raw connection, as a damaged or hand-edited file would.
fn tamper(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

#[test]
fn a_corrupt_row_is_an_error_naming_its_table_and_key() {
    let cases = [
        (
            "UPDATE facility_state SET snapshot = '{\"facility\":' WHERE facility = 'js-wh1'",
            "table facility_state, row js-wh1: snapshot is not valid",
        ),
        (
            "UPDATE facility_state SET snapshot = replace(snapshot, 'js-wh1', 'dh-wh1')",
            "table facility_state, row js-wh1: snapshot is of facility dh-wh1",
        ),
        (
            "INSERT INTO sheltered VALUES ('Jingshan!', 3, 0)",
            "table sheltered, row Jingshan!: id \"Jingshan!\" may contain only",
        ),
        (
            "INSERT INTO sheltered VALUES ('donghua', -3, 0)",
            "table sheltered, row donghua: negative count -3",
        ),
        (
            "UPDATE readings SET body = 'stock: 1'",
            "table readings, row (js-wh1, 1795496400000): body is not JSON",
        ),
        (
            "UPDATE rejects SET at = 9223372036854775807",
            "table rejects, row 1: bad time 9223372036854775807",
        ),
    ];
    for (sql, want) in cases {
        let fx = Fixture::new();
        let mut store = fx.open();
        let mut ledger = Ledger::new(Arc::clone(&fx.registry));
        let reading = stock(WH1, t0(), &[(WATER, 1.0)]);
        ledger.apply(&reading, t0());
        let mut batch = store.batch().unwrap();
        batch.insert_reading(&fx.registry, &reading, t0()).unwrap();
        batch.save_snapshot(&ledger.snapshot(WH1)).unwrap();
        batch.insert_reject(&reject(t0(), "t", "not_json")).unwrap();
        batch.commit().unwrap();

        tamper(&fx.path, sql);
        let errors = [
            store.load_snapshots().err(),
            store.load_sheltered().err(),
            store.readings(&id("js-wh1"), t0(), mins(1), 10).err(),
            store.recent_rejects(10).err(),
        ];
        let messages: Vec<String> = errors.iter().flatten().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 1, "{sql}: {messages:?}");
        let prefix = format!("store {}: ", fx.path.display());
        assert!(
            messages[0].starts_with(&prefix) && messages[0].contains(want),
            "{sql}: {}",
            messages[0]
        );
    }
}

#[test]
fn a_store_from_a_newer_build_is_refused() {
    let fx = Fixture::new();
    drop(fx.open());
    tamper(&fx.path, "PRAGMA user_version = 99");
    let err = Store::open(&fx.path, StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&fx.path.display().to_string()),
        "{err}"
    );
}
