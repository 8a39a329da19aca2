//! `stockpile serve` prunes its store by itself: the real binary, on a SQLite file that
//! already holds readings older than the configured retention.

use std::time::{Duration, Instant};

use crate::common::Deployment;
use chrono::Utc;
use reserve::reading::{Observation, Reading};
use store::{Store, StoreOptions};

#[test]
fn serve_prunes_readings_beyond_retention_soon_after_start() {
    let port = testkit::free_port();
    let deployment = Deployment::with_mqtt(&format!(
        "url = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"stockpile-prune-test\"\nembedded_broker = true\n"
    ));
    // A day's retention, passes every second (the first one then comes after a second).
    let config = std::fs::read_to_string(deployment.config()).unwrap();
    let config = config.replace(
        "[store]\npath = \"stockpile.db\"\n",
        "[store]\npath = \"stockpile.db\"\nretention = \"1d\"\nprune_every = \"1s\"\n",
    );
    assert!(config.contains("prune_every"), "{config}");
    std::fs::write(deployment.config(), config).unwrap();

    // The file as a service that pruned too little would have left it: 3,000 readings
    // of three days ago, and 100 of the last hours.
    let loaded = server::config::load(&deployment.config(), &[]).expect("config loads");
    let registry = loaded.registry;
    let warehouse = registry.facility_idx("js-wh0").expect("js-wh0");
    let mut store = Store::open(&deployment.db(), StoreOptions::default()).unwrap();
    let mut batch = store.batch().unwrap();
    let three_days_ago = Utc::now() - chrono::Duration::days(3);
    let an_hour_ago = Utc::now() - chrono::Duration::hours(1);
    for (from, n) in [(three_days_ago, 3_000), (an_hour_ago, 100)] {
        for i in 0..n {
            let reading = Reading {
                facility: warehouse,
                ts: from + chrono::Duration::seconds(i),
                seq: None,
                observation: Observation::Stock(vec![]),
            };
            batch
                .insert_reading(&registry, &reading, reading.ts)
                .unwrap();
        }
    }
    batch.commit().unwrap();
    assert_eq!(store.count_readings().unwrap(), 3_100);

    let service = crate::common::Service::start(&deployment.config());
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.count_readings().unwrap() > 100 {
        assert!(
            Instant::now() < deadline,
            "old readings pruned; log:\n{}",
            service.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        store.count_readings().unwrap(),
        100,
        "the last hour is kept"
    );
    service.wait_for_output("Store pruned.", Duration::from_secs(10));

    service.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(service.wait(Duration::from_secs(10)), Some(0));
}
