//! A cluster instance (docs/design.md#cluster-instance): `stockpile serve` with
//! `[scope] cluster = "c07"` next to the cluster's own Mosquitto, which bridges the
//! cluster's topics to the city broker (deploy/cluster/). It watches only its towns,
//! keeps notifying its officers when the link to the city is cut, and once the link is
//! back the city holds the same readings and ledger.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reserve::FacilityId;
use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};
use store::{Store, StoreOptions};

use crate::common::Service;

/// The cluster this instance watches.
const CLUSTER: &str = "c07";
/// `(town, cluster)`: two towns of the cluster and one of a neighbouring cluster, each
/// with one warehouse `{town}-wh`. 10,000 residents × 3 L a day: 90,000 L is the
/// three-day target.
const TOWNS: [(&str, &str); 3] = [("qianmen", "c07"), ("dashilan", "c07"), ("tiantan", "c08")];
/// Five days of water: comfortably above target.
const FULL_L: u64 = 150_000;
/// One day of water: below the three-day target.
const LOW_L: u64 = 30_000;

/// The city's registry, one file for both instances: the cluster instance narrows it.
/// Gateways report every ten minutes, so a cut of a few minutes silences nobody.
fn registry_toml() -> String {
    let mut registry = String::from(
        "[[category]]\nid = \"water\"\nname = \"Drinking water\"\nunit = \"L\"\ndaily_need = 3.0\n",
    );
    for (town, cluster) in TOWNS {
        registry.push_str(&format!(
            "\n[[town]]\nid = \"{town}\"\nname = \"{town}\"\ndistrict = \"xicheng\"\ncluster = \"{cluster}\"\npopulation = 10000\n\
             \n[[facility]]\nid = \"{town}-wh\"\ntown = \"{town}\"\nkind = \"warehouse\"\nreport_every = \"10m\"\n\
             \n[[contact]]\nname = \"{town} officer\"\nemail = \"{town}@example.org\"\nlang = \"en\"\ntowns = [\"{town}\"]\n"
        ));
    }
    registry
}

/// A deployment dir with the registry and a config whose sections are `sections`.
fn deployment(sections: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("registry.toml"), registry_toml()).expect("write registry");
    std::fs::write(
        dir.path().join("stockpile.toml"),
        format!("registry = \"registry.toml\"\n{sections}"),
    )
    .expect("write config");
    dir
}

/// `[mqtt]`, `[store]`, `[api]`, `[alerts]`, `[log]` of one instance: alerts announce at
/// once (no group wait, no start-up grace) so a test sees them within seconds.
fn instance_sections(broker_url: &str, client_id: &str, listen: &str) -> String {
    format!(
        "[mqtt]\nurl = \"{broker_url}\"\nclient_id = \"{client_id}\"\n\
         [store]\npath = \"stockpile.db\"\n\
         [api]\nlisten = \"{listen}\"\npublic_read = true\n\
         [alerts]\ngroup_wait = \"0s\"\nstartup_grace_factor = 0\n\
         [log]\nlevel = \"info\"\n"
    )
}

/// Publishes `(town, ts, litres)` readings of each town's warehouse with QoS 1, in
/// order on one connection, and waits for every PUBACK.
fn publish(host: &str, port: u16, readings: &[(&str, DateTime<Utc>, u64)]) {
    let (client, mut connection) = Client::new(MqttOptions::new("gw-cluster-test", host, port), 64);
    for &(town, ts, litres) in readings {
        let payload = serde_json::json!({"ts": ts.timestamp_millis(), "stock": {"water": litres}});
        client
            .publish(
                format!("stockpile/v1/{town}/{town}-wh/reading"),
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&payload).expect("json"),
            )
            .expect("queue a reading");
    }
    let mut acked = 0;
    while acked < readings.len() {
        match connection.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("the gateway lost the cluster broker: {e}"),
            Err(_) => panic!("only {acked} of {} readings acknowledged", readings.len()),
        }
    }
    let _ = client.disconnect();
}

