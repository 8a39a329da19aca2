//! A recorded transfer is not consumption (docs/design.md#transfers), end to end: two
//! towns' gateways report the same day through a real Mosquitto, both send 2000 L away
//! by tanker over three readings. Jingshan's officer recorded the transfer, through
//! the queue the API uses into the ingest writer; Donghua's did not. Donghua's forecast
//! takes the drop for a pace of use and its officer is mailed that the water will fall
//! below target within hours (a real SMTP server); Jingshan gets no alert and no mail.
//! And a shortfall resting on a count entered by hand says so in the mail, and how old
//! the count is.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use alerts::{AlertFilter, Rule};
use chrono::{DateTime, Utc};
use ingest::{BrokerUrl, IngestConfig};
use live::{IngestMetrics, ManualReadings, SharedLedger, TownChanges, Transfer};
use reserve::Ledger;
use reserve::registry::{Registry, Source, load_registry};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use store::{Store, StoreOptions};
use testkit::{Mosquitto, SmtpServer};
use tokio_util::sync::CancellationToken;

use crate::helpers::{quick_config, settle, wait_until};

const WAIT: Duration = Duration::from_secs(20);

/// Two towns of 1000 people needing 3 L of water a day (125 L an hour): the target is
/// 9000 L. Their warehouses report every 5 minutes.
const REGISTRY: &str = r#"
[target]
days = 3.0
warn_days = 3.5

[[category]]
id = "water"
name = "饮用水"
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
report_every = "5m"

[[facility]]
id = "dh-wh1"
town = "donghua"
kind = "warehouse"
report_every = "5m"

[[contact]]
name = "Li Wei"
email = "li.wei@example.org"
lang = "zh"
towns = ["jingshan"]

[[contact]]
name = "Zhao Min"
email = "zhao.min@example.org"
lang = "zh"
towns = ["donghua"]
"#;

const JINGSHAN_OFFICER: &str = "li.wei@example.org";
const DONGHUA_OFFICER: &str = "zhao.min@example.org";

/// A gateway's readings of its water: (measured at, litres).
type Readings = Vec<(DateTime<Utc>, f64)>;

/// Readings 5 minutes apart over the last two hours: 20,000 L used at 125 L an hour,
/// and from reading 19 to 21 a tanker loading 2000 L (700, 700, 600). Returns the
/// readings before the tanker and from it on, as (ts, litres).
fn a_day_with_a_tanker(now: DateTime<Utc>) -> (Readings, Readings) {
    let mut litres = 20_000.0;
    let readings: Readings = (0..24)
        .map(|i| {
            if i > 0 {
                litres -= 125.0 / 12.0;
            }
            litres -= match i {
                19 | 20 => 700.0,
                21 => 600.0,
                _ => 0.0,
            };
            let ts = now - chrono::Duration::minutes(120) + chrono::Duration::minutes(5 * i);
            (ts, litres)
        })
        .collect();
    let (before, tanker) = readings.split_at(19);
    (before.to_vec(), tanker.to_vec())
}

