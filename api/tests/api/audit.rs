//! The audit log (docs/design.md#audit): every mutation through the API — sheltered
//! count, silence made and ended, acknowledgement, transfer, drill — leaves an entry
//! naming who, what, which towns and from where; an officer reads the entries of their
//! towns, an admin all, since a time.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::helpers::{ADMIN, AppOptions, DONGHUA_OFFICER, OFFICER, VIEWER, spawn_app_with};

/// `(action, actor, towns)` of each entry, newest first.
fn entries(list: &Value) -> Vec<(String, String, Vec<String>)> {
    let list = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"));
    list.iter()
        .map(|e| {
            let towns = e["towns"].as_array().unwrap();
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
                towns
                    .iter()
                    .map(|t| t.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

fn entry(action: &str, actor: &str, towns: &[&str]) -> (String, String, Vec<String>) {
    let towns = towns.iter().map(|t| (*t).to_owned()).collect();
    (action.to_owned(), actor.to_owned(), towns)
}

#[tokio::test]
async fn every_mutation_is_audited_and_officers_read_their_towns_entries() {
    let app = spawn_app_with(AppOptions::full()).await;
    app.seed();
    app.publish("jingshan");
    let firing = app
        .eventually("/api/v1/alerts?state=firing&town=jingshan", |b| {
            b.as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let alert = firing[0]["id"].as_i64().unwrap();
    let started = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);

    let sheltered = json!({"sheltered": 1200});
    let answer = app
        .put_json(
            "/api/v1/towns/jingshan/sheltered",
            Some(OFFICER),
            &sheltered,
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let until = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let silence = json!({"town": "jingshan", "rule": "facility_silent", "until": until,
                         "comment": "gateway swapped"});
    let answer = app
        .post_json("/api/v1/silences", Some(OFFICER), &silence)
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let silence = answer.json()["id"].as_i64().unwrap();
    let answer = app
        .delete(&format!("/api/v1/silences/{silence}"), Some(OFFICER))
        .await;
    assert_eq!(answer.status, 204);
    let ack = json!({"note": "truck on its way"});
    let path = format!("/api/v1/alerts/{alert}/ack");
    assert_eq!(app.post_json(&path, Some(OFFICER), &ack).await.status, 200);
    let aid = json!({"from": "dh-wh1", "to": "js-wp1", "category": "water",
                     "quantity": 2000.0, "note": "tanker"});
    let answer = app
        .post_json("/api/v1/transfers", Some(DONGHUA_OFFICER), &aid)
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let drill = json!({"scope": "towns:donghua", "duration": "1h", "note": "flood drill"});
    let answer = app.post_json("/api/v1/drill", Some(ADMIN), &drill).await;
    assert_eq!(answer.status, 201, "{}", answer.text);

    let all = app.get_ok_as(ADMIN, "/api/v1/audit").await;
    assert_eq!(
        entries(&all),
        [
            entry("drill_start", "ops", &["donghua"]),
            entry("transfer", "zhao-min", &["donghua", "jingshan"]),
            entry("ack", "li-wei", &["jingshan"]),
            entry("silence_end", "li-wei", &["jingshan"]),
            entry("silence", "li-wei", &["jingshan"]),
            entry("sheltered", "li-wei", &["jingshan"]),
        ]
    );
    let newest = &all[1];
    assert!(
        newest["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "from where: {newest}"
    );
    assert_eq!(all[2]["alert_ids"], json!([alert]));
    assert!(
        all[4]["detail"]
            .as_str()
            .unwrap()
            .contains("gateway swapped"),
        "{}",
        all[4]
    );
    assert!(
        all[5]["detail"].as_str().unwrap().contains("1200"),
        "{}",
        all[5]
    );

    // Officers read their towns' entries; asking for another town is refused.
    let jingshan = app.get_ok_as(OFFICER, "/api/v1/audit").await;
    assert_eq!(entries(&jingshan).len(), 5, "{jingshan}");
    let donghua = app.get_ok_as(DONGHUA_OFFICER, "/api/v1/audit").await;
    let actions: Vec<String> = entries(&donghua).into_iter().map(|e| e.0).collect();
    assert_eq!(actions, ["drill_start", "transfer"]);
    let answer = app.get("/api/v1/audit?town=donghua", Some(OFFICER)).await;
    assert_eq!(answer.error(), (403, "forbidden".into()));
    let answer = app.get("/api/v1/audit", Some(VIEWER)).await;
    assert_eq!(answer.status, 403);
    assert_eq!(app.get("/api/v1/audit", None).await.status, 401);

    // Filters: a town (admin), since a time (the six entries came after `started`,
    // none after a minute from now), both named when wrong.
    let by_town = app.get_ok_as(ADMIN, "/api/v1/audit?town=donghua").await;
    assert_eq!(entries(&by_town).len(), 2);
    let since = format!("/api/v1/audit?since={}", started.replace('+', "%2B"));
    assert_eq!(entries(&app.get_ok_as(ADMIN, &since).await).len(), 6);
    let later =
        (Utc::now() + chrono::Duration::minutes(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let none = app
        .get_ok_as(ADMIN, &format!("/api/v1/audit?since={later}"))
        .await;
    assert_eq!(none, json!([]));
    for (query, field) in [("town=atlantis", "town"), ("since=yesterday", "since")] {
        let answer = app
            .get(&format!("/api/v1/audit?{query}"), Some(ADMIN))
            .await;
        assert_eq!(answer.error(), (400, "invalid_query".into()), "{query}");
        assert_eq!(answer.json()["error"]["field"], field, "{query}");
    }
}
