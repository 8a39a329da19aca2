//! Ingest benchmark (docs/design.md#performance-targets): readings/s through Mosquitto
//! into the ledger and SQLite, beside what a bare subscriber drains from the same broker
//! in the same run.
//!
//! Each round starts a subscriber (bare, or Stockpile's whole ingest path), then
//! publishes `--messages` readings as fast as two publisher connections go, and times
//! the subscriber from its first message to its last. Rounds alternate bare / ingest so
//! machine noise hits both; the figure to report is the ratio of the medians.
//!
//! ```text
//! cargo run --release -p ingest --example ingest_bench -- --qos 1 --messages 200000 --rounds 3
//! ```
//! Prints one JSON line per round and a summary line; `scripts/bench` runs it.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use ingest::{BrokerUrl, IngestConfig};
use live::{IngestMetrics, TownChanges};
use reserve::Ledger;
use reserve::registry::{FacilityKindName, Registry, Source, load_registry};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;

struct Args {
    qos: QoS,
    messages: u64,
    rounds: usize,
    max_inflight: u32,
    synchronous_full: bool,
}

fn args() -> Args {
    let mut a = Args {
        qos: QoS::AtLeastOnce,
        messages: 200_000,
        rounds: 3,
        max_inflight: 1000,
        synchronous_full: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag needs a value");
        match flag.as_str() {
            "--qos" => {
                a.qos = match value().as_str() {
                    "0" => QoS::AtMostOnce,
                    "1" => QoS::AtLeastOnce,
                    other => panic!("--qos 0 or 1, not {other}"),
                }
            }
            "--messages" => a.messages = value().parse().expect("--messages N"),
            "--rounds" => a.rounds = value().parse().expect("--rounds N"),
            "--max-inflight" => a.max_inflight = value().parse().expect("--max-inflight N"),
            "--synchronous-full" => a.synchronous_full = true,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn demo_registry() -> Arc<Registry> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo");
    let read = |name: &str| -> Result<Source, String> {
        let path = dir.join(name);
        Ok(Source {
            name: path.display().to_string(),
            text: std::fs::read_to_string(&path).map_err(|e| e.to_string())?,
        })
    };
    let main = read("registry.toml").expect("demo registry");
    Arc::new(load_registry(&main, &[], &mut |n| read(n)).expect("demo registry loads"))
}

/// Pre-encoded readings: warehouse stock, round robin over the demo's warehouses, each
/// with a later ts than the last of its facility.
fn payloads(registry: &Registry, n: u64) -> Vec<(String, Vec<u8>)> {
    let warehouses: Vec<_> = registry
        .facilities
        .iter()
        .filter(|f| f.kind.name() == FacilityKindName::Warehouse)
        .collect();
    let start = Utc::now() - chrono::Duration::minutes(30);
    (0..n)
        .map(|i| {
            let f = warehouses[i as usize % warehouses.len()];
            let town = &registry.town(f.town).id;
            let ts = start + chrono::Duration::milliseconds(i as i64);
            let body = format!(
                r#"{{"ts":{},"seq":{i},"stock":{{"water":{},"food":{}}}}}"#,
                ts.timestamp_millis(),
                100_000 - (i % 50_000),
                80_000 - (i % 40_000)
            );
            (
                format!("stockpile/v1/{town}/{}/reading", f.id),
                body.into_bytes(),
            )
        })
        .collect()
}

async fn publish(port: u16, qos: QoS, messages: Arc<Vec<(String, Vec<u8>)>>, round: usize) {
    let publishers = 2;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let messages = Arc::clone(&messages);
        tasks.push(tokio::spawn(async move {
            let mut options = MqttOptions::new(format!("bench-pub-{round}-{p}"), "127.0.0.1", port);
            options.set_inflight(1000);
            options.set_max_packet_size(1 << 20, 1 << 20);
            let (client, mut eventloop) = AsyncClient::new(options, 1000);
            let mine: Vec<_> = messages
                .iter()
                .skip(p)
                .step_by(publishers)
                .cloned()
                .collect();
            let total = mine.len();
            let sender = tokio::spawn(async move {
                for (topic, payload) in mine {
                    client.publish(topic, qos, false, payload).await.unwrap();
                }
                client
            });
            // Drive the connection until everything is out (and acked at QoS 1).
            let mut done = 0;
            while done < total {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::PubAck(_))) if qos == QoS::AtLeastOnce => {
                        done += 1
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_)))
                        if qos == QoS::AtMostOnce =>
                    {
                        done += 1
                    }
                    Ok(_) => {}
                    Err(e) => panic!("publisher: {e}"),
                }
            }
            let client = sender.await.unwrap();
            let _ = client.disconnect().await;
            for _ in 0..10 {
                if eventloop.poll().await.is_err() {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A subscriber that only counts: rumqttc acks for it, nothing is decoded.
async fn bare_round(
    port: u16,
    a: &Args,
    messages: Arc<Vec<(String, Vec<u8>)>>,
    round: usize,
) -> f64 {
    let mut options = MqttOptions::new(format!("bench-bare-{round}"), "127.0.0.1", port);
    options.set_clean_session(false);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    client
        .subscribe(reserve::wire::READING_FILTER, a.qos)
        .await
        .unwrap();
    loop {
        if let Ok(Event::Incoming(Incoming::SubAck(_))) = eventloop.poll().await {
            break;
        }
    }
    let total = a.messages;
    let publisher = tokio::spawn(publish(port, a.qos, messages, round));
    let mut first = None;
    let mut received = 0u64;
    while received < total {
        if let Ok(Event::Incoming(Incoming::Publish(_))) = eventloop.poll().await {
            first.get_or_insert_with(Instant::now);
            received += 1;
        }
    }
    let elapsed = first.unwrap().elapsed();
    publisher.await.unwrap();
    let _ = client.disconnect().await;
    total as f64 / elapsed.as_secs_f64()
}

/// Stockpile's ingest: decode, validate, ledger, SQLite commit before the ack.
async fn ingest_round(
    port: u16,
    a: &Args,
    registry: &Arc<Registry>,
    messages: Arc<Vec<(String, Vec<u8>)>>,
    round: usize,
) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("bench.db"),
        StoreOptions {
            synchronous_full: a.synchronous_full,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let ledger = Arc::new(RwLock::new(Ledger::new(Arc::clone(registry))));
    let metrics = Arc::new(IngestMetrics::default());
    let shutdown = CancellationToken::new();
    let url = BrokerUrl::parse(&format!("mqtt://127.0.0.1:{port}")).unwrap();
    let task = tokio::spawn(ingest::run(
        IngestConfig::new(url, format!("bench-ingest-{round}")),
        ledger,
        store,
        Arc::clone(&metrics),
        Arc::new(TownChanges::default()),
        shutdown.clone(),
    ));
    while !metrics.connected() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // the SUBACK
    let total = a.messages;
    let publisher = tokio::spawn(publish(port, a.qos, messages, round));
    let mut first = None;
    loop {
        let c = metrics.counts();
        if first.is_none() && c.received > 0 {
            first = Some(Instant::now());
        }
        if c.accepted >= total {
            break;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = first.unwrap().elapsed();
    // How much each commit carried: small batches mean per-transaction costs dominate.
    let c = metrics.counts();
    println!(
        r#"{{"round":{round},"path":"ingest","batches":{},"readings_per_batch":{:.1}}}"#,
        c.batches,
        c.accepted as f64 / c.batches.max(1) as f64
    );
    publisher.await.unwrap();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    total as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let a = args();
    let registry = demo_registry();
    let messages = Arc::new(payloads(&registry, a.messages));
    let broker = testkit::Mosquitto::builder()
        .max_queued(0)
        .max_inflight(a.max_inflight)
        .start();
    let port = broker.port();
    let qos = match a.qos {
        QoS::AtMostOnce => 0,
        _ => 1,
    };
    let (mut bare, mut full) = (Vec::new(), Vec::new());
    for round in 0..a.rounds {
        let b = bare_round(port, &a, Arc::clone(&messages), round).await;
        println!(r#"{{"round":{round},"path":"bare","qos":{qos},"msgs_per_s":{b:.0}}}"#);
        let f = ingest_round(port, &a, &registry, Arc::clone(&messages), round).await;
        println!(r#"{{"round":{round},"path":"ingest","qos":{qos},"msgs_per_s":{f:.0}}}"#);
        bare.push(b);
        full.push(f);
    }
    let (b, f) = (median(bare), median(full));
    println!(
        r#"{{"summary":true,"qos":{qos},"messages":{},"rounds":{},"mosquitto_max_inflight":{},"synchronous_full":{},"bare_median":{b:.0},"ingest_median":{f:.0},"ratio":{:.3}}}"#,
        a.messages,
        a.rounds,
        a.max_inflight,
        a.synchronous_full,
        f / b
    );
}
