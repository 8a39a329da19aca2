//! The files in deploy/ are used for real: the ACL in a real Mosquitto in front of the
//! service, and the sample configuration through `check-config`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::Deployment;
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
    let service =
        tokio::task::block_in_place(|| crate::common::Service::start(&deployment.config()));

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

/// Where the sample keeps its secrets; the test puts them in its temp dir instead.
const SECRETS_DIR: &str = "/etc/stockpile/secrets/";

#[test]
fn the_sample_production_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let sample = deploy_file("stockpile.toml");
    // Every secret the sample names is a file under /etc/stockpile/secrets/, none of
    // them in the repository: each becomes a file in the temp dir, with a value that
    // must never be printed.
    let mut secret_files = Vec::new();
    for (at, _) in sample.match_indices(SECRETS_DIR) {
        let line_start = sample[..at].rfind('\n').map_or(0, |i| i + 1);
        if sample[line_start..at].trim_start().starts_with('#') {
            continue;
        }
        let name: String = sample[at + SECRETS_DIR.len()..]
            .chars()
            .take_while(|c| *c != '"')
            .collect();
        std::fs::write(secrets.join(&name), format!("secret-{name}\n")).unwrap();
        secret_files.push(name);
    }
    secret_files.sort();
    assert_eq!(
        secret_files,
        [
            "api-ops-token",
            "api-wall-token",
            "influx-token",
            "mqtt-password",
            "sms-password"
        ],
        "the secrets the sample reads"
    );
    let in_temp = format!("{}/", secrets.display());
    std::fs::write(
        dir.path().join("stockpile.toml"),
        sample.replace(SECRETS_DIR, &in_temp),
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
    let output = Command::new(env!("CARGO_BIN_EXE_stockpile"))
        .arg("check-config")
        .arg(dir.path().join("stockpile.toml"))
        .env_clear()
        // The sample's store is under /var/lib; point it into the temp dir.
        .env("STOCKPILE__STORE__PATH", dir.path().join("stockpile.db"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    // Alerts reach every demo contact and the API has readers: no warning.
    assert_eq!(stderr, "", "{stdout}");
    assert!(stdout.contains("343"), "{stdout}");
    for line in [
        "  api         127.0.0.1:8080 (reads need a token, 2 tokens)",
        "  influx      http://127.0.0.1:8086 (v2)",
        "  smtp        smtp://127.0.0.1:25",
        "  sms         https://sms.example.org/api/send",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in\n{stdout}"
        );
    }
    assert!(!stdout.contains("secret-"), "no secret printed: {stdout}");
}
