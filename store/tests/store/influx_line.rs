//! What the sink will send, without InfluxDB: the lines each stored reading enqueues,
//! and every series parsed back by an independent parser (InfluxDB 3's
//! `influxdb-line-protocol`), so escaping and types are checked by someone else's rules.

use std::collections::BTreeMap;

use crate::influx_support::*;
use chrono::Utc;
use influxdb_line_protocol::{FieldValue, ParsedLine, parse_lines};
use proptest::prelude::*;
use reserve::TownId;
use reserve::reading::{PowerState, PumpState};
use store::influx::alert_line;
use store::influx::line::{Line, coverage_lines, ops_line, reading_lines, town_status_line};
use store::{ReadingSource, Store, StoreOptions};

/// A parsed line in plain values: measurement, tags, fields, timestamp.
#[derive(Debug, PartialEq)]
struct Point {
    measurement: String,
    tags: BTreeMap<String, String>,
    fields: BTreeMap<String, Field>,
    ts: Option<i64>,
}

#[derive(Debug, PartialEq)]
enum Field {
    F(f64),
    I(i64),
    S(String),
}

fn parse(line: &str) -> Point {
    let parsed: Vec<ParsedLine<'_>> = parse_lines(line)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("line does not parse ({e}): {line}"));
    assert_eq!(parsed.len(), 1, "one line expected: {line:?}");
    let p = &parsed[0];
    Point {
        measurement: p.series.measurement.to_string(),
        tags: p
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        fields: p
            .field_set
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    FieldValue::F64(f) => Field::F(*f),
                    FieldValue::I64(i) => Field::I(*i),
                    FieldValue::String(s) => Field::S(s.to_string()),
                    other => panic!("unexpected field type {other:?} in {line}"),
                };
                (k.to_string(), v)
            })
            .collect(),
        ts: p.timestamp,
    }
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn fields(pairs: &[(&str, Field)]) -> BTreeMap<String, Field> {
    pairs
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Field::F(f) => Field::F(*f),
                Field::I(i) => Field::I(*i),
                Field::S(s) => Field::S(s.clone()),
            };
            (k.to_string(), v)
        })
        .collect()
}

