//! The MQTT wire format as a gateway vendor meets it: topics, reading and status
//! payloads, what is accepted and what each rejection says.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use reserve::reading::{
    Observation, PowerObservation, PowerState, PumpState, Reading, WaterObservation,
};
use reserve::registry::{
    Category, CategoryIdx, Cluster, ClusterIdx, District, DistrictIdx, Facility, FacilityIdx,
    FacilityKind, Group, Registry, RegistryParts, Target, Town, TownIdx,
};
use reserve::wire::{
    self, Connectivity, DecodeContext, DecodedReadings, READING_FILTER, RejectReason, Rejected,
    STATUS_FILTER, Topic, TopicKind, WirePower, WireReading, WireTs, WireWater,
};
use reserve::{CategoryId, ClusterId, DistrictId, FacilityId, TownId};

const WATER: CategoryIdx = CategoryIdx(0);
const FOOD: CategoryIdx = CategoryIdx(1);
const BLANKET: CategoryIdx = CategoryIdx(2);
const JINGSHAN: TownIdx = TownIdx(0);
const DONGHUAMEN: TownIdx = TownIdx(1);
const WH1: FacilityIdx = FacilityIdx(0);
const WP1: FacilityIdx = FacilityIdx(1);
const PU1: FacilityIdx = FacilityIdx(2);

const WH1_TOPIC: &str = "stockpile/v1/jingshan/wh-1/reading";
const WP1_TOPIC: &str = "stockpile/v1/jingshan/wp-1/reading";
const PU1_TOPIC: &str = "stockpile/v1/jingshan/pu-1/reading";

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

fn town(id: &str) -> Town {
    Town {
        id: TownId::parse(id).unwrap(),
        name: id.into(),
        district: DistrictIdx(0),
        cluster: ClusterIdx(0),
        population: 10_000,
        groups: Default::default(),
        lat: None,
        lon: None,
        facilities: vec![],
    }
}

