//! Fault 8, the cluster cut (issue 18, docs/design.md#cluster-instance): the gateways
//! publish to a cluster's own Mosquitto, which bridges their topics to the city broker
//! with deploy/cluster/bridge.conf's queue and session settings; a cluster instance
//! (`[scope] cluster`) watches its broker, a city instance the city's. The link the
//! bridge uses is cut for the fault's duration under the suite's load while the
//! alerting towns swing across the target, then restored.
//!
//! The city broker runs in a network namespace reached over two links (as fault 7's
//! broker): the bridge's, which is cut, and the city instance's, which stays up (the
//! city instance and its broker are one site). Everything else runs on the host.
//!
//! Counts: readings the cluster broker acknowledged against those stored by each
//! instance; notifications per instance, each delivered once; the cluster's during the
//! cut; and none late: the city (without `clusters_with_own_instance`, so it notifies
//! the officers itself) tells nothing of the cut's swings once the backlog lands
//! ([catch-up](docs/design.md#lifecycle)), only what still holds.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use store::{DeliveryState, OutboxRow, Store, StoreOptions};

use crate::Kit;
use crate::fault::{Outcome, wait_for};
use crate::gateways::{Gateways, Sent};
use crate::plan::{Key, Plan};
use crate::rig::{Deployment, Log, Netns, Stockpile};
use crate::tally;

/// The cluster of the plan's towns: the cluster instance's scope.
const CLUSTER: &str = "c01";

/// How old a reading must be on arrival for the city to call it late: well below the
/// cut, so nearly all of the backlog is late, and above a swing and any delay of a
/// reading that travels live.
fn late_after(quick: bool) -> Duration {
    Duration::from_secs(if quick { 5 } else { 10 })
}

/// The two sites, their brokers, mail servers and instances.
struct Sites {
    city: Stockpile,
    cluster: Stockpile,
    city_db: std::path::PathBuf,
    cluster_db: std::path::PathBuf,
    city_smtp: testkit::SmtpServer,
    cluster_smtp: testkit::SmtpServer,
    city_log: Log,
    cluster_log: Log,
    // Dropped after the instances, in this order: deployments, brokers, namespace.
    _deployments: [Deployment; 2],
    cluster_broker: testkit::Mosquitto,
    _city_broker: testkit::Mosquitto,
    netns: Netns,
}

/// deploy/cluster/bridge.conf as this cluster's broker runs it: its queue, session and
/// timing lines as shipped, the city broker's test address, one topic line per town of
/// the plan, no TLS or credentials, no lines of the sample's own cluster.
fn bridge_lines(city_broker: SocketAddr, plan: &Plan) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cluster/bridge.conf");
    let shipped =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let towns: HashSet<&str> = plan.facilities.iter().map(|f| f.town).collect();
    let mut lines = Vec::new();
    for line in shipped.lines().map(str::trim) {
        let key = line.split_whitespace().next().unwrap_or("");
        match key {
            "" => {}
            _ if key.starts_with('#') => {}
            "address" => lines.push(format!("address {city_broker}")),
            "topic" | "notification_topic" | "notifications" => {}
            "remote_username" | "remote_password" | "bridge_cafile" | "bridge_tls_version" => {}
            _ => lines.push(line.to_owned()),
        }
        if key == "connection" {
            lines.extend(
                towns
                    .iter()
                    .map(|t| format!("topic stockpile/v1/{t}/# out 1")),
            );
        }
    }
    assert!(
        lines.iter().any(|l| l.starts_with("cleansession false")),
        "deploy/cluster/bridge.conf lost its session setting: {lines:?}"
    );
    lines
}

/// An instance's config: its broker and mail server; the cluster's narrowed to
/// [`CLUSTER`], the city's calling readings late after [`late_after`].
fn sections(broker: &str, client_id: &str, smtp: &str, from: &str, extra: &str) -> String {
    format!(
        "{extra}[mqtt]\nurl = \"{broker}\"\nclient_id = \"{client_id}\"\n\
         [store]\npath = \"data/stockpile.db\"\n\
         [api]\nlisten = \"127.0.0.1:0\"\npublic_read = true\n\
         [log]\nlevel = \"info\"\n\
         [smtp]\nurl = \"{smtp}\"\nfrom = \"{from}\"\n"
    )
}

