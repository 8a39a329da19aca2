//! InfluxDB sink benchmark (issue #5): points/s written to a local InfluxDB 1.6 (v1
//! `/write`, gzip, batches of 5,000) at steady ingest, and the replay rate after an
//! outage.
//!
//! The ingest side is the real one minus MQTT: a thread stores warehouse readings (two
//! categories each, so two `stock` points) through [`Store`] batches with the InfluxDB
//! queue on, as the ingest writer does, on the demo registry. The sink runs as in the
//! service, on its own SQLite connection.
//!
//! - steady: readings at `--rate` per second (0 = as fast as the store takes them) for
//!   `--seconds`; reports points/s enqueued and written, the largest lag seen, and how
//!   long the queue takes to empty after the load stops.
//! - replay: InfluxDB is stopped, `--replay-points` points are stored meanwhile, then
//!   InfluxDB starts again; reports points/s from the first write after the restart
//!   until the queue is empty (the sink's backoff wait before it notices is excluded
//!   and printed separately).
//!
//! ```text
//! cargo run --release -p store --example influx_bench -- --rate 10000 --seconds 10 --replay-points 500000
//! ```
//! Prints one JSON line per phase and a summary line.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use reserve::Ledger;
use reserve::reading::{Observation, Reading};
use reserve::registry::{FacilityIdx, FacilityKindName, Registry, Source, load_registry};
use store::influx::{InfluxApi, InfluxEndpoint, InfluxSinkConfig, NoChanges, OpsCounts, Sink};
use store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Readings stored per SQLite batch, as the ingest writer commits them under load.
const READINGS_PER_BATCH: u64 = 200;

struct Args {
    rate: u64,
    seconds: u64,
    replay_points: u64,
}

