//! The city's wall board shows a cluster that runs its own Stockpile
//! (docs/design.md#cluster-instance, #wall-board): a real `stockpile serve` following
//! cluster c01 (`clusters_with_own_instance`) hears, on a real Mosquitto, the cluster's
//! alert state and its bridge's state, which this test publishes retained as the
//! cluster's instance and its broker would; headless Chromium reads the board. The
//! cluster's line says running (green), then silent and taken over by the city (red)
//! once the heartbeats stop, then cut off and running alone (amber) when the bridge
//! says `0`; the alert the cluster's officers acknowledged is said acknowledged at the
//! cluster, at the cluster's time.

use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::board::publish_all;
use crate::common::{Deployment, Service};

const CLUSTER: &str = "c01";
const ADMIN: &str = "admin-cluster-board-2e81d9";
/// The board polls every 5 s; a change must show within a few polls on a busy machine.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
const SERVICE_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_says_whether_a_clusters_own_instance_is_heard_silent_or_cut_off() {
    let broker = testkit::Mosquitto::start();
    let deployment = deployment(&broker.url());
    let service = tokio::task::block_in_place(|| Service::start(&deployment.config()));
    let api = service.api_url();

    // Donghua: 30,000 L for 20,000 people who need 60,000 L a day, 0.5 days: critical.
    let reading = json!({"ts": Utc::now().timestamp_millis(), "stock": {"water": 30_000}});
    publish_all(
        &broker,
        vec![(
            "stockpile/v1/donghua/dh-wh1/reading".into(),
            reading.to_string(),
        )],
    )
    .await;
    let alert = open_alert_of(&api, "donghua").await;

    // The cluster's broker bridged (its notification, retained), and its instance's
    // heartbeats listing that alert as acknowledged by the cluster's officer.
    let cluster = ClusterSide::connect(&broker);
    cluster.retain("bridge", "1".into()).await;
    let acknowledged_at = (Utc::now() - chrono::Duration::minutes(2)).trunc_subsecs(0);
    let heartbeats = tokio::spawn(cluster.clone().heartbeats(alert.clone(), acknowledged_at));

    let driver = tokio::task::block_in_place(testkit::ChromeDriver::start);
    let browser = Browser::open(&driver, &format!("{api}/#token={ADMIN}")).await;
    let line = browser.instance_line("running", |l| l.state == "ok").await;
    assert_eq!(line.text, "组团 c01 本地系统：正常", "{line:?}");
    assert_eq!(line.class, "instance ok", "{line:?}");

    // The admin's open alerts: donghua's says who took it on, and when.
    let row = browser
        .wait_for("the alert acknowledged at the cluster", |p| {
            p.alerts.iter().any(|a| a.contains("组团确认"))
        })
        .await
        .alerts
        .join("\n");
    assert!(
        row.contains("组团确认 Acknowledged at the cluster: c01 · "),
        "{row}"
    );
    let acked = alert_by_id(&api, alert["id"].as_i64().expect("an id")).await;
    assert_eq!(acked["cluster_state"]["state"], "acknowledged", "{acked}");
    assert_eq!(
        acked["acknowledged"]["at"].as_str().map(parse_time),
        Some(acknowledged_at),
        "{acked}"
    );

    // The instance falls silent with the bridge up: red, then the city takes over.
    heartbeats.abort();
    let line = browser
        .instance_line("silent and taken over", |l| l.text.contains("市级接管"))
        .await;
    assert!(
        line.text.starts_with("组团 c01 本地系统：已 ") && line.text.contains("无响应，市级接管"),
        "{line:?}"
    );
    assert_eq!(line.class, "instance critical", "{line:?}");

    // The bridge goes down: the cluster runs alone, which is no failure (amber).
    cluster.retain("bridge", "0".into()).await;
    let line = browser
        .instance_line("cut off", |l| l.state == "warning")
        .await;
    assert_eq!(
        line.text, "组团 c01 本地系统：与市级断开（本地独立运行）",
        "{line:?}"
    );
    assert_eq!(line.class, "instance warning", "{line:?}");
    browser.client.close().await.expect("the browser closes");
}

/// Both towns are cluster c01's, which runs its own instance; heartbeats every second,
/// silent after three. The admin token reads the open alerts.
fn deployment(broker_url: &str) -> Deployment {
    let extra = format!(
        "[alerts]\ngroup_wait = \"0s\"\nclusters_with_own_instance = [\"{CLUSTER}\"]\n\
         cluster_state_every = \"1s\"\ncluster_silent_after = \"3s\"\n\
         \n[[api.tokens]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{ADMIN}\"\n"
    );
    Deployment::with_sections(
        &format!("url = \"{broker_url}\"\nclient_id = \"stockpile-cluster-board-e2e\"\n"),
        &extra,
    )
}

