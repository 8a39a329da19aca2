//! Counts entered by hand (issue 15): `POST /api/v1/facilities/{id}/readings` through
//! the API, a real SQLite file and the real ingest writer (connected to a real
//! Mosquitto), restarted on the same file to show the count is durable.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use api::{AppState, AuthConfig, Role, TokenEntry};
use chrono::Utc;
use ingest::{BrokerUrl, IngestConfig};
use live::{IngestMetrics, ManualReadings, SharedLedger, TownChanges};
use reserve::registry::{Source, load_registry};
use reserve::{FacilityId, Ledger, TownId};
use serde_json::{Value, json};
use store::{ReadingSource, Store, StoreOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::helpers::{ADMIN, DONGHUA_OFFICER, OFFICER, REGISTRY, VIEWER, assert_close};

/// The API and the ingest writer on one SQLite file, as `stockpile serve` wires them.
struct ManualApp {
    address: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    ingest: JoinHandle<Result<(), ingest::IngestError>>,
    server: JoinHandle<std::io::Result<()>>,
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

impl ManualApp {
    /// Starts on `db` (the ledger rebuilt from it, as at a service start); a request
    /// waits at most `commit_wait` for its count's commit.
    async fn start(db: &Path, broker: &str, commit_wait: Duration) -> ManualApp {
        let registry = load_registry(
            &Source {
                name: "registry.toml".into(),
                text: REGISTRY.into(),
            },
            &[],
            &mut |name| Err(format!("no file {name}")),
        )
        .expect("test registry loads");
        let mut ledger = Ledger::new(Arc::new(registry));
        let mut ingest_store = Store::open(db, StoreOptions::default()).expect("store opens");
        ingest::restore_ledger(&mut ingest_store, &mut ledger).expect("ledger restores");
        ledger.refresh_all(Utc::now());
        let ledger: SharedLedger = Arc::new(RwLock::new(ledger));
        let metrics = Arc::new(IngestMetrics::default());
        let changes = Arc::new(TownChanges::default());
        let shutdown = CancellationToken::new();
        let config = IngestConfig::new(BrokerUrl::parse(broker).unwrap(), "stockpile-manual-test");
        let (manual, queue) = ManualReadings::channel(
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
        let state = AppState::new(
            ledger,
            Store::open(db, StoreOptions::default()).expect("api store opens"),
            metrics,
            changes,
            auth(),
        )
        .with_manual_readings(manual);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(api::serve(listener, state, shutdown.clone()));
        ManualApp {
            address,
            client: reqwest::Client::new(),
            shutdown,
            ingest,
            server,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let deadline = Duration::from_secs(20);
        tokio::time::timeout(deadline, self.ingest)
            .await
            .expect("ingest stops")
            .expect("ingest joins")
            .expect("ingest ends cleanly");
        tokio::time::timeout(deadline, self.server)
            .await
            .expect("api stops")
            .expect("api joins")
            .expect("api ends cleanly");
    }

    async fn post(&self, facility: &str, token: Option<&str>, body: Vec<u8>) -> Answer {
        self.post_as(facility, token, "application/json", body)
            .await
    }

    async fn post_as(
        &self,
        facility: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let url = format!("{}/api/v1/facilities/{facility}/readings", self.address);
        let mut request = self
            .client
            .post(url)
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.expect("request reaches the API")).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut request = self.client.get(format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.expect("request reaches the API")).await
    }

    async fn facility(&self, id: &str) -> Value {
        let answer = self
            .get(&format!("/api/v1/facilities/{id}"), Some(VIEWER))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}"));
    Answer {
        status,
        retry_after,
        body,
    }
}

fn auth() -> AuthConfig {
    let token = |name: &str, role, secret: &str, towns: &[&str]| TokenEntry {
        name: name.into(),
        role,
        token: secret.into(),
        towns: towns.iter().map(|t| TownId::parse(t).unwrap()).collect(),
    };
    AuthConfig {
        public_read: true,
        tokens: vec![
            token("ops", Role::Admin, ADMIN, &[]),
            token("li-wei", Role::Officer, OFFICER, &["jingshan"]),
            token("wall", Role::Viewer, VIEWER, &[]),
            token("zhao-min", Role::Officer, DONGHUA_OFFICER, &["donghua"]),
        ],
    }
}

/// A count made a minute ago, as the officer types it.
fn count(stock: Value) -> Vec<u8> {
    let ts = (Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    serde_json::to_vec(&json!({"ts": ts, "stock": stock})).unwrap()
}

fn stock_of(facility: &Value, category: &str) -> f64 {
    facility["latest"]["stock"]
        .as_array()
        .and_then(|lines| lines.iter().find(|l| l["category"] == category))
        .and_then(|l| l["quantity"].as_f64())
        .unwrap_or_else(|| panic!("no {category} in {facility}"))
}

fn water_days(town: &Value) -> Value {
    town["categories"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == "water"))
        .map(|c| c["days"].clone())
        .unwrap_or(Value::Null)
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    broker: testkit::Mosquitto,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("stockpile.db");
        Fixture {
            _dir: dir,
            db,
            broker: testkit::Mosquitto::start(),
        }
    }

    async fn start(&self, commit_wait: Duration) -> ManualApp {
        ManualApp::start(&self.db, &self.broker.url(), commit_wait).await
    }

    fn stored(&self, facility: &str) -> Vec<store::StoredReading> {
        let store = Store::open(&self.db, StoreOptions::default()).unwrap();
        let now = Utc::now();
        store
            .readings(
                &FacilityId::parse(facility).unwrap(),
                now - chrono::Duration::days(1),
                now + chrono::Duration::days(1),
                100,
            )
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officers_count_is_stored_shown_as_manual_and_survives_a_restart() {
    let fx = Fixture::new();
    let app = fx.start(Duration::from_secs(10)).await;
    let town = app.get("/api/v1/towns/jingshan", Some(VIEWER)).await.body;
    assert_eq!(
        water_days(&town),
        Value::Null,
        "nothing reported yet: {town}"
    );

    // 9000 L of water for 1000 people at 3 L a day: three days.
    let body = count(json!({"water": 9000, "food": 15000}));
    let stored = app.post("js-wh1", Some(OFFICER), body.clone()).await;
    assert_eq!(stored.status, 201, "{}", stored.body);
    assert_eq!(stored.body["stored"], 1);
    assert_eq!(stored.body["duplicates"], 0);
    assert_eq!(stored.body["entered_by"], "li-wei");
    assert!(stored.body["latest_ts"].is_string(), "{}", stored.body);

    // Shown at once (applied before the answer), as a hand count, by whom, how old.
    let facility = app.facility("js-wh1").await;
    assert_eq!(stock_of(&facility, "water"), 9000.0);
    assert_eq!(facility["latest_source"]["source"], "manual", "{facility}");
    assert_eq!(facility["latest_source"]["entered_by"], "li-wei");
    let age_s = facility["latest_source"]["age_s"].as_f64().unwrap();
    assert!((55.0..600.0).contains(&age_s), "age {age_s}");
    let town = app.get("/api/v1/towns/jingshan", Some(VIEWER)).await.body;
    assert_close(&water_days(&town), 3.0);
    // Without a token the source shows, the person does not.
    let public = app.get("/api/v1/facilities/js-wh1", None).await.body;
    assert_eq!(public["latest_source"]["source"], "manual");
    assert!(
        public["latest_source"].get("entered_by").is_none(),
        "{public}"
    );

    // The same count again is a duplicate: safe to resend.
    let again = app.post("js-wh1", Some(OFFICER), body).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(
        (
            again.body["stored"].clone(),
            again.body["duplicates"].clone()
        ),
        (json!(0), json!(1))
    );

    // Each count is in the audit log, which the officer reads for its town.
    let audit = app.get("/api/v1/audit", Some(OFFICER)).await.body;
    let counts: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "manual_reading")
        .collect();
    assert_eq!(counts.len(), 2, "{audit}");
    assert_eq!(counts[0]["actor"], "li-wei");
    assert_eq!(counts[0]["towns"], json!(["jingshan"]));
    let detail = counts[1]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("js-wh1: 1 stored, 0 duplicates"),
        "{detail}"
    );
    assert!(detail.contains("9000"), "{detail}");

    // The row in SQLite says where it came from.
    let rows = fx.stored("js-wh1");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].source,
        ReadingSource::Manual {
            entered_by: "li-wei".into()
        }
    );

    app.stop().await;
    let app = fx.start(Duration::from_secs(10)).await;
    let facility = app.facility("js-wh1").await;
    assert_eq!(
        stock_of(&facility, "water"),
        9000.0,
        "after a restart: {facility}"
    );
    assert_eq!(facility["latest_source"]["source"], "manual");
    assert_eq!(facility["latest_source"]["entered_by"], "li-wei");
    let town = app.get("/api/v1/towns/jingshan", Some(VIEWER)).await.body;
    assert_close(&water_days(&town), 3.0);
    app.stop().await;
}

