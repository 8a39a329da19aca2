//! Faults on demand against a real Mosquitto, judged by `reserve::wire` as the service
//! would judge them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{
    Recorder, Verdict, clean_readings, facility_of, run, statuses, tiny_registry, verdict,
};
use device_sim::{ClientMode, Fault, Scenario, SimConfig};
use reserve::wire::{Connectivity, RejectReason};

fn config(broker: &testkit::Mosquitto, fault: Fault, towns: &[&str]) -> SimConfig {
    let mut config = SimConfig::new(broker.url(), Scenario::normal());
    config.speed = 36_000.0;
    config.report_every = Some(Duration::from_millis(200));
    config.duration = Some(Duration::from_millis(1500));
    config.faults = vec![fault];
    config.targets.towns = towns.iter().map(|t| (*t).to_owned()).collect();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_mode_produces_each_reject_reason_once() {
    let broker = testkit::Mosquitto::start();
    let registry = tiny_registry();
    let recorder = Recorder::start(&broker.url()).await;
    let mut config = config(&broker, Fault::Malformed, &[]);
    config.clients = ClientMode::Multiplexed(1);
    let (report, heard) = run(&registry, config, &recorder).await;

    let sent: Vec<RejectReason> = report.malformed.iter().map(|m| m.reason).collect();
    assert_eq!(sent, RejectReason::ALL.to_vec());
    let mut rejected: BTreeMap<RejectReason, usize> = BTreeMap::new();
    for h in &heard {
        if let Verdict::Rejected(reason, _) = verdict(&registry, h) {
            *rejected.entry(reason).or_default() += 1;
        }
    }
    let expected: BTreeMap<RejectReason, usize> =
        RejectReason::ALL.iter().map(|&r| (r, 1)).collect();
    assert_eq!(
        rejected, expected,
        "every reason exactly once; the gateways' own readings pass"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_dying_without_its_will_stays_online_and_falls_silent() {
    let broker = testkit::Mosquitto::start();
    let registry = tiny_registry();
    let recorder = Recorder::start(&broker.url()).await;
    let (report, heard) = run(
        &registry,
        config(&broker, Fault::DieWithoutWill, &["gamma"]),
        &recorder,
    )
    .await;

    assert_eq!(
        report.faults[0].facilities,
        ["gamma-wh1", "gamma-wp1", "gamma-pu1"]
    );
    let readings = clean_readings(&registry, &heard);
    for (facility, list) in statuses(&registry, &heard) {
        if facility.starts_with("gamma") {
            // No Last Will and no goodbye: only silence tells.
            assert_eq!(list, [Connectivity::Online], "{facility}");
            // It dies at its first wake-up after being heard (two readings if the
            // first waited for the connection).
            let n = readings[&facility].len();
            assert!((1..=2).contains(&n), "{facility} sent {n} readings");
        } else {
            assert_eq!(
                list,
                [Connectivity::Online, Connectivity::Offline],
                "{facility}"
            );
            assert!(readings[&facility].len() >= 5, "{facility}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_sensor_repeats_its_first_values_with_fresh_stamps() {
    let broker = testkit::Mosquitto::start();
    let registry = tiny_registry();
    let recorder = Recorder::start(&broker.url()).await;
    let (_, heard) = run(
        &registry,
        config(&broker, Fault::Stuck, &["alpha"]),
        &recorder,
    )
    .await;

    let readings = clean_readings(&registry, &heard);
    for (facility, list) in &readings {
        assert!(list.len() >= 5, "{facility}");
        let frozen = list.iter().all(|r| r.observation == list[0].observation);
        // Ten simulated hours a second: a working warehouse's stock moves every reading.
        let expect_frozen = facility.starts_with("alpha");
        if expect_frozen || facility.contains("-wh") {
            assert_eq!(frozen, expect_frozen, "{facility}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_clock_is_rejected_as_in_the_future() {
    let broker = testkit::Mosquitto::start();
    let registry = tiny_registry();
    let recorder = Recorder::start(&broker.url()).await;
    let fault = "clock-skew".parse::<Fault>().unwrap();
    let (_, heard) = run(&registry, config(&broker, fault, &["beta"]), &recorder).await;

    let mut verdicts: BTreeMap<(bool, &str), usize> = BTreeMap::new();
    for h in heard.iter().filter(|h| h.topic.ends_with("/reading")) {
        let outcome = match verdict(&registry, h) {
            Verdict::Readings(_) => "accepted",
            Verdict::Rejected(RejectReason::TsInFuture, _) => "ts_in_future",
            other => panic!("{}: {other:?}", h.topic),
        };
        *verdicts
            .entry((facility_of(h).starts_with("beta"), outcome))
            .or_default() += 1;
    }
    let kinds: Vec<(bool, &str)> = verdicts.keys().copied().collect();
    assert_eq!(kinds, [(false, "accepted"), (true, "ts_in_future")]);
}
