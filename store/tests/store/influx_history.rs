//! A town's history from SQLite and from InfluxDB (InfluxQL on a real InfluxDB 1.6 with
//! authentication): the same readings give the same answer.

use std::time::Duration;

use crate::influx_support::*;
use chrono::{DateTime, Utc};
use reserve::reading::{PowerState, PumpState};
use store::history::{
    History, HistoryError, HistoryQuery, HistorySource, InfluxHistory, sqlite_history,
};
use store::influx::{InfluxApi, InfluxEndpoint, NoChanges};
use testkit::Influx1;

const DB: &str = "stockpile";

/// An hour of Jingshan (from `mins(0)` to `mins(60)`) with stock carried in from before,
/// a category a reading leaves out, a water point that turns non-potable, and readings
/// that must not count: too old, at the range's end, another town's, a power unit's.
fn readings() -> Vec<reserve::Reading> {
    vec![
        stock(JS_WH1, mins(-400), &[(WATER, 99_999.0)]), // beyond the 6 h look-back
        stock(JS_WH1, mins(-30), &[(WATER, 10_000.0), (FOOD, 20_000.0)]),
        water(mins(-10), 40_000.0, PumpState::Ok, true),
        stock(JS_WH1, mins(5), &[(WATER, 9_000.0)]), // food keeps 20,000
        power(mins(5), 380.0, Some(96.0), PowerState::Standby, None),
        stock(DH_WH1, mins(5), &[(WATER, 1_234.0)]),
        stock(JS_WH2, mins(10), &[(FOOD, 5_000.0)]),
        water(mins(15), 30_000.0, PumpState::Fault, true), // not ready, still potable
        stock(JS_WH1, mins(20), &[(WATER, 8_000.0), (FOOD, 18_000.0)]),
        water(mins(25), 29_000.0, PumpState::Ok, false), // not drinking water
        water(mins(40), 28_000.0, PumpState::Ok, true),
        stock(JS_WH1, mins(60), &[(WATER, 1.0)]), // `to` is exclusive
    ]
}

fn query(category: Option<reserve::registry::CategoryIdx>, step: Option<Duration>) -> HistoryQuery {
    HistoryQuery {
        town: JINGSHAN,
        category,
        from: mins(0),
        to: mins(60),
        step,
    }
}

/// Points as (minute, stock, days) for a compact table.
fn table(history: &History, category: &str) -> Vec<(i64, f64, Option<f64>)> {
    let c = history
        .categories
        .iter()
        .find(|c| c.category.as_str() == category)
        .unwrap_or_else(|| panic!("no {category} in {history:?}"));
    c.points
        .iter()
        .map(|p| ((p.ts - t0()).num_minutes(), p.stock, p.days))
        .collect()
}

/// 30,000 L or rations a day for Jingshan's 10,000 people.
fn point(minute: i64, stock: f64) -> (i64, f64, Option<f64>) {
    (minute, stock, Some(stock / 30_000.0))
}