fn args() -> Args {
    let mut a = Args {
        rate: 10_000,
        seconds: 10,
        replay_points: 500_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--rate" => a.rate = value(),
            "--seconds" => a.seconds = value(),
            "--replay-points" => a.replay_points = value(),
            other => panic!("unknown flag {other} (--rate N, --seconds N, --replay-points N)"),
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

/// Stores warehouse readings: round robin over the warehouses, each with its own
/// millisecond, two categories each.
struct Producer {
    registry: Arc<Registry>,
    warehouses: Vec<FacilityIdx>,
    store: Store,
    next: u64,
}

impl Producer {
    fn new(registry: &Arc<Registry>, path: &Path) -> Producer {
        let warehouses = registry
            .facilities
            .iter()
            .enumerate()
            .filter(|(_, f)| f.kind.name() == FacilityKindName::Warehouse)
            .map(|(i, _)| FacilityIdx::from_index(i))
            .collect();
        let store = Store::open(
            path,
            StoreOptions {
                influx_queue: true,
                ..StoreOptions::default()
            },
        )
        .expect("open the store");
        Producer {
            registry: Arc::clone(registry),
            warehouses,
            store,
            next: 0,
        }
    }

    /// Stores `n` readings in one batch; returns the points enqueued.
    fn batch(&mut self, n: u64) -> u64 {
        let water = self.registry.category_idx("water").expect("demo has water");
        let food = self.registry.category_idx("food").expect("demo has food");
        let start = Utc::now() - chrono::Duration::hours(1);
        let now = Utc::now();
        let mut batch = self.store.batch().expect("start a batch");
        for _ in 0..n {
            let i = self.next;
            self.next += 1;
            let reading = Reading {
                facility: self.warehouses[i as usize % self.warehouses.len()],
                ts: start + chrono::Duration::milliseconds(i as i64),
                seq: Some(i),
                observation: Observation::Stock(vec![
                    (water, (100_000 - i % 50_000) as f64),
                    (food, (80_000 - i % 40_000) as f64 + 0.5),
                ]),
            };
            batch
                .insert_reading(&self.registry, &reading, now)
                .expect("insert a reading");
        }
        batch.commit().expect("commit");
        2 * n
    }
}

struct RunningSink {
    sink: Sink,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

fn start_sink(url: &str, path: &Path, registry: &Arc<Registry>) -> RunningSink {
    let endpoint = InfluxEndpoint::new(
        url,
        InfluxApi::V1 {
            database: "stockpile".into(),
            username: None,
            password: None,
        },
    );
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let sink = Sink::start(
        InfluxSinkConfig::new(endpoint, "bench"),
        path,
        Arc::new(RwLock::new(Ledger::new(Arc::clone(registry)))),
        NoChanges,
        OpsCounts::default,
        &tracker,
        shutdown.clone(),
    )
    .expect("start the sink");
    tracker.close();
    RunningSink {
        sink,
        shutdown,
        tracker,
    }
}

/// Waits until the queue is empty; returns when the sink's written count last grew.
async fn drained(sink: &Sink, store: &Store, give_up: Duration) -> Instant {
    let deadline = Instant::now() + give_up;
    let mut last_written = sink.stats().written_lines;
    let mut last_growth = Instant::now();
    loop {
        let written = sink.stats().written_lines;
        if written != last_written {
            last_written = written;
            last_growth = Instant::now();
        }
        if store.influx_queue_depth().expect("queue depth") == 0 {
            return last_growth;
        }
        assert!(
            Instant::now() < deadline,
            "queue not drained: {:?}",
            sink.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let registry = demo_registry();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.db");
    let mut influx = testkit::Influx1::start();
    influx.create_database("stockpile");
    let observer = Store::open(&path, StoreOptions::default()).expect("open the store");
    let sink = start_sink(&influx.url(), &path, &registry);

    // Steady ingest.
    let stop = Arc::new(AtomicBool::new(false));
    let enqueued = Arc::new(AtomicU64::new(0));
    let producer = {
        let (registry, path, stop, enqueued) = (
            Arc::clone(&registry),
            path.clone(),
            Arc::clone(&stop),
            Arc::clone(&enqueued),
        );
        let rate = args.rate;
        std::thread::spawn(move || {
            let mut producer = Producer::new(&registry, &path);
            let started = Instant::now();
            let mut readings = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if rate > 0 {
                    let due = started + Duration::from_secs_f64(readings as f64 / rate as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                enqueued.fetch_add(producer.batch(READINGS_PER_BATCH), Ordering::Relaxed);
                readings += READINGS_PER_BATCH;
            }
            producer
        })
    };
    // Measure after a second of warm-up, for `seconds`.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (e0, w0, t0) = (
        enqueued.load(Ordering::Relaxed),
        sink.sink.stats().written_lines,
        Instant::now(),
    );
    let mut max_lag_s: f64 = 0.0;
    while t0.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        max_lag_s = max_lag_s.max(sink.sink.stats().lag_s);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (e1, w1) = (
        enqueued.load(Ordering::Relaxed),
        sink.sink.stats().written_lines,
    );
    stop.store(true, Ordering::Relaxed);
    let mut producer = producer.join().expect("producer");
    let queue_at_stop = observer.influx_queue_depth().expect("queue depth");
    let stopped = Instant::now();
    drained(&sink.sink, &observer, Duration::from_secs(600)).await;
    let steady_enqueued = (e1 - e0) as f64 / elapsed;
    let steady_written = (w1 - w0) as f64 / elapsed;
    println!(
        "{{\"phase\":\"steady\",\"target_readings_per_s\":{},\"enqueued_points_per_s\":{steady_enqueued:.0},\"written_points_per_s\":{steady_written:.0},\"max_lag_s\":{max_lag_s:.2},\"queue_at_stop\":{queue_at_stop},\"drain_after_stop_s\":{:.2}}}",
        args.rate,
        stopped.elapsed().as_secs_f64()
    );

    // Outage: InfluxDB down while the backlog builds, then back.
    let influx = tokio::task::spawn_blocking(move || {
        influx.stop();
        influx
    })
    .await
    .expect("stop InfluxDB");
    let mut influx = influx;
    let mut stored = 0;
    while stored < args.replay_points {
        stored += producer.batch(READINGS_PER_BATCH.min((args.replay_points - stored).div_ceil(2)));
    }
    let backlog = observer.influx_queue_depth().expect("queue depth");
    let written_before = sink.sink.stats().written_lines;
    let influx = tokio::task::spawn_blocking(move || {
        influx.start_again();
        influx
    })
    .await
    .expect("start InfluxDB again");
    let restarted = Instant::now();
    // The sink notices at its next retry (backoff up to 30 s): start the clock at its
    // first successful write.
    while sink.sink.stats().written_lines == written_before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first_write = Instant::now();
    let last_write = drained(&sink.sink, &observer, Duration::from_secs(600)).await;
    let replay_s = last_write
        .duration_since(first_write)
        .as_secs_f64()
        .max(0.001);
    let replayed = sink.sink.stats().written_lines - written_before;
    let replay_rate = replayed as f64 / replay_s;
    println!(
        "{{\"phase\":\"replay\",\"backlog_points\":{backlog},\"replayed_points\":{replayed},\"replay_s\":{replay_s:.2},\"replay_points_per_s\":{replay_rate:.0},\"retry_wait_s\":{:.2},\"write_errors\":{}}}",
        first_write.duration_since(restarted).as_secs_f64(),
        sink.sink.stats().write_errors
    );
    println!(
        "summary: steady {steady_written:.0} points/s written (target {} readings/s = {} points/s, lag ≤ {max_lag_s:.1} s); replay after outage {replay_rate:.0} points/s ({backlog} points)",
        args.rate,
        2 * args.rate
    );

    sink.shutdown.cancel();
    sink.tracker.wait().await;
    drop(influx);
}
