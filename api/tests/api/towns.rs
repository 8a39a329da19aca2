//! Towns: list with filters, full figures, sheltered counts.

use chrono::Duration;
use reserve::reading::{PowerState, PumpState};
use serde_json::{Value, json};
use store::{Store, StoreOptions};

use crate::helpers::{ADMIN, OFFICER, VIEWER, assert_close, spawn_app};

fn town<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["towns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no town {id} in {list}"))
}

#[tokio::test]
async fn towns_list_shows_status_worst_days_and_location() {
    let app = spawn_app().await;
    app.seed();
    let list = app.get_ok("/api/v1/towns").await;

    let ids: Vec<&str> = list["towns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["jingshan", "donghua", "jianguo", "tiantan", "longtan"]
    );
    // (id, status, worst days, worst category, verified)
    type Case<'a> = (&'a str, &'a str, Option<f64>, Option<&'a str>, bool);
    let cases: &[Case] = &[
        ("jingshan", "critical", Some(2.0), Some("water"), true),
        ("donghua", "ok", Some(3.75), Some("water"), true),
        ("jianguo", "warning", Some(3.2), Some("food"), true),
        ("tiantan", "ok", Some(4.0), Some("water"), true),
        ("longtan", "unknown", None, None, false),
    ];
    for (id, status, worst_days, worst_category, verified) in cases {
        let t = town(&list, id);
        assert_eq!(t["status"], *status, "{id}");
        match worst_days {
            Some(d) => assert_close(&t["worst_days"], *d),
            None => assert!(t["worst_days"].is_null(), "{id}: {t}"),
        }
        assert_eq!(t["worst_category"].as_str(), *worst_category, "{id}");
        assert_eq!(t["verified"], *verified, "{id}");
        assert_eq!(t["district"], "dongcheng", "{id}");
    }
    let jingshan = town(&list, "jingshan");
    assert_eq!(jingshan["name"], "景山街道");
    assert_eq!(jingshan["cluster"], "c01");
    assert_close(&jingshan["lat"], 39.925);
    assert_close(&jingshan["lon"], 116.397);
    assert_eq!(jingshan["population"], 1000);
    assert_eq!(town(&list, "tiantan")["cluster"], "c02");
    assert_eq!(
        list["counts"],
        json!({"total": 5, "ok": 2, "warning": 1, "critical": 1, "unknown": 1})
    );
}

