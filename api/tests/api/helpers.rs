//! `spawn_app()`: the whole API on 127.0.0.1:0 with a real SQLite file and a ledger
//! built from a small registry, driven over real HTTP.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use alerts::link::{AckLinks, LinkKey};
use alerts::{Alerts, AlertsConfig, Channels, RetryPolicy, SmsConfig, SmtpConfig, WebhookConfig};
use api::{AppState, AuthConfig, HttpLimits, Role, SmsInbound, TokenEntry};
use chrono::{DateTime, Duration, FixedOffset, Utc};
use live::{IngestMetrics, SharedLedger, TownChanges};
use reserve::reading::{
    Observation, PowerObservation, PowerState, PumpState, Reading, ShelterMode, ShelterObservation,
    WaterObservation,
};
use reserve::registry::{Source, load_registry};
use reserve::{Ledger, TownId};
use serde_json::Value;
use store::history::HistorySource;
use store::{Store, StoreOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN: &str = "admin-token-7f3a9c";
/// Officer of jingshan only.
pub const OFFICER: &str = "officer-jingshan-51be0d";
pub const VIEWER: &str = "viewer-token-c4d2e8";
/// Officer of donghua only.
pub const DONGHUA_OFFICER: &str = "officer-donghua-9a07e2";

/// Two clusters. In c01 jingshan is short of water, donghua (near) and jianguo (far)
/// have some to spare; jianguo is a warning town for food. longtan never reports.
///
/// | town     | people | water L (days)      | food (days)    | status   |
/// |----------|--------|---------------------|----------------|----------|
/// | jingshan | 1000   | 4500 + 1500 wp (2)  | 15000 (5)      | critical |
/// | donghua  | 2000   | 22500 (3.75)        | 30000 (5)      | ok       |
/// | jianguo  | 1000   | 30000 (10)          | 9600 (3.2)     | warning  |
/// | tiantan  | 1000   | 12000 (4)           | 12000 (4)      | ok       |
/// | longtan  | 500    | —                   | —              | unknown  |
pub const REGISTRY: &str = r#"
water_category = "water"

[target]
days = 3.0
warn_days = 3.5

[[district]]
id = "dongcheng"
name = "东城区"

[[cluster]]
id = "c01"
name = "东城北组团"

[[cluster]]
id = "c02"
name = "东城南组团"

[[category]]
id = "water"
name = "饮用水"
unit = "L"
daily_need = 3.0

[[category]]
id = "food"
name = "食品"
unit = "ration"
daily_need = 3.0

[[town]]
id = "jingshan"
name = "景山街道"
district = "dongcheng"
cluster = "c01"
population = 1000
lat = 39.925
lon = 116.397

[[town]]
id = "donghua"
name = "东华门街道"
district = "dongcheng"
cluster = "c01"
population = 2000
lat = 39.915
lon = 116.405

[[town]]
id = "jianguo"
name = "建国门街道"
district = "dongcheng"
cluster = "c01"
population = 1000
lat = 39.905
lon = 116.435

[[town]]
id = "tiantan"
name = "天坛街道"
district = "dongcheng"
cluster = "c02"
population = 1000
lat = 39.882
lon = 116.410

[[town]]
id = "longtan"
name = "龙潭街道"
district = "dongcheng"
cluster = "c02"
population = 500
lat = 39.880
lon = 116.440

[[facility]]
id = "js-wh1"
town = "jingshan"
kind = "warehouse"
name = "景山仓库"

[[facility]]
id = "js-wp1"
town = "jingshan"
kind = "water_point"
capacity_l = 5000

[[facility]]
id = "js-pu1"
town = "jingshan"
kind = "power_unit"
fuel_capacity_l = 500
burn_l_per_h = 5.0
min_battery_pct = 50

[[facility]]
id = "dh-wh1"
town = "donghua"
kind = "warehouse"

[[facility]]
id = "jg-wh1"
town = "jianguo"
kind = "warehouse"

[[facility]]
id = "tt-wh1"
town = "tiantan"
kind = "warehouse"

[[facility]]
id = "lt-wh1"
town = "longtan"
kind = "warehouse"

# Nobody listens there: notifications to it stay in the outbox, pending or failed. Its
# URL carries a robot's token, as DingTalk's do: the API must never show it.
[[contact]]
name = "Jingshan duty desk"
webhook = "http://127.0.0.1:9/robot/send?access_token=robot-secret-5e1f"
lang = "en"
towns = ["jingshan"]
"#;

#[derive(Debug, Clone)]
pub struct AppOptions {
    pub public_read: bool,
    /// Run the alert service and plug it in (`AppState::with_alerts`).
    pub alerts: bool,
    /// Plug in history from the SQLite readings (`AppState::with_history`).
    pub history: bool,
    /// Signed acknowledgement links with [`LINK_KEY`], the app's address as the
    /// public URL: in messages and at `/ack/{token}`.
    pub links: bool,
    /// The SMS reply webhook (`POST /api/v1/sms/inbound`), checking signatures with
    /// this auth token when there is one.
    pub sms_inbound: Option<Option<String>>,
    /// Email through this SMTP server (`smtp://…`).
    pub smtp_url: Option<String>,
    /// SMS through this HTTP gateway.
    pub sms_url: Option<String>,
    /// Appended to [`REGISTRY`] (more contacts).
    pub extra_registry: &'static str,
    pub limits: HttpLimits,
}

/// The key of the test app's signed links, so a test can make a link of its own
/// (an expired one).
pub const LINK_KEY: [u8; 32] = [0x5a; 32];

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            public_read: true,
            alerts: false,
            history: false,
            links: false,
            sms_inbound: None,
            smtp_url: None,
            sms_url: None,
            extra_registry: "",
            limits: HttpLimits::default(),
        }
    }
}

