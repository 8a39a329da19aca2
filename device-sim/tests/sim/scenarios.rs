//! Each built-in scenario against a real Mosquitto: what a subscriber hears, decoded with
//! `reserve::wire` as the service would, has the scenario's shape.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{Recorder, clean_readings, facility_ids, run, statuses, tiny_registry};
use device_sim::{ClientMode, Scenario, SimConfig};
use reserve::reading::{PowerState, PumpState};
use reserve::wire::Connectivity;
use reserve::{Observation, Reading, Registry};

/// Every gateway reports every 200 ms of wall-clock time in these tests.
const REPORT_EVERY: Duration = Duration::from_millis(200);

fn config(
    broker: &testkit::Mosquitto,
    scenario: Scenario,
    speed: f64,
    run_for_ms: u64,
) -> SimConfig {
    let mut config = SimConfig::new(broker.url(), scenario);
    config.speed = speed;
    config.seed = 7;
    config.report_every = Some(REPORT_EVERY);
    config.duration = Some(Duration::from_millis(run_for_ms));
    config
}

/// `(facility, category id) → quantities` in time order, for warehouses.
fn stock_series(
    registry: &Registry,
    readings: &BTreeMap<String, Vec<Reading>>,
) -> BTreeMap<(String, String), Vec<f64>> {
    let mut out: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for (facility, list) in readings {
        for r in list {
            if let Observation::Stock(items) = &r.observation {
                for &(c, quantity) in items {
                    let key = (facility.clone(), registry.category(c).id.to_string());
                    out.entry(key).or_default().push(quantity);
                }
            }
        }
    }
    out
}