#[test]
fn each_stored_reading_enqueues_its_lines_in_the_same_batch() {
    use Field::*;
    let fx = Fixture::new();
    let mut store = fx.store();
    let t = ms(t0());
    let cases = [
        (
            stock(JS_WH1, t0(), &[(WATER, 12000.0), (FOOD, 5400.5)]),
            vec![
                format!(
                    "stock,town=jingshan,facility=js-wh1,source=gateway,category=water quantity=12000 {t}"
                ),
                format!(
                    "stock,town=jingshan,facility=js-wh1,source=gateway,category=food quantity=5400.5 {t}"
                ),
            ],
        ),
        (
            water(t0(), 52000.0, PumpState::Ok, true),
            vec![format!(
                "water_point,town=jingshan,facility=js-wp1,source=gateway level_l=52000,pump_ok=1i,potable=1i,ready=1i {t}"
            )],
        ),
        (
            water(mins(1), 0.25, PumpState::Fault, false),
            vec![format!(
                "water_point,town=jingshan,facility=js-wp1,source=gateway level_l=0.25,pump_ok=0i,potable=0i,ready=0i {}",
                ms(mins(1))
            )],
        ),
        // 380 L at the rated 5 L/h: 76 h ≥ 72 h of the 3-day target.
        (
            power(t0(), 380.0, Some(96.0), PowerState::Standby, None),
            vec![format!(
                "power_unit,town=jingshan,facility=js-pu1,source=gateway fuel_l=380,runtime_h=76,battery_pct=96,ready=1i {t}"
            )],
        ),
        // A measured 6 L/h overrides the rated burn: 63.3 h is short of 72 h. No
        // battery gauge: no battery_pct field.
        (
            power(mins(1), 380.0, None, PowerState::Running, Some(6.0)),
            vec![format!(
                "power_unit,town=jingshan,facility=js-pu1,source=gateway fuel_l=380,runtime_h=63.333333333333336,ready=0i {}",
                ms(mins(1))
            )],
        ),
        (
            power(mins(2), 400.0, Some(30.0), PowerState::Standby, None),
            vec![format!(
                "power_unit,town=jingshan,facility=js-pu1,source=gateway fuel_l=400,runtime_h=80,battery_pct=30,ready=0i {}",
                ms(mins(2))
            )],
        ),
    ];
    for (reading, want) in &cases {
        let before = fx.queued_lines().len();
        assert_eq!(fx.ingest(&mut store, std::slice::from_ref(reading)), [true]);
        assert_eq!(&fx.queued_lines()[before..], &want[..], "{reading:?}");
        assert_eq!(
            &reading_lines(&fx.registry, reading, &ReadingSource::Gateway),
            want
        );
    }

    // A redelivered reading is a duplicate: stored once, sent once.
    let before = fx.queued_lines().len();
    assert_eq!(fx.ingest(&mut store, &[cases[0].0.clone()]), [false]);
    assert_eq!(fx.queued_lines().len(), before);
    assert_eq!(store.influx_queue_depth().unwrap(), before as u64);

    // Every enqueued line parses back with the schema's tags and field types.
    let first = parse(&fx.queued_lines()[0]);
    assert_eq!(
        first,
        Point {
            measurement: "stock".into(),
            tags: tags(&[
                ("town", "jingshan"),
                ("facility", "js-wh1"),
                ("source", "gateway"),
                ("category", "water")
            ]),
            fields: fields(&[("quantity", F(12000.0))]),
            ts: Some(t),
        }
    );
    for line in fx.queued_lines() {
        let point = parse(&line);
        let field_names: Vec<&str> = point.fields.keys().map(String::as_str).collect();
        match point.measurement.as_str() {
            "stock" => assert_eq!(field_names, ["quantity"]),
            "water_point" => assert_eq!(field_names, ["level_l", "potable", "pump_ok", "ready"]),
            "power_unit" => assert!(
                field_names == ["battery_pct", "fuel_l", "ready", "runtime_h"]
                    || field_names == ["fuel_l", "ready", "runtime_h"],
                "{line}"
            ),
            other => panic!("unexpected measurement {other}"),
        }
    }
}

#[test]
fn without_the_influx_queue_option_nothing_is_enqueued() {
    let fx = Fixture::new();
    let mut store = Store::open(&fx.path, StoreOptions::default()).unwrap();
    fx.ingest(&mut store, &[stock(JS_WH1, t0(), &[(WATER, 1.0)])]);
    assert_eq!(store.influx_queue_depth().unwrap(), 0);
}

#[test]
fn derived_series_parse_back_with_the_schema() {
    use Field::*;
    let fx = Fixture::new();
    let mut store = fx.store();
    fx.ingest(
        &mut store,
        &[
            stock(JS_WH1, t0(), &[(WATER, 12000.0), (FOOD, 90000.0)]),
            water(t0(), 48000.0, PumpState::Ok, true),
            power(t0(), 380.0, Some(96.0), PowerState::Standby, None),
        ],
    );
    let ledger = fx.ledger.read().unwrap();
    let figures = ledger.figures(JINGSHAN);
    let ts = ms(t0());

    let coverage: Vec<Point> = coverage_lines(&fx.registry, figures, ts)
        .iter()
        .map(|l| parse(l))
        .collect();
    let place = [
        ("town", "jingshan"),
        ("cluster", "c01"),
        ("district", "dongcheng"),
    ];
    let with = |category: &str| {
        let mut t = tags(&place);
        t.insert("category".into(), category.into());
        t
    };
    // Water: 12,000 + 48,000 L for 30,000 L a day = 2 days. js-wh2 never reported, so
    // nothing is verified.
    assert_eq!(
        coverage,
        [
            Point {
                measurement: "coverage".into(),
                tags: with("water"),
                fields: fields(&[
                    ("days", F(2.0)),
                    ("stock", F(60000.0)),
                    ("need_per_day", F(30000.0)),
                    ("target_days", F(3.0)),
                    ("verified", I(0)),
                ]),
                ts: Some(ts),
            },
            Point {
                measurement: "coverage".into(),
                tags: with("food"),
                fields: fields(&[
                    ("days", F(3.0)),
                    ("stock", F(90000.0)),
                    ("need_per_day", F(30000.0)),
                    ("target_days", F(3.0)),
                    ("verified", I(0)),
                ]),
                ts: Some(ts),
            },
        ]
    );

    assert_eq!(
        parse(&town_status_line(&fx.registry, figures, ts)),
        Point {
            measurement: "town_status".into(),
            tags: tags(&place),
            fields: fields(&[
                ("worst_days", F(2.0)),
                ("status", I(2)),    // below the 3-day target: critical
                ("sheltered", I(0)), // nobody in shelters, none typed in
                ("lat", F(39.93)),
                ("lon", F(116.4)),
                ("name", S(JINGSHAN_NAME.into())),
                ("worst_category", S("water".into())), // the category's name
            ]),
            ts: Some(ts),
        }
    );

    // A town none of whose facilities reported: unknown, no days, no coordinates, and
    // no coverage lines (there are no figures per category).
    let donghua = ledger.figures(DONGHUA);
    assert!(coverage_lines(&fx.registry, donghua, ts).is_empty());
    assert_eq!(
        parse(&town_status_line(&fx.registry, donghua, ts)),
        Point {
            measurement: "town_status".into(),
            tags: tags(&[
                ("town", "donghua"),
                ("cluster", "c01"),
                ("district", "dongcheng")
            ]),
            fields: fields(&[
                ("status", I(3)),
                ("sheltered", I(0)),
                ("name", S("东华门街道".into()))
            ]),
            ts: Some(ts),
        }
    );
}

