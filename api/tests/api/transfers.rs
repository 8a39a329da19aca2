//! Transfers (docs/design.md#transfers): an officer of the sending town or an admin
//! records one; it is stored durably with who and when, audited, listed newest first by
//! town and time, changes no figure, and hides its note and author from callers without
//! a token.

use serde_json::{Value, json};
use store::{Store, StoreOptions};

use crate::helpers::{ADMIN, DONGHUA_OFFICER, OFFICER, VIEWER, spawn_app, spawn_app_with};

/// Donghua sends jingshan's water point 2000 L.
fn aid() -> Value {
    json!({"from": "dh-wh1", "to": "js-wp1", "category": "water", "quantity": 2000.0,
           "note": "水车 京A-12345, 司机王师傅"})
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn an_officer_records_aid_from_its_town_and_everyone_reading_sees_it() {
    let app = spawn_app().await;
    app.seed();
    let days_before = app.get_ok("/api/v1/towns/jingshan").await["categories"].clone();

    let answer = app
        .post_json("/api/v1/transfers", Some(DONGHUA_OFFICER), &aid())
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let stored = answer.json();
    assert_eq!(stored["from"], "dh-wh1");
    assert_eq!(stored["from_town"], "donghua");
    assert_eq!(stored["to"], "js-wp1");
    assert_eq!(stored["to_town"], "jingshan");
    assert_eq!(stored["category"], "water");
    assert_eq!(stored["quantity"], 2000.0);
    assert_eq!(stored["recorded_by"], "zhao-min");
    assert_eq!(stored["note"], "水车 京A-12345, 司机王师傅");
    let recorded_at = stored["recorded_at"].as_str().unwrap();
    let recorded_at = chrono::DateTime::parse_from_rfc3339(recorded_at).unwrap();
    assert!(
        (chrono::Utc::now() - recorded_at.to_utc())
            .num_seconds()
            .abs()
            < 60
    );

    // An admin records for any town; the list is newest first.
    let back = json!({"from": "js-wh1", "to": "dh-wh1", "category": "food", "quantity": 300});
    let answer = app.post_json("/api/v1/transfers", Some(ADMIN), &back).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let second = answer.json()["id"].as_i64().unwrap();
    let first = stored["id"].as_i64().unwrap();
    assert_eq!(ids(&app.get_ok("/api/v1/transfers").await), [second, first]);

    // A gateway facility's readings stay the truth: recording moved no figure.
    let days_after = app.get_ok("/api/v1/towns/jingshan").await["categories"].clone();
    assert_eq!(days_before, days_after);

    // Without a token the note and the author are left out; with any token they show.
    let public = app.get("/api/v1/transfers", None).await.json();
    assert!(public[1].get("note").is_none(), "{public}");
    assert!(public[1].get("recorded_by").is_none(), "{public}");
    assert_eq!(public[1]["quantity"], 2000.0);
    let viewed = app.get_ok_as(VIEWER, "/api/v1/transfers").await;
    assert_eq!(viewed[1]["recorded_by"], "zhao-min");
    assert_eq!(viewed[1]["note"], "水车 京A-12345, 司机王师傅");

    // Filters: by town (sent or received), since a time, a limit.
    let town = |t: &str| format!("/api/v1/transfers?town={t}");
    assert_eq!(ids(&app.get_ok(&town("jingshan")).await), [second, first]);
    assert!(ids(&app.get_ok(&town("tiantan")).await).is_empty());
    assert_eq!(
        ids(&app.get_ok("/api/v1/transfers?limit=1").await),
        [second]
    );
    let later = (recorded_at + chrono::Duration::hours(1)).to_rfc3339();
    let since = format!("/api/v1/transfers?since={}", urlencoding(&later));
    assert!(ids(&app.get_ok(&since).await).is_empty());

    // In the audit log, and in the file: a new connection reads both back.
    let audit = app.get_ok_as(ADMIN, "/api/v1/audit").await;
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [("transfer", "ops"), ("transfer", "zhao-min")]);
    let store = Store::open(&app.db, StoreOptions::default()).unwrap();
    let rows = store.transfers(Some("donghua"), None, 10).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].transfer.recorded_by, "zhao-min");
    assert_eq!(rows[1].transfer.quantity, 2000.0);
}

