//! With `public_read` on, a wall display reads figures without a token; nothing that
//! names a person, holds raw gateway input or a URL's secret is open: notifications and
//! rejects need an officer's token (its towns' rows) or an admin's, webhook URLs show
//! only where they point, and public alerts do not say who acknowledged or why.

use chrono::Utc;
use serde_json::{Value, json};
use store::{RejectRecord, Store, StoreOptions};

use crate::helpers::{
    ADMIN, AppOptions, DONGHUA_OFFICER, OFFICER, TestApp, VIEWER, spawn_app_with,
};

/// The webhook token in the test registry's contact URL.
const ROBOT_TOKEN: &str = "robot-secret-5e1f";

/// The seeded city with alerting on and public reads; jingshan's water alert fired and
/// its contact's webhook notification is in the outbox.
async fn notified_app() -> TestApp {
    let app = spawn_app_with(AppOptions::full()).await;
    app.seed();
    app.publish("jingshan");
    app.eventually_as(ADMIN, "/api/v1/notifications", |body| {
        body.as_array().is_some_and(|l| !l.is_empty())
    })
    .await;
    app
}

#[tokio::test]
async fn public_reads_open_the_wall_display_and_nothing_that_names_people() {
    let app = notified_app().await;
    for path in [
        "/api/v1/overview",
        "/api/v1/towns",
        "/api/v1/towns/jingshan",
        "/api/v1/towns/jingshan/history",
        "/api/v1/clusters",
        "/api/v1/clusters/c01",
        "/api/v1/facilities/js-wh1",
        "/api/v1/alerts",
        "/api/v1/silences",
        "/metrics",
        "/healthz",
        "/",
        "/api/openapi.json",
    ] {
        let answer = app.get(path, None).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
    }
    for path in [
        "/api/v1/notifications",
        "/api/v1/notifications?town=jingshan",
        "/api/v1/rejects",
    ] {
        let anonymous = app.get(path, None).await;
        assert_eq!(anonymous.error(), (401, "unauthorized".into()), "{path}");
        assert!(!anonymous.text.contains(ROBOT_TOKEN), "{path}");
        // A wall display's token is no better.
        let viewer = app.get(path, Some(VIEWER)).await;
        assert_eq!(viewer.error(), (403, "forbidden".into()), "{path}");
    }
    // The document says so: these reads take a token, no anonymous alternative.
    let doc = app.get("/api/openapi.json", None).await.json();
    for path in ["/api/v1/notifications", "/api/v1/rejects"] {
        assert_eq!(
            doc["paths"][path]["get"]["security"],
            json!([{"bearer": []}]),
            "{path}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn officers_see_their_own_towns_notifications_and_admins_all() {
    let app = notified_app().await;
    // Which notifications, by id and town: their delivery attempts go on meanwhile (to a
    // port nobody listens on), so the rows' attempt fields change between two reads.
    let rows = |list: &Value| -> Vec<(i64, String)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["id"].as_i64().unwrap(),
                    n["town"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let admin = rows(&app.get_ok_as(ADMIN, "/api/v1/notifications").await);
    assert!(!admin.is_empty());
    let jingshan = rows(&app.get_ok_as(OFFICER, "/api/v1/notifications").await);
    assert_eq!(jingshan, admin, "all of them are jingshan's");
    let asked = app
        .get_ok_as(OFFICER, "/api/v1/notifications?town=jingshan")
        .await;
    assert_eq!(rows(&asked), admin);
    // Donghua's officer sees none of jingshan's, and may not ask for them.
    assert_eq!(
        app.get_ok_as(DONGHUA_OFFICER, "/api/v1/notifications")
            .await,
        json!([])
    );
    let asked = app
        .get("/api/v1/notifications?town=jingshan", Some(DONGHUA_OFFICER))
        .await;
    assert_eq!(asked.error(), (403, "forbidden".into()));
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_url_shows_only_where_it_points_to_anyone() {
    let app = notified_app().await;
    // Wait for a failed delivery attempt too (nobody listens on port 9): its error must
    // not quote the URL either.
    let list = app
        .eventually_as(ADMIN, "/api/v1/notifications", |body| {
            body[0]["attempts"].as_u64().is_some_and(|a| a > 0)
        })
        .await;
    let webhook = &list[0];
    assert_eq!(webhook["channel"], "webhook");
    assert_eq!(webhook["recipient"], "http://127.0.0.1:9");
    for token in [ADMIN, OFFICER] {
        let answer = app.get("/api/v1/notifications", Some(token)).await;
        assert_eq!(answer.status, 200);
        assert!(
            !answer.text.contains(ROBOT_TOKEN) && !answer.text.contains("/robot/send"),
            "{}",
            answer.text
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn public_alerts_and_silences_say_what_and_when_not_who_or_why() {
    let app = notified_app().await;
    let alerts = app.get_ok_as(ADMIN, "/api/v1/alerts?town=jingshan").await;
    let id = alerts[0]["id"].as_i64().unwrap();
    let answer = app
        .post_json(
            &format!("/api/v1/alerts/{id}/ack"),
            Some(OFFICER),
            &json!({"note": "call Li Wei on +8613800000000"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    let public = app.get("/api/v1/alerts?town=jingshan", None).await;
    assert_eq!(public.status, 200);
    let alert = public.json()[0].clone();
    assert!(alert["acknowledged"]["at"].is_string(), "{alert}");
    assert_eq!(alert["acknowledged"].get("by"), None, "{alert}");
    assert_eq!(alert["acknowledged"].get("note"), None, "{alert}");
    assert!(
        !public.text.contains("li-wei") && !public.text.contains("+8613800000000"),
        "{}",
        public.text
    );
    // With a token, who and why.
    let with_token = app.get_ok("/api/v1/alerts?town=jingshan").await;
    assert_eq!(with_token[0]["acknowledged"]["by"], "li-wei");

    // Silences alike: what and until when, not who or why.
    let until = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let answer = app
        .post_json(
            "/api/v1/silences",
            Some(OFFICER),
            &json!({"town": "jingshan", "until": until, "comment": "Li Wei swaps the gateway"}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let public = app.get("/api/v1/silences", None).await;
    assert_eq!(public.status, 200);
    let silence = public.json()[0].clone();
    assert_eq!(silence["town"], "jingshan", "{silence}");
    assert_eq!(silence.get("created_by"), None, "{silence}");
    assert_eq!(silence.get("comment"), None, "{silence}");
    let with_token = app.get_ok("/api/v1/silences").await;
    assert_eq!(with_token[0]["created_by"], "li-wei");
    app.stop().await;
}

#[tokio::test]
async fn officers_see_their_own_towns_rejects_and_admins_all() {
    let app = spawn_app_with(AppOptions::default()).await;
    let mut store = Store::open(&app.db, StoreOptions::default()).unwrap();
    let mut batch = store.batch().unwrap();
    for topic in [
        "stockpile/v1/jingshan/js-wh1/reading",
        "stockpile/v1/donghua/dh-wh1/reading",
        "not/a/stockpile/topic",
    ] {
        batch
            .insert_reject(&RejectRecord::new(
                Utc::now(),
                topic,
                "not_json",
                "detail",
                b"{\"phone\": \"+8613800000000\"",
            ))
            .unwrap();
    }
    batch.commit().unwrap();
    let topics = |log: &Value| -> Vec<String> {
        let mut topics: Vec<String> = log["rejects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["topic"].as_str().unwrap().to_owned())
            .collect();
        topics.sort();
        topics
    };
    let admin = app.get_ok_as(ADMIN, "/api/v1/rejects").await;
    assert_eq!(topics(&admin).len(), 3, "{admin}");
    let officer = app.get_ok_as(OFFICER, "/api/v1/rejects").await;
    assert_eq!(topics(&officer), ["stockpile/v1/jingshan/js-wh1/reading"]);
    let other = app.get_ok_as(DONGHUA_OFFICER, "/api/v1/rejects").await;
    assert_eq!(topics(&other), ["stockpile/v1/donghua/dh-wh1/reading"]);
    // Counts by reason are the service's, whoever asks.
    assert_eq!(officer["counts"], json!({"not_json": 3}));
    app.stop().await;
}
