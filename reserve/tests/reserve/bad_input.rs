//! Property tests: whatever a gateway or a registry file holds, `reserve` answers with a
//! reason (a [`Rejected`] or located load errors), never a panic, and what it accepts is
//! within the limits it promises.
//!
//! The generators are structured, not only random bytes: readings built from valid
//! fields with some mutated (huge, negative and NaN-spelled numbers, wrong types, long
//! and unicode strings, duplicate keys, arrays of arrays, deep nesting, truncation), topics
//! built from plausible levels, and registries made by mutating a valid TOML file and its
//! CSV table line by line. So the cases reach every check, not only "not JSON".
//!
//! Each property runs a few thousand cases in the normal suite (under ~5 s each in a
//! debug build). For a long run, set `PROPTEST_CASES`, which every property here obeys:
//!
//! ```sh
//! PROPTEST_CASES=200000 cargo test -p reserve --release --test reserve bad_input::
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use proptest::test_runner::Config;
use reserve::Registry;
use reserve::reading::Observation;
use reserve::registry::{FacilityKind, LoadErrors, Source, load_registry};
use reserve::wire::{self, DecodeContext, MAX_DETAIL_BYTES, RejectReason, Rejected, TopicKind};

/// Cases per property: `PROPTEST_CASES` when set (the long run), else `default`.
fn cases(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        // Shrinking a big payload in a debug build takes long; a failure prints its seed.
        max_shrink_iters: 2_000,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------
// The registry every decoding property runs against
// ---------------------------------------------------------------------------------------

const REGISTRY: &str = r#"
[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0
[[category]]
id = "food"
name = "Food"
unit = "ration"
daily_need = 3.0
[[town]]
id = "t1"
name = "景山街道"
district = "dongcheng"
cluster = "c01"
population = 30000
groups = { infants = 300 }
[[town]]
id = "t2"
name = "Two"
district = "dongcheng"
cluster = "c01"
population = 1000
[[facility]]
id = "wh"
town = "t1"
kind = "warehouse"
max = { water = 50000 }
[[facility]]
id = "wh-b"
town = "t1"
kind = "warehouse"
[[facility]]
id = "wp"
town = "t1"
kind = "water_point"
capacity_l = 60000
[[facility]]
id = "wp-b"
town = "t1"
kind = "water_point"
[[facility]]
id = "pu"
town = "t1"
kind = "power_unit"
fuel_capacity_l = 500
burn_l_per_h = 5.0
[[facility]]
id = "other"
town = "t2"
kind = "warehouse"
"#;

/// Loaded once: the properties only read it.
fn registry() -> &'static Registry {
    static REGISTRY_ONCE: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY_ONCE.get_or_init(|| {
        let source = Source {
            name: "registry.toml".into(),
            text: REGISTRY.into(),
        };
        load_registry(&source, &[], &mut |_| Err("no csv".into())).unwrap_or_else(|e| panic!("{e}"))
    })
}

const FACILITIES: [&str; 5] = ["wh", "wh-b", "wp", "wp-b", "pu"];

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T06:00:00Z")
        .unwrap()
        .to_utc()
}

/// What every rejection must be: a known reason and a bounded, non-empty detail.
fn check_rejected(r: &Rejected) -> Result<(), TestCaseError> {
    prop_assert!(RejectReason::ALL.contains(&r.reason));
    prop_assert!(!r.detail.is_empty(), "{} has no detail", r.reason);
    prop_assert!(
        r.detail.len() <= MAX_DETAIL_BYTES + '…'.len_utf8(),
        "detail of {} bytes",
        r.detail.len()
    );
    Ok(())
}