/// (facility, token, body, status, error code, reasons of the rejected readings)
type Refusal<'a> = (
    &'a str,
    Option<&'a str>,
    Vec<u8>,
    u16,
    &'a str,
    Vec<&'a str>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_enter_counts_and_what_is_refused() {
    let fx = Fixture::new();
    let app = fx.start(Duration::from_secs(10)).await;
    let good = || count(json!({"water": 100}));
    let now_ms = Utc::now().timestamp_millis();
    let cases: Vec<Refusal> = vec![
        ("js-wh1", None, good(), 401, "unauthorized", vec![]),
        ("js-wh1", Some(VIEWER), good(), 403, "forbidden", vec![]),
        (
            "js-wh1",
            Some(DONGHUA_OFFICER),
            good(),
            403,
            "forbidden",
            vec![],
        ),
        (
            "no-such-wh",
            Some(ADMIN),
            good(),
            404,
            "unknown_facility",
            vec![],
        ),
        (
            "js-wh1",
            Some(OFFICER),
            b"{\"ts\": 1,".to_vec(),
            400,
            "rejected_readings",
            vec!["not_json"],
        ),
        (
            "js-wh1",
            Some(OFFICER),
            count(json!({"gold": 5})),
            400,
            "rejected_readings",
            vec!["unknown_category"],
        ),
        (
            "js-wh1",
            Some(OFFICER),
            count(json!({"water": -5})),
            400,
            "rejected_readings",
            vec!["bad_number"],
        ),
        (
            "js-wh1",
            Some(OFFICER),
            serde_json::to_vec(
                &json!({"ts": now_ms, "water": {"level_l": 5, "pump": "ok", "potable": true}}),
            )
            .unwrap(),
            400,
            "rejected_readings",
            vec!["wrong_kind"],
        ),
        (
            "js-wh1",
            Some(OFFICER),
            serde_json::to_vec(&json!({"ts": now_ms + 3_600_000, "stock": {"water": 5}})).unwrap(),
            400,
            "rejected_readings",
            vec!["ts_in_future"],
        ),
        // One bad element refuses the whole count: nothing of it is stored.
        (
            "js-wh1",
            Some(OFFICER),
            serde_json::to_vec(&json!([
                {"ts": now_ms - 1000, "stock": {"water": 5}},
                {"ts": now_ms - 2000, "stock": {"gold": 5}},
                {"ts": now_ms - 3000, "stock": {"water": -1}},
            ]))
            .unwrap(),
            400,
            "rejected_readings",
            vec!["unknown_category", "bad_number"],
        ),
    ];
    for (facility, token, body, status, code, reasons) in cases {
        let answer = app.post(facility, token, body).await;
        let what = format!("{facility} as {token:?}: {}", answer.body);
        assert_eq!(answer.status, status, "{what}");
        assert_eq!(answer.body["error"]["code"], code, "{what}");
        let got: Vec<&str> = answer.body["error"]["rejected"]
            .as_array()
            .map(|r| r.iter().map(|r| r["reason"].as_str().unwrap()).collect())
            .unwrap_or_default();
        assert_eq!(got, reasons, "{what}");
        for rejected in answer.body["error"]["rejected"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert!(!rejected["detail"].as_str().unwrap().is_empty(), "{what}");
        }
    }
    assert!(fx.stored("js-wh1").is_empty(), "nothing refused was stored");

    let text = app
        .post_as("js-wh1", Some(OFFICER), "text/plain", good())
        .await;
    assert_eq!(text.status, 415, "{}", text.body);
    let huge = count(json!({"water": 1, "note": "x".repeat(20_000)}));
    let huge = app.post("js-wh1", Some(OFFICER), huge).await;
    assert_eq!(
        (huge.status, huge.body["error"]["code"].clone()),
        (413, json!("body_too_large"))
    );

    // An admin may enter counts for any town.
    let admin = app.post("dh-wh1", Some(ADMIN), good()).await;
    assert_eq!(admin.status, 201, "{}", admin.body);
    assert_eq!(admin.body["entered_by"], "ops");
    app.stop().await;
}

