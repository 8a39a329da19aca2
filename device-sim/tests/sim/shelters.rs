//! Shelters in the simulator (docs/design.md#shelters), against a real Mosquitto: in a
//! flood the shelters of the town taking in displaced people convert and fill, never
//! beyond capacity; the others stay in everyday use with nobody inside.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{Recorder, TINY_REGISTRY, clean_readings, run};
use device_sim::{Scenario, SimConfig};
use reserve::Observation;
use reserve::reading::ShelterMode;
use reserve::registry::{Registry, Source, load_registry};

/// The tiny city with a school in each town, big enough for its share of any influx
/// but a quarter of it (alpha's 1,500 displaced would need 1,500 places).
const SHELTERS: &str = r#"
[[facility]]
id = "alpha-sh1"
town = "alpha"
kind = "shelter"
capacity = 400
dual_use = "school"

[[facility]]
id = "beta-sh1"
town = "beta"
kind = "shelter"
capacity = 400
dual_use = "gym"

[[facility]]
id = "gamma-sh1"
town = "gamma"
kind = "shelter"
capacity = 400
dual_use = "hotel"
"#;

fn registry() -> Arc<Registry> {
    let source = Source {
        name: "tiny.toml".into(),
        text: format!("{TINY_REGISTRY}{SHELTERS}"),
    };
    Arc::new(load_registry(&source, &[], &mut |n| Err(format!("no csv {n}"))).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_flood_the_sheltering_towns_shelters_convert_then_fill() {
    let broker = testkit::Mosquitto::start();
    let registry = registry();
    let recorder = Recorder::start(&broker.url()).await;
    // Two simulated hours a wall-clock second: the influx comes at 2 h, the shelters
    // convert for half an hour, then fill over six.
    let mut config = SimConfig::new(broker.url(), Scenario::builtin("flood").unwrap());
    config.speed = 7200.0;
    config.seed = 7;
    config.report_every = Some(Duration::from_millis(150));
    config.duration = Some(Duration::from_millis(3500));
    let (report, heard) = run(&registry, config, &recorder).await;
    let readings = clean_readings(&registry, &heard);

    assert_eq!(
        report.sheltered.len(),
        1,
        "a quarter of three towns, rounded"
    );
    let sheltering = &report.sheltered[0].town;
    for id in ["alpha-sh1", "beta-sh1", "gamma-sh1"] {
        let seen: Vec<(ShelterMode, u64)> = readings[id]
            .iter()
            .map(|r| match r.observation {
                Observation::Shelter(o) => (o.mode, o.occupancy),
                ref other => panic!("{id} sent {other:?}"),
            })
            .collect();
        let modes: Vec<ShelterMode> = seen.iter().map(|s| s.0).collect();
        if id.starts_with(sheltering.as_str()) {
            let order = |m: &ShelterMode| match m {
                ShelterMode::Normal => 0,
                ShelterMode::Activating => 1,
                ShelterMode::Open => 2,
                ShelterMode::Closed => 3,
            };
            assert!(modes.is_sorted_by_key(order), "{id}: {modes:?}");
            assert!(modes.contains(&ShelterMode::Activating), "{id}: {modes:?}");
            assert_eq!(modes.last(), Some(&ShelterMode::Open), "{id}: {modes:?}");
            let occupancy: Vec<u64> = seen.iter().map(|s| s.1).collect();
            assert!(occupancy.is_sorted(), "{id} fills: {occupancy:?}");
            let last = *occupancy.last().unwrap();
            assert!(last > 0 && last <= 400, "{id}: {occupancy:?}");
        } else {
            assert!(
                seen.iter().all(|&s| s == (ShelterMode::Normal, 0)),
                "{id} stays in everyday use: {seen:?}"
            );
        }
    }
}