/// Jingshan has a warehouse (at most 50,000 of water), a 60,000 L water point and a
/// power unit with a 500 L tank; Donghuamen a warehouse. Twelve categories, so "known:"
/// lists are capped.
fn registry() -> Registry {
    let mut categories = ["water", "food", "blanket", "formula", "medkit"].to_vec();
    categories.extend(["c6", "c7", "c8", "c9", "c10", "c11", "c12"]);
    Registry::build(RegistryParts {
        target: Target::default(),
        categories: categories
            .into_iter()
            .map(|id| Category {
                id: CategoryId::parse(id).unwrap(),
                name: id.into(),
                names: Default::default(),
                unit: "u".into(),
                daily_need: 1.0,
                group: Group::All,
            })
            .collect(),
        water_category: Some(WATER),
        districts: vec![District {
            id: DistrictId::parse("dongcheng").unwrap(),
            name: "东城区".into(),
        }],
        clusters: vec![Cluster {
            id: ClusterId::parse("c01").unwrap(),
            name: "组团一".into(),
        }],
        towns: vec![town("jingshan"), town("donghuamen")],
        facilities: vec![
            facility("wh-1", JINGSHAN, FacilityKind::Warehouse),
            facility(
                "wp-1",
                JINGSHAN,
                FacilityKind::WaterPoint {
                    capacity_l: Some(60_000.0),
                },
            ),
            facility(
                "pu-1",
                JINGSHAN,
                FacilityKind::PowerUnit {
                    fuel_capacity_l: 500.0,
                    burn_l_per_h: 5.0,
                    min_battery_pct: 50.0,
                },
            ),
            facility("wh-2", DONGHUAMEN, FacilityKind::Warehouse),
        ],
        ..Default::default()
    })
    .with_warehouse_max([((WH1, WATER), 50_000.0)])
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

/// Server time in every table unless a row says otherwise.
fn now() -> DateTime<Utc> {
    at("2026-11-24T06:00:00Z")
}

fn decode_at(
    registry: &Registry,
    now: DateTime<Utc>,
    topic: &str,
    payload: &[u8],
) -> Result<DecodedReadings, Rejected> {
    let topic = wire::parse_topic(topic)?;
    wire::decode_readings(&topic, payload, &DecodeContext::new(registry, now))
}

fn decode(registry: &Registry, topic: &str, payload: &str) -> Result<DecodedReadings, Rejected> {
    decode_at(registry, now(), topic, payload.as_bytes())
}

fn stock(ts: &str, seq: Option<u64>, items: &[(CategoryIdx, f64)]) -> Reading {
    Reading {
        facility: WH1,
        ts: at(ts),
        seq,
        observation: Observation::Stock(items.to_vec()),
    }
}

#[test]
fn every_reject_reason_has_a_row_that_says_what_is_wrong() {
    let registry = registry();
    let big = format!(
        r#"{{"ts": "2026-11-24T05:00:00Z", "stock": {{"water": 1}}, "pad": "{}"}}"#,
        "x".repeat(wire::MAX_PAYLOAD_BYTES)
    );
    // (topic, payload, reason, substring of the detail)
    let rows: &[(&str, &str, RejectReason, &str)] = &[
        (
            WH1_TOPIC,
            &big,
            RejectReason::TooLarge,
            "the limit is 262144",
        ),
        (WH1_TOPIC, "", RejectReason::NotJson, "payload is empty"),
        (WH1_TOPIC, "  \n", RejectReason::NotJson, "payload is empty"),
        (
            WH1_TOPIC,
            "hello",
            RejectReason::NotJson,
            "not JSON: expected value",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "stock": {"#,
            RejectReason::NotJson,
            "not JSON (truncated): EOF while parsing an object",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": true, garbage"#,
            RejectReason::NotJson,
            "key must be a string",
        ),
        (
            WH1_TOPIC,
            r#"[{"ts": 1}, oops]"#,
            RejectReason::NotJson,
            "not JSON",
        ),
        (
            "stockpile/v2/jingshan/wh-1/reading",
            "{}",
            RejectReason::BadTopic,
            "has version \"v2\"; this server speaks v1",
        ),
        (
            "sensors/jingshan/wh-1",
            "{}",
            RejectReason::BadTopic,
            "expected stockpile/v1/{town}/{facility}/reading",
        ),
        (
            "stockpile/v1/jingshan/wh-1",
            "{}",
            RejectReason::BadTopic,
            "wrong number of levels",
        ),
        (
            "stockpile/v1/jingshan/wh-1/reading/extra",
            "{}",
            RejectReason::BadTopic,
            "wrong number of levels",
        ),
        (
            "stockpile/v1/Jingshan/wh-1/reading",
            "{}",
            RejectReason::BadTopic,
            "town id \"Jingshan\" may contain only a-z, 0-9 and '-'",
        ),
        (
            "stockpile/v1/jingshan//reading",
            "{}",
            RejectReason::BadTopic,
            "facility id is empty",
        ),
        (
            "stockpile/v1/jingshan/wh-1/readings",
            "{}",
            RejectReason::BadTopic,
            "ends in \"readings\", expected \"reading\" or \"status\"",
        ),
        (
            "stockpile/v1/jingshan/wh-1/status",
            "online",
            RejectReason::BadTopic,
            "is a status topic, not a reading topic",
        ),
        (
            "stockpile/v1/nowhere/wh-1/reading",
            "{}",
            RejectReason::UnknownTown,
            "unknown town \"nowhere\"",
        ),
        (
            "stockpile/v1/jingshan/wh-9/reading",
            "{}",
            RejectReason::UnknownFacility,
            "unknown facility \"wh-9\" (town \"jingshan\" has: wh-1, wp-1, pu-1)",
        ),
        (
            "stockpile/v1/jingshan/wh-2/reading",
            "{}",
            RejectReason::FacilityNotInTown,
            "facility \"wh-2\" belongs to town \"donghuamen\", not \"jingshan\"",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "water": {"level_l": 1, "pump": "ok", "potable": true}}"#,
            RejectReason::WrongKind,
            "facility \"wh-1\" is a warehouse: it sends \"stock\", not \"water\"",
        ),
        (
            PU1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "stock": {"water": 1}}"#,
            RejectReason::WrongKind,
            "facility \"pu-1\" is a power_unit: it sends \"power\", not \"stock\"",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "stock": {"watr": 1}}"#,
            RejectReason::UnknownCategory,
            "unknown category \"watr\" in stock (known: water, food, blanket, formula, medkit, c6, c7, c8, c9, c10, … and 2 more)",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "stock": {"water": -5}}"#,
            RejectReason::BadNumber,
            "stock.water is -5; it must be ≥ 0",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "stock": {"water": NaN}}"#,
            RejectReason::BadNumber,
            "stock.water: \"NaN\" is not a JSON number",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "stock": {"water": Infinity}}"#,
            RejectReason::BadNumber,
            "\"Infinity\" is not a JSON number",
        ),
        (
            WP1_TOPIC,
            "{\"ts\": \"2026-11-24T05:00:00Z\",\n \"water\": {\"level_l\": -Infinity, \"pump\": \"ok\", \"potable\": true}}",
            RejectReason::BadNumber,
            "water.level_l: \"-Infinity\" is not a JSON number",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "stock": {"water": 1e999}}"#,
            RejectReason::BadNumber,
            "stock.water: number \"1e999\" is out of range",
        ),
        (
            WP1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "water": {"level_l": 2e12, "pump": "ok", "potable": true}}"#,
            RejectReason::BadNumber,
            "water.level_l is 2000000000000, above the limit of 1000000000000",
        ),
        (
            PU1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "power": {"fuel_l": 380, "battery_pct": 120, "state": "standby"}}"#,
            RejectReason::BadNumber,
            "power.battery_pct is 120, above the limit of 100",
        ),
        (
            PU1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "power": {"fuel_l": 380, "state": "running", "burn_l_per_h": -2}}"#,
            RejectReason::BadNumber,
            "power.burn_l_per_h is -2; it must be ≥ 0",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T06:10:00Z", "stock": {"water": 1}}"#,
            RejectReason::TsInFuture,
            "ts 2026-11-24T06:10:00Z is 10m ahead of server time 2026-11-24T06:00:00Z (limit 5m)",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T14:10:00+08:00", "stock": {"water": 1}}"#,
            RejectReason::TsInFuture,
            "ts 2026-11-24T06:10:00Z is 10m ahead",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": 1795500000000000, "stock": {"water": 1}}"#,
            RejectReason::TsInFuture,
            "looks like epoch microseconds",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": 9223372036854775807, "stock": {"water": 1}}"#,
            RejectReason::TsInFuture,
            "ts 9223372036854775807 is too far in the future to represent",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": -9223372036854775808, "stock": {"water": 1}}"#,
            RejectReason::TsTooOld,
            "ts -9223372036854775808 is too far in the past to represent",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": 9223372036854775808, "stock": {"water": 1}}"#,
            RejectReason::BadPayload,
            "ts: 9223372036854775808 is out of range for epoch milliseconds",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-08-01T00:00:00Z", "stock": {"water": 1}}"#,
            RejectReason::TsTooOld,
            "ts 2026-08-01T00:00:00Z is 115d6h old, beyond the 90d history retention",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": 1795500000, "stock": {"water": 1}}"#,
            RejectReason::TsTooOld,
            "it looks like epoch seconds, ts must be milliseconds",
        ),
        (
            WH1_TOPIC,
            r#"{"stock": {"water": 1}}"#,
            RejectReason::BadPayload,
            "missing field `ts`",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "yesterday", "stock": {"water": 1}}"#,
            RejectReason::BadPayload,
            "ts: \"yesterday\" is not RFC 3339",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": 1795500000.5, "stock": {"water": 1}}"#,
            RejectReason::BadPayload,
            "ts: 1795500000.5 is not an integer; send integer epoch milliseconds",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": -6.4e300, "stock": {"water": 1}}"#,
            RejectReason::BadPayload,
            "ts: -6.4e300 is out of range for epoch milliseconds",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": 1795500000e3, "stock": {"water": 1}}"#,
            RejectReason::BadPayload,
            "ts: 1795500000000 is written with a fraction or exponent; send integer epoch milliseconds",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": 1e-300, "stock": {"water": 1}}"#,
            RejectReason::BadPayload,
            "ts: 1e-300 is not an integer",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": true, "stock": {"water": 1}}"#,
            RejectReason::BadPayload,
            "ts: invalid type: boolean `true`, expected an RFC 3339 string or integer epoch milliseconds",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "seq": -1, "stock": {"water": 1}}"#,
            RejectReason::BadPayload,
            "seq: invalid value: integer `-1`",
        ),
        (
            WP1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "water": {"level_l": 1, "pump": "broken", "potable": true}}"#,
            RejectReason::BadPayload,
            "water.pump: unknown variant `broken`, expected one of `ok`, `fault`, `off`",
        ),
        (
            WP1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "water": {"level_l": 1, "pump": "OK", "potable": true}}"#,
            RejectReason::BadPayload,
            "unknown variant `OK`",
        ),
        (
            WP1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "water": {"level_l": "12", "pump": "ok", "potable": true}}"#,
            RejectReason::BadPayload,
            "water.level_l: invalid type: string \"12\", expected f64",
        ),
        (
            WP1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "water": {"level_l": 12, "pump": "ok"}}"#,
            RejectReason::BadPayload,
            "water: missing field `potable`",
        ),
        (
            PU1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "power": {"fuel_l": 380, "state": "idle"}}"#,
            RejectReason::BadPayload,
            "power.state: unknown variant `idle`, expected one of `standby`, `running`, `fault`, `maintenance`",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "stock": {"water": "lots"}}"#,
            RejectReason::BadPayload,
            "stock.water: invalid type: string \"lots\"",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "stock": {}}"#,
            RejectReason::BadPayload,
            "stock is empty",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "stock": {"water": 1, "water": 2}}"#,
            RejectReason::BadPayload,
            "category \"water\" appears twice in stock",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "seq": 3}"#,
            RejectReason::BadPayload,
            "reading has none of \"stock\", \"water\", \"power\", \"shelter\"; facility \"wh-1\" is a warehouse and sends \"stock\"",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "stock": {"water": 1}, "water": {"level_l": 1, "pump": "ok", "potable": true}}"#,
            RejectReason::BadPayload,
            "reading has \"stock\" and \"water\"; send only \"stock\"",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "ts": "2026-11-24T05:01:00Z", "stock": {"water": 1}}"#,
            RejectReason::BadPayload,
            "duplicate field `ts`",
        ),
        (
            WH1_TOPIC,
            "42",
            RejectReason::BadPayload,
            "a reading is a JSON object, not a number",
        ),
        (
            WH1_TOPIC,
            r#""{\"ts\": 1}""#,
            RejectReason::BadPayload,
            "a reading is a JSON object, not a string",
        ),
        (
            WH1_TOPIC,
            "[]",
            RejectReason::BadPayload,
            "empty array; send at least one reading",
        ),
        (
            WP1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "water": {"level_l": 52000000, "pump": "ok", "potable": true}}"#,
            RejectReason::OverCapacity,
            "water.level_l is 52000000, above the facility's capacity_l 60000 (sensor units?)",
        ),
        (
            PU1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "power": {"fuel_l": 380000, "battery_pct": 96, "state": "standby"}}"#,
            RejectReason::OverCapacity,
            "power.fuel_l is 380000, above the facility's fuel_capacity_l 500 (sensor units?)",
        ),
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00Z", "stock": {"food": 9e11, "water": 50000.5}}"#,
            RejectReason::OverCapacity,
            "stock.water is 50000.5, above the facility's max.water 50000 (sensor units?)",
        ),
    ];
    for (topic, payload, reason, detail) in rows {
        let got = decode(&registry, topic, payload);
        let Err(rejected) = got else {
            panic!("{topic} {payload:.120}: accepted as {got:?}, want {reason}");
        };
        assert_eq!(
            (rejected.reason, rejected.reason.as_str()),
            (*reason, reason.as_str()),
            "{topic} {payload:.120}: {}",
            rejected.detail
        );
        assert!(
            rejected.detail.contains(detail),
            "{topic} {payload:.120}: detail {:?} lacks {detail:?}",
            rejected.detail
        );
    }
    let covered: std::collections::BTreeSet<RejectReason> = rows.iter().map(|r| r.2).collect();
    let missing: Vec<_> = RejectReason::ALL
        .into_iter()
        // Status payloads and over-long arrays have tests of their own.
        .filter(|r| {
            ![RejectReason::BadStatus, RejectReason::TooManyReadings].contains(r)
                && !covered.contains(r)
        })
        .collect();
    assert!(missing.is_empty(), "no row for {missing:?}");
}