/// `+` in an offset must not reach the server as a space.
fn urlencoding(value: &str) -> String {
    value.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn only_the_sending_towns_officer_or_an_admin_records_a_transfer() {
    let app = spawn_app().await;
    for (who, token, status, code) in [
        ("nobody", None, 401, "unauthorized"),
        ("a viewer", Some(VIEWER), 403, "forbidden"),
        (
            "the receiving town's officer",
            Some(OFFICER),
            403,
            "forbidden",
        ),
        ("the sending town's officer", Some(DONGHUA_OFFICER), 201, ""),
        ("an admin", Some(ADMIN), 201, ""),
    ] {
        let answer = app.post_json("/api/v1/transfers", token, &aid()).await;
        assert_eq!(answer.status, status, "{who}: {}", answer.text);
        if status != 201 {
            assert_eq!(answer.error(), (status, code.to_owned()), "{who}");
        }
    }
    assert_eq!(ids(&app.get_ok("/api/v1/transfers").await).len(), 2);
}

#[tokio::test]
async fn bad_transfers_are_refused_naming_the_field_and_nothing_is_stored() {
    let app = spawn_app().await;
    let with = |key: &str, value: Value| {
        let mut body = aid();
        body[key] = value;
        body
    };
    let long_note = "水".repeat(1001);
    let cases = [
        (
            with("from", json!("nowhere")),
            404,
            "unknown_facility",
            None,
        ),
        (with("to", json!("nowhere")), 404, "unknown_facility", None),
        (
            with("category", json!("fuel")),
            404,
            "unknown_category",
            None,
        ),
        (
            with("quantity", json!(0)),
            422,
            "invalid_body",
            Some("quantity"),
        ),
        (
            with("quantity", json!(-5)),
            422,
            "invalid_body",
            Some("quantity"),
        ),
        (
            with("quantity", json!(2e9)),
            422,
            "invalid_body",
            Some("quantity"),
        ),
        (
            with("quantity", json!("lots")),
            422,
            "invalid_body",
            Some("quantity"),
        ),
        (
            with("category", json!("food")),
            422,
            "invalid_body",
            Some("to"),
        ),
        (with("to", json!("dh-wh1")), 422, "invalid_body", Some("to")),
        (with("to", json!("js-pu1")), 422, "invalid_body", Some("to")),
        (
            with("note", json!(long_note)),
            422,
            "invalid_body",
            Some("note"),
        ),
        (
            with("lorry", json!("x")),
            422,
            "invalid_body",
            Some("lorry"),
        ),
    ];
    for (body, status, code, field) in cases {
        let answer = app.post_json("/api/v1/transfers", Some(ADMIN), &body).await;
        assert_eq!(answer.error(), (status, code.to_owned()), "{body}");
        let error = &answer.json()["error"];
        assert_eq!(error["field"].as_str(), field, "{body}: {error}");
    }
    let from_power = json!({"from": "js-pu1", "to": "js-wh1", "category": "water", "quantity": 1});
    let answer = app
        .post_json("/api/v1/transfers", Some(ADMIN), &from_power)
        .await;
    assert_eq!(answer.error(), (422, "invalid_body".into()));
    assert_eq!(answer.json()["error"]["field"], "from");
    let mut missing = aid();
    missing.as_object_mut().unwrap().remove("quantity");
    let answer = app
        .post_json("/api/v1/transfers", Some(ADMIN), &missing)
        .await;
    assert_eq!(answer.error(), (422, "invalid_body".into()));
    assert!(answer.text.contains("quantity"), "{}", answer.text);
    let answer = app
        .request(
            reqwest::Method::POST,
            "/api/v1/transfers",
            Some(ADMIN),
            Some(("application/json", b"{\"from\":".to_vec())),
        )
        .await;
    assert_eq!(answer.error(), (400, "invalid_json".into()));

    assert!(ids(&app.get_ok("/api/v1/transfers").await).is_empty());
    let audit = app.get_ok_as(ADMIN, "/api/v1/audit").await;
    assert_eq!(audit, json!([]));
}

#[tokio::test]
async fn a_bad_list_query_is_named() {
    let app = spawn_app_with(Default::default()).await;
    for (query, field) in [
        ("town=atlantis", "town"),
        ("since=yesterday", "since"),
        ("limit=many", "limit"),
    ] {
        let answer = app.get(&format!("/api/v1/transfers?{query}"), None).await;
        assert_eq!(answer.error(), (400, "invalid_query".into()), "{query}");
        assert_eq!(answer.json()["error"]["field"], field, "{query}");
    }
    let answer = app.get("/api/v1/transfers?lorry=1", None).await;
    assert_eq!(answer.error(), (400, "invalid_query".into()));
}
