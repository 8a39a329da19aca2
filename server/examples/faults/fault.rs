//! The faults and the procedure every one of them follows:
//!
//! 1. A fresh deployment: its own Mosquitto (persistence on, queue unbounded), SMTP
//!    server, SQLite file and InfluxDB database; `stockpile serve` started on it.
//! 2. The gateways publish at a steady rate; wait until readings are stored and the
//!    first alert mail arrived, so the fault hits a service under load with alerts
//!    firing.
//! 3. The fault, for its duration, then its cause removed.
//! 4. Recovery: the time until everything acknowledged before the cause was removed
//!    is in SQLite and in InfluxDB, and every notification due by then was delivered.
//! 5. The gateways stop; wait until everything settled; count; stop the service with
//!    SIGTERM (it must exit 0).
//!
//! Every wait is on a condition with a generous deadline; the only fixed sleeps are
//! the faults' own durations.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Kit;
use crate::gateways::Gateways;
use crate::plan::{Key, Plan};
use crate::rig::{Deployment, Log, Netns, Stockpile, lock};
use crate::tally::{self, Notifications};
use testkit::SmallDisk;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Kill9,
    BrokerRestart,
    InfluxDown,
    SmtpDown,
    StoreLocked,
    DiskFull,
    LinkLoss,
    ClusterCut,
}

pub const ALL: [Fault; 8] = [
    Fault::Kill9,
    Fault::BrokerRestart,
    Fault::InfluxDown,
    Fault::SmtpDown,
    Fault::StoreLocked,
    Fault::DiskFull,
    Fault::LinkLoss,
    Fault::ClusterCut,
];

impl Fault {
    /// How long the cause lasts.
    pub fn duration(self, quick: bool) -> Duration {
        let seconds = match (self, quick) {
            (Fault::Kill9 | Fault::BrokerRestart, _) => 0,
            (Fault::InfluxDown, true) => 10,
            (Fault::InfluxDown, false) => 60,
            (Fault::SmtpDown, true) => 20,
            (Fault::SmtpDown, false) => 300,
            (Fault::StoreLocked, _) => 10,
            (Fault::DiskFull | Fault::LinkLoss, true) => 10,
            (Fault::DiskFull | Fault::LinkLoss, false) => 30,
            // Long enough that the replayed readings are late for the city
            // (cluster_cut::late_after) and, in the long form, that the bridge notices
            // the cut (keepalive 30 s) and queues.
            (Fault::ClusterCut, true) => 20,
            (Fault::ClusterCut, false) => 120,
        };
        Duration::from_secs(seconds)
    }

    /// A line the service logs when the fault reaches it: proof the fault was real.
    /// None where nothing need show (a restart is over before anything times out).
    fn evidence(self) -> Option<&'static str> {
        match self {
            Fault::Kill9 | Fault::BrokerRestart | Fault::LinkLoss | Fault::ClusterCut => None,
            Fault::InfluxDown => Some("InfluxDB write failed"),
            Fault::SmtpDown => Some("Notification not delivered; will retry."),
            Fault::StoreLocked | Fault::DiskFull => Some("Store unavailable; ingest paused"),
        }
    }

    pub fn title(self, quick: bool) -> String {
        let s = self.duration(quick).as_secs();
        match self {
            Fault::Kill9 => "kill -9 of stockpile, restart".into(),
            Fault::BrokerRestart => "Mosquitto restarted".into(),
            Fault::InfluxDown => {
                format!("InfluxDB down {s} s (SIGSTOP, then killed and restarted)")
            }
            Fault::SmtpDown => format!("SMTP server down {s} s"),
            Fault::StoreLocked => format!("SQLite locked by another process {s} s"),
            Fault::DiskFull => format!("store's disk full {s} s"),
            Fault::LinkLoss => format!("link to the broker down {s} s"),
            Fault::ClusterCut => format!("cluster's bridge to the city cut {s} s"),
        }
    }
}

