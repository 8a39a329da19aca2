//! `stockpile serve` run as operators run it: the built binary, a real Mosquitto, a real
//! SQLite file. The process is killed with SIGKILL in the middle of a burst and
//! restarted; every reading the broker accepted must end up in SQLite exactly once.

mod faults;
mod flood;

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Deployment, Service, WAREHOUSES};
use chrono::Utc;
use nix::sys::signal::Signal;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use store::{Store, StoreOptions};

/// Publishes `total` readings with QoS 1, paced, and returns how many PUBACKs came back.
async fn publish_paced(broker: String, total: u64, per_second: u64) -> u64 {
    let port: u16 = broker.rsplit(':').next().unwrap().parse().unwrap();
    let mut options = MqttOptions::new("gw-burst", "127.0.0.1", port);
    options.set_inflight(200);
    let (client, mut eventloop) = AsyncClient::new(options, 200);
    let start = Utc::now() - chrono::Duration::minutes(10);
    let sender = tokio::spawn(async move {
        let began = tokio::time::Instant::now();
        for i in 0..total {
            let facility = format!("js-wh{}", i as usize % WAREHOUSES);
            let ts = start + chrono::Duration::milliseconds(i as i64);
            let payload = serde_json::json!({
                "ts": ts.timestamp_millis(), "seq": i, "stock": {"water": 100_000 - i as i64 % 1000}
            });
            client
                .publish(
                    format!("stockpile/v1/jingshan/{facility}/reading"),
                    QoS::AtLeastOnce,
                    false,
                    serde_json::to_vec(&payload).unwrap(),
                )
                .await
                .unwrap();
            let due = began + Duration::from_micros(i * 1_000_000 / per_second);
            tokio::time::sleep_until(due).await;
        }
        client
    });
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while acked < total {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => panic!("publisher: only {acked} of {total} acknowledged by the broker"),
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher lost the broker: {e}"),
        }
    }
    let _ = sender.await;
    acked
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_nothing_and_duplicates_nothing() {
    let broker = testkit::Mosquitto::builder()
        .persistence(true)
        .max_queued(0)
        .start();
    let deployment = Deployment::new(&broker.url());
    let first = Service::start(&deployment.config());

    const TOTAL: u64 = 20_000;
    let publisher = tokio::spawn(publish_paced(broker.url(), TOTAL, 8_000));

    // Kill the service once a part of the burst is in, while more is in flight.
    let db = deployment.db();
    let d = &deployment;
    tokio::task::block_in_place(|| {
        wait_until("some readings stored", Duration::from_secs(30), || {
            d.stored() >= 2_000
        });
    });
    first.signal(Signal::SIGKILL);
    assert_eq!(
        first.wait(Duration::from_secs(5)),
        None,
        "killed by a signal"
    );
    let at_kill = deployment.stored();
    assert!(
        at_kill < TOTAL,
        "the kill came after the burst ({at_kill} stored)"
    );

    // The broker keeps our persistent session's messages; the restarted service gets
    // them, including those delivered but not acknowledged before the kill.
    let second = tokio::task::block_in_place(|| Service::start(&deployment.config()));
    let acked = publisher.await.unwrap();
    assert_eq!(acked, TOTAL);
    tokio::task::block_in_place(|| {
        wait_until(
            "every acknowledged reading stored",
            Duration::from_secs(60),
            || d.stored() >= TOTAL,
        );
    });
    // Give a redelivery of the last batch time to show up as a duplicate row if it could.
    std::thread::sleep(Duration::from_millis(500));

    let store = Store::open(&db, StoreOptions::default()).unwrap();
    assert_eq!(store.count_readings().unwrap(), TOTAL, "exactly once each");
    let mut seqs: Vec<u64> = Vec::new();
    for i in 0..WAREHOUSES {
        let facility = reserve::FacilityId::parse(&format!("js-wh{i}")).unwrap();
        let rows = store
            .readings(
                &facility,
                Utc::now() - chrono::Duration::hours(1),
                Utc::now(),
                TOTAL as usize,
            )
            .unwrap();
        seqs.extend(rows.iter().map(|r| r.seq.unwrap()));
    }
    seqs.sort_unstable();
    assert!(
        seqs.iter().copied().eq(0..TOTAL),
        "every seq 0..{TOTAL} once"
    );

    // The API of the restarted process shows the town from the same ledger.
    let town = testkit::http::get(&format!("{}/api/v1/towns/jingshan", second.api_url()), &[]);
    assert_eq!(town.status, 200, "{}", town.body);
    let town = town.json();
    assert_ne!(town["status"], "unknown", "{town}");

    // And a graceful stop: SIGINT, exit 0 within a few seconds.
    second.signal(Signal::SIGINT);
    assert_eq!(second.wait(Duration::from_secs(10)), Some(0));
}

