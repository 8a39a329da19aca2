//! Drills (issue 14, docs/design.md#drills) through the real path: a gateway publishes
//! to Mosquitto, ingest applies the readings, and the officers read their mail at the
//! SMTP server process. A cluster drill's alert says 【演练】 to the town officer and
//! [DRILL] to the cluster, never reaches the district, and once the drill is ended
//! the shortfall that is still there is told as a real alert.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use alerts::drill::NewDrill;
use alerts::{AlertFilter, AlertsHandle};
use chrono::Utc;
use ingest::{BrokerUrl, IngestConfig};
use live::{IngestMetrics, TownChanges};
use reserve::Ledger;
use reserve::registry::{Source, load_registry};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use store::{Store, StoreOptions};
use testkit::{Mosquitto, SmtpServer};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(20);
/// Unacknowledged this long, an alert escalates one level.
const ESCALATE_AFTER: Duration = Duration::from_secs(1);
const DISTRICT: &str = "zhao.min@example.org";

/// The helpers' registry with a district duty officer above the cluster's.
fn registry_with_district() -> Arc<reserve::Registry> {
    let text = format!(
        "{REGISTRY}
[[contact]]
name = \"Zhao Min\"
email = \"{DISTRICT}\"
lang = \"zh\"
districts = [\"dongcheng\"]
"
    );
    let source = Source {
        name: "registry.toml".into(),
        text,
    };
    Arc::new(load_registry(&source, &[], &mut |n| Err(format!("no file {n}"))).unwrap())
}

/// Jingshan's gateway publishes its `n`th water reading (QoS 1, acknowledged).
async fn publish_water(broker: &str, n: i64, liters: f64) {
    let url = BrokerUrl::parse(broker).unwrap();
    let mut options = MqttOptions::new(format!("gw-drill-{n}"), url.host, url.port);
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

async fn drill_flags(handle: &AlertsHandle) -> Vec<(bool, String)> {
    let alerts = handle.list_alerts(&AlertFilter::default()).await.unwrap();
    alerts
        .into_iter()
        .map(|a| (a.drill, format!("{:?}", a.state)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_drill_is_marked_in_every_mail_and_never_reaches_the_district() {
    let broker = Mosquitto::start();
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stockpile.db");
    let registry = registry_with_district();

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
        None,
        &alerts::WebhookConfig::default(),
    )
    .unwrap();
    let config = alerts::AlertsConfig {
        escalate_after: ESCALATE_AFTER,
        ..quick_config()
    };
    let service = alerts::Alerts::open(
        config,
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
            "stockpile-drill-test",
        ),
        Arc::clone(&ledger),
        store,
        Arc::clone(&metrics),
        changes,
        shutdown.clone(),
    ));
    wait_until("ingest connects", WAIT, async || metrics.connected()).await;

    let drill = handle
        .start_drill(NewDrill {
            scope: "cluster:c01".into(),
            duration: "1h".into(),
            started_by: "admin".into(),
            note: "断水演练".into(),
            remote: String::new(),
        })
        .await
        .unwrap();
    assert!(drill.active);
    assert_eq!(handle.drills(false).await.unwrap().len(), 1);

    publish_water(&broker.url(), 0, liters(5.0)).await;
    publish_water(&broker.url(), 1, liters(2.5)).await;

    // The officer's mail, then the cluster's escalation, both marked.
    let mails = tokio::task::block_in_place(|| smtp.wait_for(2, WAIT));
    assert_eq!(mails[0].to, vec![OFFICER]);
    assert_eq!(
        mails[0].subject,
        "【演练】[Stockpile] 严重：景山街道 饮用水仅剩 2.5 天（目标 3 天）"
    );
    assert!(
        mails[0].body_text.starts_with("【演练】"),
        "{}",
        mails[0].body_text
    );
    let html = mails[0].body_html.as_deref().unwrap_or_default();
    assert!(html.contains(">【演练】"), "{html}");
    assert_eq!(mails[1].to, vec![CLUSTER]);
    assert!(
        mails[1]
            .subject
            .starts_with("[DRILL] [Stockpile] ESCALATED"),
        "{}",
        mails[1].subject
    );
    assert_eq!(
        drill_flags(&handle).await,
        vec![(true, "Firing".to_owned())]
    );

    // Three more escalation periods: the district would have been told after one.
    settle(ESCALATE_AFTER * 3).await;
    let to_district: Vec<_> = smtp
        .messages()
        .into_iter()
        .filter(|m| m.to.iter().any(|t| t == DISTRICT))
        .map(|m| m.subject)
        .collect();
    assert_eq!(
        to_district,
        Vec::<String>::new(),
        "a cluster drill stays in the cluster"
    );
    assert_eq!(smtp.messages().len(), 2);

    // Ended early: the drill's alert resolves without a message, and the shortfall,
    // still in the ledger, is told as the real alert it now is.
    assert!(handle.end_drill(drill.id, "admin", "").await.unwrap());
    let mails = tokio::task::block_in_place(|| smtp.wait_for(3, WAIT));
    assert_eq!(mails[2].to, vec![OFFICER]);
    assert_eq!(
        mails[2].subject,
        "[Stockpile] 严重：景山街道 饮用水仅剩 2.5 天（目标 3 天）"
    );
    let flags = drill_flags(&handle).await;
    assert_eq!(
        flags,
        vec![(false, "Firing".to_owned()), (true, "Resolved".to_owned())]
    );
    assert!(handle.drills(false).await.unwrap().is_empty());

    shutdown.cancel();
    alerting.await.unwrap().unwrap();
    ingest.await.unwrap().unwrap();
}
