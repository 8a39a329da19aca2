//! What an attacker with one town's MQTT credential can do, tried against the running
//! binary: a flood of 256 KiB arrays of 131,000 tiny elements. Before the limits, this
//! grew the process to 11 GB and stalled every other town for minutes.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

use super::publish_one;
use crate::common::{Deployment, Service};

/// Messages per flood phase, as in the report that found the problem.
const FLOOD: usize = 130;
/// What the process may reach, at peak, under the flood (a few MiB of registry and
/// ledger, the 64 MiB delivery budget, the MQTT client's buffers). Measured 70 MiB;
/// BENCHMARKS.md "Memory under bad input" has the numbers.
const PEAK_RSS_LIMIT_KIB: u64 = 320 * 1024;

/// `[1,1,…,1]` filling the reading size limit exactly: 131,072 elements.
fn flood_payload() -> Vec<u8> {
    let limit = reserve::wire::MAX_PAYLOAD_BYTES;
    let mut payload = Vec::with_capacity(limit);
    payload.push(b'[');
    while payload.len() + 4 <= limit {
        payload.extend_from_slice(b"1,");
    }
    payload.extend_from_slice(b"1]");
    assert!(payload.len() <= limit);
    payload
}

/// Publishes the flood with `qos`, as fast as the broker takes it.
async fn flood(port: u16, qos: QoS) {
    let mut options = MqttOptions::new(format!("flooder-{qos:?}"), "127.0.0.1", port);
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    options.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let payload = flood_payload();
    let sender = tokio::spawn(async move {
        for _ in 0..FLOOD {
            client
                .publish(
                    "stockpile/v1/jingshan/js-wh0/reading",
                    qos,
                    false,
                    payload.clone(),
                )
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while (qos == QoS::AtMostOnce && sent < FLOOD) || (qos != QoS::AtMostOnce && acked < FLOOD) {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => panic!("flood {qos:?}: {sent} sent, {acked} acknowledged by the broker"),
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_)))) => sent += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("flooder lost the broker: {e}"),
        }
    }
    let client = sender.await.unwrap();
    // A QoS 0 publish is written when polled: let it all out before disconnecting.
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
}

/// The process's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// A counter of `/metrics`, 0 when absent.
fn metric(api: &str, name_and_labels: &str) -> u64 {
    let text = testkit::http::get(&format!("{api}/metrics"), &[]).body;
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn donghua_water(api: &str) -> Option<f64> {
    let town = testkit::http::get(&format!("{api}/api/v1/towns/donghua"), &[]).json();
    town["categories"][0]["stock"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_huge_arrays_is_rejected_whole_in_bounded_memory_and_other_towns_go_on() {
    let broker = testkit::Mosquitto::builder()
        .persistence(true)
        .max_queued(0)
        .start();
    let deployment = Deployment::new(&broker.url());
    let service = tokio::task::block_in_place(|| Service::start(&deployment.config()));
    let api = tokio::task::block_in_place(|| service.api_url());
    let too_many = "stockpile_ingest_rejected_total{reason=\"too_many_readings\"}";

    for (phase, qos) in [(1u64, QoS::AtLeastOnce), (2, QoS::AtMostOnce)] {
        flood(broker.port(), qos).await;
        // Another town's reading, sent after the whole flood: it must not wait minutes
        // behind it.
        let water = 1000.0 * phase as f64;
        let ts = chrono::Utc::now().timestamp_millis();
        publish_one(
            &broker,
            "stockpile/v1/donghua/dh-wh1/reading",
            format!(r#"{{"ts": {ts}, "stock": {{"water": {water}}}}}"#),
        )
        .await;
        tokio::task::block_in_place(|| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while donghua_water(&api) != Some(water) {
                assert!(
                    Instant::now() < deadline,
                    "phase {phase} ({qos:?}): donghua's reading not applied within 30 s of the flood"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        if qos == QoS::AtLeastOnce {
            // Every QoS 1 message arrives: one rejection each, none per element.
            tokio::task::block_in_place(|| {
                let deadline = Instant::now() + Duration::from_secs(30);
                while metric(&api, too_many) < FLOOD as u64 {
                    assert!(Instant::now() < deadline, "{}", metric(&api, too_many));
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            assert_eq!(metric(&api, too_many), FLOOD as u64);
        }
    }
    // QoS 0 may lose messages on the way (that is QoS 0); whatever arrived was
    // rejected whole, and nothing else was counted.
    let rejected_total: u64 = testkit::http::get(&format!("{api}/metrics"), &[])
        .body
        .lines()
        .filter(|l| l.starts_with("stockpile_ingest_rejected_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let flood_rejects = metric(&api, too_many);
    assert!(
        flood_rejects > FLOOD as u64,
        "the QoS 0 flood arrived: {flood_rejects}"
    );
    assert_eq!(
        rejected_total, flood_rejects,
        "only too_many_readings was counted"
    );

    // One reject record per message in the reject log.
    let store = store::Store::open(&deployment.db(), store::StoreOptions::default()).unwrap();
    let rejects = store.recent_rejects(10_000).unwrap();
    assert_eq!(
        rejects.len() as u64,
        flood_rejects,
        "one record per message"
    );
    assert!(
        rejects[0].detail.contains("more than 1000 readings"),
        "{:?}",
        rejects[0]
    );
    assert_eq!(rejects[0].payload_len, flood_payload().len());

    let peak = peak_rss_kib(service.child.id());
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak RSS {} MiB under the flood (limit {} MiB)",
        peak / 1024,
        PEAK_RSS_LIMIT_KIB / 1024
    );
    eprintln!("peak RSS under the flood: {} MiB", peak / 1024);
}
