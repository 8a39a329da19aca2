//! Through the real MQTT path: a gateway publishes to Mosquitto, ingest applies the
//! readings, alerts tell the officer by email (SMTP server process) and SMS (HTTP
//! gateway).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use ingest::{BrokerUrl, IngestConfig};
use live::{IngestMetrics, TownChanges};
use reserve::Ledger;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use store::{Store, StoreOptions};
use testkit::{HttpReceiver, Mosquitto, SmtpServer};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(15);

/// A gateway publishing its `n`th stock reading with QoS 1; returns once the broker
/// has it. Readings are a second apart: two readings of one facility in the same
/// millisecond are one reading sent twice (a duplicate), which is not what this
/// gateway means.
async fn publish_water(broker: &str, n: i64, liters: f64) {
    let url = BrokerUrl::parse(broker).unwrap();
    let mut options = MqttOptions::new(format!("gw-js-wh1-{}", liters as u64), url.host, url.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let ts = Utc::now() - chrono::Duration::minutes(1) + chrono::Duration::seconds(n);
    let payload = serde_json::json!({"ts": ts.to_rfc3339(), "stock": {"water": liters}});
    client
        .publish(
            "stockpile/v1/jingshan/js-wh1/reading",
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&payload).unwrap(),
        )
        .await
        .unwrap();
    let acked = tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) => return,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
    })
    .await;
    assert!(acked.is_ok(), "the broker did not acknowledge the reading");
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_below_three_days_reaches_the_officer_by_email_and_sms() {
    let broker = Mosquitto::start();
    let smtp = SmtpServer::start();
    let gateway = HttpReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stockpile.db");
    let registry = registry();

    let store = Store::open(&db, StoreOptions::default()).unwrap();
    let ledger = Arc::new(RwLock::new(Ledger::new(Arc::clone(&registry))));
    let changes = Arc::new(TownChanges::default());
    let metrics = Arc::new(IngestMetrics::default());
    let shutdown = CancellationToken::new();

    let channels = alerts::Channels::from_config(
        Some(&alerts::SmtpConfig::new(
            smtp.url(),
            "Stockpile <alerts@example.org>",
        )),
        Some(&sms_gateway(&gateway.url())),
        &alerts::WebhookConfig::default(),
    )
    .unwrap();
    let service = alerts::Alerts::open(
        quick_config(),
        Arc::clone(&registry),
        &db,
        StoreOptions::default(),
        channels,
    )
    .unwrap();
    let handle = service.handle();
    let alerting =
        tokio::spawn(service.run(Arc::clone(&ledger), changes.subscribe(), shutdown.clone()));
    let ingest = tokio::spawn(ingest::run(
        IngestConfig::new(
            BrokerUrl::parse(&broker.url()).unwrap(),
            "stockpile-alerts-test",
        ),
        Arc::clone(&ledger),
        store,
        Arc::clone(&metrics),
        changes,
        shutdown.clone(),
    ));
    wait_until("ingest connects", WAIT, async || metrics.connected()).await;

    publish_water(&broker.url(), 0, liters(5.0)).await;
    publish_water(&broker.url(), 1, liters(2.5)).await;

    let mails = tokio::task::block_in_place(|| smtp.wait_for(1, WAIT));
    assert_eq!(mails[0].to, vec![OFFICER]);
    assert_eq!(
        mails[0].subject,
        "[Stockpile] 严重：景山街道 饮用水仅剩 2.5 天（目标 3 天）"
    );
    let sms = tokio::task::block_in_place(|| gateway.wait_for(1, WAIT));
    assert_eq!(sms[0].json()["mobile"], OFFICER_PHONE);

    publish_water(&broker.url(), 2, liters(2.4)).await;
    settle(Duration::from_millis(600)).await;
    assert_eq!((smtp.messages().len(), gateway.requests().len()), (1, 1));

    publish_water(&broker.url(), 3, liters(4.0)).await;
    let mails = tokio::task::block_in_place(|| smtp.wait_for(2, WAIT));
    assert_eq!(
        mails[1].subject,
        "[Stockpile] 已恢复：景山街道 饮用水已恢复至 4 天（目标 3 天）"
    );
    tokio::task::block_in_place(|| gateway.wait_for(2, WAIT));
    let counts = handle.counts().await.unwrap();
    assert_eq!((counts.alerts_resolved, counts.notifications_sent), (1, 4));

    shutdown.cancel();
    alerting.await.unwrap().unwrap();
    ingest.await.unwrap().unwrap();
}
