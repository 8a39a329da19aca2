//! The activation table (一表, docs/design.md#activation-table) through the real API
//! and SQLite store: an activation from start to close with its steps, who may do
//! what, and each error a caller can make.

use serde_json::{Value, json};
use store::{ActivationState, Store, StoreOptions};

use crate::helpers::{
    ADMIN, AppOptions, DONGHUA_OFFICER, OFFICER, TestApp, VIEWER, spawn_app_with,
};

/// Two shelters in jingshan (a school with the schools' plan, a gym with its own), one
/// in donghua (a school), none in jianguo; contacts of jingshan for the steps.
pub const SHELTERS: &str = r#"
[[facility]]
id = "js-school"
town = "jingshan"
kind = "shelter"
name = "景山学校"
capacity = 800
dual_use = "school"
convert_within = "2h"

[[facility]]
id = "js-gym"
town = "jingshan"
kind = "shelter"
name = "景山体育馆"
capacity = 500
dual_use = "gym"

[[facility]]
id = "dh-school"
town = "donghua"
kind = "shelter"
capacity = 300
dual_use = "school"

[[contact]]
name = "王芳"
email = "fang.wang@example.org"
lang = "zh"
towns = ["jingshan"]

[[contact]]
name = "Operator desk"
email = "desk@example.org"
lang = "en"
towns = ["jingshan"]

[[activation_plan]]
dual_use = "school"
[[activation_plan.step]]
name = "通知运营方 Notify the operator"
contact = "desk@example.org"
within = "30m"
[[activation_plan.step]]
name = "清空场馆 Clear the hall"
contact = "王芳"
within = "2h"
[[activation_plan.step]]
name = "开门 Open the doors"
contact = "王芳"
within = "4h"

[[activation_plan]]
shelters = ["js-gym"]
[[activation_plan.step]]
name = "通知体育馆 Notify the gym"
contact = "王芳"
within = "1h"
"#;

const ACTIVATIONS: &str = "/api/v1/activations";

async fn app() -> TestApp {
    spawn_app_with(AppOptions {
        extra_registry: SHELTERS,
        ..AppOptions::default()
    })
    .await
}

fn flood(scope: Value) -> Value {
    json!({"scope": scope, "reason": "暴雨红色预警 Red rainstorm warning", "scenario": "flood"})
}

async fn start(app: &TestApp, token: &str, scope: Value) -> Value {
    let answer = app.post_json(ACTIVATIONS, Some(token), &flood(scope)).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    answer.json()
}

fn step_states(activation: &Value, shelter: &str) -> Vec<String> {
    let shelter = activation["shelters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == shelter)
        .unwrap_or_else(|| panic!("{shelter} in {activation}"));
    shelter["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_activation_goes_from_start_through_its_steps_to_close() {
    let app = app().await;
    let started = start(&app, OFFICER, json!({"shelters": ["js-school"]})).await;
    let id = started["id"].as_i64().unwrap();
    assert_eq!(started["state"], "open");
    assert_eq!(started["towns"], json!(["jingshan"]));
    assert_eq!(started["capacity_asked"], 800);
    assert_eq!(started["capacity_opened"], 0);
    assert_eq!(started["steps_total"], 3);
    assert_eq!(started["steps_due"], 3);
    assert_eq!(started["started_by"], "li-wei");
    let steps = started["shelters"][0]["steps"].as_array().unwrap();
    assert_eq!(steps[0]["name"], "通知运营方 Notify the operator");
    assert_eq!(steps[0]["contact"], "desk@example.org");
    assert_eq!(steps[0]["contact_name"], "Operator desk");
    let started_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(started["started_at"].clone()).unwrap();
    let due: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(steps[1]["due_at"].clone()).unwrap();
    assert_eq!(due - started_at, chrono::Duration::hours(2));

    let step = format!("{ACTIVATIONS}/{id}/steps/1");
    let done = app
        .post_json(&step, Some(OFFICER), &json!({"note": "运营方已接电话"}))
        .await;
    assert_eq!(done.status, 200, "{}", done.text);
    let done = done.json();
    assert_eq!(step_states(&done, "js-school"), ["done", "due", "due"]);
    assert_eq!(done["shelters"][0]["steps"][0]["done_by"], "li-wei");
    assert_eq!(done["shelters"][0]["steps"][0]["note"], "运营方已接电话");
    let again = app.post_json(&step, Some(OFFICER), &json!({})).await;
    assert_eq!(again.error(), (409, "step_already_done".into()));

    // The board's reads: the list of open ones and the one, public (no names).
    let open = app.get(ACTIVATIONS, None).await.json();
    assert_eq!(open.as_array().unwrap().len(), 1);
    assert_eq!(open[0]["steps_done"], 1);
    assert_eq!(open[0]["started_by"], Value::Null);
    assert_eq!(open[0]["shelters"][0]["steps"][0]["note"], Value::Null);
    assert_eq!(open[0]["shelters"][0]["steps"][0]["contact"], Value::Null);
    let signed_in = app.get_ok(ACTIVATIONS).await;
    assert_eq!(
        signed_in[0]["shelters"][0]["steps"][0]["contact"],
        "desk@example.org"
    );

    let close = format!("{ACTIVATIONS}/{id}/close");
    let closed = app.post_json(&close, Some(OFFICER), &json!({})).await;
    assert_eq!(closed.status, 200, "{}", closed.text);
    assert_eq!(closed.json()["state"], "closed");
    assert_eq!(closed.json()["closed_by"], "li-wei");
    let twice = app.post_json(&close, Some(OFFICER), &json!({})).await;
    assert_eq!(twice.error(), (409, "activation_closed".into()));
    let late = app
        .post_json(
            &format!("{ACTIVATIONS}/{id}/steps/2"),
            Some(OFFICER),
            &json!({}),
        )
        .await;
    assert_eq!(late.error(), (409, "activation_closed".into()));
    assert_eq!(app.get_ok(ACTIVATIONS).await, json!([]));
    let history = app.get_ok(&format!("{ACTIVATIONS}?state=closed")).await;
    assert_eq!(history[0]["id"], id);
    assert_eq!(history[0]["steps_done"], 1);

    // The same shelter may be activated again once the first is closed.
    start(&app, ADMIN, json!({"shelters": ["js-school"]})).await;

    let audit = app.get_ok_as(ADMIN, "/api/v1/audit?town=jingshan").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .or_else(|| audit.as_array())
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "activation_start",
            "activation_close",
            "activation_step",
            "activation_start"
        ]
    );
}

