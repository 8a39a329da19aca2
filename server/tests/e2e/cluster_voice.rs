//! One voice per alert between the city and a cluster with its own instance
//! (docs/design.md#cluster-instance), on the two sites of `cluster.rs` (two network
//! namespaces, real brokers bridged with deploy/cluster/bridge.conf, two SMTP
//! servers): the city follows what the cluster's officers acknowledge, and speaks for
//! the cluster only while its instance is silent with the link up.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;

use crate::cluster::{Sites, bridge_lines, publish, sent, serve_in, wait_until};

const CLUSTER: &str = "c07";
/// Publishes `(town, ts, litres)` readings to the cluster broker.
type Gateway<'a> = dyn Fn(&[(&str, DateTime<Utc>, u64)]) + 'a;
const FULL_L: u64 = 150_000;
const LOW_L: u64 = 30_000;
/// The cluster instance's API token (an admin of the site).
const SITE_TOKEN: &str = "c07-site-token";

/// Two towns of c07 and one of c08 (as `cluster.rs`'s, so its bridge lines fit), each
/// with an officer; a contact for cluster c07 and one for the district.
fn registry() -> String {
    let mut registry = String::from(
        "[[category]]\nid = \"water\"\nname = \"Drinking water\"\nunit = \"L\"\ndaily_need = 3.0\n",
    );
    for (town, cluster) in [("qianmen", "c07"), ("dashilan", "c07"), ("tiantan", "c08")] {
        registry.push_str(&format!(
            "\n[[town]]\nid = \"{town}\"\nname = \"{town}\"\ndistrict = \"xicheng\"\ncluster = \"{cluster}\"\npopulation = 10000\n\
             \n[[facility]]\nid = \"{town}-wh\"\ntown = \"{town}\"\nkind = \"warehouse\"\nreport_every = \"10m\"\n\
             \n[[contact]]\nname = \"{town} officer\"\nemail = \"{town}@example.org\"\nlang = \"en\"\ntowns = [\"{town}\"]\n"
        ));
    }
    registry.push_str(
        "\n[[contact]]\nname = \"c07 lead\"\nemail = \"c07@example.org\"\nlang = \"en\"\nclusters = [\"c07\"]\n\
         \n[[contact]]\nname = \"xicheng duty\"\nemail = \"xicheng@example.org\"\nlang = \"en\"\ndistricts = [\"xicheng\"]\n",
    );
    registry
}

/// A deployment dir with the registry and `config`.
fn deployment(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("registry.toml"), registry()).expect("write registry");
    std::fs::write(
        dir.path().join("stockpile.toml"),
        format!("registry = \"registry.toml\"\n{config}"),
    )
    .expect("write config");
    dir
}

/// One instance's config: alerts told at once, a heartbeat every 2 s.
fn config(
    broker: u16,
    client_id: &str,
    listen: &str,
    smtp: &str,
    from: &str,
    extra: &str,
) -> String {
    format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:{broker}\"\nclient_id = \"{client_id}\"\n\
         [store]\npath = \"stockpile.db\"\n\
         [api]\nlisten = \"{listen}\"\npublic_read = true\n\
         tokens = [{{ name = \"ops-c07\", role = \"admin\", token = \"{SITE_TOKEN}\" }}]\n\
         [smtp]\nurl = \"smtp://{smtp}\"\nfrom = \"{from}\"\n\
         [alerts]\ngroup_wait = \"0s\"\nstartup_grace_factor = 0\ncluster_state_every = \"2s\"\n{extra}\
         [log]\nlevel = \"info\"\n"
    )
}

fn get(url: &str, query: &[(&str, &str)]) -> Value {
    testkit::http::get(url, query).json()
}

/// The town's alerts of `api` in `state`.
fn alerts_of(api: &str, town: &str, state: &str) -> Vec<Value> {
    let list = get(
        &format!("{api}/api/v1/alerts"),
        &[("town", town), ("state", state)],
    );
    list.as_array().cloned().unwrap_or_default()
}