/// Decodes `payload` for `facility` and checks what came out: every rejection has a
/// reason, and every accepted number is finite, ≥ 0 and within the declared capacity.
fn decode_and_check(
    registry: &Registry,
    facility: &str,
    payload: &[u8],
) -> Result<Option<usize>, TestCaseError> {
    let f = registry.facility_idx(facility).expect("fixture facility");
    let town = registry.town(registry.facility(f).town).id.as_str();
    let topic_text = wire::reading_topic(town, facility);
    let topic = wire::parse_topic(&topic_text).expect("fixture topic");
    let ctx = DecodeContext::new(registry, now());
    let decoded = match wire::decode_readings(&topic, payload, &ctx) {
        Ok(decoded) => decoded,
        Err(r) => {
            check_rejected(&r)?;
            return Ok(None);
        }
    };
    prop_assert_eq!(decoded.facility, f);
    prop_assert!(!decoded.readings.is_empty() || !decoded.rejected.is_empty());
    prop_assert!(decoded.readings.len() + decoded.rejected.len() <= ctx.max_readings);
    for r in &decoded.rejected {
        check_rejected(r)?;
        prop_assert!(r.detail.starts_with("element ["), "{}", r.detail);
    }
    let mut last_ts = None;
    for reading in &decoded.readings {
        prop_assert_eq!(reading.facility, f);
        prop_assert!(last_ts <= Some(reading.ts), "readings sorted by ts");
        last_ts = Some(reading.ts);
        prop_assert!(reading.ts <= now() + TimeDelta::minutes(5));
        let capacity = |v: f64, cap: Option<f64>| {
            (0.0..=wire::MAX_QUANTITY).contains(&v) && cap.is_none_or(|c| v <= c)
        };
        match (&reading.observation, &registry.facility(f).kind) {
            (Observation::Stock(items), FacilityKind::Warehouse) => {
                prop_assert!(!items.is_empty());
                let categories: BTreeSet<_> = items.iter().map(|i| i.0).collect();
                prop_assert_eq!(categories.len(), items.len(), "a category twice");
                for &(c, v) in items {
                    prop_assert!(capacity(v, registry.warehouse_max(f, c)), "stock {v}");
                }
            }
            (Observation::Water(w), FacilityKind::WaterPoint { capacity_l }) => {
                prop_assert!(capacity(w.level_l, *capacity_l), "level {}", w.level_l);
            }
            (
                Observation::Power(p),
                FacilityKind::PowerUnit {
                    fuel_capacity_l, ..
                },
            ) => {
                prop_assert!(
                    capacity(p.fuel_l, Some(*fuel_capacity_l)),
                    "fuel {}",
                    p.fuel_l
                );
                prop_assert!(p.battery_pct.is_none_or(|b| (0.0..=100.0).contains(&b)));
                prop_assert!(p.burn_l_per_h.is_none_or(|b| b > 0.0 && b.is_finite()));
            }
            (observation, kind) => {
                prop_assert!(false, "{observation:?} accepted for a {kind:?}");
            }
        }
    }
    Ok(Some(decoded.readings.len()))
}

// ---------------------------------------------------------------------------------------
// JSON generators
// ---------------------------------------------------------------------------------------

/// A JSON-ish value. Objects are lists of pairs, so keys can repeat; `Raw` is written as
/// is (numbers, `NaN`, `Infinity`, `true`, broken tokens).
#[derive(Debug, Clone)]
enum Json {
    Raw(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn write(&self, out: &mut String) {
        match self {
            Json::Raw(raw) => out.push_str(raw),
            Json::Str(s) => write_str(s, out),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Obj(pairs) => {
                out.push('{');
                for (i, (key, value)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_str(key, out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }
}

/// A JSON string literal; `\u{1}` marks where a raw escape (`\ud800`, a lone surrogate)
/// goes, so generators can produce escapes serde must judge.
fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{1}' => out.push_str("\\ud800"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Numbers as gateways write them, hostile ones included.
fn number() -> impl Strategy<Value = Json> {
    let hostile = prop::sample::select(vec![
        "NaN",
        "-NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        "+1",
        "1e400",
        "-1e400",
        "1e-400",
        "123456789012345678901234567890",
        "-123456789012345678901234567890",
        "18446744073709551616",
        "9223372036854775808",
        "-9223372036854775809",
        "-0",
        "0.0",
        "1E3",
        "01",
        "1.",
        ".5",
        "0x10",
        "1e",
        "-",
    ])
    .prop_map(|s| Json::Raw(s.to_owned()));
    prop_oneof![
        3 => (0.0..100_000.0f64).prop_map(|v| Json::Raw(format!("{v}"))),
        1 => any::<f64>().prop_map(|v| Json::Raw(format!("{v:?}"))),
        1 => any::<i64>().prop_map(|v| Json::Raw(v.to_string())),
        1 => any::<u64>().prop_map(|v| Json::Raw(v.to_string())),
        2 => hostile,
    ]
}

/// Strings: short ids, unicode, control characters and escapes, and long ones.
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "", "ok", "fault", "off", "OK", "standby", "running", "maintenance", "idle",
            "online", "water", "food", "2026-11-24T05:00:00Z", "2026-11-24T05:00:00+08:00",
            "2026-13-40T99:99:99Z", "yesterday", "\u{1}", "景山", "\u{0}", "\u{feff}",
        ])
        .prop_map(str::to_owned),
        2 => any::<String>(),
        1 => (0..4_000usize, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
    ]
}

/// Any value, nested a few levels.
fn any_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        number(),
        string().prop_map(Json::Str),
        prop::sample::select(vec!["true", "false", "null"]).prop_map(|s| Json::Raw(s.into())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Arr),
            prop::collection::vec((string(), inner), 0..6).prop_map(Json::Obj),
        ]
    })
}