impl Sites {
    fn start(kit: &Kit, plan: &Plan) -> Sites {
        let netns = Netns::create();
        let city_broker = testkit::Mosquitto::builder()
            .persistence(true)
            .max_queued(0)
            .netns(&netns.name, netns.gateway_side)
            .start();
        let mut cluster_broker = testkit::Mosquitto::builder().persistence(true);
        let over_bridge_link = SocketAddr::new(netns.service_side, city_broker.port());
        for line in bridge_lines(over_bridge_link, plan) {
            cluster_broker = cluster_broker.config_line(&line);
        }
        let cluster_broker = cluster_broker.start();
        let (city_smtp, cluster_smtp) =
            (testkit::SmtpServer::start(), testkit::SmtpServer::start());
        let late = late_after(kit.quick).as_secs();
        let city_dir = Deployment::with_sections(
            plan,
            &sections(
                &city_broker.url(),
                "stockpile-city",
                &city_smtp.url(),
                "Stockpile city <alerts@example.org>",
                "",
            )
            .replace(
                "[log]",
                &format!("[alerts]\ngroup_wait = \"0s\"\nlate_after = \"{late}s\"\n[log]"),
            ),
        );
        let cluster_dir = Deployment::with_sections(
            plan,
            &sections(
                &cluster_broker.url(),
                "stockpile-c01",
                &cluster_smtp.url(),
                "Stockpile c01 <alerts-c01@example.org>",
                &format!("[scope]\ncluster = \"{CLUSTER}\"\n"),
            )
            .replace("[log]", "[alerts]\ngroup_wait = \"0s\"\n[log]"),
        );
        let (city_log, cluster_log) = (Log::default(), Log::default());
        let city = Stockpile::start(&kit.bin, &city_dir, &city_log);
        let cluster = Stockpile::start(&kit.bin, &cluster_dir, &cluster_log);
        let bridged = wait_for(Duration::from_secs(60), || {
            city_broker.log().contains("bridge-c07")
        });
        assert!(
            bridged,
            "the bridge never reached the city broker:\n{}",
            cluster_broker.log()
        );
        Sites {
            city,
            cluster,
            city_db: city_dir.db(),
            cluster_db: cluster_dir.db(),
            city_smtp,
            cluster_smtp,
            city_log,
            cluster_log,
            _deployments: [city_dir, cluster_dir],
            cluster_broker,
            _city_broker: city_broker,
            netns,
        }
    }
}

/// Runs the cluster cut from fresh sites to its counts.
pub fn run(kit: &mut Kit, _number: usize) -> Outcome {
    let plan = Arc::new(Plan::new(kit.swing_every));
    let sites = Sites::start(kit, &plan);
    let gateways = Gateways::start(
        SocketAddr::new(sites.cluster_broker.host(), sites.cluster_broker.port()),
        Arc::clone(&plan),
        kit.rate,
    );
    let mut outcome = Outcome {
        no_influx: true,
        ..Outcome::default()
    };
    let warm = wait_for(Duration::from_secs(60), || {
        [&sites.city_db, &sites.cluster_db]
            .iter()
            .all(|db| tally::stored_count(db) >= u64::from(kit.rate))
            && !sites.city_smtp.messages().is_empty()
            && !sites.cluster_smtp.messages().is_empty()
    });
    assert!(
        warm,
        "both instances did not store readings and mail an alert within 60 s (gateways: {:?})",
        gateways.counts()
    );

    let cut_at = Utc::now();
    sites.netns.set_service_link(false);
    std::thread::sleep(crate::fault::Fault::ClusterCut.duration(kit.quick));
    sites.netns.set_service_link(true);
    let restored_at = Utc::now();
    let restored = Instant::now();
    let acked_at_end = gateways.acked();

    // Recovery: the city holds everything the cluster broker acknowledged by the end.
    let recovered = wait_for(kit.deadline, || {
        tally::stored_keys(&sites.city_db, &plan)
            .is_ok_and(|stored| acked_at_end.iter().all(|k| stored.contains(k)))
    });
    outcome.recovered_after = recovered.then(|| restored.elapsed());
    if !recovered {
        outcome.problems.push(format!(
            "the city did not hold the cut's readings within {:?} of the link's return",
            kit.deadline
        ));
    }
    let after = acked_at_end.len() + 2 * kit.rate as usize;
    if !wait_for(kit.deadline, || gateways.counts().1 >= after) {
        outcome.problems.push(format!(
            "fewer than {after} readings acknowledged after the cut"
        ));
    }
    let sent = gateways.stop();
    settle(kit, &plan, &sent, &sites, &mut outcome);
    let replay_took = outcome.recovered_after.unwrap_or(kit.deadline);
    let replay = (
        restored_at,
        restored_at + chrono::Duration::from_std(replay_took).unwrap_or_default(),
    );
    count(
        (kit.quick, kit.swing_every),
        replay,
        &plan,
        &sent,
        &sites,
        (cut_at, restored_at),
        &mut outcome,
    );

    for (name, service) in [("city", sites.city), ("cluster", sites.cluster)] {
        let code = service.terminate();
        if code != Some(0) {
            outcome.problems.push(format!(
                "the {name} instance did not stop cleanly on SIGTERM (exit {code:?})"
            ));
        }
    }
    let mut log = crate::fault::warnings(&sites.city_log);
    log.extend(crate::fault::warnings(&sites.cluster_log));
    outcome.log_excerpt = log;
    outcome
}

