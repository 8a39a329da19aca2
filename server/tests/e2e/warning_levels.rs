//! Warning levels (预警等级, docs/design.md#warning-levels) against the real binary: real
//! Mosquitto, a real SMTP server, the SQLite file, a restart. A town comfortably above
//! its own three days falls below the five days a red warning asks of its district:
//! the alert fires, its officers are mailed sooner than the usual group wait and told
//! the level, and it resolves when the level is ended or runs out.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::common::{Api, Service, publish_reading};

const ADMIN: &str = "admin-token-0123456789";
const OFFICER: &str = "officer-token-0123456789";

/// Two towns in two districts, drinking water only (3 L a day each), and what red and
/// orange change. Li Wei reads English, Wang Fang Chinese.
const REGISTRY: &str = r#"
[[category]]
id = "water"
name = "Drinking water"
name_zh = "饮用水"
unit = "L"
daily_need = 3.0

[[town]]
id = "jingshan"
name = "Jingshan"
district = "dongcheng"
cluster = "c01"
population = 1000

[[town]]
id = "yuetan"
name = "Yuetan"
district = "xicheng"
cluster = "c02"
population = 1000

[[facility]]
id = "js-wh1"
name = "North depot"
town = "jingshan"
kind = "warehouse"
report_every = "1h"

[[facility]]
id = "yt-wh1"
name = "Yuetan depot"
town = "yuetan"
kind = "warehouse"
report_every = "1h"

[[facility]]
id = "js-gym"
name = "Jingshan gym"
town = "jingshan"
kind = "shelter"
capacity = 300
dual_use = "gym"
report_every = "1h"

[[facility]]
id = "yt-gym"
name = "Yuetan gym"
town = "yuetan"
kind = "shelter"
capacity = 300
dual_use = "gym"
report_every = "1h"

[[contact]]
name = "Li Wei"
email = "li.wei@example.org"
lang = "en"
towns = ["jingshan"]

[[contact]]
name = "Wang Fang"
email = "wang.fang@example.org"
lang = "zh"
towns = ["jingshan"]

[warning_levels.orange]
days_target = 4.0

[warning_levels.red]
days_target = 5.0
group_wait = "1s"
escalate_after = "10m"
pre_activate = ["gym"]
"#;

/// A deployment whose officers are told an hour after a change, unless a level says
/// sooner: a mail within the test's deadline proves the red level's `group_wait`.
struct Deployment {
    dir: tempfile::TempDir,
}

impl Deployment {
    fn new(broker: &testkit::Mosquitto, smtp: &testkit::SmtpServer) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("registry.toml"), REGISTRY).unwrap();
        let config = format!(
            "registry = \"registry.toml\"\n[mqtt]\nurl = \"{}\"\nclient_id = \"stockpile-warning\"\n\
             [store]\npath = \"stockpile.db\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\npublic_read = true\n\
             tokens = [{{ name = \"ops\", role = \"admin\", token = \"{ADMIN}\" }}, \
             {{ name = \"li\", role = \"officer\", token = \"{OFFICER}\", towns = [\"jingshan\"] }}]\n\
             [alerts]\ngroup_wait = \"1h\"\nstartup_grace_factor = 0\n\
             [smtp]\nurl = \"{}\"\nfrom = \"Stockpile <alerts@example.org>\"\n",
            broker.url(),
            smtp.url()
        );
        std::fs::write(dir.path().join("stockpile.toml"), config).unwrap();
        Deployment { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("stockpile.toml")
    }
}