/// A field's value: usually one that fits, sometimes anything at all.
fn field(fits: impl Strategy<Value = Json> + 'static) -> impl Strategy<Value = Json> {
    prop_oneof![12 => fits.boxed(), 1 => any_json().boxed()]
}

/// A `ts`: within the acceptance window mostly, in both forms, sometimes far off.
fn ts() -> impl Strategy<Value = Json> {
    let now_ms = now().timestamp_millis();
    prop_oneof![
        6 => (-200i64..8_000_000).prop_map(move |d| Json::Raw((now_ms - d * 1000).to_string())),
        6 => (-200i64..3600).prop_map(|d| {
            let t = now() + TimeDelta::seconds(d);
            Json::Str(t.to_rfc3339())
        }),
        1 => any::<i64>().prop_map(|ms| Json::Raw(ms.to_string())),
        1 => number(),
    ]
}

fn quantity() -> impl Strategy<Value = Json> {
    prop_oneof![
        12 => (0.0..70_000.0f64).prop_map(|v| Json::Raw(format!("{v}"))),
        1 => number(),
    ]
}

fn enum_str(values: &'static [&'static str]) -> impl Strategy<Value = Json> {
    prop_oneof![
        12 => prop::sample::select(values).prop_map(|s| Json::Str(s.to_owned())),
        1 => string().prop_map(Json::Str),
    ]
}

