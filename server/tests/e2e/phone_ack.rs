//! Acknowledging from a phone through the whole service: `stockpile serve` with
//! `[api] public_url` and `link_key_file` (given as environment overrides, as an
//! operator's unit file may), a reading published to real Mosquitto, the email at the
//! real SMTP server carrying a signed link; the link's page opens and its button
//! acknowledges, through the proxy that `public_url` names (here: straight to the
//! listen address, as the proxy would forward it).

use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::Signal;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

use crate::common::{Deployment, Service};

const PUBLIC_URL: &str = "https://stockpile.example.org";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_link_in_a_real_email_acknowledges_through_the_service() {
    let broker = testkit::Mosquitto::start();
    let smtp = testkit::SmtpServer::start();
    // No start-up grace: the other warehouses of the town never report in this test.
    let deployment = Deployment::with_sections(
        &format!(
            "url = \"{}\"\nclient_id = \"stockpile-links\"\n",
            broker.url()
        ),
        &format!(
            "[alerts]\ngroup_wait = \"0s\"\nstartup_grace_factor = 0\n[smtp]\nurl = \"{}\"\nfrom = \"Stockpile <alerts@example.org>\"\n",
            smtp.url()
        ),
    );
    let key = deployment.dir.path().join("link.key");
    std::fs::write(&key, "a-link-key-of-more-than-thirty-two-bytes-0123456789").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .args(["serve", "--config"])
        .arg(deployment.config())
        .env_remove("RUST_LOG")
        .env("STOCKPILE__API__PUBLIC_URL", PUBLIC_URL)
        .env("STOCKPILE__API__LINK_KEY_FILE", &key)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start stockpile serve");
    let service = Service::from_child(child);
    tokio::task::block_in_place(|| service.wait_for_log("Subscribed", Duration::from_secs(20)));
    let api = tokio::task::block_in_place(|| service.api_url());

    // 30,000 people need 90,000 L a day; 60,000 L is two thirds of a day.
    let ts = Utc::now().timestamp_millis();
    let mut options = MqttOptions::new("gw-links", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .publish(
            "stockpile/v1/jingshan/js-wh0/reading",
            QoS::AtLeastOnce,
            false,
            format!(r#"{{"ts": {ts}, "stock": {{"water": 60000}}}}"#),
        )
        .await
        .unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Incoming::PubAck(_))) = eventloop.poll().await {
                return;
            }
        }
    })
    .await;
    assert!(acked.is_ok(), "the broker did not acknowledge the reading");

    let mails = tokio::task::block_in_place(|| smtp.wait_for(1, Duration::from_secs(30)));
    let body = &mails[0].body_text;
    let link = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("Acknowledge: "))
        .unwrap_or_else(|| panic!("no link in the email:\n{body}"));
    let token = link
        .strip_prefix(&format!("{PUBLIC_URL}/ack/"))
        .unwrap_or_else(|| panic!("the link is not on the public URL: {link}"));
    assert!(
        !body.contains("127.0.0.1"),
        "the listen address in:\n{body}"
    );
    let page = format!("{api}/ack/{token}");

    let client = reqwest::Client::new();
    let answer = client.get(&page).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let html = answer.text().await.unwrap();
    assert!(
        html.contains("Li Wei") && html.contains("Acknowledge 1 alert"),
        "{html}"
    );
    let answer = client.post(&page).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("Acknowledged 1 alert")
    );

    let alerts = client
        .get(format!("{api}/api/v1/alerts?state=firing&town=jingshan"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert!(
        alerts[0]["acknowledged"]["at"].is_string(),
        "not acknowledged: {alerts}"
    );
    // Another key's link, or this one tampered with, is refused.
    let mut tampered = token.as_bytes().to_vec();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let answer = client
        .post(format!("{api}/ack/{tampered}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);

    tokio::task::block_in_place(|| {
        service.wait_for_log("Alerts acknowledged.", Duration::from_secs(10))
    });
    let log = service.output();
    assert!(!log.contains(token), "the token in the log:\n{log}");
    assert!(!log.contains("a-link-key"), "the key in the log:\n{log}");
    service.signal(Signal::SIGTERM);
    assert_eq!(
        tokio::task::block_in_place(|| service.wait(Duration::from_secs(15))),
        Some(0)
    );
}
