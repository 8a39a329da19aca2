//! A corpus of nasty payloads (`tests/corpus/`), each with the answer a gateway gets
//! (`tests/corpus/expected.toml`), plus big ones generated here: 100,000 levels of
//! nesting, a 1 MiB string, an array of 131,000 `1`s. Every one is decoded on a thread
//! with a small stack (256 KiB, an eighth of a default thread's), so a decoder that
//! recursed with the input's depth would overflow here rather than in production.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use reserve::Registry;
use reserve::registry::{Source, load_registry};
use reserve::wire::{self, DecodeContext, MAX_DETAIL_BYTES, RejectReason};
use serde::Deserialize;

/// Stack of the decoding thread.
const SMALL_STACK: usize = 256 * 1024;

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
[[facility]]
id = "wh"
town = "t1"
kind = "warehouse"
max = { water = 50000 }
[[facility]]
id = "wp"
town = "t1"
kind = "water_point"
capacity_l = 60000
"#;

fn registry() -> Registry {
    let source = Source {
        name: "registry.toml".into(),
        text: REGISTRY.into(),
    };
    load_registry(&source, &[], &mut |_| Err("no csv".into())).unwrap_or_else(|e| panic!("{e}"))
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T06:00:00Z")
        .unwrap()
        .to_utc()
}

/// One entry of `expected.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    /// A reject reason id, or `accepted`.
    reason: String,
    /// The message decodes and its first element is rejected with `reason`.
    #[serde(default)]
    element: bool,
    #[serde(default)]
    detail: String,
    #[serde(default = "warehouse")]
    facility: String,
}

fn warehouse() -> String {
    "wh".into()
}

/// What a reading message decodes to, as the gateway would hear it: `accepted`, a
/// reason, or `element <reason>`; and the detail.
fn verdict(registry: &Registry, facility: &str, payload: &[u8]) -> (String, String) {
    let topic = wire::reading_topic("t1", facility);
    let topic = wire::parse_topic(&topic).expect("fixture topic");
    let ctx = DecodeContext::new(registry, now());
    match wire::decode_readings(&topic, payload, &ctx) {
        Err(r) => (r.reason.to_string(), r.detail),
        Ok(decoded) => match decoded.rejected.first() {
            Some(r) => (format!("element {}", r.reason), r.detail.clone()),
            None => ("accepted".into(), String::new()),
        },
    }
}

/// Runs `f` on a thread with [`SMALL_STACK`]; a stack overflow aborts the test binary.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("decoding panicked")
}

fn check(name: &str, payload: Vec<u8>, want: &Expected) {
    let facility = want.facility.clone();
    let (got, detail) = on_small_stack(move || verdict(&registry(), &facility, &payload));
    let wanted = if want.element {
        format!("element {}", want.reason)
    } else {
        want.reason.clone()
    };
    assert_eq!(got, wanted, "{name}: {detail}");
    assert!(
        detail.contains(&want.detail),
        "{name}: detail {detail:?} lacks {:?}",
        want.detail
    );
    assert!(
        detail.len() <= MAX_DETAIL_BYTES + '…'.len_utf8(),
        "{name}: a detail of {} bytes",
        detail.len()
    );
}

#[test]
fn every_corpus_file_gets_its_expected_answer() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let manifest = std::fs::read_to_string(dir.join("expected.toml")).expect("expected.toml");
    let expected: BTreeMap<String, Expected> =
        toml::from_str(&manifest).unwrap_or_else(|e| panic!("expected.toml: {e}"));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name != "expected.toml")
        .collect();
    files.sort();
    let listed: Vec<&String> = expected.keys().collect();
    assert_eq!(
        files.iter().collect::<Vec<_>>(),
        listed,
        "every file has an entry and every entry a file"
    );
    for (name, want) in &expected {
        if want.reason != "accepted" {
            want.reason
                .parse::<RejectReason>()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let payload = std::fs::read(dir.join(name)).expect("corpus file");
        check(name, payload, want);
    }
}