/// A gateway's backlog, one message of readings in time order, published with QoS 1;
/// returns once the broker has it.
async fn publish(broker: &str, town: &str, facility: &str, readings: &[(DateTime<Utc>, f64)]) {
    let url = BrokerUrl::parse(broker).unwrap();
    let mut options = MqttOptions::new(
        format!("gw-{facility}-{}", readings.len()),
        url.host,
        url.port,
    );
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let payload: Vec<serde_json::Value> = readings
        .iter()
        .map(|(ts, litres)| serde_json::json!({"ts": ts.to_rfc3339(), "stock": {"water": litres}}))
        .collect();
    client
        .publish(
            format!("stockpile/v1/{town}/{facility}/reading"),
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
    assert!(acked.is_ok(), "the broker did not acknowledge the readings");
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

fn registry(text: &str) -> Arc<Registry> {
    let source = Source {
        name: "registry.toml".into(),
        text: text.into(),
    };
    Arc::new(load_registry(&source, &[], &mut |name| Err(format!("no file {name}"))).unwrap())
}

/// Waits until the ledger holds the facility's reading at `ts`.
async fn applied(ledger: &SharedLedger, facility: &str, ts: DateTime<Utc>) {
    wait_until(
        &format!("{facility}'s readings applied"),
        WAIT,
        async || {
            let ledger = ledger.read().unwrap();
            let f = ledger.registry().facility_idx(facility).unwrap();
            ledger.facility(f).last_ts.is_some_and(|t| t >= ts)
        },
    )
    .await;
}

/// The town's water consumption per hour, as the API and the board show it.
fn consumption_per_h(ledger: &SharedLedger, town: &str) -> Option<f64> {
    let ledger = ledger.read().unwrap();
    let t = ledger.registry().town_idx(town).unwrap();
    ledger.figures(t).categories[0].consumption_per_h
}

/// Ingest (with the queue of counts and transfers the API uses) and the alerting
/// service on one SQLite file, fed by a real Mosquitto, mailing through a real SMTP
/// server.
struct Running {
    broker: Mosquitto,
    smtp: SmtpServer,
    ledger: SharedLedger,
    writer: ManualReadings,
    handle: alerts::AlertsHandle,
    shutdown: CancellationToken,
    alerting: tokio::task::JoinHandle<Result<(), alerts::AlertsError>>,
    ingest: tokio::task::JoinHandle<Result<(), ingest::IngestError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(text: &str) -> Running {
        let broker = Mosquitto::start();
        let smtp = SmtpServer::start();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("stockpile.db");
        let registry = registry(text);
        let ledger: SharedLedger = Arc::new(RwLock::new(Ledger::new(Arc::clone(&registry))));
        let changes = Arc::new(TownChanges::default());
        let metrics = Arc::new(IngestMetrics::default());
        let shutdown = CancellationToken::new();
        let smtp_config = alerts::SmtpConfig::new(smtp.url(), "Stockpile <alerts@example.org>");
        let channels = alerts::Channels::from_config(
            Some(&smtp_config),
            None,
            &alerts::WebhookConfig::default(),
        )
        .unwrap();
        let config = alerts::AlertsConfig {
            // The forecast rule at its default horizon: these tests are about it.
            depleting_horizon: Duration::from_secs(12 * 3600),
            ..quick_config()
        };
        let service =
            alerts::Alerts::open(config, registry, &db, StoreOptions::default(), channels).unwrap();
        let handle = service.handle();
        let alerting =
            tokio::spawn(service.run(Arc::clone(&ledger), changes.subscribe(), shutdown.clone()));
        let ingest_config = IngestConfig::new(
            BrokerUrl::parse(&broker.url()).unwrap(),
            "stockpile-transfers-test",
        );
        let (writer, queue) = ManualReadings::channel(
            ingest_config.mqtt.max_readings_per_message,
            ingest_config.retention,
            Duration::from_secs(10),
        );
        let ingest = tokio::spawn(ingest::run_with_manual_readings(
            ingest_config,
            Arc::clone(&ledger),
            Store::open(&db, StoreOptions::default()).unwrap(),
            Arc::clone(&metrics),
            changes,
            queue,
            shutdown.clone(),
        ));
        wait_until("ingest connects", WAIT, async || metrics.connected()).await;
        Running {
            broker,
            smtp,
            ledger,
            writer,
            handle,
            shutdown,
            alerting,
            ingest,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.alerting.await.unwrap().unwrap();
        self.ingest.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_transfer_raises_no_forecast_alert_where_the_same_unrecorded_drop_does() {
    let running = Running::start(REGISTRY).await;
    let Running {
        broker,
        smtp,
        ledger,
        writer,
        handle,
        ..
    } = &running;
    let now = Utc::now();
    let (before, tanker) = a_day_with_a_tanker(now);
    let last = tanker.last().unwrap().0;
    for (town, facility) in [("jingshan", "js-wh1"), ("donghua", "dh-wh1")] {
        publish(&broker.url(), town, facility, &before).await;
        applied(ledger, facility, before.last().unwrap().0).await;
    }
    // Both towns use 125 L an hour: far from a forecast alert.
    for town in ["jingshan", "donghua"] {
        let rate = consumption_per_h(ledger, town).expect("a rate after two hours");
        assert!((rate - 125.0).abs() < 1.0, "{town}: {rate} L/h");
    }

    // Jingshan's officer records the transfer as the tanker is loading.
    let recorded = writer
        .submit_transfer(Transfer {
            at: now - chrono::Duration::minutes(15),
            from: "js-wh1".into(),
            to: "dh-wh1".into(),
            category: "water".into(),
            quantity: 2000.0,
            note: "水车支援东华门".into(),
            recorded_by: "li-wei".into(),
            remote: "127.0.0.1".into(),
        })
        .await
        .expect("the writer stores the transfer")
        .expect("a transfer between gateway facilities is never refused");
    assert_eq!((recorded.from_after, recorded.to_after), (None, None));

    // The same tanker, readings for readings, at both: jingshan's first.
    publish(&broker.url(), "jingshan", "js-wh1", &tanker).await;
    applied(ledger, "js-wh1", last).await;
    publish(&broker.url(), "donghua", "dh-wh1", &tanker).await;
    applied(ledger, "dh-wh1", last).await;

    let mails = tokio::task::block_in_place(|| smtp.wait_for(1, WAIT));
    assert_eq!(mails[0].to, vec![DONGHUA_OFFICER], "{}", mails[0].subject);
    assert!(
        mails[0].subject.contains("东华门街道"),
        "{}",
        mails[0].subject
    );
    let open = AlertFilter {
        open: true,
        ..AlertFilter::default()
    };
    let alerts = handle.list_alerts(&open).await.unwrap();
    let raised: Vec<(&str, Rule)> = alerts.iter().map(|a| (a.town.as_str(), a.rule)).collect();
    assert_eq!(raised, [("donghua", Rule::ReserveDepleting)]);
    let donghua = consumption_per_h(ledger, "donghua").unwrap();
    assert!(
        donghua > 1000.0,
        "the unrecorded drop is use: {donghua} L/h"
    );
    let jingshan = consumption_per_h(ledger, "jingshan").unwrap();
    assert!(
        (jingshan - 125.0).abs() < 5.0,
        "the transfer is not use: {jingshan} L/h"
    );

    // Jingshan's readings were in first; nothing comes for it later either.
    settle(Duration::from_millis(600)).await;
    let to: Vec<Vec<String>> = smtp.messages().into_iter().map(|m| m.to).collect();
    assert!(
        !to.iter().any(|t| t.iter().any(|a| a == JINGSHAN_OFFICER)),
        "{to:?}"
    );

    running.stop().await;
}

/// A town whose only warehouse is counted by hand, with an officer reading Chinese and
/// one reading English.
const COUNTED_BY_HAND: &str = r#"
[target]
days = 3.0
warn_days = 3.5

[[category]]
id = "water"
name = "饮用水"
name_en = "Drinking water"
unit = "L"
daily_need = 3.0

[[town]]
id = "jingshan"
name = "景山街道"
district = "dongcheng"
cluster = "c01"
population = 1000

[[facility]]
id = "js-wh9"
town = "jingshan"
kind = "warehouse"
report = "manual"

[[contact]]
name = "Li Wei"
email = "li.wei@example.org"
lang = "zh"
towns = ["jingshan"]

[[contact]]
name = "Wang Fang"
email = "wang.fang@example.org"
lang = "en"
towns = ["jingshan"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shortfall_resting_on_a_hand_count_says_so_and_how_old_in_the_mail() {
    let running = Running::start(COUNTED_BY_HAND).await;
    let (facility, water) = {
        let ledger = running.ledger.read().unwrap();
        let registry = ledger.registry();
        let f = registry.facility_idx("js-wh9").unwrap();
        (f, registry.category_idx("water").unwrap())
    };
    // Counted three hours ago: 6000 L, two days for 1000 people.
    let count = reserve::Reading {
        facility,
        ts: Utc::now() - chrono::Duration::minutes(181),
        seq: None,
        observation: reserve::Observation::Stock(vec![(water, 6000.0)]),
    };
    let stored = running
        .writer
        .submit(vec![count], "li-wei".into())
        .await
        .expect("the writer stores the count");
    assert_eq!(stored.stored, 1);

    let mails = tokio::task::block_in_place(|| running.smtp.wait_for(2, WAIT));
    for (to, says) in [
        ("li.wei@example.org", "（含人工盘点 3 小时前）"),
        (
            "wang.fang@example.org",
            " (includes a hand count from 3 h ago)",
        ),
    ] {
        let mail = mails
            .iter()
            .find(|m| m.to == [to])
            .unwrap_or_else(|| panic!("no mail to {to}"));
        assert!(mail.body_text.contains(says), "{to}: {}", mail.body_text);
    }
    running.stop().await;
}
