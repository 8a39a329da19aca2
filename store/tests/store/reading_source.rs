//! Where a reading came from (issue 15): a gateway's or a count entered by hand, stored
//! with the reading, read back with history, found fast for a facility, tagged in the
//! InfluxDB lines, and `gateway` for every reading a file held before sources existed.

use chrono::Duration;
use reserve::FacilityId;
use reserve::Reading;
use store::influx::line::reading_lines;
use store::{ManualEntry, ReadingSource, Store, StoreOptions, StoredReading};

use crate::influx_support::*;

fn manual(by: &str) -> ReadingSource {
    ReadingSource::Manual {
        entered_by: by.into(),
    }
}

fn insert(fx: &Fixture, store: &mut Store, reading: &Reading, source: &ReadingSource) -> bool {
    let mut batch = store.batch().unwrap();
    let new = batch
        .insert_reading_from(
            &fx.registry,
            reading,
            reading.ts + Duration::seconds(1),
            source,
        )
        .unwrap();
    batch.commit().unwrap();
    new
}

fn history(store: &Store, facility: &str) -> Vec<StoredReading> {
    let facility = FacilityId::parse(facility).unwrap();
    store
        .readings(&facility, mins(-600), mins(600), usize::MAX)
        .unwrap()
}

#[test]
fn each_reading_keeps_its_source_and_who_entered_it() {
    let fx = Fixture::new();
    let mut store = fx.store();
    let cases = [
        (
            stock(JS_WH1, mins(0), &[(WATER, 100.0)]),
            ReadingSource::Gateway,
        ),
        (stock(JS_WH1, mins(1), &[(WATER, 90.0)]), manual("li-wei")),
        (
            stock(JS_WH1, mins(2), &[(WATER, 80.0)]),
            ReadingSource::Gateway,
        ),
    ];
    for (reading, source) in &cases {
        assert!(insert(&fx, &mut store, reading, source));
    }
    let sources: Vec<ReadingSource> = history(&store, "js-wh1")
        .into_iter()
        .map(|r| r.source)
        .collect();
    let want: Vec<ReadingSource> = cases.iter().map(|(_, s)| s.clone()).collect();
    assert_eq!(sources, want);

    // A hand count at an instant a gateway already reported is a duplicate: the stored
    // reading stays the gateway's.
    assert!(!insert(&fx, &mut store, &cases[0].0, &manual("li-wei")));
    assert_eq!(history(&store, "js-wh1")[0].source, ReadingSource::Gateway);
}

#[test]
fn the_latest_manual_entry_of_a_facility_is_found() {
    let fx = Fixture::new();
    let mut store = fx.store();
    let js_wh1 = FacilityId::parse("js-wh1").unwrap();
    assert_eq!(store.latest_manual_entry(&js_wh1).unwrap(), None);
    insert(
        &fx,
        &mut store,
        &stock(JS_WH1, mins(0), &[(WATER, 1.0)]),
        &manual("li-wei"),
    );
    insert(
        &fx,
        &mut store,
        &stock(JS_WH1, mins(5), &[(WATER, 2.0)]),
        &manual("zhao-min"),
    );
    insert(
        &fx,
        &mut store,
        &stock(JS_WH1, mins(9), &[(WATER, 3.0)]),
        &ReadingSource::Gateway,
    );
    // Another facility's count is not this one's.
    insert(
        &fx,
        &mut store,
        &stock(DH_WH1, mins(7), &[(WATER, 3.0)]),
        &manual("ops"),
    );
    assert_eq!(
        store.latest_manual_entry(&js_wh1).unwrap(),
        Some(ManualEntry {
            facility: js_wh1,
            ts: mins(5),
            received_at: mins(5) + Duration::seconds(1),
            entered_by: "zhao-min".into(),
        })
    );
}

#[test]
fn influx_lines_carry_the_source_as_a_tag() {
    let fx = Fixture::new();
    let mut store = fx.store();
    let t = ms(mins(0));
    let cases = [
        (
            stock(JS_WH1, mins(0), &[(WATER, 12.0)]),
            ReadingSource::Gateway,
            format!(
                "stock,town=jingshan,facility=js-wh1,source=gateway,category=water quantity=12 {t}"
            ),
        ),
        (
            stock(JS_WH1, mins(1), &[(WATER, 11.0)]),
            manual("li-wei"),
            format!(
                "stock,town=jingshan,facility=js-wh1,source=manual,category=water quantity=11 {}",
                ms(mins(1))
            ),
        ),
    ];
    for (reading, source, want) in &cases {
        let before = fx.queued_lines().len();
        assert!(insert(&fx, &mut store, reading, source));
        assert_eq!(&fx.queued_lines()[before..], std::slice::from_ref(want));
        assert_eq!(
            &reading_lines(&fx.registry, reading, source),
            std::slice::from_ref(want)
        );
    }
    // Who entered it is not in InfluxDB: a name has no place in a series key.
    assert!(!fx.queued_lines().concat().contains("li-wei"));
}

/// A row written without a source, as every row was before the migration that added
/// the columns: it reads back as a gateway's (the columns' default is what SQLite
/// gives the rows that existed when a column was added).
#[test]
fn readings_stored_before_sources_existed_are_a_gateways() {
    let fx = Fixture::new();
    drop(fx.store());
    let conn = rusqlite::Connection::open(&fx.path).unwrap();
    conn.execute_batch(&format!(
        "INSERT INTO readings (ts, facility, seq, received, body)
         VALUES ({}, 'js-wh1', NULL, {}, '{{\"stock\":{{\"water\":5.0}}}}');",
        ms(mins(0)),
        ms(mins(0)),
    ))
    .unwrap();
    drop(conn);

    let mut store = Store::open(&fx.path, StoreOptions::default()).unwrap();
    let old = history(&store, "js-wh1");
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].source, ReadingSource::Gateway);
    insert(
        &fx,
        &mut store,
        &stock(JS_WH1, mins(1), &[(WATER, 4.0)]),
        &manual("li-wei"),
    );
    assert_eq!(history(&store, "js-wh1")[1].source, manual("li-wei"));
}

#[test]
fn a_manual_row_without_its_author_is_refused_by_the_schema() {
    let fx = Fixture::new();
    drop(fx.store());
    let conn = rusqlite::Connection::open(&fx.path).unwrap();
    let refused = conn.execute_batch(
        "INSERT INTO readings (ts, facility, received, body, source)
         VALUES (1, 'js-wh1', 1, '{}', 'manual')",
    );
    assert!(refused.is_err(), "a manual reading needs entered_by");
    let refused = conn.execute_batch(
        "INSERT INTO readings (ts, facility, received, body, source)
         VALUES (1, 'js-wh1', 1, '{}', 'typed')",
    );
    assert!(refused.is_err(), "source is gateway or manual");
}