#[test]
fn generated_giants_are_rejected_with_a_reason_and_no_stack_overflow() {
    const TS: &str = r#""ts": "2026-11-24T05:00:00Z""#;
    let reading = |extra: &str| format!(r#"{{{TS}, "stock": {{"water": 1}}{extra}}}"#);
    let nest = |open: &str, close: &str, levels: usize| {
        // An object level needs a value at the bottom.
        let bottom = if open.ends_with(':') { "1" } else { "" };
        format!("{}{bottom}{}", open.repeat(levels), close.repeat(levels))
    };
    let expect = |reason: &str, detail: &str| Expected {
        reason: reason.into(),
        element: false,
        detail: detail.into(),
        facility: warehouse(),
    };
    let mib_string = "x".repeat(1 << 20);
    let just_under = wire::MAX_PAYLOAD_BYTES - 200;
    // (what it is, payload, expected)
    let rows: Vec<(&str, String, Expected)> = vec![
        (
            "100,000 levels of [ never closed",
            "[".repeat(100_000),
            expect("not_json", "not JSON (truncated)"),
        ),
        (
            "100,000 levels of [ closed",
            nest("[", "]", 100_000),
            Expected {
                element: true,
                ..expect(
                    "bad_payload",
                    "element [0]: a reading is a JSON object, not an array",
                )
            },
        ),
        (
            // Unknown fields are skipped without recursing, however deep.
            "40,000 levels of objects under an unknown field",
            reading(&format!(r#", "x": {}"#, nest(r#"{"a":"#, "}", 40_000))),
            expect("accepted", ""),
        ),
        (
            "40,000 levels of arrays inside an array element",
            format!(
                "[{}]",
                reading(&format!(r#", "x": {}"#, nest("[", "]", 40_000)))
            ),
            expect("accepted", ""),
        ),
        (
            "100,000 levels of arrays where a quantity goes",
            format!(
                r#"{{{TS}, "stock": {{"water": {}}}}}"#,
                nest("[", "]", 100_000)
            ),
            expect(
                "bad_payload",
                "stock.water: invalid type: sequence, expected f64",
            ),
        ),
        (
            "a 1 MiB string",
            reading(&format!(r#", "note": "{mib_string}""#)),
            expect("too_large", "the limit is 262144"),
        ),
        (
            "a string just under the size limit as the pump state",
            format!(
                r#"{{{TS}, "water": {{"level_l": 1, "pump": "{}", "potable": true}}}}"#,
                "p".repeat(just_under)
            ),
            Expected {
                facility: "wp".into(),
                ..expect("bad_payload", "water.pump: unknown variant `ppp")
            },
        ),
        (
            "a category id just under the size limit",
            format!(
                r#"{{{TS}, "stock": {{"{}": 1}}}}"#,
                "景".repeat(just_under / 3)
            ),
            expect("unknown_category", "unknown category \"景景"),
        ),
        (
            "an array of 131,000 1s",
            format!("[{}1]", "1,".repeat(130_999)),
            expect("too_many_readings", "more than 1000 readings"),
        ),
        (
            "an array of 131,000 empty arrays",
            format!("[{}[]]", "[],".repeat(80_000)),
            expect("too_many_readings", "more than 1000 readings"),
        ),
        (
            "1,000 readings, every one over capacity",
            format!(
                "[{}]",
                vec![format!(r#"{{{TS}, "stock": {{"water": 50000.5}}}}"#); 1000].join(",")
            ),
            Expected {
                element: true,
                ..expect("over_capacity", "element [0]: stock.water is 50000.5")
            },
        ),
    ];
    for (what, payload, want) in rows {
        assert!(
            what.contains("1 MiB") || payload.len() <= wire::MAX_PAYLOAD_BYTES,
            "{what}: {} bytes is over the size limit",
            payload.len()
        );
        check(what, payload.into_bytes(), &want);
    }

    // A status payload of 1 MiB, and one of nested arrays within the status limit.
    let status = on_small_stack(move || {
        [
            wire::decode_status(mib_string.as_bytes()).map_err(|r| r.reason),
            wire::decode_status(nest("[", "]", 500).as_bytes()).map_err(|r| r.reason),
            wire::decode_status(format!(r#"{{"state": {}}}"#, nest("[", "]", 500)).as_bytes())
                .map_err(|r| r.reason),
        ]
    });
    assert_eq!(
        status,
        [
            Err(RejectReason::TooLarge),
            Err(RejectReason::BadStatus),
            Err(RejectReason::BadStatus),
        ]
    );
}