#[tokio::test]
async fn towns_filter_by_status_cluster_and_district() {
    let app = spawn_app().await;
    app.seed();
    let cases: &[(&str, &[&str])] = &[
        ("?status=critical", &["jingshan"]),
        ("?status=ok", &["donghua", "tiantan"]),
        ("?status=unknown", &["longtan"]),
        ("?cluster=c02", &["tiantan", "longtan"]),
        ("?cluster=c01&status=warning", &["jianguo"]),
        ("?district=dongcheng&status=critical", &["jingshan"]),
        ("?cluster=c02&status=critical", &[]),
    ];
    for (query, want) in cases {
        let list = app.get_ok(&format!("/api/v1/towns{query}")).await;
        let ids: Vec<&str> = list["towns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(&ids, want, "{query}");
        assert_eq!(list["counts"]["total"], want.len(), "{query}");
    }
}

#[tokio::test]
async fn town_detail_has_categories_power_water_points_and_forecast() {
    let app = spawn_app().await;
    app.seed();
    let t = app.get_ok("/api/v1/towns/jingshan").await;
    assert_eq!(t["id"], "jingshan");
    assert_eq!(t["name"], "景山街道");
    assert_eq!(t["status"], "critical");
    assert_eq!(t["sheltered"], 0);

    let water = &t["categories"][0];
    assert_eq!(water["id"], "water");
    assert_eq!(water["unit"], "L");
    assert_close(&water["stock"], 6000.0); // 4500 in the warehouse + 1500 at the water point
    assert_close(&water["need_per_day"], 3000.0);
    assert_close(&water["days"], 2.0);
    assert_close(&water["target_days"], 3.0);
    assert_eq!(water["level"], "critical");
    assert_close(&water["hours_to_target"], 0.0);

    let food = &t["categories"][1];
    assert_eq!(food["id"], "food");
    assert_close(&food["days"], 5.0);
    assert_eq!(food["level"], "ok");
    // 600 rations eaten in the last hour; 6000 above the 9000 target: 10 hours.
    assert_close(&food["consumption_per_h"], 600.0);
    assert_close(&food["hours_to_target"], 10.0);

    // 400 L at 5 L/h: 80 h.
    assert_close(&t["power_days"], 80.0 / 24.0);
    assert_eq!(t["power_units"][0]["facility"], "js-pu1");
    assert_eq!(t["power_units"][0]["ready"], true);
    assert_close(&t["power_units"][0]["runtime_h"], 80.0);
    assert_eq!(t["water_points"][0]["facility"], "js-wp1");
    assert_eq!(t["water_points"][0]["ready"], true);
    assert_eq!(t["water_points"][0]["problems"], json!([]));
    assert_eq!(t["silent"], json!([]));
    assert_eq!(t["never_reported"], json!([]));

    let longtan = app.get_ok("/api/v1/towns/longtan").await;
    assert_eq!(longtan["status"], "unknown");
    assert_eq!(longtan["never_reported"], json!(["lt-wh1"]));
    assert_eq!(longtan["categories"], json!([]));
}

#[tokio::test]
async fn officer_sets_sheltered_for_own_town_and_it_is_persisted() {
    let app = spawn_app().await;
    app.seed();
    let downstream = app.changes.subscribe();
    let answer = app
        .put_json(
            "/api/v1/towns/jingshan/sheltered",
            Some(OFFICER),
            &json!({"sheltered": 1000}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    // Alert evaluation and the history sink hear of it as they hear of readings.
    let jingshan = app
        .ledger
        .read()
        .unwrap()
        .registry()
        .town_idx("jingshan")
        .unwrap();
    assert_eq!(downstream.take(), [jingshan].into());
    let t = answer.json();
    assert_eq!(t["sheltered"], 1000);
    // 2000 people now: water 6000 / 6000 a day, food 15000 / 6000 a day.
    assert_close(&t["categories"][0]["days"], 1.0);
    assert_close(&t["categories"][1]["days"], 2.5);
    assert_close(&t["worst_days"], 1.0);

    let again = app.get_ok("/api/v1/towns/jingshan").await;
    assert_eq!(again["sheltered"], 1000);
    assert_close(&again["worst_days"], 1.0);

    let store = Store::open(&app.db, StoreOptions::default()).unwrap();
    let saved: Vec<(String, u64)> = store
        .load_sheltered()
        .unwrap()
        .into_iter()
        .map(|(t, n)| (t.to_string(), n))
        .collect();
    assert_eq!(saved, [("jingshan".to_string(), 1000)]);
}

#[tokio::test]
async fn only_officers_of_the_town_and_admins_set_sheltered() {
    let app = spawn_app().await;
    app.seed();
    // (token, town, status, error code)
    let cases: &[(&str, &str, u16, Option<&str>)] = &[
        (OFFICER, "donghua", 403, Some("forbidden")),
        (VIEWER, "jingshan", 403, Some("forbidden")),
        (OFFICER, "jingshan", 200, None),
        (ADMIN, "donghua", 200, None),
    ];
    for (token, town, status, code) in cases {
        let path = format!("/api/v1/towns/{town}/sheltered");
        let answer = app
            .put_json(&path, Some(token), &json!({"sheltered": 300}))
            .await;
        assert_eq!(answer.status, *status, "{town}: {}", answer.text);
        if let Some(code) = code {
            assert_eq!(answer.error().1, *code);
        }
    }
    // The refused ones changed nothing; the allowed ones did.
    let list = app.get_ok("/api/v1/towns").await;
    assert_eq!(town(&list, "jingshan")["sheltered"], 300);
    assert_eq!(town(&list, "donghua")["sheltered"], 300);
    assert_eq!(town(&list, "jianguo")["sheltered"], 0);
}

#[tokio::test]
async fn a_forbidden_caller_hears_403_before_its_body_is_judged() {
    let app = spawn_app().await;
    let answer = app
        .put_json(
            "/api/v1/towns/donghua/sheltered",
            Some(OFFICER),
            &json!({"sheltered": "lots"}),
        )
        .await;
    assert_eq!(answer.error(), (403, "forbidden".to_string()));
}

/// What a board's tile says of a town: why it is red or amber, most urgent first, the
/// category named in both languages.
#[tokio::test]
async fn towns_say_why_they_are_red_or_amber_most_urgent_first() {
    let app = spawn_app().await;
    // Jianguo: food falling 300 rations an hour to 9600 (3.2 days), 600 above its
    // 3-day target: 2 hours to go. First: the app's readings are never older than the
    // last one it applied.
    for hours in (1..=3).rev() {
        let food = 9600.0 + 300.0 * hours as f64;
        let stock = [("water", 30_000.0), ("food", food)];
        app.stock_at("jg-wh1", &stock, Duration::hours(hours));
    }
    app.stock("jg-wh1", &[("water", 30_000.0), ("food", 9600.0)]);
    // Jingshan: 6000 L of water for 3000 L a day (2 days), its water point's pump down.
    app.stock("js-wh1", &[("water", 4500.0), ("food", 15_000.0)]);
    app.water("js-wp1", 1500.0, PumpState::Fault, true);
    app.power("js-pu1", 400.0, PowerState::Standby, 90.0);
    app.stock("dh-wh1", &[("water", 22_500.0), ("food", 30_000.0)]);
    let list = app.get_ok("/api/v1/towns").await;

    let jingshan = &town(&list, "jingshan")["reasons"];
    assert_eq!(jingshan[0]["kind"], "below_target", "{jingshan}");
    assert_eq!(jingshan[0]["category"], "water");
    assert_eq!(
        jingshan[0]["category_names"],
        json!({"zh": "饮用水", "en": "饮用水"}),
        "no name_zh or name_en: both are the name"
    );
    assert_close(&jingshan[0]["days"], 2.0);
    assert_close(&jingshan[0]["line_days"], 3.0);
    assert_eq!(jingshan[1]["kind"], "water_point_not_ready", "{jingshan}");
    assert_eq!(jingshan[1]["facilities"], json!(["js-wp1"]));
    assert_eq!(jingshan.as_array().unwrap().len(), 2, "{jingshan}");
    let detail = app.get_ok("/api/v1/towns/jingshan").await;
    assert_eq!(
        detail["categories"][0]["names"],
        json!({"zh": "饮用水", "en": "饮用水"})
    );

    let jianguo = &town(&list, "jianguo");
    assert_eq!(jianguo["status"], "warning");
    let forecast = &jianguo["reasons"][0];
    assert_eq!(forecast["kind"], "forecast", "{jianguo}");
    assert_eq!(forecast["category"], "food");
    assert_close(&forecast["days"], 3.2);
    assert_close(&forecast["hours_to_target"], 2.0);
    assert_close(&forecast["line_days"], 3.0);

    // Nothing to explain for a town that is fine, nor for one never heard from.
    assert_eq!(town(&list, "donghua")["reasons"], json!([]));
    assert_eq!(town(&list, "longtan")["status"], "unknown");
    assert_eq!(town(&list, "longtan")["reasons"], json!([]));
}
