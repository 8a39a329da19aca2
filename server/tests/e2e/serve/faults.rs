//! Store faults made for real against the running binary: another process holding the
//! SQLite write lock, and the store's disk full (a small tmpfs). Ingest pauses, nothing
//! is acknowledged that is not committed, the API keeps answering from the ledger,
//! `/readyz` says why, and everything the broker held is stored exactly once when the
//! cause goes away.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{publish_paced, wait_until};
use crate::common::{Deployment, Service};
use store::{Store, StoreOptions};
use testkit::SmallDisk;

/// The readiness answer, parsed.
fn readyz(api: &str) -> (u16, serde_json::Value) {
    let response = testkit::http::get(&format!("{api}/readyz"), &[]);
    (response.status, response.json())
}

fn store_check_detail(readiness: &serde_json::Value) -> String {
    readiness["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == "store"))
        .map(|c| c["detail"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

fn count_log_lines(service: &Service, needle: &str) -> usize {
    service
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

fn stored_in(db: &Path) -> u64 {
    Store::open(db, StoreOptions::default())
        .and_then(|s| s.count_readings())
        .unwrap_or(0)
}

/// Asserts the overview answers promptly: it reads the in-memory ledger, and the writer
/// never holds the ledger's lock across SQLite I/O.
fn overview_answers_promptly(api: &str) {
    for _ in 0..5 {
        let began = Instant::now();
        let overview = testkit::http::get(&format!("{api}/api/v1/overview"), &[]);
        let took = began.elapsed();
        assert_eq!(overview.status, 200, "{}", overview.body);
        // The lock is held for seconds (the store waits 5 s on a busy lock before each
        // failure); an API that waited on it would take that long.
        assert!(
            took < Duration::from_secs(1),
            "GET /api/v1/overview took {took:?} while the store was locked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_locked_by_another_process_pauses_ingest_and_loses_nothing() {
    let broker = testkit::Mosquitto::builder()
        .persistence(true)
        .max_queued(0)
        .start();
    let deployment = Deployment::new(&broker.url());
    let service = tokio::task::block_in_place(|| Service::start(&deployment.config()));
    let api = tokio::task::block_in_place(|| service.api_url());
    let db = deployment.db();

    // What a backup, a `sqlite3` shell or a migration tool does: a write transaction
    // held by another connection, for longer than the service's busy timeout.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let locker = {
        let db = db.clone();
        std::thread::spawn(move || {
            let mut store = Store::open(&db, StoreOptions::default()).unwrap();
            let batch = store.batch().unwrap();
            held_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(120));
            drop(batch);
        })
    };
    held_rx.recv().unwrap();

    const TOTAL: u64 = 300;
    let publisher = tokio::spawn(publish_paced(broker.url(), TOTAL, 300));
    tokio::task::block_in_place(|| {
        wait_until(
            "/readyz to report ingest paused on the store",
            Duration::from_secs(60),
            || {
                let (status, body) = readyz(&api);
                status == 503 && store_check_detail(&body).contains("ingest is paused")
            },
        );
        overview_answers_promptly(&api);
        let metrics = testkit::http::get(&format!("{api}/metrics"), &[]);
        assert!(
            metrics.body.contains("\nstockpile_store_paused 1\n"),
            "/metrics does not show the pause:\n{}",
            metrics.body
        );
    });
    assert_eq!(stored_in(&db), 0, "nothing commits while locked");

    release_tx.send(()).unwrap();
    locker.join().unwrap();
    assert_eq!(
        publisher.await.unwrap(),
        TOTAL,
        "the broker took every reading"
    );
    tokio::task::block_in_place(|| {
        wait_until(
            "every reading stored once the lock is gone",
            Duration::from_secs(60),
            || stored_in(&db) >= TOTAL,
        );
        wait_until("/readyz ready again", Duration::from_secs(30), || {
            readyz(&api).0 == 200
        });
    });
    assert_eq!(stored_in(&db), TOTAL, "exactly once each");
    assert_eq!(
        count_log_lines(&service, "Store unavailable; ingest paused"),
        1,
        "the pause is logged once, not per retry:\n{}",
        service.output()
    );
    assert!(
        count_log_lines(&service, "Store available again; ingest resumed") >= 1,
        "{}",
        service.output()
    );
    // The process never stopped: the API still answers and shows the readings.
    let town = testkit::http::get(&format!("{api}/api/v1/towns/jingshan"), &[]).json();
    assert_ne!(town["status"], "unknown", "{town}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_ingest_and_everything_is_stored_once_space_is_freed() {
    let broker = testkit::Mosquitto::builder()
        .persistence(true)
        .max_queued(0)
        .start();
    let deployment = Deployment::new(&broker.url());
    let disk = SmallDisk::mount(&deployment.dir.path().join("data"), "64m");
    let config = std::fs::read_to_string(deployment.config()).unwrap();
    let config = config.replace("path = \"stockpile.db\"", "path = \"data/stockpile.db\"");
    assert!(config.contains("data/stockpile.db"));
    std::fs::write(deployment.config(), config).unwrap();
    let db = disk.dir().join("stockpile.db");

    let service = tokio::task::block_in_place(|| Service::start(&deployment.config()));
    let api = tokio::task::block_in_place(|| service.api_url());

    // Some readings before the disk fills, so the WAL and the tables have pages.
    const BEFORE: u64 = 200;
    assert_eq!(publish_paced(broker.url(), BEFORE, 1000).await, BEFORE);
    tokio::task::block_in_place(|| {
        wait_until("the first readings stored", Duration::from_secs(30), || {
            stored_in(&db) >= BEFORE
        })
    });

    let filler = disk.fill();
    const DURING: u64 = 2_000;
    let publisher = tokio::spawn(publish_paced(broker.url(), DURING, 1000));
    tokio::task::block_in_place(|| {
        wait_until(
            "/readyz to report ingest paused on the full disk",
            Duration::from_secs(60),
            || {
                let (status, body) = readyz(&api);
                status == 503 && store_check_detail(&body).contains("ingest is paused")
            },
        );
        overview_answers_promptly(&api);
    });
    let paused_at = stored_in(&db);
    assert!(
        paused_at < BEFORE + DURING,
        "the disk was full, yet all {paused_at} readings were stored"
    );

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        publisher.await.unwrap(),
        DURING,
        "the broker took every reading"
    );
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while stored_in(&db) < BEFORE + DURING {
            assert!(
                Instant::now() < deadline,
                "{} of {} readings stored a minute after space was freed; disk: {}; service log:\n{}",
                stored_in(&db),
                BEFORE + DURING,
                String::from_utf8_lossy(
                    &Command::new("ls")
                        .arg("-la")
                        .arg(disk.dir())
                        .output()
                        .unwrap()
                        .stdout
                ),
                service.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        wait_until("/readyz ready again", Duration::from_secs(30), || {
            readyz(&api).0 == 200
        });
    });
    assert_eq!(stored_in(&db), BEFORE + DURING, "exactly once each");
    assert!(
        count_log_lines(&service, "Store unavailable; ingest paused") >= 1,
        "{}",
        service.output()
    );
    // Stop the service before the disk goes away.
    drop(service);
}
