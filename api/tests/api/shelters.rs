//! Shelters end to end (docs/design.md#shelters): a door counter's reading published to
//! a real Mosquitto, through ingest, becomes the town's sheltered population, moves its
//! days of supply and its alerts, and shows in the facility and town views.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ingest::{BrokerUrl, IngestConfig};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::{Value, json};
use store::{Store, StoreOptions};

use crate::helpers::{ADMIN, AppOptions, TestApp, assert_close, spawn_app_with};

/// Tiantan (1,000 residents, four days of water and food once seeded) gets a gym that
/// takes 1,000 people.
const TIANTAN_GYM: &str = r#"
[[facility]]
id = "tt-sh1"
town = "tiantan"
kind = "shelter"
name = "天坛体育馆"
capacity = 1000
dual_use = "gym"
convert_within = "2h"
"#;

const FIRING_IN_TIANTAN: &str = "/api/v1/alerts?state=firing&town=tiantan";

/// Publishes one reading of the gym at QoS 1 and waits for the broker's ack.
async fn publish_gym(url: &BrokerUrl, occupancy: u64, mode: &str) {
    let mut options =
        MqttOptions::new(format!("gw-tt-sh1-{occupancy}"), url.host.clone(), url.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let payload = json!({
        "ts": Utc::now().timestamp_millis(),
        "shelter": {"occupancy": occupancy, "mode": mode}
    });
    client
        .publish(
            "stockpile/v1/tiantan/tt-sh1/reading",
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&payload).unwrap(),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Incoming::PubAck(_))) = eventloop.poll().await {
                break;
            }
        }
    })
    .await
    .expect("the broker acknowledges the reading");
}

/// The firing alert of `rule` about `subject` in a list of alerts.
fn firing<'a>(list: &'a Value, rule: &str, subject: &str) -> Option<&'a Value> {
    list.as_array()?
        .iter()
        .find(|a| a["rule"] == rule && a["subject"] == subject)
}

async fn app_with_ingest(
    broker: &testkit::Mosquitto,
) -> (TestApp, BrokerUrl, tokio_util::sync::CancellationToken) {
    let app = spawn_app_with(AppOptions {
        alerts: true,
        extra_registry: TIANTAN_GYM,
        ..AppOptions::default()
    })
    .await;
    app.seed();
    let url = BrokerUrl::parse(&broker.url()).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(ingest::run(
        IngestConfig::new(url.clone(), "stockpile-shelter-test"),
        Arc::clone(&app.ledger),
        Store::open(&app.db, StoreOptions::default()).unwrap(),
        Arc::clone(&app.metrics),
        Arc::clone(&app.changes),
        shutdown.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.get("/readyz", None).await.status != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest did not connect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (app, url, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_shelters_occupancy_moves_the_towns_days_and_its_alerts() {
    let broker = testkit::Mosquitto::start();
    let (app, url, shutdown) = app_with_ingest(&broker).await;
    app.put_json(
        "/api/v1/towns/tiantan/sheltered",
        Some(ADMIN),
        &json!({"sheltered": 100}),
    )
    .await;
    // The gym in everyday use, nobody inside: the officer's figure counts.
    publish_gym(&url, 0, "normal").await;
    let town = app
        .eventually("/api/v1/towns/tiantan", |t| {
            t["sheltered"] == 100 && t["shelters"][0]["mode"] == "normal"
        })
        .await;
    assert_eq!(town["sheltered_from"], "typed");
    assert_eq!(town["status"], "ok");
    assert_close(&town["worst_days"], 12_000.0 / (1100.0 * 3.0));

    // The gym opens with 950 people: 1,950 to feed on 12,000 L is about two days.
    publish_gym(&url, 950, "open").await;
    let town = app
        .eventually("/api/v1/towns/tiantan", |t| {
            t["sheltered_from"] == "shelters"
        })
        .await;
    assert_eq!(town["sheltered"], 950);
    assert_eq!(town["sheltered_typed"], 100);
    assert_eq!(town["status"], "critical");
    assert_close(&town["worst_days"], 12_000.0 / (1950.0 * 3.0));
    let gym = &town["shelters"][0];
    assert_eq!(
        (
            &gym["facility"],
            &gym["occupancy"],
            &gym["capacity"],
            &gym["mode"]
        ),
        (&json!("tt-sh1"), &json!(950), &json!(1000), &json!("open"))
    );
    let alerts = app
        .eventually(FIRING_IN_TIANTAN, |list| {
            firing(list, "shelter_near_capacity", "tt-sh1").is_some()
                && firing(list, "reserve_below_target", "water").is_some()
        })
        .await;
    let full = firing(&alerts, "shelter_near_capacity", "tt-sh1").unwrap();
    assert_eq!(full["severity"], "warning");

    let facility = app.get_ok("/api/v1/facilities/tt-sh1").await;
    assert_eq!(facility["kind"], "shelter");
    assert_eq!(facility["shelter"]["capacity"], 1000);
    assert_eq!(facility["shelter"]["dual_use"], "gym");
    assert_eq!(facility["latest"]["shelter"]["occupancy"], 950);
    assert_close(&facility["latest"]["shelter"]["fill_pct"], 95.0);

    // Most go home: 200 left, 1,200 people, 3.3 days: near the target, not below; the
    // gym has room again.
    publish_gym(&url, 200, "open").await;
    let town = app
        .eventually("/api/v1/towns/tiantan", |t| t["sheltered"] == 200)
        .await;
    assert_close(&town["worst_days"], 12_000.0 / (1200.0 * 3.0));
    app.eventually(FIRING_IN_TIANTAN, |list| {
        firing(list, "shelter_near_capacity", "tt-sh1").is_none()
            && firing(list, "reserve_near_target", "water").is_some()
    })
    .await;

    // Closed: the officer's typed figure counts again.
    publish_gym(&url, 0, "closed").await;
    let town = app
        .eventually("/api/v1/towns/tiantan", |t| t["sheltered_from"] == "typed")
        .await;
    assert_eq!(town["sheltered"], 100);
    assert_eq!(town["status"], "ok");

    shutdown.cancel();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shelter_reading_over_its_capacity_is_rejected_and_changes_nothing() {
    let broker = testkit::Mosquitto::start();
    let (app, url, shutdown) = app_with_ingest(&broker).await;
    publish_gym(&url, 1200, "open").await;
    let rejects = app
        .eventually_as(ADMIN, "/api/v1/rejects", |body| {
            body.to_string().contains("over_capacity")
        })
        .await;
    assert!(
        rejects
            .to_string()
            .contains("shelter.occupancy is 1200, above the facility's capacity 1000"),
        "{rejects}"
    );
    let town = app.get_ok("/api/v1/towns/tiantan").await;
    assert_eq!(town["sheltered"], 0);
    assert_eq!(town["sheltered_from"], "typed");
    shutdown.cancel();
    app.stop().await;
}