#[test]
fn sqlite_history_replays_the_towns_readings() {
    let fx = Fixture::new();
    let mut store = fx.store();
    fx.ingest(&mut store, &readings());

    let all = sqlite_history(&store, &fx.registry, &query(None, None)).unwrap();
    assert_eq!(
        (all.town.as_str(), all.from, all.to),
        ("jingshan", mins(0), mins(60))
    );
    assert_eq!(
        table(&all, "water"),
        [
            point(0, 50_000.0), // carried in: 10,000 in the warehouse + 40,000 L potable
            point(5, 49_000.0),
            point(15, 39_000.0),
            point(20, 38_000.0),
            point(25, 8_000.0), // the water point's water is not potable
            point(40, 36_000.0),
        ]
    );
    assert_eq!(
        table(&all, "food"),
        [point(0, 20_000.0), point(10, 25_000.0), point(20, 23_000.0)]
    );
    let water = &all.categories[0];
    assert_eq!(
        (water.unit.as_str(), water.need_per_day, water.target_days),
        ("L", 30_000.0, 3.0)
    );

    // With a step, the last point of each quarter hour.
    let thinned = sqlite_history(
        &store,
        &fx.registry,
        &query(Some(WATER), Some(Duration::from_secs(900))),
    )
    .unwrap();
    assert_eq!(thinned.categories.len(), 1);
    assert_eq!(
        table(&thinned, "water"),
        [point(5, 49_000.0), point(25, 8_000.0), point(40, 36_000.0)]
    );

    let backwards = HistoryQuery {
        from: mins(60),
        to: mins(0),
        ..query(None, None)
    };
    assert!(matches!(
        sqlite_history(&store, &fx.registry, &backwards),
        Err(HistoryError::EmptyRange { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_and_sqlite_give_the_same_history() {
    let influx = Influx1::builder().auth("admin", "s3cret").start();
    influx.create_database(DB);
    let endpoint = InfluxEndpoint::new(
        influx.url(),
        InfluxApi::V1 {
            database: DB.into(),
            username: Some("admin".into()),
            password: Some("s3cret".into()),
        },
    );
    let fx = Fixture::new();
    let mut store = fx.store();
    fx.ingest(&mut store, &readings());
    let sink = RunningSink::start(&fx, sink_config(endpoint.clone()), NoChanges);
    sink.drained(&store, Duration::from_secs(10)).await;
    sink.stop().await;

    let from_sqlite = HistorySource::Sqlite(store::AsyncStore::new(fx.store()));
    let from_influx = HistorySource::Influx(InfluxHistory::new(&endpoint).unwrap());
    let at = |from: DateTime<Utc>, to: DateTime<Utc>| HistoryQuery {
        from,
        to,
        ..query(None, None)
    };
    let queries = [
        query(None, None),
        query(Some(WATER), Some(Duration::from_secs(900))),
        query(Some(FOOD), None),
        // Nothing in the range: only what is carried in.
        at(mins(100), mins(120)),
        // The other town, and a range that cuts the readings in two.
        HistoryQuery {
            town: DONGHUA,
            ..query(None, None)
        },
        at(mins(12), mins(22)),
    ];
    for q in &queries {
        let sqlite = from_sqlite.history(&fx.registry, q).await.unwrap();
        let influx = from_influx.history(&fx.registry, q).await.unwrap();
        assert_eq!(influx, sqlite, "{q:?}");
        assert_eq!(
            serde_json::to_string(&influx).unwrap(),
            serde_json::to_string(&sqlite).unwrap()
        );
    }
    // Not trivially equal: the answers hold the readings.
    let all = from_influx
        .history(&fx.registry, &queries[0])
        .await
        .unwrap();
    assert_eq!(table(&all, "water").len(), 6);
    assert_eq!(
        table(
            &from_influx
                .history(&fx.registry, &queries[3])
                .await
                .unwrap(),
            "water"
        ),
        [point(100, 28_001.0)] // 1 L in the warehouse at mins(60), 28,000 L potable
    );

    // Wrong credentials are an error, not an empty history.
    let wrong = InfluxEndpoint::new(
        influx.url(),
        InfluxApi::V1 {
            database: DB.into(),
            username: Some("admin".into()),
            password: Some("wrong".into()),
        },
    );
    let refused = InfluxHistory::new(&wrong)
        .unwrap()
        .history(&fx.registry, &queries[0])
        .await;
    assert!(
        matches!(refused, Err(HistoryError::Influx(_))),
        "{refused:?}"
    );
}

/// InfluxDB 2.x and 3.x answer InfluxQL on `/query` for a bucket mapped to a database
/// (DBRP), with `Authorization: Token`; they cannot run here. So the v2 history reader
/// is pointed at a recording HTTP receiver, and every query it sends is answered with
/// what the real InfluxDB 1.6, holding the same points, answers to that query: the
/// requests are checked as 2.x would see them and the answer must equal SQLite's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_history_reads_the_mapped_bucket_with_a_token() {
    let influx = Influx1::start();
    influx.create_database(DB);
    let fx = Fixture::new();
    let mut store = fx.store();
    fx.ingest(&mut store, &readings());
    let v1 = InfluxEndpoint::new(
        influx.url(),
        InfluxApi::V1 {
            database: DB.into(),
            username: None,
            password: None,
        },
    );
    let sink = RunningSink::start(&fx, sink_config(v1), NoChanges);
    sink.drained(&store, Duration::from_secs(10)).await;
    sink.stop().await;

    let influx2 = testkit::HttpReceiver::start();
    influx2.set_response(200, r#"{"results":[{"statement_id":0}]}"#);
    let v2 = InfluxEndpoint::new(
        influx2.url(),
        InfluxApi::V2 {
            org: "bureau".into(),
            bucket: DB.into(),
            token: "s3cret-token".into(),
        },
    );
    let reader = HistorySource::Influx(InfluxHistory::new(&v2).unwrap());
    let q = query(None, None);
    // First pass: learn the queries the reader sends.
    reader.history(&fx.registry, &q).await.unwrap();
    let sent = influx2.requests();
    assert!(!sent.is_empty(), "no query sent");
    for request in &sent {
        assert_eq!((request.method.as_str(), request.path()), ("GET", "/query"));
        assert_eq!(request.header("authorization"), Some("Token s3cret-token"));
        let params = request.query();
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(param("db"), Some(DB), "the bucket's DBRP database");
        // Answered by the real InfluxDB, in the order the reader asks.
        let answer = testkit::http::get(
            &format!("{}/query", influx.url()),
            &[
                ("db", DB),
                ("q", param("q").expect("an InfluxQL query")),
                ("epoch", param("epoch").unwrap_or("ms")),
            ],
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        influx2.push_response(200, &answer.body);
    }
    let from_v2 = reader.history(&fx.registry, &q).await.unwrap();
    let from_sqlite = sqlite_history(&store, &fx.registry, &q).unwrap();
    assert_eq!(from_v2, from_sqlite);
    assert_eq!(
        table(&from_v2, "water").len(),
        6,
        "the answer holds the readings"
    );
}