/// An object from optional fields; some keys may come twice, some unknown ones join.
fn object(fields: Vec<(&'static str, BoxedStrategy<Json>)>) -> impl Strategy<Value = Json> {
    let n = fields.len();
    let present = prop::collection::vec(prop::bool::weighted(0.97), n);
    let values: Vec<BoxedStrategy<Json>> = fields.iter().map(|(_, s)| s.clone()).collect();
    let names: Vec<&'static str> = fields.iter().map(|(k, _)| *k).collect();
    let extra = prop::option::weighted(0.1, (string(), any_json()));
    let duplicate = prop::option::weighted(0.05, (0..n.max(1), any_json()));
    (present, values, extra, duplicate).prop_map(move |(present, values, extra, duplicate)| {
        let mut pairs: Vec<(String, Json)> = names
            .iter()
            .zip(values)
            .zip(present)
            .filter(|(_, keep)| *keep)
            .map(|((k, v), _)| ((*k).to_owned(), v))
            .collect();
        if let Some((key, value)) = extra {
            pairs.push((key, value));
        }
        if let Some((i, value)) = duplicate {
            pairs.push((names[i % names.len()].to_owned(), value));
        }
        Json::Obj(pairs)
    })
}

/// A reading for any kind: valid-ish fields with mutations.
fn reading() -> impl Strategy<Value = Json> {
    let stock = prop::collection::vec(
        (
            prop_oneof![
                12 => prop::sample::select(vec!["water", "food"]).prop_map(str::to_owned),
                1 => string(),
            ],
            quantity(),
        ),
        0..4,
    )
    .prop_map(Json::Obj);
    let water = object(vec![
        ("level_l", field(quantity()).boxed()),
        ("pump", field(enum_str(&["ok", "fault", "off"])).boxed()),
        (
            "potable",
            field(prop::sample::select(vec!["true", "false"]).prop_map(|s| Json::Raw(s.into())))
                .boxed(),
        ),
    ]);
    let power = object(vec![
        ("fuel_l", field(quantity()).boxed()),
        (
            "battery_pct",
            field((0.0..120.0f64).prop_map(|v| Json::Raw(format!("{v}")))).boxed(),
        ),
        (
            "state",
            field(enum_str(&["standby", "running", "fault", "maintenance"])).boxed(),
        ),
        (
            "burn_l_per_h",
            field((0.0..20.0f64).prop_map(|v| Json::Raw(format!("{v}")))).boxed(),
        ),
    ]);
    let section = prop_oneof![
        4 => Just("stock"),
        4 => Just("water"),
        4 => Just("power"),
        1 => Just("none"),
    ];
    (section, field(stock), field(water), field(power)).prop_flat_map(
        |(section, stock, water, power)| {
            let body = match section {
                "stock" => vec![("stock", Just(stock).boxed())],
                "water" => vec![("water", Just(water).boxed())],
                "power" => vec![("power", Just(power).boxed())],
                _ => vec![],
            };
            let mut fields = vec![
                ("ts", field(ts()).boxed()),
                (
                    "seq",
                    field(any::<u32>().prop_map(|v| Json::Raw(v.to_string()))).boxed(),
                ),
            ];
            fields.extend(body);
            object(fields)
        },
    )
}

/// A whole payload: a reading, an array of them, arrays of arrays, deep nesting, or
/// anything; then perhaps cut short or given a stray byte.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let shape = prop_oneof![
        4 => reading(),
        3 => prop::collection::vec(prop_oneof![8 => reading(), 1 => any_json()], 0..8).prop_map(Json::Arr),
        1 => prop::collection::vec(prop::collection::vec(reading(), 0..3).prop_map(Json::Arr), 0..4)
            .prop_map(Json::Arr),
        1 => any_json(),
    ];
    let nesting = prop_oneof![
        20 => Just((0usize, "")),
        1 => (1..3_000usize, prop::sample::select(vec!["[", "{\"a\":", "[{\"stock\":"])),
    ];
    let damage = prop_oneof![
        20 => Just(Damage::None),
        1 => any::<prop::sample::Index>().prop_map(Damage::Truncate),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
        1 => prop::sample::select(vec!["\u{feff}", " \n\t", "\0"]).prop_map(Damage::Prefix),
    ];
    (shape, nesting, damage).prop_map(|(json, (depth, open), damage)| {
        let mut text = open.repeat(depth);
        json.write(&mut text);
        let mut bytes = text.into_bytes();
        match damage {
            Damage::None => {}
            Damage::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            Damage::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), b),
            Damage::Prefix(p) => bytes.splice(0..0, p.bytes()).for_each(drop),
        }
        bytes
    })
}

#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(prop::sample::Index),
    Insert(prop::sample::Index, u8),
    Prefix(&'static str),
}

// ---------------------------------------------------------------------------------------
// Properties: payloads, status, topics
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(2_000))]

    #[test]
    fn every_payload_is_decoded_or_rejected_with_a_reason(
        payload in payload(),
        facility in prop::sample::select(FACILITIES.to_vec()),
    ) {
        let registry = registry();
        decode_and_check(registry, facility, &payload)?;
    }


    #[test]
    fn every_status_payload_is_a_state_or_a_reason(
        payload in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2_000),
            any_json().prop_map(|j| j.text().into_bytes()),
            (string(), prop::sample::select(vec!["{\"state\": ", "\"", ""]))
                .prop_map(|(s, pre)| format!("{pre}{s}").into_bytes()),
        ],
    ) {
        if let Err(r) = wire::decode_status(&payload) {
            check_rejected(&r)?;
            prop_assert!([RejectReason::TooLarge, RejectReason::BadStatus].contains(&r.reason));
        }
    }
}

