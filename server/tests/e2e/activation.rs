//! The activation table (一表) through the whole service: `stockpile serve` against a
//! real Mosquitto, a real SMTP server and its SQLite file. An officer starts an
//! activation of a gym; its first step, due in 2 s, goes overdue and its contact (an
//! operator desk, not the town's officer) gets the email; the gym's door counter keeps
//! saying `normal`, so past its conversion time the town's officer hears the shelter is
//! not ready; unacknowledged, the step escalates to the cluster's contact; marking it
//! done resolves its alert; a restart keeps the activation, and closing it resolves
//! the rest (docs/design.md#activation-table).

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::Signal;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::{Value, json};

use crate::common::Service;

const OFFICER: &str = "officer-jingshan-4d2a";
const DESK: &str = "desk@example.org";
const WANG: &str = "fang.wang@example.org";
const CLUSTER_DUTY: &str = "c01.duty@example.org";

const REGISTRY: &str = r#"
[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0

[[town]]
id = "jingshan"
name = "景山街道"
district = "dongcheng"
cluster = "c01"
population = 1000

[[town]]
id = "donghua"
name = "东华门街道"
district = "dongcheng"
cluster = "c01"
population = 1000

[[facility]]
id = "js-wh1"
town = "jingshan"
kind = "warehouse"

[[facility]]
id = "js-gym"
town = "jingshan"
kind = "shelter"
name = "景山体育馆"
capacity = 500
dual_use = "gym"
convert_within = "4s"

[[contact]]
name = "Wang Fang"
email = "fang.wang@example.org"
lang = "en"
towns = ["jingshan"]

# The venue's operator desk answers for donghua: it hears jingshan's step, nothing else.
[[contact]]
name = "体育馆值班台"
email = "desk@example.org"
lang = "zh"
towns = ["donghua"]

# Unacknowledged after 3 s, an alert escalates to the cluster's duty officer.
[[contact]]
name = "Cluster duty"
email = "c01.duty@example.org"
lang = "en"
clusters = ["c01"]

[[activation_plan]]
shelters = ["js-gym"]
[[activation_plan.step]]
name = "通知运营方 Notify the operator"
contact = "desk@example.org"
within = "2s"
[[activation_plan.step]]
name = "开门 Open the doors"
contact = "Wang Fang"
within = "1h"
"#;

fn write_deployment(dir: &Path, broker_url: &str, smtp_url: &str) {
    std::fs::write(dir.join("registry.toml"), REGISTRY).unwrap();
    let config = format!(
        "registry = \"registry.toml\"\n[mqtt]\nurl = \"{broker_url}\"\nclient_id = \"stockpile-activation\"\n\
         [store]\npath = \"stockpile.db\"\n[api]\nlisten = \"127.0.0.1:0\"\npublic_read = true\n\
         [[api.tokens]]\nname = \"li-wei\"\nrole = \"officer\"\ntoken = \"{OFFICER}\"\ntowns = [\"jingshan\"]\n\
         [log]\nlevel = \"info\"\n\
         [alerts]\ngroup_wait = \"0s\"\nstartup_grace_factor = 0\nescalate_after = \"3s\"\n\
         [smtp]\nurl = \"{smtp_url}\"\nfrom = \"Stockpile <alerts@example.org>\"\n"
    );
    std::fs::write(dir.join("stockpile.toml"), config).unwrap();
}

fn serve(dir: &Path) -> Service {
    let service = Service::start(&dir.join("stockpile.toml"));
    service.wait_for_log("Subscribed", Duration::from_secs(20));
    service
}

/// Publishes `payload` to `facility`'s topic at QoS 1 and waits for the broker's ack.
async fn publish(port: u16, facility: &str, payload: Value) {
    let mut options = MqttOptions::new(format!("gw-{facility}"), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let topic = format!("stockpile/v1/jingshan/{facility}/reading");
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Incoming::PubAck(_))) = eventloop.poll().await {
                return;
            }
        }
    })
    .await
    .expect("the broker acknowledges the reading");
}