/// The city's view of c07's own instance (`GET /api/v1/clusters`).
fn instance(city_api: &str) -> Value {
    let list = get(&format!("{city_api}/api/v1/clusters"), &[]);
    list["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == CLUSTER))
        .map(|c| c["instance"].clone())
        .unwrap_or(Value::Null)
}

/// `POST /api/v1/alerts/{id}/ack` on the cluster's API with the site's token.
fn ack_at_cluster(api: &str, id: i64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let status = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{api}/api/v1/alerts/{id}/ack"))
            .bearer_auth(SITE_TOKEN)
            .json(&serde_json::json!({"note": "tanker on its way"}))
            .send()
            .await
            .expect("the cluster's API answers")
            .status()
    });
    assert!(status.is_success(), "ack at the cluster: {status}");
}

/// Publishes a payload straight to a broker (what a broken client could send).
fn publish_raw(host: &str, port: u16, topic: &str, payload: &[u8]) {
    let (client, mut connection) = Client::new(MqttOptions::new("odd-publisher", host, port), 8);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
        .expect("queue");
    loop {
        match connection.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("the broker did not take it: {other:?}"),
        }
    }
    let _ = client.disconnect();
}

/// Prints an instance's log when the test fails, for the reader of the failure.
struct LogOnPanic<'a>(&'static str, &'a crate::common::Service);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} instance log ---\n{}", self.0, self.1.output());
        }
    }
}

/// Mails to `to` over both servers, as `(sender, subject)`.
fn mails_to(servers: &[&testkit::SmtpServer], to: &str) -> Vec<(String, String)> {
    servers
        .iter()
        .flat_map(|s| sent(s))
        .filter(|(_, recipient, _)| recipient == to)
        .map(|(from, _, subject)| (from, subject))
        .collect()
}

