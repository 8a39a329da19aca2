//! One facility's latest state.

use chrono::Duration;
use serde_json::json;

use crate::helpers::{AppOptions, assert_close, spawn_app, spawn_app_with};

#[tokio::test]
async fn facility_shows_its_latest_observation_and_readiness() {
    let app = spawn_app().await;
    app.seed();

    let unit = app.get_ok("/api/v1/facilities/js-pu1").await;
    assert_eq!(unit["kind"], "power_unit");
    assert_eq!(unit["town"], "jingshan");
    assert_close(&unit["fuel_capacity_l"], 500.0);
    assert_close(&unit["burn_l_per_h"], 5.0);
    assert_close(&unit["latest"]["power"]["fuel_l"], 400.0);
    assert_eq!(unit["latest"]["power"]["state"], "standby");
    assert_close(&unit["latest"]["power"]["battery_pct"], 90.0);
    assert_close(&unit["latest"]["power"]["runtime_h"], 80.0);
    assert_eq!(unit["ready"], true);
    assert_eq!(unit["problems"], json!([]));
    assert_eq!(
        (unit["silent"].clone(), unit["never_reported"].clone()),
        (json!(false), json!(false))
    );
    assert_close(&unit["stale_after_s"], 180.0);

    let point = app.get_ok("/api/v1/facilities/js-wp1").await;
    assert_eq!(point["kind"], "water_point");
    assert_close(&point["capacity_l"], 5000.0);
    assert_eq!(
        point["latest"]["water"],
        json!({"level_l": 1500.0, "pump": "ok", "potable": true, "consumption_l_per_h": null})
    );

    let warehouse = app.get_ok("/api/v1/facilities/js-wh1").await;
    assert_eq!(warehouse["name"], "景山仓库");
    assert_eq!(warehouse["ready"], json!(null));
    let stock = warehouse["latest"]["stock"].as_array().unwrap();
    let lines: Vec<(&str, f64)> = stock
        .iter()
        .map(|l| {
            (
                l["category"].as_str().unwrap(),
                l["quantity"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines, [("water", 4500.0), ("food", 15_000.0)]);
    assert_close(&stock[1]["consumption_per_h"], 600.0);

    let never = app.get_ok("/api/v1/facilities/lt-wh1").await;
    assert_eq!(never["never_reported"], true);
    assert_eq!(never["latest"], json!(null));
    assert_eq!(never["last_ts"], json!(null));
}

#[tokio::test]
async fn a_silent_facility_is_flagged_and_its_town_unverified() {
    let app = spawn_app().await;
    // Tiantan's gateway last spoke 10 minutes ago; it reports every 60 s.
    app.stock_heard(
        "tt-wh1",
        &[("water", 12_000.0), ("food", 12_000.0)],
        Duration::minutes(10),
    );
    let facility = app.get_ok("/api/v1/facilities/tt-wh1").await;
    assert_eq!(facility["silent"], true);
    let town = app.get_ok("/api/v1/towns/tiantan").await;
    assert_eq!(town["silent"], json!(["tt-wh1"]));
    assert_eq!(town["verified"], false);
    // Its last values still count, but a town we cannot vouch for is a warning.
    assert_close(&town["worst_days"], 4.0);
    assert_eq!(town["status"], "warning");
}

/// A community store counted by hand: its grace is 2 × 1 s from the start.
const MANUAL_STORE: &str = r#"
[[facility]]
id = "js-wh9"
name = "景山社区库"
town = "jingshan"
kind = "warehouse"
report = "manual"
report_every = "1s"
"#;

#[tokio::test]
async fn a_manual_facility_says_so_and_is_due_a_count_instead_of_silent() {
    let app = spawn_app_with(AppOptions {
        extra_registry: MANUAL_STORE,
        ..AppOptions::full()
    })
    .await;
    app.seed();
    app.publish("jingshan");

    let store = app.get_ok("/api/v1/facilities/js-wh9").await;
    assert_eq!(store["report"], "manual");
    assert_close(&store["stale_after_s"], 86_400.0);
    assert_eq!(store["never_reported"], true);
    let gateway = app.get_ok("/api/v1/facilities/js-wh1").await;
    assert_eq!(gateway["report"], "gateway");

    let due = app
        .eventually("/api/v1/alerts?state=firing&town=jingshan", |list| {
            list.as_array()
                .is_some_and(|l| l.iter().any(|a| a["rule"] == "count_due"))
        })
        .await;
    let rules: Vec<(&str, &str)> = due
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["subject"] == "js-wh9")
        .map(|a| (a["rule"].as_str().unwrap(), a["severity"].as_str().unwrap()))
        .collect();
    assert_eq!(rules, [("count_due", "warning")], "{due}");
    // Never counted, it holds nothing: the town's figures are unverified.
    let town = app.get_ok("/api/v1/towns/jingshan").await;
    assert_eq!(town["verified"], false, "{town}");
    app.stop().await;
}
