//! Vulnerable people per community (村社) (docs/design.md#communities): a water point
//! that goes not ready names the communities it serves and how many of their
//! vulnerable people, in `GET /api/v1/towns/{id}/vulnerable` and in the alert email
//! (through the real SMTP server of testkit).

use std::time::Duration;

use reserve::reading::PumpState;
use serde_json::json;

use crate::helpers::{AppOptions, VIEWER, spawn_app_with};

/// Three communities of jingshan: two drink from its water point, two hang on its power
/// unit. Its officers read Chinese and English.
const COMMUNITIES: &str = r#"
[[community]]
id = "sanyanjing"
town = "jingshan"
name = "三眼井社区"
groups = { elderly_alone = 40, infants = 12 }
water_point = "js-wp1"
power_unit = "js-pu1"

[[community]]
id = "jishikou"
town = "jingshan"
name = "吉市口社区"
groups = { elderly_alone = 10, dialysis = 2 }
water_point = "js-wp1"

[[community]]
id = "huangchenggen"
town = "jingshan"
name = "皇城根社区"
groups = { infants = 5 }
power_unit = "js-pu1"

[[contact]]
name = "李伟"
email = "li.wei@example.org"
lang = "zh"
towns = ["jingshan"]

[[contact]]
name = "Wang Fang"
email = "wang.fang@example.org"
lang = "en"
towns = ["jingshan"]
"#;

const JINGSHAN: &str = "/api/v1/towns/jingshan/vulnerable";

#[tokio::test]
async fn a_water_point_not_ready_names_the_communities_it_serves() {
    let app = spawn_app_with(AppOptions {
        extra_registry: COMMUNITIES,
        ..AppOptions::default()
    })
    .await;
    app.seed();
    app.publish("jingshan");

    // Everything ready: the communities are listed, nobody is affected. The town's
    // water is below target, but water is everyone's need, not a group's.
    let mut calm = app.get_ok(JINGSHAN).await;
    // Every listed community, affected or not, with the facilities serving it: what
    // the town page lists.
    let listed = calm.as_object_mut().unwrap().remove("listed");
    assert_eq!(
        listed,
        Some(json!([
            {"id": "sanyanjing", "name": "三眼井社区", "people": 52,
             "groups": {"elderly_alone": 40, "infants": 12},
             "water_point": "js-wp1", "power_unit": "js-pu1", "shelter": null},
            {"id": "jishikou", "name": "吉市口社区", "people": 12,
             "groups": {"dialysis": 2, "elderly_alone": 10},
             "water_point": "js-wp1", "power_unit": null, "shelter": null},
            {"id": "huangchenggen", "name": "皇城根社区", "people": 5,
             "groups": {"infants": 5},
             "water_point": null, "power_unit": "js-pu1", "shelter": null},
        ]))
    );
    assert_eq!(affected_on_the_board(&app).await, json!(null));
    assert_eq!(
        calm,
        json!({
            "town": "jingshan",
            "communities_listed": 3,
            "people_listed": 69,
            "affected_people": 0,
            "communities": [],
        })
    );
    // The town's groups are its communities' sums.
    let town = app.get_ok("/api/v1/towns/jingshan").await;
    assert_eq!(
        town["groups"],
        json!({"dialysis": 2, "elderly_alone": 50, "infants": 17})
    );

    app.water("js-wp1", 1500.0, PumpState::Fault, true);
    app.publish("jingshan");
    let mut hit = app
        .eventually(JINGSHAN, |v| v["affected_people"] != 0)
        .await;
    assert_eq!(hit.as_object_mut().unwrap().remove("listed"), listed);
    // The board's tile says it briefly, from the towns list.
    assert_eq!(
        affected_on_the_board(&app).await,
        json!({"communities": 2, "people": 64})
    );
    let water_point = json!([{"kind": "water_point_not_ready", "facility": "js-wp1"}]);
    assert_eq!(
        hit,
        json!({
            "town": "jingshan",
            "communities_listed": 3,
            "people_listed": 69,
            "affected_people": 64,
            "communities": [
                {
                    "id": "sanyanjing",
                    "name": "三眼井社区",
                    "people": 52,
                    "groups": {"elderly_alone": 40, "infants": 12},
                    "causes": water_point,
                },
                {
                    "id": "jishikou",
                    "name": "吉市口社区",
                    "people": 12,
                    "groups": {"dialysis": 2, "elderly_alone": 10},
                    "causes": water_point,
                },
            ],
        })
    );

    // The pump repaired: nobody affected again.
    app.water("js-wp1", 1500.0, PumpState::Ok, true);
    app.publish("jingshan");
    app.eventually(JINGSHAN, |v| v["affected_people"] == 0)
        .await;
}