#[test]
fn alert_and_ops_lines_parse_back_with_the_schema() {
    use Field::*;
    let at = Utc::now();
    let town = TownId::parse("jingshan").unwrap();
    let cases = [
        (
            alert_line(&town, "reserve_below_target", "critical", 1, at),
            Point {
                measurement: "alert".into(),
                tags: tags(&[
                    ("town", "jingshan"),
                    ("rule", "reserve_below_target"),
                    ("severity", "critical"),
                ]),
                fields: fields(&[("firing", I(1))]),
                ts: Some(ms(at)),
            },
        ),
        (
            alert_line(&town, "facility_silent", "warning", 0, at),
            Point {
                measurement: "alert".into(),
                tags: tags(&[
                    ("town", "jingshan"),
                    ("rule", "facility_silent"),
                    ("severity", "warning"),
                ]),
                fields: fields(&[("firing", I(0))]),
                ts: Some(ms(at)),
            },
        ),
        (
            ops_line("host a,b=c", &ops_counts(), 12, 1.5, at),
            Point {
                measurement: "ops".into(),
                tags: tags(&[("instance", "host a,b=c")]),
                fields: fields(&[
                    ("received", I(7)),
                    ("accepted", I(6)),
                    ("rejected", I(1)),
                    ("duplicates", I(2)),
                    ("sink_queue", I(12)),
                    ("sink_lag_s", F(1.5)),
                    ("outbox_pending", I(3)),
                    ("outbox_failed", I(0)),
                    ("store_paused", I(0)),
                ]),
                ts: Some(ms(at)),
            },
        ),
    ];
    for (line, want) in cases {
        assert_eq!(parse(&line), want, "{line}");
    }
}

proptest! {
    /// Any operator-written name survives as a string field (line breaks become
    /// spaces), and any text as a tag value parses as one tag.
    #[test]
    fn any_name_round_trips_as_a_string_field(name in "\\PC*", raw in any::<String>()) {
        let line = Line::new("town_status")
            .tag("town", "t")
            .string("name", &raw)
            .string("clean", &name)
            .finish(1)
            .unwrap();
        let point = parse(&line);
        prop_assert_eq!(&point.fields["name"], &Field::S(raw.replace(['\r', '\n'], " ")));
        prop_assert_eq!(&point.fields["clean"], &Field::S(name.clone()));

        let tagged = Line::new("m").tag("k", &name).int("v", 1).finish(1).unwrap();
        let point = parse(&tagged);
        prop_assert!(point.tags.len() <= 1, "{}", tagged);
        prop_assert_eq!(point.fields.len(), 1);
    }
}
