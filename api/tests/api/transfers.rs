//! Transfers (docs/design.md#transfers): an officer of the sending town or an admin
//! records one; it is stored durably with who and when, audited, listed newest first by
//! town and time, and hides its note and author from callers without a token. Between
//! gateway facilities it moves no figure; between stores counted by hand it moves both,
//! through the real ingest writer, and never spends the same count twice.

use serde_json::{Value, json};
use store::{Store, StoreOptions};

use crate::helpers::{ADMIN, DONGHUA_OFFICER, OFFICER, VIEWER, spawn_app, spawn_app_with};

/// Donghua sends jingshan's water point 2000 L.
fn aid() -> Value {
    json!({"from": "dh-wh1", "to": "js-wp1", "category": "water", "quantity": 2000.0,
           "note": "水车 京A-12345, 司机王师傅"})
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn an_officer_records_aid_from_its_town_and_everyone_reading_sees_it() {
    let app = spawn_app().await;
    app.seed();
    let days_before = app.get_ok("/api/v1/towns/jingshan").await["categories"].clone();

    let answer = app
        .post_json("/api/v1/transfers", Some(DONGHUA_OFFICER), &aid())
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let stored = answer.json();
    assert_eq!(stored["from"], "dh-wh1");
    assert_eq!(stored["from_town"], "donghua");
    assert_eq!(stored["to"], "js-wp1");
    assert_eq!(stored["to_town"], "jingshan");
    assert_eq!(stored["category"], "water");
    assert_eq!(stored["quantity"], 2000.0);
    assert_eq!(stored["recorded_by"], "zhao-min");
    assert_eq!(stored["note"], "水车 京A-12345, 司机王师傅");
    let recorded_at = stored["recorded_at"].as_str().unwrap();
    let recorded_at = chrono::DateTime::parse_from_rfc3339(recorded_at).unwrap();
    assert!(
        (chrono::Utc::now() - recorded_at.to_utc())
            .num_seconds()
            .abs()
            < 60
    );

    // An admin records for any town; the list is newest first.
    let back = json!({"from": "js-wh1", "to": "dh-wh1", "category": "food", "quantity": 300});
    let answer = app.post_json("/api/v1/transfers", Some(ADMIN), &back).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let second = answer.json()["id"].as_i64().unwrap();
    let first = stored["id"].as_i64().unwrap();
    assert_eq!(ids(&app.get_ok("/api/v1/transfers").await), [second, first]);

    // A gateway facility's readings stay the truth: recording moved no figure.
    let days_after = app.get_ok("/api/v1/towns/jingshan").await["categories"].clone();
    assert_eq!(days_before, days_after);

    // Without a token the note and the author are left out; with any token they show.
    let public = app.get("/api/v1/transfers", None).await.json();
    assert!(public[1].get("note").is_none(), "{public}");
    assert!(public[1].get("recorded_by").is_none(), "{public}");
    assert_eq!(public[1]["quantity"], 2000.0);
    let viewed = app.get_ok_as(VIEWER, "/api/v1/transfers").await;
    assert_eq!(viewed[1]["recorded_by"], "zhao-min");
    assert_eq!(viewed[1]["note"], "水车 京A-12345, 司机王师傅");

    // Filters: by town (sent or received), since a time, a limit.
    let town = |t: &str| format!("/api/v1/transfers?town={t}");
    assert_eq!(ids(&app.get_ok(&town("jingshan")).await), [second, first]);
    assert!(ids(&app.get_ok(&town("tiantan")).await).is_empty());
    assert_eq!(
        ids(&app.get_ok("/api/v1/transfers?limit=1").await),
        [second]
    );
    let later = (recorded_at + chrono::Duration::hours(1)).to_rfc3339();
    let since = format!("/api/v1/transfers?since={}", urlencoding(&later));
    assert!(ids(&app.get_ok(&since).await).is_empty());

    // In the audit log, and in the file: a new connection reads both back.
    let audit = app.get_ok_as(ADMIN, "/api/v1/audit").await;
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [("transfer", "ops"), ("transfer", "zhao-min")]);
    let store = Store::open(&app.db, StoreOptions::default()).unwrap();
    let rows = store.transfers(Some("donghua"), None, 10).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].transfer.recorded_by, "zhao-min");
    assert_eq!(rows[1].transfer.quantity, 2000.0);
}

