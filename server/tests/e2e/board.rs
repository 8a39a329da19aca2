//! The board acknowledges: a town officer signs in on the wall board of a real
//! `stockpile serve` (readings through a real Mosquitto raise the alert) in headless
//! Chromium, driven over WebDriver by ChromeDriver, and acknowledges the alert there; an
//! officer of another town is offered no button for it and is refused by the API; a
//! failed acknowledgement is shown on the board.

use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde::Deserialize;
use serde_json::{Value, json};

use nix::sys::signal::Signal;

use crate::common::{Deployment, Service, WAREHOUSES};

/// Officer of jingshan (the town whose alert is acknowledged).
const OFFICER: (&str, &str) = ("li.wei", "officer-jingshan-board-3c9e1f");
/// Officer of donghua only.
const OTHER_OFFICER: (&str, &str) = ("zhao.min", "officer-donghua-board-8b2d4a");
const ADMIN: (&str, &str) = ("ops", "admin-board-5f17c0");

/// What the officer types as the acknowledgement's note.
const NOTE: &str = "水车已出发 truck with 20,000 L on its way";

/// The board polls every 5 s; a change must show within a few polls on a busy machine.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Starting services and raising the alert, on 2 cores shared with the rest of the suite.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_signs_in_on_the_board_and_acknowledges_an_alert_of_their_town() {
    let broker = testkit::Mosquitto::start();
    let deployment = deployment(&broker.url());
    let service = tokio::task::block_in_place(|| Service::start(&deployment.config()));
    let api = service.api_url();

    // Every warehouse reports (the figures are verified). Jingshan: 60,000 L of water
    // for 30,000 people who need 90,000 L a day, 0.7 days. Donghua: 30,000 L for 20,000
    // people, 0.5 days. Both critical.
    let mut readings: Vec<(String, String)> = (0..WAREHOUSES)
        .map(|i| {
            (
                format!("stockpile/v1/jingshan/js-wh{i}/reading"),
                water(6_000),
            )
        })
        .collect();
    readings.push(("stockpile/v1/donghua/dh-wh1/reading".into(), water(30_000)));
    publish_all(&broker, readings).await;
    let jingshan = open_alert_of(&api, "jingshan").await;
    let donghua = open_alert_of(&api, "donghua").await;

    let driver = tokio::task::block_in_place(testkit::ChromeDriver::start);
    let browser = Browser::open(&driver, &format!("{api}/")).await;
    public_board_refuses_a_wrong_token(&browser).await;
    officer_acknowledges_on_the_board(&browser, &api, jingshan).await;
    other_officer_is_offered_only_their_town(&browser, &api, jingshan, donghua).await;

    // A refusal the board cannot prevent (here: the service is gone) is shown on the
    // row, and the button is offered again.
    service.signal(Signal::SIGTERM);
    assert_eq!(
        service.wait(SERVICE_TIMEOUT),
        Some(0),
        "stockpile stops cleanly"
    );
    browser.acknowledge(donghua, "").await;
    let page = browser
        .wait_for("the failed acknowledgement on the row", |p| {
            p.alert(donghua)
                .is_some_and(|a| !a.error.is_empty() && a.button)
        })
        .await;
    let row = page.alert(donghua).expect("the alert's row");
    assert!(
        row.error.starts_with("确认失败 Not acknowledged: ") && !row.acked,
        "{row:#?}"
    );
    browser.close().await;
}

/// Without a token the board is the wall display it always was: tiles, no alerts to act
/// on, a sign-in button. A wrong token is said to be wrong, and kept nowhere.
async fn public_board_refuses_a_wrong_token(browser: &Browser) {
    let page = browser
        .wait_for("the public board with jingshan critical", |p| {
            p.tiles
                .iter()
                .any(|t| t.town == "jingshan" && t.status == "critical")
        })
        .await;
    assert!(page.alerts_hidden && page.alerts.is_empty(), "{page:#?}");
    assert!(page.sign_in_shown && page.whoami.is_none(), "{page:#?}");

    browser.sign_in("not-a-token").await;
    let page = browser
        .wait_for("the sign-in error", |p| !p.account_error.is_empty())
        .await;
    assert!(
        page.account_error.contains("令牌无效 Not a valid token")
            && page.account_error.contains("401 invalid_token"),
        "{page:#?}"
    );
    assert_eq!(page.stored_token, None, "{page:#?}");
    assert!(page.whoami.is_none(), "{page:#?}");
    browser.clear_token_input().await;
}

