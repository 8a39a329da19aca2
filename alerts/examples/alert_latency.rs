//! Alert latency benchmark (docs/design.md#performance-targets): a reading that takes a
//! town below its three-day target → the officer's email handed to SMTP; target p99 ≤ 1 s
//! with `for = 0` and `group_wait = 0`.
//!
//! A real Mosquitto and the real SMTP server (aiosmtpd, from testkit) run as processes;
//! this process runs the pipeline as `tests/alerts/end_to_end.rs` wires it: `ingest::run`
//! and `Alerts::run` on one SQLite file, joined by `TownChanges`, on a multi-threaded
//! runtime of their own. The registry is generated: `--towns` towns of 1000 people, each
//! with one warehouse and one officer with an email. Everything else is the service's
//! defaults (a 10 s evaluation tick, the 12 h depletion horizon, Mosquitto with the
//! `max_inflight_messages` deploy/mosquitto.conf recommends).
//!
//! Every sample town is first stocked for 5 days. A sample then publishes one QoS 1
//! reading that leaves a town of its own with 2 days of water; the clock starts just
//! before the publish and stops when the SMTP server has stored the officer's message.
//! The gateways publish from threads of their own, as if from other machines.
//!
//! The arrival is seen by polling the server's mail dir every millisecond (testkit's
//! recorder renames `NNNNNN.json` into place after writing the message and before it
//! answers 250): each figure is late by up to about a millisecond plus the poller's
//! own scheduling delay. The notification's `created` time (when the evaluation step
//! that queued it began; whole milliseconds) splits each sample in two: publish →
//! evaluation (broker, ingest commit, change feed, evaluator free) and evaluation → SMTP
//! (rules, alert and outbox commit, worker wake-up, the SMTP session).
//!
//! `--background N` adds a fleet of gateways publishing N steady readings per second
//! (QoS 1) for the other towns while the samples are taken, so the figure is that of a
//! busy service; their stock never changes, so they raise no alerts of their own.
//!
//! ```text
//! cargo run --release -p alerts --example alert_latency -- --samples 200 --background 2000
//! ```
//! Prints one JSON line; `--per-sample` adds one line per sample. `scripts/bench alerts`
//! runs it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alerts::{Alerts, AlertsConfig, AlertsHandle, Channels, NotificationFilter, SmtpConfig};
use chrono::{DateTime, Utc};
use ingest::{BrokerUrl, IngestConfig};
use live::{IngestMetrics, TownChanges};
use reserve::Ledger;
use reserve::registry::{Registry, Source, load_registry};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, QoS};
use store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;

/// How often the mail dir is looked at: the figures' resolution.
const POLL: Duration = Duration::from_millis(1);
/// A sample whose mail has not arrived by then is counted lost.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Mosquitto's window of unacknowledged messages, as deploy/mosquitto.conf sets it.
const MAX_INFLIGHT: u32 = 1000;
/// Background readings flow this long before the first sample, so the samples see a
/// service in its steady state rather than the fleet's first readings.
const WARM_UP: Duration = Duration::from_secs(2);

/// Every town: 1000 people needing 3 L of water a day, 3000 L/day.
const POPULATION: u32 = 1000;
const DAILY_NEED_L: f64 = 3.0;
/// Above the 3.5-day warning line, so stocking raises nothing.
const STOCKED_DAYS: f64 = 5.0;
/// Below the 3-day target: `reserve_below_target`, critical.
const CROSSED_DAYS: f64 = 2.0;
/// The background fleet's towns, steady and well stocked.
const BACKGROUND_DAYS: f64 = 10.0;

struct Args {
    samples: usize,
    background_per_s: u64,
    towns: usize,
    per_sample: bool,
}

