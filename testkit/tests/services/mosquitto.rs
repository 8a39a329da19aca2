use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::Mosquitto;

use crate::port_is_open;

fn mosquitto_pub(broker: &Mosquitto, args: &[&str]) -> Output {
    let program = testkit::require_binary("mosquitto_pub", "mosquitto-clients");
    Command::new(program)
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(args)
        .output()
        .expect("mosquitto_pub runs")
}

/// Topic and payload of every retained message under `filter` that `user` may read.
fn retained_messages(
    broker: &Mosquitto,
    user: Option<(&str, &str)>,
    filter: &str,
) -> BTreeSet<String> {
    let program = testkit::require_binary("mosquitto_sub", "mosquitto-clients");
    let mut command = Command::new(program);
    command.args(["-h", "127.0.0.1", "-p", &broker.port().to_string()]);
    if let Some((name, password)) = user {
        command.args(["-u", name, "-P", password]);
    }
    // Retained messages arrive right after SUBACK; -W ends the wait for more.
    let output = command
        .args(["-t", filter, "-v", "--retained-only", "-W", "1"])
        .output()
        .expect("mosquitto_sub runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn broker_delivers_a_published_message_to_a_live_subscriber() {
    let broker = Mosquitto::start();
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port()));

    let subscriber = Command::new(testkit::require_binary(
        "mosquitto_sub",
        "mosquitto-clients",
    ))
    .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
    .args([
        "-t",
        "stockpile/v1/jingshan/jingshan-wh1/reading",
        "-C",
        "1",
        "-W",
        "20",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .expect("mosquitto_sub starts");
    let mut subscriber = Some(subscriber);

    // The subscription's start is invisible from here: publish until it is delivered.
    let payload = r#"{"ts":"2026-11-24T05:00:00Z","stock":{"water":12000}}"#;
    let deadline = Instant::now() + Duration::from_secs(15);
    let output = loop {
        let publish = mosquitto_pub(
            &broker,
            &[
                "-t",
                "stockpile/v1/jingshan/jingshan-wh1/reading",
                "-q",
                "1",
                "-m",
                payload,
            ],
        );
        assert!(publish.status.success(), "publish failed: {publish:?}");
        let child = subscriber.as_mut().expect("subscriber still owned");
        if child.try_wait().expect("subscriber status").is_some() {
            break subscriber
                .take()
                .expect("subscriber")
                .wait_with_output()
                .expect("subscriber output");
        }
        assert!(
            Instant::now() < deadline,
            "the subscriber got nothing within 15 s; broker log:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), payload);
}

#[test]
fn users_and_acl_confine_each_gateway_to_its_own_town() {
    let broker = Mosquitto::builder()
        .users(&[("ingest", "ingest-pw"), ("gw-jingshan", "gw-pw")])
        .acl(
            "user ingest\ntopic read stockpile/#\n\n\
             user gw-jingshan\ntopic write stockpile/v1/jingshan/#\n",
        )
        .start();

    struct Case {
        what: &'static str,
        user: Option<(&'static str, &'static str)>,
        topic: &'static str,
        connects: bool,
        delivered: bool,
    }
    let cases = [
        Case {
            what: "gateway publishes to its own town",
            user: Some(("gw-jingshan", "gw-pw")),
            topic: "stockpile/v1/jingshan/wh1/reading",
            connects: true,
            delivered: true,
        },
        Case {
            what: "gateway publishes to another town",
            user: Some(("gw-jingshan", "gw-pw")),
            topic: "stockpile/v1/donghuamen/wh1/reading",
            connects: true,
            delivered: false,
        },
        Case {
            what: "reader may not publish",
            user: Some(("ingest", "ingest-pw")),
            topic: "stockpile/v1/jingshan/wh2/reading",
            connects: true,
            delivered: false,
        },
        Case {
            what: "wrong password",
            user: Some(("gw-jingshan", "wrong")),
            topic: "stockpile/v1/jingshan/wh3/reading",
            connects: false,
            delivered: false,
        },
        Case {
            what: "anonymous client",
            user: None,
            topic: "stockpile/v1/jingshan/wh4/reading",
            connects: false,
            delivered: false,
        },
    ];
    for case in &cases {
        let mut args = vec![
            "-t", case.topic, "-m", case.what, "-r", "-q", "1", "-V", "5",
        ];
        if let Some((name, password)) = case.user {
            args.extend(["-u", name, "-P", password]);
        }
        let output = mosquitto_pub(&broker, &args);
        assert_eq!(
            output.status.success(),
            case.connects,
            "{}: {output:?}",
            case.what
        );
        if !case.connects {
            assert!(
                // "not authorised" (MQTT 3.1.1) or "Not authorized" (MQTT 5).
                String::from_utf8_lossy(&output.stderr)
                    .to_ascii_lowercase()
                    .contains("not author"),
                "{}: {output:?}",
                case.what
            );
        }
    }

    let received = retained_messages(&broker, Some(("ingest", "ingest-pw")), "stockpile/#");
    let expected: BTreeSet<String> = cases
        .iter()
        .filter(|case| case.delivered)
        .map(|case| format!("{} {}", case.topic, case.what))
        .collect();
    assert_eq!(received, expected, "broker log:\n{}", broker.log());
}

#[test]
fn restart_keeps_the_port_and_persisted_retained_messages() {
    let mut broker = Mosquitto::builder()
        .persistence(true)
        .max_inflight(100)
        .max_queued(10_000)
        .start();
    let port = broker.port();
    let status_topic = "stockpile/v1/jingshan/jingshan-gen1/status";
    let publish = mosquitto_pub(
        &broker,
        &["-t", status_topic, "-m", "online", "-r", "-q", "1"],
    );
    assert!(publish.status.success(), "{publish:?}");

    broker.stop();
    assert!(!broker.is_running());
    assert!(!port_is_open(port), "port {port} still open after stop");

    broker.start_again();
    assert_eq!(broker.port(), port);
    assert_eq!(
        retained_messages(&broker, None, "stockpile/#"),
        BTreeSet::from([format!("{status_topic} online")]),
        "broker log:\n{}",
        broker.log()
    );
    let conf =
        std::fs::read_to_string(broker.dir().join("mosquitto.conf")).expect("config written");
    assert!(conf.contains("max_inflight_messages 100"), "{conf}");
}

#[test]
fn dropping_the_broker_kills_it_and_removes_its_dir() {
    let broker = Mosquitto::start();
    let (port, dir) = (broker.port(), broker.dir().to_path_buf());
    assert!(dir.join("mosquitto.conf").is_file());
    drop(broker);
    assert!(!port_is_open(port), "port {port} still open after drop");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn a_broker_that_cannot_start_panics_quoting_its_log() {
    let panic = std::panic::catch_unwind(|| {
        Mosquitto::builder()
            .config_line("no_such_option true")
            .start()
    })
    .expect_err("a bad config must not start");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.starts_with("mosquitto exited"), "{message}");
    assert!(message.contains("no_such_option"), "{message}");
}
