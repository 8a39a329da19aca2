//! The files in deploy/ are used for real: the ACL in a real Mosquitto in front of the
//! service, and the sample configuration through `check-config`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Deployment;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Publishes as `user` with QoS 1; returns once the broker acknowledged each message
/// (Mosquitto acknowledges a publish it refuses by ACL too, and drops it).
async fn publish_as(port: u16, user: &str, messages: &[(&str, String)]) {
    let mut options = MqttOptions::new(format!("gw-{user}"), "127.0.0.1", port);
    options.set_credentials(user, "gw-secret");
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    for (topic, payload) in messages {
        client
            .publish(*topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    let mut acked = 0;
    while acked < messages.len() {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Ok(Event::Incoming(Incoming::ConnAck(c)))) => {
                assert_eq!(
                    c.code,
                    rumqttc::ConnectReturnCode::Success,
                    "{user} connects"
                )
            }
            Ok(Ok(_)) => {}
            other => panic!("{user}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cannot_publish_for_another_town() {
    let broker = testkit::Mosquitto::builder()
        .users(&[
            ("stockpile", "service-secret"),
            ("jingshan", "gw-secret"),
            ("donghua", "gw-secret"),
        ])
        .acl(&deploy_file("acl"))
        .start();
    let deployment = Deployment::with_mqtt(&format!(
        "url = \"{}\"\nclient_id = \"stockpile-acl-test\"\nusername = \"stockpile\"\npassword_file = \"mqtt-password\"\n",
        broker.url()
    ));
    std::fs::write(
        deployment.dir.path().join("mqtt-password"),
        "service-secret\n",
    )
    .unwrap();
    let service = tokio::task::block_in_place(|| common::Service::start(&deployment.config()));

    let ts = chrono::Utc::now().timestamp_millis();
    let reading = |water: u32| format!(r#"{{"ts": {ts}, "stock": {{"water": {water}}}}}"#);
    // Jingshan's gateway speaks for its own warehouse, then tries to speak for Donghua.
    publish_as(
        broker.port(),
        "jingshan",
        &[
            ("stockpile/v1/jingshan/js-wh0/reading", reading(1000)),
            ("stockpile/v1/donghua/dh-wh1/reading", reading(1)),
        ],
    )
    .await;
    // Donghua's own gateway may.
    publish_as(
        broker.port(),
        "donghua",
        &[("stockpile/v1/donghua/dh-wh1/reading", reading(50_000))],
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(10);
    while deployment.stored() < 2 {
        assert!(Instant::now() < deadline, "the two allowed readings arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store = store::Store::open(&deployment.db(), store::StoreOptions::default()).unwrap();
    assert_eq!(
        store.count_readings().unwrap(),
        2,
        "the forged reading never arrived"
    );
    let donghua = reserve::FacilityId::parse("dh-wh1").unwrap();
    let rows = store
        .readings(
            &donghua,
            chrono::Utc::now() - chrono::Duration::hours(1),
            chrono::Utc::now() + chrono::Duration::hours(1),
            10,
        )
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].body["stock"]["water"], 50_000.0);
    service.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(service.wait(Duration::from_secs(10)), Some(0));
}

#[test]
fn the_sample_production_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stockpile.toml"),
        deploy_file("stockpile.toml"),
    )
    .unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo");
    for file in [
        "registry.toml",
        "towns.csv",
        "facilities.csv",
        "contacts.csv",
    ] {
        std::fs::copy(demo.join(file), dir.path().join(file)).unwrap();
    }
    let secret = dir.path().join("mqtt-password");
    std::fs::write(&secret, "secret\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .arg("check-config")
        .arg(dir.path().join("stockpile.toml"))
        .env_clear()
        // The sample names system paths; point them into the temp dir.
        .env("STOCKPILE__MQTT__PASSWORD_FILE", &secret)
        .env("STOCKPILE__STORE__PATH", dir.path().join("stockpile.db"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("343"), "{stdout}");
    assert!(
        !stdout.contains("secret") && !stderr.contains("secret\n"),
        "no secret printed"
    );
}