proptest! {
    // Cheap cases: more of them.
    #![proptest_config(cases(10_000))]

    #[test]
    fn a_reading_that_fits_is_accepted_whatever_its_form(
        facility in prop::sample::select(FACILITIES.to_vec()),
        value in 0.0..=1.0f64,
        ago_s in 0i64..86_400,
        epoch_ms in any::<bool>(),
        as_array in any::<bool>(),
        seq in prop::option::of(any::<u64>()),
    ) {
        // The generators above must be able to reach acceptance; this pins what it is.
        let registry = registry();
        let ts = now() - TimeDelta::seconds(ago_s);
        let ts = if epoch_ms { ts.timestamp_millis().to_string() } else { format!("{:?}", ts.to_rfc3339()) };
        let seq = seq.map(|s| format!(", \"seq\": {s}")).unwrap_or_default();
        let body = match facility {
            "wh" => format!("\"stock\": {{\"water\": {}, \"food\": 1e9}}", value * 50_000.0),
            "wh-b" => format!("\"stock\": {{\"food\": {}}}", value * 1e12),
            "wp" => format!("\"water\": {{\"level_l\": {}, \"pump\": \"ok\", \"potable\": true}}", value * 60_000.0),
            "wp-b" => format!("\"water\": {{\"level_l\": {}, \"pump\": \"off\", \"potable\": false}}", value * 1e12),
            _ => format!("\"power\": {{\"fuel_l\": {}, \"state\": \"running\", \"battery_pct\": 50}}", value * 500.0),
        };
        let mut payload = format!("{{\"ts\": {ts}{seq}, {body}}}");
        if as_array {
            payload = format!("[{payload}, {payload}]");
        }
        let accepted = decode_and_check(registry, facility, payload.as_bytes())?;
        prop_assert_eq!(accepted, Some(if as_array { 2 } else { 1 }), "{}", payload);
    }

    #[test]
    fn every_topic_parses_and_resolves_or_says_why(
        levels in prop::collection::vec(
            prop_oneof![
                3 => prop::sample::select(vec![
                    "stockpile", "v1", "v2", "t1", "t2", "wh", "wp", "pu", "other", "nope",
                    "reading", "status", "+", "#", "", "T1", "wh_1", "-", "景山", "$SYS",
                ]).prop_map(str::to_owned),
                1 => any::<String>(),
                1 => (0..5_000usize).prop_map(|n| "a".repeat(n)),
            ],
            0..8,
        ),
        canonical in any::<bool>(),
    ) {
        let registry = registry();
        let mut levels = levels;
        if canonical && levels.len() >= 3 {
            // Mostly well-formed, so the registry checks are reached too.
            levels.truncate(3);
            levels.splice(0..0, ["stockpile".to_owned(), "v1".to_owned()]);
        }
        let text = levels.join("/");
        match wire::parse_topic(&text) {
            Ok(topic) => {
                prop_assert_eq!(topic.to_string(), text.clone());
                prop_assert!(matches!(topic.kind, TopicKind::Reading | TopicKind::Status));
                match wire::resolve_topic(&topic, registry) {
                    Ok(f) => {
                        let facility = registry.facility(f);
                        prop_assert_eq!(facility.id.as_str(), topic.facility);
                        prop_assert_eq!(registry.town(facility.town).id.as_str(), topic.town);
                    }
                    Err(r) => {
                        check_rejected(&r)?;
                        prop_assert!([
                            RejectReason::UnknownTown,
                            RejectReason::UnknownFacility,
                            RejectReason::FacilityNotInTown,
                        ].contains(&r.reason));
                    }
                }
            }
            Err(r) => {
                check_rejected(&r)?;
                prop_assert_eq!(r.reason, RejectReason::BadTopic);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Properties: the registry loader
// ---------------------------------------------------------------------------------------

const MAIN: &str = r#"water_category = "water"
[target]
days = 3.0
warn_days = 3.5
stale_after = "10m"
[[target.override]]
town = "t1"
category = "water"
days = 4
[csv]
facilities = "facilities.csv"
towns = "towns.csv"
[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0
[[category]]
id = "formula"
name = "Infant formula"
unit = "kg"
daily_need = 0.15
group = "infants"
[[town]]
id = "t1"
name = "景山街道"
district = "dongcheng"
cluster = "c01"
population = 30000
lat = 39.93
lon = 116.40
groups = { infants = 300 }
[[facility]]
id = "t1-wh"
town = "t1"
kind = "warehouse"
max = { water = 50000, formula = 20 }
[[facility]]
id = "t1-pu"
town = "t1"
kind = "power_unit"
fuel_capacity_l = 500
burn_l_per_h = 5.0
min_battery_pct = 50
report_every = "60s"
[[contact]]
name = "Li Wei"
email = "li.wei@example.org"
phone = "+8613800000000"
lang = "zh"
towns = ["t1"]
"#;

const FACILITIES_CSV: &str = "id,town,kind,name,capacity_l,fuel_capacity_l,burn_l_per_h,max,report_every\n\
t2-wh,t2,warehouse,Two,,,,water=7000;formula=1,60s\n\
t2-wp,t2,water_point,\"Two, the well\",20000,,,,2m\n\
t2-pu,t2,power_unit,,,800,8,,\n";

const TOWNS_CSV: &str = "id,name,district,cluster,population,lat,lon,groups\n\
t2,Two,xicheng,c02,1000,39.94,116.37,infants=10;elderly=20\n\
t3,Three,xicheng,c02,5,,,\n";

/// Values that are wrong somewhere in a registry.
const HOSTILE_VALUES: &[&str] = &[
    "-1",
    "0",
    "nan",
    "-inf",
    "1e400",
    "99999999999999999999",
    "\"\"",
    "\"x\"",
    "\"景\"",
    "[]",
    "{}",
    "true",
    "\"0s\"",
    "\"400d\"",
    "\"99999999999999999999d\"",
    "\"1..2s\"",
    "{ water = -1 }",
    "{ nope = 1 }",
    "{ water = nan, water = 1 }",
    "[\"t9\"]",
    "\"t9\"",
    "\"water_point\"",
    "\"+0\"",
    "\"http://\"",
    "'''",
    "\"\\ud800\"",
];

/// Cells that are wrong somewhere in a CSV table.
const HOSTILE_CELLS: &[&str] = &[
    "",
    "-1",
    "NaN",
    "inf",
    "1e400",
    "x",
    "\"",
    "\"a\"\"b\"",
    "a,b",
    "water",
    "water=",
    "=1",
    "water=1;water=2",
    "nope=5",
    "infants=-1",
    "t9",
    "400d",
    "\u{feff}",
    "景山",
    "99999999999999999999",
];

/// A mutation of one line of a text.
#[derive(Debug, Clone)]
enum Edit {
    Delete(prop::sample::Index),
    Duplicate(prop::sample::Index),
    /// Replaces what follows the line's first `=` (TOML) or one of its cells (CSV).
    Value(
        prop::sample::Index,
        prop::sample::Index,
        prop::sample::Index,
    ),
    Insert(prop::sample::Index, String),
    Truncate(prop::sample::Index),
    Crlf,
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let index = any::<prop::sample::Index>;
    let edit = prop_oneof![
        1 => index().prop_map(Edit::Delete),
        1 => index().prop_map(Edit::Duplicate),
        4 => (index(), index(), index()).prop_map(|(l, c, v)| Edit::Value(l, c, v)),
        1 => (index(), prop_oneof![
            Just("[[town]]".to_owned()),
            Just("[[facility]]".to_owned()),
            Just("[target]".to_owned()),
            Just("id = \"t1\"".to_owned()),
            Just("max = { water = 1 }".to_owned()),
            any::<String>(),
        ]).prop_map(|(i, s)| Edit::Insert(i, s)),
        1 => index().prop_map(Edit::Truncate),
        1 => Just(Edit::Crlf),
    ];
    prop::collection::vec(edit, 0..4)
}

/// Applies `edits` to `text`; `csv` says how a value is replaced.
fn mutate(text: &str, edits: &[Edit], csv: bool) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut crlf = false;
    let mut cut = None;
    for edit in edits {
        if lines.is_empty() {
            break;
        }
        match edit {
            Edit::Delete(i) => {
                lines.remove(i.index(lines.len()));
            }
            Edit::Duplicate(i) => {
                let line = lines[i.index(lines.len())].clone();
                lines.insert(i.index(lines.len()), line);
            }
            Edit::Value(l, c, v) => {
                let at = l.index(lines.len());
                let line = &mut lines[at];
                if csv {
                    let mut cells: Vec<String> = line.split(',').map(str::to_owned).collect();
                    let cell = c.index(cells.len());
                    cells[cell] = v.get(HOSTILE_CELLS).to_string();
                    *line = cells.join(",");
                } else if let Some((key, _)) = line.split_once('=') {
                    *line = format!("{key}= {}", v.get(HOSTILE_VALUES));
                }
            }
            Edit::Insert(i, s) => lines.insert(i.index(lines.len() + 1), s.clone()),
            Edit::Truncate(i) => cut = Some(*i),
            Edit::Crlf => crlf = true,
        }
    }
    let mut out = lines.join(if crlf { "\r\n" } else { "\n" });
    if let Some(i) = cut {
        let mut at = i.index(out.len() + 1);
        while !out.is_char_boundary(at) {
            at -= 1;
        }
        out.truncate(at);
    }
    out
}

/// Loads the three texts; checks that a failure is a list of located errors.
fn load_and_check(main: &str, facilities: &str, towns: &str) -> Result<bool, TestCaseError> {
    let sources = [
        ("registry.toml", main),
        ("facilities.csv", facilities),
        ("towns.csv", towns),
    ];
    let source = Source {
        name: "registry.toml".into(),
        text: main.into(),
    };
    let mut read = |path: &str| {
        sources
            .iter()
            .find(|(name, _)| *name == path)
            .map(|(name, text)| Source {
                name: (*name).into(),
                text: (*text).into(),
            })
            .ok_or_else(|| "no such file".to_owned())
    };
    match load_registry(&source, &[], &mut read) {
        Ok(registry) => {
            // A registry that loaded is whole: every reference resolves.
            for f in &registry.facilities {
                let _ = registry.town(f.town);
            }
            for ((f, c), max) in registry.warehouse_maxima() {
                prop_assert!(matches!(registry.facility(f).kind, FacilityKind::Warehouse));
                let _ = registry.category(c);
                prop_assert!(max.is_finite() && max > 0.0);
            }
            for t in registry.town_indices() {
                for c in registry.category_indices() {
                    let target = registry.target_for(t, c);
                    prop_assert!(target.days > 0.0 && target.warn_days >= target.days);
                }
            }
            Ok(true)
        }
        Err(LoadErrors(errors)) => {
            prop_assert!(!errors.is_empty());
            for e in &errors {
                let text = sources.iter().find(|(name, _)| *name == e.file);
                let Some((_, text)) = text else {
                    return Err(TestCaseError::fail(format!("unknown file in {e}")));
                };
                prop_assert!(
                    e.line >= 1 && e.line <= text.lines().count() + 1,
                    "line of {}",
                    e
                );
                prop_assert!(!e.message.is_empty());
            }
            Ok(false)
        }
    }
}

proptest! {
    #![proptest_config(cases(2_000))]

    #[test]
    fn every_registry_loads_or_says_where_it_is_wrong(
        main_edits in edits(),
        facility_edits in edits(),
        town_edits in edits(),
    ) {
        let main = mutate(MAIN, &main_edits, false);
        let facilities = mutate(FACILITIES_CSV, &facility_edits, true);
        let towns = mutate(TOWNS_CSV, &town_edits, true);
        let loaded = load_and_check(&main, &facilities, &towns)?;
        if main_edits.is_empty() && facility_edits.is_empty() && town_edits.is_empty() {
            prop_assert!(loaded, "the unmutated registry loads");
        }
    }

    #[test]
    fn arbitrary_text_as_a_registry_is_refused_with_a_location(
        text in prop_oneof![
            any::<String>(),
            prop::collection::vec(
                prop::sample::select(vec![
                    "[[town]]\n", "[[facility]]\n", "[csv]\n", "[target]\n", "id = ", "\"t1\"",
                    "max = {", "water = ", "1e400", "nan", "}", "]", "[", "\n", "\"", "'''",
                    "population = ", "-1", "kind = \"warehouse\"\n", "景", "\u{0}", "\r\n",
                ]),
                0..60,
            )
            .prop_map(|parts| parts.concat()),
        ],
    ) {
        load_and_check(&text, &text, &text)?;
    }
}

#[test]
fn the_unmutated_fixtures_load() {
    // Guards the property above: an empty edit list must leave a loadable registry.
    assert!(load_and_check(MAIN, FACILITIES_CSV, TOWNS_CSV).unwrap());
    let r = registry();
    assert_eq!(
        r.warehouse_max(
            r.facility_idx("wh").unwrap(),
            r.category_idx("water").unwrap()
        ),
        Some(50_000.0)
    );
}