/// While the store is locked (another process holds its write lock) ingest is paused:
/// the request waits its bound, then 503 with Retry-After, never 201. The count stays
/// queued and is stored once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_waits_out_a_locked_store_and_is_never_a_201_unstored() {
    let fx = Fixture::new();
    let app = fx.start(Duration::from_secs(2)).await;
    let mut locker = Store::open(&fx.db, StoreOptions::default()).unwrap();
    let lock = locker.batch().expect("write lock taken");

    let answer = app
        .post("js-wh1", Some(OFFICER), count(json!({"water": 4321})))
        .await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "unavailable");
    assert_eq!(answer.retry_after.as_deref(), Some("5"));
    assert!(fx.stored("js-wh1").is_empty(), "not stored while locked");
    assert_eq!(app.facility("js-wh1").await["never_reported"], true);

    drop(lock);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let facility = app.facility("js-wh1").await;
        if facility["never_reported"] == false {
            assert_eq!(stock_of(&facility, "water"), 4321.0);
            assert_eq!(facility["latest_source"]["source"], "manual");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "count never stored: {facility}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

/// A gateway back online: its next reading, newer than the hand count, is the figure
/// now, and says it is a gateway's. Both stay in history with their sources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_newer_reading_takes_over_from_a_hand_count() {
    let fx = Fixture::new();
    let app = fx.start(Duration::from_secs(10)).await;
    let counted = app
        .post("js-wh1", Some(OFFICER), count(json!({"water": 9000})))
        .await;
    assert_eq!(counted.status, 201, "{}", counted.body);

    let url = BrokerUrl::parse(&fx.broker.url()).unwrap();
    let mut options = rumqttc::MqttOptions::new("gw-jingshan", url.host.clone(), url.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    let payload = json!({"ts": Utc::now().timestamp_millis(), "stock": {"water": 8000}});
    client
        .publish(
            "stockpile/v1/jingshan/js-wh1/reading",
            rumqttc::QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&payload).unwrap(),
        )
        .await
        .unwrap();
    // Ingest may not have subscribed yet: the broker keeps nothing for a session that
    // does not exist, so publish until the figure moves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::select! {
            _ = eventloop.poll() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let facility = app.facility("js-wh1").await;
                if stock_of(&facility, "water") == 8000.0 {
                    assert_eq!(facility["latest_source"], json!({"source": "gateway"}));
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "no gateway reading: {facility}");
                client
                    .try_publish(
                        "stockpile/v1/jingshan/js-wh1/reading",
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        serde_json::to_vec(&payload).unwrap(),
                    )
                    .ok();
            }
        }
    }
    let sources: Vec<ReadingSource> = fx.stored("js-wh1").into_iter().map(|r| r.source).collect();
    assert_eq!(
        sources,
        [
            ReadingSource::Manual {
                entered_by: "li-wei".into()
            },
            ReadingSource::Gateway
        ]
    );
    app.stop().await;
}
