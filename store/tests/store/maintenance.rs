//! Store maintenance against real SQLite files in temporary directories: retention of
//! every table, a backlog pruned in one pass, the WAL after a long reader, and pruning
//! beside a writer on another connection, as the ingest writer and the maintenance
//! thread share the file in `serve`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use reserve::reading::{Observation, Reading};
use reserve::registry::{
    Category, Cluster, ClusterIdx, District, DistrictIdx, Facility, FacilityIdx, FacilityKind,
    Group, Registry, RegistryParts, Target, Town, TownIdx,
};
use reserve::{CategoryId, ClusterId, DistrictId, FacilityId, TownId};
use store::maintenance::DEFAULT_CHUNK;
use store::{
    AlertQuery, AlertRow, AlertState, Maintenance, MaintenanceConfig, NewNotification,
    NotificationQuery, RejectRecord, SilenceRow, Store, StoreOptions,
};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const DAY: Duration = Duration::from_secs(86_400);
const WH: FacilityIdx = FacilityIdx(0);

fn registry() -> Arc<Registry> {
    Arc::new(Registry::build(RegistryParts {
        target: Target::default(),
        target_overrides: vec![],
        categories: vec![Category {
            id: CategoryId::parse("water").unwrap(),
            name: "water".into(),
            names: Default::default(),
            unit: "L".into(),
            daily_need: 3.0,
            group: Group::All,
        }],
        water_category: None,
        districts: vec![District {
            id: DistrictId::parse("dongcheng").unwrap(),
            name: "东城区".into(),
        }],
        clusters: vec![Cluster {
            id: ClusterId::parse("c01").unwrap(),
            name: "c01".into(),
        }],
        towns: vec![Town {
            id: TownId::parse("jingshan").unwrap(),
            name: "景山街道".into(),
            district: DistrictIdx(0),
            cluster: ClusterIdx(0),
            population: 30_000,
            groups: BTreeMap::new(),
            lat: None,
            lon: None,
            facilities: vec![],
        }],
        facilities: vec![Facility {
            id: FacilityId::parse("js-wh1").unwrap(),
            town: TownIdx(0),
            name: "js-wh1".into(),
            kind: FacilityKind::Warehouse,
            lat: None,
            lon: None,
            report_every: Duration::from_secs(60),
            stale_after: Duration::ZERO,
            report: Default::default(),
        }],
        contacts: vec![],
    }))
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 5, 0, 0).unwrap()
}

fn ago(d: Duration) -> DateTime<Utc> {
    now() - chrono::Duration::from_std(d).unwrap()
}

struct Fixture {
    _dir: TempDir,
    path: PathBuf,
    registry: Arc<Registry>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stockpile.db");
        Fixture {
            _dir: dir,
            path,
            registry: registry(),
        }
    }

    fn store(&self) -> Store {
        Store::open(&self.path, StoreOptions::default()).unwrap()
    }

    fn maintenance(&self, config: MaintenanceConfig) -> Maintenance {
        Maintenance::open(&self.path, StoreOptions::default(), config).unwrap()
    }

    /// Stores one reading per second from `from`, `n` of them, in batches of 5,000.
    fn readings(&self, store: &mut Store, from: DateTime<Utc>, n: i64) {
        for start in (0..n).step_by(5_000) {
            let mut batch = store.batch().unwrap();
            for i in start..(start + 5_000).min(n) {
                let ts = from + chrono::Duration::seconds(i);
                let reading = Reading {
                    facility: WH,
                    ts,
                    seq: None,
                    observation: Observation::Stock(vec![]),
                };
                assert!(batch.insert_reading(&self.registry, &reading, ts).unwrap());
            }
            batch.commit().unwrap();
        }
    }
}