/// Publishes one water reading with QoS 1 and waits for the broker's PUBACK.
async fn publish_water(broker: &testkit::Mosquitto, town: &str, facility: &str, litres: u64) {
    publish_reading(
        broker,
        town,
        facility,
        &format!(r#""stock": {{"water": {litres}}}"#),
    )
    .await;
}

/// The town's warehouse holds 12,600 L (4.2 days for its 1,000 people) and its gym is
/// in everyday use with nobody inside.
async fn stock_town(broker: &testkit::Mosquitto, town: &str, prefix: &str) {
    publish_water(broker, town, &format!("{prefix}-wh1"), 12_600).await;
    let gym = format!("{prefix}-gym");
    publish_reading(
        broker,
        town,
        &gym,
        r#""shelter": {"occupancy": 0, "mode": "normal"}"#,
    )
    .await;
}

impl Api {
    async fn set_level(&self, token: Option<&str>, body: Value) -> (u16, Value) {
        self.post("/api/v1/warning-level", token, Some(body)).await
    }

    /// Waits until Jingshan's water alert is `reserve_below_target` in `state`.
    async fn wait_for_below_target(&self, state: &str) -> Value {
        let path = format!("/api/v1/alerts?town=jingshan&state={state}");
        let alerts = self
            .wait_for(&path, &format!("reserve_below_target {state}"), |a| {
                a.as_array()
                    .is_some_and(|a| a.iter().any(|a| a["rule"] == "reserve_below_target"))
            })
            .await;
        alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["rule"] == "reserve_below_target")
            .cloned()
            .unwrap()
    }
}