/// What one fault came to.
#[derive(Debug, Default)]
pub struct Outcome {
    pub published: usize,
    pub acked: usize,
    pub stored: usize,
    pub in_influx: usize,
    pub notifications: Notifications,
    pub recovered_after: Option<Duration>,
    pub reconnects: u32,
    /// Empty when the fault lost and duplicated nothing.
    pub problems: Vec<String>,
    /// The service's warnings and errors, each once with a count.
    pub log_excerpt: Vec<String>,
    /// A fault that runs without InfluxDB: its column reads "—".
    pub no_influx: bool,
    /// Counts of the fault's own, reported under the table.
    pub notes: Vec<String>,
}

/// Polls `ready` every 250 ms until it holds or `timeout` passes; false on timeout.
pub fn wait_for(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs `fault` from a fresh deployment to its counts.
pub fn run(kit: &mut Kit, fault: Fault, number: usize) -> Outcome {
    if fault == Fault::ClusterCut {
        return crate::cluster_cut::run(kit, number);
    }
    let plan = Arc::new(Plan::new(kit.swing_every));
    // Declared in the order they are undone in reverse: the namespace outlives the
    // broker in it, the deployment outlives the disk mounted in it, and the service
    // and the gateways go first.
    let netns = (fault == Fault::LinkLoss).then(Netns::create);
    let mut broker = {
        let builder = testkit::Mosquitto::builder()
            .persistence(true)
            .max_queued(0);
        match &netns {
            Some(ns) => builder.netns(&ns.name, ns.service_side),
            None => builder,
        }
        .start()
    };
    let gateway_address = SocketAddr::new(
        netns.as_ref().map_or(broker.host(), |ns| ns.gateway_side),
        broker.port(),
    );
    let mut smtp = testkit::SmtpServer::start();
    let influx_db = format!("faults_{number}_{}", std::process::id());
    kit.influx.create_database(&influx_db);
    let deployment = Deployment::new(
        &plan,
        &broker.url(),
        &smtp.url(),
        &kit.influx.url(),
        &influx_db,
    );
    let disk = (fault == Fault::DiskFull).then(|| SmallDisk::mount(&deployment.data_dir(), "64m"));
    let db = deployment.db();
    let log = Log::default();
    let mut stockpile = Some(Stockpile::start(&kit.bin, &deployment, &log));
    let gateways = Gateways::start(gateway_address, Arc::clone(&plan), kit.rate);
    let mut outcome = Outcome::default();

    let warm = wait_for(Duration::from_secs(60), || {
        tally::stored_count(&db) >= u64::from(kit.rate) && !smtp.messages().is_empty()
    });
    assert!(
        warm,
        "no readings stored or no alert mailed within 60 s of the start (gateways: {:?} published/acked):\n{}",
        gateways.counts(),
        crate::rig::tail(&log, 40)
    );

    // The fault.
    let duration = fault.duration(kit.quick);
    match fault {
        Fault::Kill9 => {
            if let Some(service) = stockpile.take() {
                service.kill9();
            }
        }
        Fault::BrokerRestart => {
            broker.stop();
            broker.start_again();
        }
        Fault::InfluxDown => {
            kit.influx.pause();
            std::thread::sleep(duration);
            kit.influx.kill();
            kit.influx.start_again();
        }
        Fault::SmtpDown => {
            smtp.stop();
            std::thread::sleep(duration);
            smtp.start_again();
        }
        Fault::StoreLocked => hold_write_lock(&db, duration),
        Fault::DiskFull => {
            let disk = disk.as_ref().expect("the small disk is mounted");
            let filler = disk.fill();
            std::thread::sleep(duration);
            std::fs::remove_file(&filler).expect("delete the filler file");
        }
        Fault::LinkLoss => {
            let ns = netns.as_ref().expect("the namespace exists");
            ns.set_service_link(false);
            std::thread::sleep(duration);
            ns.set_service_link(true);
        }
        Fault::ClusterCut => unreachable!("run by cluster_cut::run"),
    }
    let ended = Instant::now();
    let acked_at_end: Vec<Key> = gateways.acked();
    let end_ms = chrono::Utc::now().timestamp_millis();
    if fault == Fault::Kill9 {
        stockpile = Some(Stockpile::start(&kit.bin, &deployment, &log));
    }
    let last_due_at_end = wait_outbox(&db).iter().map(|r| r.id).max().unwrap_or(0);

    // Recovery: what was acknowledged before the end is stored and sent on.
    let recovered = wait_for(kit.deadline, || {
        let stored = match tally::stored_keys(&db, &plan) {
            Ok(keys) => keys,
            Err(_) => return false,
        };
        if !acked_at_end.iter().all(|k| stored.contains(k)) {
            return false;
        }
        let stored_by_end = stored.iter().filter(|k| k.ts_ms <= end_ms).count() as u64;
        if tally::influx_count(&kit.influx, &influx_db, Some(end_ms)) < stored_by_end {
            return false;
        }
        tally::outbox(&db).is_ok_and(|rows| {
            !rows
                .iter()
                .any(|r| r.id <= last_due_at_end && r.state == store::DeliveryState::Pending)
        })
    });
    outcome.recovered_after = recovered.then(|| ended.elapsed());
    if !recovered {
        outcome.problems.push(format!(
            "not recovered within {:?} of the fault's end",
            kit.deadline
        ));
    }

    // Ingest goes on with new readings too: two seconds' worth acknowledged after the
    // end (a condition on progress, not a sleep).
    let after = acked_at_end.len() + 2 * kit.rate as usize;
    if !wait_for(kit.deadline, || gateways.counts().1 >= after) {
        outcome.problems.push(format!(
            "the broker acknowledged fewer than {after} readings by {:?} after the fault's end",
            kit.deadline
        ));
    }
    let sent = gateways.stop();
    outcome.reconnects = sent.reconnects;

    // Settle: everything acknowledged stored and mirrored, the outbox drained.
    let settled = wait_for(kit.deadline, || {
        let Ok(stored) = tally::stored_keys(&db, &plan) else {
            return false;
        };
        sent.acked.iter().all(|k| stored.contains(k))
            && tally::influx_count(&kit.influx, &influx_db, None) >= stored.len() as u64
            && tally::outbox(&db).is_ok_and(|rows| {
                !rows
                    .iter()
                    .any(|r| r.state == store::DeliveryState::Pending)
                    && smtp.messages().len()
                        >= rows
                            .iter()
                            .filter(|r| r.state == store::DeliveryState::Sent)
                            .count()
            })
    });
    if !settled {
        outcome.problems.push(format!(
            "not settled within {:?} of the gateways' stop",
            kit.deadline
        ));
    }

    let still_running = stockpile.as_mut().is_some_and(Stockpile::is_running);
    if !still_running {
        outcome
            .problems
            .push("stockpile exited by itself during the run".into());
    }
    count(&mut outcome, &plan, &sent, &db, kit, &influx_db, &smtp);

    if let Some(service) = stockpile.take() {
        let code = service.terminate();
        if still_running && code != Some(0) {
            outcome.problems.push(format!(
                "stockpile did not stop cleanly on SIGTERM (exit {code:?})"
            ));
        }
    }
    if let Some(needle) = fault.evidence()
        && !lock(&log).iter().any(|l| l.contains(needle))
    {
        outcome.problems.push(format!(
            "the fault never showed: no {needle:?} in stockpile's log"
        ));
    }
    outcome.log_excerpt = warnings(&log);
    // Dropped now, in reverse order of declaration: the disk is unmounted before the
    // deployment's dir goes, the broker ends before its namespace.
    outcome
}

/// The outbox, waiting out a moment of a busy store.
fn wait_outbox(db: &std::path::Path) -> Vec<store::OutboxRow> {
    let mut rows = Vec::new();
    wait_for(Duration::from_secs(30), || match tally::outbox(db) {
        Ok(read) => {
            rows = read;
            true
        }
        Err(_) => false,
    });
    rows
}

/// Another process holding SQLite's write lock (what a backup tool, a `sqlite3` shell
/// or a migration does) for `duration`.
fn hold_write_lock(db: &std::path::Path, duration: Duration) {
    let (held_tx, held_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let locker = {
        let db = db.to_owned();
        std::thread::spawn(move || {
            let mut store = match store::Store::open(&db, store::StoreOptions::default()) {
                Ok(store) => store,
                Err(e) => return drop(held_tx.send(Err(e.to_string()))),
            };
            let batch = match store.batch() {
                Ok(batch) => batch,
                Err(e) => return drop(held_tx.send(Err(e.to_string()))),
            };
            let _ = held_tx.send(Ok(()));
            let _ = release_rx.recv_timeout(Duration::from_secs(600));
            drop(batch);
        })
    };
    match held_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("cannot take the store's write lock: {e}"),
        Err(e) => panic!("the lock holder did not report: {e}"),
    }
    std::thread::sleep(duration);
    let _ = release_tx.send(());
    let _ = locker.join();
}

fn count(
    outcome: &mut Outcome,
    plan: &Plan,
    sent: &crate::gateways::Sent,
    db: &std::path::Path,
    kit: &Kit,
    influx_db: &str,
    smtp: &testkit::SmtpServer,
) {
    let published: HashSet<Key> = sent.published.iter().copied().collect();
    let stored = tally::stored_keys(db, plan).unwrap_or_else(|e| {
        outcome.problems.push(format!("cannot read SQLite: {e}"));
        HashSet::new()
    });
    let influx = tally::influx_keys(&kit.influx, influx_db, plan);
    outcome.published = sent.published.len();
    outcome.acked = sent.acked.len();
    outcome.stored = stored.len();
    outcome.in_influx = influx.len();

    let describe = |keys: &mut Vec<&Key>| -> String {
        keys.sort();
        keys.iter()
            .take(5)
            .map(|k| format!("{}@{}", plan.facilities[k.facility].id, k.ts_ms))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut missing: Vec<&Key> = sent.acked.iter().filter(|k| !stored.contains(k)).collect();
    if !missing.is_empty() {
        outcome.problems.push(format!(
            "{} acknowledged readings missing from SQLite (e.g. {})",
            missing.len(),
            describe(&mut missing)
        ));
    }
    let mut missing: Vec<&Key> = sent.acked.iter().filter(|k| !influx.contains(k)).collect();
    if !missing.is_empty() {
        outcome.problems.push(format!(
            "{} acknowledged readings missing from InfluxDB (e.g. {})",
            missing.len(),
            describe(&mut missing)
        ));
    }
    let mut unmirrored: Vec<&Key> = stored.iter().filter(|k| !influx.contains(k)).collect();
    if !unmirrored.is_empty() {
        outcome.problems.push(format!(
            "{} stored readings never reached InfluxDB (e.g. {})",
            unmirrored.len(),
            describe(&mut unmirrored)
        ));
    }
    let mut phantoms: Vec<&Key> = stored
        .union(&influx)
        .filter(|k| !published.contains(k))
        .collect();
    if !phantoms.is_empty() {
        outcome.problems.push(format!(
            "{} readings stored that were never published (e.g. {})",
            phantoms.len(),
            describe(&mut phantoms)
        ));
    }

    let rows = wait_outbox(db);
    let n = tally::notifications(&rows, &smtp.messages());
    if n.duplicated > 0 {
        outcome.problems.push(format!(
            "{} notifications delivered more than once: {}",
            n.duplicated,
            n.duplicate_subjects.join("; ")
        ));
    }
    if n.delivered < n.due {
        outcome.problems.push(format!(
            "{} of {} notifications not delivered ({} still pending, {} given up)",
            n.due - n.delivered,
            n.due,
            n.pending,
            n.failed
        ));
    }
    if n.unmatched > 0 {
        outcome
            .problems
            .push(format!("{} mails match no outbox row", n.unmatched));
    }
    if n.due == 0 {
        outcome
            .problems
            .push("no notification was due: the alerting towns never alerted".into());
    }
    outcome.notifications = n;
}

/// The service's WARN and ERROR lines, each distinct one once with its count.
pub fn warnings(log: &Log) -> Vec<String> {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for line in lock(log).iter() {
        let Some(at) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else {
            continue;
        };
        // Group by level, target and message, without the fields (`id=4 attempts=2`),
        // which differ from line to line.
        let message: Vec<&str> = line[at..]
            .split_whitespace()
            .take_while(|word| !word.contains('='))
            .collect();
        let message: String = message.join(" ").chars().take(160).collect();
        match seen.iter_mut().find(|(m, _)| *m == message) {
            Some((_, n)) => *n += 1,
            None => seen.push((message, 1)),
        }
    }
    seen.into_iter()
        .map(|(m, n)| if n > 1 { format!("{m} (×{n})") } else { m })
        .collect()
}