fn alert(key: &str, state: AlertState, resolved_at: Option<DateTime<Utc>>) -> AlertRow {
    let at = ago(200 * DAY);
    AlertRow {
        id: 0,
        key: key.into(),
        town: "jingshan".into(),
        rule: "reserve_below_target".into(),
        subject: "water".into(),
        severity: "critical".into(),
        state,
        detail: serde_json::json!({"kind": "reserve", "days": 2.5}),
        since: at,
        created: at,
        fired_at: Some(at),
        resolved_at,
        ack: None,
        escalation: 0,
        remind_at: None,
        escalate_at: None,
        notified_at: Some(at),
        notify_event: None,
        escalated_from: None,
        notify_seq: 1,
        updated: resolved_at.unwrap_or(at),
        drill: None,
        late: false,
    }
}

fn notification(key: &str, alert_ids: Vec<i64>, created: DateTime<Utc>) -> NewNotification {
    NewNotification {
        dedup_key: key.into(),
        town: "jingshan".into(),
        alert_ids,
        event: "fired".into(),
        contact: "Li Wei".into(),
        channel: "email".into(),
        recipient: "li.wei@example.org".into(),
        subject: "[Stockpile] jingshan".into(),
        body: "body".into(),
        html: None,
        created,
    }
}

fn silence(comment: &str, until: DateTime<Utc>) -> SilenceRow {
    SilenceRow {
        id: 0,
        town: Some("jingshan".into()),
        facility: None,
        rule: None,
        until,
        created_by: "ops".into(),
        comment: comment.into(),
        created: until - chrono::Duration::hours(2),
    }
}

fn readings_ts(store: &Store) -> Vec<DateTime<Utc>> {
    let from = DateTime::from_timestamp_millis(0).unwrap();
    let to = Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap();
    store
        .readings(&FacilityId::parse("js-wh1").unwrap(), from, to, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.ts)
        .collect()
}

fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_pass_prunes_a_backlog_of_many_chunks() {
    let fx = Fixture::new();
    let mut store = fx.store();
    // Two and a half chunks of readings beyond a day's retention, then an hour inside it.
    let old = (DEFAULT_CHUNK * 5 / 2) as i64;
    fx.readings(&mut store, ago(3 * DAY), old);
    fx.readings(&mut store, ago(Duration::from_secs(3600)), 3600);

    let mut maintenance = fx.maintenance(MaintenanceConfig {
        retention: DAY,
        ..MaintenanceConfig::default()
    });
    let outcome = maintenance
        .run_pass(now(), &CancellationToken::new())
        .unwrap();

    assert_eq!(outcome.readings_deleted, old as u64);
    assert!(!outcome.cancelled);
    assert_eq!(
        store.count_readings().unwrap(),
        3600,
        "the last hour is kept"
    );
    let counts = maintenance.stats().counts();
    assert_eq!(
        (counts.passes, counts.readings_deleted, counts.failing),
        (1, old as u64, false)
    );
    assert!(counts.last_pass_at.is_some());
    // The next pass finds nothing.
    let again = maintenance
        .run_pass(now(), &CancellationToken::new())
        .unwrap();
    assert_eq!(again.readings_deleted, 0);
}

#[test]
fn readings_exactly_as_old_as_the_retention_are_kept() {
    let fx = Fixture::new();
    let mut store = fx.store();
    for hours in [72, 25, 24, 23, 1, 0] {
        fx.readings(&mut store, ago(Duration::from_secs(hours * 3600)), 1);
    }
    let mut maintenance = fx.maintenance(MaintenanceConfig {
        retention: DAY,
        ..MaintenanceConfig::default()
    });
    let outcome = maintenance
        .run_pass(now(), &CancellationToken::new())
        .unwrap();
    assert_eq!(outcome.readings_deleted, 2, "72 h and 25 h");
    let kept: Vec<i64> = readings_ts(&store)
        .iter()
        .map(|ts| (now() - *ts).num_hours())
        .collect();
    assert_eq!(kept, [24, 23, 1, 0]);
}