/// `+` in an offset must not reach the server as a space.
fn urlencoding(value: &str) -> String {
    value.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn only_the_sending_towns_officer_or_an_admin_records_a_transfer() {
    let app = spawn_app().await;
    for (who, token, status, code) in [
        ("nobody", None, 401, "unauthorized"),
        ("a viewer", Some(VIEWER), 403, "forbidden"),
        (
            "the receiving town's officer",
            Some(OFFICER),
            403,
            "forbidden",
        ),
        ("the sending town's officer", Some(DONGHUA_OFFICER), 201, ""),
        ("an admin", Some(ADMIN), 201, ""),
    ] {
        let answer = app.post_json("/api/v1/transfers", token, &aid()).await;
        assert_eq!(answer.status, status, "{who}: {}", answer.text);
        if status != 201 {
            assert_eq!(answer.error(), (status, code.to_owned()), "{who}");
        }
    }
    assert_eq!(ids(&app.get_ok("/api/v1/transfers").await).len(), 2);
}

#[tokio::test]
async fn bad_transfers_are_refused_naming_the_field_and_nothing_is_stored() {
    let app = spawn_app().await;
    let with = |key: &str, value: Value| {
        let mut body = aid();
        body[key] = value;
        body
    };
    let long_note = "水".repeat(1001);
    let cases = [
        (
            with("from", json!("nowhere")),
            404,
            "unknown_facility",
            None,
        ),
        (with("to", json!("nowhere")), 404, "unknown_facility", None),
        (
            with("category", json!("fuel")),
            404,
            "unknown_category",
            None,
        ),
        (
            with("quantity", json!(0)),
            422,
            "invalid_body",
            Some("quantity"),
        ),
        (
            with("quantity", json!(-5)),
            422,
            "invalid_body",
            Some("quantity"),
        ),
        (
            with("quantity", json!(2e9)),
            422,
            "invalid_body",
            Some("quantity"),
        ),
        (
            with("quantity", json!("lots")),
            422,
            "invalid_body",
            Some("quantity"),
        ),
        (
            with("category", json!("food")),
            422,
            "invalid_body",
            Some("to"),
        ),
        (with("to", json!("dh-wh1")), 422, "invalid_body", Some("to")),
        (with("to", json!("js-pu1")), 422, "invalid_body", Some("to")),
        (
            with("note", json!(long_note)),
            422,
            "invalid_body",
            Some("note"),
        ),
        (
            with("lorry", json!("x")),
            422,
            "invalid_body",
            Some("lorry"),
        ),
    ];
    for (body, status, code, field) in cases {
        let answer = app.post_json("/api/v1/transfers", Some(ADMIN), &body).await;
        assert_eq!(answer.error(), (status, code.to_owned()), "{body}");
        let error = &answer.json()["error"];
        assert_eq!(error["field"].as_str(), field, "{body}: {error}");
    }
    let from_power = json!({"from": "js-pu1", "to": "js-wh1", "category": "water", "quantity": 1});
    let answer = app
        .post_json("/api/v1/transfers", Some(ADMIN), &from_power)
        .await;
    assert_eq!(answer.error(), (422, "invalid_body".into()));
    assert_eq!(answer.json()["error"]["field"], "from");
    let mut missing = aid();
    missing.as_object_mut().unwrap().remove("quantity");
    let answer = app
        .post_json("/api/v1/transfers", Some(ADMIN), &missing)
        .await;
    assert_eq!(answer.error(), (422, "invalid_body".into()));
    assert!(answer.text.contains("quantity"), "{}", answer.text);
    let answer = app
        .request(
            reqwest::Method::POST,
            "/api/v1/transfers",
            Some(ADMIN),
            Some(("application/json", b"{\"from\":".to_vec())),
        )
        .await;
    assert_eq!(answer.error(), (400, "invalid_json".into()));

    assert!(ids(&app.get_ok("/api/v1/transfers").await).is_empty());
    let audit = app.get_ok_as(ADMIN, "/api/v1/audit").await;
    assert_eq!(audit, json!([]));
}

#[tokio::test]
async fn a_bad_list_query_is_named() {
    let app = spawn_app_with(Default::default()).await;
    for (query, field) in [
        ("town=atlantis", "town"),
        ("since=yesterday", "since"),
        ("limit=many", "limit"),
    ] {
        let answer = app.get(&format!("/api/v1/transfers?{query}"), None).await;
        assert_eq!(answer.error(), (400, "invalid_query".into()), "{query}");
        assert_eq!(answer.json()["error"]["field"], field, "{query}");
    }
    let answer = app.get("/api/v1/transfers?lorry=1", None).await;
    assert_eq!(answer.error(), (400, "invalid_query".into()));
}

/// Two warehouses counted by hand, one in each of donghua and jingshan; jingshan's holds
/// at most 4500 L of water.
const COUNTED_BY_HAND: &str = r#"
[[facility]]
id = "dh-wh2"
town = "donghua"
kind = "warehouse"
report = "manual"

[[facility]]
id = "js-wh2"
town = "jingshan"
kind = "warehouse"
report = "manual"
max = { water = 4500 }
"#;

/// The API and the ingest writer (connected to a real Mosquitto) on one SQLite file,
/// as `stockpile serve` wires them: transfers go through the writer.
struct WriterApp {
    address: String,
    client: reqwest::Client,
    shutdown: tokio_util::sync::CancellationToken,
    ingest: tokio::task::JoinHandle<Result<(), ingest::IngestError>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl WriterApp {
    /// Starts on `db`, the ledger rebuilt from it as at a service start.
    async fn start(db: &std::path::Path, broker: &str) -> WriterApp {
        Self::start_waiting(db, broker, std::time::Duration::from_secs(10)).await
    }

    /// Starts with requests waiting `commit_wait` for the writer's commit.
    async fn start_waiting(
        db: &std::path::Path,
        broker: &str,
        commit_wait: std::time::Duration,
    ) -> WriterApp {
        use std::sync::{Arc, RwLock};
        let registry = reserve::registry::load_registry(
            &reserve::registry::Source {
                name: "registry.toml".into(),
                text: format!("{}{COUNTED_BY_HAND}", crate::helpers::REGISTRY),
            },
            &[],
            &mut |name| Err(format!("no file {name}")),
        )
        .expect("test registry loads");
        let mut ledger = reserve::Ledger::new(Arc::new(registry));
        let mut ingest_store = Store::open(db, StoreOptions::default()).unwrap();
        ingest::restore_ledger(&mut ingest_store, &mut ledger).expect("ledger restores");
        let ledger: live::SharedLedger = Arc::new(RwLock::new(ledger));
        let metrics = Arc::new(live::IngestMetrics::default());
        let changes = Arc::new(live::TownChanges::default());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let config = ingest::IngestConfig::new(
            ingest::BrokerUrl::parse(broker).unwrap(),
            "stockpile-transfers-test",
        );
        let (manual, queue) = live::ManualReadings::channel(
            config.mqtt.max_readings_per_message,
            config.retention,
            commit_wait,
        );
        let ingest = tokio::spawn(ingest::run_with_manual_readings(
            config,
            Arc::clone(&ledger),
            ingest_store,
            Arc::clone(&metrics),
            Arc::clone(&changes),
            queue,
            shutdown.clone(),
        ));
        let state = api::AppState::new(
            ledger,
            Store::open(db, StoreOptions::default()).unwrap(),
            metrics,
            changes,
            auth(),
        )
        .with_manual_readings(manual);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(api::serve(listener, state, shutdown.clone()));
        WriterApp {
            address,
            client: reqwest::Client::new(),
            shutdown,
            ingest,
            server,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let wait = std::time::Duration::from_secs(20);
        tokio::time::timeout(wait, self.ingest)
            .await
            .expect("ingest stops")
            .unwrap()
            .expect("ingest ends cleanly");
        tokio::time::timeout(wait, self.server)
            .await
            .expect("api stops")
            .unwrap()
            .expect("api ends cleanly");
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request reaches the API");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .bearer_auth(VIEWER)
            .send()
            .await
            .expect("request reaches the API");
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.expect("a JSON answer")
    }

    async fn text(&self, path: &str) -> String {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request reaches the API");
        assert_eq!(response.status(), 200, "{path}");
        response.text().await.expect("a text answer")
    }

    /// A facility's figure for a category, and where its latest reading came from.
    async fn figure(&self, facility: &str, category: &str) -> (Option<f64>, Value) {
        let view = self.get(&format!("/api/v1/facilities/{facility}")).await;
        let quantity = view["latest"]["stock"].as_array().and_then(|lines| {
            lines
                .iter()
                .find(|l| l["category"] == category)
                .and_then(|l| l["quantity"].as_f64())
        });
        (quantity, view["latest_source"].clone())
    }
}

/// The test app's tokens.
fn auth() -> api::AuthConfig {
    use api::Role;
    let token = |name: &str, role, secret: &str, towns: &[&str]| api::TokenEntry {
        name: name.into(),
        role,
        token: secret.into(),
        towns: towns
            .iter()
            .map(|t| reserve::TownId::parse(t).unwrap())
            .collect(),
    };
    api::AuthConfig {
        public_read: true,
        tokens: vec![
            token("ops", Role::Admin, ADMIN, &[]),
            token("li-wei", Role::Officer, OFFICER, &["jingshan"]),
            token("wall", Role::Viewer, VIEWER, &[]),
            token("zhao-min", Role::Officer, DONGHUA_OFFICER, &["donghua"]),
        ],
    }
}

fn moved(from: &str, to: &str, category: &str, quantity: f64) -> Value {
    json!({"from": from, "to": to, "category": category, "quantity": quantity,
           "note": "三轮车送达"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_between_stores_counted_by_hand_moves_both_figures_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stockpile.db");
    let broker = testkit::Mosquitto::start();
    let app = WriterApp::start(&db, &broker.url()).await;

    let ts = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    let count = json!({"ts": ts, "stock": {"water": 5000}});
    let (status, body) = app
        .post(
            "/api/v1/facilities/dh-wh2/readings",
            DONGHUA_OFFICER,
            &count,
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // Sent 2000 L: the sender's count less, the receiver (never counted) from nothing.
    let (status, sent) = app
        .post(
            "/api/v1/transfers",
            DONGHUA_OFFICER,
            &moved("dh-wh2", "js-wh2", "water", 2000.0),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["from_stock_after"], 3000.0, "{sent}");
    assert_eq!(sent["to_stock_after"], 2000.0, "{sent}");
    let (from, source) = app.figure("dh-wh2", "water").await;
    assert_eq!(from, Some(3000.0));
    assert_eq!(source["source"], "manual", "{source}");
    assert_eq!(source["entered_by"], "zhao-min", "{source}");
    assert_eq!(app.figure("js-wh2", "water").await.0, Some(2000.0));
    let jingshan = app.get("/api/v1/towns/jingshan").await;
    let water = jingshan["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "water")
        .unwrap_or_else(|| panic!("no water in {jingshan}"));
    assert_eq!(water["stock"], 2000.0, "{water}");
    // The town's water rests on an officer's word, and says since when.
    let age_s = water["counted_by_hand"]["age_s"].as_i64().unwrap_or(-1);
    assert!((0..600).contains(&age_s), "{water}");
    let food = &jingshan["categories"][1];
    assert_eq!(food["id"], "food");
    assert!(
        food.get("counted_by_hand").is_none(),
        "nothing counted: {food}"
    );

    // More than the count holds, a category never counted, more than the receiver has
    // room for: 409, nothing stored.
    let refusals = [
        (
            moved("dh-wh2", "js-wh2", "water", 3000.5),
            "insufficient_stock",
            "holds 3000",
        ),
        (
            moved("dh-wh2", "js-wh2", "food", 10.0),
            "insufficient_stock",
            "no count of food",
        ),
        (
            moved("dh-wh2", "js-wh2", "water", 2600.0),
            "over_capacity",
            "capacity of 4500",
        ),
    ];
    for (body, code, says) in refusals {
        let (status, answer) = app.post("/api/v1/transfers", ADMIN, &body).await;
        assert_eq!(status, 409, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    assert_eq!(app.figure("dh-wh2", "water").await.0, Some(3000.0));
    assert_eq!(app.figure("js-wh2", "water").await.0, Some(2000.0));
    assert_eq!(ids(&app.get("/api/v1/transfers").await).len(), 1);

    // Two officers send 2000 L each from the 3000 at the same moment: one is stored,
    // the other refused, never both from the same water.
    let aid = moved("dh-wh2", "js-wh2", "water", 2000.0);
    let (a, b) = tokio::join!(
        app.post("/api/v1/transfers", DONGHUA_OFFICER, &aid),
        app.post("/api/v1/transfers", ADMIN, &aid),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{} / {}", a.1, b.1);
    assert_eq!(app.figure("dh-wh2", "water").await.0, Some(1000.0));
    assert_eq!(app.figure("js-wh2", "water").await.0, Some(4000.0));

    // Counted for the operators: one count, two transfers stored, four refused.
    let metrics = app.text("/metrics").await;
    for line in [
        "stockpile_manual_readings_total 1",
        "stockpile_transfers_total{outcome=\"recorded\"} 2",
        "stockpile_transfers_total{outcome=\"refused\"} 4",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }

    // Durable: the readings the transfers made and their rows are in the file.
    app.stop().await;
    let store = Store::open(&db, StoreOptions::default()).unwrap();
    assert_eq!(store.transfers(None, None, 10).unwrap().len(), 2);
    let app = WriterApp::start(&db, &broker.url()).await;
    assert_eq!(app.figure("dh-wh2", "water").await.0, Some(1000.0));
    assert_eq!(app.figure("js-wh2", "water").await.0, Some(4000.0));
    app.stop().await;
}

/// While another process holds the store's write lock a transfer waits its bound and
/// is answered 503, moving no figure; the writer then drops it (its requester was told
/// nothing was recorded), so the retry after the lock is released moves the stock once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_while_the_store_is_locked_is_a_503_and_moves_the_stock_once_when_retried() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stockpile.db");
    let broker = testkit::Mosquitto::start();
    let wait = std::time::Duration::from_secs(2);
    let app = WriterApp::start_waiting(&db, &broker.url(), wait).await;
    let count = json!({"ts": chrono::Utc::now().to_rfc3339(), "stock": {"water": 5000}});
    let path = "/api/v1/facilities/dh-wh2/readings";
    let (status, body) = app.post(path, DONGHUA_OFFICER, &count).await;
    assert_eq!(status, 201, "{body}");

    let mut locker = Store::open(&db, StoreOptions::default()).unwrap();
    let lock = locker.batch().expect("write lock taken");
    let aid = moved("dh-wh2", "js-wh2", "water", 2000.0);
    let (status, answer) = app.post("/api/v1/transfers", DONGHUA_OFFICER, &aid).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "unavailable", "{answer}");
    assert_eq!(app.figure("dh-wh2", "water").await.0, Some(5000.0));
    assert_eq!(app.figure("js-wh2", "water").await.0, None);

    // Still locked past the writer's busy timeout (5 s), so it holds the lock again
    // only after the request gave up: what it then commits is the test of the drop.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !app.text("/metrics").await.lines().any(|l| {
        l.starts_with("stockpile_store_failures_total ") && l != "stockpile_store_failures_total 0"
    }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest never paused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(lock);
    let (status, sent) = loop {
        let (status, sent) = app.post("/api/v1/transfers", DONGHUA_OFFICER, &aid).await;
        if status != 503 {
            break (status, sent);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never stored: {sent}"
        );
    };
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["from_stock_after"], 3000.0, "{sent}");
    assert_eq!(sent["to_stock_after"], 2000.0, "{sent}");
    assert_eq!(app.figure("dh-wh2", "water").await.0, Some(3000.0));
    assert_eq!(app.figure("js-wh2", "water").await.0, Some(2000.0));
    assert_eq!(ids(&app.get("/api/v1/transfers").await).len(), 1);
    let metrics = app.text("/metrics").await;
    for line in [
        "stockpile_transfers_total{outcome=\"recorded\"} 1",
        "stockpile_transfers_total{outcome=\"abandoned\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    app.stop().await;
}