/// Mails to `to` whose subject or body says `needle`, waiting up to 30 s for one.
fn mail_to(smtp: &testkit::SmtpServer, to: &str, needle: &str) -> testkit::ReceivedMail {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = smtp.messages().into_iter().find(|m| {
            m.to.iter().any(|t| t == to)
                && (m.subject.contains(needle) || m.body_text.contains(needle))
        });
        if let Some(mail) = found {
            return mail;
        }
        let seen: Vec<(Vec<String>, String)> = smtp
            .messages()
            .into_iter()
            .map(|m| (m.to, m.subject))
            .collect();
        assert!(
            std::time::Instant::now() < deadline,
            "no mail to {to} saying {needle:?}; got {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn firing_rules(client: &reqwest::Client, api: &str) -> Vec<(String, String)> {
    let alerts: Value = client
        .get(format!("{api}/api/v1/alerts?state=firing&town=jingshan"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let subject = a["key"].as_str().or(a["subject"].as_str()).unwrap_or("");
            (a["rule"].as_str().unwrap().to_owned(), subject.to_owned())
        })
        .collect()
}

/// Polls the firing rules of jingshan until `done` holds (30 s at most).
async fn until_rules(
    client: &reqwest::Client,
    api: &str,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rules: Vec<String> = firing_rules(client, api)
            .await
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        if done(&rules) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: firing {rules:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_step_mails_its_contact_and_resolves_when_done() {
    let broker = testkit::Mosquitto::start();
    let smtp = testkit::SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    write_deployment(dir.path(), &broker.url(), &smtp.url());
    let service = tokio::task::block_in_place(|| serve(dir.path()));
    let api = tokio::task::block_in_place(|| service.api_url());
    let client = reqwest::Client::new();

    // Plenty of water, and the gym in everyday use with nobody inside.
    let ts = Utc::now().timestamp_millis();
    publish(
        broker.port(),
        "js-wh1",
        json!({"ts": ts, "stock": {"water": 30000}}),
    )
    .await;
    publish(
        broker.port(),
        "js-gym",
        json!({"ts": ts, "shelter": {"occupancy": 0, "mode": "normal"}}),
    )
    .await;

    let started = client
        .post(format!("{api}/api/v1/activations"))
        .bearer_auth(OFFICER)
        .json(&json!({"scope": {"shelters": ["js-gym"]}, "reason": "暴雨红色预警", "scenario": "flood"}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    let started: Value = started.json().await.unwrap();
    let id = started["id"].as_i64().unwrap();
    assert_eq!(started["capacity_asked"], 500);

    // Step 1 falls due after 2 s: its contact, the desk, hears it in Chinese.
    let overdue = tokio::task::block_in_place(|| mail_to(&smtp, DESK, "启用第 1 步"));
    assert!(
        overdue.body_text.contains("通知运营方 Notify the operator"),
        "{}",
        overdue.body_text
    );
    // After 4 s the gym is still in everyday use: its town's officer hears it is not
    // ready, though its gateway never said `activating`.
    let not_ready = tokio::task::block_in_place(|| mail_to(&smtp, WANG, "not open within"));
    assert!(
        not_ready.body_text.contains("景山体育馆"),
        "{}",
        not_ready.body_text
    );
    let to_wang_about_step = smtp
        .messages()
        .into_iter()
        .any(|m| m.to.iter().any(|t| t == WANG) && m.body_text.contains("activation step"));
    assert!(!to_wang_about_step, "the step went to the town officer too");
    until_rules(&client, &api, "both fire", |r| {
        r.iter().any(|r| r == "activation_step_overdue")
            && r.iter().any(|r| r == "shelter_not_ready")
    })
    .await;
    // Not acknowledged, the step escalates like any alert: to the cluster's contact.
    let escalated =
        tokio::task::block_in_place(|| mail_to(&smtp, CLUSTER_DUTY, "activation step 1"));
    assert!(
        escalated.body_text.contains("Notify the operator"),
        "{}",
        escalated.body_text
    );
    let progress: Value = client
        .get(format!("{api}/api/v1/activations/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(progress["steps_overdue"], 1, "{progress}");
    assert_eq!(progress["steps_due"], 1, "{progress}");

    let done = client
        .post(format!("{api}/api/v1/activations/{id}/steps/1"))
        .bearer_auth(OFFICER)
        .json(&json!({"note": "已通知"}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    until_rules(&client, &api, "the step's alert resolves", |r| {
        !r.iter().any(|r| r == "activation_step_overdue")
            && r.iter().any(|r| r == "shelter_not_ready")
    })
    .await;
    tokio::task::block_in_place(|| mail_to(&smtp, DESK, "已完成"));

    // A restart keeps the activation: still open, its step done, the gym still asked.
    service.signal(Signal::SIGTERM);
    assert_eq!(
        tokio::task::block_in_place(|| service.wait(Duration::from_secs(15))),
        Some(0)
    );
    let service = tokio::task::block_in_place(|| serve(dir.path()));
    let api = tokio::task::block_in_place(|| service.api_url());
    let open: Value = client
        .get(format!("{api}/api/v1/activations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(open[0]["id"], id, "{open}");
    assert_eq!(open[0]["steps_done"], 1, "{open}");
    tokio::task::block_in_place(|| {
        service.wait_for_log("Open activations loaded.", Duration::from_secs(5))
    });
    // The engine evaluates the gym again after the restart; it is still not ready.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    until_rules(&client, &api, "still not ready after the restart", |r| {
        r.iter().any(|r| r == "shelter_not_ready")
    })
    .await;

    let closed = client
        .post(format!("{api}/api/v1/activations/{id}/close"))
        .bearer_auth(OFFICER)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200);
    until_rules(&client, &api, "closing ends the ask", |r| {
        !r.iter().any(|r| r == "shelter_not_ready")
    })
    .await;
    service.signal(Signal::SIGTERM);
    assert_eq!(
        tokio::task::block_in_place(|| service.wait(Duration::from_secs(15))),
        Some(0)
    );
}