#[test]
fn reject_reason_ids_are_stable_snake_case() {
    let ids: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        ids,
        [
            "too_large",
            "not_json",
            "bad_topic",
            "unknown_town",
            "unknown_facility",
            "facility_not_in_town",
            "wrong_kind",
            "unknown_category",
            "bad_number",
            "ts_in_future",
            "ts_too_old",
            "bad_payload",
            "bad_status",
            "too_many_readings",
            "over_capacity",
        ]
    );
    for reason in RejectReason::ALL {
        assert_eq!(
            serde_json::to_string(&reason).unwrap(),
            format!("\"{reason}\"")
        );
        assert_eq!(reason.as_str().parse::<RejectReason>(), Ok(reason));
    }
    let rejected = Rejected::new(RejectReason::UnknownTown, "unknown town \"x\"");
    assert_eq!(rejected.to_string(), "unknown_town: unknown town \"x\"");
}

#[test]
fn each_kind_decodes_with_rfc3339_offsets_and_epoch_ms() {
    let registry = registry();
    // (topic, payload, the reading ingest gets)
    let rows: Vec<(&str, &str, Reading)> = vec![
        (
            WH1_TOPIC,
            r#"{"ts": "2026-11-24T13:00:00+08:00", "seq": 7, "stock": {"food": 5400.5, "water": 12000}}"#,
            stock(
                "2026-11-24T05:00:00Z",
                Some(7),
                &[(WATER, 12000.0), (FOOD, 5400.5)],
            ),
        ),
        (
            WH1_TOPIC,
            // 2026-11-24T05:00:00.250Z; an unknown top-level field is ignored.
            r#"{"ts": 1795496400250, "stock": {"blanket": 0}, "rssi": -71}"#,
            stock("2026-11-24T05:00:00.250Z", None, &[(BLANKET, 0.0)]),
        ),
        (
            WP1_TOPIC,
            r#"{"ts": "2026-11-24T13:59:59+08:00", "water": {"level_l": 52000, "pump": "fault", "potable": false, "temp_c": 9}}"#,
            Reading {
                facility: WP1,
                ts: at("2026-11-24T05:59:59Z"),
                seq: None,
                observation: Observation::Water(WaterObservation {
                    level_l: 52000.0,
                    pump: PumpState::Fault,
                    potable: false,
                }),
            },
        ),
        (
            WP1_TOPIC,
            r#"{"ts": 1795496400000, "water": {"level_l": 0, "pump": "off", "potable": true}}"#,
            Reading {
                facility: WP1,
                ts: at("2026-11-24T05:00:00Z"),
                seq: None,
                observation: Observation::Water(WaterObservation {
                    level_l: 0.0,
                    pump: PumpState::Off,
                    potable: true,
                }),
            },
        ),
        (
            PU1_TOPIC,
            r#"{"ts": "2026-11-24T05:04:59-01:00", "seq": 0, "power": {"fuel_l": 380, "battery_pct": 100, "state": "running", "burn_l_per_h": 6.5}}"#,
            Reading {
                facility: PU1,
                ts: at("2026-11-24T06:04:59Z"),
                seq: Some(0),
                observation: Observation::Power(PowerObservation {
                    fuel_l: 380.0,
                    battery_pct: Some(100.0),
                    state: PowerState::Running,
                    burn_l_per_h: Some(6.5),
                }),
            },
        ),
        (
            PU1_TOPIC,
            // A measured burn of 0 (standby, no flow) falls back to the rated burn.
            r#"{"ts": 1795496400000, "power": {"fuel_l": 0, "state": "maintenance", "burn_l_per_h": 0}}"#,
            Reading {
                facility: PU1,
                ts: at("2026-11-24T05:00:00Z"),
                seq: None,
                observation: Observation::Power(PowerObservation {
                    fuel_l: 0.0,
                    battery_pct: None,
                    state: PowerState::Maintenance,
                    burn_l_per_h: None,
                }),
            },
        ),
    ];
    for (topic, payload, want) in rows {
        let got = decode(&registry, topic, payload).unwrap_or_else(|r| panic!("{payload}: {r}"));
        assert_eq!(got.facility, want.facility, "{payload}");
        assert_eq!(got.readings, vec![want], "{payload}");
        assert!(got.rejected.is_empty(), "{payload}");
    }
}

