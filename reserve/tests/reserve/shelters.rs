//! Shelters (docs/design.md#shelters): the registry entry and each mistake in it, the
//! `shelter` payload and each rejection, and the sheltered population that follows
//! from open shelters' occupancy.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use reserve::Ledger;
use reserve::ledger::ShelteredFrom;
use reserve::reading::{Observation, ShelterMode, ShelterObservation};
use reserve::registry::{DualUse, FacilityKind, Registry, ShelterSpec, Source, load_registry};
use reserve::wire::{self, DecodeContext, RejectReason};

const REGISTRY: &str = r#"
[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0

[[town]]
id = "jingshan"
name = "景山街道"
district = "dongcheng"
cluster = "c01"
population = 1000

[[facility]]
id = "js-wh1"
town = "jingshan"
kind = "warehouse"

[[facility]]
id = "js-school"
town = "jingshan"
kind = "shelter"
capacity = 500
dual_use = "school"
convert_within = "2h"

[[facility]]
id = "js-gym"
town = "jingshan"
kind = "shelter"
capacity = 300
"#;

fn load(text: &str) -> Result<Registry, Vec<String>> {
    let source = Source {
        name: "registry.toml".into(),
        text: text.into(),
    };
    load_registry(&source, &[], &mut |_| Err("no csv".into()))
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

fn registry() -> Arc<Registry> {
    Arc::new(load(REGISTRY).unwrap_or_else(|e| panic!("{e:?}")))
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 6, 0, 0).unwrap()
}

#[test]
fn a_shelter_loads_with_its_capacity_use_and_conversion_time() {
    let r = registry();
    let spec = |id: &str| match &r.facility(r.facility_idx(id).unwrap()).kind {
        FacilityKind::Shelter(spec) => *spec,
        other => panic!("{id} is {other:?}"),
    };
    assert_eq!(
        spec("js-school"),
        ShelterSpec {
            capacity: 500,
            dual_use: DualUse::School,
            convert_within: Duration::from_secs(2 * 3600),
        }
    );
    // Neither use nor conversion time given: `other` and six hours.
    assert_eq!(
        spec("js-gym"),
        ShelterSpec {
            capacity: 300,
            dual_use: DualUse::Other,
            convert_within: Duration::from_secs(6 * 3600),
        }
    );
}

#[test]
fn a_shelter_loads_from_facilities_csv() {
    let main = Source {
        name: "registry.toml".into(),
        text: "[csv]\ntowns = \"towns.csv\"\nfacilities = \"facilities.csv\"\n[[category]]\nid = \"water\"\nname = \"W\"\nunit = \"L\"\ndaily_need = 3.0\n".into(),
    };
    let towns = "id,name,district,cluster,population\njingshan,景山,dongcheng,c01,1000\n";
    let facilities = "id,town,kind,capacity,dual_use,convert_within\n\
                      js-hall,jingshan,shelter,800,community_centre,90m\n\
                      js-bad,jingshan,shelter,0,castle,soon\n";
    let errors = load_registry(&main, &[], &mut |path| {
        let text = if path == "towns.csv" {
            towns
        } else {
            facilities
        };
        Ok(Source {
            name: path.into(),
            text: text.into(),
        })
    })
    .unwrap_err();
    let rendered: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            "facilities.csv:3: facility \"js-bad\": capacity: must be between 1 and 200000 people, got 0",
            "facilities.csv:3: facility \"js-bad\": dual_use: unknown \"castle\" (expected school, gym, hotel, community_centre, warehouse, other)",
            "facilities.csv:3: facility \"js-bad\": convert_within: duration \"soon\" is not a number followed by a unit",
        ]
    );
}

#[test]
fn each_mistake_in_a_shelter_entry_is_located() {
    let entry = |settings: &str| {
        format!(
            "{REGISTRY}\n[[facility]]\nid = \"js-bad\"\ntown = \"jingshan\"\nkind = \"shelter\"\n{settings}\n"
        )
    };
    let cases: &[(&str, &str, &str)] = &[
        (
            "dual_use = \"gym\"",
            "[[facility]]\nid = \"js-bad\"",
            "capacity: missing",
        ),
        (
            "capacity = -4",
            "capacity",
            "capacity: must be between 1 and 200000 people, got -4",
        ),
        (
            "capacity = 2000000",
            "capacity",
            "capacity: must be between 1 and 200000 people, got 2000000",
        ),
        (
            "capacity = 10\ndual_use = \"castle\"",
            "dual_use",
            "dual_use: unknown \"castle\" (expected school, gym, hotel, community_centre, warehouse, other)",
        ),
        (
            "capacity = 10\nconvert_within = \"0s\"",
            "convert_within",
            "convert_within: must be > 0, got \"0s\"",
        ),
        (
            "capacity = 10\ncapacity_l = 5000",
            "capacity_l",
            "capacity_l: not allowed on a shelter (only on water_point)",
        ),
    ];
    for &(settings, at, message) in cases {
        let text = entry(settings);
        // A missing field points at the entry's header, the last `[[facility]]`.
        let lines: Vec<&str> = text.lines().collect();
        let header = if at.starts_with("[[facility]]") {
            "[[facility]]"
        } else {
            at
        };
        let line = 1 + lines.iter().rposition(|l| l.starts_with(header)).unwrap();
        assert_eq!(
            load(&text).unwrap_err(),
            [format!(
                "registry.toml:{line}: facility \"js-bad\": {message}"
            )],
            "{settings}"
        );
    }
    // A shelter's settings on another kind.
    let text = format!(
        "{REGISTRY}\n[[facility]]\nid = \"js-wh2\"\ntown = \"jingshan\"\nkind = \"warehouse\"\ncapacity = 40\n"
    );
    let line = text.lines().count();
    assert_eq!(
        load(&text).unwrap_err(),
        [format!(
            "registry.toml:{line}: facility \"js-wh2\": capacity: not allowed on a warehouse (only on shelter)"
        )]
    );
}