/// Waits until both instances hold every acknowledged reading and both outboxes are
/// delivered.
fn settle(kit: &Kit, plan: &Plan, sent: &Sent, sites: &Sites, outcome: &mut Outcome) {
    let settled = wait_for(kit.deadline, || {
        [
            (&sites.city_db, &sites.city_smtp),
            (&sites.cluster_db, &sites.cluster_smtp),
        ]
        .iter()
        .all(|(db, smtp)| {
            let Ok(stored) = tally::stored_keys(db, plan) else {
                return false;
            };
            sent.acked.iter().all(|k| stored.contains(k))
                && tally::outbox(db).is_ok_and(|rows| {
                    !rows.iter().any(|r| r.state == DeliveryState::Pending)
                        && smtp.messages().len()
                            >= rows
                                .iter()
                                .filter(|r| r.state == DeliveryState::Sent)
                                .count()
                })
        })
    });
    if !settled {
        outcome.problems.push(format!(
            "not settled within {:?} of the gateways' stop",
            kit.deadline
        ));
    }
}

/// `replay`: from the link's return until the city held the cut's readings.
fn count(
    (quick, swing_every): (bool, Duration),
    replay: (DateTime<Utc>, DateTime<Utc>),
    plan: &Plan,
    sent: &Sent,
    sites: &Sites,
    (cut_at, restored_at): (DateTime<Utc>, DateTime<Utc>),
    outcome: &mut Outcome,
) {
    outcome.published = sent.published.len();
    outcome.acked = sent.acked.len();
    let published: HashSet<Key> = sent.published.iter().copied().collect();
    let mut stored_per_site = Vec::new();
    for (site, db) in [("city", &sites.city_db), ("cluster", &sites.cluster_db)] {
        let stored = tally::stored_keys(db, plan).unwrap_or_default();
        let missing = sent.acked.iter().filter(|k| !stored.contains(k)).count();
        if missing > 0 {
            outcome.problems.push(format!(
                "{missing} acknowledged readings missing from the {site}'s SQLite"
            ));
        }
        let phantoms = stored.iter().filter(|k| !published.contains(k)).count();
        if phantoms > 0 {
            outcome.problems.push(format!(
                "{phantoms} readings in the {site}'s SQLite never published"
            ));
        }
        stored_per_site.push(stored.len());
    }
    outcome.stored = stored_per_site[0];
    if stored_per_site[0] != stored_per_site[1] {
        outcome.problems.push(format!(
            "the city stored {} readings, the cluster {}",
            stored_per_site[0], stored_per_site[1]
        ));
    }

    let city = notifications(&sites.city_db, &sites.city_smtp, "city", outcome);
    let cluster = notifications(&sites.cluster_db, &sites.cluster_smtp, "cluster", outcome);
    let during_cut = cluster
        .iter()
        .filter(|r| r.created >= cut_at && r.created <= restored_at)
        .count();
    if during_cut == 0 {
        outcome
            .problems
            .push("the cluster instance told nobody during the cut".into());
    }
    let (caught_up, passed, as_live) = told_of_the_cut(&sites.city_db, &city, replay);
    // Live by definition: the falls of the backlog's last `late_after` (a town swings
    // down once every two swings), and one more each between the backlog's end and the
    // moment the count saw it stored. Told as live, the whole cut would be many more.
    let swing = swing_every.as_secs_f64();
    let per_town = (late_after(quick).as_secs_f64() / (2.0 * swing)).ceil() as usize + 1;
    if as_live.len() > per_town * crate::plan::ALERTING_TOWNS.len() {
        outcome.problems.push(format!(
            "the city told {} falls as live while the backlog landed, e.g. {}",
            as_live.len(),
            as_live
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if !passed.is_empty() {
        outcome.problems.push(format!(
            "the city told {} notifications of falls that had passed, e.g. {}",
            passed.len(),
            passed
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if caught_up.len() > crate::plan::ALERTING_TOWNS.len() {
        outcome.problems.push(format!(
            "the city told {} notifications of the cut's falls, more than one per alerting town: {}",
            caught_up.len(),
            caught_up.join("; ")
        ));
    }
    let episodes = late_episodes(&sites.city_db);
    if episodes == 0 {
        outcome
            .problems
            .push("the city recorded no late episode: the backlog was never seen as late".into());
    }
    outcome.notes.push(format!(
        "stored {} (city) / {} (cluster); notifications {} (city) / {} (cluster, {during_cut} during the cut); \
         {episodes} episodes of the cut recorded late by the city, {} still holding once caught up \
         and told then, {} told after they passed, {} falls told as live while the backlog landed",
        stored_per_site[0],
        stored_per_site[1],
        city.len(),
        cluster.len(),
        caught_up.len(),
        passed.len(),
        as_live.len()
    ));
}

/// An instance's outbox, its mails checked against it (each delivered once), added to
/// the outcome's totals.
fn notifications(
    db: &Path,
    smtp: &testkit::SmtpServer,
    site: &str,
    outcome: &mut Outcome,
) -> Vec<OutboxRow> {
    let rows = tally::outbox(db).unwrap_or_default();
    let n = tally::notifications(&rows, &smtp.messages());
    if n.duplicated > 0 {
        outcome.problems.push(format!(
            "{} notifications of the {site} delivered more than once: {}",
            n.duplicated,
            n.duplicate_subjects.join("; ")
        ));
    }
    if n.delivered < n.due || n.unmatched > 0 {
        outcome.problems.push(format!(
            "the {site}: {} of {} notifications delivered, {} mails match no outbox row",
            n.delivered, n.due, n.unmatched
        ));
    }
    outcome.notifications.due += n.due;
    outcome.notifications.delivered += n.delivered;
    outcome.notifications.duplicated += n.duplicated;
    rows
}

/// What the city told of reserve falls (fired or raised) while the cut's backlog
/// landed and after: `(told once caught up, told late, told as live while the backlog
/// landed)`. An alert recorded late and still holding once the backlog is in is told
/// once; one recorded late that had resolved when its notification was composed is the
/// replayed past told as news, and so are falls judged live while the backlog lands
/// (beyond the last seconds of it, younger than `late_after`, and the first live ones).
fn told_of_the_cut(
    db: &Path,
    rows: &[OutboxRow],
    (landing, landed): (DateTime<Utc>, DateTime<Utc>),
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let Ok(store) = Store::open(db, StoreOptions::default()) else {
        return (
            Vec::new(),
            vec!["cannot open the city's SQLite".into()],
            Vec::new(),
        );
    };
    let (mut caught_up, mut passed, mut as_live) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows
        .iter()
        .filter(|r| r.event == "fired" || r.event == "raised")
    {
        let alerts: Vec<store::AlertRow> = row
            .alert_ids
            .iter()
            .filter_map(|id| store.alert(*id).ok().flatten())
            .filter(|a| a.rule.starts_with("reserve_") && a.state != store::AlertState::Pending)
            .collect();
        let what = format!("{} at {}: {}", row.recipient, row.created, row.subject);
        // A message may also carry the resolution of a fall told before the cut: only
        // the alerts recorded late are the cut's.
        if alerts
            .iter()
            .any(|a| a.late && a.resolved_at.is_some_and(|at| at <= row.created))
        {
            passed.push(what.clone());
        }
        if alerts.iter().any(|a| a.late) {
            caught_up.push(what);
        } else if row.created >= landing && row.created <= landed {
            as_live.push(what);
        }
    }
    (caught_up, passed, as_live)
}

/// Alerts the city recorded during catch-up (`alerts.late`).
fn late_episodes(db: &Path) -> usize {
    let Ok(store) = Store::open(db, StoreOptions::default()) else {
        return 0;
    };
    let query = store::AlertQuery {
        limit: usize::MAX,
        ..store::AlertQuery::default()
    };
    store
        .list_alerts(&query)
        .map(|alerts| alerts.iter().filter(|a| a.late).count())
        .unwrap_or(0)
}