/// Every table keeps exactly what its retention says, and nothing still in use.
#[test]
fn each_table_keeps_what_its_retention_keeps() {
    let fx = Fixture::new();
    let mut store = fx.store();

    // Readings: retention 10 days.
    for (days, _) in [(11, "gone"), (9, "kept")] {
        fx.readings(&mut store, ago(days * DAY), 1);
    }

    // Rejects: the newest 3 are kept, the per-reason counts are not touched.
    let mut batch = store.batch().unwrap();
    for i in 0..5 {
        let reject = RejectRecord::new(
            ago(Duration::from_secs(60 * (5 - i))),
            "stockpile/v1/x/y/reading",
            "unknown_town",
            &format!("reject {i}"),
            b"{}",
        );
        batch.insert_reject(&reject).unwrap();
    }
    batch.commit().unwrap();

    // Alerts: retention 30 days after resolution.
    let mut batch = store.alert_batch().unwrap();
    let mut acked = alert("a/old-acked", AlertState::Resolved, Some(ago(31 * DAY)));
    acked.ack = Some(store::AckRow {
        by: "li.wei".into(),
        at: ago(40 * DAY),
        note: "refilled".into(),
    });
    let old_acked = batch.insert_alert(&acked).unwrap();
    let old = batch
        .insert_alert(&alert("a/old", AlertState::Resolved, Some(ago(31 * DAY))))
        .unwrap();
    let recent = batch
        .insert_alert(&alert(
            "a/recent",
            AlertState::Resolved,
            Some(ago(29 * DAY)),
        ))
        .unwrap();
    let firing = batch
        .insert_alert(&alert("a/firing", AlertState::Firing, None))
        .unwrap();
    let mut untold = alert("a/untold", AlertState::Resolved, Some(ago(31 * DAY)));
    untold.notify_event = Some("resolved".into());
    let untold = batch.insert_alert(&untold).unwrap();
    let named_by_pending = batch
        .insert_alert(&alert(
            "a/pending-mail",
            AlertState::Resolved,
            Some(ago(31 * DAY)),
        ))
        .unwrap();
    // The newest row keeps its id from being handed to the next alert.
    let newest = batch
        .insert_alert(&alert(
            "a/newest",
            AlertState::Resolved,
            Some(ago(31 * DAY)),
        ))
        .unwrap();

    // Outbox: retention 7 days after the last attempt; pending rows stay.
    for (key, ids, days) in [
        ("sent-old", vec![old], 8),
        ("failed-old", vec![old], 8),
        ("sent-recent", vec![recent], 6),
        ("pending-old", vec![named_by_pending], 40),
        ("newest", vec![newest], 9),
    ] {
        assert!(
            batch
                .enqueue(&notification(key, ids, ago(days * DAY)))
                .unwrap()
        );
    }

    // Silences: retention 7 days after they ended.
    for (comment, until) in [
        ("ended-old", ago(8 * DAY)),
        ("ended-recent", ago(6 * DAY)),
        ("in-force", now() + chrono::Duration::hours(1)),
        ("newest", ago(30 * DAY)),
    ] {
        batch.insert_silence(&silence(comment, until)).unwrap();
    }
    batch.commit().unwrap();
    let outbox_id = |store: &Store, key: &str| {
        store
            .list_notifications(&NotificationQuery {
                limit: 100,
                ..NotificationQuery::default()
            })
            .unwrap()
            .into_iter()
            .find(|n| n.dedup_key == key)
            .map(|n| n.id)
    };
    for (key, days) in [("sent-old", 8), ("sent-recent", 6), ("newest", 9)] {
        let id = outbox_id(&store, key).unwrap();
        store.mark_sent(id, 1, ago(days * DAY)).unwrap();
    }
    let failed = outbox_id(&store, "failed-old").unwrap();
    store.mark_failed(failed, 5, "550 no such user").unwrap();

    let mut maintenance = fx.maintenance(MaintenanceConfig {
        retention: 10 * DAY,
        max_rejects: 3,
        outbox_retention: 7 * DAY,
        alert_retention: 30 * DAY,
        silence_retention: 7 * DAY,
        ..MaintenanceConfig::default()
    });
    let outcome = maintenance
        .run_pass(now(), &CancellationToken::new())
        .unwrap();
    assert_eq!(
        (
            outcome.readings_deleted,
            outcome.rejects_deleted,
            outcome.outbox_deleted,
            outcome.alerts_deleted,
            outcome.silences_deleted
        ),
        (1, 2, 2, 2, 1)
    );

    assert_eq!(readings_ts(&store), [ago(9 * DAY)]);
    let rejects: Vec<String> = store
        .recent_rejects(10)
        .unwrap()
        .into_iter()
        .map(|r| r.detail)
        .collect();
    assert_eq!(rejects, ["reject 4", "reject 3", "reject 2"]);
    assert_eq!(
        store.reject_counts().unwrap(),
        [("unknown_town".to_owned(), 5)]
    );
    let mut outbox: Vec<String> = store
        .list_notifications(&NotificationQuery {
            limit: 100,
            ..NotificationQuery::default()
        })
        .unwrap()
        .into_iter()
        .map(|n| n.dedup_key)
        .collect();
    outbox.sort();
    assert_eq!(outbox, ["newest", "pending-old", "sent-recent"]);
    let mut alerts: Vec<i64> = store
        .list_alerts(&AlertQuery {
            limit: 100,
            ..AlertQuery::default()
        })
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    alerts.sort();
    assert_eq!(alerts, [recent, firing, untold, named_by_pending, newest]);
    assert_eq!(
        store.alert(old_acked).unwrap(),
        None,
        "its ack went with it"
    );
    let mut silences: Vec<String> = store
        .list_silences(None)
        .unwrap()
        .into_iter()
        .map(|s| s.comment)
        .collect();
    silences.sort();
    assert_eq!(silences, ["ended-recent", "in-force", "newest"]);

    // A new alert gets a new id, not the id of one pruned.
    let mut batch = store.alert_batch().unwrap();
    let next = batch
        .insert_alert(&alert("a/next", AlertState::Firing, None))
        .unwrap();
    batch.commit().unwrap();
    assert_eq!(next, newest + 1);
}

