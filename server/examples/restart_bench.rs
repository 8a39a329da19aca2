//! Start-up at scale (docs/design.md#performance-targets: ready in ≤ 2 s after a clean
//! stop and ≤ 5 s after `kill -9`, with 100,000 facilities and 10 M stored readings).
//!
//! Builds a synthetic deployment in a temp dir: a registry of `--facilities` warehouses
//! (40 per town, CSV tables as real registries are), a SQLite store holding
//! `--readings` readings spread over the last 80 days plus every facility's snapshot, as
//! a long-running service leaves it. Then runs the release binary against a real
//! Mosquitto and times `stockpile serve` from spawn to `/readyz` answering 200:
//! - after a clean stop (SIGTERM), `--rounds` times;
//! - after `kill -9` in the middle of a burst of QoS 1 readings, `--rounds` times.
//!
//! ```text
//! cargo build --release -p server --bin stockpile --example restart_bench
//! target/release/examples/restart_bench --bin target/release/stockpile
//! ```
//! (`scripts/bench restart` does both.) Prints one line per start and a JSON summary.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use reserve::registry::{FacilityIdx, Source, load_registry};
use reserve::{Ledger, Observation, Reading};
use store::{Store, StoreOptions};

#[path = "support/serve.rs"]
mod serve;

struct Args {
    bin: PathBuf,
    facilities: u64,
    readings: u64,
    rounds: u32,
}

fn args() -> Args {
    let mut args = Args {
        bin: PathBuf::from("target/release/stockpile"),
        facilities: 100_000,
        readings: 10_000_000,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => args.bin = PathBuf::from(value),
            "--facilities" => args.facilities = value.parse().expect("--facilities N"),
            "--readings" => args.readings = value.parse().expect("--readings N"),
            "--rounds" => args.rounds = value.parse().expect("--rounds N"),
            other => panic!("unknown flag {other} (--bin, --facilities, --readings, --rounds)"),
        }
    }
    assert!(
        args.bin.is_file(),
        "no stockpile binary at {} (cargo build --release -p server, or --bin PATH)",
        args.bin.display()
    );
    args
}

const FACILITIES_PER_TOWN: u64 = 40;

/// Writes registry.toml, towns.csv and facilities.csv into `dir`.
fn write_registry(dir: &Path, facilities: u64) {
    let towns = facilities.div_ceil(FACILITIES_PER_TOWN);
    let mut toml = String::from(
        "[target]\ndays = 3.0\nwarn_days = 3.5\n\n[csv]\ntowns = \"towns.csv\"\nfacilities = \"facilities.csv\"\n\n\
         [[category]]\nid = \"water\"\nname = \"Drinking water\"\nunit = \"L\"\ndaily_need = 3.0\n\n\
         [[category]]\nid = \"food\"\nname = \"Food\"\nunit = \"meal\"\ndaily_need = 3.0\n",
    );
    for d in 0..16 {
        toml.push_str(&format!(
            "\n[[district]]\nid = \"d{d}\"\nname = \"District {d}\"\n"
        ));
    }
    for c in 1..=39 {
        toml.push_str(&format!(
            "\n[[cluster]]\nid = \"c{c:02}\"\nname = \"Cluster {c}\"\n"
        ));
    }
    let mut towns_csv = String::from("id,name,district,cluster,population,lat,lon,groups\n");
    for t in 0..towns {
        towns_csv.push_str(&format!(
            "t{t},Town {t},d{},c{:02},30000,39.9,116.4,\n",
            t % 16,
            t % 39 + 1
        ));
    }
    let mut facilities_csv = String::from("id,town,kind,name,lat,lon,report_every\n");
    for f in 0..facilities {
        facilities_csv.push_str(&format!(
            "f{f},t{},warehouse,Warehouse {f},39.9,116.4,60s\n",
            f / FACILITIES_PER_TOWN
        ));
    }
    std::fs::write(dir.join("registry.toml"), toml).unwrap();
    std::fs::write(dir.join("towns.csv"), towns_csv).unwrap();
    std::fs::write(dir.join("facilities.csv"), facilities_csv).unwrap();
}