impl AppOptions {
    /// Every optional part plugged in.
    pub fn full() -> AppOptions {
        AppOptions {
            alerts: true,
            history: true,
            links: true,
            sms_inbound: Some(None),
            ..AppOptions::default()
        }
    }
}

/// Alert settings for tests: an alert fires at once, the engine looks every 100 ms.
fn quick_alerts() -> AlertsConfig {
    AlertsConfig {
        group_wait: std::time::Duration::ZERO,
        pending_for: std::time::Duration::ZERO,
        tick: std::time::Duration::from_millis(100),
        // Test readings milliseconds apart are a consumption rate no town has.
        depleting_horizon: std::time::Duration::ZERO,
        retry: RetryPolicy {
            first: std::time::Duration::from_millis(100),
            max: std::time::Duration::from_millis(400),
            give_up_after: std::time::Duration::from_secs(3600),
        },
        ..AlertsConfig::default()
    }
}

/// The API running in this test process.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    pub client: reqwest::Client,
    pub ledger: SharedLedger,
    pub metrics: Arc<IngestMetrics>,
    /// What the API announces (and what ingest would, given the same).
    pub changes: Arc<TownChanges>,
    /// The SQLite file the API uses (open another connection to inspect or seed it).
    pub db: PathBuf,
    shutdown: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
    alerts: Option<JoinHandle<Result<(), alerts::AlertsError>>>,
    /// Last reading time per facility, so successive readings are always newer.
    last_ts: Mutex<Option<DateTime<Utc>>>,
    /// "Now" for warehouse readings measured some time ago: one instant for the whole
    /// test, so a reading an hour before another is exactly an hour before it (rates and
    /// forecasts come out exact, however slow the machine).
    base: DateTime<Utc>,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("stockpile.db");
    let registry = load_registry(
        &Source {
            name: "registry.toml".into(),
            text: format!("{REGISTRY}{}", options.extra_registry),
        },
        &[],
        &mut |name| Err(format!("no file {name}")),
    )
    .expect("test registry loads");
    let mut ledger = Ledger::new(Arc::new(registry));
    ledger.refresh_all(Utc::now());
    let ledger: SharedLedger = Arc::new(RwLock::new(ledger));
    let metrics = Arc::new(IngestMetrics::default());
    let store = Store::open(&db, StoreOptions::default()).expect("store opens");
    let auth = AuthConfig {
        public_read: options.public_read,
        tokens: vec![
            token("ops", Role::Admin, ADMIN, &[]),
            token("li-wei", Role::Officer, OFFICER, &["jingshan"]),
            token("wall", Role::Viewer, VIEWER, &[]),
            token("zhao-min", Role::Officer, DONGHUA_OFFICER, &["donghua"]),
        ],
    };
    let changes = Arc::new(TownChanges::default());
    let shutdown = CancellationToken::new();
    let mut state = AppState::new(
        Arc::clone(&ledger),
        store,
        Arc::clone(&metrics),
        Arc::clone(&changes),
        auth,
    )
    .with_limits(options.limits);
    // Bound first: the address is the public URL of links and signatures.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let address = format!("http://{}", listener.local_addr().unwrap());
    let links = options.links.then(|| {
        AckLinks::new(
            LinkKey::new(LINK_KEY.to_vec()).unwrap(),
            &address,
            alerts::link::DEFAULT_LINK_TTL,
        )
    });
    if let Some(links) = &links {
        state = state.with_ack_links(links.clone(), FixedOffset::east_opt(8 * 3600).unwrap());
    }
    if let Some(auth_token) = &options.sms_inbound {
        state = state.with_sms_inbound(SmsInbound {
            auth_token: auth_token.as_deref().map(Into::into),
            public_url: Some(address.clone()),
        });
    }
    let mut alerts_task = None;
    if options.alerts {
        let registry = Arc::clone(ledger.read().unwrap().registry());
        let smtp = options
            .smtp_url
            .as_ref()
            .map(|url| SmtpConfig::new(url, "Stockpile <alerts@example.org>"));
        let sms = options.sms_url.as_ref().map(SmsConfig::new);
        let channels =
            Channels::from_config(smtp.as_ref(), sms.as_ref(), &WebhookConfig::default())
                .expect("channels build");
        let alerts = Alerts::open(
            AlertsConfig {
                public_url: Some(address.clone()),
                ack_links: links,
                ..quick_alerts()
            },
            registry,
            &db,
            StoreOptions::default(),
            channels,
        )
        .expect("alerts open");
        state = state.with_alerts(alerts.handle());
        alerts_task = Some(tokio::spawn(alerts.run(
            Arc::clone(&ledger),
            changes.subscribe(),
            shutdown.clone(),
        )));
    }
    if options.history {
        let reader = Store::open(&db, StoreOptions::default()).expect("history store opens");
        state = state.with_history(HistorySource::Sqlite(store::AsyncStore::new(reader)));
    }
    let server = tokio::spawn(api::serve(listener, state, shutdown.clone()));
    TestApp {
        address,
        client: reqwest::Client::new(),
        ledger,
        metrics,
        changes,
        db,
        shutdown,
        server: Some(server),
        alerts: alerts_task,
        last_ts: Mutex::new(None),
        base: Utc::now(),
        _dir: dir,
    }
}