fn days_of_need(
    registry: &Registry,
    town: &str,
    category: &str,
    warehouses: f64,
    quantity: f64,
) -> f64 {
    let town = registry.town(registry.town_idx(town).unwrap());
    let c = registry.category(registry.category_idx(category).unwrap());
    let people = match &c.group {
        reserve::registry::Group::All => town.population as f64,
        reserve::registry::Group::Named(g) => town.groups[g] as f64,
    };
    quantity / (people * c.daily_need / warehouses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_day_reports_every_facility_cleanly_draws_down_and_restocks() {
    let broker = testkit::Mosquitto::start();
    let registry = tiny_registry();
    let recorder = Recorder::start(&broker.url()).await;
    // Ten simulated hours a second: three seconds cover a day's delivery round.
    let (report, heard) = run(
        &registry,
        config(&broker, Scenario::normal(), 36_000.0, 3000),
        &recorder,
    )
    .await;

    let readings = clean_readings(&registry, &heard);
    assert_eq!(readings.keys().cloned().collect::<Vec<_>>(), {
        let mut ids = facility_ids(&registry);
        ids.sort();
        ids
    });
    assert_eq!(
        report.connections,
        registry.facilities.len(),
        "one connection per gateway"
    );
    for (facility, list) in statuses(&registry, &heard) {
        assert_eq!(list.first(), Some(&Connectivity::Online), "{facility}");
        assert_eq!(
            list.last(),
            Some(&Connectivity::Offline),
            "{facility} said goodbye"
        );
    }

    // Initial stock is start_days (5 ± 0.4) of the town's need, split among its
    // warehouses; infant formula follows the infants, and beta has none.
    let first = |facility: &str, category: &str| {
        stock_series(&registry, &readings)[&(facility.to_owned(), category.to_owned())][0]
    };
    let cases: &[(&str, &str, &str, f64)] = &[
        ("alpha-wh1", "alpha", "water", 2.0),
        ("alpha-wh2", "alpha", "food", 2.0),
        ("alpha-wh1", "alpha", "infant-formula", 2.0),
        ("beta-wh1", "beta", "water", 1.0),
        ("gamma-wh1", "gamma", "infant-formula", 1.0),
    ];
    for &(facility, town, category, warehouses) in cases {
        let days = days_of_need(
            &registry,
            town,
            category,
            warehouses,
            first(facility, category),
        );
        // The first reading comes up to two simulated hours in.
        assert!(
            (4.4..=5.4).contains(&days),
            "{facility} {category}: {days} days"
        );
    }
    assert_eq!(first("beta-wh1", "infant-formula"), 0.0);

    let series = stock_series(&registry, &readings);
    let drawn = series
        .values()
        .filter(|q| q.windows(2).any(|p| p[1] < p[0]))
        .count();
    let restocked = series
        .values()
        .filter(|q| q.windows(2).any(|p| p[1] > p[0]))
        .count();
    assert!(
        drawn > 0 && restocked > 0,
        "drawn {drawn}, restocked {restocked}"
    );
    assert!(report.readings >= readings.values().map(Vec::len).sum::<usize>() as u64);
    assert!(report.simulated_h > 29.0, "{}", report.simulated_h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_fails_water_points_cuts_restocks_and_fills_shelters() {
    let broker = testkit::Mosquitto::start();
    let registry = tiny_registry();
    let recorder = Recorder::start(&broker.url()).await;
    let mut config = config(&broker, Scenario::builtin("flood").unwrap(), 36_000.0, 3000);
    config.clients = ClientMode::Multiplexed(2);
    let (report, heard) = run(&registry, config, &recorder).await;

    let readings = clean_readings(&registry, &heard);
    assert_eq!(readings.len(), registry.facilities.len());
    assert_eq!(report.connections, 2);
    // On shared connections the simulator announces each gateway itself.
    for (facility, list) in statuses(&registry, &heard) {
        assert_eq!(
            (list.first(), list.last()),
            (Some(&Connectivity::Online), Some(&Connectivity::Offline)),
            "{facility}"
        );
    }

    // Roads cut: stock only ever falls.
    for ((facility, category), quantities) in stock_series(&registry, &readings) {
        assert!(
            quantities.windows(2).all(|p| p[1] <= p[0]),
            "{facility} {category} was restocked: {quantities:?}"
        );
    }
    let water: Vec<(&String, Vec<_>)> = readings
        .iter()
        .filter_map(|(f, list)| {
            let obs: Vec<_> = list
                .iter()
                .filter_map(|r| match r.observation {
                    Observation::Water(w) => Some(w),
                    _ => None,
                })
                .collect();
            (!obs.is_empty()).then_some((f, obs))
        })
        .collect();
    assert_eq!(water.len(), 3);
    for (facility, obs) in &water {
        assert!(
            obs.windows(2).all(|p| p[1].level_l <= p[0].level_l),
            "{facility}: a flooded tank was refilled"
        );
    }
    let failed = water
        .iter()
        .filter(|(_, obs)| obs.iter().all(|w| w.pump == PumpState::Fault))
        .count();
    let unpotable = water
        .iter()
        .filter(|(_, obs)| obs.iter().all(|w| !w.potable))
        .count();
    assert_eq!(
        (failed, unpotable),
        (2, 1),
        "half the pumps (rounded) fail, a third of the water spoils"
    );

    assert_eq!(
        report.sheltered.len(),
        1,
        "a quarter of three towns, rounded"
    );
    let town = registry.town(registry.town_idx(&report.sheltered[0].town).unwrap());
    assert_eq!(
        report.sheltered[0].sheltered,
        (town.population as f64 * 0.15).round() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earthquake_runs_every_power_unit_at_its_burn_rate_and_silences_some_gateways() {
    let broker = testkit::Mosquitto::start();
    let registry = tiny_registry();
    let recorder = Recorder::start(&broker.url()).await;
    let speed = 3600.0; // an hour a second
    let (report, heard) = run(
        &registry,
        config(
            &broker,
            Scenario::builtin("earthquake").unwrap(),
            speed,
            3000,
        ),
        &recorder,
    )
    .await;

    let readings = clean_readings(&registry, &heard);
    let all_statuses = statuses(&registry, &heard);
    assert_eq!(
        report.silent.len(),
        1,
        "a tenth of twelve gateways, rounded"
    );
    let silent = &report.silent[0];
    assert_eq!(
        all_statuses[silent].last(),
        Some(&Connectivity::Offline),
        "{silent}'s Last Will"
    );
    let went_quiet = heard
        .iter()
        .filter(|h| &crate::common::facility_of(h) == silent)
        .map(|h| h.received)
        .max()
        .unwrap();
    let others_after = heard
        .iter()
        .filter(|h| h.received > went_quiet && h.topic.ends_with("/reading"))
        .count();
    assert!(others_after > 10, "the other gateways kept reporting");

    let mut checked = 0;
    for facility in &registry.facilities {
        let reserve::registry::FacilityKind::PowerUnit { burn_l_per_h, .. } = facility.kind else {
            continue;
        };
        if facility.id.as_str() == silent {
            continue;
        }
        let list = &readings[facility.id.as_str()];
        let power: Vec<_> = list
            .iter()
            .map(|r| match r.observation {
                Observation::Power(p) => (r.ts, p),
                _ => panic!("{} sent a non-power reading", facility.id),
            })
            .collect();
        assert!(
            power.iter().all(|(_, p)| p.state == PowerState::Running),
            "{}",
            facility.id
        );
        let (t0, first) = power[0];
        let (t1, last) = power[power.len() - 1];
        let simulated_h = (t1 - t0).num_milliseconds() as f64 / 1000.0 * speed / 3600.0;
        let burn = (first.fuel_l - last.fuel_l) / simulated_h;
        assert!(
            (burn / burn_l_per_h - 1.0).abs() < 0.1,
            "{}: burned {burn} L/h, rated {burn_l_per_h}",
            facility.id
        );
        let measured = last.burn_l_per_h.expect("a running unit reports its burn");
        assert!(
            (measured / burn_l_per_h - 1.0).abs() <= 0.021,
            "{}: reports {measured}",
            facility.id
        );
        checked += 1;
    }
    assert!(checked >= 2, "checked {checked} power units");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comms_cut_silences_a_cluster_with_its_last_will_and_loses_nothing() {
    comms_cut_case(ClientMode::PerFacility).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comms_cut_on_shared_connections_announces_offline_for_the_cluster() {
    comms_cut_case(ClientMode::Multiplexed(2)).await;
}

/// The same story whether the broker publishes the Last Will (own connections) or the
/// simulator says `offline` for the gateway (shared ones).
async fn comms_cut_case(clients: ClientMode) {
    let broker = testkit::Mosquitto::start();
    let registry = tiny_registry();
    let recorder = Recorder::start(&broker.url()).await;
    // The built-in, cut short: from 0.5 to 1.5 simulated hours (seconds, here).
    let mut scenario = Scenario::builtin("comms-cut").unwrap();
    let cut = scenario.comms_cut.as_mut().unwrap();
    cut.at_h = 0.5;
    cut.for_h = Some(1.0);
    let mut config = config(&broker, scenario, 3600.0, 2600);
    config.targets.clusters = vec!["c02".into()];
    config.clients = clients;
    let (report, heard) = run(&registry, config, &recorder).await;

    let cut = report.comms_cut.expect("a comms cut");
    assert_eq!(cut.clusters, ["c02"]);
    assert_eq!(cut.facilities, ["gamma-wh1", "gamma-wp1", "gamma-pu1"]);

    let readings = clean_readings(&registry, &heard);
    let all_statuses = statuses(&registry, &heard);
    use Connectivity::{Offline, Online};
    for facility in facility_ids(&registry) {
        let expected: &[Connectivity] = if facility.starts_with("gamma") {
            // Last Will when cut, back online, then the clean goodbye.
            &[Online, Offline, Online, Offline]
        } else {
            &[Online, Offline]
        };
        assert_eq!(
            all_statuses[&facility], expected,
            "{facility} ({clients:?})"
        );
        // Nothing was lost: every sequence number from 1 arrived.
        let seqs: Vec<u64> = readings[&facility].iter().map(|r| r.seq.unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{facility}"
        );
    }
    for facility in &cut.facilities {
        let backlog = heard
            .iter()
            .find(|h| &crate::common::facility_of(h) == facility && h.is_array())
            .unwrap_or_else(|| panic!("{facility} sent no backlog array"));
        let crate::common::Verdict::Readings(buffered) = crate::common::verdict(&registry, backlog)
        else {
            panic!("{facility}'s backlog was rejected");
        };
        assert!(
            buffered.len() >= 3,
            "{facility}: {} buffered readings",
            buffered.len()
        );
    }
    assert!(report.backlog_messages >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_runs_generators_and_switches_pumps_off_then_returns_to_normal() {
    let broker = testkit::Mosquitto::start();
    let registry = tiny_registry();
    let recorder = Recorder::start(&broker.url()).await;
    // Two simulated hours of generator drill and one of pumps off, in 3.2 s; without
    // the random pump faults and weekly self-tests, which would blur what is checked.
    let mut drill = Scenario::builtin("drill").unwrap();
    drill.water_point.pump_fault_per_h = 0.0;
    drill.power_unit.self_test_every_h = 0.0;
    let (_, heard) = run(&registry, config(&broker, drill, 3600.0, 3200), &recorder).await;

    let readings = clean_readings(&registry, &heard);
    for (facility, list) in &readings {
        let (first, last) = (&list[0].observation, &list[list.len() - 1].observation);
        match (first, last) {
            (Observation::Power(a), Observation::Power(b)) => {
                assert_eq!(
                    (a.state, b.state),
                    (PowerState::Running, PowerState::Standby),
                    "{facility}"
                );
                assert!(b.fuel_l < a.fuel_l, "{facility} burned fuel in the drill");
            }
            (Observation::Water(a), Observation::Water(b)) => {
                assert_eq!(
                    (a.pump, b.pump),
                    (PumpState::Off, PumpState::Ok),
                    "{facility}"
                );
            }
            _ => {}
        }
    }
}

/// With readings a minute apart, a run of two seconds hears every gateway once when the
/// first readings are spread over 300 ms (the demo spreads them over a second, so no
/// town shows red for warehouses not heard from yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_readings_come_together_when_asked() {
    let broker = testkit::Mosquitto::start();
    let registry = tiny_registry();
    let recorder = Recorder::start(&broker.url()).await;
    let mut config = config(&broker, Scenario::normal(), 60.0, 2000);
    config.report_every = Some(Duration::from_secs(60));
    config.first_report_within = Some(Duration::from_millis(300));
    let (_, heard) = run(&registry, config, &recorder).await;
    let readings = clean_readings(&registry, &heard);
    let mut ids = facility_ids(&registry);
    ids.sort();
    assert_eq!(readings.keys().cloned().collect::<Vec<_>>(), ids);
    assert!(
        readings.values().all(|list| list.len() == 1),
        "{readings:?}"
    );
}
