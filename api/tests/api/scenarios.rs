//! What-if scenarios: run on a copy, answer what falls below target and when.

use reserve::reading::PowerState;
use serde_json::{Value, json};

use crate::helpers::{VIEWER, assert_close, spawn_app};

/// (town, resource or category, hours) of each shortfall, in the order listed.
fn shortfalls(outcome: &Value) -> Vec<(String, String, f64)> {
    outcome["below_target"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let what = s["category"]
                .as_str()
                .unwrap_or(s["resource"].as_str().unwrap());
            (
                s["town"].as_str().unwrap().to_owned(),
                what.to_owned(),
                s["hours"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn scenario_town<'a>(outcome: &'a Value, id: &str) -> &'a Value {
    outcome["towns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap()
}

async fn run(app: &crate::helpers::TestApp, body: Value) -> Value {
    let answer = app
        .post_json("/api/v1/scenarios", Some(VIEWER), &body)
        .await;
    assert_eq!(answer.status, 200, "{body}: {}", answer.text);
    answer.json()
}

#[tokio::test]
async fn water_cut_lists_towns_below_target_and_leaves_live_state_alone() {
    let app = spawn_app().await;
    app.seed();
    let towns_before = app.get_ok("/api/v1/towns").await["towns"].clone();
    let jingshan_before = app.get_ok("/api/v1/towns/jingshan").await;
    let point_before = app.get_ok("/api/v1/facilities/js-wp1").await;

    let outcome = run(
        &app,
        json!({"water_cut": {"water_need_l_per_person": 15, "lose_water_points": true}}),
    )
    .await;
    // 15 L a person: jingshan 4500 L (its water point lost) for 15000 L a day, donghua
    // 22500 for 30000, tiantan 12000 for 15000, jianguo 30000 for 15000.
    let short: Vec<(String, String, f64)> = shortfalls(&outcome);
    let want = [
        ("jingshan", "water", 0.0),
        ("donghua", "water", 0.0),
        ("tiantan", "water", 0.0),
        ("jianguo", "water", 0.0),
    ];
    assert_eq!(short.len(), want.len(), "{short:?}");
    for (got, want) in short.iter().zip(want) {
        assert_eq!((got.0.as_str(), got.1.as_str(), got.2), want);
    }
    let days: Vec<f64> = outcome["below_target"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["days"].as_f64().unwrap())
        .collect();
    for (got, want) in days.iter().zip([0.3, 0.75, 0.8, 2.0]) {
        assert!((got - want).abs() < 1e-9, "{days:?}");
    }
    assert_eq!(outcome["towns_below_target"], 4);
    assert_eq!(outcome["live_towns_below_target"], 1);
    // Living on stored water: consumed at the need, 625 L an hour in jingshan.
    let water = &scenario_town(&outcome, "jingshan")["categories"][0];
    assert_close(&water["consumption_per_h"], 625.0);
    assert_close(&water["hours_to_empty"], 4500.0 / 625.0);

    // Nothing live moved.
    assert_eq!(app.get_ok("/api/v1/towns").await["towns"], towns_before);
    assert_eq!(app.get_ok("/api/v1/towns/jingshan").await, jingshan_before);
    assert_eq!(app.get_ok("/api/v1/facilities/js-wp1").await, point_before);
}

#[tokio::test]
async fn road_cut_reports_when_each_town_crosses_its_target() {
    let app = spawn_app().await;
    app.seed();
    let outcome = run(&app, json!({"road_cut_days": 3})).await;
    assert_close(&outcome["horizon_h"], 72.0);
    // Consumed at the need (people live on the reserve), or faster where measured:
    // jingshan's food goes at 600 an hour. Jianguo's water (10 days) lasts the cut.
    let want: &[(&str, &str, f64)] = &[
        ("jingshan", "water", 0.0),
        ("jianguo", "food", 4.8),
        ("jingshan", "food", 10.0),
        ("donghua", "water", 18.0),
        ("tiantan", "water", 24.0),
        ("tiantan", "food", 24.0),
        ("donghua", "food", 48.0),
    ];
    let got = shortfalls(&outcome);
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (got, want) in got.iter().zip(want) {
        assert_eq!(
            (got.0.as_str(), got.1.as_str()),
            (want.0, want.1),
            "{got:?}"
        );
        assert!((got.2 - want.2).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    let food = &outcome["below_target"][2];
    assert_close(&food["hours_to_empty"], 25.0);
    assert_eq!(outcome["towns_below_target"], 4);
}

#[tokio::test]
async fn power_cut_dries_water_points_of_towns_without_ready_power() {
    let app = spawn_app().await;
    app.seed();
    // 80 h of fuel: jingshan's unit is ready, its pumps run, no shortfall of power.
    let outcome = run(&app, json!({"power_cut": true})).await;
    let jingshan = scenario_town(&outcome, "jingshan");
    assert_close(&jingshan["categories"][0]["days"], 2.0);
    assert_close(&jingshan["power_days"], 80.0 / 24.0);
    assert!(!shortfalls(&outcome).iter().any(|s| s.1 == "power"));

    // 200 L is 40 h: not ready for three days, so it counts as no power at all.
    app.power("js-pu1", 200.0, PowerState::Standby, 90.0);
    let outcome = run(&app, json!({"power_cut": true})).await;
    let jingshan = scenario_town(&outcome, "jingshan");
    assert_close(&jingshan["categories"][0]["days"], 1.5); // the 1500 L at the pump are out of reach
    assert_close(&jingshan["power_days"], 0.0);
    let short = shortfalls(&outcome);
    assert!(
        short.contains(&("jingshan".into(), "power".into(), 0.0)),
        "{short:?}"
    );
    assert!(
        short.contains(&("jingshan".into(), "water".into(), 0.0)),
        "{short:?}"
    );
    // Live: the water point still counts.
    assert_close(
        &app.get_ok("/api/v1/towns/jingshan").await["categories"][0]["days"],
        2.0,
    );
}

#[tokio::test]
async fn population_surge_adds_people_per_town_and_by_factor() {
    let app = spawn_app().await;
    app.seed();
    let outcome = run(
        &app,
        json!({"population_surge": {"factor": 1.5, "towns": {"tiantan": 500}}}),
    )
    .await;
    // (town, people, water days, food days)
    let cases: &[(&str, u64, f64, f64)] = &[
        ("jingshan", 1500, 6000.0 / 4500.0, 15_000.0 / 4500.0),
        ("donghua", 3000, 22_500.0 / 9000.0, 30_000.0 / 9000.0),
        ("jianguo", 1500, 30_000.0 / 4500.0, 9600.0 / 4500.0),
        ("tiantan", 2000, 2.0, 2.0),
    ];
    for (id, people, water, food) in cases {
        let t = scenario_town(&outcome, id);
        assert_eq!(t["people"], *people, "{id}");
        assert_close(&t["categories"][0]["days"], *water);
        assert_close(&t["categories"][1]["days"], *food);
    }
    assert_eq!(outcome["towns_below_target"], 4);
    assert_eq!(app.get_ok("/api/v1/towns/tiantan").await["sheltered"], 0);
}

#[tokio::test]
async fn comms_cut_marks_everything_unverified_or_counts_nothing() {
    let app = spawn_app().await;
    app.seed();
    let last = run(&app, json!({"comms_cut": {"silent_as": "last_value"}})).await;
    assert_eq!(last["towns_below_target"], 1);
    assert_close(&scenario_town(&last, "donghua")["worst_days"], 3.75);
    assert!(
        last["towns"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["verified"] == false)
    );

    let zero = run(&app, json!({"comms_cut": {"silent_as": "zero"}})).await;
    // Every town that ever reported is at zero days; longtan never did.
    assert_eq!(zero["towns_below_target"], 4);
    assert_close(&scenario_town(&zero, "jianguo")["worst_days"], 0.0);
    assert_eq!(zero["below_target"].as_array().unwrap().len(), 8);
}

/// Bodies no stress test means: each refused naming the field (or as not JSON), never
/// a panic or an overflow; the service answers the next request as before.
#[tokio::test]
async fn absurd_scenarios_are_refused_by_field() {
    let app = spawn_app().await;
    app.seed();
    for (body, status, code, field) in [
        (
            r#"{"population_surge": {"towns": {"jingshan": 18446744073709551615}}}"#,
            422,
            "invalid_body",
            Some("population_surge.towns.jingshan"),
        ),
        (
            r#"{"population_surge": {"towns": {"jingshan": 18446744073709551616}}}"#,
            422,
            "invalid_body",
            Some("population_surge.towns.jingshan"),
        ),
        (
            r#"{"population_surge": {"towns": {"jingshan": -1}}}"#,
            422,
            "invalid_body",
            Some("population_surge.towns.jingshan"),
        ),
        (
            r#"{"population_surge": {"towns": {"atlantis": 5}}}"#,
            422,
            "invalid_body",
            Some("population_surge.towns.atlantis"),
        ),
        (
            r#"{"population_surge": {"factor": 1e308}}"#,
            422,
            "invalid_body",
            Some("population_surge.factor"),
        ),
        (
            r#"{"population_surge": {"factor": 0.5}}"#,
            422,
            "invalid_body",
            Some("population_surge.factor"),
        ),
        (r#"{"road_cut_days": 1e400}"#, 400, "invalid_json", None),
        (r#"{"road_cut_days": NaN}"#, 400, "invalid_json", None),
        (
            r#"{"road_cut_days": -1}"#,
            422,
            "invalid_body",
            Some("road_cut_days"),
        ),
        (
            r#"{"water_cut": {"water_need_l_per_person": 0}}"#,
            422,
            "invalid_body",
            Some("water_cut.water_need_l_per_person"),
        ),
        (
            r#"{"comms_cut": {"silent_as": "guess"}}"#,
            422,
            "invalid_body",
            Some("comms_cut.silent_as"),
        ),
        (
            r#"{"water_cut": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["#,
            422,
            "invalid_body",
            Some("water_cut[0]"),
        ),
    ] {
        let answer = app
            .request(
                reqwest::Method::POST,
                "/api/v1/scenarios",
                Some(VIEWER),
                Some(("application/json", body.as_bytes().to_vec())),
            )
            .await;
        assert_eq!(answer.error(), (status, code.into()), "{body}");
        assert_eq!(
            answer.json()["error"]["field"].as_str(),
            field,
            "{body}: {}",
            answer.text
        );
    }
    // The largest surge allowed, a hundredfold and 100 M extra people, is answered.
    let outcome = run(
        &app,
        json!({"population_surge": {"factor": 100.0, "towns": {"jingshan": 100_000_000u64}}}),
    )
    .await;
    assert_eq!(
        scenario_town(&outcome, "jingshan")["people"],
        100_100_000u64
    );
}