#[test]
fn the_limits_of_the_time_window_are_inclusive_and_configurable() {
    let registry = registry();
    let topic = wire::parse_topic(WH1_TOPIC).unwrap();
    let payload = |ts: &str| format!(r#"{{"ts": "{ts}", "stock": {{"water": 1}}}}"#);
    let ctx = DecodeContext::new(&registry, now());
    let reason = |ctx: &DecodeContext, ts: &str| {
        wire::decode_readings(&topic, payload(ts).as_bytes(), ctx)
            .err()
            .map(|r| r.reason)
    };
    assert_eq!(reason(&ctx, "2026-11-24T06:05:00Z"), None);
    assert_eq!(
        reason(&ctx, "2026-11-24T06:05:00.001Z"),
        Some(RejectReason::TsInFuture)
    );
    assert_eq!(reason(&ctx, "2026-08-26T06:00:00Z"), None);
    assert_eq!(
        reason(&ctx, "2026-08-26T05:59:59Z"),
        Some(RejectReason::TsTooOld)
    );
    let short = DecodeContext {
        retention: Duration::from_secs(3600),
        max_future: Duration::ZERO,
        // Exactly one reading with a whole-second ts fits.
        max_payload_bytes: payload("2026-11-24T05:00:00Z").len(),
        ..ctx
    };
    assert_eq!(reason(&short, "2026-11-24T05:00:00Z"), None);
    assert_eq!(
        reason(&short, "2026-11-24T04:59:59Z"),
        Some(RejectReason::TsTooOld)
    );
    assert_eq!(
        reason(&short, "2026-11-24T06:00:01Z"),
        Some(RejectReason::TsInFuture)
    );
    let long = wire::decode_readings(
        &topic,
        payload("2026-11-24T05:30:00.000000Z").as_bytes(),
        &short,
    );
    assert_eq!(long.unwrap_err().reason, RejectReason::TooLarge);
}

#[test]
fn a_backlog_is_applied_in_ts_order_and_one_bad_reading_loses_only_itself() {
    let registry = registry();
    let payload = r#"[
        {"ts": "2026-11-24T05:03:00Z", "seq": 4, "stock": {"water": 900}},
        {"ts": "2026-11-24T05:01:00Z", "seq": 2, "stock": {"water": 1100}},
        {"ts": "2026-11-24T05:02:00Z", "seq": 3, "stock": {"watr": 1000}},
        {"ts": "2026-11-24T05:01:00Z", "seq": 5, "stock": {"food": 10}},
        {"ts": "2026-11-24T13:00:00+08:00", "seq": 1, "stock": {"water": 1200}},
        "nonsense",
        {"ts": "2026-11-24T05:04:00Z", "seq": 6, "stock": {"water": NaN}}
    ]"#;
    let got = decode(&registry, WH1_TOPIC, payload);
    // NaN is not JSON, so it takes the whole message with it: a syntax error leaves
    // nothing to split into elements.
    assert_eq!(got.unwrap_err().reason, RejectReason::BadNumber);

    let payload = payload.replace("NaN", "-1");
    let got = decode(&registry, WH1_TOPIC, &payload).unwrap();
    let seqs: Vec<Option<u64>> = got.readings.iter().map(|r| r.seq).collect();
    // Sorted by ts; seq 2 and 5 share a ts and keep their array order.
    assert_eq!(seqs, [Some(1), Some(2), Some(5), Some(4)]);
    assert_eq!(
        got.readings[0],
        stock("2026-11-24T05:00:00Z", Some(1), &[(WATER, 1200.0)])
    );
    let rejected: Vec<(RejectReason, &str)> = got
        .rejected
        .iter()
        .map(|r| (r.reason, r.detail.as_str()))
        .collect();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert_eq!(rejected[0].0, RejectReason::UnknownCategory);
    assert!(
        rejected[0]
            .1
            .starts_with("element [2]: unknown category \"watr\""),
        "{rejected:?}"
    );
    assert_eq!(
        rejected[1],
        (
            RejectReason::BadPayload,
            "element [5]: a reading is a JSON object, not a string"
        )
    );
    assert_eq!(
        rejected[2],
        (
            RejectReason::BadNumber,
            "element [6]: stock.water is -1; it must be ≥ 0"
        )
    );
}

