//! The sink against real servers: Debian's InfluxDB 1.6 for the v1 write path (read
//! back with InfluxQL), VictoriaMetrics for the v2 path through the `influxdb2` crate
//! (read back with its export API).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::influx_support::*;
use chrono::Utc;
use reserve::TownId;
use reserve::reading::{PowerState, PumpState};
use serde_json::json;
use store::influx::{InfluxApi, InfluxEndpoint, InfluxSinkConfig, NoChanges, alert_line};
use testkit::{Influx1, VictoriaMetrics};

const DB: &str = "stockpile";

fn v1(influx: &Influx1, database: &str) -> InfluxEndpoint {
    InfluxEndpoint::new(
        influx.url(),
        InfluxApi::V1 {
            database: database.into(),
            username: None,
            password: None,
        },
    )
}

fn row(v: serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    serde_json::from_value(v).unwrap()
}

fn count(influx: &Influx1, query: &str) -> u64 {
    influx
        .query_rows(DB, query)
        .first()
        .and_then(|row| row.get(1))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_points_land_with_the_schemas_tags_and_fields() {
    let influx = Influx1::start();
    influx.create_database(DB);
    let fx = Fixture::new();
    let mut store = fx.store();
    fx.ingest(
        &mut store,
        &[
            stock(JS_WH1, t0(), &[(WATER, 12000.0), (FOOD, 5400.5)]),
            water(t0(), 48000.0, PumpState::Ok, true),
            power(t0(), 380.0, Some(96.0), PowerState::Standby, None),
            stock(DH_WH1, mins(1), &[(FOOD, 100.0)]),
        ],
    );
    let jingshan = TownId::parse("jingshan").unwrap();
    store
        .enqueue_influx_lines(
            &[alert_line(
                &jingshan,
                "reserve_below_target",
                "critical",
                1,
                mins(2),
            )],
            Utc::now(),
        )
        .unwrap();

    let (changes, changed) = tokio::sync::mpsc::channel(4);
    let sink = RunningSink::start(&fx, sink_config(v1(&influx, DB)), changed);
    // The series derived at start are the last to be enqueued.
    eventually("the ops line", Duration::from_secs(10), || {
        (count(&influx, "SELECT count(received) FROM ops") == 1).then_some(())
    })
    .await;
    sink.drained(&store, Duration::from_secs(10)).await;

    let q = |query: &str| rows(&influx.query(DB, query));
    assert_eq!(
        q("SELECT * FROM stock"),
        [
            json!({"time": ms(t0()), "town": "jingshan", "facility": "js-wh1", "source": "gateway", "category": "food", "quantity": 5400.5}),
            json!({"time": ms(t0()), "town": "jingshan", "facility": "js-wh1", "source": "gateway", "category": "water", "quantity": 12000}),
            json!({"time": ms(mins(1)), "town": "donghua", "facility": "dh-wh1", "source": "gateway", "category": "food", "quantity": 100}),
        ]
        .map(row)
    );
    assert_eq!(
        q("SELECT * FROM water_point"),
        [row(json!({
            "time": ms(t0()), "town": "jingshan", "facility": "js-wp1", "source": "gateway",
            "level_l": 48000, "pump_ok": 1, "potable": 1, "ready": 1
        }))]
    );
    assert_eq!(
        q("SELECT * FROM power_unit"),
        [row(json!({
            "time": ms(t0()), "town": "jingshan", "facility": "js-pu1", "source": "gateway",
            "fuel_l": 380, "runtime_h": 76, "battery_pct": 96, "ready": 1
        }))]
    );
    assert_eq!(
        q("SELECT * FROM alert"),
        [row(json!({
            "time": ms(mins(2)), "town": "jingshan", "rule": "reserve_below_target",
            "severity": "critical", "firing": 1
        }))]
    );
    let ops = q("SELECT * FROM ops");
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0]["instance"], "test-host");
    for (field, value) in [
        ("received", 7),
        ("accepted", 6),
        ("rejected", 1),
        ("duplicates", 2),
    ] {
        assert_eq!(ops[0][field], value, "ops {field}");
    }

    // Derived series from the ledger at start: every town's status, and coverage of
    // the towns with figures. Jingshan: 60,000 L of water for 30,000 L a day; its worst
    // category is food, 5,400.5 rations for 30,000 a day.
    let status = q("SELECT * FROM town_status WHERE town = 'jingshan'");
    assert_eq!(status.len(), 1, "{status:?}");
    let s = &status[0];
    assert_eq!(
        (
            &s["cluster"],
            &s["district"],
            &s["status"],
            &s["worst_days"],
            &s["lat"],
            &s["lon"],
            &s["name"]
        ),
        (
            &json!("c01"),
            &json!("dongcheng"),
            &json!(2),
            &json!(5400.5 / 30000.0),
            &json!(39.93),
            &json!(116.4),
            &json!(JINGSHAN_NAME)
        ),
    );
    let water_coverage = q("SELECT * FROM coverage WHERE town = 'jingshan' AND category = 'water'");
    assert_eq!(water_coverage.len(), 1);
    let c = &water_coverage[0];
    assert_eq!(
        (
            &c["days"],
            &c["stock"],
            &c["need_per_day"],
            &c["target_days"],
            &c["verified"]
        ),
        (
            &json!(2),
            &json!(60000),
            &json!(30000),
            &json!(3),
            &json!(0)
        ),
    );
    // Donghua's figures: 100 rations for 15,000 a day, no water.
    let donghua = q("SELECT * FROM coverage WHERE town = 'donghua' GROUP BY category");
    assert_eq!(donghua.len(), 2, "{donghua:?}");

    // A change notification writes the changed town's figures again.
    let written = count(&influx, "SELECT count(status) FROM town_status");
    changes.send(BTreeSet::from([JINGSHAN])).await.unwrap();
    eventually("a second jingshan status", Duration::from_secs(5), || {
        (count(
            &influx,
            "SELECT count(status) FROM town_status WHERE town = 'jingshan'",
        ) == 2)
            .then_some(())
    })
    .await;
    assert_eq!(
        count(&influx, "SELECT count(status) FROM town_status"),
        written + 1
    );

    let stats = sink.sink.stats();
    assert_eq!((stats.write_errors, stats.dropped_malformed), (0, 0));
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_enqueued_during_an_outage_all_arrive_once() {
    let influx = Influx1::start();
    influx.create_database(DB);
    let fx = Arc::new(Fixture::new());
    let store = fx.store();
    let sink = RunningSink::start(&fx, sink_config(v1(&influx, DB)), NoChanges);

    // Load: a batch of 20 readings every 10 ms, each with a timestamp of its own.
    let stop_load = Arc::new(AtomicBool::new(false));
    let readings = Arc::new(AtomicU64::new(0));
    let load = {
        let (fx, stop, readings) = (
            Arc::clone(&fx),
            Arc::clone(&stop_load),
            Arc::clone(&readings),
        );
        std::thread::spawn(move || {
            let mut store = fx.store();
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<_> = (0..20)
                    .map(|_| {
                        let n = readings.fetch_add(1, Ordering::Relaxed) as i64;
                        let at = t0() + chrono::Duration::milliseconds(n);
                        stock(
                            if n % 2 == 0 { JS_WH1 } else { DH_WH1 },
                            at,
                            &[(FOOD, n as f64)],
                        )
                    })
                    .collect();
                fx.ingest(&mut store, &batch);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    // InfluxDB goes away under load for the 60 s of docs/design.md#performance-targets,
    // then comes back with its data. The sink's backoff has reached its 30 s ceiling by
    // then, so the drain may start up to 30 s after the restart.
    let influx = tokio::task::spawn_blocking(move || {
        let mut influx = influx;
        std::thread::sleep(Duration::from_secs(1));
        influx.stop();
        std::thread::sleep(Duration::from_secs(60));
        influx.start_again();
        std::thread::sleep(Duration::from_secs(1));
        influx
    })
    .await
    .unwrap();
    stop_load.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let sent = readings.load(Ordering::Relaxed);
    assert!(sent > 10_000, "the load wrote only {sent} readings");

    sink.drained(&store, Duration::from_secs(90)).await;
    let stats = sink.sink.stats();
    assert!(
        stats.write_errors > 0,
        "the outage was not noticed: {stats:?}"
    );
    assert_eq!(count(&influx, "SELECT count(quantity) FROM stock"), sent);
    // Each line was accepted once: what the sink counts as written is exactly what
    // InfluxDB holds (readings, plus the series derived at start).
    let derived = count(&influx, "SELECT count(status) FROM town_status")
        + count(&influx, "SELECT count(stock) FROM coverage")
        + count(&influx, "SELECT count(received) FROM ops");
    assert!(derived >= 3, "two town statuses and one ops line at least");
    assert_eq!(stats.written_lines, sent + derived);
    assert_eq!((stats.dropped_malformed, stats.dropped_overflow), (0, 0));
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_are_dropped_and_the_rest_of_their_batch_arrives() {
    let influx = Influx1::start();
    influx.create_database(DB);
    let fx = Fixture::new();
    let mut store = fx.store();
    let good = |n: i64| {
        format!(
            "stock,town=jingshan,facility=js-wh1,category=food quantity={n} {}",
            ms(t0()) + n
        )
    };
    let mut lines: Vec<String> = (0..10).map(good).collect();
    // Not a number, and a string where a float was written: both refused with a 400.
    lines.push(format!(
        "stock,town=jingshan,facility=js-wh1,category=food quantity=oops {}",
        ms(t0()) + 100
    ));
    lines.extend((10..20).map(good));
    lines.push(format!(
        "stock,town=jingshan,facility=js-wh1,category=food quantity=\"text\" {}",
        ms(t0()) + 101
    ));
    lines.extend((20..25).map(good));
    store.enqueue_influx_lines(&lines, Utc::now()).unwrap();

    let sink = RunningSink::start(&fx, sink_config(v1(&influx, DB)), NoChanges);
    sink.drained(&store, Duration::from_secs(10)).await;
    // A later line is not held up either.
    store.enqueue_influx_lines(&[good(30)], Utc::now()).unwrap();
    sink.drained(&store, Duration::from_secs(5)).await;

    assert_eq!(count(&influx, "SELECT count(quantity) FROM stock"), 26);
    let stats = sink.sink.stats();
    assert_eq!(stats.dropped_malformed, 2, "{stats:?}");
    assert_eq!(
        stats.write_errors, 0,
        "a refused batch is not a failed write"
    );
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_keeps_the_lines_until_it_exists() {
    let influx = Influx1::start();
    let fx = Fixture::new();
    let mut store = fx.store();
    fx.ingest(
        &mut store,
        &[stock(JS_WH1, t0(), &[(WATER, 1.0), (FOOD, 2.0)])],
    );
    let sink = RunningSink::start(&fx, sink_config(v1(&influx, DB)), NoChanges);

    // 404 "database not found" is not the lines' fault: nothing is dropped.
    eventually("a failed write", Duration::from_secs(5), || {
        (sink.sink.stats().write_errors > 0).then_some(())
    })
    .await;
    let stats = sink.sink.stats();
    assert!(stats.queue_depth >= 2, "{stats:?}");
    assert!(store.influx_queue_depth().unwrap() >= 2);
    assert!(stats.lag_s > 0.0);
    assert_eq!(stats.dropped_malformed, 0);

    influx.create_database(DB);
    sink.drained(&store, Duration::from_secs(10)).await;
    assert_eq!(count(&influx, "SELECT count(quantity) FROM stock"), 2);
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_bound_the_queue_drops_the_oldest_lines() {
    let influx = Influx1::start();
    influx.create_database(DB);
    let fx = Fixture::new();
    let mut store = fx.store();
    let lines: Vec<String> = (0..50)
        .map(|n| {
            format!(
                "stock,town=jingshan,facility=js-wh1,category=food quantity={n} {}",
                ms(t0()) + n
            )
        })
        .collect();
    store.enqueue_influx_lines(&lines, Utc::now()).unwrap();
    let mut config = sink_config(v1(&influx, DB));
    config.queue_max_rows = 30;
    let sink = RunningSink::start(&fx, config, NoChanges);
    sink.drained(&store, Duration::from_secs(10)).await;

    // The oldest lines went, the newest 30 arrived: the 20 oldest, or 23 when the
    // sink's own 3 lines of the start (two town statuses, ops) were already queued.
    let dropped = sink.sink.stats().dropped_overflow;
    assert!(dropped == 20 || dropped == 23, "dropped {dropped}");
    let kept = influx.query_rows(DB, "SELECT quantity FROM stock");
    let quantities: Vec<u64> = kept.iter().map(|row| row[1].as_u64().unwrap()).collect();
    assert_eq!(quantities, (dropped..50).collect::<Vec<_>>());
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_writes_through_influxdb2_reach_victoria_metrics() {
    let victoria = VictoriaMetrics::start();
    let fx = Fixture::new();
    let mut store = fx.store();
    fx.ingest(
        &mut store,
        &[
            stock(JS_WH1, t0(), &[(WATER, 12000.0), (FOOD, 5400.5)]),
            stock(JS_WH1, mins(1), &[(WATER, 11000.0)]),
            water(t0(), 48000.0, PumpState::Fault, true),
            power(t0(), 380.0, Some(96.0), PowerState::Standby, None),
        ],
    );
    let endpoint = InfluxEndpoint::new(
        victoria.url(),
        InfluxApi::V2 {
            org: "stockpile".into(),
            bucket: "stockpile".into(),
            token: "test-token".into(),
        },
    );
    let sink = RunningSink::start(&fx, sink_config(endpoint), NoChanges);
    sink.drained(&store, Duration::from_secs(10)).await;
    assert_eq!(sink.sink.stats().write_errors, 0);

    // VictoriaMetrics names a field `{measurement}_{field}` and keeps tags as labels.
    let series = |selector: &str| {
        let mut found: Vec<(String, String, Vec<f64>, Vec<i64>)> = victoria
            .export_json(selector)
            .into_iter()
            .map(|s| {
                let label = |k: &str| s["metric"][k].as_str().unwrap_or_default().to_owned();
                (
                    format!("{}/{}", label("town"), label("facility")),
                    label("category"),
                    s["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_f64().unwrap())
                        .collect(),
                    s["timestamps"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_i64().unwrap())
                        .collect(),
                )
            })
            .collect();
        found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        found
    };
    let js = || "jingshan/js-wh1".to_owned();
    assert_eq!(
        series(r#"{__name__="stock_quantity"}"#),
        [
            (js(), "food".into(), vec![5400.5], vec![ms(t0())]),
            (
                js(),
                "water".into(),
                vec![12000.0, 11000.0],
                vec![ms(t0()), ms(mins(1))]
            ),
        ]
    );
    let wp = || "jingshan/js-wp1".to_owned();
    let one = |v: f64| (wp(), String::new(), vec![v], vec![ms(t0())]);
    assert_eq!(
        series(r#"{__name__="water_point_level_l"}"#),
        [one(48000.0)]
    );
    assert_eq!(series(r#"{__name__="water_point_pump_ok"}"#), [one(0.0)]);
    assert_eq!(series(r#"{__name__="water_point_ready"}"#), [one(0.0)]);
    let runtime = series(r#"{__name__="power_unit_runtime_h"}"#);
    assert_eq!(runtime[0].2, [76.0]);
    // The derived series went the same way.
    eventually("jingshan's coverage", Duration::from_secs(5), || {
        let days = series(r#"{__name__="coverage_days",town="jingshan"}"#);
        (days.len() == 2).then_some(())
    })
    .await;
    sink.stop().await;
}

#[test]
fn a_bad_configuration_is_refused_before_anything_starts() {
    let fx = Fixture::new();
    let endpoint = |url: &str| {
        InfluxEndpoint::new(
            url,
            InfluxApi::V1 {
                database: DB.into(),
                username: None,
                password: None,
            },
        )
    };
    let good = || sink_config(endpoint("http://127.0.0.1:8086"));
    let cases: Vec<(InfluxSinkConfig, &str)> = vec![
        (
            sink_config(endpoint("127.0.0.1:8086")),
            "influx url \"127.0.0.1:8086\" is not valid",
        ),
        (
            sink_config(endpoint("ftp://influx")),
            "the scheme must be http or https",
        ),
        (
            InfluxSinkConfig {
                batch_lines: 0,
                ..good()
            },
            "batch_lines must be at least 1",
        ),
        (
            InfluxSinkConfig {
                flush_every: Duration::ZERO,
                ..good()
            },
            "flush_every",
        ),
        (
            InfluxSinkConfig {
                instance: " ".into(),
                ..good()
            },
            "instance must not be empty",
        ),
    ];
    let tracker = tokio_util::task::TaskTracker::new();
    for (config, want) in cases {
        let error = store::influx::Sink::start(
            config,
            &fx.path,
            Arc::clone(&fx.ledger),
            NoChanges,
            ops_counts,
            &tracker,
            tokio_util::sync::CancellationToken::new(),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains(want),
            "{error} should say {want:?}"
        );
    }
    assert!(tracker.is_empty());
}