/// Waits for a mail to `to` whose text contains `needle`.
fn wait_for_mail(smtp: &testkit::SmtpServer, to: &str, needle: &str) -> testkit::ReceivedMail {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(mail) = smtp
            .messages()
            .into_iter()
            .find(|m| m.to.iter().any(|t| t == to) && m.body_text.contains(needle))
        {
            return mail;
        }
        assert!(
            Instant::now() < deadline,
            "no mail to {to} saying {needle:?} within 30 s; mails: {:?}",
            smtp.messages()
                .iter()
                .map(|m| (&m.to, &m.body_text))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(deployment: &Deployment) -> Service {
    tokio::task::block_in_place(|| Service::start(&deployment.config()))
}

/// Jingshan's water: its target, and its level in force as the town's figures say.
async fn jingshan(api: &Api) -> (f64, Value, Value) {
    let (status, town) = api.get("/api/v1/towns/jingshan", None).await;
    assert_eq!(status, 200, "{town}");
    (
        town["categories"][0]["target_days"].as_f64().unwrap(),
        town["status"].clone(),
        town["warning_level"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_warning_raises_the_districts_target_alerts_sooner_and_ends() {
    let broker = testkit::Mosquitto::start();
    let smtp = testkit::SmtpServer::start();
    let deployment = Deployment::new(&broker, &smtp);
    let service = start(&deployment);
    let api = Api::of(&service, ADMIN);

    // 12,600 L for 1,000 people at 3 L a day: 4.2 days, fine under three.
    stock_town(&broker, "jingshan", "js").await;
    stock_town(&broker, "yuetan", "yt").await;
    for town in ["jingshan", "yuetan"] {
        api.wait_for(&format!("/api/v1/towns/{town}"), "the readings", |t| {
            t["categories"][0]["days"].as_f64() == Some(4.2) && t["verified"] == true
        })
        .await;
    }
    let (target, status, level) = jingshan(&api).await;
    assert_eq!((target, status, level), (3.0, json!("ok"), Value::Null));

    // Only an admin sets a level.
    let red = json!({"level": "red", "scope": {"district": "dongcheng"},
                     "reason": "市气象台暴雨红色预警", "for": "2h"});
    assert_eq!(api.set_level(None, red.clone()).await.0, 401);
    let (status, refused) = api.set_level(Some(OFFICER), red.clone()).await;
    assert_eq!(status, 403, "{refused}");

    // The red level for the district: Jingshan is held to five days, Yuetan is not.
    let (status, set) = api.set_level(Some(ADMIN), red).await;
    assert_eq!(status, 201, "{set}");
    assert_eq!(set["towns"], json!(["jingshan"]));
    assert_eq!(set["set"]["level"], "red");
    assert_eq!(set["set"]["scope"], json!({"district": "dongcheng"}));
    let red_id = set["set"]["id"].as_i64().unwrap();

    // Its plan starts converting the district's gyms: Jingshan's, not Yuetan's.
    let activation = set["pre_activated"]
        .as_i64()
        .expect("an activation started");
    let (status, started) = api
        .get(&format!("/api/v1/activations/{activation}"), Some(ADMIN))
        .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["state"], "open", "{started}");
    let shelters: Vec<&Value> = started["shelters"].as_array().unwrap().iter().collect();
    assert_eq!(shelters.len(), 1, "{started}");
    assert_eq!(shelters[0]["id"], "js-gym");
    assert!(
        started["reason"]
            .as_str()
            .unwrap()
            .contains("市气象台暴雨红色预警"),
        "{started}"
    );
    let (target, status, level) = jingshan(&api).await;
    assert_eq!((target, status), (5.0, json!("critical")), "{level}");
    assert_eq!(level["level"], "red");
    assert_eq!(level["days_target"], 5.0);
    assert_eq!(level["reason"], "市气象台暴雨红色预警");
    assert_eq!(level["scope"], json!({"district": "dongcheng"}));
    let (_, yuetan) = api.get("/api/v1/towns/yuetan", None).await;
    assert_eq!(yuetan["warning_level"], Value::Null);
    assert_eq!(yuetan["categories"][0]["target_days"], 3.0);
    let (_, list) = api.get("/api/v1/towns", None).await;
    let listed = list["towns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "jingshan")
        .cloned()
        .unwrap();
    assert_eq!(listed["warning_level"]["level"], "red", "{listed}");

    // The shortfall fires and both officers are told within the red level's second,
    // not the usual hour, each in their language, with the level named.
    let alert = api.wait_for_below_target("firing").await;
    assert_eq!(alert["detail"]["target_days"], 5.0, "{alert}");
    let en = tokio::task::block_in_place(|| {
        wait_for_mail(&smtp, "li.wei@example.org", "Red warning: target 5 days")
    });
    assert!(
        en.body_text.contains("市气象台暴雨红色预警"),
        "{}",
        en.body_text
    );
    tokio::task::block_in_place(|| {
        wait_for_mail(&smtp, "wang.fang@example.org", "红色预警：目标 5 天")
    });

    // Where Jingshan's level comes from, and the district's history.
    let (status, town_level) = api.get("/api/v1/warning-level?town=jingshan", None).await;
    assert_eq!(status, 200, "{town_level}");
    assert_eq!(town_level["warning_level"]["id"], red_id);
    assert_eq!(
        town_level["warning_level"]["scope"],
        json!({"district": "dongcheng"})
    );
    let (_, levels) = api.get("/api/v1/warning-level", Some(ADMIN)).await;
    assert_eq!(levels["in_force"].as_array().unwrap().len(), 1, "{levels}");
    assert_eq!(levels["in_force"][0]["set_by"], "ops");

    // A restart keeps the level: the target, the board's field and the alert stay.
    service.signal(Signal::SIGTERM);
    tokio::task::block_in_place(|| service.wait(Duration::from_secs(30)));
    let service = start(&deployment);
    let api = Api::of(&service, ADMIN);
    let (target, status, level) = jingshan(&api).await;
    assert_eq!((target, status), (5.0, json!("critical")), "{level}");
    assert_eq!(level["id"], red_id);
    api.wait_for_below_target("firing").await;

    // `none` for the district ends it: back to three days, the alert resolves.
    let (status, ended) = api
        .set_level(
            Some(ADMIN),
            json!({"level": "none", "scope": {"district": "dongcheng"}}),
        )
        .await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["ended"], json!([red_id]));
    assert_eq!(ended["set"], Value::Null);
    let (target, status, level) = jingshan(&api).await;
    assert_eq!((target, status, level), (3.0, json!("ok"), Value::Null));
    api.wait_for_below_target("resolved").await;

    // The audit log has who set and ended it, for Jingshan's officers to read.
    let (_, audit) = api.get("/api/v1/audit?town=jingshan", Some(ADMIN)).await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("warning_level"))
        .collect();
    assert_eq!(actions, ["warning_level_end", "warning_level"], "{audit}");
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "warning_level")
        .unwrap();
    assert_eq!(entry["actor"], "ops");
    assert!(
        entry["detail"]
            .as_str()
            .unwrap()
            .contains("red over district:dongcheng"),
        "{entry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_level_runs_out_at_its_end_without_a_request() {
    let broker = testkit::Mosquitto::start();
    let smtp = testkit::SmtpServer::start();
    let deployment = Deployment::new(&broker, &smtp);
    let service = start(&deployment);
    let api = Api::of(&service, ADMIN);
    stock_town(&broker, "jingshan", "js").await;
    api.wait_for("/api/v1/towns/jingshan", "the readings", |t| {
        t["categories"][0]["days"].as_f64() == Some(4.2) && t["verified"] == true
    })
    .await;

    // Red for Jingshan alone, for a few seconds.
    let ends_at = (Utc::now() + chrono::Duration::seconds(4)).to_rfc3339();
    let (status, set) = api
        .set_level(
            Some(ADMIN),
            json!({"level": "red", "scope": {"towns": ["jingshan"]},
                   "reason": "drill of the expiry", "ends_at": ends_at}),
        )
        .await;
    assert_eq!(status, 201, "{set}");
    api.wait_for_below_target("firing").await;

    // Its end passes: the target is three days again and the alert resolves.
    api.wait_for("/api/v1/towns/jingshan", "the level's end", |t| {
        t["warning_level"].is_null() && t["categories"][0]["target_days"] == 3.0
    })
    .await;
    api.wait_for_below_target("resolved").await;
    let (_, levels) = api.get("/api/v1/warning-level", Some(ADMIN)).await;
    assert_eq!(levels["in_force"], json!([]), "{levels}");
    assert_eq!(levels["history"][0]["in_force"], false, "{levels}");
    assert!(levels["history"][0]["ends_at"].is_string(), "{levels}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_levels_and_scopes_are_refused_naming_the_field() {
    let broker = testkit::Mosquitto::start();
    let smtp = testkit::SmtpServer::start();
    let deployment = Deployment::new(&broker, &smtp);
    let service = start(&deployment);
    let api = Api::of(&service, ADMIN);
    let city = json!({"city": true});
    let cases = [
        (
            json!({"level": "purple", "scope": city, "reason": "x"}),
            "level",
        ),
        (json!({"level": "red", "scope": {}, "reason": "x"}), "scope"),
        (
            json!({"level": "red", "scope": {"city": true, "district": "dongcheng"}, "reason": "x"}),
            "scope",
        ),
        (
            json!({"level": "red", "scope": {"city": false}, "reason": "x"}),
            "scope.city",
        ),
        (
            json!({"level": "red", "scope": {"district": "nowhere"}, "reason": "x"}),
            "scope.district",
        ),
        (
            json!({"level": "red", "scope": {"cluster": "c99"}, "reason": "x"}),
            "scope.cluster",
        ),
        (
            json!({"level": "red", "scope": {"towns": []}, "reason": "x"}),
            "scope.towns",
        ),
        (
            json!({"level": "red", "scope": {"towns": ["jingshan", "atlantis"]}, "reason": "x"}),
            "scope.towns",
        ),
        (json!({"level": "red", "scope": city}), "reason"),
        (
            json!({"level": "red", "scope": city, "reason": "x", "for": "forever"}),
            "for",
        ),
        (
            json!({"level": "red", "scope": city, "reason": "x", "for": "90d"}),
            "for",
        ),
        (
            json!({"level": "red", "scope": city, "reason": "x", "ends_at": "tomorrow"}),
            "ends_at",
        ),
        (
            json!({"level": "red", "scope": city, "reason": "x", "ends_at": "2020-01-01T00:00:00Z"}),
            "ends_at",
        ),
        (
            json!({"level": "red", "scope": city, "reason": "x", "for": "1h", "ends_at": "2099-01-01T00:00:00Z"}),
            "for",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = api.set_level(Some(ADMIN), body.clone()).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
    }
    // Nothing was set.
    let (_, levels) = api.get("/api/v1/warning-level", Some(ADMIN)).await;
    assert_eq!(levels["history"], json!([]), "{levels}");
    let (status, unknown) = api.get("/api/v1/warning-level?town=atlantis", None).await;
    assert_eq!(status, 404, "{unknown}");
}