/// Jingshan's officer signs in (the token in sessionStorage only), acknowledges with a
/// note, and the board and the API show who, when and why; a reload keeps the sign-in,
/// signing out forgets it.
async fn officer_acknowledges_on_the_board(browser: &Browser, api: &str, alert: i64) {
    browser.sign_in(OFFICER.1).await;
    let page = browser
        .wait_for("the officer's alert with an acknowledge button", |p| {
            p.alert(alert).is_some_and(|a| a.button)
        })
        .await;
    let whoami = page.whoami.as_deref().unwrap_or_default();
    for shown in [OFFICER.0, "officer", "景山街道 (jingshan)"] {
        assert!(whoami.contains(shown), "whoami {whoami:?} lacks {shown:?}");
    }
    assert_eq!(page.account_error, "", "{page:#?}");
    assert_eq!(page.alerts_note, "", "{page:#?}");
    assert_eq!(page.stored_token.as_deref(), Some(OFFICER.1));
    assert!(
        !page.url.contains(OFFICER.1),
        "token in the URL: {}",
        page.url
    );
    assert_eq!(
        page.alerts.iter().map(|a| a.id).collect::<Vec<_>>(),
        [alert],
        "only jingshan's alert: {page:#?}"
    );
    assert!(page.alerts[0].text.contains("景山街道"), "{page:#?}");

    browser.acknowledge(alert, NOTE).await;
    let page = browser
        .wait_for("the alert acknowledged on the board", |p| {
            p.alert(alert).is_some_and(|a| a.acked)
        })
        .await;
    let row = page.alert(alert).expect("the alert's row");
    assert!(!row.button, "still offered after acknowledging: {row:#?}");
    for shown in ["已确认 Acknowledged", OFFICER.0, NOTE] {
        assert!(row.text.contains(shown), "row lacks {shown:?}: {row:#?}");
    }
    assert_eq!(row.error, "", "{row:#?}");

    // The API agrees; its public list says when, not who or why.
    let acked = alert_as(api, alert, Some(ADMIN.1)).await;
    assert_eq!(acked["acknowledged"]["by"], OFFICER.0, "{acked}");
    assert_eq!(acked["acknowledged"]["note"], NOTE, "{acked}");
    let public = alert_as(api, alert, None).await;
    assert!(public["acknowledged"]["at"].is_string(), "{public}");
    assert!(public["acknowledged"].get("by").is_none(), "{public}");

    browser.reload().await;
    browser
        .wait_for("the acknowledgement after a reload", |p| {
            p.whoami.as_deref().is_some_and(|w| w.contains(OFFICER.0))
                && p.alert(alert)
                    .is_some_and(|a| a.acked && a.text.contains(NOTE))
        })
        .await;
    browser.click("#sign-out").await;
    let page = browser
        .wait_for("the signed-out board", |p| p.whoami.is_none())
        .await;
    assert_eq!(page.stored_token, None, "{page:#?}");
    assert!(page.alerts_hidden && page.alerts.is_empty(), "{page:#?}");
}

/// Donghua's officer is offered donghua's alert and nothing of jingshan's, and the API
/// refuses them jingshan's.
async fn other_officer_is_offered_only_their_town(
    browser: &Browser,
    api: &str,
    jingshan: i64,
    donghua: i64,
) {
    browser.sign_in(OTHER_OFFICER.1).await;
    let page = browser
        .wait_for("donghua's officer with donghua's alert", |p| {
            p.alert(donghua).is_some_and(|a| a.button)
        })
        .await;
    let whoami = page.whoami.as_deref().unwrap_or_default();
    assert!(whoami.contains(OTHER_OFFICER.0), "{whoami:?}");
    assert!(page.alert(jingshan).is_none(), "{page:#?}");
    let refused = ack_as(api, jingshan, OTHER_OFFICER.1).await;
    assert_eq!(refused.0, 403, "{}", refused.1);
    assert_eq!(refused.1["error"]["code"], "forbidden", "{}", refused.1);
}

/// The shared deployment, with alerts fired at once and three tokens.
fn deployment(broker_url: &str) -> Deployment {
    let token = |(name, secret): (&str, &str), role: &str, towns: &str| {
        format!(
            "\n[[api.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken = \"{secret}\"\n{towns}"
        )
    };
    let extra = [
        "[alerts]\ngroup_wait = \"0s\"\n".to_owned(),
        token(OFFICER, "officer", "towns = [\"jingshan\"]\n"),
        token(OTHER_OFFICER, "officer", "towns = [\"donghua\"]\n"),
        token(ADMIN, "admin", ""),
    ]
    .concat();
    Deployment::with_sections(
        &format!("url = \"{broker_url}\"\nclient_id = \"stockpile-board-e2e\"\n"),
        &extra,
    )
}

fn water(litres: u64) -> String {
    json!({"ts": chrono::Utc::now().timestamp_millis(), "stock": {"water": litres}}).to_string()
}

/// A gateway publishing `readings` with QoS 1; returns once the broker has them all.
pub(crate) async fn publish_all(broker: &testkit::Mosquitto, readings: Vec<(String, String)>) {
    let mut options = MqttOptions::new("gw-board", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, readings.len().max(1));
    let total = readings.len();
    for (topic, payload) in readings {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("the publish queue is open");
    }
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + SERVICE_TIMEOUT;
    while acked < total {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher lost the broker: {e}"),
            Err(_) => panic!("publisher: only {acked} of {total} acknowledged"),
        }
    }
}