#[tokio::test]
async fn the_activation_and_its_steps_survive_in_the_store() {
    let app = app().await;
    let started = start(&app, ADMIN, json!({"towns": ["jingshan"]})).await;
    let id = started["id"].as_i64().unwrap();
    let step = format!("{ACTIVATIONS}/{id}/steps/1");
    let body = json!({"shelter": "js-gym", "note": "ok"});
    assert_eq!(app.post_json(&step, Some(ADMIN), &body).await.status, 200);
    // Another connection, as a restarted service would open.
    let store = Store::open(&app.db, StoreOptions::default()).unwrap();
    let open = store.activations(ActivationState::Open, 10).unwrap();
    assert_eq!(open.len(), 1);
    let shelters: Vec<(&str, usize)> = open[0]
        .activation
        .shelters
        .iter()
        .map(|s| {
            (
                s.shelter.as_str(),
                s.steps.iter().filter(|s| s.done.is_some()).count(),
            )
        })
        .collect();
    assert_eq!(shelters, [("js-school", 0), ("js-gym", 1)]);
}

#[tokio::test]
async fn officers_act_for_their_towns_admins_for_any() {
    let app = app().await;
    let donghua = flood(json!({"shelters": ["dh-school"]}));
    let refused = app.post_json(ACTIVATIONS, Some(OFFICER), &donghua).await;
    assert_eq!(refused.error(), (403, "forbidden".into()));
    let cluster = flood(json!({"cluster": "c01"}));
    let refused = app.post_json(ACTIVATIONS, Some(OFFICER), &cluster).await;
    assert_eq!(refused.error(), (403, "forbidden".into()));
    let viewer = app.post_json(ACTIVATIONS, Some(VIEWER), &donghua).await;
    assert_eq!(viewer.error(), (403, "forbidden".into()));
    let nobody = app.post_json(ACTIVATIONS, None, &donghua).await;
    assert_eq!(nobody.error(), (401, "unauthorized".into()));

    let whole = start(&app, ADMIN, json!({"cluster": "c01"})).await;
    let id = whole["id"].as_i64().unwrap();
    assert_eq!(whole["capacity_asked"], 800 + 500 + 300);
    assert_eq!(whole["towns"], json!(["jingshan", "donghua"]));
    // Donghua's officer may do donghua's steps, not jingshan's, and may not close it.
    let step = format!("{ACTIVATIONS}/{id}/steps/1");
    let theirs = json!({"shelter": "dh-school"});
    assert_eq!(
        app.post_json(&step, Some(DONGHUA_OFFICER), &theirs)
            .await
            .status,
        200
    );
    let not_theirs = json!({"shelter": "js-gym"});
    let refused = app
        .post_json(&step, Some(DONGHUA_OFFICER), &not_theirs)
        .await;
    assert_eq!(refused.error(), (403, "forbidden".into()));
    let close = format!("{ACTIVATIONS}/{id}/close");
    let refused = app
        .post_json(&close, Some(DONGHUA_OFFICER), &json!({}))
        .await;
    assert_eq!(refused.error(), (403, "forbidden".into()));

    // Officers see the activations touching their towns.
    assert_eq!(
        app.post_json(&close, Some(ADMIN), &json!({})).await.status,
        200
    );
    start(&app, OFFICER, json!({"shelters": ["js-school"]})).await;
    let all = format!("{ACTIVATIONS}?state=all");
    let theirs = app.get_ok_as(DONGHUA_OFFICER, &all).await;
    let ids: Vec<i64> = theirs
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [id]);
}

