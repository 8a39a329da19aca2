//! Alerts, acknowledgements, silences and notifications, with the alert service running
//! on the same SQLite file and ledger as the API.

use chrono::{Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN, AppOptions, DONGHUA_OFFICER, OFFICER, TestApp, VIEWER, spawn_app, spawn_app_with,
};

const FIRING_IN_JINGSHAN: &str = "/api/v1/alerts?state=firing&town=jingshan";

/// The seeded city with alerting on; jingshan (2 days of water) has a firing alert.
/// Returns the app and that alert's id.
async fn firing_app() -> (TestApp, i64) {
    let app = spawn_app_with(AppOptions::full()).await;
    app.seed();
    app.publish("jingshan");
    let alerts = app
        .eventually(FIRING_IN_JINGSHAN, |body| water_alert(body).is_some())
        .await;
    let id = water_alert(&alerts).unwrap()["id"].as_i64().unwrap();
    (app, id)
}

/// The below-target water alert in a list of alerts.
fn water_alert(list: &Value) -> Option<&Value> {
    list.as_array()?
        .iter()
        .find(|a| a["rule"] == "reserve_below_target" && a["subject"] == "water")
}

fn in_an_hour() -> String {
    (Utc::now() + Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[tokio::test]
async fn a_town_short_of_water_has_a_firing_alert() {
    let (app, id) = firing_app().await;
    let list = app.get_ok(FIRING_IN_JINGSHAN).await;
    let alert = water_alert(&list).unwrap();
    assert_eq!(alert["town"], "jingshan");
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["acknowledged"], Value::Null);
    assert_eq!(alert["ack_path"], format!("/api/v1/alerts/{id}/ack"));
    // Other filters leave it out.
    for path in [
        "/api/v1/alerts?state=resolved&town=jingshan",
        "/api/v1/alerts?town=donghua",
        "/api/v1/alerts?town=jingshan&rule=power_not_ready",
        "/api/v1/alerts?town=jingshan&severity=warning&rule=reserve_below_target",
    ] {
        let list = app.get_ok(path).await;
        assert!(water_alert(&list).is_none(), "{path}: {list}");
    }
    let metrics = app.get("/metrics", Some(VIEWER)).await.text;
    let firing = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stockpile_alerts{state=\"firing\"} "))
        .unwrap_or_else(|| panic!("no firing count in\n{metrics}"));
    assert!(firing.parse::<u64>().unwrap() >= 1, "{firing}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("stockpile_notifications{state=\"pending\"} ")),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_alert_filters_are_named() {
    let app = spawn_app_with(AppOptions::full()).await;
    for (query, field) in [
        ("state=burning", "state"),
        ("severity=dire", "severity"),
        ("rule=no_such_rule", "rule"),
        ("town=atlantis", "town"),
        ("limit=many", "limit"),
        ("colour=red", "colour"),
    ] {
        let answer = app
            .get(&format!("/api/v1/alerts?{query}"), Some(VIEWER))
            .await;
        assert_eq!(answer.error(), (400, "invalid_query".into()), "{query}");
        let named = answer.json()["error"]["field"].clone();
        // An unknown parameter is named in the message instead.
        if field != "colour" {
            assert_eq!(named, field, "{query}");
        } else {
            assert!(answer.text.contains("colour"), "{}", answer.text);
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn only_the_towns_officer_or_an_admin_acknowledges() {
    let (app, id) = firing_app().await;
    let ack = format!("/api/v1/alerts/{id}/ack");
    let note = json!({"note": "tanker on its way"});
    for (who, token, status, code) in [
        ("nobody", None, 401, "unauthorized"),
        ("a viewer", Some(VIEWER), 403, "forbidden"),
        ("donghua's officer", Some(DONGHUA_OFFICER), 403, "forbidden"),
    ] {
        let answer = app.post_json(&ack, token, &note).await;
        assert_eq!(answer.error(), (status, code.into()), "{who}");
    }
    let list = app.get_ok(FIRING_IN_JINGSHAN).await;
    assert_eq!(water_alert(&list).unwrap()["acknowledged"], Value::Null);

    let answer = app.post_json(&ack, Some(OFFICER), &note).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let acked = answer.json();
    assert_eq!(acked["id"], id);
    assert_eq!(acked["acknowledged"]["by"], "li-wei");
    assert_eq!(acked["acknowledged"]["note"], "tanker on its way");

    // Acknowledging again keeps the first acknowledgement.
    let again = app
        .post_json(&ack, Some(ADMIN), &json!({"note": "seen"}))
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["acknowledged"]["by"], "li-wei");
    let list = app.get_ok(FIRING_IN_JINGSHAN).await;
    assert_eq!(water_alert(&list).unwrap()["acknowledged"]["by"], "li-wei");
    app.stop().await;
}

#[tokio::test]
async fn acknowledging_what_is_not_there() {
    let (app, id) = firing_app().await;
    for (path, body, status, code) in [
        ("/api/v1/alerts/999999/ack", json!({}), 404, "unknown_alert"),
        ("/api/v1/alerts/seven/ack", json!({}), 404, "unknown_alert"),
        (
            &format!("/api/v1/alerts/{id}/ack"),
            json!({"note": 7}),
            422,
            "invalid_body",
        ),
        (
            &format!("/api/v1/alerts/{id}/ack"),
            json!({"by": "me"}),
            422,
            "invalid_body",
        ),
    ] {
        let answer = app.post_json(path, Some(ADMIN), &body).await;
        assert_eq!(answer.error(), (status, code.into()), "{path} {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn silences_are_made_and_ended_within_ones_towns() {
    let app = spawn_app_with(AppOptions::full()).await;
    let until = in_an_hour();
    // Who may make which silence.
    for (who, token, body, status, code) in [
        (
            "nobody",
            None,
            json!({"town": "jingshan", "until": until}),
            401,
            "unauthorized",
        ),
        (
            "a viewer",
            Some(VIEWER),
            json!({"town": "jingshan", "until": until}),
            403,
            "forbidden",
        ),
        (
            "an officer, another town",
            Some(OFFICER),
            json!({"town": "donghua", "until": until}),
            403,
            "forbidden",
        ),
        (
            "an officer, no town",
            Some(OFFICER),
            json!({"rule": "facility_silent", "until": until}),
            403,
            "forbidden",
        ),
        (
            "no matcher",
            Some(ADMIN),
            json!({"until": until}),
            400,
            "invalid_request",
        ),
        (
            "past until",
            Some(ADMIN),
            json!({"town": "jingshan", "until": "2020-01-01T00:00:00Z"}),
            422,
            "invalid_body",
        ),
        (
            "unknown town",
            Some(ADMIN),
            json!({"town": "atlantis", "until": until}),
            422,
            "invalid_body",
        ),
        (
            "no until",
            Some(ADMIN),
            json!({"town": "jingshan"}),
            422,
            "invalid_body",
        ),
    ] {
        let answer = app.post_json("/api/v1/silences", token, &body).await;
        assert_eq!(
            answer.error(),
            (status, code.into()),
            "{who}: {}",
            answer.text
        );
    }

    let answer = app
        .post_json(
            "/api/v1/silences",
            Some(OFFICER),
            &json!({"town": "jingshan", "rule": "facility_silent", "until": until, "comment": "gateway swap"}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let officers = answer.json();
    assert_eq!(officers["created_by"], "li-wei");
    assert_eq!(officers["town"], "jingshan");
    assert_eq!(officers["rule"], "facility_silent");
    assert_eq!(officers["comment"], "gateway swap");
    assert_eq!(officers["active"], true);
    let answer = app
        .post_json(
            "/api/v1/silences",
            Some(ADMIN),
            &json!({"rule": "gateway_offline", "until": until}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let admins = answer.json();
    assert_eq!(admins["created_by"], "ops");

    let ids = |list: &Value| -> Vec<i64> {
        let mut ids: Vec<i64> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect();
        ids.sort();
        ids
    };
    let (officers, admins) = (
        officers["id"].as_i64().unwrap(),
        admins["id"].as_i64().unwrap(),
    );
    assert_eq!(
        ids(&app.get_ok("/api/v1/silences").await),
        [officers, admins]
    );

    // Who may end which silence.
    for (who, token, id, status, code) in [
        ("a viewer", Some(VIEWER), officers, 403, "forbidden"),
        (
            "another town's officer",
            Some(DONGHUA_OFFICER),
            officers,
            403,
            "forbidden",
        ),
        (
            "an officer, a city-wide silence",
            Some(OFFICER),
            admins,
            403,
            "forbidden",
        ),
        (
            "an unknown id",
            Some(ADMIN),
            999_999,
            404,
            "unknown_silence",
        ),
    ] {
        let answer = app.delete(&format!("/api/v1/silences/{id}"), token).await;
        assert_eq!(answer.error(), (status, code.into()), "{who}");
    }
    let answer = app
        .delete(&format!("/api/v1/silences/{officers}"), Some(OFFICER))
        .await;
    assert_eq!(answer.status, 204, "{}", answer.text);
    let answer = app
        .delete(&format!("/api/v1/silences/{officers}"), Some(OFFICER))
        .await;
    assert_eq!(answer.error(), (404, "unknown_silence".into()));
    assert_eq!(ids(&app.get_ok("/api/v1/silences").await), [admins]);
    let answer = app
        .delete(&format!("/api/v1/silences/{admins}"), Some(ADMIN))
        .await;
    assert_eq!(answer.status, 204, "{}", answer.text);
    assert_eq!(
        ids(&app.get_ok("/api/v1/silences").await),
        Vec::<i64>::new()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_firing_alert_is_notified_to_the_towns_contact() {
    let (app, id) = firing_app().await;
    let list = app
        .eventually_as(ADMIN, "/api/v1/notifications?town=jingshan", |body| {
            body.as_array().is_some_and(|l| !l.is_empty())
        })
        .await;
    let notification = &list[0];
    assert_eq!(notification["channel"], "webhook");
    // Where it goes, never its token.
    assert_eq!(notification["recipient"], "http://127.0.0.1:9");
    assert_eq!(notification["contact"], "Jingshan duty desk");
    assert!(
        notification["alert_ids"]
            .as_array()
            .unwrap()
            .contains(&json!(id)),
        "{notification}"
    );
    let by_alert = app
        .get_ok_as(
            ADMIN,
            &format!("/api/v1/notifications?alert_id={id}&channel=webhook"),
        )
        .await;
    assert_eq!(
        by_alert.as_array().unwrap().len(),
        list.as_array().unwrap().len()
    );
    for path in [
        "/api/v1/notifications?channel=email",
        "/api/v1/notifications?town=donghua",
        "/api/v1/notifications?state=sent",
    ] {
        assert_eq!(app.get_ok_as(ADMIN, path).await, json!([]), "{path}");
    }
    for (query, field) in [
        ("state=lost", "state"),
        ("channel=pigeon", "channel"),
        ("town=atlantis", "town"),
    ] {
        let answer = app
            .get(&format!("/api/v1/notifications?{query}"), Some(ADMIN))
            .await;
        assert_eq!(answer.error(), (400, "invalid_query".into()), "{query}");
        assert_eq!(answer.json()["error"]["field"], field, "{query}");
    }
    app.stop().await;
}

#[tokio::test]
async fn without_alerting_its_endpoints_and_metrics_are_absent() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/alerts",
        "/api/v1/silences",
        "/api/v1/notifications",
    ] {
        let answer = app.get(path, Some(ADMIN)).await;
        assert_eq!(answer.error(), (404, "no_route".into()), "{path}");
    }
    let metrics = app.get("/metrics", Some(ADMIN)).await.text;
    assert!(!metrics.contains("stockpile_alerts"), "{metrics}");
    let doc = app.get_ok("/api/openapi.json").await;
    assert!(doc["paths"].get("/api/v1/alerts").is_none());
    assert!(doc["paths"].get("/api/v1/towns/{id}/history").is_none());
    app.stop().await;
}