fn load(dir: &Path) -> reserve::registry::Registry {
    let main = Source {
        name: "registry.toml".into(),
        text: std::fs::read_to_string(dir.join("registry.toml")).unwrap(),
    };
    load_registry(&main, &[], &mut |name| {
        std::fs::read_to_string(dir.join(name))
            .map(|text| Source {
                name: name.to_owned(),
                text,
            })
            .map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| panic!("synthetic registry: {e}"))
}

/// Fills the store as a long-running service leaves it: readings over 80 days, every
/// facility's snapshot saved, nothing to replay.
fn fill_store(db: &Path, registry: Arc<reserve::registry::Registry>, readings: u64) {
    let began = Instant::now();
    let mut store = Store::open(db, StoreOptions::default()).unwrap();
    let facilities = registry.facilities.len() as u64;
    let per_facility = readings.div_ceil(facilities);
    let span = TimeDelta::days(80);
    let step = span / i32::try_from(per_facility.max(1)).unwrap();
    let start = Utc::now() - span;
    let water = registry.category_idx("water").unwrap();
    let food = registry.category_idx("food").unwrap();
    let mut ledger = Ledger::new(Arc::clone(&registry));
    let mut written = 0u64;
    // Time-major, as gateways would have sent them; 20,000 readings a transaction.
    'outer: for i in 0..per_facility {
        let ts = start + step * i32::try_from(i).unwrap();
        let mut tx = store.batch().unwrap();
        for f in (0..registry.facilities.len()).map(FacilityIdx::from_index) {
            let reading = Reading {
                facility: f,
                ts,
                seq: Some(i),
                observation: Observation::Stock(vec![
                    (water, 200_000.0 - i as f64),
                    (food, 150_000.0 - i as f64),
                ]),
            };
            tx.insert_reading(&registry, &reading, ts).unwrap();
            if i + 1 == per_facility {
                ledger.apply(&reading, ts);
            }
            written += 1;
            if written >= readings {
                tx.commit().unwrap();
                break 'outer;
            }
            if written.is_multiple_of(20_000) {
                tx.commit().unwrap();
                tx = store.batch().unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let mut tx = store.batch().unwrap();
    for f in (0..registry.facilities.len()).map(FacilityIdx::from_index) {
        tx.save_snapshot(&ledger.snapshot(f)).unwrap();
    }
    tx.mark_snapshots_saved().unwrap();
    tx.commit().unwrap();
    let _ = store.checkpoint(store::CheckpointMode::Truncate);
    eprintln!(
        "store filled: {written} readings, {facilities} snapshots in {:.0} s ({} MiB)",
        began.elapsed().as_secs_f64(),
        std::fs::metadata(db).map_or(0, |m| m.len()) / (1024 * 1024)
    );
}

/// The running service and the API address it logged.
struct Running {
    child: Child,
    api: String,
}

/// Seconds from spawn until `/readyz` answers 200.
fn time_to_ready(bin: &Path, config: &Path) -> (Running, f64) {
    let began = Instant::now();
    let (child, api) = serve::spawn(bin, config);
    let running = Running { child, api };
    let url = format!("{}/readyz", running.api);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = testkit::http::try_get(&url, &[])
            && r.status == 200
        {
            return (running, began.elapsed().as_secs_f64());
        }
        assert!(Instant::now() < deadline, "not ready within 2 minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stop(mut running: Running, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(running.child.id()).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
    running.child.wait().unwrap();
}

/// Publishes `n` QoS 1 readings as fast as the broker takes them, on a thread; the
/// kill comes in the middle.
fn burst(port: u16, facilities: u64, n: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            use rumqttc::{AsyncClient, MqttOptions, QoS};
            let mut options = MqttOptions::new("restart-bench-burst", "127.0.0.1", port);
            options.set_inflight(500);
            let (client, mut eventloop) = AsyncClient::new(options, 1000);
            let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
            let now = Utc::now();
            for i in 0..n {
                let f = i % facilities;
                let ts = now + TimeDelta::milliseconds(i64::try_from(i).unwrap() % 60_000);
                let payload = format!(
                    r#"{{"ts": {}, "stock": {{"water": {}}}}}"#,
                    ts.timestamp_millis(),
                    100_000 + i % 1000
                );
                let topic = format!("stockpile/v1/t{}/f{f}/reading", f / FACILITIES_PER_TOWN);
                if client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            poller.abort();
        });
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = args();
    let dir = tempfile::tempdir().unwrap();
    write_registry(dir.path(), args.facilities);
    let registry = Arc::new(load(dir.path()));
    let db = dir.path().join("stockpile.db");
    fill_store(&db, Arc::clone(&registry), args.readings);

    let broker = testkit::Mosquitto::builder()
        .persistence(true)
        .max_queued(0)
        .max_inflight(1000)
        .start();
    let config = dir.path().join("stockpile.toml");
    std::fs::write(
        &config,
        format!(
            "registry = \"registry.toml\"\n[mqtt]\nurl = \"{}\"\nclient_id = \"restart-bench\"\n\
             [store]\npath = \"stockpile.db\"\n[api]\nlisten = \"127.0.0.1:0\"\npublic_read = true\n",
            broker.url()
        ),
    )
    .unwrap();

    // The first start creates the broker session; not timed.
    let (running, first) = time_to_ready(&args.bin, &config);
    eprintln!("first start (new broker session): {first:.2} s");
    stop(running, nix::sys::signal::Signal::SIGTERM);

    let mut clean = Vec::new();
    for round in 1..=args.rounds {
        let (running, s) = time_to_ready(&args.bin, &config);
        eprintln!("clean stop → ready, round {round}: {s:.2} s");
        clean.push(s);
        stop(running, nix::sys::signal::Signal::SIGTERM);
    }
    let mut killed = Vec::new();
    for round in 1..=args.rounds {
        let (running, _) = time_to_ready(&args.bin, &config);
        let publisher = burst(broker.port(), args.facilities, 50_000);
        // Let part of the burst be committed and applied, then kill mid-stream.
        std::thread::sleep(Duration::from_millis(1500));
        stop(running, nix::sys::signal::Signal::SIGKILL);
        let _ = publisher.join();
        let (running, s) = time_to_ready(&args.bin, &config);
        eprintln!("kill -9 mid-burst → ready, round {round}: {s:.2} s");
        killed.push(s);
        stop(running, nix::sys::signal::Signal::SIGTERM);
    }
    let readings = Store::open(&db, StoreOptions::default())
        .and_then(|s| s.count_readings())
        .unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "facilities": registry.facilities.len(),
            "towns": registry.towns.len(),
            "stored_readings": readings,
            "db_mib": std::fs::metadata(&db).map_or(0, |m| m.len()) / (1024 * 1024),
            "ready_after_clean_stop_s": clean,
            "ready_after_kill9_s": killed,
            "median_clean_s": median(clean.clone()),
            "median_kill9_s": median(killed.clone()),
        })
    );
}