#[test]
fn serve_with_a_broken_config_names_the_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stockpile.toml");
    std::fs::write(
        &config,
        "[mqtt]\nurl = \"http://broker\"\n[[category]]\nid = \"water\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("stockpile.toml:2: mqtt.url: expected mqtt://"),
        "{stderr}"
    );
}

#[test]
fn serve_exits_non_zero_when_the_store_cannot_be_opened() {
    let broker = testkit::Mosquitto::start();
    let deployment = Deployment::new(&broker.url());
    // A directory where the SQLite file should be.
    std::fs::create_dir(deployment.db()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .args(["serve", "--config"])
        .arg(deployment.config())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("open the store"), "{stderr}");
}

#[test]
fn serve_with_its_port_taken_exits_before_anything_runs() {
    let broker = testkit::Mosquitto::start();
    let deployment = Deployment::new(&broker.url());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = std::fs::read_to_string(deployment.config())
        .unwrap()
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", taken.local_addr().unwrap()),
        );
    std::fs::write(deployment.config(), config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .args(["serve", "--config"])
        .arg(deployment.config())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("api.listen: cannot listen on"), "{stderr}");
    // Nothing ran: ingest never connected (so no broker session was made for it).
    assert!(!stderr.contains("Connected to the broker"), "{stderr}");
    assert!(
        !broker.log().contains("stockpile-serve-test"),
        "ingest reached the broker: {}",
        broker.log()
    );
}