#[test]
fn an_array_over_the_reading_limit_is_rejected_whole_and_at_the_limit_accepted() {
    let registry = registry();
    let topic = wire::parse_topic(WH1_TOPIC).unwrap();
    let ctx = DecodeContext {
        max_readings: 3,
        ..DecodeContext::new(&registry, now())
    };
    let element =
        |i: usize| format!(r#"{{"ts": "2026-11-24T05:0{i}:00Z", "stock": {{"water": 10}}}}"#);
    let array = |n: usize| format!("[{}]", (0..n).map(element).collect::<Vec<_>>().join(","));
    let at_limit = wire::decode_readings(&topic, array(3).as_bytes(), &ctx).unwrap();
    assert_eq!(at_limit.readings.len(), 3);
    let over = wire::decode_readings(&topic, array(4).as_bytes(), &ctx).unwrap_err();
    assert_eq!(over.reason, RejectReason::TooManyReadings);
    assert!(
        over.detail.contains("more than 3 readings"),
        "{}",
        over.detail
    );

    // The flood of the issue: a 256 KiB array of 1s, at the default limit of 1000. One
    // rejection for the message, not one per element.
    let flood = format!("[{}1]", "1,".repeat(130_000));
    let ctx = DecodeContext::new(&registry, now());
    assert!(flood.len() <= ctx.max_payload_bytes);
    let got = wire::decode_readings(&topic, flood.as_bytes(), &ctx).unwrap_err();
    assert_eq!(got.reason, RejectReason::TooManyReadings);
    // Broken syntax past the limit is still not JSON: the scan goes to the end.
    let broken = format!("[{}1,]", "1,".repeat(2_000));
    let got = wire::decode_readings(&topic, broken.as_bytes(), &ctx).unwrap_err();
    assert_eq!(got.reason, RejectReason::NotJson);
}

#[test]
fn a_value_up_to_the_declared_capacity_counts_and_one_above_loses_only_its_reading() {
    let registry = registry();
    // (topic, array payload, quantities accepted, details of the rejected elements)
    let rows: &[(&str, &str, &[f64], &[&str])] = &[
        (
            WH1_TOPIC,
            // Food has no declared max: only MAX_QUANTITY bounds it.
            r#"[{"ts": 1795496400000, "stock": {"water": 50000, "food": 1e11}},
                {"ts": 1795496460000, "stock": {"water": 52000000}},
                {"ts": 1795496520000, "stock": {"water": 49999.5}}]"#,
            &[50_000.0, 1e11, 49_999.5],
            &[
                "element [1]: stock.water is 52000000, above the facility's max.water 50000 (sensor units?)",
            ],
        ),
        (
            WP1_TOPIC,
            r#"[{"ts": 1795496400000, "water": {"level_l": 60000, "pump": "ok", "potable": true}},
                {"ts": 1795496460000, "water": {"level_l": 60000.01, "pump": "ok", "potable": true}}]"#,
            &[60_000.0],
            &[
                "element [1]: water.level_l is 60000.01, above the facility's capacity_l 60000 (sensor units?)",
            ],
        ),
        (
            PU1_TOPIC,
            r#"[{"ts": 1795496400000, "power": {"fuel_l": 501, "state": "standby"}},
                {"ts": 1795496460000, "power": {"fuel_l": 500, "state": "standby"}}]"#,
            &[500.0],
            &[
                "element [0]: power.fuel_l is 501, above the facility's fuel_capacity_l 500 (sensor units?)",
            ],
        ),
        (
            // A warehouse without a declared max takes any plausible quantity.
            "stockpile/v1/donghuamen/wh-2/reading",
            r#"[{"ts": 1795496400000, "stock": {"water": 52000000}}]"#,
            &[52_000_000.0],
            &[],
        ),
    ];
    for (topic, payload, accepted, rejected) in rows {
        let got = decode(&registry, topic, payload).unwrap_or_else(|r| panic!("{payload}: {r}"));
        let quantities: Vec<f64> = got
            .readings
            .iter()
            .flat_map(|r| match &r.observation {
                Observation::Stock(items) => items.iter().map(|i| i.1).collect(),
                Observation::Water(w) => vec![w.level_l],
                Observation::Power(p) => vec![p.fuel_l],
                Observation::Shelter(o) => vec![o.occupancy as f64],
            })
            .collect();
        assert_eq!(&quantities, accepted, "{payload}");
        let details: Vec<&str> = got.rejected.iter().map(|r| r.detail.as_str()).collect();
        assert_eq!(&details, rejected, "{payload}");
        assert!(
            got.rejected
                .iter()
                .all(|r| r.reason == RejectReason::OverCapacity)
        );
    }
}