fn args() -> Args {
    let mut a = Args {
        samples: 200,
        background_per_s: 0,
        towns: 1000,
        per_sample: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag needs a value");
        match flag.as_str() {
            "--samples" => a.samples = value().parse().expect("--samples N"),
            "--background" => a.background_per_s = value().parse().expect("--background N"),
            "--towns" => a.towns = value().parse().expect("--towns N"),
            "--per-sample" => a.per_sample = true,
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(a.samples > 0, "--samples must be at least 1");
    assert!(
        a.samples < a.towns,
        "each sample needs a town of its own and the background fleet at least one: --towns must exceed --samples"
    );
    a
}

fn town_id(i: usize) -> String {
    format!("town-{i:05}")
}

fn warehouse_id(i: usize) -> String {
    format!("town-{i:05}-wh1")
}

fn officer_email(i: usize) -> String {
    format!("officer-{i:05}@example.org")
}

fn liters(days: f64) -> f64 {
    days * f64::from(POPULATION) * DAILY_NEED_L
}

/// The registry as an operator would write it: towns, then their warehouses, then one
/// officer per town.
fn registry_toml(towns: usize) -> String {
    let mut s = format!(
        "[target]\ndays = 3.0\nwarn_days = 3.5\n\n\
         [[category]]\nid = \"water\"\nname = \"饮用水\"\nunit = \"L\"\ndaily_need = {DAILY_NEED_L:.1}\n"
    );
    for i in 0..towns {
        let _ = write!(
            s,
            "\n[[town]]\nid = \"{}\"\nname = \"Town {i}\"\ndistrict = \"d{:02}\"\ncluster = \"c{:02}\"\npopulation = {POPULATION}\n",
            town_id(i),
            i % 16,
            i % 39
        );
    }
    for i in 0..towns {
        // An hour between reports: no sample town falls silent during a long run.
        let _ = write!(
            s,
            "\n[[facility]]\nid = \"{}\"\ntown = \"{}\"\nkind = \"warehouse\"\nreport_every = \"1h\"\n",
            warehouse_id(i),
            town_id(i)
        );
    }
    for i in 0..towns {
        let _ = write!(
            s,
            "\n[[contact]]\nname = \"Officer {i}\"\nemail = \"{}\"\nlang = \"zh\"\ntowns = [\"{}\"]\n",
            officer_email(i),
            town_id(i)
        );
    }
    s
}

fn registry(towns: usize) -> Arc<Registry> {
    let source = Source {
        name: "registry.toml".into(),
        text: registry_toml(towns),
    };
    Arc::new(
        load_registry(&source, &[], &mut |name| Err(format!("no file {name}")))
            .expect("generated registry loads"),
    )
}

fn topic(i: usize) -> String {
    format!("stockpile/v1/{}/{}/reading", town_id(i), warehouse_id(i))
}

fn stock_payload(ts_ms: i64, liters: f64) -> Vec<u8> {
    format!(r#"{{"ts":{ts_ms},"stock":{{"water":{liters}}}}}"#).into_bytes()
}

/// Ingest and alerting, running in this process.
struct Pipeline {
    runtime: tokio::runtime::Runtime,
    handle: AlertsHandle,
    metrics: Arc<IngestMetrics>,
    shutdown: CancellationToken,
    ingest: tokio::task::JoinHandle<Result<(), ingest::IngestError>>,
    alerting: tokio::task::JoinHandle<Result<(), alerts::AlertsError>>,
}

impl Pipeline {
    fn start(registry: &Arc<Registry>, broker_url: &str, smtp_url: &str, db: &Path) -> Pipeline {
        // As the `stockpile` binary builds it: one worker per core.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("stockpile")
            .build()
            .expect("runtime");
        let store = Store::open(db, StoreOptions::default()).expect("store opens");
        let ledger = Arc::new(RwLock::new(Ledger::new(Arc::clone(registry))));
        let changes = Arc::new(TownChanges::default());
        let metrics = Arc::new(IngestMetrics::default());
        let shutdown = CancellationToken::new();
        let channels = Channels::from_config(
            Some(&SmtpConfig::new(smtp_url, "Stockpile <alerts@example.org>")),
            None,
            &alerts::WebhookConfig::default(),
        )
        .expect("channels build");
        let config = AlertsConfig {
            group_wait: Duration::ZERO,
            pending_for: Duration::ZERO,
            ..AlertsConfig::default()
        };
        let service = Alerts::open(
            config,
            Arc::clone(registry),
            db,
            StoreOptions::default(),
            channels,
        )
        .expect("alerts open");
        let handle = service.handle();
        let alerting =
            runtime.spawn(service.run(Arc::clone(&ledger), changes.subscribe(), shutdown.clone()));
        let ingest = runtime.spawn(ingest::run(
            IngestConfig::new(
                BrokerUrl::parse(broker_url).expect("broker url"),
                "stockpile-alert-latency",
            ),
            ledger,
            store,
            Arc::clone(&metrics),
            changes,
            shutdown.clone(),
        ));
        wait_until("ingest subscribes", Duration::from_secs(15), || {
            metrics.connected()
        });
        Pipeline {
            runtime,
            handle,
            metrics,
            shutdown,
            ingest,
            alerting,
        }
    }

    fn accepted(&self) -> u64 {
        self.metrics.counts().accepted
    }

    /// When the evaluation step that queued the town's newest notification began.
    fn queued_at(&self, town: &str) -> Option<DateTime<Utc>> {
        let filter = NotificationFilter {
            town: Some(town.to_owned()),
            channel: Some("email".into()),
            limit: 1,
            ..NotificationFilter::default()
        };
        self.runtime
            .block_on(self.handle.list_notifications(&filter))
            .expect("notifications list")
            .first()
            .map(|n| n.created)
    }

    fn stop(self) {
        self.shutdown.cancel();
        self.runtime.block_on(async {
            self.alerting
                .await
                .expect("alerting joins")
                .expect("alerting ends cleanly");
            self.ingest
                .await
                .expect("ingest joins")
                .expect("ingest ends cleanly");
        });
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An MQTT connection driven on a thread of its own: the pipeline's runtime does not
/// poll it, as it would not poll a gateway on another machine.
fn gateway_connection(port: u16, client_id: &str) -> (AsyncClient, JoinHandle<()>) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_inflight(1000);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let driver = std::thread::Builder::new()
        .name(format!("{client_id}-mqtt"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("gateway runtime");
            runtime.block_on(async {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                        Ok(_) => {}
                        Err(e) => panic!("gateway connection: {e}"),
                    }
                }
            });
        })
        .expect("gateway thread");
    (client, driver)
}

/// Publishes with QoS 1 from a thread outside any runtime, waiting while the
/// connection's request queue is full.
fn publish(gateway: &AsyncClient, topic: String, payload: Vec<u8>) {
    while let Err(error) = gateway.try_publish(&topic, QoS::AtLeastOnce, false, payload.clone()) {
        assert!(
            matches!(error, rumqttc::ClientError::TryRequest(_)),
            "publish: {error}"
        );
        std::thread::sleep(POLL);
    }
}

/// Gateways of towns `first..towns` publishing `per_s` unchanged readings a second,
/// round robin, until `stop`; returns how many they published.
fn background_fleet(
    port: u16,
    first: usize,
    towns: usize,
    per_s: u64,
    stop: Arc<AtomicBool>,
) -> JoinHandle<u64> {
    std::thread::Builder::new()
        .name("background-fleet".into())
        .spawn(move || {
            let (client, driver) = gateway_connection(port, "bench-background-fleet");
            let topics: Vec<String> = (first..towns).map(topic).collect();
            let mut last_ts = vec![0i64; topics.len()];
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("fleet runtime");
            let sent = runtime.block_on(async {
                let start = Instant::now();
                let mut sent = 0u64;
                let mut pace = tokio::time::interval(Duration::from_millis(1));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                while !stop.load(Ordering::Relaxed) {
                    pace.tick().await;
                    let due = (start.elapsed().as_secs_f64() * per_s as f64) as u64;
                    while sent < due {
                        let k = (sent % topics.len() as u64) as usize;
                        // Two readings of one facility at one instant are a duplicate.
                        let ts = Utc::now().timestamp_millis().max(last_ts[k] + 1);
                        last_ts[k] = ts;
                        client
                            .publish(
                                topics[k].as_str(),
                                QoS::AtLeastOnce,
                                false,
                                stock_payload(ts, liters(BACKGROUND_DAYS)),
                            )
                            .await
                            .expect("fleet publish");
                        sent += 1;
                    }
                }
                let _ = client.disconnect().await;
                sent
            });
            driver.join().expect("fleet connection");
            sent
        })
        .expect("fleet thread")
}

/// testkit's SMTP recorder stores message n as `NNNNNN.eml` plus its envelope
/// `NNNNNN.json`, the envelope renamed into place last.
struct MailDir {
    dir: PathBuf,
    next: u64,
}

impl MailDir {
    fn envelope(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n:06}.json"))
    }

    /// The recipients of the next message, once it has arrived.
    fn take_next(&mut self) -> Option<Vec<String>> {
        let path = self.envelope(self.next);
        let text = std::fs::read_to_string(&path).ok()?;
        self.next += 1;
        let envelope: serde_json::Value = serde_json::from_str(&text).expect("envelope JSON");
        Some(
            envelope["rcpt_tos"]
                .as_array()
                .expect("rcpt_tos")
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect(),
        )
    }

    fn count(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .expect("mail dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count()
    }
}

struct Sample {
    total_ms: f64,
    /// Publish → the evaluation step that queued the mail began (±1 ms).
    to_evaluation_ms: Option<f64>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Nearest rank: the smallest value with at least `p` of the samples at or below it.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summary(prefix: &str, mut values: Vec<f64>) -> String {
    if values.is_empty() {
        return String::new();
    }
    values.sort_by(f64::total_cmp);
    format!(
        r#","{prefix}p50_ms":{:.1},"{prefix}p90_ms":{:.1},"{prefix}p99_ms":{:.1},"{prefix}max_ms":{:.1}"#,
        percentile(&values, 0.50),
        percentile(&values, 0.90),
        percentile(&values, 0.99),
        values[values.len() - 1]
    )
}

fn main() {
    let a = args();
    let loadavg_start = loadavg();
    let registry = registry(a.towns);
    let broker = testkit::Mosquitto::builder()
        .max_queued(0)
        .max_inflight(MAX_INFLIGHT)
        .start();
    let smtp = testkit::SmtpServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = Pipeline::start(
        &registry,
        &broker.url(),
        &smtp.url(),
        &dir.path().join("stockpile.db"),
    );
    let mut mail = MailDir {
        dir: smtp.dir().join("mail"),
        next: 1,
    };

    // Stock every sample town above the warning line.
    let (gateway, gateway_driver) = gateway_connection(broker.port(), "bench-sample-gateway");
    let stocked_at = Utc::now().timestamp_millis();
    for i in 0..a.samples {
        publish(
            &gateway,
            topic(i),
            stock_payload(stocked_at, liters(STOCKED_DAYS)),
        );
    }
    wait_until("sample towns stocked", Duration::from_secs(30), || {
        pipeline.accepted() >= a.samples as u64
    });

    let stop_fleet = Arc::new(AtomicBool::new(false));
    let fleet = (a.background_per_s > 0).then(|| {
        background_fleet(
            broker.port(),
            a.samples,
            a.towns,
            a.background_per_s,
            Arc::clone(&stop_fleet),
        )
    });
    std::thread::sleep(if fleet.is_some() {
        WARM_UP
    } else {
        Duration::from_millis(500)
    });
    assert_eq!(mail.count(), 0, "stocking a town must not raise an alert");

    let accepted_before = pipeline.accepted();
    let started = Instant::now();
    let mut samples = Vec::with_capacity(a.samples);
    let (mut lost, mut unexpected_mails) = (0usize, 0usize);
    for i in 0..a.samples {
        // Uneven gaps, so samples do not keep one phase against the evaluation tick.
        std::thread::sleep(Duration::from_millis(20 + (i as u64 * 37) % 100));
        let want = officer_email(i);
        let payload = stock_payload(Utc::now().timestamp_millis(), liters(CROSSED_DAYS));
        let published_utc = Utc::now();
        let published = Instant::now();
        publish(&gateway, topic(i), payload);
        let total = loop {
            match mail.take_next() {
                Some(to) if to == [want.as_str()] => break Some(published.elapsed()),
                Some(_) => unexpected_mails += 1,
                None if published.elapsed() > SAMPLE_TIMEOUT => break None,
                None => std::thread::sleep(POLL),
            }
        };
        let Some(total) = total else {
            lost += 1;
            continue;
        };
        let total_ms = total.as_secs_f64() * 1000.0;
        // The outbox keeps whole milliseconds: both ends are truncated alike.
        let to_evaluation_ms = pipeline
            .queued_at(&town_id(i))
            .map(|created| (created.timestamp_millis() - published_utc.timestamp_millis()) as f64);
        if a.per_sample {
            println!(
                r#"{{"sample":{i},"total_ms":{total_ms:.1},"to_evaluation_ms":{}}}"#,
                to_evaluation_ms.map_or("null".into(), |v| format!("{v:.1}"))
            );
        }
        samples.push(Sample {
            total_ms,
            to_evaluation_ms,
        });
    }
    let sampling = started.elapsed();
    let accepted_during = pipeline.accepted() - accepted_before;

    stop_fleet.store(true, Ordering::Relaxed);
    let published_background = fleet.map_or(0, |f| f.join().expect("fleet"));
    // Anything late or extra would show here.
    std::thread::sleep(Duration::from_millis(500));
    unexpected_mails += mail.count() - (mail.next as usize - 1);
    let _ = gateway.try_disconnect();
    gateway_driver.join().expect("gateway connection");
    pipeline.stop();

    let background_accepted_per_s =
        accepted_during.saturating_sub(samples.len() as u64) as f64 / sampling.as_secs_f64();
    let totals: Vec<f64> = samples.iter().map(|s| s.total_ms).collect();
    let to_evaluation: Vec<f64> = samples.iter().filter_map(|s| s.to_evaluation_ms).collect();
    let evaluation_to_smtp: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.to_evaluation_ms.map(|e| s.total_ms - e))
        .collect();
    println!(
        r#"{{"samples":{}{},"lost":{lost},"unexpected_mails":{unexpected_mails},"background_readings_per_s":{},"background_accepted_per_s":{background_accepted_per_s:.0},"background_published":{published_background},"towns":{},"poll_ms":{}{}{},"mosquitto_max_inflight":{MAX_INFLIGHT},"loadavg_start":"{loadavg_start}","loadavg_end":"{}"}}"#,
        samples.len(),
        summary("", totals),
        a.background_per_s,
        a.towns,
        POLL.as_millis(),
        summary("to_evaluation_", to_evaluation),
        summary("evaluation_to_smtp_", evaluation_to_smtp),
        loadavg()
    );
}