fn parse_time(at: &str) -> DateTime<Utc> {
    at.parse().unwrap_or_else(|e| panic!("{at}: {e}"))
}

/// The town's first open alert, once the service has raised one.
async fn open_alert_of(api: &str, town: &str) -> Value {
    let deadline = Instant::now() + SERVICE_TIMEOUT;
    loop {
        let alerts: Value = reqwest::get(format!("{api}/api/v1/alerts?open=true&town={town}"))
            .await
            .expect("the API answers")
            .json()
            .await
            .expect("alerts as JSON");
        if let Some(alert) = alerts.as_array().and_then(|a| a.first()) {
            return alert.clone();
        }
        assert!(Instant::now() < deadline, "no open alert of {town}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn alert_by_id(api: &str, id: i64) -> Value {
    let alerts: Value = reqwest::Client::new()
        .get(format!("{api}/api/v1/alerts?limit=1000"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("the API answers")
        .json()
        .await
        .expect("alerts as JSON");
    alerts
        .as_array()
        .and_then(|list| list.iter().find(|a| a["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("alert {id} not listed: {alerts}"))
}

/// What reaches the city broker from cluster c01: its instance's alert state and its
/// bridge's notifications, retained, QoS 1 (the payload contract of
/// docs/design.md#cluster-instance).
#[derive(Clone)]
struct ClusterSide {
    client: AsyncClient,
}

impl ClusterSide {
    fn connect(broker: &testkit::Mosquitto) -> ClusterSide {
        let options = MqttOptions::new("cluster-c01-side", "127.0.0.1", broker.port());
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        // Reconnects on its own; the runtime ends it with the test.
        tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        ClusterSide { client }
    }

    /// Publishes `payload` retained on the cluster's `leaf` topic.
    async fn retain(&self, leaf: &str, payload: String) {
        self.client
            .publish(
                format!("stockpile/v1/cluster/{CLUSTER}/{leaf}"),
                QoS::AtLeastOnce,
                true,
                payload,
            )
            .await
            .expect("the publish queue is open");
    }

    /// The instance's alert state every half second (its heartbeat), with `alert`
    /// acknowledged at `acknowledged_at`; runs until aborted.
    async fn heartbeats(self, alert: Value, acknowledged_at: DateTime<Utc>) {
        let listed = json!({
            "town": alert["town"], "rule": alert["rule"], "subject": alert["subject"],
            "severity": alert["severity"], "state": "firing", "fired_at": alert["fired_at"],
            "acknowledged_at": acknowledged_at, "resolved_at": null,
        });
        loop {
            let state = json!({"cluster": CLUSTER, "ts": Utc::now(), "alerts": [listed]});
            self.retain("alerts", state.to_string()).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[derive(Debug, Deserialize)]
struct PageView {
    instances: Vec<InstanceLine>,
    /// The open alerts' rows, as their text.
    alerts: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct InstanceLine {
    cluster: String,
    state: String,
    class: String,
    text: String,
}

const READ_PAGE: &str = r##"
const panel = document.getElementById("instances");
return {
  instances: panel.hidden ? [] : Array.from(panel.querySelectorAll(".instance"), l => ({
    cluster: l.dataset.cluster, state: l.dataset.state, class: l.className, text: l.textContent,
  })),
  alerts: Array.from(document.querySelectorAll("#alert-list .alert"), row => row.innerText),
};
"##;

struct Browser {
    client: Client,
}

impl Browser {
    async fn open(driver: &testkit::ChromeDriver, url: &str) -> Browser {
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(driver.capabilities())
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| panic!("ChromeDriver could not start Chromium: {e}"));
        client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot load {url}: {e}"));
        Browser { client }
    }

    /// Reads the page until `done` holds, for up to [`PAGE_TIMEOUT`].
    async fn wait_for(&self, what: &str, done: impl Fn(&PageView) -> bool) -> PageView {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let value = self
                .client
                .execute(READ_PAGE, vec![])
                .await
                .unwrap_or_else(|e| panic!("reading the page: {e}"));
            let page: PageView = serde_json::from_value(value.clone())
                .unwrap_or_else(|e| panic!("unexpected page shape ({e}): {value}"));
            if done(&page) {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PAGE_TIMEOUT:?} waiting for {what}; the page shows {page:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The cluster's line, once `done` holds for it.
    async fn instance_line(
        &self,
        what: &str,
        done: impl Fn(&InstanceLine) -> bool,
    ) -> InstanceLine {
        let page = self
            .wait_for(what, |p| {
                p.instances.iter().any(|l| l.cluster == CLUSTER && done(l))
            })
            .await;
        assert_eq!(
            page.instances.len(),
            1,
            "one line per own-instance cluster: {page:#?}"
        );
        page.instances.into_iter().next().expect("the line")
    }
}