#[test]
fn an_array_of_only_bad_readings_is_decoded_with_nothing_accepted() {
    let registry = registry();
    let got = decode(
        &registry,
        WH1_TOPIC,
        r#"[{"ts": "2026-11-24T05:00:00Z"}, 7]"#,
    )
    .unwrap();
    assert!(got.readings.is_empty());
    let reasons: Vec<RejectReason> = got.rejected.iter().map(|r| r.reason).collect();
    assert_eq!(
        reasons,
        [RejectReason::BadPayload, RejectReason::BadPayload]
    );
}

#[test]
fn the_design_examples_decode_verbatim() {
    let registry = registry();
    // docs/design.md#payloads, byte for byte. Each is decoded a minute after its own ts:
    // the epoch-ms example (1763960400000) is 2025-11-24, a year before the other two.
    let rows: Vec<(&str, &str, Reading)> = vec![
        (
            WH1_TOPIC,
            "{\"ts\": \"2026-11-24T05:00:00Z\", \"seq\": 1042,\n \"stock\": {\"water\": 12000, \"food\": 5400, \"blanket\": 800}}",
            stock(
                "2026-11-24T05:00:00Z",
                Some(1042),
                &[(WATER, 12000.0), (FOOD, 5400.0), (BLANKET, 800.0)],
            ),
        ),
        (
            WP1_TOPIC,
            r#"{"ts": 1763960400000, "water": {"level_l": 52000, "pump": "ok", "potable": true}}"#,
            Reading {
                facility: WP1,
                ts: at("2025-11-24T05:00:00Z"),
                seq: None,
                observation: Observation::Water(WaterObservation {
                    level_l: 52000.0,
                    pump: PumpState::Ok,
                    potable: true,
                }),
            },
        ),
        (
            PU1_TOPIC,
            r#"{"ts": "2026-11-24T05:00:00+08:00", "power": {"fuel_l": 380, "battery_pct": 96, "state": "standby"}}"#,
            Reading {
                facility: PU1,
                ts: at("2026-11-23T21:00:00Z"),
                seq: None,
                observation: Observation::Power(PowerObservation {
                    fuel_l: 380.0,
                    battery_pct: Some(96.0),
                    state: PowerState::Standby,
                    burn_l_per_h: None,
                }),
            },
        ),
    ];
    for (topic, payload, want) in rows {
        let now = want.ts + chrono::TimeDelta::minutes(1);
        let got = decode_at(&registry, now, topic, payload.as_bytes())
            .unwrap_or_else(|r| panic!("{payload}: {r}"));
        assert_eq!(got.readings, vec![want], "{payload}");
    }
}

fn sample_readings() -> Vec<Reading> {
    vec![
        stock(
            "2026-11-24T05:00:00.123456789Z",
            Some(u64::MAX),
            &[(WATER, 0.5), (BLANKET, 800.0)],
        ),
        Reading {
            facility: WP1,
            ts: at("2026-11-24T05:01:00Z"),
            seq: None,
            observation: Observation::Water(WaterObservation {
                level_l: 52000.25,
                pump: PumpState::Ok,
                potable: true,
            }),
        },
        Reading {
            facility: PU1,
            ts: at("2026-11-24T05:02:00Z"),
            seq: Some(9),
            observation: Observation::Power(PowerObservation {
                fuel_l: 380.0,
                battery_pct: None,
                state: PowerState::Fault,
                burn_l_per_h: Some(4.75),
            }),
        },
    ]
}

