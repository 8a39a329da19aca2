//! End to end: a reading published to a real Mosquitto, through ingest, turns a town
//! critical in the API.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ingest::{BrokerUrl, IngestConfig};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use store::{Store, StoreOptions};

use crate::helpers::{assert_close, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_reading_turns_a_town_critical() {
    let broker = testkit::Mosquitto::start();
    let app = spawn_app().await;
    app.seed();
    assert_eq!(app.get_ok("/api/v1/towns/tiantan").await["status"], "ok");

    let url = BrokerUrl::parse(&broker.url()).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ingest = tokio::spawn(ingest::run(
        IngestConfig::new(url.clone(), "stockpile-api-test"),
        Arc::clone(&app.ledger),
        Store::open(&app.db, StoreOptions::default()).unwrap(),
        Arc::clone(&app.metrics),
        Arc::clone(&app.changes),
        shutdown.clone(),
    ));
    wait_for("ingest to connect", || async {
        app.get("/readyz", None).await.status == 200
    })
    .await;

    // Tiantan's warehouse reports 3000 L of water for 1000 people: one day.
    let mut options = MqttOptions::new("gw-tiantan", url.host.clone(), url.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let payload = serde_json::json!({
        "ts": Utc::now().timestamp_millis(),
        "stock": {"water": 3000, "food": 12000}
    });
    client
        .publish(
            "stockpile/v1/tiantan/tt-wh1/reading",
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

    wait_for("tiantan to turn critical", || async {
        app.get_ok("/api/v1/towns/tiantan").await["status"] == "critical"
    })
    .await;
    let town = app.get_ok("/api/v1/towns/tiantan").await;
    assert_close(&town["worst_days"], 1.0);
    assert_eq!(town["worst_category"], "water");
    let metrics = app.get("/metrics", None).await.text;
    for line in [
        "stockpile_ingest_accepted_total 1",
        "stockpile_broker_connected 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), ingest)
        .await
        .expect("ingest stops")
        .expect("ingest joins")
        .expect("ingest ends cleanly");
    app.stop().await;
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