/// Jingshan's `vulnerable_affected` in `GET /api/v1/towns`, as a board tile reads it.
async fn affected_on_the_board(app: &crate::helpers::TestApp) -> serde_json::Value {
    let towns = app.get_ok("/api/v1/towns").await;
    let jingshan = towns["towns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "jingshan")
        .expect("jingshan listed");
    jingshan["vulnerable_affected"].clone()
}

#[tokio::test]
async fn towns_without_communities_and_unknown_towns() {
    let app = spawn_app_with(AppOptions {
        extra_registry: COMMUNITIES,
        ..AppOptions::default()
    })
    .await;
    app.seed();
    let donghua = app.get_ok("/api/v1/towns/donghua/vulnerable").await;
    assert_eq!(donghua["communities_listed"], 0);
    assert_eq!(donghua["communities"], json!([]));

    let answer = app
        .get("/api/v1/towns/nowhere/vulnerable", Some(VIEWER))
        .await;
    assert_eq!(answer.error(), (404, "unknown_town".to_owned()));
}

#[tokio::test]
async fn the_alert_email_names_the_affected_communities() {
    let smtp = testkit::SmtpServer::start();
    let app = spawn_app_with(AppOptions {
        alerts: true,
        smtp_url: Some(smtp.url()),
        extra_registry: COMMUNITIES,
        ..AppOptions::default()
    })
    .await;
    app.seed();
    app.water("js-wp1", 1500.0, PumpState::Fault, true);
    app.publish("jingshan");

    let zh = "影响 2 个村社 64 名弱势人员：三眼井社区 52 人、吉市口社区 12 人";
    let en = "Affects 64 vulnerable people in 2 communities: 三眼井社区 52, 吉市口社区 12";
    // Mailed once the pump's fault is evaluated (the water shortfall alone may have
    // been mailed before, naming nobody): wait for both, in text and HTML.
    tokio::task::spawn_blocking(move || {
        let has = |mails: &[testkit::ReceivedMail], to: &str, line: &str| {
            mails.iter().any(|m| {
                m.to == [to]
                    && m.body_text.contains(line)
                    && m.body_html.as_deref().is_some_and(|h| h.contains(line))
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mails = smtp.messages();
            if has(&mails, "li.wei@example.org", zh) && has(&mails, "wang.fang@example.org", en) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no mails naming the communities: {mails:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_what_if_water_cut_reports_the_same_per_town() {
    let app = spawn_app_with(AppOptions {
        extra_registry: COMMUNITIES,
        ..AppOptions::default()
    })
    .await;
    app.seed();
    let body = json!({"water_cut": {"lose_water_points": true}});
    let answer = app
        .post_json("/api/v1/scenarios", Some(VIEWER), &body)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let outcome = answer.json();
    let town = |id: &str| {
        outcome["towns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()
            .clone()
    };
    let jingshan = town("jingshan")["vulnerable"].clone();
    assert_eq!(jingshan["affected_people"], 64, "{jingshan}");
    let named: Vec<&str> = jingshan["communities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(named, ["sanyanjing", "jishikou"]);
    // A town without communities says nothing rather than "nobody".
    assert_eq!(town("donghua")["vulnerable"], json!(null));
    // The live town is untouched by the what-if.
    let live = app.get_ok(JINGSHAN).await;
    assert_eq!(live["affected_people"], 0);
}
