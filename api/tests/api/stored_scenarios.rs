//! Stored what-if runs (issue 17): a run is kept, read back as JSON and as a CSV table
//! that say the same as the answer to the POST, and listed newest first.

use serde_json::{Value, json};

use crate::helpers::{TestApp, VIEWER, spawn_app};

async fn post(app: &TestApp, body: Value) -> Value {
    let answer = app
        .post_json("/api/v1/scenarios", Some(VIEWER), &body)
        .await;
    assert_eq!(answer.status, 200, "{body}: {}", answer.text);
    answer.json()
}

/// The CSV's data rows under its header (the first line names the table).
fn csv_rows(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let text = text
        .strip_prefix('\u{feff}')
        .expect("a byte order mark for Excel");
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records().map(|r| {
        r.expect("a CSV record")
            .iter()
            .map(str::to_owned)
            .collect::<Vec<String>>()
    });
    assert_eq!(records.next().unwrap(), ["情景 Scenario"]);
    let header = records.next().unwrap();
    (header, records.collect())
}

fn number(cell: &str) -> Option<f64> {
    (!cell.is_empty()).then(|| cell.parse().expect("a number"))
}

#[tokio::test]
async fn a_run_is_stored_and_reads_back_as_json_and_csv() {
    let app = spawn_app().await;
    app.seed();
    let body = json!({
        "name": "water cut, 15 L",
        "water_cut": {"water_need_l_per_person": 15, "lose_water_points": true}
    });
    let posted = post(&app, body.clone()).await;
    let id = posted["id"].as_i64().expect("an id");
    assert_eq!(posted["request"]["name"], "water cut, 15 L");
    assert_eq!(
        posted["towns_below_target"], 4,
        "still the outcome: {posted}"
    );

    let read = app.get_ok(&format!("/api/v1/scenarios/{id}")).await;
    assert_eq!(read, posted, "read back as answered");

    let csv = app
        .get(&format!("/api/v1/scenarios/{id}?format=csv"), Some(VIEWER))
        .await;
    assert_eq!(csv.status, 200, "{}", csv.text);
    assert_eq!(csv.content_type, "text/csv; charset=utf-8");
    let (header, rows) = csv_rows(&csv.text);
    let column = |en: &str| {
        header
            .iter()
            .position(|h| h.ends_with(en))
            .unwrap_or_else(|| panic!("no column {en:?} in {header:?}"))
    };
    let towns = posted["towns"].as_array().unwrap();
    let categories: usize = towns
        .iter()
        .map(|t| t["categories"].as_array().unwrap().len())
        .sum();
    assert_eq!(rows.len(), categories, "a row per town and category");
    let mut short_rows = 0;
    for row in &rows {
        let town = towns
            .iter()
            .find(|t| t["id"] == row[column("Town")])
            .expect("a town of the outcome");
        let category = town["categories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == row[column("Category")])
            .expect("a category of the town");
        assert_eq!(row[column("Cluster")], town["cluster"]);
        assert_eq!(row[column("District")], town["district"]);
        assert_eq!(
            number(&row[column("Days after")]),
            category["days"].as_f64()
        );
        assert_eq!(
            number(&row[column("Days before")]),
            category["live_days"].as_f64()
        );
        assert_eq!(
            number(&row[column("Shortfall")]),
            category["shortfall"].as_f64()
        );
        assert_eq!(
            number(&row[column("Mutual aid covers")]),
            category["aid_covers"].as_f64()
        );
        let below = category["below_target"].as_bool().unwrap();
        assert_eq!(
            row[column("Below target")],
            if below { "是 yes" } else { "否 no" }
        );
        if below {
            short_rows += 1;
            let lacks = category["target_days"].as_f64().unwrap()
                * category["need_per_day"].as_f64().unwrap()
                - category["stock"].as_f64().unwrap();
            let shortfall = category["shortfall"].as_f64().expect("a shortfall");
            assert!((shortfall - lacks).abs() < 1e-6, "{category}");
            let covers = category["aid_covers"].as_f64().expect("what aid covers");
            assert!((0.0..=shortfall + 1e-6).contains(&covers), "{category}");
        }
    }
    assert_eq!(short_rows, 4, "the four towns short of water");

    let second = post(&app, json!({"power_cut": true})).await;
    let list = app.get_ok("/api/v1/scenarios").await;
    let ids: Vec<i64> = list["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [second["id"].as_i64().unwrap(), id], "newest first");
    assert_eq!(list["scenarios"][1]["name"], "water cut, 15 L");
    assert_eq!(list["scenarios"][1]["towns_below_target"], 4);
    assert_eq!(list["scenarios"][0]["stress_test"], Value::Null);
}

#[tokio::test]
async fn unknown_and_malformed_runs_are_json_errors() {
    let app = spawn_app().await;
    app.seed();
    let cases = [
        ("/api/v1/scenarios/999", 404, "unknown_scenario"),
        ("/api/v1/scenarios/999?format=csv", 404, "unknown_scenario"),
        ("/api/v1/scenarios/abc", 400, "invalid_path"),
        ("/api/v1/scenarios?limit=0", 400, "invalid_query"),
        ("/api/v1/stress-test/latest", 404, "unknown_stress_test"),
    ];
    for (path, status, code) in cases {
        let answer = app.get(path, Some(VIEWER)).await;
        assert_eq!(answer.error(), (status, code.to_owned()), "{path}");
    }
    let id = post(&app, json!({"road_cut_days": 1})).await["id"]
        .as_i64()
        .unwrap();
    let answer = app
        .get(&format!("/api/v1/scenarios/{id}?format=xml"), Some(VIEWER))
        .await;
    assert_eq!(answer.error().0, 400, "{}", answer.text);
    let named = app
        .post_json("/api/v1/scenarios", Some(VIEWER), &json!({"name": ""}))
        .await;
    assert_eq!(named.error(), (422, "invalid_body".to_owned()));
    assert!(named.text.contains("\"field\":\"name\""), "{}", named.text);
}