/// The production path end to end: a reading below target published to Mosquitto
/// becomes an email received by a real SMTP server, an alert in the API, and points in
/// a real InfluxDB 1.6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_town_below_target_reaches_smtp_the_api_and_influxdb() {
    let broker = testkit::Mosquitto::start();
    let smtp = testkit::SmtpServer::start();
    let influx = testkit::Influx1::start();
    influx.create_database("stockpile");
    let deployment = Deployment::with_sections(
        &format!(
            "url = \"{}\"\nclient_id = \"stockpile-e2e\"\n",
            broker.url()
        ),
        &format!(
            "[alerts]\ngroup_wait = \"0s\"\n[smtp]\nurl = \"{}\"\nfrom = \"Stockpile <alerts@example.org>\"\n\
             [influx]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"stockpile\"\n",
            smtp.url(),
            influx.url()
        ),
    );
    let service = tokio::task::block_in_place(|| Service::start(&deployment.config()));
    let api = service.api_url();

    // 30,000 people need 90,000 L a day; 60,000 L is two thirds of a day. Every
    // warehouse of the town reports (the others empty): a shortfall resting on one that
    // never reported would wait out its start-up grace (docs/design.md#lifecycle).
    let ts = Utc::now().timestamp_millis();
    let port: u16 = broker.port();
    let mut options = MqttOptions::new("gw-js", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 2 * WAREHOUSES);
    for i in 0..WAREHOUSES {
        let water = if i == 0 { 60_000 } else { 0 };
        client
            .publish(
                format!("stockpile/v1/jingshan/js-wh{i}/reading"),
                QoS::AtLeastOnce,
                false,
                format!(r#"{{"ts": {ts}, "stock": {{"water": {water}}}}}"#),
            )
            .await
            .unwrap();
    }
    let mut acked = 0;
    while acked < WAREHOUSES {
        if let Ok(Event::Incoming(Incoming::PubAck(_))) = eventloop.poll().await {
            acked += 1;
        }
    }

    let mails = tokio::task::block_in_place(|| smtp.wait_for(1, Duration::from_secs(30)));
    assert_eq!(mails[0].to, vec!["li.wei@example.org".to_string()]);
    assert!(
        mails[0].subject.to_lowercase().contains("critical"),
        "{}",
        mails[0].subject
    );
    assert!(
        mails[0].body_text.contains("0.7"),
        "days left in the body: {}",
        mails[0].body_text
    );

    let alerts = testkit::http::get(&format!("{api}/api/v1/alerts"), &[("state", "firing")]).json();
    let text = alerts.to_string();
    assert!(
        text.contains("reserve_below_target") && text.contains("jingshan"),
        "{text}"
    );

    let wait_for_point = async |what: &str, query: &str, expected: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = influx.query("stockpile", query);
            if rows.to_string().contains(expected) {
                return;
            }
            assert!(Instant::now() < deadline, "no {what} in InfluxDB: {rows}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    wait_for_point(
        "stock point",
        "SELECT last(\"quantity\") FROM \"stock\" WHERE \"facility\" = 'js-wh0'",
        "60000",
    )
    .await;
    // The `alert` series the wall display counts: one critical alert firing...
    let firing = "SELECT last(\"firing\") FROM \"alert\" WHERE \"town\" = 'jingshan' \
                  AND \"rule\" = 'reserve_below_target' AND \"severity\" = 'critical'";
    wait_for_point("firing alert", firing, ",1]").await;

    // ...and none once the warehouse is restocked to 4.4 days.
    client
        .publish(
            "stockpile/v1/jingshan/js-wh0/reading",
            QoS::AtLeastOnce,
            false,
            format!(r#"{{"ts": {}, "stock": {{"water": 400000}}}}"#, ts + 1000),
        )
        .await
        .unwrap();
    loop {
        if let Ok(Event::Incoming(Incoming::PubAck(_))) = eventloop.poll().await {
            break;
        }
    }
    wait_for_point("resolved alert", firing, ",0]").await;
    service.signal(Signal::SIGTERM);
    assert_eq!(service.wait(Duration::from_secs(15)), Some(0));
}

/// Publishes one reading with QoS 1 and returns once the broker acknowledged it.
async fn publish_one(broker: &testkit::Mosquitto, topic: &str, payload: String) {
    let mut options = MqttOptions::new("gw-one", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
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
    assert!(acked.is_ok(), "the broker did not acknowledge {topic}");
}

/// The water stock the API shows for jingshan, once it is `expected`.
fn wait_for_water_stock(api: &str, expected: f64) {
    let url = format!("{api}/api/v1/towns/jingshan");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let town = testkit::http::get(&url, &[]).json();
        if town["categories"][0]["stock"].as_f64() == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "water stock {expected} never shown: {town}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Live state is saved about once a second (here: once an hour), readings with every
/// batch. A reading acknowledged and applied but not yet in a snapshot when the
/// process is killed is replayed from the readings table at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_not_yet_in_a_snapshot_is_replayed_after_sigkill() {
    let broker = testkit::Mosquitto::start();
    let deployment = Deployment::new(&broker.url());
    let child = Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .args(["serve", "--config"])
        .arg(deployment.config())
        .env_remove("RUST_LOG")
        .env("STOCKPILE__STORE__SNAPSHOT_EVERY", "1h")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start stockpile serve");
    let first = Service::from_child(child);
    first.wait_for_log("Subscribed", Duration::from_secs(20));

    let ts = Utc::now().timestamp_millis();
    publish_one(
        &broker,
        "stockpile/v1/jingshan/js-wh0/reading",
        format!(r#"{{"ts": {ts}, "stock": {{"water": 60000}}}}"#),
    )
    .await;
    let api = first.api_url();
    tokio::task::block_in_place(|| wait_for_water_stock(&api, 60_000.0));
    {
        let store = Store::open(&deployment.db(), StoreOptions::default()).unwrap();
        assert_eq!(
            store.load_snapshots().unwrap(),
            vec![],
            "no snapshot saved yet"
        );
        assert!(
            store.replay_from().unwrap().is_some(),
            "the replay mark is set"
        );
    }
    first.signal(Signal::SIGKILL);
    assert_eq!(first.wait(Duration::from_secs(5)), None);

    let second = tokio::task::block_in_place(|| Service::start(&deployment.config()));
    let api = second.api_url();
    tokio::task::block_in_place(|| wait_for_water_stock(&api, 60_000.0));
    assert!(
        second.output().contains("Replayed readings"),
        "{}",
        second.output()
    );

    // A clean stop saves every snapshot: the next start has nothing to replay.
    second.signal(Signal::SIGTERM);
    assert_eq!(second.wait(Duration::from_secs(10)), Some(0));
    let store = Store::open(&deployment.db(), StoreOptions::default()).unwrap();
    assert_eq!(store.replay_from().unwrap(), None);
    assert_eq!(store.load_snapshots().unwrap().len(), 1);
}