/// Readings stored per warehouse in an instance's SQLite file (only those with any).
fn stored_per_facility(db: &Path) -> BTreeMap<String, usize> {
    if !db.exists() {
        return BTreeMap::new();
    }
    let store = Store::open(db, StoreOptions::default()).expect("open the SQLite file");
    let (from, to) = (
        Utc::now() - chrono::Duration::days(2),
        Utc::now() + chrono::Duration::hours(1),
    );
    TOWNS
        .iter()
        .filter_map(|(town, _)| {
            let facility = FacilityId::parse(&format!("{town}-wh")).expect("facility id");
            let n = store
                .readings(&facility, from, to, 10_000)
                .expect("read the store")
                .len();
            (n > 0).then(|| (facility.to_string(), n))
        })
        .collect()
}

/// `GET /api/v1/towns`: each town's status and worst days, as the board shows them.
fn towns(api: &str) -> BTreeMap<String, (String, Option<f64>)> {
    let list = testkit::http::get(&format!("{api}/api/v1/towns"), &[]).json();
    list["towns"]
        .as_array()
        .unwrap_or_else(|| panic!("no towns in {list}"))
        .iter()
        .map(|t| {
            let id = t["id"].as_str().expect("town id").to_owned();
            let status = t["status"].as_str().expect("status").to_owned();
            (id, (status, t["worst_days"].as_f64()))
        })
        .collect()
}

/// Polls `what` until it returns `Some`, or fails naming `waiting_for`.
fn wait_until<T>(waiting_for: &str, timeout: Duration, mut what: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = what() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "not within {timeout:?}: {waiting_for}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn scope_mistakes_are_located() {
    let cases: &[(&str, &str)] = &[
        (
            "[scope]\ncluster = \"c99\"\n",
            "stockpile.toml:3: scope.cluster: unknown cluster \"c99\"\n1 error\n",
        ),
        (
            "[scope]\ntowns = [\"qianmen\", \"qianmenn\"]\n",
            "stockpile.toml:3: scope.towns[1]: unknown town \"qianmenn\"\n1 error\n",
        ),
        (
            "[scope]\ncluster = \"c07\"\ntowns = [\"tiantan\"]\n",
            "stockpile.toml:4: scope.towns: give cluster or towns, not both\n1 error\n",
        ),
        (
            "[scope]\n",
            "stockpile.toml:2: scope: expected cluster = \"<id>\" or towns = [\"<id>\", …]\n1 error\n",
        ),
        (
            "[scope]\ndistrict = \"xicheng\"\n",
            "stockpile.toml:3: scope: unknown field `district`, expected `cluster` or `towns`\n1 error\n",
        ),
    ];
    for (sections, expected) in cases {
        let dir = deployment(sections);
        let output = Command::new(env!("CARGO_BIN_EXE_stockpile"))
            .args(["check-config", "stockpile.toml"])
            .current_dir(dir.path())
            .env_clear()
            .output()
            .expect("run stockpile check-config");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            *expected,
            "config:\n{sections}"
        );
        assert_eq!(output.status.code(), Some(1), "config:\n{sections}");
    }
}

#[test]
fn cluster_instance_watches_only_its_towns() {
    let broker = testkit::Mosquitto::start();
    let dir = deployment(&format!(
        "[scope]\ncluster = \"{CLUSTER}\"\n{}",
        instance_sections(&broker.url(), "stockpile-c07", "127.0.0.1:0")
    ));
    let service = Service::start(&dir.path().join("stockpile.toml"));
    let api = service.api_url();

    // The neighbour's reading first: the broker delivers in order, so once the last
    // reading of the cluster is stored, the neighbour's has had its chance.
    let now = Utc::now();
    publish(
        "127.0.0.1",
        broker.port(),
        &[
            ("tiantan", now, FULL_L),
            ("qianmen", now, FULL_L),
            ("dashilan", now, LOW_L),
        ],
    );
    let db = dir.path().join("stockpile.db");
    let stored = wait_until(
        "both towns of the cluster stored",
        Duration::from_secs(30),
        || {
            let stored = stored_per_facility(&db);
            (stored.len() >= 2).then_some(stored)
        },
    );
    assert_eq!(
        stored,
        BTreeMap::from([("dashilan-wh".to_owned(), 1), ("qianmen-wh".to_owned(), 1)])
    );

    let towns = towns(&api);
    assert_eq!(
        towns.keys().collect::<Vec<_>>(),
        ["dashilan", "qianmen"],
        "the board of a cluster instance shows its own towns"
    );
    assert_eq!(towns["dashilan"].0, "critical");
}
