//! Ingest against a real Mosquitto and a real SQLite file: readings published by a real
//! MQTT client reach the ledger and the store, rejects are counted and kept, and
//! restarts of the service or the broker lose nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ingest::{BrokerUrl, IngestConfig};
use live::{IngestMetrics, SharedLedger, TownChanges};
use reserve::Ledger;
use reserve::coverage::TownStatus;
use reserve::registry::{Registry, Source, load_registry};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use store::{Store, StoreOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const REGISTRY: &str = r#"
[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0

[[category]]
id = "food"
name = "Food"
unit = "ration"
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
population = 2000

[[facility]]
id = "js-wh1"
town = "jingshan"
kind = "warehouse"

[[facility]]
id = "js-wp1"
town = "jingshan"
kind = "water_point"

[[facility]]
id = "js-pu1"
town = "jingshan"
kind = "power_unit"
fuel_capacity_l = 500
burn_l_per_h = 5.0

[[facility]]
id = "dh-wh1"
town = "donghua"
kind = "warehouse"
"#;

fn registry() -> Arc<Registry> {
    let source = Source {
        name: "registry.toml".into(),
        text: REGISTRY.into(),
    };
    Arc::new(
        load_registry(&source, &[], &mut |name| Err(format!("no file {name}")))
            .expect("test registry loads"),
    )
}

/// The service's ingest, running in this test process.
struct Service {
    ledger: SharedLedger,
    metrics: Arc<IngestMetrics>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ingest::IngestError>>,
}

impl Service {
    async fn start(broker: &str, db: &Path) -> Service {
        let registry = registry();
        let mut store = Store::open(db, StoreOptions::default()).expect("store opens");
        let mut ledger = Ledger::new(registry);
        ingest::restore_ledger(&mut store, &mut ledger).expect("ledger restores");
        let ledger: SharedLedger = Arc::new(RwLock::new(ledger));
        let metrics = Arc::new(IngestMetrics::default());
        let shutdown = CancellationToken::new();
        let mut config = IngestConfig::new(BrokerUrl::parse(broker).unwrap(), "stockpile-test");
        config.batch_max = 500;
        let task = tokio::spawn(ingest::run(
            config,
            Arc::clone(&ledger),
            store,
            Arc::clone(&metrics),
            Arc::new(TownChanges::default()),
            shutdown.clone(),
        ));
        let service = Service {
            ledger,
            metrics,
            shutdown,
            task,
        };
        let m = Arc::clone(&service.metrics);
        wait_until("ingest connects", || m.connected()).await;
        service
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("ingest stops within 10 s")
            .expect("ingest task joins")
            .expect("ingest ends without error");
    }

    fn town_status(&self, town: &str) -> (TownStatus, Option<f64>) {
        let ledger = self.ledger.read().unwrap();
        let t = ledger.registry().town_idx(town).unwrap();
        let f = ledger.figures(t);
        (f.status, f.worst_days)
    }
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway: publishes with QoS 1 and returns once the broker acknowledged every
/// message.
async fn publish_all(broker: &str, client_id: &str, messages: Vec<(String, Vec<u8>)>) {
    let url = BrokerUrl::parse(broker).unwrap();
    let mut options = MqttOptions::new(client_id, url.host, url.port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    options.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let total = messages.len();
    let sender = tokio::spawn(async move {
        for (topic, payload) in messages {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked < total {
        let Ok(event) = tokio::time::timeout_at(deadline, eventloop.poll()).await else {
            panic!("publisher: only {acked} of {total} acknowledged");
        };
        match event {
            Ok(Event::Incoming(Incoming::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => {
                // The broker may be restarting in a test; rumqttc resends on reconnect.
                eprintln!("publisher: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let client = sender.await.unwrap();
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

fn topic(town: &str, facility: &str) -> String {
    format!("stockpile/v1/{town}/{facility}/reading")
}

fn ms_ago(ms: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::milliseconds(ms)
}

fn stock_payload(ts: DateTime<Utc>, seq: u64, water: f64, food: f64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ts": ts.timestamp_millis(), "seq": seq,
        "stock": {"water": water, "food": food}
    }))
    .unwrap()
}

fn store_at(db: &Path) -> Store {
    Store::open(db, StoreOptions::default()).expect("second connection opens")
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("stockpile.db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_the_ledger_and_survive_a_restart() {
    let broker = testkit::Mosquitto::builder().persistence(true).start();
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(&dir);
    let service = Service::start(&broker.url(), &db).await;
    assert_eq!(service.town_status("jingshan").0, TownStatus::Unknown);

    // 1,000 people need 3,000 L of water and 3,000 rations a day: 6,000 is 2 days.
    let now = ms_ago(1000);
    publish_all(
        &broker.url(),
        "gw-js-wh1",
        vec![(
            topic("jingshan", "js-wh1"),
            stock_payload(now, 1, 6_000.0, 15_000.0),
        )],
    )
    .await;
    wait_until("jingshan turns critical", || {
        service.town_status("jingshan").0 == TownStatus::Critical
    })
    .await;
    assert_eq!(service.town_status("jingshan").1, Some(2.0));
    let before = service
        .ledger
        .read()
        .unwrap()
        .figures(reserve::registry::TownIdx(0))
        .clone();
    service.stop().await;

    // A new process: the ledger comes back from SQLite alone.
    let restarted = Service::start(&broker.url(), &db).await;
    assert_eq!(
        restarted.town_status("jingshan"),
        (TownStatus::Critical, Some(2.0))
    );
    let after = restarted
        .ledger
        .read()
        .unwrap()
        .figures(reserve::registry::TownIdx(0))
        .clone();
    assert_eq!(after.categories, before.categories);
    restarted.stop().await;
    assert_eq!(store_at(&db).count_readings().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reject_reason_is_counted_kept_and_acknowledged() {
    let broker = testkit::Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(&dir);
    let service = Service::start(&broker.url(), &db).await;

    let ts = ms_ago(1000).timestamp_millis();
    let ok = format!(r#"{{"ts": {ts}, "stock": {{"water": 1}}}}"#);
    let future = (Utc::now() + chrono::Duration::minutes(10)).timestamp_millis();
    let old = (Utc::now() - chrono::Duration::days(91)).timestamp_millis();
    let cases: Vec<(&str, String, String)> = vec![
        (
            "too_large",
            topic("jingshan", "js-wh1"),
            format!(
                r#"{{"ts": {ts}, "stock": {{"water": 1}}, "pad": "{}"}}"#,
                "x".repeat(300 * 1024)
            ),
        ),
        (
            "not_json",
            topic("jingshan", "js-wh1"),
            "water=12000".into(),
        ),
        (
            "bad_topic",
            "stockpile/v1/JingShan/js-wh1/reading".into(),
            ok.clone(),
        ),
        ("unknown_town", topic("jingshn", "js-wh1"), ok.clone()),
        ("unknown_facility", topic("jingshan", "js-wh9"), ok.clone()),
        (
            "facility_not_in_town",
            topic("donghua", "js-wh1"),
            ok.clone(),
        ),
        ("wrong_kind", topic("jingshan", "js-wp1"), ok.clone()),
        (
            "unknown_category",
            topic("jingshan", "js-wh1"),
            format!(r#"{{"ts": {ts}, "stock": {{"watr": 1}}}}"#),
        ),
        (
            "bad_number",
            topic("jingshan", "js-wh1"),
            format!(r#"{{"ts": {ts}, "stock": {{"water": -5}}}}"#),
        ),
        (
            "ts_in_future",
            topic("jingshan", "js-wh1"),
            format!(r#"{{"ts": {future}, "stock": {{"water": 1}}}}"#),
        ),
        (
            "ts_too_old",
            topic("jingshan", "js-wh1"),
            format!(r#"{{"ts": {old}, "stock": {{"water": 1}}}}"#),
        ),
        (
            "bad_payload",
            topic("jingshan", "js-wh1"),
            r#"{"stock": {"water": 1}}"#.into(),
        ),
        (
            "bad_status",
            "stockpile/v1/jingshan/js-wh1/status".into(),
            "sleeping".into(),
        ),
    ];
    let mut messages: Vec<(String, Vec<u8>)> = cases
        .iter()
        .map(|(_, t, p)| (t.clone(), p.clone().into_bytes()))
        .collect();
    // A good reading after all of them: rejects block nothing.
    messages.push((topic("jingshan", "js-wh1"), ok.into_bytes()));
    publish_all(&broker.url(), "gw-bad", messages).await;

    let m = Arc::clone(&service.metrics);
    wait_until("all messages processed", || {
        let c = m.counts();
        c.accepted == 1 && c.rejected_total() == cases.len() as u64
    })
    .await;
    let counts = service.metrics.counts();
    let store = store_at(&db);
    let kept = store.recent_rejects(100).unwrap();
    for (reason, topic, _) in &cases {
        assert_eq!(
            counts.rejected.get(reason),
            Some(&1),
            "metric for {reason}: {counts:?}"
        );
        let row = kept
            .iter()
            .find(|r| r.reason == *reason)
            .unwrap_or_else(|| panic!("no stored reject {reason}"));
        assert_eq!(&row.topic, topic);
        assert!(!row.detail.is_empty(), "{reason} has a detail");
    }
    let too_large = kept.iter().find(|r| r.reason == "too_large").unwrap();
    assert!(
        too_large.payload.len() <= store::MAX_REJECT_PAYLOAD,
        "payload truncated"
    );
    assert_eq!(store.count_readings().unwrap(), 1);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_10000_readings_is_stored_once_each() {
    // Unlimited queue for our session: under a loaded test run the service may fall
    // behind, and Mosquitto's default (1,000 queued) would drop the rest.
    let broker = testkit::Mosquitto::builder()
        .max_inflight(1000)
        .max_queued(0)
        .start();
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(&dir);
    let service = Service::start(&broker.url(), &db).await;

    let start = ms_ago(60_000);
    let messages: Vec<_> = (0..10_000u64)
        .map(|i| {
            let ts = start + chrono::Duration::milliseconds(i as i64);
            let f = if i % 2 == 0 {
                ("jingshan", "js-wh1")
            } else {
                ("donghua", "dh-wh1")
            };
            (
                topic(f.0, f.1),
                stock_payload(ts, i, 10_000.0 - i as f64, 9_000.0),
            )
        })
        .collect();
    publish_all(&broker.url(), "gw-burst", messages).await;
    let m = Arc::clone(&service.metrics);
    wait_until("10,000 accepted", || m.counts().accepted == 10_000).await;
    assert_eq!(store_at(&db).count_readings().unwrap(), 10_000);
    let counts = service.metrics.counts();
    assert_eq!((counts.duplicates, counts.rejected_total()), (0, 0));
    // The ledger holds the newest of each warehouse.
    {
        let ledger = service.ledger.read().unwrap();
        let wh = ledger.registry().facility_idx("js-wh1").unwrap();
        assert_eq!(ledger.facility(wh).last_seq, Some(9_998));
    }
    service.stop().await;
}

/// QoS 0 (a gateway that accepts losing a reading on the way): nothing waits for an
/// ack, and the writer gathers a couple of milliseconds' worth per transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_readings_are_stored_and_applied_too() {
    let broker = testkit::Mosquitto::builder().max_queued(0).start();
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(&dir);
    let service = Service::start(&broker.url(), &db).await;

    const TOTAL: u64 = 3_000;
    let url = BrokerUrl::parse(&broker.url()).unwrap();
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("gw-qos0", url.host, url.port), 100);
    let start = ms_ago(60_000);
    let sender = tokio::spawn(async move {
        for i in 0..TOTAL {
            let ts = start + chrono::Duration::milliseconds(i as i64);
            let payload = stock_payload(ts, i, 10_000.0 - i as f64, 9_000.0);
            client
                .publish(topic("jingshan", "js-wh1"), QoS::AtMostOnce, false, payload)
                .await
                .unwrap();
        }
        client
    });
    let mut written = 0;
    while written < TOTAL {
        match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_)))) => written += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher: {e}"),
            Err(_) => panic!("publisher stalled after {written} of {TOTAL}"),
        }
    }
    let _client = sender.await.unwrap();

    let m = Arc::clone(&service.metrics);
    wait_until("every QoS 0 reading accepted", || {
        m.counts().accepted == TOTAL
    })
    .await;
    assert_eq!(store_at(&db).count_readings().unwrap(), TOTAL);
    {
        let ledger = service.ledger.read().unwrap();
        let wh = ledger.registry().facility_idx("js-wh1").unwrap();
        assert_eq!(ledger.facility(wh).last_seq, Some(TOTAL - 1));
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_late_readings_are_acknowledged_not_applied() {
    let broker = testkit::Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(&dir);
    let service = Service::start(&broker.url(), &db).await;

    let t1 = ms_ago(10_000);
    let t2 = ms_ago(5_000);
    let wh = topic("jingshan", "js-wh1");
    publish_all(
        &broker.url(),
        "gw-dup",
        vec![
            (wh.clone(), stock_payload(t2, 2, 9_000.0, 9_000.0)),
            (wh.clone(), stock_payload(t2, 2, 9_000.0, 9_000.0)), // resend
            (wh.clone(), stock_payload(t1, 1, 1.0, 1.0)),         // late, older
        ],
    )
    .await;
    let m = Arc::clone(&service.metrics);
    wait_until("3 readings processed", || {
        let c = m.counts();
        c.accepted + c.duplicates == 3
    })
    .await;
    let c = service.metrics.counts();
    assert_eq!((c.accepted, c.duplicates, c.older), (2, 1, 1));
    // The ledger was not rolled back to the late reading: 9,000 L for 3,000 L a day.
    assert_eq!(service.town_status("jingshan").1, Some(3.0));
    assert_eq!(store_at(&db).count_readings().unwrap(), 2);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_backlog_is_applied_in_timestamp_order() {
    let broker = testkit::Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(&dir);
    let service = Service::start(&broker.url(), &db).await;

    // Six hours offline, one reading every 10 minutes, sent at once and shuffled; one
    // element is bad and must not take the others with it.
    let start = Utc::now() - chrono::Duration::hours(6);
    let mut backlog: Vec<serde_json::Value> = (0..36)
        .map(|i| {
            let ts = start + chrono::Duration::minutes(10 * i);
            serde_json::json!({"ts": ts.to_rfc3339(), "seq": i, "stock": {"water": 20_000 - 100 * i, "food": 9_000}})
        })
        .collect();
    backlog.reverse();
    backlog.swap(3, 20);
    backlog.push(serde_json::json!({"ts": start.to_rfc3339(), "stock": {"water": "lots"}}));
    publish_all(
        &broker.url(),
        "gw-backlog",
        vec![(
            topic("jingshan", "js-wh1"),
            serde_json::to_vec(&backlog).unwrap(),
        )],
    )
    .await;
    let m = Arc::clone(&service.metrics);
    wait_until("backlog stored", || m.counts().accepted == 36).await;
    assert_eq!(
        service.metrics.counts().rejected.get("bad_payload"),
        Some(&1)
    );
    {
        let ledger = service.ledger.read().unwrap();
        let wh = ledger.registry().facility_idx("js-wh1").unwrap();
        assert_eq!(
            ledger.facility(wh).last_seq,
            Some(35),
            "newest reading is the ledger's"
        );
        let town = ledger.figures(ledger.registry().town_idx("jingshan").unwrap());
        let water = &town.categories[0];
        assert_eq!(water.stock, 16_500.0);
        // The drawdown saw 36 steady decreases of 100 L per 10 minutes: 600 L/h.
        let rate = water.consumption_per_h.expect("a consumption estimate");
        assert!((rate - 600.0).abs() < 1e-6, "rate {rate}");
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_nothing() {
    let mut broker = testkit::Mosquitto::builder()
        .persistence(true)
        .max_queued(0)
        .start();
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(&dir);
    let service = Service::start(&broker.url(), &db).await;
    let url = broker.url();
    let batch = |from: u64| -> Vec<(String, Vec<u8>)> {
        let start = ms_ago(120_000);
        (from..from + 500)
            .map(|i| {
                let ts = start + chrono::Duration::milliseconds(i as i64 * 10);
                (
                    topic("donghua", "dh-wh1"),
                    stock_payload(ts, i, 50_000.0, 50_000.0),
                )
            })
            .collect()
    };
    publish_all(&url, "gw-restart", batch(0)).await;
    broker.stop();
    broker.start_again();
    publish_all(&url, "gw-restart", batch(500)).await;
    let m = Arc::clone(&service.metrics);
    wait_until("1,000 stored across the broker restart", || {
        m.counts().accepted == 1_000
    })
    .await;
    assert_eq!(store_at(&db).count_readings().unwrap(), 1_000);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_marks_a_gateway_offline() {
    let broker = testkit::Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(&dir);
    let service = Service::start(&broker.url(), &db).await;
    let status = "stockpile/v1/jingshan/js-pu1/status".to_string();
    publish_all(
        &broker.url(),
        "gw-pu",
        vec![(status.clone(), b"online".to_vec())],
    )
    .await;
    let link = |s: &Service| {
        let ledger = s.ledger.read().unwrap();
        let f = ledger.registry().facility_idx("js-pu1").unwrap();
        ledger.facility(f).link.map(|(l, _)| l)
    };
    wait_until("online", || {
        link(&service) == Some(reserve::ledger::Link::Online)
    })
    .await;

    // A gateway that dies: the broker publishes its Last Will.
    let url = BrokerUrl::parse(&broker.url()).unwrap();
    let mut options = MqttOptions::new("gw-pu-will", url.host, url.port);
    options.set_keep_alive(Duration::from_secs(1));
    options.set_last_will(rumqttc::LastWill::new(
        &status,
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let (_client, mut eventloop) = AsyncClient::new(options, 10);
    loop {
        if let Ok(Event::Incoming(Incoming::ConnAck(_))) = eventloop.poll().await {
            break;
        }
    }
    drop(eventloop); // the TCP connection closes without DISCONNECT: the will fires
    wait_until("offline", || {
        link(&service) == Some(reserve::ledger::Link::Offline)
    })
    .await;
    service.stop().await;
}

/// Ingest with counts entered by hand: the writer's queue (as the API holds it).
async fn start_with_manual(
    broker: &str,
    db: &Path,
    commit_wait: Duration,
) -> (Service, live::ManualReadings) {
    let mut store = Store::open(db, StoreOptions::default()).expect("store opens");
    let mut ledger = Ledger::new(registry());
    ingest::restore_ledger(&mut store, &mut ledger).expect("ledger restores");
    let ledger: SharedLedger = Arc::new(RwLock::new(ledger));
    let metrics = Arc::new(IngestMetrics::default());
    let shutdown = CancellationToken::new();
    let config = IngestConfig::new(BrokerUrl::parse(broker).unwrap(), "stockpile-test");
    let (manual, queue) =
        live::ManualReadings::channel(1000, store::DEFAULT_RETENTION, commit_wait);
    let task = tokio::spawn(ingest::run_with_manual_readings(
        config,
        Arc::clone(&ledger),
        store,
        Arc::clone(&metrics),
        Arc::new(TownChanges::default()),
        queue,
        shutdown.clone(),
    ));
    let service = Service {
        ledger,
        metrics,
        shutdown,
        task,
    };
    let m = Arc::clone(&service.metrics);
    wait_until("ingest connects", || m.connected()).await;
    (service, manual)
}

fn hand_count(
    ledger: &SharedLedger,
    facility: &str,
    ts: DateTime<Utc>,
    water: f64,
) -> Vec<reserve::Reading> {
    let ledger = ledger.read().unwrap();
    let registry = ledger.registry();
    let facility = registry.facility_idx(facility).unwrap();
    let water_idx = registry.category_idx("water").unwrap();
    vec![reserve::Reading {
        facility,
        ts,
        seq: None,
        observation: reserve::reading::Observation::Stock(vec![(water_idx, water)]),
    }]
}

/// Counts by hand share the writer's batches with a burst of gateway readings; each is
/// answered only once its row is in the file, and every row keeps its source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_by_hand_are_answered_after_their_commit_beside_a_gateway_burst() {
    let broker = testkit::Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(&dir);
    let (service, manual) = start_with_manual(&broker.url(), &db, Duration::from_secs(30)).await;

    let burst: Vec<(String, Vec<u8>)> = (0..500)
        .map(|i| {
            (
                topic("donghua", "dh-wh1"),
                stock_payload(ms_ago(60_000 - i), i as u64, 100.0, 100.0),
            )
        })
        .collect();
    let url = broker.url();
    let gateway = tokio::spawn(async move { publish_all(&url, "gw-dh", burst).await });
    let reader = store_at(&db);
    let js_wh1 = reserve::FacilityId::parse("js-wh1").unwrap();
    for i in 0..20 {
        let ts = ms_ago(30_000 - i * 10);
        let readings = hand_count(&service.ledger, "js-wh1", ts, 1000.0 + i as f64);
        let outcome = manual
            .submit(readings, "li-wei".into())
            .await
            .expect("stored");
        assert_eq!((outcome.stored, outcome.duplicates), (1, 0));
        // Answered after the commit: the row is there for any other connection.
        let rows = reader
            .readings(&js_wh1, ts, ts + chrono::Duration::milliseconds(1), 10)
            .unwrap();
        assert_eq!(rows.len(), 1, "count {i} answered before its commit");
        assert_eq!(
            rows[0].source,
            store::ReadingSource::Manual {
                entered_by: "li-wei".into()
            }
        );
    }
    gateway.await.unwrap();
    let m = Arc::clone(&service.metrics);
    wait_until("the burst is stored", || m.counts().accepted >= 520).await;
    let from = ms_ago(120_000);
    let to = Utc::now();
    let gateway_rows = reader
        .readings(
            &reserve::FacilityId::parse("dh-wh1").unwrap(),
            from,
            to,
            1000,
        )
        .unwrap();
    assert_eq!(gateway_rows.len(), 500);
    assert!(
        gateway_rows
            .iter()
            .all(|r| r.source == store::ReadingSource::Gateway)
    );
    service.stop().await;
}

/// A count waiting on a locked store when the service stops is dropped and its
/// requester told so, never answered as stored; nothing of it is in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_pending_at_shutdown_is_refused_not_stored() {
    let broker = testkit::Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(&dir);
    let (service, manual) = start_with_manual(&broker.url(), &db, Duration::from_secs(30)).await;
    let mut locker = store_at(&db);
    let lock = locker.batch().expect("write lock taken");
    let readings = hand_count(&service.ledger, "js-wh1", ms_ago(1000), 42.0);
    let pending = tokio::spawn(async move { manual.submit(readings, "li-wei".into()).await });
    let m = Arc::clone(&service.metrics);
    wait_until("ingest pauses on the lock", || m.store_fault().is_some()).await;
    service.stop().await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the requester is answered")
        .unwrap();
    assert_eq!(outcome, Err(live::ManualError::Stopped));
    drop(lock);
    assert_eq!(store_at(&db).count_readings().unwrap(), 0);
}

/// Jingshan's warehouse: two hours at 125 L an hour read every 5 minutes, stored but in
/// no snapshot yet (as after a `kill -9`), and perhaps a transfer of 2000 L out
/// recorded before the crash. After the restart the tanker's readings come: 2000 L over
/// three of them. Returns the town's water consumption the forecast then uses.
fn consumption_after_a_restart(record_transfer: bool) -> f64 {
    use reserve::{Observation, Reading};
    let dir = tempfile::tempdir().unwrap();
    let db = db_path(&dir);
    let registry = registry();
    let now = Utc::now();
    let f = registry.facility_idx("js-wh1").unwrap();
    let water = registry.category_idx("water").unwrap();
    let mut litres = 20_000.0;
    let readings: Vec<Reading> = (0..24)
        .map(|i| {
            litres -= if i > 0 { 125.0 / 12.0 } else { 0.0 };
            litres -= [(19, 700.0), (20, 700.0), (21, 600.0)]
                .iter()
                .find(|(at, _)| *at == i)
                .map_or(0.0, |(_, l)| *l);
            Reading {
                facility: f,
                ts: now - chrono::Duration::minutes(120 - 5 * i),
                seq: None,
                observation: Observation::Stock(vec![(water, litres)]),
            }
        })
        .collect();
    let mut store = store_at(&db);
    let mut batch = store.batch().unwrap();
    for reading in &readings[..19] {
        batch.insert_reading(&registry, reading, now).unwrap();
    }
    batch.mark_unsaved_since(readings[0].ts).unwrap();
    batch.commit().unwrap();
    if record_transfer {
        let transfer = store::NewTransfer {
            at: now - chrono::Duration::minutes(15),
            from_facility: "js-wh1".into(),
            from_town: "jingshan".into(),
            to_facility: "dh-wh1".into(),
            to_town: "donghua".into(),
            category: "water".into(),
            quantity: 2000.0,
            note: String::new(),
            recorded_by: "li-wei".into(),
        };
        store.record_transfer(&transfer, "127.0.0.1").unwrap();
    }
    let mut ledger = Ledger::new(Arc::clone(&registry));
    let restored = ingest::restore_ledger(&mut store, &mut ledger).unwrap();
    // The sender's end; the receiver never reported, so it has no estimate to tell.
    assert_eq!(restored.transfers, usize::from(record_transfer));
    for reading in &readings[19..] {
        ledger.apply(reading, now);
    }
    let town = registry.town_idx("jingshan").unwrap();
    ledger.refresh(town, now).categories[water.index()]
        .consumption_per_h
        .expect("a rate after two hours")
}

#[test]
fn a_transfer_recorded_before_a_crash_is_still_told_from_use_after_the_restart() {
    let recorded = consumption_after_a_restart(true);
    assert!((recorded - 125.0).abs() < 5.0, "recorded: {recorded} L/h");
    let unrecorded = consumption_after_a_restart(false);
    assert!(unrecorded > 1000.0, "unrecorded: {unrecorded} L/h");
}
