//! Load mode against a real Mosquitto: it reaches its rate on this machine, and every
//! reading arrives stamped and numbered as a gateway's would be. A test binary of its
//! own, so no other test competes for the two cores while it measures.

use std::time::Duration;

use crate::common::{Recorder, clean_readings, run, tiny_registry};
use device_sim::{LoadConfig, Qos, Scenario, SimConfig};

const RATE: u32 = 2000;
const DURATION: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_mode_reaches_its_rate_with_numbered_stamped_readings() {
    let broker = testkit::Mosquitto::start();
    let registry = tiny_registry();
    let recorder = Recorder::start(&broker.url()).await;
    let mut config = SimConfig::new(broker.url(), Scenario::normal());
    config.load = Some(LoadConfig::new(RATE, DURATION));
    let (report, heard) = run(&registry, config, &recorder).await;

    let load = report.load.expect("a load report");
    eprintln!("load run: {load:?}");
    assert_eq!(load.qos, Qos::AtLeastOnce);
    assert_eq!(
        load.confirmed, load.sent,
        "the broker acknowledged every reading"
    );
    let target = f64::from(RATE) * DURATION.as_secs_f64();
    assert!(
        load.sent as f64 >= 0.9 * target,
        "sent {} of {target}",
        load.sent
    );
    assert!(
        load.achieved_rate >= 0.9 * f64::from(RATE),
        "{} readings/s",
        load.achieved_rate
    );

    // Every reading arrived, valid, with per-facility seq and ts strictly increasing and
    // no ts after its arrival (checked by clean_readings), and no gap in the numbers.
    let readings = clean_readings(&registry, &heard);
    let total: usize = readings.values().map(Vec::len).sum();
    assert_eq!(total as u64, load.sent);
    for (facility, list) in &readings {
        let last = list.last().and_then(|r| r.seq).unwrap_or(0);
        assert_eq!(
            last,
            list.len() as u64,
            "{facility}: a gap in the sequence numbers"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_beyond_one_reading_per_millisecond_per_facility_is_refused() {
    let registry = tiny_registry();
    let mut config = SimConfig::new("mqtt://127.0.0.1:1", Scenario::normal());
    config.load = Some(LoadConfig::new(50_000, DURATION));
    let simulator = device_sim::Simulator::new(registry, config).unwrap();
    let err = simulator
        .run(tokio_util::sync::CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("need at least 50 facilities"), "{err}");
}