#[test]
fn the_city_follows_the_cluster_and_speaks_for_it_only_while_it_is_silent() {
    let sites = Sites::create();
    let city_smtp = testkit::SmtpServer::start();
    let cluster_smtp = testkit::SmtpServer::start();
    let local = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let city_relay =
        testkit::netns::TcpRelay::start(sites.host_to_city.into(), local(city_smtp.port()));
    let cluster_relay =
        testkit::netns::TcpRelay::start(sites.host_to_cluster.into(), local(cluster_smtp.port()));
    let city_broker = testkit::Mosquitto::builder()
        .netns(sites.city.name(), sites.city_side.into())
        .start();
    let mut cluster_broker = testkit::Mosquitto::builder()
        .netns(sites.cluster.name(), sites.cluster_side.into())
        .persistence(true);
    let city_address = format!("{}:{}", sites.city_on_city_link, city_broker.port());
    for line in bridge_lines(&city_address) {
        cluster_broker = cluster_broker.config_line(&line);
    }
    let cluster_broker = cluster_broker.start();

    // The city escalates after 30 s, and takes over after 15 s of silence.
    let city_dir = deployment(&config(
        city_broker.port(),
        "stockpile-city",
        &format!("{}:0", sites.city_side),
        &city_relay.address().to_string(),
        "Stockpile city <alerts@example.org>",
        &format!(
            "clusters_with_own_instance = [\"{CLUSTER}\"]\nescalate_after = \"30s\"\ncluster_silent_after = \"15s\"\n"
        ),
    ));
    let cluster_dir = deployment(&format!(
        "[scope]\ncluster = \"{CLUSTER}\"\n{}",
        config(
            cluster_broker.port(),
            "stockpile-c07",
            &format!("{}:0", sites.cluster_side),
            &cluster_relay.address().to_string(),
            "Stockpile c07 <alerts-c07@example.org>",
            "escalate_after = \"1h\"\n",
        )
    ));
    let cluster_config = cluster_dir.path().join("stockpile.toml");
    let city = serve_in(&sites.city, &city_dir.path().join("stockpile.toml"));
    let cluster = serve_in(&sites.cluster, &cluster_config);
    let (city_api, cluster_api) = (city.api_url(), cluster.api_url());
    let _city_log = LogOnPanic("city", &city);
    wait_until(
        "the city hears c07's instance over a bridge that is up",
        Duration::from_secs(60),
        || {
            let i = instance(&city_api);
            (i["link"] == "up" && i["alive"] == true).then_some(())
        },
    );
    let gateway = |readings: &[(&str, DateTime<Utc>, u64)]| {
        publish(
            &sites.cluster_side.to_string(),
            cluster_broker.port(),
            readings,
        )
    };
    let t0 = Utc::now() - chrono::Duration::minutes(5);
    let minute = |m: i64| t0 + chrono::Duration::minutes(m);
    gateway(&[
        ("qianmen", minute(0), FULL_L),
        ("dashilan", minute(0), FULL_L),
    ]);

    acknowledged_at_the_cluster_is_acknowledged_at_the_city(
        &city_api,
        &cluster_api,
        &[&city_smtp, &cluster_smtp],
        &gateway,
        minute(1),
    );
    let servers = [&city_smtp, &cluster_smtp];
    let bad = publish_raw_on_city(&sites, city_broker.port());
    wait_until(
        "the city counted the broken alert state as a reject",
        Duration::from_secs(30),
        || (instance(&city_api)["rejects"]["not_json"] == bad).then_some(()),
    );

    // The cluster instance dies; the link stays up.
    drop(cluster);
    let silent = wait_until(
        "the city raised cluster_instance_silent and mailed the cluster's contact",
        Duration::from_secs(60),
        || {
            mails_to(&servers, "c07@example.org")
                .into_iter()
                .find(|(_, subject)| subject.contains("silent"))
        },
    );
    assert_eq!(silent.0, "alerts@example.org", "{silent:?}");
    wait_until(
        "the district's contact told of it too",
        Duration::from_secs(30),
        || {
            mails_to(&servers, "xicheng@example.org")
                .into_iter()
                .find(|(_, subject)| subject.contains("silent"))
        },
    );
    assert_eq!(instance(&city_api)["taken_over"], true);
    // Qianmen falls below target: with its instance gone, the city tells its officer.
    gateway(&[("qianmen", minute(2), LOW_L)]);
    let told = wait_until(
        "the city told qianmen's officer itself",
        Duration::from_secs(60),
        || mails_to(&servers, "qianmen@example.org").into_iter().next(),
    );
    assert_eq!(told.0, "alerts@example.org", "{told:?}");

    // The cluster instance returns: the city hands back, and nobody hears twice.
    let cluster = serve_in(&sites.cluster, &cluster_config);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while instance(&city_api)["taken_over"] != false {
        assert!(
            std::time::Instant::now() < deadline,
            "the city did not hand c07 back: {}\ncity log:\n{}\ncluster log:\n{}",
            instance(&city_api),
            city.output(),
            cluster.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_until(
        "the returned instance has qianmen's alert firing, told by the city",
        Duration::from_secs(30),
        || (!alerts_of(&cluster.api_url(), "qianmen", "firing").is_empty()).then_some(()),
    );
    let heard_again = wait_until(
        "cluster_instance_silent resolved",
        Duration::from_secs(30),
        || {
            mails_to(&servers, "c07@example.org")
                .into_iter()
                .find(|(_, subject)| subject.contains("heard again"))
        },
    );
    assert_eq!(heard_again.0, "alerts@example.org");
    // A window, not a condition: the returned instance's first flushes come within
    // its tick (10 s); nothing of them may reach qianmen's officer again.
    let window = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < window {
        let qianmen = mails_to(&servers, "qianmen@example.org");
        assert_eq!(
            qianmen.len(),
            1,
            "qianmen's officer heard it once: {qianmen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut all: Vec<_> = servers.iter().flat_map(|s| sent(s)).collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(total, all.len(), "a notification sent twice: {all:?}");
    drop(cluster);
}

/// (a) Dashilan falls below target; its officer hears it from the cluster instance and
/// acknowledges it there. The city's alert shows that acknowledgement and the
/// cluster's state, and the city does not escalate it to the district.
fn acknowledged_at_the_cluster_is_acknowledged_at_the_city(
    city_api: &str,
    cluster_api: &str,
    servers: &[&testkit::SmtpServer],
    gateway: &Gateway<'_>,
    at: DateTime<Utc>,
) {
    gateway(&[("dashilan", at, LOW_L)]);
    let told = wait_until(
        "dashilan's officer emailed by the cluster instance",
        Duration::from_secs(60),
        || mails_to(servers, "dashilan@example.org").into_iter().next(),
    );
    assert_eq!(told.0, "alerts-c07@example.org", "{told:?}");
    let at_cluster = wait_until(
        "dashilan's alert firing at the cluster",
        Duration::from_secs(30),
        || {
            alerts_of(cluster_api, "dashilan", "firing")
                .into_iter()
                .next()
        },
    );
    let city_fired = wait_until(
        "dashilan's alert firing at the city",
        Duration::from_secs(30),
        || alerts_of(city_api, "dashilan", "firing").into_iter().next(),
    );
    ack_at_cluster(cluster_api, at_cluster["id"].as_i64().expect("alert id"));
    let followed = wait_until(
        "the city's alert acknowledged by the cluster's acknowledgement",
        Duration::from_secs(25),
        || {
            alerts_of(city_api, "dashilan", "firing")
                .into_iter()
                .find(|a| {
                    !a["acknowledged"].is_null() && a["cluster_state"]["state"] == "acknowledged"
                })
        },
    );
    let acked_at_cluster =
        alerts_of(cluster_api, "dashilan", "firing")[0]["acknowledged"]["at"].clone();
    assert_eq!(
        followed["acknowledged"]["at"], acked_at_cluster,
        "at the cluster's time: {followed}"
    );
    assert!(
        followed["acknowledged"].get("note").is_none(),
        "no notes: {followed}"
    );
    // Past the city's escalate_after (30 s from its firing) and a tick: no escalation.
    let fired: DateTime<Utc> = city_fired["fired_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("fired_at");
    while Utc::now() < fired + chrono::Duration::seconds(45) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let district = mails_to(servers, "xicheng@example.org");
    assert!(
        district.is_empty(),
        "escalated although acknowledged: {district:?}"
    );
    let escalation = alerts_of(city_api, "dashilan", "firing")[0]["escalation"].clone();
    assert_eq!(escalation, serde_json::json!("town"), "{escalation}");
    assert_eq!(
        mails_to(servers, "dashilan@example.org").len(),
        1,
        "dashilan's officer heard it once"
    );
}

/// A broken alert state on the city broker (not retained): the city rejects it and
/// goes on. Returns how many were sent.
fn publish_raw_on_city(sites: &Sites, port: u16) -> i64 {
    publish_raw(
        &sites.city_side.to_string(),
        port,
        &format!("stockpile/v1/cluster/{CLUSTER}/alerts"),
        b"{\"cluster\": \"c07\", ",
    );
    1
}

/// The retained alert state on `port`'s `stockpile/v1/cluster/{CLUSTER}/alerts` whose
/// heartbeat is later than `after`, once one is.
fn alert_state_after(port: u16, after: DateTime<Utc>) -> Option<Value> {
    let (client, mut connection) = Client::new(
        MqttOptions::new("alert-state-reader", "127.0.0.1", port),
        16,
    );
    client
        .subscribe(
            format!("stockpile/v1/cluster/{CLUSTER}/alerts"),
            QoS::AtLeastOnce,
        )
        .ok()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut found = None;
    while found.is_none() && std::time::Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Incoming::Publish(p)))) =
            connection.recv_timeout(Duration::from_secs(1))
        {
            let state: Value = serde_json::from_slice(&p.payload).ok()?;
            let ts: DateTime<Utc> = state["ts"].as_str()?.parse().ok()?;
            found = (ts > after).then_some(state);
        }
    }
    let _ = client.disconnect();
    found
}

#[test]
fn an_instance_of_listed_towns_publishes_its_cluster_state_too() {
    let broker = testkit::Mosquitto::start();
    let dir = deployment(&format!(
        "[scope]\ntowns = [\"qianmen\"]\n{}",
        config(
            broker.port(),
            "stockpile-qianmen",
            "127.0.0.1:0",
            "127.0.0.1:1",
            "Stockpile <alerts@example.org>",
            "",
        )
    ));
    let _service = crate::common::Service::start(&dir.path().join("stockpile.toml"));
    let started = Utc::now();
    publish("127.0.0.1", broker.port(), &[("qianmen", started, LOW_L)]);
    let state = wait_until(
        "qianmen's alert in the state published for its cluster",
        Duration::from_secs(60),
        || {
            let state = alert_state_after(broker.port(), started)?;
            let alerts = state["alerts"].as_array()?.clone();
            alerts
                .iter()
                .any(|a| a["town"] == "qianmen" && a["rule"] == "reserve_below_target")
                .then_some(state)
        },
    );
    assert_eq!(state["cluster"], CLUSTER, "{state}");
    let heartbeat: DateTime<Utc> = state["ts"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("ts");
    // Unchanged, it is published again within its heartbeat (2 s here).
    let again = wait_until("the next heartbeat", Duration::from_secs(15), || {
        alert_state_after(broker.port(), heartbeat)
    });
    assert_eq!(again["alerts"], state["alerts"]);
}