#[tokio::test]
async fn each_mistake_is_a_json_error_naming_what_is_wrong() {
    let app = app().await;
    let cases: &[(Value, u16, &str, Option<&str>)] = &[
        (
            flood(json!({"shelters": ["js-pool"]})),
            422,
            "invalid_body",
            Some("scope.shelters[0]"),
        ),
        (
            flood(json!({"shelters": ["js-school", "js-wh1"]})),
            422,
            "invalid_body",
            Some("scope.shelters[1]"),
        ),
        (
            flood(json!({"towns": ["nowhere"]})),
            422,
            "invalid_body",
            Some("scope.towns[0]"),
        ),
        (
            flood(json!({"cluster": "c99"})),
            422,
            "invalid_body",
            Some("scope.cluster"),
        ),
        (
            flood(json!({"towns": ["jianguo"]})),
            422,
            "invalid_body",
            Some("scope"),
        ),
        (
            flood(json!({"towns": ["jingshan"], "cluster": "c01"})),
            422,
            "invalid_body",
            Some("scope"),
        ),
        (
            json!({"scope": {"shelters": ["js-gym"]}, "reason": " "}),
            422,
            "invalid_body",
            Some("reason"),
        ),
        (
            json!({"scope": {"shelters": ["js-gym"]}}),
            422,
            "invalid_body",
            None,
        ),
    ];
    for (body, status, code, field) in cases {
        let answer = app.post_json(ACTIVATIONS, Some(ADMIN), body).await;
        assert_eq!(answer.error(), (*status, code.to_string()), "{body}");
        if let Some(field) = field {
            assert_eq!(
                answer.json()["error"]["field"],
                *field,
                "{body}: {}",
                answer.text
            );
        }
    }
    assert_eq!(app.get_ok(ACTIVATIONS).await, json!([]), "nothing started");

    let both = start(&app, ADMIN, json!({"towns": ["jingshan"]})).await;
    let id = both["id"].as_i64().unwrap();
    let again = app
        .post_json(
            ACTIVATIONS,
            Some(ADMIN),
            &flood(json!({"shelters": ["js-gym"]})),
        )
        .await;
    assert_eq!(again.error(), (409, "shelter_already_activating".into()));
    assert!(again.text.contains("js-gym"), "{}", again.text);

    let which = app
        .post_json(
            &format!("{ACTIVATIONS}/{id}/steps/1"),
            Some(ADMIN),
            &json!({}),
        )
        .await;
    assert_eq!(which.error(), (422, "invalid_body".into()));
    assert_eq!(which.json()["error"]["field"], "shelter");
    let no_step = app
        .post_json(
            &format!("{ACTIVATIONS}/{id}/steps/9"),
            Some(ADMIN),
            &json!({"shelter": "js-gym"}),
        )
        .await;
    assert_eq!(no_step.error(), (404, "unknown_step".into()));
    let not_in_it = app
        .post_json(
            &format!("{ACTIVATIONS}/{id}/steps/1"),
            Some(ADMIN),
            &json!({"shelter": "dh-school"}),
        )
        .await;
    assert_eq!(not_in_it.error(), (404, "unknown_step".into()));
    for path in [format!("{ACTIVATIONS}/999"), format!("{ACTIVATIONS}/abc")] {
        assert_eq!(
            app.get(&path, Some(ADMIN)).await.error(),
            (404, "unknown_activation".into())
        );
    }
    let closing = app
        .post_json(&format!("{ACTIVATIONS}/999/close"), Some(ADMIN), &json!({}))
        .await;
    assert_eq!(closing.error(), (404, "unknown_activation".into()));
    let bad_state = app
        .get(&format!("{ACTIVATIONS}?state=maybe"), Some(ADMIN))
        .await;
    assert_eq!(bad_state.error(), (400, "invalid_query".into()));
}