/// With a reader holding an old snapshot, no checkpoint can finish and the WAL grows
/// with every write; the pass must neither fail nor wait for the reader. Once the
/// reader ends, one pass empties the WAL file.
#[test]
fn the_wal_is_emptied_once_a_long_reader_ends() {
    let fx = Fixture::new();
    let mut store = fx.store();
    fx.readings(&mut store, ago(DAY), 10);

    let reader = rusqlite::Connection::open(&fx.path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let seen: i64 = reader
        .query_row("SELECT count(*) FROM readings", [], |row| row.get(0))
        .unwrap();
    assert_eq!(seen, 10);

    fx.readings(&mut store, ago(Duration::from_secs(3600)), 50_000);
    let grown = store::wal_bytes(&fx.path);
    assert!(grown > 1024 * 1024, "the WAL grew to {grown} bytes");

    let mut maintenance = fx.maintenance(MaintenanceConfig {
        wal_truncate_above: 0,
        ..MaintenanceConfig::default()
    });
    let started = Instant::now();
    let outcome = maintenance
        .run_pass(now(), &CancellationToken::new())
        .unwrap();
    assert!(!outcome.wal_truncated, "the reader still needs the WAL");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the pass did not wait for the reader: {:?}",
        started.elapsed()
    );
    assert!(outcome.wal_bytes >= grown);

    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    let outcome = maintenance
        .run_pass(now(), &CancellationToken::new())
        .unwrap();
    assert!(outcome.wal_truncated);
    assert_eq!(outcome.wal_bytes, 0);
    assert_eq!(maintenance.stats().counts().wal_bytes, 0);
    assert_eq!(store.count_readings().unwrap(), 50_010, "nothing lost");
}