#[test]
fn encoded_readings_decode_to_the_same_readings() {
    let registry = registry();
    for reading in sample_readings() {
        let f = registry.facility(reading.facility);
        let topic = wire::reading_topic(registry.town(f.town).id.as_str(), f.id.as_str());
        let payload = wire::encode(&[WireReading::from_reading(&reading, &registry)]);
        assert_eq!(payload.first(), Some(&b'{'), "one reading is one object");
        let got = decode_at(&registry, now(), &topic, &payload).unwrap();
        assert_eq!(got.readings, vec![reading]);
    }

    // A backlog is an array; it comes back in ts order.
    let mut backlog = vec![
        stock("2026-11-24T05:02:00Z", Some(2), &[(FOOD, 1.0)]),
        stock("2026-11-24T05:01:00Z", Some(1), &[(FOOD, 2.0)]),
    ];
    let wire_backlog: Vec<WireReading> = backlog
        .iter()
        .map(|r| WireReading::from_reading(r, &registry))
        .collect();
    let payload = wire::encode(&wire_backlog);
    assert_eq!(payload.first(), Some(&b'['));
    let got = decode_at(&registry, now(), WH1_TOPIC, &payload).unwrap();
    backlog.reverse();
    assert_eq!(got.readings, backlog);
}

#[test]
fn wire_readings_keep_their_form_through_serde() {
    let offset = DateTime::parse_from_rfc3339("2026-11-24T13:00:00+08:00").unwrap();
    let rows: Vec<(WireReading, &str)> = vec![
        (
            WireReading::stock(offset, [("water", 12000.0), ("food", 5400.5)]).with_seq(3),
            r#"{"ts":"2026-11-24T13:00:00+08:00","seq":3,"stock":{"water":12000.0,"food":5400.5}}"#,
        ),
        (
            WireReading::water(
                WireTs::EpochMs(1795496400000),
                WireWater {
                    level_l: 52000.0,
                    pump: PumpState::Ok,
                    potable: true,
                },
            ),
            r#"{"ts":1795496400000,"water":{"level_l":52000.0,"pump":"ok","potable":true}}"#,
        ),
        (
            WireReading::power(
                at("2026-11-24T05:00:00.5Z"),
                WirePower {
                    fuel_l: 380.0,
                    battery_pct: Some(96.0),
                    state: PowerState::Standby,
                    burn_l_per_h: None,
                },
            ),
            r#"{"ts":"2026-11-24T05:00:00.500Z","power":{"fuel_l":380.0,"battery_pct":96.0,"state":"standby"}}"#,
        ),
    ];
    for (reading, json) in rows {
        let encoded = wire::encode(std::slice::from_ref(&reading));
        assert_eq!(String::from_utf8(encoded).unwrap(), json);
        let back: WireReading = serde_json::from_str(json).unwrap();
        assert_eq!(back, reading);
    }
}