fn token(name: &str, role: Role, secret: &str, towns: &[&str]) -> TokenEntry {
    TokenEntry {
        name: name.into(),
        role,
        token: secret.into(),
        towns: towns.iter().map(|t| TownId::parse(t).unwrap()).collect(),
    }
}

/// A response: status and body, parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status, self.text
            )
        })
    }

    /// Asserts the JSON error shape and returns `(status, code)`.
    pub fn error(&self) -> (u16, String) {
        let body = self.json();
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {body}"));
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "no error.message in {body}"
        );
        (self.status, code.to_owned())
    }
}

impl TestApp {
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        let response = request.send().await.expect("request reaches the API");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response.text().await.expect("response body");
        Answer {
            status,
            content_type,
            text,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.request(reqwest::Method::GET, path, token, None).await
    }

    /// GET that must succeed, with a viewer's token; the JSON body.
    pub async fn get_ok(&self, path: &str) -> Value {
        self.get_ok_as(VIEWER, path).await
    }

    /// GET with `token` that must succeed; the JSON body.
    pub async fn get_ok_as(&self, token: &str, path: &str) -> Value {
        let answer = self.get(path, Some(token)).await;
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.text);
        answer.json()
    }

    pub async fn put_json(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        let bytes = serde_json::to_vec(body).unwrap();
        self.request(
            reqwest::Method::PUT,
            path,
            token,
            Some(("application/json", bytes)),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        let bytes = serde_json::to_vec(body).unwrap();
        self.request(
            reqwest::Method::POST,
            path,
            token,
            Some(("application/json", bytes)),
        )
        .await
    }

    /// A reading time after every earlier one, so the ledger always takes it.
    fn next_ts(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let mut last = self.last_ts.lock().unwrap();
        let ts = match *last {
            Some(l) if at <= l => l + Duration::milliseconds(1),
            _ => at,
        };
        *last = Some(ts);
        ts
    }

    fn apply(
        &self,
        facility: &str,
        observation: impl FnOnce(&Ledger) -> Observation,
        ts: DateTime<Utc>,
        heard_at: DateTime<Utc>,
    ) {
        let mut ledger = self.ledger.write().unwrap();
        let registry = Arc::clone(ledger.registry());
        let f = registry
            .facility_idx(facility)
            .unwrap_or_else(|| panic!("no facility {facility}"));
        let reading = Reading {
            facility: f,
            ts,
            seq: None,
            observation: observation(&ledger),
        };
        ledger.apply(&reading, heard_at);
        ledger.refresh(registry.facility(f).town, Utc::now());
    }

    /// A warehouse reading measured `ago` before now, received now.
    pub fn stock_at(&self, facility: &str, stock: &[(&str, f64)], ago: Duration) {
        self.stock_received(facility, stock, ago, Duration::zero());
    }

    /// A warehouse reading measured and received `ago` before now: the facility has
    /// been quiet since.
    pub fn stock_heard(&self, facility: &str, stock: &[(&str, f64)], ago: Duration) {
        self.stock_received(facility, stock, ago, ago);
    }

    fn stock_received(
        &self,
        facility: &str,
        stock: &[(&str, f64)],
        measured_ago: Duration,
        heard_ago: Duration,
    ) {
        let ts = self.next_ts(self.base - measured_ago);
        let heard_at = Utc::now() - heard_ago;
        self.apply(
            facility,
            |ledger| {
                let mut lines: Vec<_> = stock
                    .iter()
                    .map(|(c, q)| (ledger.registry().category_idx(c).expect("category"), *q))
                    .collect();
                lines.sort_by_key(|(c, _)| *c);
                Observation::Stock(lines)
            },
            ts,
            heard_at,
        );
    }

    pub fn stock(&self, facility: &str, stock: &[(&str, f64)]) {
        self.stock_at(facility, stock, Duration::zero());
    }

    pub fn water(&self, facility: &str, level_l: f64, pump: PumpState, potable: bool) {
        let ts = self.next_ts(Utc::now());
        self.apply(
            facility,
            |_| {
                Observation::Water(WaterObservation {
                    level_l,
                    pump,
                    potable,
                })
            },
            ts,
            Utc::now(),
        );
    }

    pub fn power(&self, facility: &str, fuel_l: f64, state: PowerState, battery_pct: f64) {
        let ts = self.next_ts(Utc::now());
        self.apply(
            facility,
            |_| {
                Observation::Power(PowerObservation {
                    fuel_l,
                    battery_pct: Some(battery_pct),
                    state,
                    burn_l_per_h: None,
                })
            },
            ts,
            Utc::now(),
        );
    }

    /// A shelter's door count, measured now.
    pub fn shelter(&self, facility: &str, occupancy: u64, mode: ShelterMode) {
        let ts = self.next_ts(Utc::now());
        let observation = ShelterObservation { occupancy, mode };
        self.apply(
            facility,
            |_| Observation::Shelter(observation),
            ts,
            Utc::now(),
        );
    }

    /// The city of [`REGISTRY`]'s table. Jingshan's food drops 600 an hour over the
    /// last three hours: enough history for a forecast (docs/design.md#forecast).
    pub fn seed(&self) {
        for hours in (1..=3).rev() {
            self.stock_at(
                "js-wh1",
                &[("water", 4500.0), ("food", 15_000.0 + 600.0 * hours as f64)],
                Duration::hours(hours),
            );
        }
        self.stock("js-wh1", &[("water", 4500.0), ("food", 15_000.0)]);
        self.water("js-wp1", 1500.0, PumpState::Ok, true);
        self.power("js-pu1", 400.0, PowerState::Standby, 90.0);
        self.stock("dh-wh1", &[("water", 22_500.0), ("food", 30_000.0)]);
        self.stock("jg-wh1", &[("water", 30_000.0), ("food", 9600.0)]);
        self.stock("tt-wh1", &[("water", 12_000.0), ("food", 12_000.0)]);
    }

    /// Announces a change of `town`, as ingest does after applying a reading.
    pub fn publish(&self, town: &str) {
        let t = self
            .ledger
            .read()
            .unwrap()
            .registry()
            .town_idx(town)
            .unwrap_or_else(|| panic!("no town {town}"));
        self.changes.publish([t]);
    }

    /// GETs `path` until `done` holds for the JSON body (10 s at most); the last body.
    pub async fn eventually(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.eventually_as(VIEWER, path, done).await
    }

    /// [`TestApp::eventually`] with `token`.
    pub async fn eventually_as(
        &self,
        token: &str,
        path: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let answer = self.get(path, Some(token)).await;
            assert_eq!(answer.status, 200, "GET {path}: {}", answer.text);
            let body = answer.json();
            if done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "GET {path}: still {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stores a warehouse reading measured at `ts` in the SQLite history, as ingest
    /// does (the ledger is left alone).
    pub fn store_stock(&self, facility: &str, stock: &[(&str, f64)], ts: DateTime<Utc>) {
        let registry = Arc::clone(self.ledger.read().unwrap().registry());
        let f = registry
            .facility_idx(facility)
            .unwrap_or_else(|| panic!("no facility {facility}"));
        let mut lines: Vec<_> = stock
            .iter()
            .map(|(c, q)| (registry.category_idx(c).expect("category"), *q))
            .collect();
        lines.sort_by_key(|(c, _)| *c);
        let reading = Reading {
            facility: f,
            ts,
            seq: None,
            observation: Observation::Stock(lines),
        };
        let mut store = Store::open(&self.db, StoreOptions::default()).expect("store opens");
        let mut batch = store.batch().expect("batch");
        assert!(
            batch
                .insert_reading(&registry, &reading, ts)
                .expect("reading stored")
        );
        batch.commit().expect("batch commits");
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Answer {
        self.request(reqwest::Method::DELETE, path, token, None)
            .await
    }

    /// Tells the server to stop, without waiting: requests in flight go on.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(std::time::Duration::from_secs(10), server)
                .await
                .expect("API stops within 10 s")
                .expect("API task joins")
                .expect("API ends without error");
        }
        if let Some(alerts) = self.alerts.take() {
            tokio::time::timeout(std::time::Duration::from_secs(10), alerts)
                .await
                .expect("alerts stop within 10 s")
                .expect("alerts task joins")
                .expect("alerts end without error");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Asserts two floats agree to 1e-6.
#[track_caller]
pub fn assert_close(got: &Value, want: f64) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("expected a number near {want}, got {got}"));
    assert!((got - want).abs() < 1e-6, "expected {want}, got {got}");
}

/// Overrides the interpreter probe of [`python_with`].
const PYTHON_ENV: &str = "STOCKPILE_TEST_PYTHON";

/// A Python 3 that can import `module` (`$STOCKPILE_TEST_PYTHON`, Debian's, then the one
/// on PATH). Panics, naming what to install, when there is none: a contract check that
/// cannot run must fail the suite, not skip.
pub fn python_with(module: &str, pip_package: &str) -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os(PYTHON_ENV) {
        Some(python) => vec![PathBuf::from(python)],
        None => vec!["/usr/bin/python3".into(), "python3".into()],
    };
    candidates
        .iter()
        .find(|python| {
            std::process::Command::new(python)
                .args(["-c", &format!("import {module}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no python3 that can import {module} (tried {candidates:?}): \
                 `python3 -m pip install {pip_package}` (scripts/test does), or set {PYTHON_ENV}"
            )
        })
}

/// A command that must be installed; panics naming the Debian package otherwise.
pub fn installed(program: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{program} is not installed: `apt-get install {debian_package}` \
                 (scripts/test installs it)"
            )
        })
}