/// The id of the town's first open alert, once the service has raised one.
async fn open_alert_of(api: &str, town: &str) -> i64 {
    let deadline = Instant::now() + SERVICE_TIMEOUT;
    loop {
        let alerts = reqwest::get(format!("{api}/api/v1/alerts?open=true&town={town}"))
            .await
            .expect("the API answers")
            .json::<Value>()
            .await
            .expect("alerts as JSON");
        if let Some(id) = alerts.as_array().and_then(|a| a.first()?["id"].as_i64()) {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "no open alert of {town}: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One alert as `GET /api/v1/alerts` lists it for `token` (or a public read).
async fn alert_as(api: &str, id: i64, token: Option<&str>) -> Value {
    let mut request = reqwest::Client::new().get(format!("{api}/api/v1/alerts?limit=1000"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let alerts: Value = request
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

/// `POST /api/v1/alerts/{id}/ack` with `token`: status and body.
async fn ack_as(api: &str, id: i64, token: &str) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .post(format!("{api}/api/v1/alerts/{id}/ack"))
        .bearer_auth(token)
        .json(&json!({"note": "not my town"}))
        .send()
        .await
        .expect("the API answers");
    let status = answer.status().as_u16();
    (status, answer.json().await.expect("an answer as JSON"))
}

/// The board as a person sees it, read from the page.
#[derive(Debug, Deserialize)]
struct PageView {
    url: String,
    tiles: Vec<TileView>,
    /// The "who am I" line; `None` while hidden (signed out).
    whoami: Option<String>,
    sign_in_shown: bool,
    account_error: String,
    /// The token the page keeps for the session.
    stored_token: Option<String>,
    alerts_hidden: bool,
    /// "No open alerts", or why the list is not up to date.
    alerts_note: String,
    alerts: Vec<AlertRow>,
}

#[derive(Debug, Deserialize)]
struct TileView {
    town: String,
    status: String,
}

#[derive(Debug, Deserialize)]
struct AlertRow {
    id: i64,
    acked: bool,
    /// An "Acknowledge" button is offered, and may be pressed.
    button: bool,
    text: String,
    /// What the row says went wrong with an acknowledgement.
    error: String,
}

impl PageView {
    fn alert(&self, id: i64) -> Option<&AlertRow> {
        self.alerts.iter().find(|a| a.id == id)
    }
}

const READ_PAGE: &str = r##"
const shown = id => !document.getElementById(id).hidden;
return {
  url: location.href,
  tiles: Array.from(document.querySelectorAll(".tile"),
    t => ({ town: t.dataset.town, status: t.dataset.status })),
  whoami: shown("whoami") ? document.getElementById("whoami").textContent : null,
  sign_in_shown: shown("sign-in"),
  account_error: document.getElementById("account-error").textContent,
  stored_token: sessionStorage.getItem("stockpile-token"),
  alerts_hidden: !shown("alerts"),
  alerts_note: document.getElementById("alerts-note").textContent,
  alerts: Array.from(document.querySelectorAll("#alert-list .alert"), row => ({
    id: Number(row.dataset.alert),
    acked: row.dataset.acked === "true",
    button: (b => b !== null && !b.disabled)(row.querySelector("button.ack")),
    text: row.innerText,
    error: row.querySelector(".ack-error").textContent,
  })),
};
"##;

/// One Chromium session on the board.
struct Browser {
    client: Client,
}

impl Browser {
    async fn open(driver: &testkit::ChromeDriver, url: &str) -> Browser {
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(driver.capabilities())
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "ChromeDriver could not start Chromium: {e}\n--- chromedriver log ---\n{}",
                    driver.log()
                )
            });
        let browser = Browser { client };
        browser
            .client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot load {url}: {e}"));
        browser
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

    async fn click(&self, selector: &str) {
        self.find(selector)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {selector}: {e}"));
    }

    async fn find(&self, selector: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PAGE_TIMEOUT)
            .for_element(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("no {selector} on the page: {e}"))
    }

    /// Opens the sign-in form (unless open), types `token` and submits it.
    async fn sign_in(&self, token: &str) {
        let form_open = self
            .client
            .execute(
                "return !document.getElementById('sign-in-form').hidden",
                vec![],
            )
            .await
            .expect("the page answers");
        if form_open != Value::Bool(true) {
            self.click("#sign-in").await;
        }
        self.find("#token-input")
            .await
            .send_keys(token)
            .await
            .expect("typing the token");
        self.click("#sign-in-form button[type=submit]").await;
    }

    async fn clear_token_input(&self) {
        self.find("#token-input")
            .await
            .clear()
            .await
            .expect("clearing the token field");
    }

    /// Types `note` into the alert's note field and presses its button.
    async fn acknowledge(&self, alert: i64, note: &str) {
        let row = format!("#alert-list .alert[data-alert=\"{alert}\"]");
        self.find(&format!("{row} input.ack-note"))
            .await
            .send_keys(note)
            .await
            .expect("typing the note");
        self.click(&format!("{row} button.ack")).await;
    }

    async fn reload(&self) {
        self.client.refresh().await.expect("the page reloads");
    }

    async fn close(self) {
        self.client.close().await.expect("the browser closes");
    }
}