/// Decodes `payload` for `facility` at `now()`.
fn decode(
    registry: &Registry,
    facility: &str,
    payload: &str,
) -> Result<Vec<Observation>, (RejectReason, String)> {
    let topic = format!("stockpile/v1/jingshan/{facility}/reading");
    let topic = wire::parse_topic(&topic).unwrap();
    let ctx = DecodeContext::new(registry, now());
    wire::decode_readings(&topic, payload.as_bytes(), &ctx)
        .map(|d| d.readings.into_iter().map(|r| r.observation).collect())
        .map_err(|r| (r.reason, r.detail))
}

/// What a payload decodes to, or its rejection's reason and detail.
type Want = Result<Vec<Observation>, (RejectReason, &'static str)>;

#[test]
fn shelter_readings_decode_and_each_rejection_says_why() {
    let r = registry();
    let ts = "\"2026-11-24T05:59:00Z\"";
    let ok = |occupancy, mode| -> Want {
        Ok(vec![Observation::Shelter(ShelterObservation {
            occupancy,
            mode,
        })])
    };
    let shelter = |body: &str| format!("{{\"ts\": {ts}, \"shelter\": {body}}}");
    let cases: Vec<(&str, String, Want)> = vec![
        (
            "js-school",
            shelter(r#"{"occupancy": 412, "mode": "open"}"#),
            ok(412, ShelterMode::Open),
        ),
        (
            "js-school",
            shelter(r#"{"occupancy": 0, "mode": "normal"}"#),
            ok(0, ShelterMode::Normal),
        ),
        (
            "js-school",
            shelter(r#"{"occupancy": 0, "mode": "activating", "desk": 3}"#),
            ok(0, ShelterMode::Activating),
        ),
        (
            "js-school",
            shelter(r#"{"occupancy": 500, "mode": "closed"}"#),
            ok(500, ShelterMode::Closed),
        ),
        (
            "js-school",
            shelter(r#"{"occupancy": 501, "mode": "open"}"#),
            Err((
                RejectReason::OverCapacity,
                "shelter.occupancy is 501, above the facility's capacity 500 (sensor units?)",
            )),
        ),
        (
            "js-school",
            shelter(r#"{"occupancy": -3, "mode": "open"}"#),
            Err((
                RejectReason::BadNumber,
                "shelter.occupancy is -3; it must be ≥ 0",
            )),
        ),
        (
            "js-school",
            shelter(r#"{"occupancy": 5000000, "mode": "open"}"#),
            Err((
                RejectReason::BadNumber,
                "shelter.occupancy is 5000000, above the limit of 1000000",
            )),
        ),
        (
            "js-school",
            shelter(r#"{"occupancy": 12.5, "mode": "open"}"#),
            Err((
                RejectReason::BadNumber,
                "shelter.occupancy is 12.5; it counts people, send a whole number",
            )),
        ),
        (
            "js-school",
            shelter(r#"{"occupancy": 12, "mode": "full"}"#),
            Err((
                RejectReason::BadPayload,
                "shelter.mode: unknown variant `full`, expected one of `normal`, `activating`, `open`, `closed` at line 1 column 74",
            )),
        ),
        (
            "js-school",
            format!("{{\"ts\": {ts}, \"power\": {{\"fuel_l\": 3, \"state\": \"standby\"}}}}"),
            Err((
                RejectReason::WrongKind,
                "facility \"js-school\" is a shelter: it sends \"shelter\", not \"power\"",
            )),
        ),
        (
            "js-wh1",
            shelter(r#"{"occupancy": 12, "mode": "open"}"#),
            Err((
                RejectReason::WrongKind,
                "facility \"js-wh1\" is a warehouse: it sends \"stock\", not \"shelter\"",
            )),
        ),
        (
            "js-school",
            format!("{{\"ts\": {ts}}}"),
            Err((
                RejectReason::BadPayload,
                "reading has none of \"stock\", \"water\", \"power\", \"shelter\"; facility \"js-school\" is a shelter and sends \"shelter\"",
            )),
        ),
    ];
    for (facility, payload, want) in cases {
        let got = decode(&r, facility, &payload);
        let want = want.map_err(|(reason, detail)| (reason, detail.to_owned()));
        assert_eq!(got, want, "{payload}");
    }
}

#[test]
fn a_shelter_reading_encodes_back_to_its_payload() {
    let r = registry();
    let got = decode(&r, "js-school", r#"{"ts": "2026-11-24T05:59:00Z", "seq": 7, "shelter": {"occupancy": 412, "mode": "open"}}"#).unwrap();
    let reading = reserve::Reading {
        facility: r.facility_idx("js-school").unwrap(),
        ts: now() - chrono::Duration::minutes(1),
        seq: Some(7),
        observation: got[0].clone(),
    };
    let wire = wire::WireReading::from_reading(&reading, &r);
    assert_eq!(
        String::from_utf8(wire::encode(&[wire])).unwrap(),
        r#"{"ts":"2026-11-24T05:59:00Z","seq":7,"shelter":{"occupancy":412.0,"mode":"open"}}"#
    );
}

fn read(ledger: &mut Ledger, facility: &str, minute: i64, mode: ShelterMode, occupancy: u64) {
    let registry = Arc::clone(ledger.registry());
    let f = registry.facility_idx(facility).unwrap();
    let ts = now() + chrono::Duration::minutes(minute);
    let reading = reserve::Reading {
        facility: f,
        ts,
        seq: None,
        observation: Observation::Shelter(ShelterObservation { occupancy, mode }),
    };
    ledger.apply(&reading, ts);
    ledger.refresh(registry.facility(f).town, ts);
}

#[test]
fn open_shelters_occupancy_is_the_sheltered_population_and_moves_the_days() {
    let r = registry();
    let t = r.town_idx("jingshan").unwrap();
    let mut ledger = Ledger::new(Arc::clone(&r));
    let water = r.category_idx("water").unwrap();
    let stock = reserve::Reading {
        facility: r.facility_idx("js-wh1").unwrap(),
        ts: now(),
        seq: None,
        observation: Observation::Stock(vec![(water, 30_000.0)]),
    };
    ledger.apply(&stock, now());
    ledger.set_sheltered(t, 200);
    let days = |ledger: &Ledger| ledger.figures(t).categories[0].days.unwrap();

    // Shelters in everyday use: the officer's typed figure counts.
    read(&mut ledger, "js-school", 1, ShelterMode::Normal, 0);
    assert_eq!(ledger.sheltered_now(t), (200, ShelteredFrom::Typed));
    assert_eq!(days(&ledger), 30_000.0 / (1200.0 * 3.0));

    // One opens: its occupancy replaces the typed figure, at once.
    read(&mut ledger, "js-school", 2, ShelterMode::Open, 400);
    assert_eq!(ledger.figures(t).sheltered, 400);
    assert_eq!(ledger.figures(t).sheltered_from, ShelteredFrom::Shelters);
    assert_eq!(days(&ledger), 30_000.0 / (1400.0 * 3.0));

    // A second opens; an activating one counts nobody yet.
    read(&mut ledger, "js-gym", 3, ShelterMode::Open, 100);
    assert_eq!(ledger.figures(t).sheltered, 500);
    read(&mut ledger, "js-gym", 4, ShelterMode::Activating, 0);
    assert_eq!(ledger.figures(t).sheltered, 400);

    // All closed again: back to the typed figure.
    read(&mut ledger, "js-school", 5, ShelterMode::Closed, 0);
    assert_eq!(ledger.sheltered_now(t), (200, ShelteredFrom::Typed));
    assert_eq!(days(&ledger), 30_000.0 / (1200.0 * 3.0));
    let shelters = &ledger.figures(t).shelters;
    assert_eq!(shelters.len(), 2);
    assert_eq!(shelters[0].mode, Some(ShelterMode::Closed));
    assert_eq!(shelters[1].capacity, 300);
}

#[test]
fn a_shelters_mode_since_survives_repeated_readings_and_a_restart() {
    let r = registry();
    let f = r.facility_idx("js-school").unwrap();
    let mut ledger = Ledger::new(Arc::clone(&r));
    read(&mut ledger, "js-school", 0, ShelterMode::Activating, 0);
    read(&mut ledger, "js-school", 30, ShelterMode::Activating, 0);
    let since = ledger.shelter(f).unwrap().1.mode_since;
    assert_eq!(since, now());
    let snapshot = ledger.snapshot(f);
    let mut restarted = Ledger::new(Arc::clone(&r));
    assert!(restarted.restore(&snapshot));
    assert_eq!(restarted.shelter(f).unwrap().1.mode_since, now());
    read(&mut restarted, "js-school", 40, ShelterMode::Open, 10);
    assert_eq!(
        restarted.shelter(f).unwrap().1.mode_since,
        now() + chrono::Duration::minutes(40)
    );
}