#[test]
fn category_keys_borrow_from_the_payload_unless_escaped() {
    let plain: WireReading = serde_json::from_str(r#"{"ts": 1, "stock": {"water": 1}}"#).unwrap();
    let escaped: WireReading =
        serde_json::from_str(r#"{"ts": 1, "stock": {"w\u0061ter": 1}}"#).unwrap();
    let key = |r: WireReading<'static>| r.stock.unwrap().0.remove(0).0;
    assert!(matches!(key(plain), Cow::Borrowed("water")));
    assert!(matches!(key(escaped), Cow::Owned(k) if k == "water"));
}

#[test]
fn topics_parse_and_build() {
    let ok: &[(&str, Topic)] = &[
        (
            "stockpile/v1/jingshan/wh-1/reading",
            Topic {
                town: "jingshan",
                facility: "wh-1",
                kind: TopicKind::Reading,
            },
        ),
        (
            "stockpile/v1/donghuamen/pu-12/status",
            Topic {
                town: "donghuamen",
                facility: "pu-12",
                kind: TopicKind::Status,
            },
        ),
    ];
    for (text, want) in ok {
        let topic = wire::parse_topic(text).unwrap();
        assert_eq!(&topic, want);
        assert_eq!(topic.to_string(), *text);
    }
    assert_eq!(wire::reading_topic("jingshan", "wh-1"), ok[0].0);
    assert_eq!(wire::status_topic("donghuamen", "pu-12"), ok[1].0);
    assert_eq!(
        wire::town_filter("jingshan", TopicKind::Reading),
        "stockpile/v1/jingshan/+/reading"
    );
    assert_eq!(READING_FILTER, "stockpile/v1/+/+/reading");
    assert_eq!(STATUS_FILTER, "stockpile/v1/+/+/status");
    // Filters are not topics: a gateway cannot publish to a wildcard.
    assert_eq!(
        wire::parse_topic(READING_FILTER).unwrap_err().reason,
        RejectReason::BadTopic
    );
}

#[test]
fn topics_of_status_messages_resolve_like_readings() {
    let registry = registry();
    let rows: &[(&str, Result<FacilityIdx, RejectReason>)] = &[
        ("stockpile/v1/jingshan/pu-1/status", Ok(PU1)),
        ("stockpile/v1/donghuamen/wh-2/status", Ok(FacilityIdx(3))),
        (
            "stockpile/v1/nowhere/pu-1/status",
            Err(RejectReason::UnknownTown),
        ),
        (
            "stockpile/v1/jingshan/pu-9/status",
            Err(RejectReason::UnknownFacility),
        ),
        (
            "stockpile/v1/donghuamen/pu-1/status",
            Err(RejectReason::FacilityNotInTown),
        ),
    ];
    for (text, want) in rows {
        let topic = wire::parse_topic(text).unwrap();
        let got = wire::resolve_topic(&topic, &registry).map_err(|r| r.reason);
        assert_eq!(&got, want, "{text}");
    }
}

#[test]
fn status_payloads_accept_what_gateways_send() {
    let oversize = "online".repeat(200);
    // Ok(state), or Err((reason, substring of the detail)).
    type Want = Result<Connectivity, (RejectReason, &'static str)>;
    let rows: &[(&[u8], Want)] = &[
        (b"online", Ok(Connectivity::Online)),
        (b"offline", Ok(Connectivity::Offline)),
        (b" ONLINE\r\n", Ok(Connectivity::Online)),
        (b"Offline", Ok(Connectivity::Offline)),
        (b"\"online\"", Ok(Connectivity::Online)),
        (br#"{"state": "offline"}"#, Ok(Connectivity::Offline)),
        (
            br#"{"state": " Online ", "ts": 1795496400000}"#,
            Ok(Connectivity::Online),
        ),
        (
            b"",
            Err((
                RejectReason::BadStatus,
                "status payload is empty (a cleared retained message)",
            )),
        ),
        (
            b"broken",
            Err((
                RejectReason::BadStatus,
                "status \"broken\" is neither \"online\" nor \"offline\"",
            )),
        ),
        (b"on line", Err((RejectReason::BadStatus, "neither"))),
        (
            br#"{"status": "online"}"#,
            Err((
                RejectReason::BadStatus,
                "status object: missing field `state`",
            )),
        ),
        (
            br#"{"state": true}"#,
            Err((RejectReason::BadStatus, "invalid type: boolean")),
        ),
        (
            b"\"online",
            Err((RejectReason::BadStatus, "status string: EOF")),
        ),
        (b"\xffonline", Err((RejectReason::BadStatus, "not UTF-8"))),
        (
            oversize.as_bytes(),
            Err((
                RejectReason::TooLarge,
                "status payload is 1200 bytes, the limit is 1024",
            )),
        ),
    ];
    for (payload, want) in rows {
        let got = wire::decode_status(payload);
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(got, *want, "{payload:?}"),
            (Err(got), Err((reason, detail))) => {
                assert_eq!(got.reason, *reason, "{payload:?}: {}", got.detail);
                assert!(
                    got.detail.contains(detail),
                    "{payload:?}: {:?} lacks {detail:?}",
                    got.detail
                );
            }
            (got, want) => panic!("{payload:?}: got {got:?}, want {want:?}"),
        }
    }
    for state in [Connectivity::Online, Connectivity::Offline] {
        assert_eq!(wire::decode_status(state.payload()), Ok(state));
    }
}

/// JSON-ish text: fragments of valid readings, broken syntax and hostile numbers, so
/// the strategy reaches the decoder's deeper paths, not only "not JSON".
fn json_soup() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"ts\"",
        "\"seq\"",
        "\"stock\"",
        "\"water\"",
        "\"power\"",
        "\"level_l\"",
        "\"pump\"",
        "\"ok\"",
        "\"potable\"",
        "true",
        "null",
        "\"fuel_l\"",
        "\"battery_pct\"",
        "\"state\"",
        "\"standby\"",
        "\"burn_l_per_h\"",
        "\"food\"",
        "\"2026-11-24T05:00:00Z\"",
        "1795496400000",
        "-1",
        "0",
        "1e999",
        "NaN",
        "-Infinity",
        "12.5",
        "\"\\u0000\"",
        "\n",
        " ",
        "\"景\"",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(payload in prop::collection::vec(any::<u8>(), 0..512)) {
        let registry = registry();
        let ctx = DecodeContext::new(&registry, now());
        for topic in [WH1_TOPIC, WP1_TOPIC, PU1_TOPIC] {
            let topic = wire::parse_topic(topic).unwrap();
            let _ = wire::decode_readings(&topic, &payload, &ctx);
        }
        let _ = wire::decode_status(&payload);
        let _ = wire::parse_topic(&String::from_utf8_lossy(&payload));
    }

    #[test]
    fn json_like_payloads_never_panic_and_every_detail_is_bounded(payload in json_soup()) {
        let registry = registry();
        let ctx = DecodeContext::new(&registry, now());
        for topic in [WH1_TOPIC, WP1_TOPIC, PU1_TOPIC] {
            let topic = wire::parse_topic(topic).unwrap();
            match wire::decode_readings(&topic, payload.as_bytes(), &ctx) {
                Ok(decoded) => {
                    for r in &decoded.readings {
                        let numbers: Vec<f64> = match &r.observation {
                            Observation::Stock(items) => items.iter().map(|i| i.1).collect(),
                            Observation::Water(w) => vec![w.level_l],
                            Observation::Power(p) => [Some(p.fuel_l), p.battery_pct, p.burn_l_per_h].into_iter().flatten().collect(),
                            Observation::Shelter(o) => vec![o.occupancy as f64],
                        };
                        prop_assert!(numbers.iter().all(|n| n.is_finite() && *n >= 0.0));
                    }
                    for r in &decoded.rejected {
                        prop_assert!(r.detail.len() < 600);
                    }
                }
                Err(r) => prop_assert!(r.detail.len() < 600),
            }
        }
        let _ = wire::decode_status(payload.as_bytes());
    }
}

#[test]
fn fixtures_mean_what_the_tables_assume() {
    // Guards the fixtures the tables above rely on.
    let registry = registry();
    assert_eq!(registry.town_idx("donghuamen"), Some(DONGHUAMEN));
    assert_eq!(registry.facility_idx("wh-1"), Some(WH1));
    assert_eq!(
        TimeZone::timestamp_millis_opt(&Utc, 1795496400000).unwrap(),
        at("2026-11-24T05:00:00Z")
    );
}
