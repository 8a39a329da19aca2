//! Memory under bad input (docs/design.md#performance-targets: bounded under any input,
//! < 1 GiB with the demo registry). Runs the release binary on the demo registry against
//! a real Mosquitto and sends, one phase after another, what a gateway credential in the
//! wrong hands can:
//! 1. 130 QoS 1 messages of 256 KiB arrays `[1,1,…]` (131,000 elements each);
//! 2. the same 130 at QoS 0, as fast as the broker takes them;
//! 3. 50 QoS 1 payloads of 4 MiB (over the size limit);
//! 4. 20,000 QoS 0 messages to invented towns and facilities;
//! 5. 2,000 QoS 1 arrays of 1,000 readings, each naming an unknown category.
//!
//! After each phase it waits until the service has received the phase (QoS 1) or its
//! counters stop moving (QoS 0), then reads the process's resident set (`VmRSS`) and
//! its peak so far (`VmHWM`) from `/proc`.
//!
//! ```text
//! cargo build --release -p server --bin stockpile --example flood_memory
//! target/release/examples/flood_memory --bin target/release/stockpile
//! ```
//! (`scripts/bench flood` does both.)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};

#[path = "support/serve.rs"]
mod serve;

fn bin() -> PathBuf {
    let mut it = std::env::args().skip(1);
    let mut bin = PathBuf::from("target/release/stockpile");
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--bin" => bin = PathBuf::from(it.next().expect("--bin PATH")),
            other => panic!("unknown flag {other} (--bin PATH)"),
        }
    }
    assert!(
        bin.is_file(),
        "no stockpile binary at {} (cargo build --release -p server, or --bin PATH)",
        bin.display()
    );
    bin
}

/// `(VmRSS, VmHWM)` in MiB.
fn memory_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `stockpile_ingest_received_total`.
fn received(api: &str) -> u64 {
    testkit::http::get(&format!("{api}/metrics"), &[])
        .body
        .lines()
        .find_map(|l| l.strip_prefix("stockpile_ingest_received_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A topic and a payload.
type Message = (String, Vec<u8>);

/// Publishes `messages` with `qos` as fast as the broker takes them.
async fn publish(port: u16, qos: QoS, messages: Vec<Message>) {
    let mut options = MqttOptions::new(format!("flood-{qos:?}"), "127.0.0.1", port);
    options.set_max_packet_size(8 * 1024 * 1024, 8 * 1024 * 1024);
    options.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let total = messages.len();
    let sender = tokio::spawn(async move {
        for (topic, payload) in messages {
            client.publish(topic, qos, false, payload).await.unwrap();
        }
        client
    });
    let (mut sent, mut acked) = (0, 0);
    while (qos == QoS::AtMostOnce && sent < total) || (qos != QoS::AtMostOnce && acked < total) {
        match tokio::time::timeout(Duration::from_secs(120), eventloop.poll()).await {
            Err(_) => panic!("publisher stalled: {sent} sent, {acked} acknowledged of {total}"),
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Ok(Event::Outgoing(Outgoing::Publish(_)))) => sent += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher lost the broker: {e}"),
        }
    }
    let client = sender.await.unwrap();
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
}

/// Waits until the service received `at_least` messages and its counter stood still
/// for a second (QoS 0 messages may be dropped on the way).
fn settle(api: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = (received(api), Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = received(api);
        if now != last.0 {
            last = (now, Instant::now());
        } else if now >= at_least && last.1.elapsed() > Duration::from_secs(1) {
            return now;
        }
        assert!(Instant::now() < deadline, "service stuck at {now} received");
    }
}

fn array_of_ones() -> Vec<u8> {
    let limit = reserve::wire::MAX_PAYLOAD_BYTES;
    let mut payload = b"[".to_vec();
    while payload.len() + 4 <= limit {
        payload.extend_from_slice(b"1,");
    }
    payload.extend_from_slice(b"1]");
    payload
}

fn main() {
    let bin = bin();
    let demo = std::fs::canonicalize("demo/registry.toml").expect("run from the repository root");
    let dir = tempfile::tempdir().unwrap();
    let broker = testkit::Mosquitto::builder()
        .persistence(true)
        .max_queued(0)
        .max_inflight(1000)
        .config_line("message_size_limit 0")
        .start();
    let config = dir.path().join("stockpile.toml");
    std::fs::write(
        &config,
        format!(
            "registry = \"{}\"\n[mqtt]\nurl = \"{}\"\nclient_id = \"flood-bench\"\n\
             [store]\npath = \"stockpile.db\"\n[api]\nlisten = \"127.0.0.1:0\"\npublic_read = true\n",
            demo.display(),
            broker.url()
        ),
    )
    .unwrap();
    let (mut child, api) = serve::spawn(&bin, &config);
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while testkit::http::try_get(&format!("{api}/readyz"), &[]).map(|r| r.status) != Ok(200) {
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (rss, hwm) = memory_mib(pid);
    println!("| ready, demo registry | – | {rss} MiB | {hwm} MiB |");

    let warehouse = "stockpile/v1/dongcheng-fengsheng/dongcheng-fengsheng-wh1/reading".to_owned();
    let ones = array_of_ones();
    let huge = vec![b' '; 4 * 1024 * 1024];
    let unknown_category: Vec<u8> = {
        let now = chrono::Utc::now().timestamp_millis();
        let items: Vec<String> = (0..1000)
            .map(|i| {
                format!(
                    r#"{{"ts": {}, "stock": {{"no-such-category": 1}}}}"#,
                    now - i
                )
            })
            .collect();
        format!("[{}]", items.join(",")).into_bytes()
    };
    let phases: Vec<(&str, QoS, Vec<Message>)> = vec![
        (
            "130 × 256 KiB arrays of 131,000 elements, QoS 1",
            QoS::AtLeastOnce,
            vec![(warehouse.clone(), ones.clone()); 130],
        ),
        (
            "the same, QoS 0",
            QoS::AtMostOnce,
            vec![(warehouse.clone(), ones); 130],
        ),
        (
            "50 × 4 MiB payloads (over the size limit), QoS 1",
            QoS::AtLeastOnce,
            vec![(warehouse.clone(), huge); 50],
        ),
        (
            "20,000 messages to invented towns and facilities, QoS 0",
            QoS::AtMostOnce,
            (0..20_000)
                .map(|i| {
                    (
                        format!("stockpile/v1/town-{i}/facility-{i}/reading"),
                        b"{}".to_vec(),
                    )
                })
                .collect(),
        ),
        (
            "2,000 arrays of 1,000 readings of an unknown category, QoS 1",
            QoS::AtLeastOnce,
            vec![(warehouse, unknown_category); 2_000],
        ),
    ];
    let mut expected = received(&api);
    for (name, qos, messages) in phases {
        let n = messages.len() as u64;
        let began = Instant::now();
        runtime.block_on(publish(broker.port(), qos, messages));
        let at_least = if qos == QoS::AtMostOnce {
            expected + 1
        } else {
            expected + n
        };
        let got = settle(&api, at_least);
        let (rss, hwm) = memory_mib(pid);
        println!(
            "| {name} | {} received in {:.1} s | {rss} MiB | {hwm} MiB |",
            got - expected,
            began.elapsed().as_secs_f64()
        );
        expected = got;
    }
    let _ = child.kill();
    let _ = child.wait();
}