/// The ingest writer's batches go on, on their own connection, while a pass deletes a
/// backlog: the busy timeout and the pauses between chunks let every batch in, well
/// within the busy timeout.
#[test]
fn a_writer_keeps_committing_while_a_backlog_is_pruned() {
    let fx = Fixture::new();
    let mut store = fx.store();
    fx.readings(&mut store, ago(30 * DAY), 60_000);
    let mut maintenance = fx.maintenance(MaintenanceConfig {
        retention: DAY,
        chunk: 2_000,
        ..MaintenanceConfig::default()
    });

    let pruner = std::thread::spawn(move || {
        maintenance
            .run_pass(now(), &CancellationToken::new())
            .unwrap()
    });
    let registry = Arc::clone(&fx.registry);
    let mut batches = 0;
    let mut slowest = Duration::ZERO;
    let mut ts = ago(Duration::from_secs(3600));
    while !pruner.is_finished() || batches < 20 {
        let started = Instant::now();
        let mut batch = store.batch().expect("the writer gets the lock");
        for _ in 0..100 {
            ts += chrono::Duration::milliseconds(10);
            let reading = Reading {
                facility: WH,
                ts,
                seq: None,
                observation: Observation::Stock(vec![]),
            };
            batch.insert_reading(&registry, &reading, ts).unwrap();
        }
        batch.commit().expect("the writer commits");
        slowest = slowest.max(started.elapsed());
        batches += 1;
        // Paced at 20,000 readings/s, far above the demo's ~30/s: ingest waits for
        // deliveries between batches. A writer that never lets go of the lock would
        // starve the pruner instead (SQLite's locks are not fair), which is the right
        // way round, but slow to test.
        std::thread::sleep(Duration::from_millis(5));
    }
    let outcome = pruner.join().unwrap();
    assert_eq!(outcome.readings_deleted, 60_000);
    assert_eq!(store.count_readings().unwrap(), batches * 100);
    assert!(
        slowest < StoreOptions::default().busy_timeout,
        "slowest batch {slowest:?}"
    );
}

#[test]
fn a_cancelled_pass_stops_between_chunks() {
    let fx = Fixture::new();
    let mut store = fx.store();
    fx.readings(&mut store, ago(3 * DAY), 100);
    let mut maintenance = fx.maintenance(MaintenanceConfig {
        retention: DAY,
        ..MaintenanceConfig::default()
    });
    let cancel = CancellationToken::new();
    cancel.cancel();
    let outcome = maintenance.run_pass(now(), &cancel).unwrap();
    assert!(outcome.cancelled);
    assert_eq!(outcome.readings_deleted, 0);
    assert_eq!(maintenance.stats().counts().passes, 0);
}

/// Runs soon after start; a locked file fails passes without stopping anything, and
/// the passes after the lock is gone do the work; the token stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_maintenance_survives_a_locked_file_and_stops_on_the_token() {
    let fx = Fixture::new();
    let mut store = fx.store();
    // Readings of three days ago by the wall clock, since the spawned passes use it.
    let three_days_ago = Utc::now() - chrono::Duration::days(3);
    fx.readings(&mut store, three_days_ago, 100);

    // Another process holds the write lock (a backup, a sqlite3 shell).
    let locker = rusqlite::Connection::open(&fx.path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let config = MaintenanceConfig {
        retention: DAY,
        first_after: Duration::ZERO,
        every: Duration::from_millis(100),
        ..MaintenanceConfig::default()
    };
    // A short busy timeout, so each pass gives up on the lock quickly.
    let options = StoreOptions {
        busy_timeout: Duration::from_millis(50),
        ..StoreOptions::default()
    };
    let maintenance = Maintenance::open(&fx.path, options, config).unwrap();
    let stats = maintenance.stats();
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    maintenance.spawn(&tracker, shutdown.clone());
    tracker.close();

    tokio::task::block_in_place(|| {
        wait_until("a pass fails on the lock", Duration::from_secs(10), || {
            stats.counts().failed_passes >= 2
        });
    });
    let counts = stats.counts();
    assert!(counts.failing);
    assert_eq!(counts.passes, 0);

    locker.execute_batch("ROLLBACK").unwrap();
    tokio::task::block_in_place(|| {
        wait_until("a pass succeeds", Duration::from_secs(10), || {
            let c = stats.counts();
            c.passes >= 1 && !c.failing
        });
    });
    assert_eq!(store.count_readings().unwrap(), 0);
    assert_eq!(stats.counts().readings_deleted, 100);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .expect("maintenance stops on the token");
}
